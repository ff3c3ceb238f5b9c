"""The training loop: one `Trainer` for pretraining and fine-tuning, on a CPU, a GPU or several.

Design choices:
- The trainer knows nothing about the model's insides. It calls `model(**batch)`, reads
  `output.loss` to step, and `output.logits` / `output.labels` (-100 = ignore) for accuracy.
- The data is a *batch source*: `train_data.batch(step, rank, world_size) -> dict` returns this
  rank's share of the global batch of `step`, as a pure function of (seed, step). Resuming is
  then exact without saving any data-loader state, and sharding needs no sampler.
- Accumulation splits the rank's batch into `accumulation` micro-batches. Each micro-loss is
  weighted by its share of the *global* count of labelled tokens, so 4 x 8 gives exactly the
  gradient of 1 x 32, and N ranks give exactly the gradient of one rank with the same global
  batch (DDP averages over ranks, hence the factor world_size). Micro-steps that do not step
  run under `no_sync`, so gradients are all-reduced once per optimiser step.
- AdamW with weight decay only on matrices: biases, norms and embeddings are not decayed
  (found by module type, not by name). Fused on CUDA.
- The learning rate is a pure function of the step (`learning_rate`), set before each step:
  no scheduler state to save.
- bf16 autocast on CUDA (fp16 with a gradient scaler as an option), fp32 on the CPU.
- No host sync per step on the GPU: losses are accumulated on the device and read at log
  points only. A non-finite loss is recorded on the device with its step; the run stops at the
  next log point, naming that step, before any checkpoint is written, so the last good
  checkpoint stays intact.
- Distributed: run under `torchrun` and the trainer joins the process group (gloo on the CPU,
  NCCL on GPUs) and wraps the model in DistributedDataParallel; only rank 0 logs and writes.
  For models larger than one GPU, FSDP is the path: replace the `DistributedDataParallel(...)`
  line in `_wrap` by `torch.distributed.fsdp.fully_shard(model)` (per block, then the root),
  and gather the weights for `save_checkpoint` with
  `torch.distributed.checkpoint.state_dict.get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))`;
  the loss weighting, no_sync (FSDP2's `set_requires_gradient_sync`) and batch sharding stay as they are.
- A time budget (`time_budget_s`) fixes `steps` once the speed is known: the steps of the
  warmup are timed (the schedule does not depend on `steps` until warmup ends) and the
  decay is fitted into the remaining time, so a "4-minute run" anneals properly.
- Ctrl-C sets a flag; the current step finishes, a checkpoint is saved and `fit` returns.
"""
from __future__ import annotations

import contextlib
import inspect
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from minilm import checkpoint as ckpt

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Dense bf16/fp16 tensor-core peak FLOP/s by device-name substring, for MFU.
PEAK_FLOPS = {
    "H200": 989e12, "H100": 989e12, "H800": 989e12, "GH200": 989e12, "B200": 2250e12,
    "A100": 312e12, "A800": 312e12, "A10G": 125e12, "L40S": 362e12, "L4": 121e12,
    "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12,
}


@dataclass
class TrainConfig:
    steps: int = 1000  # optimiser steps
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
    keep_last: int = 2  # resumable checkpoints kept
    seed: int = 0
    resume: bool = False  # continue from the latest checkpoint in out_dir
    time_budget_s: float = 0.0  # > 0: set `steps` after timing the warmup so the run lasts about this long
    progress: bool = True  # show the tqdm bar

    def __post_init__(self):
        def need(ok: bool, field: str, accepted: str):
            if not ok:
                raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r} is invalid: expected {accepted}")

        for field in ("steps", "accumulation", "log_every"):
            need(isinstance(getattr(self, field), int) and getattr(self, field) >= 1, field, "an integer >= 1")
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


def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate for optimiser step `step` (0-based): linear warmup from lr/warmup to lr
    over `warmup_steps`, then cosine or linear decay to lr * min_lr_ratio at the last step."""
    peak, floor = config.lr, config.lr * config.min_lr_ratio
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return peak
    decay_steps = max(1, config.steps - 1 - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if config.schedule == "cosine" else 1.0 - progress
    return floor + (peak - floor) * shape


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices; none on biases, norms and embeddings.

    Decided by module type (Embedding, any *Norm) and rank (1-D = bias or gain), so the rule
    holds for any model. A tied output matrix is the embedding's parameter: not decayed.
    """
    no_decay = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) or "Norm" in type(module).__name__:
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if id(p) in no_decay or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device={name!r} but no CUDA device is available: use 'cpu' or 'auto'")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"TrainConfig.precision='fp16' needs a CUDA device (device={device}); use 'fp32' or 'bf16'")
    return name


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of a known GPU, else None (no MFU on the CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


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
    """The loss became NaN or infinite; training stopped."""


class Trainer:
    """Trains `model` on `train_data` (a batch source, see the module docstring).

    `fit()` returns a summary dict (steps, final train loss, last eval metrics, tokens/s,
    out_dir). With `out_dir`, it writes `metrics.jsonl`, `curves.png`, resumable checkpoints under
    `checkpoints/step_NNNNNNN/`, the best (lowest eval loss) under `best/` and the final weights
    under `final/`, with `tokenizer` saved beside them so every folder loads with `load_model`.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, train_data, eval_data=None, out_dir=None, *,
                 tokenizer=None, metadata: dict | None = None):
        self.config = config
        self.train_data, self.eval_data = train_data, eval_data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.tokenizer, self.metadata = tokenizer, metadata or {}
        self.rank, self.world_size, self.device = setup_distributed(resolve_device(config.device))
        self.precision = resolve_precision(config.precision, self.device)
        self.model = model.to(self.device)  # the plain module: saved, evaluated
        self.train_model = self._wrap(self.model)  # what the training step calls
        groups = parameter_groups(self.model, config.weight_decay)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                                           **fused)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.step = 0
        self.best_eval_loss = math.inf
        self.history: list[dict] = []
        self._stop_requested = False

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

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _flops_per_token(self, seq_len: int) -> float | None:
        """Training (forward + backward) FLOPs per token from `model.describe()`, for MFU."""
        describe = getattr(self.model, "describe", None)
        if describe is None:
            return None
        takes_len = "seq_len" in inspect.signature(describe).parameters
        info = describe(seq_len=seq_len) if takes_len else describe()
        return float(info["flops_per_token"]) if "flops_per_token" in info else None

    # ---- one optimiser step ------------------------------------------------------------------
    def _micro_batches(self, batch: dict) -> list[dict]:
        n = self.config.accumulation
        size = next(iter(batch.values())).shape[0]
        if size % n:
            raise ValueError(f"TrainConfig.accumulation={n} does not divide this rank's batch of {size} rows")
        return [{k: v[i * size // n:(i + 1) * size // n] for k, v in batch.items()} for i in range(n)]

    @staticmethod
    def _count(micro: dict) -> torch.Tensor:
        """Labelled tokens of a micro-batch: the weight of its mean loss in the global mean."""
        labels = micro.get("labels")
        if labels is None:
            return torch.tensor(1.0)
        return (labels != -100).sum().to(torch.float32)

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Forward/backward over the micro-batches and one optimiser step.

        Returns (global mean loss, gradient norm, tokens this rank processed), tensors on the device.
        """
        cfg = self.config
        batch = {k: v.to(self.device, non_blocking=True) for k, v in self.train_data.batch(
            step, rank=self.rank, world_size=self.world_size).items()}
        micros = self._micro_batches(batch)
        counts = torch.stack([self._count(m) for m in micros]).to(self.device)  # (accumulation,)
        total = counts.sum()
        if self.world_size > 1:
            total = total.clone()
            dist.all_reduce(total)
        # Each micro-loss is a mean over its own tokens; weight it to a mean over the global batch.
        # DDP averages gradients over ranks, so multiply back by world_size.
        weights = counts * self.world_size / total.clamp_min(1)
        lr = learning_rate(step, cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for i, micro in enumerate(micros):
            last = i == len(micros) - 1
            sync = contextlib.nullcontext() if last or self.world_size == 1 else self.train_model.no_sync()
            with sync:
                with self._autocast():
                    out = self.train_model(**micro)
                loss = out.loss.float() * weights[i]
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += loss.detach()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
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
        loss = loss_sum / self.world_size
        first = batch["input_ids"] if "input_ids" in batch else next(iter(batch.values()))
        self._seq_len = first.shape[1] if first.dim() > 1 else 1
        tokens = first.numel()
        return loss, grad_norm, tokens

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean loss, perplexity and token accuracy over `eval_data.eval_batches()`."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.float64)
        count = torch.zeros((), device=self.device, dtype=torch.float64)
        for batch in self.eval_data.eval_batches():
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self._autocast():
                out = self.model(**batch)
            valid = out.labels != -100
            n = valid.sum()
            loss_sum += out.loss.double() * n
            correct += ((out.logits.argmax(-1) == out.labels) & valid).sum()
            count += n
        self.model.train()
        n = max(count.item(), 1.0)
        loss = loss_sum.item() / n
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_accuracy": correct.item() / n,
                "eval_tokens": int(count.item())}

    # ---- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "best_eval_loss": self.best_eval_loss,
            "train_config": dataclasses.asdict(self.config),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.scaler:
            state["scaler"] = self.scaler.state_dict()
        return state

    def _checkpoint_dirs(self) -> list[Path]:
        root = self.out_dir / "checkpoints"
        return sorted(root.glob("step_*[0-9]")) if root.is_dir() else []

    def save(self, name: str | None = None, *, resumable: bool = True) -> Path | None:
        """Write a checkpoint (rank 0 only): `checkpoints/step_N` by default, keeping the last K."""
        if self.out_dir is None or not self.is_main:
            return None
        path = self.out_dir / (name or f"checkpoints/step_{self.step:07d}")
        ckpt.save_checkpoint(path, self.model, self.tokenizer, trainer_state=self._state() if resumable else None,
                             step=self.step, **self.metadata)
        if name is None:
            for old in self._checkpoint_dirs()[:-self.config.keep_last]:
                shutil.rmtree(old)
        return path

    def _resume(self) -> None:
        dirs = self._checkpoint_dirs() if self.out_dir is not None else []
        if not dirs:
            raise FileNotFoundError(f"--resume: no checkpoint under {self.out_dir}/checkpoints to resume from")
        path = dirs[-1]
        ckpt.load_weights(path, self.model)
        state = ckpt.load_trainer_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if self.config.time_budget_s and self.step >= self.config.warmup_steps:  # steps were fixed before
            self.config = dataclasses.replace(self.config, steps=state["train_config"]["steps"], time_budget_s=0.0)
        self.best_eval_loss = float(state["best_eval_loss"])
        metrics = self.out_dir / "metrics.jsonl"
        if self.is_main and metrics.is_file():  # drop records the interrupted run wrote after this checkpoint
            lines = [l for l in metrics.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= self.step]
            metrics.write_text("".join(l + "\n" for l in lines))
        if self.is_main:
            print(f"resumed from {path} at step {self.step}")

    def _fit_budget(self, probe_start: int, fit_start: float) -> TrainConfig:
        """At `probe_start` start the clock; at the end of warmup set `steps` to fill the time budget."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if self.step == probe_start:
            self._probe = (self.step, now)
            return self.config
        first, t_first = self._probe
        per_step = (now - t_first) / max(1, self.step - first)
        left = self.config.time_budget_s - (now - fit_start)
        steps = torch.tensor([self.step + max(1, int(left / per_step))], device=self.device)
        if self.world_size > 1:
            dist.broadcast(steps, 0)  # every rank must agree on the schedule
        if self.is_main:
            print(f"time budget {self.config.time_budget_s:.0f}s at {per_step * 1e3:.1f} ms/step: training for "
                  f"{int(steps.item())} steps", flush=True)
        self.config = dataclasses.replace(self.config, steps=int(steps.item()), time_budget_s=0.0)
        return self.config

    # ---- logging -----------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.out_dir is not None and self.is_main:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _stop_flag(self) -> bool:
        """Ctrl-C on any rank stops every rank at the same step."""
        if self.world_size == 1:
            return self._stop_requested
        flag = torch.tensor([float(self._stop_requested)], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item())

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not cfg.resume and (self.out_dir / "metrics.jsonl").exists():
                (self.out_dir / "metrics.jsonl").unlink()
        if cfg.resume:
            self._resume()
        self.model.train()
        peak = peak_flops(self.device)
        flops_per_token = None

        def check_finite():
            if bad_step.item() >= 0:
                bad = bad_step.item()
                raise NonFiniteLoss(
                    f"loss became non-finite at step {bad} (lr {learning_rate(bad, cfg):.3g}); stopped without "
                    f"saving, so the last good checkpoint is left intact. Lower --lr, lengthen the warmup, or "
                    f"train in fp32/bf16.")

        previous = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, lambda *_: setattr(self, "_stop_requested", True))
        except ValueError:  # not the main thread: leave Ctrl-C alone
            previous = None
        # With a time budget the number of steps is unknown until the warmup is timed: no total yet.
        bar = tqdm(total=None if cfg.time_budget_s else cfg.steps, initial=self.step,
                   disable=not (cfg.progress and self.is_main), desc="train", dynamic_ncols=True)
        loss_acc = torch.zeros((), device=self.device)
        bad_step = torch.full((), -1, device=self.device, dtype=torch.long)
        t0, tokens, logged_steps, last_eval, interrupted = time.perf_counter(), 0, 0, {}, False
        fit_start, probe_start = t0, self.step + min(5, max(1, (cfg.warmup_steps - self.step) // 2))
        last_loss = math.nan
        try:
            while self.step < cfg.steps:
                loss, grad_norm, n_tokens = self.train_step(self.step)
                if flops_per_token is None and peak:
                    flops_per_token = self._flops_per_token(self._seq_len)
                # Remember the first non-finite step on the device: no host sync here.
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), self.step, bad_step)
                loss_acc += torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)
                tokens += n_tokens * self.world_size
                logged_steps += 1
                self.step += 1
                bar.update(1)
                if cfg.time_budget_s and self.step in (probe_start, cfg.warmup_steps):
                    cfg = self._fit_budget(probe_start, fit_start)
                    bar.total = None if cfg.time_budget_s else cfg.steps
                    bar.refresh()
                done = self.step == cfg.steps
                if self.world_size == 1:
                    interrupted = self._stop_requested
                if self.step % cfg.log_every == 0 or done or interrupted:
                    check_finite()
                    elapsed = time.perf_counter() - t0
                    last_loss = loss_acc.item() / logged_steps
                    loss_acc.zero_()
                    record = {"step": self.step, "loss": last_loss, "lr": learning_rate(self.step - 1, cfg),
                              "grad_norm": float(grad_norm), "tokens_per_s": tokens / elapsed, "time_s": elapsed}
                    postfix = {"loss": f"{last_loss:.3f}", "lr": f"{record['lr']:.2e}",
                               "tok/s": f"{record['tokens_per_s']:,.0f}"}
                    if flops_per_token and peak:
                        record["mfu"] = record["tokens_per_s"] * flops_per_token / peak / self.world_size
                        postfix["mfu"] = f"{100 * record['mfu']:.1f}%"
                    bar.set_postfix(postfix)
                    if not cfg.progress and self.is_main:
                        total = "?" if cfg.time_budget_s else cfg.steps  # not known until the warmup is timed
                        print(f"step {self.step}/{total}: " + ", ".join(f"{k} {v}" for k, v in postfix.items()),
                              flush=True)
                    self._log(record)
                    t0, tokens, logged_steps = time.perf_counter(), 0, 0
                    interrupted = self._stop_flag()
                evaluate = self.eval_data is not None and (done or cfg.eval_every and self.step % cfg.eval_every == 0)
                if evaluate:
                    check_finite()
                    last_eval = self.evaluate()
                    self._log({"step": self.step, **last_eval})
                    if self.is_main:
                        bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items()))
                    if last_eval["eval_loss"] < self.best_eval_loss:
                        self.best_eval_loss = last_eval["eval_loss"]
                        self.save("best", resumable=False)
                    t0 = time.perf_counter()
                if (cfg.save_every and self.step % cfg.save_every == 0) or done or interrupted:
                    check_finite()
                    self.save()
                if interrupted:
                    if self.is_main:
                        bar.write(f"interrupted: saved a checkpoint at step {self.step}; continue with --resume")
                    break
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if not interrupted:
            self.save("final", resumable=False)
        if self.out_dir is not None and self.is_main:
            plot_metrics(self.out_dir)
        return {"step": self.step, "loss": last_loss, **last_eval, "interrupted": interrupted,
                "out_dir": str(self.out_dir) if self.out_dir else None}


def plot_metrics(run_dir) -> Path | None:
    """Draw loss (train and eval) and learning-rate curves from `run_dir/metrics.jsonl` into `curves.png`."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_panels = 3 if any("eval_accuracy" in r for r in evals) else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 3.6))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    if evals:
        axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval")
    axes[0].set(xlabel="step", ylabel="loss", title="loss")
    axes[0].legend()
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[1].set(xlabel="step", ylabel="learning rate", title="learning rate")
    if n_panels == 3:
        axes[2].plot([r["step"] for r in evals], [100 * r["eval_accuracy"] for r in evals], "o-")
        axes[2].set(xlabel="step", ylabel="%", title="eval token accuracy")
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
