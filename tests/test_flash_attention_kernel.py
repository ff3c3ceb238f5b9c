"""minilm.kernels.flash_attention against float64 matmul-softmax-matmul (minilm.kernels.reference): output and dQ, dK, dV.

On the CPU through Triton's interpreter at tiny shapes in float32 (sequence lengths that are
not block multiples; the interpreter's blocks are 16/32 so main, diagonal and tail loops all
run). With CUDA the interpreter tests are skipped and the `cuda` tests check bf16/fp16 at
real sizes against an fp32 reference, with one kernel config each (compiling every
autotuning candidate for every case would take minutes; `python -m minilm.kernels.bench` tunes).
"""
import re

import pytest
import torch

from minilm.kernels import flash_attention, supports
from minilm.kernels.flash_kernel import attention_flops
import minilm.kernels.flash_kernel as fa_module
from minilm.kernels.reference import attention_reference
from minilm.course.boundary import student, value_and_grad

# Assignment flash's kernels as the student wrote them (minilm.course.boundary): graded, they run in the
# grader's worker (through Triton's interpreter on a CPU); the float64 reference runs here.
theirs = student("minilm.kernels.flash_kernel")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
interpreter_only = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter test; the cuda tests cover CUDA")


@pytest.fixture
def one_config(monkeypatch):
    """Pin each autotuned kernel to its first config (valid for every head dim)."""
    for kernel in (fa_module._fwd_kernel, fa_module._dkdv_kernel, fa_module._dq_kernel):
        monkeypatch.setattr(kernel, "configs", kernel.configs[:1])


def _qkv(B, H, T, D, dtype=torch.float32, device=DEVICE):
    return [torch.randn(B, H, T, D, device=device).to(dtype) for _ in range(3)]


def _grads(fn, q, k, v, do, **kw):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    o, grads = value_and_grad(fn, q, k, v, grad_output=do, **kw)
    return (o, *grads)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1.0)).item()  # dq is exactly 0 at T = 1


def _check(q, k, v, tol, **kw):
    do = torch.randn_like(q)
    ours = _grads(theirs.flash_attention, q, k, v, do, **kw)
    ref = _grads(attention_reference, *(t.double() for t in (q, k, v, do)), **kw)
    for name, a, b in zip(("o", "dq", "dk", "dv"), ours, ref):
        assert a.dtype == q.dtype and a.shape == q.shape
        assert not torch.isnan(a).any(), name
        assert _rel(a, b) < tol, f"{name}: relative error {_rel(a, b):.2e} >= {tol}"
    return ours


@interpreter_only
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference(head_dim, causal):
    q, k, v = _qkv(2, 2, 37, head_dim)  # 37: not a multiple of any block size
    _check(q, k, v, 1e-5, causal=causal)


@interpreter_only
@pytest.mark.parametrize("causal", [False, True])
def test_key_padding_mask(causal):
    q, k, v = _qkv(3, 2, 45, 64)
    kpm = torch.ones(3, 45, dtype=torch.bool, device=DEVICE)
    kpm[0, 30:] = False  # BERT-style right padding
    kpm[1] = torch.rand(45, device=DEVICE) > 0.5  # scattered
    kpm[1, 0] = True
    _check(q, k, v, 1e-5, causal=causal, key_padding_mask=kpm)


@interpreter_only
@pytest.mark.parametrize("causal", [False, True])
def test_additive_key_padding_mask(causal):
    """A float mask is added to the scores: -inf drops a key, 0 keeps it, anything else is a bias."""
    q, k, v = _qkv(3, 2, 37, 32)
    bias = torch.randn(3, 37, device=DEVICE) * 2
    bias[0, 25:] = float("-inf")  # right padding, PyTorch style
    bias[1, torch.rand(37, device=DEVICE) > 0.5] = float("-inf")
    bias[1, 0] = 0.0
    bias[2, 3:9] = torch.finfo(torch.float32).min  # a huge finite bias, as Hugging Face writes padding
    _check(q, k, v, 1e-5, causal=causal, key_padding_mask=bias)


@interpreter_only
def test_additive_mask_matches_the_bool_mask_it_encodes():
    q, k, v = _qkv(2, 2, 21, 16)
    keep = torch.rand(2, 21, device=DEVICE) > 0.4
    keep[:, 0] = True
    additive = torch.zeros(2, 21, device=DEVICE).masked_fill(~keep, float("-inf"))
    do = torch.randn_like(q)
    for a, b in zip(_grads(flash_attention, q, k, v, do, key_padding_mask=keep),
                    _grads(flash_attention, q, k, v, do, key_padding_mask=additive)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@interpreter_only
def test_nan_stays_nan():
    """A NaN in a query row gives NaN in that row and its gradients (as in torch), not zeros as if it saw no key."""
    q, k, v = _qkv(1, 1, 20, 16)
    q[0, 0, 3, 5] = float("nan")
    o, dq, dk, dv = _grads(flash_attention, q, k, v, torch.randn_like(q))
    assert o[0, 0, 3].isnan().all() and dq[0, 0, 3].isnan().all() and dk.isnan().all() and dv.isnan().all()
    assert not o[0, 0, [0, 1, 2, 4]].isnan().any() and not dq[0, 0, [0, 1, 2, 4]].isnan().any()


@interpreter_only
def test_fully_padded_rows_give_zeros():
    q, k, v = _qkv(2, 2, 20, 32)
    kpm = torch.ones(2, 20, dtype=torch.bool, device=DEVICE)
    kpm[1] = False  # batch entry 1 has no real key at all
    o, dq, dk, dv = _check(q, k, v, 1e-5, key_padding_mask=kpm)
    assert (o[1] == 0).all() and (dq[1] == 0).all() and (dk[1] == 0).all() and (dv[1] == 0).all()


@interpreter_only
def test_noncontiguous_inputs_and_scale():
    # the model's layout: (B, T, H, D) transposed to (B, H, T, D), a strided view
    q, k, v = (t.transpose(1, 2) for t in _qkv(2, 33, 3, 16))
    assert not q.is_contiguous()
    _check(q, k, v, 1e-5, causal=True, sm_scale=0.3)


@interpreter_only
def test_tiny_sequences():
    for T in (1, 2, 17):
        _check(*_qkv(1, 1, T, 32), 1e-5, causal=True)


def test_supports_and_errors():
    q, k, v = _qkv(1, 2, 8, 64, dtype=torch.float16 if DEVICE == "cuda" else torch.float32)
    assert supports(q, k, v) == (True, "")
    cases = [
        ((q[..., :48], k[..., :48], v[..., :48]), {}, "head_dim 48"),
        ((q, k[:, :, :4], v[:, :, :4]), {}, "Tq == Tk"),
        ((q.double(), k.double(), v.double()), {}, "dtypes"),
        ((q[0], k[0], v[0]), {}, "4-D"),
        ((q, k, v), {"key_padding_mask": torch.ones(1, 8, dtype=torch.int64)}, "dtype torch.int64 is not accepted"),
        ((q, k, v), {"key_padding_mask": torch.ones(2, 8, dtype=torch.bool)}, "(batch, Tk)"),
        ((q, k, v), {"key_padding_mask": torch.zeros(1, 8, requires_grad=True)}, "requires grad"),
    ]
    for args, kw, message in cases:
        ok, reason = supports(*args, **kw)
        assert not ok and message in reason
        with pytest.raises(ValueError, match="flash_attention: .*" + re.escape(message)):
            flash_attention(*args, **kw)
    with pytest.raises(ValueError, match="sm_scale=-0.5"):
        flash_attention(q, k, v, sm_scale=-0.5)


@requires_cuda
@pytest.mark.cuda
def test_cuda_rejects_float32_with_a_reason():
    q = torch.randn(1, 2, 64, 64, device="cuda")
    ok, reason = supports(q, q, q)
    assert not ok and "float16 or bfloat16" in reason


def test_flops_counted():
    assert attention_flops(2, 3, 10, 8) == 4 * 2 * 3 * 100 * 8
    assert attention_flops(2, 3, 10, 8, causal=True, backward=True) == 4 * 2 * 3 * 100 * 8 * 0.5 * 2.5


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype,shape,causal,padded", [
    (torch.bfloat16, (2, 4, 1000, 64), False, True),
    (torch.bfloat16, (2, 4, 1000, 64), True, False),
    (torch.bfloat16, (1, 4, 2000, 128), True, True),
    (torch.bfloat16, (1, 4, 2000, 128), False, False),
    (torch.bfloat16, (4, 2, 300, 32), True, True),
    (torch.float16, (3, 2, 777, 64), True, True),
    (torch.bfloat16, (2, 4, 1000, 64), False, "additive"),
    (torch.float16, (3, 2, 777, 128), True, "additive"),
])
def test_cuda_real_sizes(one_config, dtype, shape, causal, padded):
    B, H, T, D = shape
    q, k, v = (t.transpose(1, 2) for t in _qkv(B, T, H, D, dtype=dtype))  # the model's strided layout
    mask = None
    if padded:
        mask = torch.arange(T, device="cuda")[None, :] < torch.randint(T // 2, T + 1, (B, 1), device="cuda")
        mask[-1] = B == 1  # with B > 1, one batch entry with no real token: zeros, not NaN
    if padded == "additive":  # the same padding as 0 / -inf, plus a finite bias on the real keys
        mask = torch.randn(B, T, device="cuda").masked_fill(~mask, float("-inf"))
    do = torch.randn_like(q)
    ours = _grads(flash_attention, q, k, v, do, causal=causal, key_padding_mask=mask)
    ref = _grads(attention_reference, *(t.float() for t in (q, k, v, do)), causal=causal, key_padding_mask=mask)
    for name, a, b in zip(("o", "dq", "dk", "dv"), ours, ref):
        assert a.dtype == dtype and not torch.isnan(a).any(), name
        assert _rel(a, b) < 2e-2, f"{name}: relative error {_rel(a, b):.2e}"
    if padded and B > 1:
        assert (ours[0][-1] == 0).all()


@requires_cuda
@pytest.mark.cuda
def test_cuda_autotuned_matches(dtype=torch.bfloat16):
    """The autotuned path (every listed config is timed, the fastest kept) on one case per head dim.

    H = 16 and T % 16 == 0, as in the benchmark's headline shapes, so after
    `python -m minilm.kernels.bench` these reuse its compiled kernels from Triton's cache.
    """
    for shape in ((1, 16, 512, 64), (1, 16, 512, 128)):
        q, k, v = _qkv(*shape, dtype=dtype)
        do = torch.randn_like(q)
        ours = _grads(flash_attention, q, k, v, do, causal=True)
        ref = _grads(attention_reference, *(t.float() for t in (q, k, v, do)), causal=True)
        for name, a, b in zip(("o", "dq", "dk", "dv"), ours, ref):
            assert _rel(a, b) < 2e-2, f"{shape} {name}: relative error {_rel(a, b):.2e}"
