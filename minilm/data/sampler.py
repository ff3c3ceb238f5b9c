"""The one rule behind every batch source: which rows make the batch of a step, on which rank.

    sampler = RowSampler(n_rows, batch_size, seed)
    rows = sampler.indices(step)                    # the global batch of `step`, (B,)
    mine = sampler.indices(step, rank, world_size)  # this rank's contiguous share, (B / W,)

The rule, stated once (pretraining rows, labelled sentences and a lesson's cloze prompts all
follow it through this module):
- The global batch of a step is a pure function of (seed, step): rows are drawn epoch after
  epoch from seeded permutations, every row once per epoch, and a batch may straddle two
  epochs, so no row is dropped and any batch size fits any data size. A resume needs no
  data-loader state.
- Rank r of W keeps the r-th contiguous W-th of that global batch, so the global batch is the
  same for any number of ranks (what makes two processes train like one); the batch size must
  divide by W.
- Every other random choice a source makes (masks, held-out masks) draws from a generator
  seeded with `mix(seed, stream, step)`, one stream number per use, so the streams never
  collide with each other or with the row order.
"""
from __future__ import annotations

import torch

# Stream numbers for `mix`: one per use of randomness in a batch source.
ROWS, MASKS, EVAL_MASKS, WINDOWS = 1, 2, 3, 4


def mix(seed: int, *values: int) -> int:
    """A 63-bit seed from a tuple of integers (splitmix-style), so (seed, stream, step) streams never collide."""
    x = seed & 0xFFFFFFFFFFFFFFFF
    for v in values:
        x = (x ^ (v + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def shard(batch: dict, rank: int, world_size: int) -> dict:
    """Rank `rank`'s contiguous share of a global batch (every tensor cut the same way along dim 0)."""
    size = next(iter(batch.values())).shape[0]
    if size % world_size:
        raise ValueError(f"--batch-size {size} is not divisible by the world size {world_size}")
    per = size // world_size
    return {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}


class RowSampler:
    """Which rows make the global batch of a step: epoch after epoch of seeded permutations."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        if n_rows < 1:
            raise ValueError("no rows to draw batches from: use more data (or, for a corpus, a smaller --seq-len)")
        self.n_rows, self.batch_size, self.seed, self.device = n_rows, batch_size, seed, torch.device(device)
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator(device="cpu").manual_seed(mix(self.seed, ROWS, epoch))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n_rows, generator=g).to(self.device)  # (N,)
        return self._perms[epoch]

    def indices(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """Row indices of the global batch of `step` (B,), or of this rank's share of it (B / W,), on the device."""
        start = step * self.batch_size
        first, last = start // self.n_rows, (start + self.batch_size - 1) // self.n_rows
        parts = []
        for epoch in range(first, last + 1):
            lo = max(start, epoch * self.n_rows) - epoch * self.n_rows
            hi = min(start + self.batch_size, (epoch + 1) * self.n_rows) - epoch * self.n_rows
            parts.append(self._perm(epoch)[lo:hi])
        rows = torch.cat(parts)  # (B,)
        return rows if world_size == 1 else shard({"rows": rows}, rank, world_size)["rows"]
