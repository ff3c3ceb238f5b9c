"""ELECTRA (replaced-token detection): the sampling, the discriminator's labels, the loss, and the command."""
import argparse
import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.train.checkpoint import load_model, save_checkpoint
from minilm.data.collate import mlm_batch, special_ids
from minilm.nn.config import ModelConfig
from minilm.nn.electra import DISC_WEIGHT, ELECTRA, corrupt, sample_replacements
from minilm.data.masking import MaskingConfig

WORDS = "the a movie film plot actor scene story great terrible boring funny good bad loved hated was and not".split()


def tiny(tokenizer) -> ELECTRA:
    config = ModelConfig.preset("bert-tiny", vocab_size=tokenizer.vocab_size, max_seq_len=64, dropout=0.0,
                                attention_dropout=0.0)
    return ELECTRA(config, special_ids=special_ids(tokenizer))


def batch(tokenizer, seed=0, rows=6):
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20))) for _ in range(rows)]
    ids = [[tokenizer.cls_id, *tokenizer.encode(t)[:30], tokenizer.sep_id] for t in texts]  # ragged: padded
    masking = MaskingConfig(strategy="token", mask_prob=0.3, mask_frac=1.0, random_frac=0.0, keep_frac=0.0)
    return mlm_batch(ids, None, tokenizer, masking, torch.Generator().manual_seed(seed))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 20), v=st.integers(8, 60), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_samples_are_never_special_tokens_even_when_the_generator_prefers_them(n, v, seed, data):
    special = sorted(data.draw(st.sets(st.integers(0, v - 1), min_size=1, max_size=v - 1)))
    logits = torch.randn(n, v, generator=torch.Generator().manual_seed(seed))
    logits[:, special] += 50.0  # a generator that puts almost all its mass on the special tokens
    sampled = sample_replacements(logits, torch.tensor(special), torch.Generator().manual_seed(seed))
    assert sampled.shape == (n,) and not torch.isin(sampled, torch.tensor(special)).any()


def test_samples_follow_the_generator_distribution():
    logits = torch.log(torch.tensor([[0.0, 0.5, 0.3, 0.2]]).clamp_min(1e-30)).repeat(20000, 1)
    sampled = sample_replacements(logits, torch.tensor([0]), torch.Generator().manual_seed(0))
    freq = torch.bincount(sampled, minlength=4).float() / len(sampled)
    assert torch.allclose(freq, torch.tensor([0.0, 0.5, 0.3, 0.2]), atol=0.015), freq


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 4), t=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_discriminator_labels_are_exactly_replaced_or_not(b, t, seed):
    g = torch.Generator().manual_seed(seed)
    original = torch.randint(5, 9, (b, t), generator=g)  # few distinct ids: samples often equal the original
    where = torch.rand(b, t, generator=g) < 0.5
    labels = torch.where(where, original, torch.full_like(original, -100))
    input_ids = original.masked_fill(where, 4)  # [MASK] = 4
    sampled = torch.randint(5, 9, (int(where.sum()),), generator=g)
    corrupted, replaced = corrupt(input_ids, labels, sampled)
    assert torch.equal(corrupted[~where], original[~where])  # unmasked positions keep their token
    assert torch.equal(corrupted[where], sampled)  # masked positions get the samples, in order
    assert torch.equal(replaced, corrupted != original)  # a sample equal to the original is "original"
    assert not replaced[~where].any()


def test_loss_is_generator_plus_weighted_discriminator_and_both_learn(tokenizer):
    torch.manual_seed(0)
    model = tiny(tokenizer)
    assert model.generator.body.embeddings is model.body.embeddings  # one embedding table, as in the paper
    assert model.generator.head.decoder.weight is model.body.embeddings.tok.weight
    assert len(model.generator.body.blocks) == 1 and len(model.body.blocks) == model.config.n_layers
    b = batch(tokenizer)
    out = model(**b, rng=torch.Generator().manual_seed(0))
    assert torch.allclose(out.loss, out.generator_loss + DISC_WEIGHT * out.discriminator_loss)
    real = b["attention_mask"].bool()
    assert torch.equal(out.real, real) and out.scores.shape == b["input_ids"].shape
    # the discriminator's labels: exactly where the row it read differs from the original text
    assert not out.replaced[~(b["labels"] != -100)].any() and out.replaced.any()
    out.loss.backward()
    for name in ("body.blocks.0.attn.q.weight", "head.out.weight", "generator.body.blocks.0.attn.q.weight",
                 "generator.head.dense.weight", "body.embeddings.tok.weight"):
        p = dict(model.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the same rng gives the same samples: held-out scores are reproducible
    again = model(**b, rng=torch.Generator().manual_seed(0))
    assert torch.equal(again.replaced, out.replaced)


def test_checkpoint_round_trip_and_the_body_is_what_fine_tuning_reads(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = tiny(tokenizer).eval()
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    loaded, tok = load_model(tmp_path / "ckpt")
    assert isinstance(loaded, ELECTRA) and loaded.special_ids == model.special_ids
    assert loaded.generator.body.embeddings is loaded.body.embeddings  # the tie survives the round trip
    b = batch(tokenizer, seed=3)
    with torch.no_grad():
        a = model(**b, rng=torch.Generator().manual_seed(1))
        c = loaded.eval()(**b, rng=torch.Generator().manual_seed(1))
    assert torch.allclose(a.loss, c.loss) and torch.equal(a.replaced, c.replaced)

    from minilm.nn.model import Transformer
    from minilm.train import model_source

    body, tok = model_source.load(model_source.resolve(tmp_path / "ckpt"), Transformer)
    assert body is not None and sum(p.numel() for p in body.parameters()) == sum(
        p.numel() for p in model.body.parameters())


@pytest.mark.slow
def test_cli_pretrain_electra_scores_both_sides_and_finetune_reads_it(tmp_path, corpus_file, monkeypatch, capsys):
    from minilm.commands.pretrain import configure, run

    monkeypatch.setenv("MINILM_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    configure(parser)
    out = tmp_path / "electra"
    args = parser.parse_args(["--objective", "electra", "--data", str(corpus_file), "--preset", "bert-tiny",
                              "--vocab-size", "320", "--seq-len", "32", "--batch-size", "8", "--eval-rows", "8",
                              "--steps", "6", "--warmup", "2", "--no-progress", "--out", str(out)])
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "the discriminator:" in printed and "of the replaced ones found" in printed
    summary = json.loads((out / "summary.json").read_text())
    for key in ("eval_accuracy", "eval_discriminator_accuracy", "eval_replaced_recall", "eval_replaced_fraction"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert 0.0 < summary["eval_replaced_fraction"] < 0.3  # ~15% masked, minus the samples that got it right
    model, tok = load_model(out / "final")
    assert isinstance(model, ELECTRA) and model.special_ids == special_ids(tok)
    # --init continues an ELECTRA run as ELECTRA; as a masked LM it is refused by name
    from minilm.commands.pretrain import recipe_from
    from minilm.train.pretraining import build

    more = parser.parse_args(["--objective", "electra", "--data", str(corpus_file), "--init", str(out), "--seq-len",
                              "32", "--steps", "2", "--out", str(tmp_path / "more")])
    _, again, _, _ = build(recipe_from(more), torch.device("cpu"), verbose=False)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    wrong = parser.parse_args(["--data", str(corpus_file), "--init", str(out), "--seq-len", "32", "--steps", "2",
                               "--out", str(tmp_path / "wrong")])
    with pytest.raises(ValueError, match=r"holds an ELECTRA, not a MaskedLM \(--objective mlm continues a MaskedLM\)"):
        build(recipe_from(wrong), torch.device("cpu"), verbose=False)
