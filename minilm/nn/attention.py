"""Scaled dot-product attention: one function, three interchangeable backends.

    attention(q, k, v, causal=..., key_padding_mask=..., attn_mask=..., backend=...) -> (B, H, Tq, D)

Design choices:
- `reference` is the textbook matmul -> mask -> softmax -> matmul,
  `minilm.kernels.reference.attention_reference`, written to be read. It is the ground truth every
  other backend is tested against. It lives in `minilm/kernels/` (torch only) because the kernels,
  their tests and their benchmark import nothing else of minilm; minilm calls it, never the reverse.
- `sdpa` calls `torch.nn.functional.scaled_dot_product_attention`, which picks a fused
  kernel (flash / memory-efficient / CPU flash) when it can.
- `triton` calls `minilm.kernels.flash_attention` (the course's own FlashAttention-2 kernel).
- `auto` picks triton on CUDA when the kernel says it supports the case (it has no
  dropout), else sdpa -- except on the CPU with attention dropout, where torch leaves its
  fused kernel for an unfused fallback slower than `reference`, so `reference` is picked
  there (figures: lessons/measurements/design_choices.md).
- `key_padding_mask` (B, Tk) has one meaning in every backend, and in `minilm.kernels.softmax`
  and `minilm.kernels.flash_attention` too: bool keeps a key where True (a real token); float is
  *added* to the scores (PyTorch's additive masks: 0 keeps, -inf drops, other values are a
  bias). Integer masks are refused rather than guessed at (pass `mask.bool()`).
- `attn_mask` (..., Tq, Tk) is bool only (True = the query may see the key), an arbitrary
  pattern beside the per-key padding mask: document masking in packed rows, a prefix-LM.
  The Triton kernel refuses it (its masks are the causal rule and one value per key, which
  keeps its tiles free of a (Tq, Tk) read), so `auto` takes SDPA.
- Grouped-query attention: k and v may carry Hkv heads for q's H (Hkv dividing H; 1 is
  multi-query). The reference repeats them, SDPA reads them in place (`enable_gqa`), and the
  Triton kernel maps query head h to key/value head h // (H / Hkv), so the cache and the
  memory traffic shrink by H / Hkv.
- Causal masking with more keys than queries (Tk > Tq) is aligned to the *end*: query i
  sees keys j <= i + (Tk - Tq). That is what a KV cache (the new token sees all the past)
  and prefix tuning (every query sees the whole prefix) need. torch's `is_causal=True`
  is aligned to the start instead, so for Tk != Tq we build the mask ourselves.
- A query that may see no key at all (a fully padded row) gets a zero output, never NaN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.kernels.reference import attention_reference, attn_mask_problem, key_padding_mask_problem, visible_keys
from minilm.nn.config import ATTENTION_BACKENDS


def attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
              attn_mask: Tensor | None = None, backend: str = "auto", dropout_p: float = 0.0) -> Tensor:
    """Multi-head attention softmax(q k^T / sqrt(D) + masks) v over (B, H, T, D) tensors.

    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D) with Hkv dividing H (Hkv < H: grouped-query
    attention, query head h reads key/value head h // (H / Hkv)).
    key_padding_mask: (B, Tk), bool (True = a real key) or float (added to the scores:
    0 keeps, -inf drops).
    attn_mask: (..., Tq, Tk) bool, broadcast to (B, H, Tq, Tk): True = the query may see the key.
    causal: query i may see key j only if j <= i + Tk - Tq (aligned to the end).
    dropout_p: dropout on the attention probabilities (pass 0.0 at evaluation).
    Returns (B, H, Tq, D); rows with no visible key are zero.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend={backend!r} is invalid: expected one of {ATTENTION_BACKENDS}")
    if (q.dim() != 4 or k.shape != v.shape or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]
            or k.shape[1] == 0 or q.shape[1] % k.shape[1]):
        raise ValueError(f"attention expects q (B, H, Tq, D) and k, v (B, Hkv, Tk, D) with Hkv dividing H; "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if key_padding_mask is not None:
        problem = key_padding_mask_problem(key_padding_mask, k.shape[0], k.shape[2], k.device)
        if problem:
            raise ValueError(f"attention: {problem}")
    if attn_mask is not None:
        problem = attn_mask_problem(attn_mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device)
        if problem:
            raise ValueError(f"attention: {problem}")
    masks = dict(causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask, dropout_p=dropout_p)
    if backend == "auto":
        backend = "triton" if _triton_supports(q, k, v, **masks) else "sdpa"
        backend = "reference" if backend == "sdpa" and dropout_p > 0 and q.device.type == "cpu" else backend
    if backend == "reference":
        return attention_reference(q, k, v, **masks)
    if backend == "sdpa":
        return sdpa_attention(q, k, v, **masks)
    return triton_attention(q, k, v, **masks)


def model_padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """A model's `attention_mask` (B, T) as `attention`'s key_padding_mask: the one meaning masks have in minilm.

    bool: True keeps a token. Integer (what tokenizers and minilm's batches give): nonzero keeps,
    0 pads. Float: added to the scores (0 keeps, -inf drops, other values are a bias). A float
    mask of nothing but 0s and 1s is refused: read as a keep mask (1 = real, as Hugging Face
    models take it) it means the opposite of what it means here.
    """
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return attention_mask
    if not attention_mask.is_floating_point():
        return attention_mask != 0
    if ((attention_mask == 0) | (attention_mask == 1)).all() and (attention_mask == 1).any():
        raise ValueError("attention_mask is a float tensor of 0s and 1s: a float mask is added to the scores "
                         "(0 keeps a token, -inf drops it), so its 1s would not mean 'real token'; for a keep mask "
                         "pass attention_mask.bool() (or integers)")
    return attention_mask


def kept(key_padding_mask: Tensor) -> Tensor:
    """Which tokens a key padding mask keeps: bool (B, T), True = a real token (a float mask keeps all but -inf)."""
    return key_padding_mask if key_padding_mask.dtype == torch.bool else ~torch.isneginf(key_padding_mask)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
                   key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                   dropout_p: float = 0.0) -> Tensor:
    """torch's fused attention, with our end-aligned causal mask and zero rows for queries that see nothing."""
    tq, tk = q.shape[-2], k.shape[-2]
    gqa = {"enable_gqa": True} if k.shape[1] != q.shape[1] else {}  # kv heads read in place, not repeated
    if key_padding_mask is None and attn_mask is None and (not causal or tq == tk):
        # No explicit mask lets torch choose its fastest kernel; for Tq == Tk both alignments agree.
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout_p, **gqa)
    allowed = visible_keys(tq, tk, causal=causal, key_padding_mask=key_padding_mask, device=q.device,
                           attn_mask=attn_mask)  # (B or 1, H or 1, Tq, Tk)
    blind = ~allowed.any(dim=-1, keepdim=True)  # (B or 1, H or 1, Tq, 1): queries that see no key
    # Fused kernels may return NaN for such rows; let them see every key, then zero their output.
    if key_padding_mask is None or key_padding_mask.dtype == torch.bool:
        mask = allowed | blind  # (B or 1, H or 1, Tq, Tk) bool
    else:  # additive: torch adds a float attn_mask to the scores, as we do; -inf where hidden
        bias = key_padding_mask[:, None, None, :].to(q.dtype)  # (B, 1, 1, Tk)
        mask = torch.where(allowed, bias, float("-inf")).masked_fill(blind, 0.0)  # (B, H or 1, Tq, Tk)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, **gqa)  # (B, H, Tq, D)
    return out.masked_fill(blind, 0.0)


def _flash():
    """(flash_attention, supports) from the course's Triton kernels, or None where they cannot be imported."""
    try:
        from minilm.kernels.flash_kernel import flash_attention, supports
    except ImportError:
        return None
    return flash_attention, supports


def _triton_supports(q, k, v, causal, key_padding_mask, attn_mask, dropout_p) -> bool:
    if not q.is_cuda or dropout_p > 0:
        return False
    kernel = _flash()
    return kernel is not None and kernel[1](q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                                            attn_mask=attn_mask)[0]


def triton_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
                     key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                     dropout_p: float = 0.0) -> Tensor:
    """FlashAttention-2 in Triton (`minilm.kernels.flash_attention`); no dropout, so training uses sdpa via `auto`."""
    kernel = _flash()
    if kernel is None:
        raise RuntimeError("attention backend='triton' is unavailable: minilm.kernels.flash_attention (and Triton) "
                           "could not be imported; use backend='sdpa' or 'auto'")
    if dropout_p > 0:
        raise ValueError(f"attention backend='triton' does not do attention dropout (dropout_p={dropout_p}); "
                         "use backend='auto' or 'sdpa', or set attention_dropout=0")
    flash_attention, supports = kernel
    ok, reason = supports(q, k, v, causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
    if not ok:
        raise ValueError(f"attention backend='triton' does not support this case: {reason}")
    return flash_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
