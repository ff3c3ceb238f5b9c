"""`minilm finetune`: adapt a pretrained encoder (or the same one from scratch) to a labelled task.

    minilm finetune --task classify --data rt-polarity --init runs/pretrain --method lora
    minilm finetune --task ner --data conll2003 --init scratch --method full --seed 1
    minilm finetune --task classify --data my.tsv --init minilm/assets/pretrained --train-size 512

Design choices:
- The task (`tasks.py`: ClassifyTask, NERTask) says how to load, batch and score; this module
  builds the model, trains it with the `Trainer` and keeps the run folder. The trainer's
  evaluation is the task's validation score, through its `evaluate` hook, and the best epoch's
  trainable weights are kept in memory by the sink it writes to (`BestInMemory`): no trainer
  subclass, no checkpoint written per epoch.
- Select on validation, test once: after every epoch the validation score is computed;
  the best epoch's weights are restored and the test split is scored exactly once.
- `--init scratch` builds the same architecture with random weights and the same
  tokenizer (taken from `--arch`, by default the committed pretrained checkpoint), so
  pretrained versus scratch differs in the weights only.
- What is saved is what was trained: `full` writes a checkpoint `model/` that `load_model`
  reads; the other methods write `adapter.safetensors` (method weights and head, small)
  that names its base checkpoint and that base's sha256, so a reloaded model scores exactly
  what it scored. A random base (from scratch) cannot be fetched again: it is saved in `base/`.
  The adapter (its weights and its settings) and tokenizer files are sha256-checked when read
  back, like checkpoints.
- A run folder is never overwritten by accident (`--overwrite` replaces it), and the default
  folder name includes the data set, so runs on different data never collide.
- Misconfiguration fails before training: labels in validation/test that training never
  saw, a tokenizer whose vocabulary or special ids do not fit the checkpoint, a train size
  larger than the data, a max length beyond the model's positions.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minilm.data.tokenizer import Tokenizer
from minilm.downstream.tasks import TASKS, with_subset
from minilm.nn import peft
from minilm.nn.config import PRETRAINED_DIR, ModelConfig
from minilm.nn.model import Transformer
from minilm.store.atomic import atomic_write_text
from minilm.store.fetch import sha256_file
from minilm.train import model_source, run_folder
from minilm.train.checkpoint import constructor_kwargs, save_checkpoint
from minilm.train.model_source import ADAPTER, BASE_DIR, MODEL_DIR, RUN_INFO, check_tokenizer, load_tokenizer
from minilm.train.sink import Sink
from minilm.train.trainer import TrainConfig, Trainer, resolve_device

# Peak learning rates that work for BERT-mini-sized encoders: the body moves slowly, new
# parameters (head, low-rank factors, adapters, prefixes) need ~10x more.
DEFAULT_LR = {"full": 2e-4, "probe": 2e-3, "lora": 1e-3, "adapter": 1e-3, "prefix": 5e-3}


# ---------------------------------------------------------------- model and tokenizer


def build_model(task, init: str, *, arch: str | None = None, tokenizer_path: str | None = None,
                dropout: float | None = 0.1, seed: int = 0):
    """-> (task model, tokenizer, the base ModelSource, or None from scratch).

    `init` is any source `model_source.resolve` accepts: a checkpoint or run folder, a Hugging
    Face BERT-family folder, a run fine-tuned with --method full (the body is copied from it, the
    tokenizer comes with it), or "scratch" / a preset (random weights; the shape and tokenizer of
    `arch`, by default the committed pretrained checkpoint, else "bert-mini").
    """
    torch.manual_seed(seed)  # the head's (and, from scratch, the body's) initialisation
    arch = arch or (str(PRETRAINED_DIR) if (PRETRAINED_DIR / "config.json").is_file() else "bert-mini")
    source = model_source.resolve(init, arch=arch)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    if source.kind == "scratch":
        if tokenizer is None and source.arch is None:
            tokenizer = Tokenizer.for_corpus("imdb", 8192)  # the course's tokenizer for a bare preset
        config = model_source.config_of(source) or ModelConfig.preset(source.preset, vocab_size=tokenizer.vocab_size)
        config = dataclasses.replace(config, **_dropout(dropout))
        tokenizer = tokenizer or model_source.tokenizer_of(source.arch)
        check_tokenizer(tokenizer, config, f"--arch {arch}")
        return task.model(config), tokenizer, None
    body, own = model_source.load(source, Transformer, dropout=dropout)
    if body.causal:
        raise ValueError(f"--init {init} holds a decoder (causal) body; the fine-tuning tasks read every token both "
                         f"ways and need an encoder (a masked LM or a BERT-family folder)")
    if tokenizer is not None and own.fingerprint() != tokenizer.fingerprint():
        raise ValueError(f"--tokenizer {tokenizer_path} is not the tokenizer saved with {source} (their merges or "
                         f"settings differ): the pretrained embeddings only fit their own tokenizer")
    tokenizer = tokenizer or own
    check_tokenizer(tokenizer, body.config, f"--init {init}")
    model = task.model(body.config)
    model.body.load_state_dict(body.state_dict())
    if source.kind == "finetuned":  # a full fine-tuning run: an adapter's base is its checkpoint
        source = model_source.resolve(source.path / model_source.MODEL_DIR)
    return model, tokenizer, source


def _dropout(dropout: float | None) -> dict:
    return {} if dropout is None else {"dropout": dropout, "attention_dropout": dropout}


# ---------------------------------------------------------------- training


@dataclass
class FinetuneConfig:
    task: str = "classify"
    data: str | None = None  # default per task: rt-polarity / conll2003
    init: str = "scratch"
    method: str = "full"
    arch: str | None = None  # for --init scratch: checkpoint or preset whose shape and tokenizer to use
    tokenizer: str | None = None  # override the checkpoint's tokenizer (checked against the model)
    train_size: int | None = None  # subsample the training split (seeded)
    eval_size: int | None = None  # score a fixed subset of validation and test (quick lessons); None = all
    allow_unseen_labels: bool = False  # score validation/test labels absent from train as misses (ATIS needs it)
    allow_rare_labels: bool = False  # accept labels that look like typos (see data.suspect_labels)
    seed: int = 0
    epochs: int = 4
    batch_size: int = 32
    lr: float | None = None  # default per method: DEFAULT_LR
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    dropout: float | None = 0.1  # None = keep the checkpoint's
    max_len: int | None = None  # None: min(128, the model's max_seq_len); pretraining rows are 128 long
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: tuple = ("q", "k", "v", "o", "up", "down")  # all linears: rank-8 on q,v alone lags full FT
    rslora: bool = False
    bottleneck: int = 64
    n_prefix: int = 16
    device: str = "auto"
    out: str | None = None  # None: no run folder (the results row is returned only)
    overwrite: bool = False  # replace a run already in `out`
    progress: bool = True

    def __post_init__(self):
        def need(ok: bool, field: str, accepted: str):
            if not ok:
                flag = "--" + field.replace("_", "-")
                raise ValueError(f"{flag}={getattr(self, field)!r} is invalid: expected {accepted}")

        need(self.task in TASKS, "task", f"one of {sorted(TASKS)}")
        need(self.method in peft.METHODS, "method", f"one of {sorted(peft.METHODS)}")
        need(self.epochs >= 1, "epochs", "an integer >= 1")
        need(self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(self.train_size is None or self.train_size >= 1, "train_size", "an integer >= 1")
        need(self.eval_size is None or self.eval_size >= 1, "eval_size", "an integer >= 1")
        need(self.lr is None or self.lr > 0, "lr", "a positive float")
        need(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "a float in [0, 1)")
        need(self.max_len is None or self.max_len >= 3, "max_len", "an integer >= 3 ([CLS] x [SEP])")
        if self.data is None:
            self.data = {"classify": "rt-polarity", "ner": "conll2003"}[self.task]
        self.lora_targets = tuple(self.lora_targets)

    def method_settings(self) -> dict:
        """Keyword settings of the chosen peft.apply_* function."""
        return {"lora": dict(rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout,
                             targets=list(self.lora_targets), rslora=self.rslora),
                "adapter": dict(bottleneck=self.bottleneck), "prefix": dict(n_prefix=self.n_prefix)
                }.get(self.method, {})

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def default_out(self) -> str:
        """runs/finetune-TASK-DATA-METHOD-INIT-sSEED: the data set is in the name, so runs on other data never
        collide."""
        init = "scratch" if self.init == "scratch" else "pretrained"
        data = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.data).stem if os.sep in self.data else self.data)
        return f"runs/finetune-{self.task}-{data}-{self.method}-{init}-s{self.seed}"

    def train_config(self, steps_per_epoch: int) -> TrainConfig:
        """The Trainer's settings: `epochs` epochs, linear decay to zero after the warmup, an evaluation
        (the validation score) after every epoch; BERT's AdamW betas and eps."""
        steps = self.epochs * steps_per_epoch
        return TrainConfig(steps=steps, lr=self.peak_lr, warmup_steps=int(self.warmup_ratio * steps),
                           schedule="linear", min_lr_ratio=0.0, weight_decay=self.weight_decay, beta2=0.999,
                           eps=1e-8, device=self.device, precision="auto", eval_every=steps_per_epoch,
                           log_every=max(1, min(50, steps // 20)), seed=self.seed, progress=self.progress)


class BestInMemory(Sink):
    """Fine-tuning's sink: metrics and curves in the run folder (when there is one), the best
    epoch's trainable weights in memory (a few MB for LoRA; no checkpoint is written mid-run)."""

    def __init__(self, folder: Path | None = None):
        self.folder, self.step, self.state = folder, None, None

    def log(self, record: dict) -> None:
        if self.folder is not None:
            run_folder.append_metrics(self.folder, record)

    def best(self, model, step: int, metrics: dict) -> None:
        self.step, self.state = step, peft.trainable_state_dict(model)

    def restore_best(self, model) -> int:
        """Copy the kept weights back into `model` -> the step they were kept at."""
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, t in self.state.items():
                params[name].copy_(t)
        return self.step

    def close(self) -> None:
        if self.folder is not None:
            run_folder.plot_metrics(self.folder)


def run_finetune(cfg: FinetuneConfig, task=None) -> dict:
    """Fine-tune, select the best epoch on validation, score test once; write the run folder.

    Returns the results row (also written to results.json / results.md under cfg.out):
    method, init, trainable/total parameters, validation and test scores, best epoch, seconds.
    `task` may be passed in to reuse loaded data across runs (it is not modified unless
    cfg.train_size is set).
    """
    t0 = time.perf_counter()
    # Under torchrun every rank trains; only rank 0 writes (the trainer follows the same rule).
    out = Path(cfg.out) if cfg.out and int(os.environ.get("RANK", "0")) == 0 else None
    resolve_device(cfg.device)  # every check that needs no data runs before any is loaded
    if out is not None:
        run_folder.prepare(out, overwrite=cfg.overwrite, resumable=False)  # locked until its files are all written
    try:
        return _finetune(cfg, task, out, t0)
    finally:
        if out is not None:
            run_folder.release(out)


def _finetune(cfg: FinetuneConfig, task, out: Path | None, t0: float) -> dict:
    """`run_finetune` once the run folder is claimed."""
    task = task or TASKS[cfg.task](cfg.data, allow_unseen=cfg.allow_unseen_labels, allow_rare=cfg.allow_rare_labels)
    if cfg.train_size is not None:
        task = with_subset(task, "train", cfg.train_size, cfg.seed)
    for split in ("validation", "test") if cfg.eval_size is not None else ():
        # One fixed subset (seed 0) for every run, so runs stay comparable with each other.
        task = with_subset(task, split, min(cfg.eval_size, task.split_size(split)), 0)
    model, tokenizer, base = build_model(task, cfg.init, arch=cfg.arch, tokenizer_path=cfg.tokenizer,
                                         dropout=cfg.dropout, seed=cfg.seed)
    max_len = cfg.max_len or min(128, model.config.max_seq_len)
    if max_len > model.config.max_seq_len:
        raise ValueError(f"--max-len={max_len} exceeds the model's max_seq_len={model.config.max_seq_len}")
    if out is not None and base is None and cfg.method != "full":
        # A random base cannot be fetched again: keep it, so the adapter file can be reloaded.
        save_checkpoint(out / BASE_DIR, model, tokenizer)
        base = model_source.resolve(out / BASE_DIR)
    settings = cfg.method_settings()
    peft.apply_method(model, cfg.method, **settings)
    trainable, total = peft.count_parameters(model)

    train = task.source("train", tokenizer, batch_size=cfg.batch_size, max_len=max_len, seed=cfg.seed)
    val = task.source("validation", tokenizer, batch_size=cfg.batch_size, max_len=max_len)

    def validate(trainer) -> dict:
        scored = task.score(trainer.model, val)
        return {"eval_loss": scored["loss"], f"eval_{task.metric}": scored[task.metric]}

    sink = BestInMemory(out)
    trainer = Trainer(model, cfg.train_config(train.steps_per_epoch), train, val, evaluate=validate,
                      select=(f"eval_{task.metric}", "max"), sink=sink)
    interrupted = trainer.fit()["interrupted"]
    model = trainer.model
    if sink.state is None:  # stopped (Ctrl-C) before the first evaluation: keep what there is
        sink.best(model, trainer.step, {})
    best_step = sink.restore_best(model)
    val_scored = task.score(model, val)
    test = task.source("test", tokenizer, batch_size=cfg.batch_size, max_len=max_len)
    test_scored = task.score(model, test)  # the one look at test
    seconds = time.perf_counter() - t0

    row = {
        "task": cfg.task, "data": cfg.data, "init": "scratch" if cfg.init == "scratch" else str(cfg.init),
        "method": cfg.method, "seed": cfg.seed, "train_size": task.split_size("train"),
        "validation_size": task.split_size("validation"), "test_size": task.split_size("test"),
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total,
        "metric": task.metric, "validation": _public(val_scored), "test": _public(test_scored),
        "best_epoch": best_step // train.steps_per_epoch, "epochs": cfg.epochs, "lr": cfg.peak_lr,
        "time_s": seconds, "settings": settings, "interrupted": interrupted,
    }
    if task.unseen:
        row["unseen_labels"] = task.unseen
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _save_finetuned(out, cfg, task, model, tokenizer, base, settings, row, max_len)
        atomic_write_text(out / "results.json", json.dumps(row, indent=2) + "\n")  # results first, then pictures
        atomic_write_text(out / "results.md", results_table([row]))
        report = task.report(test, test_scored, out / "confusion_test.png")
        atomic_write_text(out / "report_test.txt", report)
        print(report)
    print(results_table([row]))
    return row


def _public(scored: dict) -> dict:
    return {k: v for k, v in scored.items() if k != "predictions"}


def _save_finetuned(out: Path, cfg: FinetuneConfig, task, model, tokenizer, base, settings, row, max_len) -> None:
    info = {"task": cfg.task, "data": cfg.data, "method": cfg.method, "settings": settings,
            "label_names": task.label_names, "max_len": max_len,
            "allow_unseen_labels": cfg.allow_unseen_labels, "results": row}
    if cfg.method == "full":
        save_checkpoint(out / MODEL_DIR, model, tokenizer)
        info["model"] = MODEL_DIR
    else:
        peft.save_adapter(out / ADAPTER, model, cfg.method, settings)
        tokenizer.save(out / "tokenizer.json")
        folder = base.path.resolve()
        # A base inside the run folder (from scratch) is named relative to it, so the folder can move.
        where = str(folder.relative_to(out.resolve())) if folder.is_relative_to(out.resolve()) else str(folder)
        info.update(adapter=ADAPTER, base=where, base_sha256=model_source.weights_digest(base),
                    model_class=type(model).__name__, model_config=model.config.to_dict(),
                    model_kwargs=constructor_kwargs(model),  # num_labels, pooling
                    files={name: sha256_file(out / name)  # the adapter's settings too: alpha changes the model
                           for name in (ADAPTER, Path(ADAPTER).with_suffix(".json").name, "tokenizer.json")})
    atomic_write_text(out / RUN_INFO, json.dumps(info, indent=2) + "\n")


def load_finetuned(run_dir: str | Path):
    """Rebuild a fine-tuned model from its run folder -> (model, tokenizer, info)."""
    return model_source.load_finetuned(model_source.resolve(run_dir, flag="run"))


SPLITS = ("train", "validation", "test")


def evaluate_run(run_dir: str | Path, split: str = "test", data: str | None = None,
                 allow_unseen_labels: bool | None = None, batch_size: int = 128, merge_lora: bool = False) -> dict:
    """Score the fine-tuned model in `run_dir` on `split` of its data (or of `data`) -> scores dict.

    merge_lora: fold a LoRA run's updates into the base weights first (inference at the base
    model's cost; equal to the unmerged model up to float rounding).
    Returns {"task", "data", "split", "metric", <scores>, "report"}; predictions are left out.
    """
    if split not in SPLITS:
        raise ValueError(f"--split={split!r}: expected one of {SPLITS}")
    source = model_source.resolve(run_dir, flag="run", accept=("finetuned",))
    model, tokenizer, info = model_source.load_finetuned(source)
    if merge_lora:
        if info["method"] != "lora":
            raise ValueError(f"--merge-lora: {run_dir} was fine-tuned with method {info['method']!r}, not 'lora'")
        peft.merge_lora(model)
    data = data or info["data"]
    allow = info.get("allow_unseen_labels", False) if allow_unseen_labels is None else allow_unseen_labels
    task = TASKS[info["task"]](data, label_names=info["label_names"], allow_unseen=allow)
    source = task.source(split, tokenizer, batch_size=batch_size, max_len=info["max_len"])
    source.eval_batch_size = batch_size
    scored = task.score(model, source)
    picture = Path(run_dir) / f"confusion_{split}.png"
    report = task.report(source, scored, picture)
    scores = {k: v for k, v in scored.items() if k != "predictions"}
    return {"task": info["task"], "data": data, "split": split, "metric": task.metric, **scores, "report": report}


# ---------------------------------------------------------------- tables


def results_table(rows: list[dict]) -> str:
    """A Markdown table: one row per run."""
    lines = ["| task | data | init | method | train size | seed | trainable params | validation | test | best epoch "
             "| time |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        init = "scratch" if r["init"] == "scratch" else "pretrained"
        lines.append(f"| {r['task']} | {r['data']} | {init} | {r['method']} | {r['train_size']} | {r['seed']} "
                     f"| {r['trainable_params']:,} ({r['trainable_pct']:.2f}%) "
                     f"| {100 * r['validation'][r['metric']]:.2f} | {100 * r['test'][r['metric']]:.2f} "
                     f"| {r['best_epoch']} | {r['time_s']:.0f} s |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CLI
