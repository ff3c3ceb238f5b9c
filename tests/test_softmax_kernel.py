"""kernels.softmax against a float64 reference: forward, backward, every mask kind, both paths.

On the CPU the kernels run through Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), at tiny shapes in float32. With CUDA those are skipped and the `cuda`
tests check fp32, bf16 and fp16 at real sizes, every mask kind, both kernel paths, with one
kernel config (autotuning every case would spend minutes compiling; the benchmark tunes).
"""
import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import softmax
from kernels.softmax import softmax_reference

sm_module = importlib.import_module("kernels.softmax")  # `kernels.softmax` itself is the function
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
interpreter_only = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter test; cuda tests cover CUDA")


@pytest.fixture(params=["one_block", "online"])
def path(request, monkeypatch):
    """Run a test on the one-block kernels and on the online (multi-block) ones."""
    if request.param == "online":
        monkeypatch.setattr(sm_module, "MAX_BLOCK", 16)  # rows longer than 16 go online, in chunks of 16
    return request.param


def _check(x, dim=-1, **kw):
    """Forward and backward of the kernel against float64 autograd of the reference."""
    x = x.detach().requires_grad_()
    y = softmax(x, dim, **kw)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    x64 = x.detach().double().requires_grad_()
    kw64 = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in kw.items()}
    y64 = softmax_reference(x64, dim, **kw64)
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    assert y.dtype == x.dtype and y.shape == x.shape
    assert not torch.isnan(y).any() and not torch.isnan(dx).any()
    torch.testing.assert_close(y.double(), y64, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(dx.double(), dx64, atol=1e-6, rtol=1e-5)
    return y, dx


def _x(*shape):
    return torch.randn(*shape, device=DEVICE) * 3


@interpreter_only
def test_plain_and_scaled(path):
    _check(_x(6, 37))
    _check(_x(2, 3, 20), scale=0.125)


@interpreter_only
def test_bool_mask_broadcast(path):
    x = _x(2, 3, 5, 37)  # (B, H, Tq, Tk)
    mask = torch.rand(2, 1, 1, 37, device=DEVICE) > 0.3  # key padding, broadcast over heads and queries
    _check(x, mask=mask, scale=0.5)


@interpreter_only
def test_additive_mask(path):
    x = _x(2, 5, 21)
    bias = torch.randn(5, 21, device=DEVICE)
    bias[1, :4] = float("-inf")
    _check(x, mask=bias)


@interpreter_only
@pytest.mark.parametrize("shape", [(2, 7, 7), (3, 5, 19)])  # square, and more keys than queries (end-aligned)
def test_causal(path, shape):
    y, _ = _check(_x(*shape), causal=True)
    n_q, n_k = shape[-2:]
    future = torch.triu(torch.ones(n_q, n_k, dtype=torch.bool, device=DEVICE), diagonal=n_k - n_q + 1)
    assert (y[..., future] == 0).all()


@interpreter_only
def test_causal_with_mask_and_scale(path):
    mask = torch.rand(2, 1, 1, 19, device=DEVICE) > 0.2
    _check(_x(2, 3, 6, 19), causal=True, mask=mask, scale=0.3)


@interpreter_only
def test_fully_masked_rows_are_zero(path):
    x = _x(2, 4, 23)
    mask = torch.ones(2, 4, 23, dtype=torch.bool, device=DEVICE)
    mask[0, 1] = False  # one whole row masked
    mask[1] = False  # a whole batch entry masked
    y, dx = _check(x, mask=mask)
    assert (y[0, 1] == 0).all() and (y[1] == 0).all()
    assert (dx[0, 1] == 0).all() and (dx[1] == 0).all()
    bias = torch.zeros(23, device=DEVICE).fill_(float("-inf"))
    y, dx = _check(x, mask=bias)
    assert (y == 0).all() and (dx == 0).all()


@interpreter_only
def test_other_dim_and_noncontiguous(path):
    x = _x(17, 6)
    _check(x, dim=0)
    base = _x(5, 40)
    _check(base[:, ::2])  # strided columns: copied to unit stride
    _check(base.t(), dim=0)  # transposed view, softmax over the storage's inner dim
    _check(_x(3, 9, 4).transpose(1, 2), dim=-1, mask=torch.rand(9, device=DEVICE) > 0.5)


@interpreter_only
def test_many_leading_dims_mask(path):
    x = _x(2, 2, 2, 3, 18)
    mask = torch.rand(2, 1, 2, 1, 18, device=DEVICE) > 0.3
    _check(x, mask=mask)


@interpreter_only
def test_half_precision_io():
    x = _x(5, 33).half()
    y = softmax(x, scale=0.7)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), softmax_reference(x.double(), scale=0.7).float(), atol=2e-3, rtol=1e-2)


@interpreter_only
@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 40), shift=st.floats(-50, 50), seed=st.integers(0, 2**16))
def test_rows_sum_to_one_and_ignore_shift(rows, cols, shift, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, cols, generator=g) * 4).to(DEVICE)
    y = softmax(x)
    torch.testing.assert_close(y.sum(-1), torch.ones(rows, device=DEVICE), atol=1e-5, rtol=0)
    torch.testing.assert_close(softmax(x + shift), y, atol=2e-5, rtol=1e-4)


@interpreter_only
def test_errors_name_the_problem():
    x = _x(3, 8)
    with pytest.raises(TypeError, match="int64"):
        softmax(torch.ones(3, 8, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="does not broadcast"):
        softmax(x, mask=torch.ones(5, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match="causal"):
        softmax(x, dim=0, causal=True)
    with pytest.raises(ValueError, match="requires grad"):
        softmax(x, mask=torch.zeros(8, device=DEVICE, requires_grad=True))
    with pytest.raises(TypeError, match="mask dtype"):
        softmax(x, mask=torch.ones(8, dtype=torch.int32, device=DEVICE))


def test_bytes_counted():
    x = torch.empty(4, 10, dtype=torch.bfloat16)
    assert sm_module.softmax_bytes(x) == 2 * 40 * 2
    assert sm_module.softmax_bytes(x, backward=True) == 3 * 40 * 2


@pytest.fixture
def one_config(monkeypatch):
    """Pin the autotuned kernels to one config (4096 elements per program, 8 warps)."""
    for kernel in (sm_module._fwd_kernel, sm_module._bwd_kernel):
        monkeypatch.setattr(kernel, "configs", [c for c in kernel.configs if c.kwargs["ELEMS"] == 4096
                                                and c.num_warps == 8])


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(4096, 1000), (64, 70000)])  # the second runs the online kernels
def test_cuda_real_sizes(one_config, dtype, shape):
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-3, rtol=2e-2)
    x = (torch.randn(*shape, device="cuda") * 3).to(dtype)
    rows, cols = shape
    cases = [dict(scale=0.5, mask=torch.rand(cols, device="cuda") > 0.1),  # bool, broadcast
             dict(mask=torch.randn(8, 1, cols, device="cuda")),  # additive, broadcast over queries
             dict(causal=True)]
    for kw in cases:
        xg = x.view(8, rows // 8, cols).detach().requires_grad_()
        y = softmax(xg, **kw)
        dy = torch.randn_like(y)
        (dx,) = torch.autograd.grad(y, xg, dy)
        x32 = xg.detach().float().requires_grad_()
        y32 = softmax_reference(x32, **kw)
        (dx32,) = torch.autograd.grad(y32, x32, dy.float())
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), y32, **tol)
        torch.testing.assert_close(dx.float(), dx32, **tol)
    y = softmax(x[:, : cols // 2].t(), dim=0)  # strided input, softmax over a non-last dim
    torch.testing.assert_close(y.float(), torch.softmax(x[:, : cols // 2].t().float(), 0), **tol)
