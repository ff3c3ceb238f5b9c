"""Fused softmax in Triton: scale, mask and normalise a row in one trip through memory.

What this file teaches
- Kernel fusion. Eager PyTorch computes `softmax(scale * x + mask)` as several kernels
  (multiply, add, max, subtract, exp, sum, divide), each reading and writing the whole
  tensor. Softmax is memory-bound: a fused kernel reads x once and writes y once, so its
  floor is `2 * numel * bytes_per_element / bandwidth` (forward) and
  `3 * numel * bytes_per_element / bandwidth` (backward reads y and dy, writes dx).
  `softmax_bytes` counts exactly that; the benchmark divides it by the measured time.
- Numerically safe softmax: subtract the row maximum before exponentiating. We work in
  base 2 (`exp2`, the instruction the GPU has) with log2(e) folded into the scale.
- The online softmax (Milakov & Gimelshein, 2018): when a row is too long for one block,
  keep a running maximum and a running sum, rescaling the sum whenever the maximum grows.
  `online_softmax_update` is that one step in PyTorch (the version to read, and the one
  lessons 10 and 11 use); `_online_update` is the same step in Triton, which the long-row
  kernels here and the flash attention kernel call.
- The backward of softmax needs only the output: dz = y * (dy - sum(y * dy)).

Design choices
- One block holds whole rows while the next power of two of the row length is at most
  `MAX_BLOCK` (32,768 columns: 32 float32 values per thread at 32 warps; a 65,536-wide
  block spills registers to local memory, as ptxas reports for sm_90); short rows are
  packed several to a block (`ELEMS` elements per program, autotuned with `num_warps`).
  Longer rows use the online two-pass kernels, which walk the row in chunks; with one
  16-warp program per multiprocessor the second pass mostly re-reads from L2.
- Arithmetic in float32 whatever the storage dtype (fp32, bf16, fp16 in and out).
- `mask` is boolean (True = keep, as in torch's scaled_dot_product_attention) or additive
  (added to the scaled logits: 0 keeps, -inf drops), the one meaning masks have in
  `minilm.nn.attention` and `minilm.kernels.flash_attention` too; broadcast against x without being
  materialised: the kernel reads it through its own strides. In base 2 an additive value
  is clamped to the most negative finite float, so a huge finite bias such as
  `torch.finfo(torch.float32).min` stays finite, as it does in torch (`_bias2`).
- `causal` keeps key j for query i when j <= i + (keys - queries), the end-aligned
  convention of `minilm.nn.attention`.
- Rows where everything is masked give zeros (and zero gradient), never NaN. A NaN (or a
  +inf) kept in a row makes the whole row NaN, forward and backward, as in torch.softmax:
  the normaliser substitutes 1 only for a sum that is exactly 0. (The backward reads only
  y, so such a row's gradient is NaN at its masked entries too, where masked_fill followed
  by torch.softmax would give 0.)
- Any `dim` and any strides: the input is moved so that `dim` is last and copied only
  when its rows are not unit-stride. The mask is treated as a constant (an additive mask
  that requires grad is rejected).
- Under Triton's interpreter (TRITON_INTERPRET=1, CPU tests) autotuning is skipped.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

__all__ = ["softmax", "softmax_reference", "online_softmax_update", "softmax_bytes", "MAX_BLOCK"]

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LOG2E = 1.4426950408889634
MAX_BLOCK = 32768  # longest row (rounded up to a power of two) kept in one block

MASK_NONE, MASK_BOOL, MASK_ADD = 0, 1, 2


# ----------------------------------------------------------------------------- reference
def softmax_reference(x, dim=-1, *, scale=1.0, mask=None, causal=False):
    """Plain PyTorch softmax(scale * x + mask) with the same conventions as `softmax`.

    Computed in the input dtype's precision or better (pass float64 for a ground truth);
    fully masked rows are zeros; a row holding a NaN is all NaN.
    """
    z = x * scale
    keep = torch.ones_like(z, dtype=torch.bool)
    if mask is not None:
        if mask.dtype == torch.bool:
            keep = keep & mask
        else:
            z = z + mask.to(z.dtype)
    if causal:
        n_q, n_k = x.shape[-2], x.shape[-1]
        q = torch.arange(n_q, device=x.device)[:, None]
        k = torch.arange(n_k, device=x.device)[None, :]
        keep = keep & (k <= q + (n_k - n_q))
    z = z.masked_fill(~keep, float("-inf"))
    m = z.amax(dim, keepdim=True)
    m = torch.where(torch.isinf(m) & (m < 0), torch.zeros_like(m), m)
    e = torch.exp(z - m)
    s = e.sum(dim, keepdim=True)
    return e / torch.where(s == 0, torch.ones_like(s), s)  # e is 0 on a fully masked row; NaN stays NaN


def online_softmax_update(m, s, x):
    """One step of the online softmax: fold a chunk of logits x into a running (max, sum).

    m (...,): the largest logit seen so far (-inf before the first chunk); s (...,): the sum
    of exp(logit - m) over every logit seen so far (0 before the first chunk); x (..., C):
    the next chunk, in natural units, -inf where masked. Returns (m_new, s_new, alpha, p):
    alpha = exp(m - m_new) (...,) rescales anything summed under the old maximum (s here;
    flash attention's output accumulator too), p = exp(x - m_new) (..., C) are the chunk's
    weights under the new maximum. After the last chunk, softmax(row) = exp(row - m) / s and
    logsumexp(row) = m + log(s), whatever the chunk sizes. A row that has seen only -inf
    keeps m = -inf and s = 0 (no NaN from -inf - -inf); a NaN makes s NaN. `_online_update`
    below is the same step in Triton, in base 2.
    """
    # BEGIN SOLUTION flash
    m_new = torch.maximum(m, x.amax(-1))  # (...,)
    m_ref = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)  # a row with no logit yet
    alpha = torch.exp(m - m_ref)  # (...,): exp(-inf) = 0 before the first finite logit
    p = torch.exp(x - m_ref[..., None])  # (..., C)
    return m_new, s * alpha + p.sum(-1), alpha, p
    # END SOLUTION flash


def softmax_bytes(x, *, backward=False):
    """Fewest bytes a fused softmax must move: read x, write y (backward: read y, dy, write dx)."""
    return (3 if backward else 2) * x.numel() * x.element_size()


# ----------------------------------------------------------------------------- kernels
def _configs():
    if INTERPRET:
        return [triton.Config({"ELEMS": 64}, num_warps=1)]
    return [triton.Config({"ELEMS": e}, num_warps=w) for e in (4096, 16384) for w in (4, 8, 16, 32)]


def _prune(configs, named_args, **kwargs):
    """Keep configs giving 16-32 elements per thread; very long rows take the most warps."""
    if INTERPRET:
        return configs
    block_n = {**named_args, **kwargs}["BLOCK_N"]
    seen, keep = set(), []
    for c in configs:
        rows = max(1, c.kwargs["ELEMS"] // block_n)
        per_thread = rows * block_n // (32 * c.num_warps)
        if 16 <= per_thread <= 32 and (rows, c.num_warps) not in seen:
            seen.add((rows, c.num_warps))
            keep.append(c)
    return keep or [max(configs, key=lambda c: (c.num_warps, -c.kwargs["ELEMS"]))]


@triton.jit
def _logits2(x, rows, cols, in_bounds, M, d1, d2, m_s0, m_s1, m_s2, m_sc, n_q, causal_offset, scale2,
             MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr):
    """Scaled, masked logits in base 2: log2(e) * (scale * x + mask); -inf where masked.

    x (R, C) fp32 block of rows `rows` (R,) and columns `cols` (C,).
    """
    z = x * scale2
    keep = in_bounds
    if MASK_KIND != 0:
        # row -> (i0, i1, i2) over the three leading dims, then the mask's own strides
        r = rows.to(tl.int64)
        moff = (r // (d1 * d2)) * m_s0 + ((r // d2) % d1) * m_s1 + (r % d2) * m_s2  # (R,)
        mv = tl.load(M + moff[:, None] + cols[None, :].to(tl.int64) * m_sc, mask=in_bounds, other=0)
        if MASK_KIND == 1:
            keep = keep & (mv != 0)
        else:
            z = z + _bias2(mv.to(tl.float32))
    if CAUSAL:
        q = rows % n_q  # query index of each row
        keep = keep & (cols[None, :] <= q[:, None] + causal_offset)
    return tl.where(keep, z, float("-inf"))


@triton.jit
def _bias2(b):
    """An additive mask value b (fp32) in base-2 units: log2(e) * b, kept finite unless b is -inf.

    log2(e) * finfo.min overflows to -inf in fp32; clamping keeps such a bias a (huge) finite
    one, as torch treats it. NaN stays NaN.
    """
    b2 = b * 1.4426950408889634
    b2 = tl.where(b2 < -3.4028234663852886e38, -3.4028234663852886e38, b2)
    return tl.where(b == float("-inf"), b, b2)


@triton.jit
def _online_update(m, s, x, scale):
    """One step of the online softmax (`online_softmax_update` in Triton, base 2).

    x (R, C) a chunk of raw logits whose base-2 values are z = x * scale (scale > 0; -inf
    where masked); m (R,) the running max of z, s (R,) the running sum of exp2(z - m).
    Returns (m_new, s_new, alpha, p): alpha (R,) = exp2(m - m_new) rescales what was summed
    under the old max, p (R, C) = exp2(z - m_new). The max is taken before scaling and p is
    one fused multiply-add per element, which matters in flash attention's hot loop. A row
    that has seen only -inf keeps m = -inf and s = 0 (no NaN from -inf - -inf).
    """
    # BEGIN SOLUTION flash
    m_new = tl.maximum(m, tl.max(x, 1) * scale)  # (R,)
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no logit yet
    alpha = tl.exp2(m - m_ref)  # (R,)
    p = tl.exp2(x * scale - m_ref[:, None])  # (R, C)
    return m_new, s * alpha + tl.sum(p, 1), alpha, p
    # END SOLUTION flash


@triton.autotune(configs=_configs(), key=["BLOCK_N", "MASK_KIND", "CAUSAL"],
                 prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _fwd_kernel(X, Y, M, n_rows, n_cols, stride_x, stride_y,
                d1, d2, m_s0, m_s1, m_s2, m_sc, n_q, causal_offset, scale2,
                MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, ELEMS: tl.constexpr):
    """y = softmax over rows that fit one block; ROWS whole rows per program."""
    ROWS: tl.constexpr = (ELEMS + BLOCK_N - 1) // BLOCK_N  # whole rows per program
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # (R,)
    cols = tl.arange(0, BLOCK_N)  # (C,)
    in_bounds = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)  # (R, C)
    r64 = rows.to(tl.int64)[:, None]
    x = tl.load(X + r64 * stride_x + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
    z = _logits2(x, rows, cols, in_bounds, M, d1, d2, m_s0, m_s1, m_s2, m_sc, n_q, causal_offset, scale2,
                 MASK_KIND, CAUSAL)
    m = tl.max(z, 1)
    m = tl.where(m == float("-inf"), 0.0, m)  # fully masked row: exp2(-inf - 0) = 0
    e = tl.exp2(z - m[:, None])
    s = tl.sum(e, 1)
    inv = 1.0 / tl.where(s == 0, 1.0, s)  # a fully masked row has e == 0; a NaN sum stays NaN
    tl.store(Y + r64 * stride_y + cols[None, :], (e * inv[:, None]).to(Y.dtype.element_ty), mask=in_bounds)


@triton.autotune(configs=_configs(), key=["BLOCK_N"], prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _bwd_kernel(Y, DY, DX, n_rows, n_cols, stride_y, stride_dy, stride_dx, scale,
                BLOCK_N: tl.constexpr, ELEMS: tl.constexpr):
    """dx = scale * y * (dy - sum(y * dy)) for rows that fit one block."""
    ROWS: tl.constexpr = (ELEMS + BLOCK_N - 1) // BLOCK_N  # whole rows per program
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    in_bounds = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    r64 = rows.to(tl.int64)[:, None]
    y = tl.load(Y + r64 * stride_y + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
    dy = tl.load(DY + r64 * stride_dy + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
    dot = tl.sum(y * dy, 1)  # (R,)
    dx = y * (dy - dot[:, None]) * scale
    tl.store(DX + r64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=in_bounds)


@triton.jit
def _fwd_online_kernel(X, Y, M, n_rows, n_cols, stride_x, stride_y,
                       d1, d2, m_s0, m_s1, m_s2, m_sc, n_q, causal_offset, scale2,
                       MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """Long rows: pass 1 finds (max, sum) with the online update, pass 2 writes y. One row per program."""
    rows = tl.program_id(0) + tl.arange(0, 1)  # (1,)
    r64 = rows.to(tl.int64)[:, None]
    m = tl.full((1,), float("-inf"), tl.float32)
    s = tl.zeros((1,), tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        in_bounds = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        x = tl.load(X + r64 * stride_x + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
        z = _logits2(x, rows, cols, in_bounds, M, d1, d2, m_s0, m_s1, m_s2, m_sc, n_q, causal_offset, scale2,
                     MASK_KIND, CAUSAL)
        m, s, alpha, p = _online_update(m, s, z, 1.0)  # alpha and p are not needed here
    m = tl.where(m == float("-inf"), 0.0, m)
    inv = 1.0 / tl.where(s == 0, 1.0, s)  # a fully masked row has e == 0; a NaN sum stays NaN
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        in_bounds = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        x = tl.load(X + r64 * stride_x + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
        z = _logits2(x, rows, cols, in_bounds, M, d1, d2, m_s0, m_s1, m_s2, m_sc, n_q, causal_offset, scale2,
                     MASK_KIND, CAUSAL)
        y = tl.exp2(z - m[:, None]) * inv[:, None]
        tl.store(Y + r64 * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=in_bounds)


@triton.jit
def _bwd_online_kernel(Y, DY, DX, n_rows, n_cols, stride_y, stride_dy, stride_dx, scale,
                       BLOCK_N: tl.constexpr):
    """Long rows: pass 1 accumulates sum(y * dy), pass 2 writes dx. One row per program."""
    rows = tl.program_id(0) + tl.arange(0, 1)
    r64 = rows.to(tl.int64)[:, None]
    dot = tl.zeros((1,), tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        in_bounds = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        y = tl.load(Y + r64 * stride_y + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
        dy = tl.load(DY + r64 * stride_dy + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
        dot += tl.sum(y * dy, 1)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        in_bounds = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        y = tl.load(Y + r64 * stride_y + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
        dy = tl.load(DY + r64 * stride_dy + cols[None, :], mask=in_bounds, other=0.0).to(tl.float32)
        dx = y * (dy - dot[:, None]) * scale
        tl.store(DX + r64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=in_bounds)


# ----------------------------------------------------------------------------- launchers
def _online_block():
    return max(MAX_BLOCK // 8, 16)


def _rows2d(t):
    """View t (..., N) as (R, N) with unit column stride, copying only when needed."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _forward(x2, y2, mask_args, scale):
    n_rows, n_cols = x2.shape
    mask, lead, m_strides, m_sc, mask_kind, causal, n_q, offset = mask_args
    common = (n_rows, n_cols, x2.stride(0), y2.stride(0), lead[1], lead[2], *m_strides, m_sc, n_q, offset,
              scale * LOG2E)
    block_n = triton.next_power_of_2(n_cols)
    if block_n <= MAX_BLOCK:
        grid = lambda meta: (triton.cdiv(n_rows, max(1, meta["ELEMS"] // meta["BLOCK_N"])),)  # noqa: E731
        _fwd_kernel[grid](x2, y2, mask, *common, MASK_KIND=mask_kind, CAUSAL=causal, BLOCK_N=block_n)
    else:
        _fwd_online_kernel[(n_rows,)](x2, y2, mask, *common, MASK_KIND=mask_kind, CAUSAL=causal,
                                      BLOCK_N=_online_block(), num_warps=1 if INTERPRET else 16)


def _backward(y2, dy2, dx2, scale):
    n_rows, n_cols = y2.shape
    args = (y2, dy2, dx2, n_rows, n_cols, y2.stride(0), dy2.stride(0), dx2.stride(0), scale)
    block_n = triton.next_power_of_2(n_cols)
    if block_n <= MAX_BLOCK:
        grid = lambda meta: (triton.cdiv(n_rows, max(1, meta["ELEMS"] // meta["BLOCK_N"])),)  # noqa: E731
        _bwd_kernel[grid](*args, BLOCK_N=block_n)
    else:
        _bwd_online_kernel[(n_rows,)](*args, BLOCK_N=_online_block(), num_warps=1 if INTERPRET else 16)


class _SoftmaxFunction(torch.autograd.Function):
    """Autograd wrapper over rows (R, N); the mask is a constant."""

    @staticmethod
    def forward(ctx, x2, scale, mask_args):
        y2 = torch.empty(x2.shape, dtype=x2.dtype, device=x2.device)  # (R, N)
        if x2.numel():
            _forward(x2, y2, mask_args, scale)
        ctx.save_for_backward(y2)
        ctx.scale = scale
        return y2

    @staticmethod
    def backward(ctx, dy2):
        (y2,) = ctx.saved_tensors
        dy2 = dy2 if dy2.stride(-1) == 1 else dy2.contiguous()
        dx2 = torch.empty_like(y2)  # (R, N)
        if y2.numel():
            _backward(y2, dy2, dx2, ctx.scale)
        return dx2, None, None


def _mask_args(x, dim, mask, causal):
    """Everything the kernel needs to read the mask in place: its strides over three leading dims."""
    moved_shape = x.movedim(dim, -1).shape  # (..., N)
    n_cols = moved_shape[-1]
    lead = list(moved_shape[:-1])
    if causal:
        if dim not in (-1, x.dim() - 1) or x.dim() < 2:
            raise ValueError(f"softmax: causal=True needs dim=-1 on a tensor of at least 2 dims (queries, keys); "
                             f"got dim={dim} for shape {tuple(x.shape)}")
    n_q = moved_shape[-2] if causal else 1
    offset = n_cols - n_q
    if mask is None:
        return (x, [1, 1, 1], (0, 0, 0), 0, MASK_NONE, causal, n_q, offset)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"softmax: mask must be a torch.Tensor (bool or float), got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TypeError(f"softmax: mask dtype {mask.dtype} is not accepted; use torch.bool (True = keep) "
                        f"or a float dtype (added to the scaled logits)")
    if mask.requires_grad and mask.dtype != torch.bool:
        raise ValueError("softmax: an additive mask that requires grad is not supported; the mask is a constant "
                         "(pass mask.detach())")
    if mask.device != x.device:
        raise ValueError(f"softmax: mask is on {mask.device} but x is on {x.device}")
    try:
        torch.broadcast_shapes(mask.shape, x.shape)
        m = mask.expand(x.shape)
    except RuntimeError:
        raise ValueError(f"softmax: mask of shape {tuple(mask.shape)} does not broadcast to x of shape "
                         f"{tuple(x.shape)}") from None
    m = m.movedim(dim, -1)  # (..., N), strides may be 0
    if len(lead) > 3:  # fold the extra leading dims into one (this may copy the mask)
        lead = [math.prod(lead[:-2]), lead[-2], lead[-1]]
        m = m.reshape(*lead, n_cols)
    while len(lead) < 3:
        lead.insert(0, 1)
        m = m.unsqueeze(0)
    if m.dtype == torch.bool:
        m = m.view(torch.uint8)  # same bytes; Triton reads bytes more portably than i1
    kind = MASK_BOOL if mask.dtype == torch.bool else MASK_ADD
    return (m, lead, tuple(m.stride()[:3]), m.stride(3), kind, causal, n_q, offset)


def softmax(x, dim=-1, *, scale=1.0, mask=None, causal=False):
    """Fused softmax(scale * x + mask) along `dim`, forward and backward in Triton.

    x: any shape, float32/bfloat16/float16, on a CUDA device (or CPU under TRITON_INTERPRET=1).
    mask: None, bool (True = keep) or float (additive), broadcastable to x; a constant.
    causal: keep key j for query i when j <= i + (N - Tq), with x (..., Tq, N) and dim=-1.
    Returns a tensor like x (same dtype and shape); fully masked rows are zeros.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"softmax: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"softmax: x dtype {x.dtype} is not supported; use float32, bfloat16 or float16")
    if not (x.is_cuda or INTERPRET):
        raise ValueError(f"softmax: x is on {x.device}; the Triton kernel needs a CUDA tensor "
                         f"(or TRITON_INTERPRET=1 for CPU tensors)")
    if x.dim() == 0:
        raise ValueError("softmax: x must have at least one dimension")
    dim = dim % x.dim() if -x.dim() <= dim < x.dim() else None
    if dim is None:
        raise ValueError(f"softmax: dim out of range for a tensor of {x.dim()} dims")
    mask_args = _mask_args(x, dim, mask, causal)
    moved = x.movedim(dim, -1)  # (..., N)
    y2 = _SoftmaxFunction.apply(_rows2d(moved), float(scale), mask_args)  # (R, N)
    return y2.reshape(moved.shape).movedim(-1, dim)
