"""What a training loop keeps: the `Sink` the `Trainer` hands its records and weights to.

The Trainer runs steps, logs, evaluates and selects; the sink decides what is kept and where.
This base keeps nothing (a run in memory, e.g. a lesson's few steps). `run_folder.RunFolder`
writes a run folder (metrics.jsonl, checkpoints, best/, final/, curves.png); fine-tuning keeps
its best epoch's weights in memory (`finetuning.BestInMemory`).

Design choices:
- The trainer calls a sink on rank 0 only (except the two that resume, which every rank needs), so a
  sink never asks which rank it is on.
- `metadata` is what a sink records with every checkpoint (the command, the recipe's
  `settings`); a resume compares the saved `settings` with these, so a run is never continued
  under other settings.
"""
from __future__ import annotations

import torch


class Sink:
    """Keeps nothing. Subclasses override what they keep."""

    metadata: dict = {}

    def log(self, record: dict) -> None:
        """One metrics record (a log point or an evaluation)."""

    def rewind(self, step: int) -> None:
        """Forget the records after `step` (a resume from the checkpoint of `step`)."""

    def checkpoint(self, model: torch.nn.Module, step: int, state: dict) -> None:
        """A resumable point: the weights and the trainer's `state` (optimiser, RNG, step)."""

    def resume_point(self) -> tuple[str, dict, dict]:
        """The latest resumable point -> (where, the trainer's state, the metadata saved with it)."""
        raise ValueError("--resume: this run keeps no checkpoints to resume from")

    def load_weights(self, where: str, model: torch.nn.Module) -> None:
        """Load the weights of the resumable point `where` into `model`."""
        raise ValueError(f"--resume: this run keeps no weights to load ({where})")

    def best(self, model: torch.nn.Module, step: int, metrics: dict) -> None:
        """A new best evaluation (by the trainer's `select`)."""

    def final(self, model: torch.nn.Module, step: int) -> None:
        """The weights at the end of a run that was not interrupted."""

    def close(self) -> None:
        """The run is over (finished or interrupted)."""
