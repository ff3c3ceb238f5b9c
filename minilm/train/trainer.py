"""The training loop: one `Trainer` for pretraining and fine-tuning, on a CPU, a GPU or several.

Design choices:
- The trainer knows nothing about the model's insides. It calls `model(**batch)`, reads
  `output.loss` to step, and `output.logits` / `output.labels` (-100 = ignore) for accuracy.
- The data is a *batch source*: `train_data.batch(step, rank, world_size) -> dict` returns this
  rank's share of the global batch of `step`, as a pure function of (seed, step). Resuming is
  then exact without saving any data-loader state, and sharding needs no sampler.
- The optimisation pieces live in `optim.py`: AdamW's parameter groups, the learning rate as a
  pure function of the step (no scheduler state to save), and the accumulation weights (4 x 8
  gives exactly the gradient of 1 x 32, and N ranks that of one rank with the same global
  batch). Micro-steps that do not step run under `no_sync`, so gradients are all-reduced once
  per optimiser step. `torch.optim.AdamW` steps (fused on CUDA).
- `fit` is the loop (train step, log, evaluate, select); what is kept, and where, is the
  *sink*'s (`sink.py`): a `RunFolder` writes metrics.jsonl, checkpoints, best/, final/ and
  curves.png; fine-tuning keeps its best epoch in memory; the base `Sink` keeps nothing. The
  other collaborators are small: `TimeBudget` fixes the number of steps, `RunLog` keeps the
  bar and the console, `mfu` turns tokens/s into a share of the GPU. The config never changes
  during `fit`; what a caller customises is passed in (`evaluate`, `select`, `sink`), not
  written as a subclass.
- bf16 autocast on CUDA (fp16 with a gradient scaler as an option), fp32 on the CPU.
- No host sync per step on the GPU: losses are accumulated on the device and read at log
  points only. A non-finite loss is recorded on the device with its step; the run stops at the
  next log point, naming that step, before any checkpoint is written, so the last good
  checkpoint stays intact. A loss that diverges (`diverged`: far above the first step's, the
  untrained model's, at several log points in a row, or at the last one) stops the run the
  same way: a loss of 80,000 where training started at 6 is no model to save as final/.
- Distributed: run under `torchrun` and the trainer joins the process group (gloo on the CPU,
  NCCL on GPUs) and wraps the model in DistributedDataParallel; only rank 0 logs and writes.
  For models larger than one GPU, FSDP is the path: replace the `DistributedDataParallel(...)`
  line in `_wrap` by `torch.distributed.fsdp.fully_shard(model)` (per block, then the root),
  and gather the weights for `save_checkpoint` with
  `torch.distributed.checkpoint.state_dict.get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))`;
  the loss weighting, no_sync (FSDP2's `set_requires_gradient_sync`) and batch sharding stay as they are.
- A time budget (`time_budget_s`, with `steps=None`) fixes the number of steps once the speed
  is known: the steps of the warmup are timed (the schedule does not depend on the total until
  warmup ends) and the decay is fitted into the remaining time, so a "4-minute run" anneals.
- Resume is one method: it restores weights, optimiser, RNG, step and total from the sink's
  latest checkpoint, and refuses one whose run was shaped by other settings.
- Ctrl-C sets a flag; the current step finishes, a checkpoint is saved and `fit` returns.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from minilm.train.mfu import flops_per_token, mfu, peak_flops
from minilm.train.optim import (SCHEDULES, clip_grad_norm, learning_rate, micro_batch_weights, micro_batches,
                                parameter_groups)
from minilm.train.run_folder import RunFolder
from minilm.train.sink import Sink

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# The TrainConfig fields that shape a run: a resume that changes one of them is refused.
RUN_SHAPING = ("lr", "min_lr_ratio", "warmup_steps", "schedule", "weight_decay", "beta1", "beta2", "eps", "grad_clip",
               "accumulation", "seed", "time_budget_s")


@dataclass
class TrainConfig:
    steps: int | None = 1000  # optimiser steps; None with a time budget (it fixes them after the warmup)
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    warmup_steps: int = 100
    schedule: str = "cosine"  # decay after warmup: "cosine", "linear" or "constant"
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    accumulation: int = 1  # micro-batches per optimiser step (the rank's batch is split)
    device: str = "auto"  # "auto" = cuda if available, else cpu
    precision: str = "auto"  # "auto" = bf16 on cuda, fp32 on cpu
    compile: bool = False  # torch.compile the model
    eval_every: int = 0  # steps between evaluations (0 = only at the end)
    log_every: int = 10  # steps between log lines (and host syncs)
    save_every: int = 0  # steps between resumable checkpoints (0 = only at the end)
    keep_last: int = 2  # resumable checkpoints kept (by the RunFolder made from out_dir)
    seed: int = 0
    resume: bool = False  # continue from the sink's latest checkpoint
    overwrite: bool = False  # replace a run already in out_dir (else a folder holding a run is refused)
    time_budget_s: float = 0.0  # > 0 (with steps=None): fix the steps after timing the warmup to last this long
    progress: bool = True  # show the tqdm bar

    def __post_init__(self):
        def need(ok: bool, field: str, accepted: str):
            if not ok:
                raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r} is invalid: expected {accepted}")

        for field in ("accumulation", "log_every"):
            need(isinstance(getattr(self, field), int) and getattr(self, field) >= 1, field, "an integer >= 1")
        if self.time_budget_s:
            need(self.steps is None, "steps", "None with a time budget (the budget fixes the number of steps)")
        else:
            need(isinstance(self.steps, int) and self.steps >= 1, "steps", "an integer >= 1 (or a time budget)")
        for field in ("warmup_steps", "eval_every", "save_every", "seed"):
            need(isinstance(getattr(self, field), int) and getattr(self, field) >= 0, field, "an integer >= 0")
        need(isinstance(self.keep_last, int) and self.keep_last >= 1, "keep_last", "an integer >= 1")
        need(self.time_budget_s >= 0, "time_budget_s", "seconds >= 0 (0 = no budget)")
        need(not self.time_budget_s or self.warmup_steps >= 10, "warmup_steps",
             "an integer >= 10 with a time budget (the warmup steps are timed to fix the number of steps)")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "a positive float")
        need(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "a float in [0, 1]")
        need(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}")
        need(self.weight_decay >= 0, "weight_decay", "a float >= 0")
        need(0.0 <= self.beta1 < 1.0, "beta1", "a float in [0, 1)")
        need(0.0 <= self.beta2 < 1.0, "beta2", "a float in [0, 1)")
        need(self.eps > 0, "eps", "a positive float")
        need(self.grad_clip >= 0, "grad_clip", "a float >= 0 (0 = off)")
        need(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        need(self.device == "auto" or re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device) is not None, "device",
             "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def resolve_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a device that exists here, else a ValueError naming --device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if re.fullmatch(r"cpu|cuda(:\d+)?|mps", name) is None:
        raise ValueError(f"--device={name!r} is invalid: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device={name!r} but no CUDA device is available: use 'cpu' or 'auto'")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"TrainConfig.precision='fp16' needs a CUDA device (device={device}); use 'fp32' or 'bf16'")
    return name


def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the torchrun process group if there is one -> (rank, world_size, this rank's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite, or diverged; training stopped."""


# Divergence: a logged loss above DIVERGED_FACTOR x the first step's loss (+1, for losses near 0) at
# DIVERGED_LOGS log points in a row. Healthy runs stay below their first loss after a few steps.
DIVERGED_FACTOR, DIVERGED_LOGS = 4.0, 3


def diverged(losses: list[float], first: float) -> bool:
    """True when the last DIVERGED_LOGS logged losses all lie far above the first step's loss `first`."""
    limit = DIVERGED_FACTOR * first + 1.0
    return len(losses) >= DIVERGED_LOGS and all(loss > limit for loss in losses[-DIVERGED_LOGS:])


@dataclass
class StepResult:
    """What one optimiser step reports (tensors stay on the device: no host sync per step)."""
    loss: torch.Tensor  # global mean loss over the labelled tokens of the step
    grad_norm: torch.Tensor  # before clipping
    tokens: int  # tokens this rank processed
    seq_len: int


class TimeBudget:
    """Fix the number of steps so the run lasts about `seconds`, from the measured speed of the warmup.

    The schedule does not depend on the total until warmup ends, so the steps from `probe_step`
    to the end of warmup are timed first (the first few are skipped: they pay for allocation).
    """

    def __init__(self, seconds: float, start_step: int, warmup_steps: int, sync):
        self.seconds, self.end_step, self.sync = seconds, warmup_steps, sync
        self.start = time.perf_counter()
        self.probe_step = start_step + min(5, max(1, (warmup_steps - start_step) // 2))
        self._probe: tuple[int, float] | None = None

    def observe(self, step: int) -> int | None:
        """Call after each step (`step` steps done); returns the total number of steps once known."""
        if step not in (self.probe_step, self.end_step):
            return None
        self.sync()
        now = time.perf_counter()
        if self._probe is None:
            self._probe = (step, now)
            return None
        first, t_first = self._probe
        per_step = (now - t_first) / max(1, step - first)
        total = step + max(1, int((self.seconds - (now - self.start)) / per_step))
        print(f"time budget {self.seconds:.0f}s at {per_step * 1e3:.1f} ms/step: training for {total} steps",
              flush=True)
        return total


class RunLog:
    """The progress bar and console lines of a run, its records (to the sink); tokens/s and MFU per log window."""

    def __init__(self, sink: Sink, *, main: bool, progress: bool, total: int | None, initial: int,
                 peak_flops: float | None, world_size: int):
        self.sink = sink
        self.main, self.progress, self.peak, self.world_size = main, progress, peak_flops, world_size
        self.bar = tqdm(total=total, initial=initial, disable=not (progress and main), desc="train",
                        dynamic_ncols=True)
        self.history: list[dict] = []
        self.flops_per_token: float | None = None
        self.new_window()

    def new_window(self) -> None:
        """Start timing a new log window (after a log point, and after an evaluation)."""
        self.t0, self.tokens, self.steps = time.perf_counter(), 0, 0
        self.loss_sum = None

    def add(self, result: StepResult) -> None:
        loss = torch.nan_to_num(result.loss.detach(), nan=0.0, posinf=0.0, neginf=0.0)
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.tokens += result.tokens * self.world_size
        self.steps += 1
        self.bar.update(1)

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def train_point(self, step: int, lr: float, grad_norm: torch.Tensor, total: int | None) -> dict:
        elapsed = time.perf_counter() - self.t0
        loss = self.loss_sum.item() / self.steps
        record = {"step": step, "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                  "tokens_per_s": self.tokens / elapsed, "time_s": elapsed}
        postfix = {"loss": f"{loss:.3f}", "lr": f"{lr:.2e}", "tok/s": f"{record['tokens_per_s']:,.0f}"}
        if self.flops_per_token and self.peak:
            record["mfu"] = mfu(record["tokens_per_s"], self.flops_per_token, self.peak, self.world_size)
            postfix["mfu"] = f"{100 * record['mfu']:.1f}%"
        self.bar.set_postfix(postfix)
        if not self.progress and self.main:
            print(f"step {step}/{total or '?'}: " + ", ".join(f"{k} {v}" for k, v in postfix.items()), flush=True)
        self.write(record)
        self.new_window()
        return record

    def eval_point(self, step: int, metrics: dict) -> None:
        self.write({"step": step, **metrics})
        if self.main:
            self.bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        self.new_window()

    def write(self, record: dict) -> None:
        self.history.append(record)
        if self.main:
            self.sink.log(record)

    def close(self) -> None:
        self.bar.close()


class Trainer:
    """Trains `model` on `train_data` (a batch source, see the module docstring).

    `fit()` returns a summary dict (steps, final train loss, last eval metrics, out_dir). What
    is kept goes to the sink: `out_dir` makes it a `RunFolder` (metrics.jsonl, curves.png,
    resumable checkpoints, best/ and final/, each with `tokenizer` beside it and `metadata` in
    its config.json, so every folder loads with `load_model`); `sink=` passes another (fine-
    tuning's keeps the best epoch in memory); neither keeps nothing.

    For callers that train something other than a language model:
    - `evaluate(trainer) -> dict` computes the held-out metrics from `trainer.model` (in eval
      mode), on `trainer.device`, under `trainer.autocast()` (default: loss, perplexity and
      token accuracy over `eval_data.eval_batches()`).
    - `select=(metric, "min" | "max")` names the metric that decides which evaluation is best;
      the sink's `best` keeps it.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, train_data, eval_data=None, out_dir=None, *,
                 tokenizer=None, metadata: dict | None = None, evaluate=None,
                 select: tuple[str, str] = ("eval_loss", "min"), sink: Sink | None = None):
        if select[1] not in ("min", "max"):
            raise ValueError(f"Trainer select={select!r}: the second item must be 'min' or 'max'")
        if sink is not None and (out_dir is not None or tokenizer is not None or metadata is not None):
            raise ValueError("Trainer: pass either sink= or out_dir (with its tokenizer and metadata), not both")
        self.config = config
        self.train_data, self.eval_data = train_data, eval_data
        self._evaluate, self.select = evaluate, select
        self.rank, self.world_size, self.device = setup_distributed(resolve_device(config.device))
        self.precision = resolve_precision(config.precision, self.device)
        if sink is None:
            sink = Sink() if out_dir is None else RunFolder(
                out_dir, tokenizer=tokenizer, metadata=metadata, keep_last=config.keep_last, resume=config.resume,
                overwrite=config.overwrite, main=self.is_main)
        self.sink = sink
        self.out_dir = getattr(sink, "folder", None)
        self.model = model.to(self.device)  # the plain module: saved, evaluated
        self.train_model = self._wrap(self.model)  # what the training step calls
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, config.weight_decay), lr=config.lr,
                                           betas=(config.beta1, config.beta2), eps=config.eps, **fused)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.step = 0
        self.steps = config.steps  # the run's total; None until a time budget fixes it
        self.best_value = math.inf if select[1] == "min" else -math.inf
        self.history: list[dict] = []
        self._stop_requested = False
        self._bad_step = torch.full((), -1, device=self.device, dtype=torch.long)
        self.first_loss: float | None = None  # the untrained model's loss, the yardstick of divergence
        self._logged: list[float] = []

    # ---- setup -------------------------------------------------------------------------------
    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.config.compile:
            model = torch.compile(model)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        """The autocast context of this run's precision (a no-op in fp32): for evaluate hooks."""
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def learning_rate(self, step: int) -> float:
        cfg = self.config
        total = self.steps if self.steps is not None else step + 1  # only warmup runs before a budget fixes it
        return learning_rate(step, peak=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=total,
                             schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio)

    # ---- one optimiser step ------------------------------------------------------------------
    @staticmethod
    def _count(micro: dict) -> torch.Tensor:
        """Labelled tokens of a micro-batch: the weight of its mean loss in the global mean."""
        labels = micro.get("labels")
        if labels is None:
            return torch.tensor(1.0)
        return (labels != -100).sum().to(torch.float32)

    def train_step(self, step: int) -> StepResult:
        """Forward and backward over the micro-batches of `step`, then one optimiser step."""
        cfg = self.config
        batch = {k: v.to(self.device, non_blocking=True) for k, v in self.train_data.batch(
            step, rank=self.rank, world_size=self.world_size).items()}
        micros = micro_batches(batch, cfg.accumulation)
        counts = torch.stack([self._count(m) for m in micros]).to(self.device)  # (accumulation,)
        total = counts.sum()
        if self.world_size > 1:
            total = total.clone()
            dist.all_reduce(total)
        weights = micro_batch_weights(counts, total, self.world_size)  # (accumulation,)
        for g in self.optimizer.param_groups:
            g["lr"] = self.learning_rate(step)
        loss_sum = torch.zeros((), device=self.device)
        for i, micro in enumerate(micros):
            last = i == len(micros) - 1
            # Gradients are all-reduced once per optimiser step, on the last micro-batch.
            sync = contextlib.nullcontext() if last or self.world_size == 1 else self.train_model.no_sync()
            with sync:
                with self.autocast():
                    out = self.train_model(**micro)
                loss = out.loss.float() * weights[i]
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += loss.detach()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip > 0:
            grad_norm = clip_grad_norm(self.model.parameters(), cfg.grad_clip)
        else:
            grad_norm = torch.zeros((), device=self.device)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.world_size > 1:
            dist.all_reduce(loss_sum)
        first = batch["input_ids"] if "input_ids" in batch else next(iter(batch.values()))
        return StepResult(loss_sum / self.world_size, grad_norm, first.numel(), first.shape[1] if first.dim() > 1 else 1)

    def _watch_finite(self, loss: torch.Tensor) -> None:
        """Remember the first non-finite step on the device: no host sync here."""
        self._bad_step = torch.where((self._bad_step < 0) & ~torch.isfinite(loss), self.step, self._bad_step)

    def _check_finite(self) -> None:
        bad = self._bad_step.item()
        if bad >= 0:
            raise NonFiniteLoss(
                f"loss became non-finite at step {bad} (lr {self.learning_rate(bad):.3g}); stopped without saving, "
                f"so the last good checkpoint is left intact. Lower --lr, lengthen the warmup, or train in fp32/bf16.")

    def _diverging(self) -> bool:
        """The last logged loss lies far above the untrained model's: no checkpoint is written meanwhile."""
        return self.first_loss is not None and bool(self._logged) and diverged([self._logged[-1]] * DIVERGED_LOGS,
                                                                               self.first_loss)

    def _check_diverging(self, loss: float, last: bool) -> None:
        """Stop like a non-finite loss when the logged losses have diverged (at the last log: one is enough)."""
        self._logged.append(loss)
        first = self.first_loss
        if first is None:
            return
        if diverged(self._logged, first) or (last and self._diverging()):
            raise NonFiniteLoss(
                f"the loss diverged: {loss:.4g} at step {self.step}, where the untrained model's was {first:.4g} "
                f"(lr {self.learning_rate(self.step - 1):.3g}); stopped without saving, so the last good checkpoint "
                f"is left intact. Lower --lr or lengthen the warmup.")

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """The held-out metrics: the `evaluate` hook's, or loss, perplexity and token accuracy."""
        self.model.eval()
        try:
            return self._evaluate(self) if self._evaluate else self.token_metrics()
        finally:
            self.model.train()

    @torch.no_grad()
    def token_metrics(self) -> dict:
        """Mean loss, perplexity and token accuracy over `eval_data.eval_batches()`."""
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.float64)
        count = torch.zeros((), device=self.device, dtype=torch.float64)
        for batch in self.eval_data.eval_batches():
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self.autocast():
                out = self.model(**batch)
            valid = out.labels != -100
            n = valid.sum()
            loss_sum += out.loss.double() * n
            correct += ((out.logits.argmax(-1) == out.labels) & valid).sum()
            count += n
        n = max(count.item(), 1.0)
        loss = loss_sum.item() / n
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_accuracy": correct.item() / n,
                "eval_tokens": int(count.item())}

    def _keep_if_best(self, metrics: dict) -> None:
        name, mode = self.select
        value = metrics[name]
        if value < self.best_value if mode == "min" else value > self.best_value:
            self.best_value = value
            if self.is_main:
                self.sink.best(self.model, self.step, metrics)

    # ---- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {
            "step": self.step,
            "total_steps": self.steps,
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "best_value": self.best_value,
            "first_loss": self.first_loss,
            "train_config": dataclasses.asdict(self.config),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.scaler:
            state["scaler"] = self.scaler.state_dict()
        return state

    def save_checkpoint(self) -> None:
        """Hand the sink a resumable point: the weights and the trainer's state (rank 0 only)."""
        if self.is_main:
            self.sink.checkpoint(self.model, self.step, self._state())

    def resume(self) -> None:
        """Continue from the sink's latest checkpoint: weights, optimiser, RNG, step, total, best.

        Refuses a checkpoint whose run was shaped differently (learning rate, schedule, seed, the
        metadata's `settings` such as batch size and sequence length): the result would be
        neither the old run nor a new one.
        """
        path, state, saved = self.sink.resume_point()
        self._check_same_run(path, state, saved.get("settings", {}))
        self.sink.load_weights(path, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.steps = state["total_steps"] if state["total_steps"] is not None else self.steps
        self.best_value = float(state["best_value"])
        self.first_loss = state.get("first_loss")
        if self.is_main:
            self.sink.rewind(self.step)
            print(f"resumed from {shlex.quote(str(path))} at step {self.step}")

    def _check_same_run(self, path: str, state: dict, old: dict) -> None:
        saved, now = state["train_config"], dataclasses.asdict(self.config)
        diff = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in RUN_SHAPING if saved.get(k) != now[k]]
        if self.config.steps is not None and state["total_steps"] not in (None, self.config.steps):
            diff.append(f"steps: checkpoint {state['total_steps']!r}, now {self.config.steps!r}")
        new = self.sink.metadata.get("settings", {})
        diff += [f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in sorted(set(old) | set(new))
                 if old.get(k) != new.get(k)]
        if diff:
            raise ValueError(f"--resume: {path} comes from a run with other settings ({'; '.join(diff)}); resume with "
                             f"the same settings, or start a new run with another --out (or --overwrite)")

    # ---- the loop ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _catch_ctrl_c(self):
        """Ctrl-C sets a flag: the step finishes, a checkpoint is written, fit returns."""
        try:
            previous = signal.signal(signal.SIGINT, lambda *_: setattr(self, "_stop_requested", True))
        except ValueError:  # not the main thread: leave Ctrl-C alone
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop_flag(self) -> bool:
        """Ctrl-C on any rank stops every rank at the same step."""
        if self.world_size == 1:
            return self._stop_requested
        flag = torch.tensor([float(self._stop_requested)], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item())

    def fit(self) -> dict:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        log = RunLog(self.sink, main=self.is_main, progress=cfg.progress, total=self.steps, initial=0,
                     peak_flops=peak_flops(self.device), world_size=self.world_size)
        self.history = log.history
        if cfg.resume:
            self.resume()
        if self.steps is not None and self.step > self.steps:
            raise ValueError(f"TrainConfig.steps={self.steps} is below the checkpoint's step {self.step}")
        budget = TimeBudget(cfg.time_budget_s, self.step, cfg.warmup_steps, self._sync) if self.steps is None else None
        log.bar.n = self.step
        self.model.train()
        last_eval, interrupted = {}, False
        try:
            with self._catch_ctrl_c():
                while self.steps is None or self.step < self.steps:
                    result = self.train_step(self.step)
                    if log.flops_per_token is None and log.peak:
                        log.flops_per_token = flops_per_token(self.model, result.seq_len)
                    self._watch_finite(result.loss)
                    if self.first_loss is None:
                        self.first_loss = result.loss.item()  # one host sync, once
                    log.add(result)
                    self.step += 1
                    if budget is not None and (total := budget.observe(self.step)) is not None:
                        self.steps = total
                        log.set_total(total)
                    done = self.step == self.steps
                    interrupted = self._stop_requested if self.world_size == 1 else False
                    if self.step % cfg.log_every == 0 or done or interrupted:
                        self._check_finite()
                        record = log.train_point(self.step, self.learning_rate(self.step - 1), result.grad_norm,
                                                 self.steps)
                        self._check_diverging(record["loss"], done)
                        interrupted = self._stop_flag()
                    if self.eval_data is not None and (done or cfg.eval_every and self.step % cfg.eval_every == 0):
                        self._check_finite()
                        last_eval = self.evaluate()
                        log.eval_point(self.step, last_eval)
                        if not self._diverging():  # a diverging model is never kept, not even as best/
                            self._keep_if_best(last_eval)
                    kept = False
                    if (cfg.save_every and self.step % cfg.save_every == 0) or done or interrupted:
                        self._check_finite()
                        if not self._diverging():  # nor is a checkpoint of it written
                            self.save_checkpoint()
                            kept = True
                    if interrupted:
                        if self.is_main:
                            log.bar.write(f"interrupted: saved a checkpoint at step {self.step}; continue with --resume"
                                          if kept else f"interrupted at step {self.step}: the loss is diverging, no "
                                                       f"checkpoint saved")
                        break
        finally:
            log.close()
        if self.is_main:
            if not interrupted:
                self.sink.final(self.model, self.step)
            self.sink.close()
        last_loss = next((r["loss"] for r in reversed(log.history) if "loss" in r), math.nan)
        return {"step": self.step, "loss": last_loss, **last_eval, "interrupted": interrupted,
                "out_dir": str(self.out_dir) if self.out_dir else None}

