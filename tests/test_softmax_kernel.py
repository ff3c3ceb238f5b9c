"""minilm.kernels.softmax against a float64 reference: forward, backward, every mask kind, both paths.

On the CPU the kernels run through Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), at tiny shapes in float32. With CUDA those are skipped and the `cuda`
tests check fp32, bf16 and fp16 at real sizes, every mask kind, both kernel paths, with one
kernel config (autotuning every case would spend minutes compiling; the benchmark tunes).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course.boundary import student, value_and_grad
from minilm.kernels import softmax
from minilm.kernels.softmax_kernel import softmax_reference
import minilm.kernels.softmax_kernel as sm_module

# Assignment flash's softmax file as the student wrote it (minilm.course.boundary): graded, the kernels run
# in the grader's worker (through Triton's interpreter on a CPU) and the float64 reference here.
theirs = student("minilm.kernels.softmax_kernel")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
interpreter_only = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter test; cuda tests cover CUDA")


@pytest.fixture(params=["one_block", "online"])
def path(request, monkeypatch):
    """Run a test on the one-block kernels and on the online (multi-block) ones."""
    if request.param == "online":
        monkeypatch.setattr(theirs, "MAX_BLOCK", 16)  # rows longer than 16 go online, in chunks of 16
    return request.param


def _check(x, dim=-1, **kw):
    """Forward and backward of the kernel against float64 autograd of the reference."""
    x = x.detach().requires_grad_()
    dy = torch.randn_like(x)
    y, (dx,) = value_and_grad(theirs.softmax, x, dim, grad_output=dy, **kw)
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
def test_a_nan_row_is_all_nan_not_unnormalised(path):
    """torch.softmax gives NaN for a whole row holding a NaN; so must the kernel, forward and backward.

    Before, the normaliser was 1 / where(s > 0, s, 1): a NaN sum fails `s > 0`, so the row came
    out as unnormalised exponentials with one NaN.
    """
    x = _x(3, 37).requires_grad_()
    with torch.no_grad():
        x[1, 5] = float("nan")
        x[2, 30] = float("inf")  # inf - inf is NaN in torch as well
    y = softmax(x)
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert y[1:].isnan().all() and dx[1:].isnan().all()
    assert not y[0].isnan().any() and not dx[0].isnan().any()
    torch.testing.assert_close(y[0], torch.softmax(x[0].detach(), -1), atol=1e-6, rtol=1e-5)


@interpreter_only
@settings(max_examples=12, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 40), mask_kind=st.sampled_from(["none", "bool", "additive"]),
       online=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
def test_nan_propagates_like_torch(rows, cols, mask_kind, online, seed, data):
    """NaN / +inf put anywhere: the NaN rows of y and dx are the reference's, the finite values match."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * 3
    n_bad = data.draw(st.integers(1, rows * cols))
    where = torch.randperm(rows * cols, generator=g)[:n_bad]
    x.view(-1)[where] = torch.tensor([float("nan"), float("inf")])[torch.randint(0, 2, (n_bad,), generator=g)]
    mask = None
    if mask_kind != "none":
        keep = torch.rand(rows, cols, generator=g) > 0.3
        mask = keep if mask_kind == "bool" else torch.zeros(rows, cols).masked_fill(~keep, float("-inf"))
    saved = sm_module.MAX_BLOCK
    sm_module.MAX_BLOCK = 16 if online else saved  # rows longer than 16 go online, in chunks of 16
    try:
        xg = x.to(DEVICE).requires_grad_()
        y = softmax(xg, mask=None if mask is None else mask.to(DEVICE))
        dy = torch.randn(rows, cols, generator=g)
        (dx,) = torch.autograd.grad(y, xg, dy.to(DEVICE))
    finally:
        sm_module.MAX_BLOCK = saved
    x64 = x.double().requires_grad_()
    y64 = softmax_reference(x64, mask=mask if mask is None or mask.dtype == torch.bool else mask.double())
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    assert torch.equal(y.cpu().isnan(), y64.isnan())
    # a NaN row's gradient is NaN everywhere; the reference's masked_fill gives its masked entries 0 instead
    nan_rows = y64.isnan().any(-1)
    assert torch.equal(dx.cpu().isnan().any(-1), nan_rows) and dx[nan_rows.to(DEVICE)].isnan().all()
    # ... and the reference is torch.softmax on every row that is not fully masked
    z = x.double() if mask is None else (x.double().masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool
                                         else x.double() + mask.double())
    full = torch.isneginf(z).all(-1)
    assert torch.equal(y64[~full].isnan(), torch.softmax(z, -1)[~full].isnan())
    torch.testing.assert_close(y.cpu().double().nan_to_num(), y64.nan_to_num(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(dx.cpu().double().nan_to_num(), dx64.nan_to_num(), atol=1e-6, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 3), cols=st.integers(1, 50), chunk=st.integers(1, 17), n_masked=st.integers(0, 50),
       seed=st.integers(0, 2**16))
def test_online_softmax_update_folds_chunks_into_softmax(rows, cols, chunk, n_masked, seed):
    """Folding a row chunk by chunk gives its logsumexp and softmax, and alpha / p rebuild softmax @ v."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g, dtype=torch.float64) * 5
    x.view(-1)[torch.randperm(rows * cols, generator=g)[:n_masked]] = float("-inf")
    v = torch.randn(cols, 3, generator=g, dtype=torch.float64)
    m = torch.full((rows,), float("-inf"), dtype=torch.float64)
    s = torch.zeros(rows, dtype=torch.float64)
    acc = torch.zeros(rows, 3, dtype=torch.float64)  # flash attention's accumulator: sum of p @ v
    for start in range(0, cols, chunk):
        m, s, alpha, p = theirs.online_softmax_update(m, s, x[:, start:start + chunk])
        acc = acc * alpha[:, None] + p @ v[start:start + chunk]
    assert not m.isnan().any() and not s.isnan().any()
    some = ~torch.isneginf(x).all(-1)  # rows with at least one logit; the others keep m = -inf, s = 0
    assert torch.isneginf(m[~some]).all() and (s[~some] == 0).all()
    torch.testing.assert_close(m[some] + s[some].log(), torch.logsumexp(x[some], -1))
    torch.testing.assert_close(torch.exp(x[some] - m[some, None]) / s[some, None], torch.softmax(x[some], -1))
    torch.testing.assert_close(acc[some] / s[some, None], torch.softmax(x[some], -1) @ v)


def test_online_softmax_update_propagates_nan():
    m, s, _, _ = theirs.online_softmax_update(torch.tensor([float("-inf")]), torch.tensor([0.0]),
                                       torch.tensor([[1.0, float("nan")]]))
    m, s, _, _ = theirs.online_softmax_update(m, s, torch.tensor([[50.0, 2.0]]))  # a larger max later keeps s NaN
    assert s.isnan().all()


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


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(64, 1000), (8, 70000)])  # one block per row; the online kernels
def test_cuda_nan_rows_are_nan(one_config, shape):
    x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16).requires_grad_()
    with torch.no_grad():
        x[1, 7] = float("nan")
        x[2, -1] = float("inf")
    y = softmax(x)
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert y[1:3].isnan().all() and dx[1:3].isnan().all()
    assert not y[3:].isnan().any() and not dx[3:].isnan().any()
    torch.testing.assert_close(y[3:].float().sum(-1), torch.ones(shape[0] - 3, device="cuda"), atol=2e-2, rtol=0)
