"""Choosing the next token from a causal LM's logits: greedy, temperature, top-k and top-p.

Design choices:
- One pure function over a (B, V) logits tensor, so it is tested without a model.
- temperature == 0 means greedy (argmax); no random numbers are drawn then.
- top-k and top-p both work by setting the logits of excluded tokens to -inf before the
  softmax, so they compose (k first, then p) and the kept probabilities renormalise.
- A `torch.Generator` makes sampling reproducible.
- `generate_text` is text in, texts out (the `minilm generate` command prints it).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def check_sampling(*, temperature: float, top_k: int | None, top_p: float | None, cli: bool = False) -> None:
    """Refuse sampling settings that cannot work (NaN, infinite, negative, out of range), before any
    model runs; `cli` names them as the command line's flags (`--top-p`)."""
    def name(field: str) -> str:
        return "--" + field.replace("_", "-") if cli else field

    if not (temperature >= 0 and math.isfinite(temperature)):  # NaN fails every comparison
        raise ValueError(f"{name('temperature')}={temperature} is invalid: expected a finite number >= 0 (0 = greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"{name('top_k')}={top_k} is invalid: expected a positive integer")
    if top_p is not None and not 0.0 < top_p <= 1.0:  # NaN included
        raise ValueError(f"{name('top_p')}={top_p} is invalid: expected a probability in (0, 1]")


def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """Pick one token per row of logits (B, V); returns (B,) token ids.

    temperature: 0 = greedy; < 1 sharpens, > 1 flattens the distribution.
    top_k: keep only the k most likely tokens. top_p: keep the smallest set of most likely
    tokens whose total probability reaches p (nucleus sampling; the top token is always kept).
    """
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, dim=-1)  # (B, V)
        # Drop a token when the tokens strictly before it already reach top_p.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p  # (B, V); the first token is never dropped
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


def generate_text(model, tokenizer, prompt: str, *, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, num_samples: int = 1,
                  seed: int = 0) -> list[str]:
    """`num_samples` continuations of `prompt` (the prompt itself not included)."""
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens={max_new_tokens}: expected a positive integer")
    if num_samples < 1:
        raise ValueError(f"--num-samples={num_samples}: expected a positive integer")
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt) if prompt else [tokenizer.eot_id]
    prompt_ids = torch.tensor([ids] * num_samples, device=device)  # (S, T)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         generator=generator)  # (S, T + max_new_tokens)
    return [tokenizer.decode(row[len(ids):].tolist()) for row in out]
