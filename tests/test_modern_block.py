"""The modern decoder block as configuration: each switch changes only its own part, grouped-query
attention is multi-head attention with repeated key/value weights, the KV cache holds the shared
heads, document masking isolates the documents of a packed row, and bad settings name the field."""
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm import CausalLM, ModelConfig
from minilm.data.collate import document_mask
from minilm.nn.config import swiglu_hidden
from minilm.nn.model import KVCache, RMSNorm

V = 61


def gpt(**overrides) -> ModelConfig:
    shape = dict(vocab_size=V, max_seq_len=48, d_model=32, n_heads=4, d_ff=64, dropout=0.0, attention_dropout=0.0)
    return ModelConfig.preset("gpt-micro", **{**shape, **overrides})


def parameter_names(config):
    return {name: tuple(p.shape) for name, p in CausalLM(config).named_parameters()}


def test_each_switch_changes_only_its_own_part():
    base = parameter_names(gpt())
    changes = {
        "position": (dict(position="rope"), {"body.embeddings.pos.weight"}, set()),
        "norm_type": (dict(norm_type="rms"), {n for n in base if "norm" in n and n.endswith("bias")}, set()),
        "activation": (dict(activation="swiglu"), set(), {f"body.blocks.{i}.ff.gate.{w}" for i in range(2)
                                                          for w in ("weight", "bias")}),
        "bias": (dict(bias=False), {n for n in base if n.endswith("bias")}, set()),
        "tie_embeddings": (dict(tie_embeddings=False), set(), {"lm_head.weight"}),
    }
    for field, (overrides, gone, new) in changes.items():
        names = parameter_names(gpt(**overrides))
        assert set(base) - set(names) == gone, field
        assert set(names) - set(base) == new, field
    narrow = parameter_names(gpt(n_kv_heads=1))  # multi-query: k and v project to one 8-wide head
    assert narrow["body.blocks.0.attn.k.weight"] == (8, 32) and narrow["body.blocks.0.attn.q.weight"] == (32, 32)
    assert {n: s for n, s in narrow.items() if ".attn.k." not in n and ".attn.v." not in n} == \
        {n: s for n, s in base.items() if ".attn.k." not in n and ".attn.v." not in n}


def test_swiglu_width_rounds_like_llama():
    assert swiglu_hidden(4096) == 11008  # Llama 2 7B
    assert swiglu_hidden(8192, multiple_of=4096, multiplier=1.3) == 28672  # Llama 2 70B
    assert swiglu_hidden(256, multiple_of=32) == 704  # llama-mini: 2/3 of 4 x 256 = 682, rounded up
    gelu, swiglu = (sum(p.numel() for p in CausalLM(gpt(**o, d_model=48, d_ff=d)).body.blocks[0].ff.parameters())
                    for o, d in ((dict(), 4 * 48), (dict(activation="swiglu"), swiglu_hidden(48, multiple_of=1))))
    assert abs(swiglu - gelu) / gelu < 0.01  # 2/3 of the width keeps the MLP's size


@settings(max_examples=15, deadline=None)
@given(kv_heads=st.sampled_from([1, 2]), rope=st.booleans(), pairing=st.sampled_from(["half", "interleaved"]),
       seed=st.integers(0, 2**16))
def test_grouped_query_model_is_multi_head_with_repeated_kv_weights(kv_heads, rope, pairing, seed):
    """A model with shared key/value heads computes what a multi-head model computes whose k and v rows
    repeat them, forward and backward (a shared row's gradient is its group's sum)."""
    torch.manual_seed(seed)
    position = dict(position="rope", rope_pairing=pairing) if rope else {}
    grouped = CausalLM(gpt(n_kv_heads=kv_heads, **position)).double()
    full = CausalLM(gpt(**position)).double()
    group, dh = 4 // kv_heads, 8
    state = {}
    for name, t in grouped.state_dict().items():
        if ".attn.k." in name or ".attn.v." in name:  # rows (Hkv * Dh, ...) -> (H * Dh, ...), head h = h // group
            t = t.reshape(kv_heads, dh, *t.shape[1:]).repeat_interleave(group, 0).reshape(4 * dh, *t.shape[1:])
        state[name] = t
    full.load_state_dict(state)
    ids = torch.randint(0, V, (2, 11))
    a, b = grouped(ids, labels=ids), full(ids, labels=ids)
    torch.testing.assert_close(a.logits, b.logits)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(grouped.named_parameters(), full.parameters()):
        g = q.grad
        if ".attn.k." in name or ".attn.v." in name:
            g = g.reshape(kv_heads, group, dh, *g.shape[1:]).sum(1).reshape(p.shape)
        torch.testing.assert_close(p.grad, g, msg=name)


@pytest.mark.parametrize("kv_heads", [1, 2, None])
def test_the_cache_holds_the_shared_heads_and_gives_the_full_forward(kv_heads):
    torch.manual_seed(0)
    model = CausalLM(gpt(n_kv_heads=kv_heads, position="rope", norm_type="rms", activation="swiglu",
                         bias=False)).eval()
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        full = model(ids).logits  # (2, 9, V)
        cache = [KVCache() for _ in model.body.blocks]
        steps = [model(ids[:, :4], cache=cache).logits] + [model(ids[:, i:i + 1], cache=cache).logits
                                                           for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache[0].k.shape == (2, model.config.kv_heads, 9, 8)


def test_document_mask_isolates_the_documents_of_a_packed_row():
    """With rotary positions (relative) and a document mask, each document of a packed row gets the logits
    it gets alone: no token attends across <|endoftext|>."""
    torch.manual_seed(0)
    eot = V - 1
    model = CausalLM(gpt(position="rope", norm_type="rms", activation="swiglu", n_kv_heads=2)).eval()
    docs = [torch.randint(0, eot, (n,)).tolist() + [eot] for n in (5, 8, 3)]
    row = torch.tensor([sum(docs, [])])  # (1, 19)
    mask = document_mask(row, eot)
    assert mask.shape == (1, 1, 19, 19) and mask[0, 0, 5, 5] and not mask[0, 0, 6, 5] and mask[0, 0, 6, 6]
    with torch.no_grad():
        packed = model(row, attn_mask=mask).logits[0]  # (19, V)
        alone = torch.cat([model(torch.tensor([d])).logits[0] for d in docs])  # (19, V)
        crossing = model(row).logits[0]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    assert (crossing[6:] - alone[6:]).abs().max() > 1e-3  # without the mask the later documents see the earlier


def test_rms_norm_keeps_the_dtype_and_matches_torch():
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16))
    x = torch.randn(3, 5, 16) * 100
    torch.testing.assert_close(norm(x), torch.nn.functional.rms_norm(x, (16,), norm.weight, eps=1e-6))
    assert norm(x.bfloat16()).dtype == torch.bfloat16
    torch.testing.assert_close(norm(x.bfloat16()).float(), norm(x), atol=0.1, rtol=0.02)


def test_modern_settings_train_with_lora_and_prefixes():
    from minilm.nn.peft import apply_lora, apply_prefix

    config = ModelConfig.preset("llama-mini", vocab_size=V, max_seq_len=48, d_model=32, n_layers=2, n_heads=4,
                                d_ff=64)
    ids = torch.randint(0, V, (2, 10))
    lora = apply_lora(CausalLM(config), targets=("q", "k", "gate"))
    assert type(lora.body.blocks[0].ff.gate).__name__ == "LoRALinear"
    prefix = apply_prefix(CausalLM(config), n_prefix=3)  # prefixes get the model's 2 key/value heads
    assert prefix.body.blocks[0].attn.prefix.key.shape == (2, 3, 8)
    for model in (lora, prefix):
        model(ids, labels=ids).loss.backward()


@pytest.mark.parametrize("field, value, words", [
    ("n_kv_heads", 3, "a positive divisor of n_heads=4"),
    ("n_kv_heads", 0, "a positive divisor of n_heads=4"),
    ("norm_type", "batch", "one of ('layer', 'rms')"),
    ("activation", "relu", "one of ('gelu', 'gelu_tanh', 'swiglu')"),
    ("rope_pairing", "adjacent", "one of ('half', 'interleaved')"),
    ("rope_theta", 0.5, "a float > 1"),
    ("bias", "no", "True or False"),
])
def test_bad_settings_name_the_field(field, value, words):
    with pytest.raises(ValueError) as info:
        dataclasses.replace(gpt(), **{field: value})
    assert f"ModelConfig.{field}={value!r} is invalid" in str(info.value) and words in str(info.value)
