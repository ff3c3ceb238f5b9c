"""minilm reads and writes Llama checkpoints: the same logits as transformers' LlamaForCausalLM.

Randomly initialised `transformers` Llamas of tiny configs (fp32, eval mode, eager attention)
are the reference, with their norms' gains moved off 1 so that a misplaced norm would show:
grouped-query (2 key/value heads for 4 query heads), multi-query (1), plain multi-head (4),
tied and untied embeddings, with and without biases. Nothing is downloaded.
"""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from minilm import CausalLM, Transformer  # noqa: E402
from minilm.course.boundary import student  # noqa: E402
from minilm.nn import hf as mhf  # noqa: E402
from minilm.nn.config import ModelConfig  # noqa: E402

V, T, B, D, H = 97, 12, 3, 32, 4

# name -> (key/value heads, tied embeddings, biases)
LLAMAS = {"gqa-untied": (2, False, False), "mqa-tied": (1, True, False), "mha-untied": (4, False, False),
          "gqa-tied-bias": (2, True, True)}


def llama_config(kv_heads=2, tied=False, bias=False, **kw):
    return transformers.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=H, num_key_value_heads=kv_heads, max_position_embeddings=64,
                                    tie_word_embeddings=tied, attention_bias=bias, mlp_bias=bias, rms_norm_eps=1e-6,
                                    rope_theta=500.0, bos_token_id=0, eos_token_id=0, attn_implementation="eager",
                                    **kw)


def hf_llama(name, cls=None):
    kv_heads, tied, bias = LLAMAS[name]
    torch.manual_seed(0)
    model = (cls or transformers.LlamaForCausalLM)(llama_config(kv_heads, tied, bias)).eval()
    with torch.no_grad():  # gains and biases off their initial 1 and 0, so a swapped or missing one shows
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def token_ids(seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", LLAMAS)
def test_llama_matches_transformers(name):
    # Assignment modern: the student's blocks (RMSNorm, SwiGLU, rotary, shared heads) given Llama's weights.
    hf = hf_llama(name)
    ours = student("minilm.nn.model").CausalLM.from_hf(hf.state_dict(), mhf.config_from_hf(hf.config.to_dict()))
    ours = ours.eval()
    kv_heads, tied, bias = LLAMAS[name]
    c = ours.config
    assert (c.kv_heads, c.tie_embeddings, c.bias, c.rope_theta) == (kv_heads, tied, bias, 500.0)
    assert ours.body.blocks[0].attn.k.weight.shape == (kv_heads * D // H, D)
    ids = token_ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
        mask = torch.ones(B, T, dtype=torch.long)
        mask[1, 7:] = 0  # a right-padded row: its real positions are unchanged
        got, expected = ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)
    exported, reference = ours.to_hf(), hf.state_dict()  # and back: the very tensors, under the very names
    assert sorted(exported) == sorted(reference)  # a tied lm_head is listed, as in transformers' state dict
    assert all(torch.equal(exported[k], reference[k]) for k in reference)


def test_a_saved_llama_loads_with_its_tied_head(tmp_path):
    for name in ("gqa-untied", "mqa-tied"):
        hf = hf_llama(name)
        hf.save_pretrained(tmp_path / name)  # config.json + model.safetensors, a tied lm_head left out
        ours = CausalLM.from_hf(tmp_path / name).eval()
        assert (ours.lm_head.weight is ours.body.embeddings.tok.weight) is LLAMAS[name][1]
        ids = token_ids()
        with torch.no_grad():
            torch.testing.assert_close(ours(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_llama_body_gives_the_hidden_states(tmp_path):
    hf = hf_llama("gqa-untied", transformers.LlamaModel)
    hf.save_pretrained(tmp_path / "body")
    body = Transformer.from_hf(tmp_path / "body").eval()
    assert body.causal and body.config.kv_heads == 2
    ids = token_ids()
    with torch.no_grad():
        torch.testing.assert_close(body(ids), hf(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gqa-untied", "mqa-tied"])
def test_greedy_generation_with_the_cache_matches_transformers(name, tmp_path):
    """The KV cache holds Hkv heads per layer; greedy continuations equal transformers' token for token."""
    hf = hf_llama(name)
    ours = CausalLM.from_hf(hf.state_dict(), mhf.config_from_hf(hf.config.to_dict())).eval()
    prompt = token_ids(2)[:, :5]
    expected = hf.generate(prompt, max_new_tokens=20, do_sample=False, min_new_tokens=20, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, 20, top_k=1), expected)
    assert torch.equal(ours.generate(prompt, 20, top_k=1, use_cache=False), expected)


def random_llama(vocab_size=V, **overrides):
    config = ModelConfig.preset("llama-mini", vocab_size=vocab_size, max_seq_len=64, d_model=D, n_layers=2, n_heads=H,
                                d_ff=64, **overrides)
    torch.manual_seed(3)
    model = CausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("overrides", [
    dict(n_kv_heads=2, tie_embeddings=False), dict(n_kv_heads=1, tie_embeddings=True),
    dict(n_kv_heads=None, bias=True, rope_theta=1e6), dict(n_kv_heads=2, rope_pairing="interleaved"),
], ids=["gqa-untied", "mqa-tied", "mha-bias", "gqa-interleaved"])
def test_export_loads_in_transformers_with_the_same_logits(overrides, tmp_path):
    from minilm.data.tokenizer import Tokenizer

    text = "a film about films, and the people who watch them"
    tok = Tokenizer.train([text] * 20, 280, lowercase=True)
    model = random_llama(tok.vocab_size, **overrides)
    folder = mhf.save_hf(model, tok, tmp_path / "llama")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == model.config.kv_heads
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert transformers.AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"] == \
        tok.encode(text)
    ids = torch.randint(0, tok.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
    theirs = student("minilm.nn.model").CausalLM(model.config)  # assignment modern: the student's blocks compute
    theirs.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    # Read back with minilm: Hugging Face's file is in split-halves order, so an interleaved model is
    # read as the split-halves model it equals, unless its config asks for the interleaved rows again.
    again = CausalLM.from_hf(folder, model.config if overrides.get("rope_pairing") else None).eval()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    if overrides.get("rope_pairing"):
        halves = CausalLM.from_hf(folder).eval()
        assert halves.config.rope_pairing == "half"
        with torch.no_grad():
            torch.testing.assert_close(halves(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)


def test_the_two_pairings_differ_by_a_permutation_of_q_and_k_rows():
    interleaved = random_llama(rope_pairing="interleaved")
    halves = CausalLM(ModelConfig(**{**interleaved.config.to_dict(), "rope_pairing": "half"})).eval()
    state = {k: mhf.rotary_rows(v, D // H, to_halves=True) if k.endswith(("attn.q.weight", "attn.k.weight")) else v
             for k, v in interleaved.state_dict().items()}
    halves.load_state_dict(state)
    ids = token_ids()
    with torch.no_grad():
        plain = interleaved(ids).logits
        torch.testing.assert_close(halves(ids).logits, plain, atol=1e-5, rtol=1e-5)
        interleaved_without_permutation = CausalLM(halves.config).eval()
        interleaved_without_permutation.load_state_dict(interleaved.state_dict())
        assert (interleaved_without_permutation(ids).logits - plain).abs().max() > 1e-3  # the pairing matters
    for rows in (torch.randn(3 * 8, 5), torch.randn(3 * 8)):  # weights and biases: the inverse undoes it
        assert torch.equal(mhf.rotary_rows(mhf.rotary_rows(rows, 8, to_halves=True), 8, to_halves=False), rows)


def test_config_inferred_from_shapes():
    config = transformers.LlamaConfig(vocab_size=V, hidden_size=128, intermediate_size=96, num_hidden_layers=3,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    ours = CausalLM.from_hf(transformers.LlamaForCausalLM(config).state_dict())  # no config: 64-wide heads assumed
    c = ours.config
    assert (c.d_model, c.n_layers, c.n_heads, c.kv_heads, c.d_ff, c.vocab_size) == (128, 3, 2, 1, 96, V)
    assert (c.tie_embeddings, c.bias, c.norm_type, c.activation, c.position) == (False, False, "rms", "swiglu", "rope")


# ---------------------------------------------------------------------------------------------- refusals


def one_line_error(fn, *names):
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, (name, message)


def test_llama_variants_minilm_does_not_compute_are_refused(tmp_path):
    base = hf_llama("gqa-untied").config.to_dict()
    for change, named in [({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "llama3"),
                          ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
                          ({"attention_bias": True, "mlp_bias": False}, "attention_bias != mlp_bias"),
                          ({"head_dim": 16}, "head_dim=16")]:
        one_line_error(lambda: mhf.config_from_hf({**base, **change}, "x/config.json"), "x/config.json", named)


def test_export_refuses_a_decoder_no_family_computes(tmp_path):
    rope_gpt = CausalLM(ModelConfig.preset("gpt-micro", vocab_size=V, max_seq_len=32, position="rope"))
    one_line_error(lambda: mhf.save_hf(rope_gpt, None, tmp_path / "a"), "LlamaForCausalLM", "norm_type='layer'")
    no_bias_gpt = CausalLM(ModelConfig.preset("gpt-micro", vocab_size=V, max_seq_len=32, bias=False))
    one_line_error(lambda: mhf.save_hf(no_bias_gpt, None, tmp_path / "b"), "GPT2LMHeadModel", "bias=False")
    gqa_gpt = CausalLM(ModelConfig.preset("gpt-micro", vocab_size=V, max_seq_len=32, n_kv_heads=1))
    one_line_error(lambda: mhf.save_hf(gqa_gpt, None, tmp_path / "c"), "GPT2LMHeadModel", "n_kv_heads=1")
    assert not any((tmp_path / n).exists() for n in "abc")


def test_a_llama_folder_given_to_an_encoder_class(tmp_path):
    from minilm import MaskedLM

    hf_llama("mqa-tied").save_pretrained(tmp_path / "hf")
    one_line_error(lambda: MaskedLM.from_hf(tmp_path / "hf"), "Llama-family (decoder)", "CausalLM")
