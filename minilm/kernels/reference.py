"""Attention in plain PyTorch: the ground truth every attention in the course is tested against.

    attention_reference(q, k, v, causal=..., key_padding_mask=..., attn_mask=..., sm_scale=..., dropout_p=...)

What this file teaches
- Attention is four lines: scores = q k^T / sqrt(D), mask, softmax over the keys, a
  weighted sum of the values. `attention_weights` is the first three, `attention_reference`
  adds the fourth. It materialises the (Tq, Tk) table per head, which is exactly what flash
  attention (minilm/kernels/flash_kernel.py) avoids.

Design choices
- One home. `minilm.nn.attention(backend="reference")` calls this function, and
  `minilm.kernels.flash_attention`'s tests, `minilm.kernels.bench` (the eager baseline), lesson 03 and
  lesson 11 use it. It lives in `kernels/` because the kernels must stay importable without
  minilm; it imports only torch, so minilm can use it on a machine without Triton.
- Masks, one meaning everywhere (`minilm.nn.attention`, `minilm.kernels.flash_attention`,
  `minilm.kernels.softmax`): a *bool* mask keeps a key where it is True (torch SDPA's convention);
  a *float* mask is *added* to the scores (0 = keep, -inf = drop, anything else is a bias).
  Any other dtype is refused (`key_padding_mask_problem`). A key is hidden when the causal
  rule, a False or a -inf says so.
- Two masks beside the causal rule: `key_padding_mask` (B, Tk), one flag or bias per key
  (padding), and `attn_mask` (..., Tq, Tk), bool, any pattern of which query sees which key
  (document masking in packed rows, a prefix-LM), broadcast over batch and heads. A key is
  visible when every mask given lets it through.
- Grouped-query attention: k and v may have fewer heads than q (Hkv dividing H; 1 is
  multi-query attention). Query head h reads key/value head h // (H / Hkv). Here the shared
  heads are repeated (`repeat_kv`), the plainest statement of the rule; the SDPA and Triton
  backends read them in place.
- Causal masking with more keys than queries (Tk > Tq) is aligned to the *end*: query i
  sees keys j <= i + (Tk - Tq), what a KV cache and prefix tuning need.
- A query that sees no key at all (every key hidden) outputs zeros, never NaN; a NaN in the
  inputs still comes out as NaN.
- Computed in the inputs' dtype: pass float64 for a ground truth.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["attention_reference", "attention_weights", "visible_keys", "key_padding_mask_problem", "attn_mask_problem",
           "repeat_kv"]


def key_padding_mask_problem(mask, batch: int, keys: int, device) -> str:
    """Why `mask` is not a valid key padding mask for (batch, keys) on `device`; "" when it is."""
    if not isinstance(mask, torch.Tensor):
        return f"key_padding_mask must be a torch.Tensor, got {type(mask).__name__}"
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        return (f"key_padding_mask dtype {mask.dtype} is not accepted: use torch.bool (True = a real key) or a "
                f"float dtype (added to the scores: 0 keeps a key, -inf drops it); for a 0/1 mask pass mask.bool()")
    if tuple(mask.shape) != (batch, keys):
        return f"key_padding_mask must be (batch, Tk) = {(batch, keys)}, got {tuple(mask.shape)}"
    if mask.device != torch.device(device):
        return f"key_padding_mask is on {mask.device}, the keys on {device}"
    return ""


def attn_mask_problem(mask, batch: int, heads: int, queries: int, keys: int, device) -> str:
    """Why `mask` is not a valid attention mask for (batch, heads, queries, keys); "" when it is."""
    if not isinstance(mask, torch.Tensor):
        return f"attn_mask must be a torch.Tensor, got {type(mask).__name__}"
    if mask.dtype != torch.bool:
        return (f"attn_mask dtype {mask.dtype} is not accepted: use torch.bool (True = the query may see the key); "
                f"a per-key additive bias goes in key_padding_mask")
    want = (batch, heads, queries, keys)
    lead = tuple(mask.shape[:-2])[::-1]  # broadcast from the right, as torch does: (..., B, H)
    if not 2 <= mask.dim() <= 4 or tuple(mask.shape[-2:]) != (queries, keys) or any(
            n not in (1, w) for n, w in zip(lead, (heads, batch))):
        return (f"attn_mask of shape {tuple(mask.shape)} does not broadcast to (B, H, Tq, Tk) = {want}: "
                f"give (Tq, Tk) or (B or 1, H or 1, Tq, Tk) (a mask per row is mask[:, None])")
    if mask.device != torch.device(device):
        return f"attn_mask is on {mask.device}, the keys on {device}"
    return ""


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Grouped-query attention's shared heads, repeated: x (B, Hkv, T, D) -> (B, Hkv * n_rep, T, D).

    Head h of the result is head h // n_rep of x: each key/value head serves n_rep consecutive
    query heads. n_rep = 1 returns x itself.
    """
    if n_rep == 1:
        return x
    # BEGIN SOLUTION modern
    B, H_kv, T, D = x.shape
    return x[:, :, None].expand(B, H_kv, n_rep, T, D).reshape(B, H_kv * n_rep, T, D)  # a copy, (B, H, T, D)
    # END SOLUTION modern


def visible_keys(tq: int, tk: int, *, causal: bool, key_padding_mask: Tensor | None, device,
                 attn_mask: Tensor | None = None) -> Tensor | None:
    """Which keys each query may see: bool (B or 1, H or 1, Tq, Tk), True = visible; None = all of them.

    key_padding_mask (B, Tk): bool (True = visible) or float (visible unless -inf).
    attn_mask (..., Tq, Tk): bool, True = visible, broadcast to (B, H, Tq, Tk) from the right, as torch does.
    """
    allowed = None
    if causal:
        i = torch.arange(tq, device=device)[:, None]  # (Tq, 1)
        j = torch.arange(tk, device=device)[None, :]  # (1, Tk)
        allowed = (j <= i + (tk - tq))[None, None]  # (1, 1, Tq, Tk), aligned to the end
    if key_padding_mask is not None:
        keys = key_padding_mask if key_padding_mask.dtype == torch.bool else ~torch.isneginf(key_padding_mask)
        keys = keys[:, None, None, :]  # (B, 1, 1, Tk); a NaN bias counts as visible, so it shows up as NaN
        allowed = keys if allowed is None else allowed & keys  # (B, 1, Tq, Tk)
    if attn_mask is not None:
        pattern = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))  # (B or 1, H or 1, Tq, Tk)
        allowed = pattern if allowed is None else allowed & pattern
    return allowed


def attention_weights(q: Tensor, k: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                      attn_mask: Tensor | None = None, sm_scale: float | None = None) -> Tensor:
    """softmax(q k^T * sm_scale + bias) over the keys, with hidden keys at exactly 0.

    q (B, H, Tq, D), k (B, H or Hkv, Tk, D); key_padding_mask (B, Tk) bool (True = keep) or
    float (added to the scores); attn_mask (..., Tq, Tk) bool (True = keep); sm_scale defaults
    to 1/sqrt(D). Returns (B, H, Tq, Tk); a row whose every key is hidden is all zeros.
    """
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each key head serves a group of query heads
        k = repeat_kv(k, q.shape[1] // k.shape[1])  # (B, H, Tk, D)
    # BEGIN SOLUTION attention
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    scores = (q * sm_scale) @ k.transpose(-2, -1)  # (B, H, Tq, Tk); scaling q is Tk/D times cheaper
    if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
        scores = scores + key_padding_mask[:, None, None, :].to(scores.dtype)  # additive: a bias per key
    allowed = visible_keys(q.shape[-2], k.shape[-2], causal=causal, key_padding_mask=key_padding_mask,
                           device=q.device, attn_mask=attn_mask)
    if allowed is not None:
        # The most negative finite number rather than -inf: a row with no visible key then
        # softmaxes to a harmless uniform row (no NaN), which the product below zeroes.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)  # (B, H, Tq, Tk); hidden keys underflow to exactly 0
    if key_padding_mask is not None or attn_mask is not None or q.shape[-2] > k.shape[-2]:
        probs = probs * allowed  # a mask (or Tq > Tk, causal) can hide a whole row: zero it
    return probs
    # END SOLUTION attention


def attention_reference(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
                        key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                        sm_scale: float | None = None, dropout_p: float = 0.0) -> Tensor:
    """Multi-head attention softmax(q k^T * sm_scale + masks) v, matmul-softmax-matmul.

    q (B, H, Tq, D); k, v (B, H or Hkv, Tk, D) (grouped-query: Hkv divides H); key_padding_mask
    (B, Tk) bool (True = keep) or float (added to the scores); attn_mask (..., Tq, Tk) bool
    (True = keep); causal: query i sees key j iff j <= i + Tk - Tq. dropout_p: dropout on the
    attention probabilities. Returns (B, H, Tq, D); a query that sees no key outputs zeros.
    """
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each key/value head serves a group of query heads
        k, v = repeat_kv(k, q.shape[1] // k.shape[1]), repeat_kv(v, q.shape[1] // k.shape[1])  # (B, H, Tk, D)
    # BEGIN SOLUTION attention
    probs = attention_weights(q, k, causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                              sm_scale=sm_scale)
    probs = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs  # (B, H, Tq, Tk)
    return probs @ v  # (B, H, Tq, D)
    # END SOLUTION attention
