"""minilm loads Hugging Face BERT and GPT-2 weights and computes the same numbers.

Randomly initialised `transformers` models of a small config (fp32, eval mode, eager
attention) are the reference: after `from_hf` our logits match within 1e-5, and `to_hf`
gives back exactly their state dict (same keys, same tensors).
"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from minilm.config import ModelConfig  # noqa: E402
from minilm.hf import config_from_hf, load_hf_state_dict  # noqa: E402
from minilm.model import CausalLM, MaskedLM, SequenceClassifier, TokenClassifier, Transformer  # noqa: E402

V, T, B = 97, 12, 3


def bert_config(**kw):
    return transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32, type_vocab_size=2,
                                   attn_implementation="eager", **kw)


def gpt2_config():
    return transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                   bos_token_id=0, eos_token_id=0, attn_implementation="eager")


def hf_model(cls, config):
    torch.manual_seed(0)
    model = cls(config).eval()
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


def assert_round_trip(ours, hf):
    exported, reference = ours.to_hf(), hf.state_dict()
    assert sorted(exported) == sorted(reference)
    for key in reference:
        assert torch.equal(exported[key], reference[key]), key


@pytest.mark.parametrize("hf_cls, ours_cls", [
    ("BertForMaskedLM", MaskedLM),
    ("BertForSequenceClassification", SequenceClassifier),
    ("BertForTokenClassification", TokenClassifier),
])
def test_bert_heads_match(hf_cls, ours_cls):
    hf = hf_model(getattr(transformers, hf_cls), bert_config(num_labels=5))
    config = config_from_hf(hf.config.to_dict())
    ours = ours_cls.from_hf(hf.state_dict(), config).eval()
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, mask, types).logits
    # Padded positions of the padded row are compared too: BERT computes them the same way.
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert_round_trip(ours, hf)


def test_masked_lm_labels_select_positions_and_match_hf_loss():
    hf = hf_model(transformers.BertForMaskedLM, bert_config())
    ours = MaskedLM.from_hf(hf.state_dict(), config_from_hf(hf.config.to_dict())).eval()
    ids, mask, types = inputs()
    labels = torch.full((B, T), -100)
    labels[0, 2], labels[1, 5], labels[2, 9] = 4, 7, 11
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        got = ours(ids, mask, types, labels=labels)
    assert got.logits.shape == (3, V) and got.labels.tolist() == [4, 7, 11]
    torch.testing.assert_close(got.logits, expected.logits[labels != -100], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_bert_model_body_matches():
    hf = hf_model(transformers.BertModel, bert_config())
    hf_body = transformers.BertModel(hf.config, add_pooling_layer=False).eval()
    hf_body.load_state_dict({k: v for k, v in hf.state_dict().items() if not k.startswith("pooler.")})
    body = Transformer(config_from_hf(hf.config.to_dict()), causal=False).eval()
    load_hf_state_dict(body, hf_body.state_dict())
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = hf_body(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = body(ids, mask, types)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_gpt2_matches():
    hf = hf_model(transformers.GPT2LMHeadModel, gpt2_config())
    config = config_from_hf(hf.config.to_dict())
    assert config.norm == "pre" and config.activation == "gelu_tanh" and config.type_vocab_size == 0
    ours = CausalLM.from_hf(hf.state_dict(), config).eval()
    ids, _, _ = inputs()
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
        got = ours(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert_round_trip(ours, hf)
    # Conv1D weights are stored (in, out): ours must be the transpose, q being c_attn's first third.
    c_attn = hf.state_dict()["transformer.h.0.attn.c_attn.weight"]  # (D, 3D)
    assert torch.equal(ours.body.blocks[0].attn.q.weight, c_attn[:, :32].t())


def test_reads_safetensors_and_plain_files_with_config(tmp_path):
    hf = hf_model(transformers.BertForMaskedLM, bert_config())
    hf.save_pretrained(tmp_path / "st")  # safetensors + config.json; drops the tied decoder weight
    torch.save(hf.state_dict(), tmp_path / "plain.bin")
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        for source, config in [(tmp_path / "st", None), (tmp_path / "plain.bin", config_from_hf(hf.config.to_dict()))]:
            ours = MaskedLM.from_hf(source, config).eval()
            torch.testing.assert_close(ours(ids, mask, types).logits, expected, atol=1e-5, rtol=1e-5)


def test_config_inferred_from_shapes():
    hf = hf_model(transformers.GPT2LMHeadModel, transformers.GPT2Config(
        vocab_size=V, n_embd=64, n_layer=1, n_head=1, n_positions=16, bos_token_id=0, eos_token_id=0))
    ours = CausalLM.from_hf(hf.state_dict())
    assert (ours.config.d_model, ours.config.n_layers, ours.config.max_seq_len, ours.config.vocab_size) == (64, 1, 16, V)


def test_mismatches_are_errors_that_list_the_keys():
    hf = hf_model(transformers.BertForSequenceClassification, bert_config(num_labels=2))
    config = config_from_hf(hf.config.to_dict())
    sd = hf.state_dict()
    broken = {k: v for k, v in sd.items() if k != "bert.encoder.layer.1.attention.self.key.bias"}
    broken["bert.encoder.layer.1.surprise.weight"] = torch.zeros(1)
    with pytest.raises(KeyError) as info:
        SequenceClassifier.from_hf(broken, config)
    assert "bert.encoder.layer.1.attention.self.key.bias" in str(info.value)
    assert "bert.encoder.layer.1.surprise.weight" in str(info.value)
    wrong = ModelConfig(**{**config.to_dict(), "d_ff": 128})
    with pytest.raises(ValueError, match="intermediate.dense.weight"):
        SequenceClassifier.from_hf(sd, wrong)
    with pytest.raises(KeyError, match="missing keys"):  # a GPT-2 checkpoint is not a BERT one
        MaskedLM.from_hf(hf_model(transformers.GPT2LMHeadModel, gpt2_config()).state_dict(), config)


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
