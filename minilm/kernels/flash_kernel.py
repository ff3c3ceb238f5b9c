"""Flash attention (FlashAttention-2) in Triton: exact attention without the T x T matrix.

What this file teaches
- Attention as matmul-softmax-matmul writes and re-reads a (T, T) score matrix per head:
  at T = 4096 that is 32 MiB per head in bf16, and the GPU spends its time moving it.
  Flash attention tiles Q into row blocks and streams K and V past each block, keeping
  the scores in registers. The softmax is computed with the *online* update (see
  minilm/kernels/softmax_kernel.py): a running max m and running sum l per row, and the output
  accumulator is rescaled by exp(m_old - m_new) whenever the max grows.
- Work: 4 * B * H * T^2 * D FLOPs forward (two matmuls of 2 * T^2 * D each per head),
  half that when causal; the backward does five such matmuls, 2.5x the forward
  (`attention_flops`). Memory: only Q, K, V, O (and a (B, H, T) log-sum-exp) are read or
  written, so at D = 64..128 attention becomes compute-bound: TFLOP/s is the figure.
- The backward recomputes the probabilities from the saved log-sum-exp instead of storing
  them: P = exp(S - lse). With delta = rowsum(dO * O) (a small preprocess kernel),
  dS = P * (dP - delta), and dQ = dS K, dK = dS^T Q, dV = P^T dO (all scaled by sm_scale
  where the chain rule puts it).

Design choices
- Forward: one program per (query block, batch*head); scores in base 2 (exp2, log2(e)
  folded into the scale); the log-sum-exp is saved in the same base-2 units.
- Causal: key blocks strictly left of the query block are fully visible, so they run in
  a main loop with no masking at all; only the diagonal blocks pay for the mask; blocks
  right of the diagonal are never visited (half the work). Non-causal: full blocks run
  unmasked and only the last, partial key block checks bounds. Any sequence length.
- Backward as FlashAttention-2 does it, with no atomics: a dK/dV kernel owns a key block
  and walks the query blocks; a dQ kernel owns a query block and walks the key blocks.
  Each recomputes P from the log-sum-exp. The two kernels trade a second QK^T for having
  no atomic adds and no dQ accumulator in fp32 memory.
- The online softmax step is `minilm.kernels.softmax_kernel._online_update`, called, not copied: the
  same helper the long-row softmax kernel uses (its PyTorch twin, `online_softmax_update`,
  is what lessons 10 and 11 read).
- Key padding masks (B, T), with the one meaning masks have across the course: bool, True
  = real token (BERT batches), padded keys get -inf scores in every block (`PAD_KIND` 1);
  or float, added to the scores (0 keeps, -inf drops; `PAD_KIND` 2), a constant. A row
  whose every key is hidden gives zeros (its lse is stored as +inf, which makes every
  recomputed probability 0), never NaN; a NaN in a row stays NaN, as in torch. Known
  limit: a row whose *every* key carries a huge finite bias (Hugging Face's finfo.min
  padding on a fully padded row) comes out uniform, as in torch, but its gradient is not
  exact: at that magnitude the saved fp32 log-sum-exp cannot hold log2(l). Use -inf (or a
  bool mask) for padding; any row with one ordinary key is exact.
- Grouped-query attention (k and v with Hkv heads for q's H): the forward and dQ programs of
  query head h read key/value head h // (H / Hkv) in place; a dK/dV program owns a key block
  of one key/value head and walks the query blocks of each of its H / Hkv query heads in
  turn, so the shared gradients are summed in registers, still without atomics.
- No arbitrary (Tq, Tk) attention mask: `supports` refuses one, naming the reason.
- Tq == Tk (self-attention, causal aligned on the diagonal); head dims 16, 32, 64, 128;
  fp16 / bf16 on a GPU. fp32 runs only under the interpreter (the CPU tests): on a GPU its
  tiles would need twice the shared memory of the tuned configs, and TF32 dots would not
  be fp32 anyway. `supports` says whether an input is covered, so
  `minilm.nn.attention(backend="auto")` can fall back (to SDPA for fp32 on a GPU).
- Block sizes, warps and pipeline depth are autotuned from a short list that suits
  Hopper (128-row query tiles, 3-4 stages, 4-8 warps); under Triton's interpreter one
  small configuration is used so CPU tests stay fast.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from minilm.kernels.reference import key_padding_mask_problem
from minilm.kernels.softmax_kernel import _bias2, _online_update

__all__ = ["flash_attention", "supports", "attention_flops", "HEAD_DIMS"]

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------- work
# The plain-torch ground truth with the same conventions is `minilm.kernels.reference.attention_reference`.
def attention_flops(batch, heads, seq, head_dim, *, causal=False, backward=False):
    """FLOPs counted the usual way: 4*B*H*T^2*D forward, halved if causal; backward 2.5x."""
    flops = 4 * batch * heads * seq * seq * head_dim * (0.5 if causal else 1.0)
    return flops * (2.5 if backward else 1.0)


# ----------------------------------------------------------------------------- configs
def _cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# Per head dim, the (BLOCK_M, BLOCK_N, num_warps, num_stages) that compile for sm_90 without
# register spills (checked with ptxas: registers <= 255, no local memory). The first entry
# of each list works for every head dim; the autotuner times the rest of the list for the
# head dim at hand and keeps the fastest (keyed by T, head dim, causal, padding, dtype).
# The forward and dQ kernels need BLOCK_M % BLOCK_N == 0, the dK/dV kernel the reverse.
_TABLE = {
    "fwd": {64: [(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3)], 128: [(128, 64, 8, 3), (128, 128, 8, 3)]},
    "dkdv": {64: [(32, 64, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3)], 128: [(32, 64, 4, 3), (32, 128, 8, 3)]},
    "dq": {64: [(128, 64, 8, 3), (128, 32, 4, 3)], 128: [(128, 64, 8, 3), (128, 32, 8, 3)]},
}
# Under the interpreter: one small config; BLOCK_M != BLOCK_N so that the CPU tests cover
# several diagonal blocks per tile.
_INTERPRETER = {"fwd": (32, 16, 1, 1), "dkdv": (16, 32, 1, 1), "dq": (32, 16, 1, 1)}


def _configs(kernel):
    if INTERPRET:
        return [_cfg(*_INTERPRETER[kernel])]
    unique = dict.fromkeys(c for table in _TABLE[kernel].values() for c in table)  # ordered, no repeats
    return [_cfg(*c) for c in unique]


def _prune(kernel):
    """Keep the configs listed for this head dim (head dims below 64 use the 64 list)."""

    def prune(configs, named_args, **kwargs):
        head_dim = {**named_args, **kwargs}["HEAD_DIM"]
        wanted = set(_TABLE[kernel][64 if head_dim <= 64 else 128])
        keep = [c for c in configs
                if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in wanted]
        return keep or configs[:1]

    return prune


_KEY = ["T", "HEAD_DIM", "CAUSAL", "PAD_KIND"]


# ----------------------------------------------------------------------------- forward
@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d, lo, hi, T, qk_scale,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, PAD_KIND: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """Stream key blocks [lo, hi) past one query block with the online softmax.

    acc (BM, D) fp32 unnormalised output, l_i (BM,) running sum, m_i (BM,) running max
    (base 2). MASKED blocks check key bounds and, if CAUSAL, key <= query.
    """
    # BEGIN SOLUTION flash
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)  # (BN,)
        k_ptrs = K + offs_n[:, None] * stride_kt + offs_d[None, :]
        v_ptrs = V + offs_n[:, None] * stride_vt + offs_d[None, :]
        if MASKED:
            k = tl.load(k_ptrs, mask=offs_n[:, None] < T, other=0.0)  # (BN, D)
        else:
            k = tl.load(k_ptrs)
        qk = tl.dot(q, tl.trans(k))  # (BM, BN) raw scores
        if MASKED or PAD_KIND != 0:
            qk = qk * qk_scale  # base 2
            if MASKED:
                keep = offs_n[None, :] < T
                if CAUSAL:
                    keep = keep & (offs_n[None, :] <= offs_m[:, None])
                qk = tl.where(keep, qk, float("-inf"))
            if PAD_KIND == 1:
                real = tl.load(PAD + offs_n, mask=offs_n < T, other=0)  # (BN,)
                qk = tl.where(real[None, :] != 0, qk, float("-inf"))
            if PAD_KIND == 2:
                bias = tl.load(PAD + offs_n, mask=offs_n < T, other=float("-inf"))  # (BN,) fp32
                qk = qk + _bias2(bias)[None, :]
            m_i, l_i, alpha, p = _online_update(m_i, l_i, qk, 1.0)  # p (BM, BN)
        else:
            # the hot loop: the scale is folded into one fused multiply-add per score
            m_i, l_i, alpha, p = _online_update(m_i, l_i, qk, qk_scale)  # p (BM, BN)
        # alpha rescales what was accumulated under the old max
        if MASKED:
            v = tl.load(v_ptrs, mask=offs_n[:, None] < T, other=0.0)  # (BN, D)
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])  # (BM, D)
    return acc, l_i, m_i
    # END SOLUTION flash


@triton.autotune(configs=_configs("fwd"), key=_KEY, prune_configs_by={"early_config_prune": _prune("fwd")})
@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, PAD, sm_scale,
                stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot, stride_pb,
                H, GROUP, T, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PAD_KIND: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """O = softmax(Q K^T * sm_scale) V for one query block of one (batch, head); saves lse.

    Query head h reads key/value head h // GROUP (grouped-query attention; GROUP = 1 is plain).
    """
    start_m = tl.program_id(0) * BLOCK_M
    if CAUSAL:  # the last query blocks have the most keys to visit: launch them first
        start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + (h // GROUP) * stride_kh
    V += b * stride_vb + (h // GROUP) * stride_vh
    O += b * stride_ob + h * stride_oh
    PAD += b * stride_pb
    offs_m = start_m + tl.arange(0, BLOCK_M)  # (BM,)
    offs_d = tl.arange(0, HEAD_DIM)  # (D,)
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :], mask=offs_m[:, None] < T, other=0.0)
    qk_scale = sm_scale * 1.4426950408889634
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    if CAUSAL:
        # keys left of this block are visible to every row (BLOCK_M is a multiple of BLOCK_N)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d,
                                   0, start_m, T, qk_scale, False, CAUSAL, PAD_KIND, BLOCK_N)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d,
                                   start_m, tl.minimum(start_m + BLOCK_M, T), T, qk_scale,
                                   True, CAUSAL, PAD_KIND, BLOCK_N)
    else:
        n_full = (T // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d,
                                   0, n_full, T, qk_scale, False, CAUSAL, PAD_KIND, BLOCK_N)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d,
                                   n_full, T, T, qk_scale, True, CAUSAL, PAD_KIND, BLOCK_N)
    has_key = l_i != 0  # False only for rows whose every key is hidden (a NaN row stays NaN)
    l_safe = tl.where(has_key, l_i, 1.0)  # acc is 0 on rows without a key
    o = acc / l_safe[:, None]
    lse = tl.where(has_key, m_i + tl.log2(l_safe), float("inf"))
    tl.store(O + offs_m[:, None] * stride_ot + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=offs_m[:, None] < T)
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, lse, mask=offs_m < T)


# ----------------------------------------------------------------------------- backward
@triton.jit
def _bwd_preprocess(O, DO, DELTA, stride_ob, stride_oh, stride_ot, H, T,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta = rowsum(dO * O), (B*H, T) fp32: the softmax-backward dot product per row."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    base = (bh // H).to(tl.int64) * stride_ob + (bh % H).to(tl.int64) * stride_oh
    offs = base + offs_m[:, None] * stride_ot + tl.arange(0, HEAD_DIM)[None, :]
    o = tl.load(O + offs, mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    do = tl.load(DO + offs, mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    tl.store(DELTA + bh.to(tl.int64) * T + offs_m, tl.sum(o * do, 1), mask=offs_m < T)


@triton.jit
def _dkdv_inner(dk, dv, k, v, kbias, Q, DO, LSE, DELTA, stride_qt, stride_ot, offs_n, offs_d, lo, hi, T,
                qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, PAD_KIND: tl.constexpr,
                BLOCK_M: tl.constexpr):
    """Accumulate dK, dV (BN, D) of one key block over query blocks [lo, hi).

    Works transposed (keys on rows): P^T = exp2(K Q^T * scale + kbias - lse), kbias (BN,)
    the keys' additive mask in base 2 (read only when PAD_KIND == 2). Query rows past T
    load lse = +inf, so their probabilities are exactly 0 without an extra mask.
    """
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)  # (BM,)
        q_ptrs = Q + offs_m[:, None] * stride_qt + offs_d[None, :]
        do_ptrs = DO + offs_m[:, None] * stride_ot + offs_d[None, :]
        if MASKED:
            q = tl.load(q_ptrs, mask=offs_m[:, None] < T, other=0.0)  # (BM, D)
            lse = tl.load(LSE + offs_m, mask=offs_m < T, other=float("inf"))
            do = tl.load(do_ptrs, mask=offs_m[:, None] < T, other=0.0)
            delta = tl.load(DELTA + offs_m, mask=offs_m < T, other=0.0)
        else:
            q = tl.load(q_ptrs)
            lse = tl.load(LSE + offs_m)
            do = tl.load(do_ptrs)
            delta = tl.load(DELTA + offs_m)
        s_t = tl.dot(k, tl.trans(q)) * qk_scale  # (BN, BM) base 2
        if PAD_KIND == 2:
            s_t = s_t + kbias[:, None]
        p_t = tl.exp2(s_t - lse[None, :])  # (BN, BM)
        if MASKED and CAUSAL:
            p_t = tl.where(offs_m[None, :] >= offs_n[:, None], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv)  # (BN, D)
        dp_t = tl.dot(v, tl.trans(do))  # (BN, BM)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk)  # (BN, D)
    return dk, dv


@triton.autotune(configs=_configs("dkdv"), key=_KEY, prune_configs_by={"early_config_prune": _prune("dkdv")})
@triton.jit
def _dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, PAD, sm_scale,
                 stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                 stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot, stride_pb,
                 stride_gb, stride_gh, stride_gt,
                 H, GROUP, T, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PAD_KIND: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dK, dV for one key block of one (batch, key/value head). dO shares O's strides, dK and dV
    share theirs (stride_g*). A key/value head serves GROUP query heads: their contributions add up."""
    start_n = tl.program_id(0) * BLOCK_N
    bhk = tl.program_id(1)
    H_KV = H // GROUP
    b = (bhk // H_KV).to(tl.int64)
    hk = (bhk % H_KV).to(tl.int64)
    K += b * stride_kb + hk * stride_kh
    V += b * stride_vb + hk * stride_vh
    DK += b * stride_gb + hk * stride_gh
    DV += b * stride_gb + hk * stride_gh
    offs_n = start_n + tl.arange(0, BLOCK_N)  # (BN,)
    offs_d = tl.arange(0, HEAD_DIM)
    in_t = offs_n[:, None] < T
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_d[None, :], mask=in_t, other=0.0)  # (BN, D)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=in_t, other=0.0)
    dk = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    dv = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    kbias = tl.zeros((BLOCK_N,), tl.float32)
    if PAD_KIND == 2:
        kbias = _bias2(tl.load(PAD + b * stride_pb + offs_n, mask=offs_n < T, other=float("-inf")))  # (BN,)
    qk_scale = sm_scale * 1.4426950408889634
    m_full = (T // BLOCK_M) * BLOCK_M
    for g in range(GROUP):
        h = hk * GROUP + g  # the query heads that read this key/value head
        Qh = Q + b * stride_qb + h * stride_qh
        DOh = DO + b * stride_ob + h * stride_oh
        LSEh = LSE + (b * H + h) * T
        DELTAh = DELTA + (b * H + h) * T
        if CAUSAL:
            # queries above the diagonal see none of these keys; the diagonal band is masked
            # (BLOCK_N is a multiple of BLOCK_M) and the queries below it see all of them.
            dk, dv = _dkdv_inner(dk, dv, k, v, kbias, Qh, DOh, LSEh, DELTAh, stride_qt, stride_ot, offs_n, offs_d,
                                 start_n, tl.minimum(start_n + BLOCK_N, T), T, qk_scale, True, CAUSAL, PAD_KIND,
                                 BLOCK_M)
            lo = start_n + BLOCK_N
        else:
            lo = start_n * 0
        dk, dv = _dkdv_inner(dk, dv, k, v, kbias, Qh, DOh, LSEh, DELTAh, stride_qt, stride_ot, offs_n, offs_d,
                             lo, m_full, T, qk_scale, False, CAUSAL, PAD_KIND, BLOCK_M)
        dk, dv = _dkdv_inner(dk, dv, k, v, kbias, Qh, DOh, LSEh, DELTAh, stride_qt, stride_ot, offs_n, offs_d,
                             tl.maximum(lo, m_full), T, T, qk_scale, True, CAUSAL, PAD_KIND, BLOCK_M)
    if PAD_KIND == 1:
        # a padded key took no probability in the forward: its gradients are zero
        real = tl.load(PAD + b * stride_pb + offs_n, mask=offs_n < T, other=0)
        dk = tl.where(real[:, None] != 0, dk, 0.0)
        dv = tl.where(real[:, None] != 0, dv, 0.0)
    out = offs_n[:, None] * stride_gt + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=in_t)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=in_t)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d, lo, hi, T, qk_scale,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, PAD_KIND: tl.constexpr, BLOCK_N: tl.constexpr):
    """Accumulate dQ (BM, D) of one query block over key blocks [lo, hi)."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)  # (BN,)
        k_ptrs = K + offs_n[:, None] * stride_kt + offs_d[None, :]
        v_ptrs = V + offs_n[:, None] * stride_vt + offs_d[None, :]
        if MASKED:
            k = tl.load(k_ptrs, mask=offs_n[:, None] < T, other=0.0)  # (BN, D)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < T, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # (BM, BN) base 2
        if PAD_KIND == 2:
            s = s + _bias2(tl.load(PAD + offs_n, mask=offs_n < T, other=float("-inf")))[None, :]
        p = tl.exp2(s - lse[:, None])  # (BM, BN)
        if MASKED:
            keep = offs_n[None, :] < T
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            p = tl.where(keep, p, 0.0)
        if PAD_KIND == 1:
            real = tl.load(PAD + offs_n, mask=offs_n < T, other=0)
            p = tl.where(real[None, :] != 0, p, 0.0)
        dp = tl.dot(do, tl.trans(v))  # (BM, BN)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)  # (BM, D)
    return dq


@triton.autotune(configs=_configs("dq"), key=_KEY, prune_configs_by={"early_config_prune": _prune("dq")})
@triton.jit
def _dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, PAD, sm_scale,
               stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
               stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot, stride_pb,
               H, GROUP, T, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PAD_KIND: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dQ for one query block of one (batch, head), reading key/value head h // GROUP. dO and dQ share O's strides."""
    start_m = tl.program_id(0) * BLOCK_M
    if CAUSAL:  # heaviest query blocks first, as in the forward
        start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + (h // GROUP) * stride_kh
    V += b * stride_vb + (h // GROUP) * stride_vh
    DO += b * stride_ob + h * stride_oh
    DQ += b * stride_ob + h * stride_oh
    PAD += b * stride_pb
    offs_m = start_m + tl.arange(0, BLOCK_M)  # (BM,)
    offs_d = tl.arange(0, HEAD_DIM)
    in_t = offs_m[:, None] < T
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :], mask=in_t, other=0.0)  # (BM, D)
    do = tl.load(DO + offs_m[:, None] * stride_ot + offs_d[None, :], mask=in_t, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * T + offs_m, mask=offs_m < T, other=float("inf"))
    delta = tl.load(DELTA + bh.to(tl.int64) * T + offs_m, mask=offs_m < T, other=0.0)
    dq = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    if CAUSAL:
        dq = _dq_inner(dq, q, do, lse, delta, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d,
                       0, start_m, T, qk_scale, False, CAUSAL, PAD_KIND, BLOCK_N)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d,
                       start_m, tl.minimum(start_m + BLOCK_M, T), T, qk_scale, True, CAUSAL, PAD_KIND, BLOCK_N)
    else:
        n_full = (T // BLOCK_N) * BLOCK_N
        dq = _dq_inner(dq, q, do, lse, delta, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d,
                       0, n_full, T, qk_scale, False, CAUSAL, PAD_KIND, BLOCK_N)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, PAD, stride_kt, stride_vt, offs_m, offs_d,
                       n_full, T, T, qk_scale, True, CAUSAL, PAD_KIND, BLOCK_N)
    tl.store(DQ + offs_m[:, None] * stride_ot + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty), mask=in_t)


# ----------------------------------------------------------------------------- launchers
def _strides(t):
    return t.stride(0), t.stride(1), t.stride(2)


def _pad_args(pad, lse):
    """(pointer, batch stride, PAD_KIND) for the kernels: 0 no mask, 1 bool flags (uint8), 2 fp32 biases."""
    if pad is None:
        return lse, 0, 0  # a valid pointer that is never read
    return pad, pad.stride(0), 1 if pad.dtype == torch.uint8 else 2


def _grid(seq, bh):
    """Programs over query blocks (BLOCK_M rows each) and (batch, head) pairs."""
    return lambda meta: (triton.cdiv(seq, meta["BLOCK_M"]), bh)


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pad, causal, sm_scale):
        B, H, T, D = q.shape
        o = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # (B, H, T, D) contiguous
        lse = torch.empty((B * H, T), dtype=torch.float32, device=q.device)  # base-2 log-sum-exp
        pad_arg, stride_pb, pad_kind = _pad_args(pad, lse)
        _fwd_kernel[_grid(T, B * H)](
            q, k, v, o, lse, pad_arg, sm_scale, *_strides(q), *_strides(k), *_strides(v), *_strides(o), stride_pb,
            H, H // k.shape[1], T, HEAD_DIM=D, CAUSAL=causal, PAD_KIND=pad_kind)
        ctx.save_for_backward(q, k, v, o, lse, pad)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, pad = ctx.saved_tensors
        B, H, T, D = q.shape
        do = do.contiguous()  # (B, H, T, D), same strides as o
        delta = torch.empty_like(lse)  # (B*H, T)
        _bwd_preprocess[(triton.cdiv(T, 64), B * H)](o, do, delta, *_strides(o), H, T, HEAD_DIM=D, BLOCK_M=64)
        H_kv = k.shape[1]
        dq = torch.empty_like(o)  # (B, H, T, D)
        dk, dv = (torch.empty(k.shape, dtype=k.dtype, device=k.device) for _ in range(2))  # (B, Hkv, T, D)
        pad_arg, stride_pb, pad_kind = _pad_args(pad, lse)
        common = (ctx.sm_scale, *_strides(q), *_strides(k), *_strides(v), *_strides(o), stride_pb)
        flags = dict(HEAD_DIM=D, CAUSAL=ctx.causal, PAD_KIND=pad_kind)
        # the dK/dV kernel's programs are key blocks of each key/value head: its BLOCK_N sets the grid
        dkdv_grid = lambda meta: (triton.cdiv(T, meta["BLOCK_N"]), B * H_kv)  # noqa: E731
        _dkdv_kernel[dkdv_grid](q, k, v, do, dk, dv, lse, delta, pad_arg, *common, *_strides(dk), H, H // H_kv, T,
                                **flags)
        _dq_kernel[_grid(T, B * H)](q, k, v, do, dq, lse, delta, pad_arg, *common, H, H // H_kv, T, **flags)
        return dq, dk, dv, None, None, None


def supports(q, k, v, *, causal=False, key_padding_mask=None, attn_mask=None):
    """Whether `flash_attention` handles these inputs: (True, "") or (False, the reason)."""
    tensors = {"q": q, "k": k, "v": v}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            return False, f"{name} must be a torch.Tensor"
        if t.dim() != 4:
            return False, f"{name} must be 4-D (batch, heads, seq, head_dim), got shape {tuple(t.shape)}"
    if attn_mask is not None:
        return False, ("an arbitrary attn_mask (Tq, Tk) is not supported: the kernel's masks are the causal rule and "
                       "one flag or bias per key (key_padding_mask), which keeps a (Tq, Tk) table out of its tiles; "
                       "use backend='sdpa' (or 'auto', which picks it)")
    if not (k.shape == v.shape and q.shape[0] == k.shape[0] and q.shape[2:] == k.shape[2:]
            and k.shape[1] > 0 and q.shape[1] % k.shape[1] == 0):
        return False, (f"q must be (B, H, T, D) and k, v (B, Hkv, T, D) with Hkv dividing H (self-attention, "
                       f"Tq == Tk); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        return False, f"dtypes {q.dtype}/{k.dtype}/{v.dtype}: supported are one of float16, bfloat16, float32"
    if q.shape[-1] not in HEAD_DIMS:
        return False, f"head_dim {q.shape[-1]} is not supported; supported head dims: {HEAD_DIMS}"
    if not (q.device == k.device == v.device):
        return False, f"q, k, v are on different devices: {q.device}, {k.device}, {v.device}"
    if q.is_cuda:
        if q.dtype == torch.float32:
            return False, "float32 runs only under TRITON_INTERPRET=1 (CPU tests); on a GPU use float16 or bfloat16"
        if q.dtype == torch.bfloat16 and torch.cuda.get_device_capability(q.device) < (8, 0):
            return False, "bfloat16 needs a GPU of compute capability 8.0 or newer"
    elif not INTERPRET:
        return False, f"tensors on {q.device}: the Triton kernel needs CUDA (or TRITON_INTERPRET=1 on the CPU)"
    if q.shape[2] == 0 or q.shape[0] * q.shape[1] == 0:
        return False, f"empty input of shape {tuple(q.shape)}"
    if key_padding_mask is not None:
        problem = key_padding_mask_problem(key_padding_mask, q.shape[0], k.shape[2], q.device)
        if problem:
            return False, problem
        if key_padding_mask.dtype != torch.bool and key_padding_mask.requires_grad:
            return False, ("an additive (float) key_padding_mask that requires grad is not supported: the kernel "
                           "treats it as a constant (pass mask.detach(), or use torch's SDPA for its gradient)")
    if not isinstance(causal, bool):
        return False, f"causal must be a bool, got {causal!r}"
    return True, ""


def flash_attention(q, k, v, *, causal=False, key_padding_mask=None, sm_scale=None):
    """softmax(q k^T * sm_scale + masks) v with FlashAttention-2 kernels, differentiable in q, k, v.

    q (B, H, T, D), k, v (B, Hkv, T, D) with Hkv dividing H (grouped-query attention: query head h
    reads key/value head h // (H / Hkv)); one dtype (fp16/bf16 on CUDA; fp32 under the interpreter),
    D in HEAD_DIMS.
    key_padding_mask (B, T): bool (True = real token) or float (added to the scores: 0 keeps,
    -inf drops; a constant). causal: query i sees keys j <= i. sm_scale > 0 defaults to
    1/sqrt(D). Rows with no visible key are zeros. Returns (B, H, T, D).
    Raises ValueError naming what is supported when `supports` says no.
    """
    ok, reason = supports(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
    if not ok:
        raise ValueError(f"flash_attention: {reason}")
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    if not (0 < sm_scale < math.inf):  # the kernel takes each row's max before scaling
        raise ValueError(f"flash_attention: sm_scale={sm_scale} must be a positive finite number")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    pad = key_padding_mask
    if pad is not None:  # (B, T): bool as bytes, or the additive biases in fp32
        pad = pad.contiguous().view(torch.uint8) if pad.dtype == torch.bool else pad.to(torch.float32).contiguous()
    return _FlashAttention.apply(q, k, v, pad, causal, sm_scale)
