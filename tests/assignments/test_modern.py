"""Assignment modern: RMSNorm, SwiGLU, rotary positions with both pairings, grouped-query attention's shared
heads, each against a formulation written another way.

`model` and `reference` are the student's modules (minilm.course.boundary): in-process by hand, through the
grader's worker when graded; the formulations are the grader's.
"""
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course.boundary import student
from minilm.nn.config import ModelConfig

model = student("minilm.nn.model")
reference = student("minilm.kernels.reference")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.sampled_from([1, 4, 16, 64]), st.sampled_from([1e-6, 1e-5, 0.1]),
       st.sampled_from([1e-3, 1.0, 1e3]), st.integers(0, 2**16))
def test_rms_norm_matches_the_definition(B, T, D, eps, scale, seed):
    g = torch.Generator().manual_seed(seed)
    norm = model.RMSNorm(D, eps).double()
    weight = torch.randn(D, generator=g, dtype=torch.float64)
    norm.load_state_dict({"weight": weight})
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64) * scale
    expected = x / torch.sqrt((x * x).sum(-1, keepdim=True) / D + eps) * weight  # (B, T, D)
    got = norm(x).detach()
    assert got.shape == x.shape and got.dtype == x.dtype, "RMSNorm keeps the shape and dtype of x"
    torch.testing.assert_close(got, expected, msg="RMSNorm(x) is not x / sqrt(mean(x^2) + eps) * weight over the "
                                                  "last dimension")
    torch.testing.assert_close(got, F.rms_norm(x, (D,), weight, eps=eps), msg="and torch's rms_norm disagrees")


def test_rms_norm_computes_in_float32_or_wider_and_returns_the_input_dtype():
    torch.manual_seed(0)
    norm = model.RMSNorm(64, 1e-6)  # weight 1
    x = (torch.randn(4, 64) * 1e-3).bfloat16()  # small values: their squares lose bits in bf16
    got = norm(x)
    assert got.dtype == torch.bfloat16, "RMSNorm returns x's dtype"
    expected = (x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + 1e-6)).bfloat16()
    assert torch.equal(got, expected), "RMSNorm should compute in float32 and round once at the end"
    x64 = torch.randn(4, 64, dtype=torch.float64)
    expected64 = x64 / x64.square().mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(norm(x64), expected64, atol=1e-12, rtol=1e-12,
                               msg="float64 inputs should be normalised in float64, not rounded to float32")


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(8, 16), (12, 32), (16, 8)]), st.booleans(), st.integers(1, 3), st.integers(0, 2**16))
def test_swiglu_is_a_silu_gate_on_the_up_projection(dims, bias, T, seed):
    d_model, d_ff = dims
    student("torch").manual_seed(seed)  # the weights are drawn where the layer lives
    config = ModelConfig(vocab_size=10, max_seq_len=8, d_model=d_model, n_layers=1, n_heads=2, d_ff=d_ff,
                         dropout=0.0, attention_dropout=0.0, activation="swiglu", bias=bias)
    ff = model.FeedForward(config).double()
    x = torch.randn(2, T, d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    weights = ff.state_dict()  # a copy, here

    def linear(name, h):
        bias = weights.get(f"{name}.bias")
        return h @ weights[f"{name}.weight"].T + (bias if bias is not None else 0)

    gate = linear("gate", x)
    hidden = gate / (1 + torch.exp(-gate)) * linear("up", x)  # silu(gate) * up
    got = ff.swiglu(x)
    assert got.shape == (2, T, d_ff), f"swiglu(x) has shape {tuple(got.shape)}, expected (B, T, d_ff)"
    torch.testing.assert_close(got, hidden, msg="swiglu(x) is not silu(gate(x)) * up(x)")
    torch.testing.assert_close(ff(x), linear("down", hidden), msg="the MLP is not down(swiglu(x))")


def adjacent_pair_rotation(x, start, theta):
    """RoPE on adjacent pairs as complex multiplication: channels (2i, 2i + 1) are the complex number
    x_2i + j x_2i+1, turned by e^{j * position * theta^(-2i/Dh)}."""
    B, H, T, Dh = x.shape
    z = torch.view_as_complex(x.double().reshape(B, H, T, Dh // 2, 2).contiguous())  # (B, H, T, Dh/2)
    position = torch.arange(start, start + T, dtype=torch.float64)[:, None]  # (T, 1)
    angle = position * theta ** (-torch.arange(Dh // 2, dtype=torch.float64) * 2 / Dh)  # (T, Dh/2)
    return torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).reshape(B, H, T, Dh)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.sampled_from([2, 4, 8, 16, 64]),
       st.integers(0, 500), st.sampled_from([100.0, 10000.0, 500000.0]), st.integers(0, 2**16))
def test_rotate_interleaved_equals_complex_rotation_of_adjacent_pairs(B, H, T, Dh, start, theta, seed):
    x = torch.randn(B, H, T, Dh, generator=torch.Generator().manual_seed(seed))
    got = model.rotate(x, start, pairing="interleaved", theta=theta)
    assert got.shape == x.shape and got.dtype == x.dtype, "rotate keeps the shape and dtype of x"
    torch.testing.assert_close(got.double(), adjacent_pair_rotation(x, start, theta), atol=2e-4, rtol=1e-4,
                               msg=f"rotate(x, {start}, pairing='interleaved', theta={theta}) is not the rotation "
                                   f"of the channel pairs (2i, 2i + 1) by position / theta^(2i/Dh)")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.sampled_from([2, 8, 32]), st.integers(0, 100), st.integers(0, 2**16))
def test_the_two_pairings_are_one_rotation_up_to_a_permutation(T, Dh, start, seed):
    """Interleaved = send channel 2i + p to i + p * Dh/2, rotate split halves, send it back: which is why
    Hugging Face can store Meta's interleaved Llama weights with q's and k's rows permuted."""
    x = torch.randn(2, 3, T, Dh, generator=torch.Generator().manual_seed(seed))
    to_halves = torch.cat([torch.arange(0, Dh, 2), torch.arange(1, Dh, 2)])  # halves channel c holds x[to_halves[c]]
    back = torch.argsort(to_halves)
    halves = model.rotate(x[..., to_halves], start, pairing="half", theta=500.0)
    torch.testing.assert_close(model.rotate(x, start, pairing="interleaved", theta=500.0), halves[..., back],
                               msg="the interleaved rotation is not the split-halves one on permuted channels")
    q, k = x[:, :, :1], x[:, :, 1:] if T > 1 else x[:, :, :1]
    for pairing in ("half", "interleaved"):  # scores depend only on the distance, in either pairing
        near = model.rotate(q, 7, pairing=pairing) @ model.rotate(k, 9, pairing=pairing).transpose(-1, -2)
        far = model.rotate(q, 107, pairing=pairing) @ model.rotate(k, 109, pairing=pairing).transpose(-1, -2)
        torch.testing.assert_close(near, far, atol=1e-4, rtol=1e-4, msg=f"{pairing}: scores depend on more than "
                                                                         f"the distance")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(0, 2**16))
def test_repeat_kv_gives_each_query_head_its_group(B, H_kv, n_rep, T, seed):
    x = torch.randn(B, H_kv, T, 8, generator=torch.Generator().manual_seed(seed))
    got = reference.repeat_kv(x, n_rep)
    assert got.shape == (B, H_kv * n_rep, T, 8), f"repeat_kv gives {tuple(got.shape)}, expected (B, Hkv*n_rep, T, D)"
    for h in range(H_kv * n_rep):
        assert torch.equal(got[:, h], x[:, h // n_rep]), f"query head {h} should read key/value head {h // n_rep}"
