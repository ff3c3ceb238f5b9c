"""Assignment attention: rotary positions and the head split, against formulations written another way.

`model` is the student's minilm.nn.model (minilm.course.boundary); the formulations are the grader's.
"""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course.boundary import student
from minilm.nn.config import ModelConfig

model = student("minilm.nn.model")


def complex_rotation(x, start):
    """RoPE as complex multiplication: channel pair (i, i + Dh/2) is the complex number x_i + j x_{i+Dh/2},
    turned by e^{j * position * 10000^(-2i/Dh)}."""
    B, H, T, Dh = x.shape
    half = Dh // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())  # (B, H, T, Dh/2)
    position = torch.arange(start, start + T, dtype=torch.float64)[:, None]  # (T, 1)
    angle = position * 10000.0 ** (-torch.arange(half, dtype=torch.float64) * 2 / Dh)  # (T, Dh/2)
    turned = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([turned.real, turned.imag], dim=-1)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.sampled_from([2, 4, 8, 16, 64]),
       st.integers(0, 500), st.integers(0, 2**16))
def test_rotate_equals_complex_rotation(B, H, T, Dh, start, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H, T, Dh, generator=g)
    got = model.rotate(x, start)
    assert got.shape == x.shape and got.dtype == x.dtype, "rotate keeps the shape and dtype of x"
    torch.testing.assert_close(got.double(), complex_rotation(x, start), atol=2e-4, rtol=1e-4,
                               msg=f"rotate(x, start={start}) is not the rotation by position / 10000^(2i/Dh) "
                                   "of the channel pairs (i, i + Dh/2)")


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(8, 1), (8, 2), (12, 3), (16, 4)]), st.integers(1, 3), st.integers(1, 7),
       st.integers(0, 2**16))
def test_project_gives_each_head_its_slice(dims, B, T, seed):
    d_model, heads = dims
    student("torch").manual_seed(seed)  # the weights are drawn where the layer lives
    config = ModelConfig(vocab_size=10, max_seq_len=16, d_model=d_model, n_layers=1, n_heads=heads,
                         d_ff=2 * d_model, dropout=0.0, attention_dropout=0.0)
    attn = model.SelfAttention(config, causal=False).double()
    x = torch.randn(B, T, d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    q, k, v = attn.project(x)
    Dh = d_model // heads
    for name, got, layer in (("q", q, attn.q), ("k", k, attn.k), ("v", v, attn.v)):
        layer = {"weight": layer.weight.detach(), "bias": layer.bias.detach()}  # one copy of each, here
        assert got.shape == (B, heads, T, Dh), f"{name} has shape {tuple(got.shape)}, expected (B, H, T, Dh) = " \
                                               f"{(B, heads, T, Dh)}"
        for h in range(heads):
            rows = slice(h * Dh, (h + 1) * Dh)  # head h owns output features h*Dh .. (h+1)*Dh - 1
            expected = x @ layer["weight"][rows].T + layer["bias"][rows]  # (B, T, Dh)
            torch.testing.assert_close(got[:, h], expected, msg=f"head {h} of {name} is not its own slice of "
                                                                f"the projection")
