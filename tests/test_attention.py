"""attention(): every backend equals the reference, forward and backward; masks mean what they say."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm import attention as attention_module
from minilm.attention import attention, reference_attention


def loop_attention(q, k, v, causal, key_padding_mask):
    """Attention one query at a time, straight from the definition (independent of the reference)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    out = torch.zeros_like(q)
    for b in range(B):
        for i in range(Tq):
            seen = [j for j in range(Tk) if (not causal or j <= i + Tk - Tq)
                    and (key_padding_mask is None or key_padding_mask[b, j])]
            if not seen:
                continue  # a query that sees nothing outputs zeros
            scores = torch.einsum("hd,hsd->hs", q[b, :, i], k[b, :, seen]) / math.sqrt(D)  # (H, S)
            out[b, :, i] = torch.einsum("hs,hsd->hd", torch.softmax(scores, dim=-1), v[b, :, seen])
    return out


@st.composite
def cases(draw):
    B, H = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    Tq = draw(st.integers(1, 9))
    Tk = draw(st.sampled_from([Tq, Tq + draw(st.integers(1, 5))]))  # Tk > Tq: a cache or a prefix
    D = draw(st.sampled_from([4, 8, 16]))
    causal = draw(st.booleans())
    padded = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for T in (Tq, Tk, Tk))
    mask = None
    if padded:
        lengths = torch.randint(0, Tk + 1, (B,), generator=g)  # length 0: a fully padded row
        mask = torch.arange(Tk)[None, :] < lengths[:, None]  # (B, Tk)
    return q, k, v, causal, mask


@settings(max_examples=40, deadline=None)
@given(cases())
def test_reference_matches_the_definition(case):
    q, k, v, causal, mask = case
    torch.testing.assert_close(reference_attention(q, k, v, causal=causal, key_padding_mask=mask),
                               loop_attention(q, k, v, causal, mask))


def compare_with_reference(backend, q, k, v, causal, mask, **tol):
    grad = torch.randn_like(q)
    results = []
    for name in ("reference", backend):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = attention(*leaves, causal=causal, key_padding_mask=mask, backend=name)
        (out * grad).sum().backward()
        results.append((out, *(t.grad for t in leaves)))
    for expected, got in zip(*results):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, **tol)


@settings(max_examples=30, deadline=None)
@given(case=cases())
def test_sdpa_matches_reference_forward_and_backward(case):
    compare_with_reference("sdpa", *case, atol=1e-6, rtol=1e-6)  # float64


@pytest.mark.skipif(attention_module._flash() is None, reason="kernels.flash_attention is not importable")
@settings(max_examples=6, deadline=None)  # the Triton interpreter is slow on the CPU
@given(case=cases(), head_dim=st.sampled_from([16, 32]))
def test_triton_matches_reference_forward_and_backward(case, head_dim):
    q, k, v, causal, mask = case
    g = torch.Generator().manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # on the CPU through TRITON_INTERPRET=1
    q, k, v = (torch.randn(*t.shape[:2], q.shape[2], head_dim, generator=g).to(device) for t in (q, k, v))  # fp32
    mask = None if mask is None else mask[:, : q.shape[2]].to(device)
    if not attention_module._flash()[1](q, k, v, causal=causal, key_padding_mask=mask)[0]:
        return  # e.g. no interpreter here and no GPU: `auto` would not pick it either
    compare_with_reference("triton", q, k, v, causal, mask, atol=2e-3, rtol=2e-3)


def test_fully_masked_rows_are_zero_and_finite_in_every_backend():
    q, k, v = (torch.randn(2, 2, 4, 8, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    for backend in ["reference", "sdpa"]:
        out = attention(q, k, v, key_padding_mask=mask, backend=backend)
        out.sum().backward()
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
        q.grad = k.grad = v.grad = None


def test_causal_is_aligned_to_the_end():
    q = torch.randn(1, 2, 1, 8)  # one new token after four cached ones: it sees all five keys
    k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    for backend in ["reference", "sdpa"]:
        torch.testing.assert_close(attention(q, k, v, causal=True, backend=backend),
                                   attention(q, k, v, causal=False, backend=backend))
    q3 = torch.randn(1, 2, 3, 8)  # the last of three queries sees everything, the first misses 2 keys
    out = attention(q3, k, v, causal=True, backend="sdpa")
    torch.testing.assert_close(out[:, :, 0], attention(q3[:, :, :1], k[:, :, :3], v[:, :, :3], backend="sdpa")[:, :, 0])


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_dropout_is_unbiased_and_differentiable(backend):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 4) for _ in range(3))
    exact = attention(q, k, v, causal=True, backend=backend)
    qs, ks, vs = (t.expand(4000, 1, 3, 4).clone().requires_grad_() for t in (q, k, v))
    dropped = attention(qs, ks, vs, causal=True, backend=backend, dropout_p=0.3)  # (4000, 1, 3, 4)
    assert not torch.allclose(dropped[0], exact[0])  # dropout really happened
    torch.testing.assert_close(dropped.mean(0, keepdim=True), exact, atol=0.05, rtol=0)
    dropped.sum().backward()
    assert torch.isfinite(qs.grad).all() and vs.grad.abs().sum() > 0


def test_bad_arguments_fail_with_the_field():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="backend='flash'"):
        attention(q, q, q, backend="flash")
    with pytest.raises(ValueError, match="key_padding_mask"):
        attention(q, q, q, key_padding_mask=torch.ones(1, 4, dtype=torch.bool))


def test_triton_backend_is_explicit_when_unavailable(monkeypatch):
    monkeypatch.setattr(attention_module, "_flash", lambda: None)
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="unavailable"):
        attention(q, q, q, backend="triton")
    torch.testing.assert_close(attention(q, q, q, backend="auto"), attention(q, q, q, backend="reference"))
