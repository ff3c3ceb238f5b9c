"""attention(): every backend equals the reference, forward and backward; masks mean what they say.

Masks have one meaning in every backend: bool keeps a key where True, float is added to
the scores (0 keeps, -inf drops). The hypothesis cases draw no mask, bool masks and
additive masks (with -inf, 0 and finite biases), fully masked rows included.
"""
import math
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minilm.course.boundary import student, value_and_grad
from minilm.nn import attention as attention_module
from minilm.nn.attention import attention

# Assignment attention's functions as the student wrote them (minilm.course.boundary): the graded tests
# compare them with the definition and with torch's attention, computed here.
their_reference = student("minilm.kernels.reference")
their_attention = student("minilm.nn.attention")


def loop_attention(q, k, v, causal, key_padding_mask):
    """Attention one query at a time, straight from the definition (independent of the reference)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    additive = key_padding_mask is not None and key_padding_mask.dtype != torch.bool
    out = torch.zeros_like(q)
    for b in range(B):
        for i in range(Tq):
            seen = [j for j in range(Tk) if (not causal or j <= i + Tk - Tq)
                    and (key_padding_mask is None or (key_padding_mask[b, j] != float("-inf") if additive
                                                      else key_padding_mask[b, j]))]
            if not seen:
                continue  # a query that sees nothing outputs zeros
            scores = torch.einsum("hd,hsd->hs", q[b, :, i], k[b, :, seen]) / math.sqrt(D)  # (H, S)
            if additive:
                scores = scores + key_padding_mask[b, seen].to(scores.dtype)  # a bias per key
            out[b, :, i] = torch.einsum("hs,hsd->hd", torch.softmax(scores, dim=-1), v[b, :, seen])
    return out


def draw_mask(draw, g, B, Tk):
    """None, a bool mask (True = keep) or an additive float mask (0 / bias / -inf), maybe fully masked rows."""
    kind = draw(st.sampled_from(["none", "bool", "additive"]))
    if kind == "none":
        return None
    lengths = torch.randint(0, Tk + 1, (B,), generator=g)  # length 0: a fully padded row
    keep = torch.arange(Tk)[None, :] < lengths[:, None]  # (B, Tk)
    if draw(st.booleans()):
        keep = keep & (torch.rand(B, Tk, generator=g) > 0.3)  # scattered holes too
    if kind == "bool":
        return keep
    bias = torch.randn(B, Tk, generator=g) * 2 if draw(st.booleans()) else torch.zeros(B, Tk)
    return bias.masked_fill(~keep, float("-inf"))  # float32, whatever q's dtype


@st.composite
def cases(draw):
    B, H = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    Tq = draw(st.integers(1, 9))
    Tk = draw(st.sampled_from([Tq, Tq + draw(st.integers(1, 5))]))  # Tk > Tq: a cache or a prefix
    D = draw(st.sampled_from([4, 8, 16]))
    causal = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for T in (Tq, Tk, Tk))
    return q, k, v, causal, draw_mask(draw, g, B, Tk)


@settings(max_examples=40, deadline=None)
@given(cases())
def test_reference_matches_the_definition(case):
    q, k, v, causal, mask = case
    torch.testing.assert_close(their_reference.attention_reference(q, k, v, causal=causal, key_padding_mask=mask),
                               loop_attention(q, k, v, causal, mask))


def compare_with_reference(backend, q, k, v, causal, mask, **tol):
    """`backend` here against the (student's) reference, values and gradients."""
    grad = torch.randn_like(q)
    results = []
    for fn, name in ((their_attention.attention, "reference"), (attention, backend)):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out, grads = value_and_grad(fn, *leaves, grad_output=grad, causal=causal, key_padding_mask=mask, backend=name)
        results.append((out, *grads))
    for expected, got in zip(*results):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, **tol)


@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_sdpa_matches_reference_forward_and_backward(case):
    compare_with_reference("sdpa", *case, atol=1e-6, rtol=1e-6)  # float64


# What the Triton kernel runs on, with the tolerance against the float64 reference: float32 on the CPU
# through TRITON_INTERPRET=1; on CUDA the half-precision types the kernel supports (bf16 from sm_80 on).
if torch.cuda.is_available():
    TRITON_DTYPES = {torch.float16: 1e-2} | (
        {torch.bfloat16: 4e-2} if torch.cuda.get_device_capability() >= (8, 0) else {})
else:
    TRITON_DTYPES = {torch.float32: 2e-3}


@pytest.mark.skipif(attention_module._flash() is None, reason="minilm.kernels.flash_attention is not importable")
@settings(max_examples=8 if not torch.cuda.is_available() else 40, deadline=None)  # the interpreter is slow
@given(case=cases(), head_dim=st.sampled_from([16, 32]), dtype=st.sampled_from(sorted(TRITON_DTYPES, key=str)))
def test_triton_matches_reference_forward_and_backward(case, head_dim, dtype):
    q, k, v, causal, mask = case
    g = torch.Generator().manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # on the CPU through TRITON_INTERPRET=1
    q, k, v = (torch.randn(*t.shape[:2], q.shape[2], head_dim, generator=g, dtype=torch.float64)
               for t in (q, k, v))  # the kernel needs Tq == Tk
    mask = None if mask is None else mask[:, : q.shape[2]].to(device)
    low = [t.to(device, dtype) for t in (q, k, v)]
    ok, reason = attention_module._flash()[1](*low, causal=causal, key_padding_mask=mask)
    assume(ok)  # every case drawn here is one the kernel takes; an all-rejected run fails, never passes
    grad = torch.randn_like(q)
    results = []
    for inputs, backend in (([t.to(device) for t in (q, k, v)], "reference"), (low, "triton")):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        out = attention(*leaves, causal=causal, key_padding_mask=mask, backend=backend)
        (out * grad.to(device, out.dtype)).sum().backward()
        results.append([out, *(t.grad for t in leaves)])
    tol = TRITON_DTYPES[dtype]
    for name, expected, got in zip(("out", "dq", "dk", "dv"), *results):
        assert got.dtype == dtype and torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), expected, atol=tol, rtol=tol, msg=name)


def test_fully_masked_rows_are_zero_and_finite_in_every_backend():
    q, k, v = (torch.randn(2, 2, 4, 8, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    additive = torch.zeros(2, 4).masked_fill(~mask, float("-inf"))
    for backend in ["reference", "sdpa"]:
        for m in (mask, additive):
            out, grads = value_and_grad(their_attention.attention, q, k, v, key_padding_mask=m, backend=backend,
                                        grad_output=torch.ones(2, 2, 4, 8))
            assert torch.equal(out[1], torch.zeros_like(out[1])), f"{backend}: a query that sees no key must give 0"
            assert all(torch.isfinite(g).all() for g in grads), f"{backend}: gradients must stay finite"


BACKENDS_HERE = ["reference", "sdpa"] + (["triton"] if attention_module._flash() is not None else [])


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_additive_mask_is_added_not_inverted(backend):
    """A PyTorch-style additive mask (0 keep, -inf drop) means what the bool mask it encodes means.

    Before masks had one meaning, minilm turned a float mask into bool (nonzero = keep), so
    0 / -inf hid exactly the keys the user meant to keep.
    """
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32  # the kernel runs fp32 only in the interpreter
    tol = dict(atol=2e-3, rtol=2e-3) if device == "cuda" else dict(atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 6, 16, generator=g).to(device, dtype) for _ in range(3))
    keep = torch.tensor([[True] * 4 + [False] * 2, [True, False] * 3], device=device)
    additive = torch.zeros(2, 6, device=device).masked_fill(~keep, float("-inf"))
    by_bool = attention(q, k, v, key_padding_mask=keep, backend=backend)
    torch.testing.assert_close(attention(q, k, v, key_padding_mask=additive, backend=backend), by_bool, **tol)
    # a finite bias shifts the weights exactly as adding it to the scores does
    bias = torch.randn(2, 6, generator=g).to(device)
    scores = (q.float() @ k.float().transpose(-2, -1)) / 4 + bias[:, None, None, :]  # (B, H, T, T), sqrt(16) = 4
    torch.testing.assert_close(attention(q, k, v, key_padding_mask=bias, backend=backend).float(),
                               torch.softmax(scores, -1) @ v.float(), **tol)


def test_additive_mask_gradient_agrees_and_triton_refuses_to_drop_it():
    q, k, v = (torch.randn(1, 2, 5, 16, dtype=torch.float64) for _ in range(3))
    grads = []
    for backend in ("reference", "sdpa"):
        bias = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
        attention(q, k, v, key_padding_mask=bias, backend=backend).square().sum().backward()
        grads.append(bias.grad)
    torch.testing.assert_close(grads[0], grads[1])
    if attention_module._flash() is not None:  # the kernel treats a mask as a constant: it says so
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        with pytest.raises(ValueError, match="requires grad"):
            attention(*(t.to(device, dtype) for t in (q, k, v)), key_padding_mask=bias.float().to(device),
                      backend="triton")


def test_integer_masks_are_refused_not_guessed():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="key_padding_mask dtype torch.int64 is not accepted.*mask.bool()"):
        attention(q, q, q, key_padding_mask=torch.ones(1, 3, dtype=torch.int64))


def test_works_without_triton():
    """minilm (and minilm.kernels.reference) import and run where Triton cannot be imported; a kernel says why not."""
    script = textwrap.dedent("""
        import sys
        class NoTriton:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError("No module named 'triton' (blocked by the test)")
        sys.meta_path.insert(0, NoTriton())
        import torch
        from minilm.nn.attention import attention
        q = torch.randn(1, 2, 3, 8)
        for backend in ("auto", "reference", "sdpa"):
            attention(q, q, q, causal=True, key_padding_mask=torch.tensor([[0.0, 0.0, float("-inf")]]), backend=backend)
        try:
            attention(q, q, q, backend="triton")
        except RuntimeError as e:
            assert "unavailable" in str(e), e
        try:
            from minilm.kernels import softmax
        except ImportError as e:
            assert "needs Triton" in str(e) and "backend='sdpa'" in str(e), e
        else:
            raise AssertionError("minilm.kernels.softmax imported without Triton")
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


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
    with pytest.raises(ValueError, match="key_padding_mask must be"):
        attention(q, q, q, key_padding_mask=torch.ones(1, 4, dtype=torch.bool))


def test_triton_backend_is_explicit_when_unavailable(monkeypatch):
    monkeypatch.setattr(attention_module, "_flash", lambda: None)
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="unavailable"):
        attention(q, q, q, backend="triton")
    torch.testing.assert_close(attention(q, q, q, backend="auto"), attention(q, q, q, backend="reference"))


# ---------------------------------------------------------------------------------------------- grouped-query


@st.composite
def grouped_cases(draw, equal_lengths=False, head_dims=(4, 8, 16)):
    """q with H heads, k and v with Hkv < H heads (Hkv dividing H; 1 is multi-query), any mask, any causality."""
    B, h_kv, group = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(2, 4))
    Tq = draw(st.integers(1, 9))
    Tk = Tq if equal_lengths else draw(st.sampled_from([Tq, Tq + draw(st.integers(1, 5))]))
    D = draw(st.sampled_from(head_dims))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = torch.randn(B, h_kv * group, Tq, D, generator=g, dtype=torch.float64)
    k, v = (torch.randn(B, h_kv, Tk, D, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v, draw(st.booleans()), draw_mask(draw, g, B, Tk)


def compare_with_repeated_heads(backend, q, k, v, causal, mask, **tol):
    """`backend` on shared key/value heads against the reference on each shared head repeated for its
    group of query heads (in float64): outputs, and gradients (a shared head's is its group's sum)."""
    group = q.shape[1] // k.shape[1]
    grad = torch.randn_like(q, dtype=torch.float64)
    results = []
    # The shared heads go to `backend` (the student's reference, for assignment modern); the repeated ones to
    # the grader's own reference.
    for fn, name, repeat in ((their_attention.attention if backend == "reference" else attention, backend, False),
                             (attention, "reference", True)):
        dtype = q.dtype if not repeat else torch.float64
        leaves = [t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v)]
        if repeat:  # head h of q reads key/value head h // group
            def fn(qq, kk, vv, **kw):
                return attention(qq, kk.repeat_interleave(group, dim=1), vv.repeat_interleave(group, dim=1), **kw)
        out, grads = value_and_grad(fn, *leaves, grad_output=grad.to(dtype), causal=causal, key_padding_mask=mask,
                                    backend=name)
        results.append((out, *grads))
    for got, expected in zip(*results):
        assert got.shape == expected.shape and torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), expected, **tol)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@settings(max_examples=30, deadline=None)
@given(case=grouped_cases())
def test_grouped_query_attention_equals_repeated_kv_heads(backend, case):
    compare_with_repeated_heads(backend, *case, atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(attention_module._flash() is None, reason="minilm.kernels.flash_attention is not importable")
@settings(max_examples=8, deadline=None)  # the Triton interpreter is slow on the CPU
@given(case=grouped_cases(equal_lengths=True, head_dims=(16, 32)))
def test_triton_grouped_query_attention_equals_repeated_kv_heads(case):
    q, k, v, causal, mask = case
    device = "cuda" if torch.cuda.is_available() else "cpu"  # on the CPU through TRITON_INTERPRET=1
    dtype = torch.float16 if device == "cuda" else torch.float32
    q, k, v = (t.to(device, dtype) for t in (q, k, v))
    mask = None if mask is None else mask.to(device)
    ok, reason = attention_module._flash()[1](q, k, v, causal=causal, key_padding_mask=mask)
    assert ok, reason
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.float16 else dict(atol=2e-3, rtol=2e-3)
    compare_with_repeated_heads("triton", q, k, v, causal, mask, **tol)


def test_grouped_query_shapes_are_checked():
    q, kv = torch.randn(1, 4, 3, 8), torch.randn(1, 3, 3, 8)  # 3 key/value heads cannot serve 4 query heads
    with pytest.raises(ValueError, match=r"Hkv dividing H; got q \(1, 4, 3, 8\), k \(1, 3, 3, 8\)"):
        attention(q, kv, kv)


# ---------------------------------------------------------------------------------------------- attn_mask


def loop_with_pattern(q, k, v, causal, key_padding_mask, pattern):
    """The definition again, one query at a time, with an arbitrary (B, H, Tq, Tk) bool pattern on top."""
    B, H, Tq, D = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                seen = [j for j in range(k.shape[2]) if bool(pattern[b, h, i, j])
                        and (not causal or j <= i + k.shape[2] - Tq)
                        and (key_padding_mask is None or bool(key_padding_mask[b, j]))]
                if seen:
                    scores = k[b, h, seen] @ q[b, h, i] / math.sqrt(D)  # (S,)
                    out[b, h, i] = torch.softmax(scores, 0) @ v[b, h, seen]
    return out


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@settings(max_examples=30, deadline=None)
@given(case=cases(), shape=st.sampled_from(["tq tk", "b 1 tq tk", "1 h tq tk", "b h tq tk", "h tq tk"]),
       padding=st.booleans())
def test_attn_mask_sees_only_what_it_allows(backend, case, shape, padding):
    q, k, v, causal, _ = case
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    g = torch.Generator().manual_seed(Tq * 31 + Tk)
    sizes = {"b": B, "h": H, "tq": Tq, "tk": Tk, "1": 1}
    pattern = torch.rand(*(sizes[s] for s in shape.split()), generator=g) > 0.4  # some rows see nothing
    keep = torch.rand(B, Tk, generator=g) > 0.2 if padding else None
    full = pattern.expand(B, H, Tq, Tk) if pattern.dim() == 4 else pattern.reshape(
        (1,) * (4 - pattern.dim()) + tuple(pattern.shape)).expand(B, H, Tq, Tk)
    expected = loop_with_pattern(q, k, v, causal, keep, full)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    got = attention(*leaves, causal=causal, key_padding_mask=keep, attn_mask=pattern, backend=backend)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in leaves)


def test_attn_mask_is_checked_and_triton_says_why_not():
    q = torch.randn(2, 3, 4, 16)
    ok = torch.ones(4, 4, dtype=torch.bool)
    for bad, words in [(ok.float(), "attn_mask dtype torch.float32 is not accepted"),
                       (torch.ones(4, 5, dtype=torch.bool), "does not broadcast to (B, H, Tq, Tk) = (2, 3, 4, 4)"),
                       (torch.ones(2, 4, 4, dtype=torch.bool), "(2, 4, 4) does not broadcast"),  # (B, Tq, Tk): a 3rd
                       # dim from the right is the heads, as in torch; a mask per row is mask[:, None]
                       (torch.ones(5, 3, 4, 4, dtype=torch.bool), "(5, 3, 4, 4) does not broadcast")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            attention(q, q, q, attn_mask=bad, backend="reference")
    assert torch.equal(attention(q, q, q, attn_mask=torch.ones(2, 1, 1, 4, 4, dtype=torch.bool)[0], backend="sdpa"),
                       attention(q, q, q, backend="sdpa"))
    if attention_module._flash() is not None:
        with pytest.raises(ValueError, match="arbitrary attn_mask .* is not supported.*backend='sdpa'"):
            attention(q, q, q, attn_mask=ok, backend="triton")
