"""Run folders: where a training run keeps its metrics and checkpoints, and how commands find them.

`RunFolder` is the Trainer's sink (see `sink.py`) that writes one:

    runs/NAME/
      metrics.jsonl            one JSON record per log or eval point
      curves.png               loss / learning rate / accuracy
      checkpoints/step_N/      resumable checkpoints (weights + trainer state), the last K kept
      best/                    lowest held-out loss so far (weights only)
      final/                   the weights at the end of the run

Design choices:
- A folder that holds a run is never written over by accident: `prepare` refuses, and says how
  to continue (`--resume`), start afresh (`--overwrite`, which empties the folder first) or
  pick another `--out`.
- Checkpoints are ordered by their step number, never by name, so rotation and resume pick
  the right ones whatever the padding of the names.
- The trainer writes through `RunFolder` and knows no file names: what is kept where is
  decided here, once.
- Commands take a run folder wherever they take a checkpoint; `resolve` turns a run folder
  into `final/`, and says so in one line when it has to use `best/` or the latest step
  instead (an interrupted run has no `final/`). `minilm.train.model_source` calls it.
- Temporary folders a crash left behind (`.NAME.tmp-PID`, `.NAME.old-PID`, see
  `checkpoint.py`) are put right or removed by the next run that prepares the folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

from minilm.store.atomic import atomic_write_text
from minilm.train import checkpoint as ckpt
from minilm.train.sink import Sink

METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
FINAL = "final"
BEST = "best"
_STEP = re.compile(r"step_(\d+)")
_LEFTOVER = re.compile(r"\.(.+)\.(?:tmp|old)-\d+")  # see checkpoint.save_checkpoint


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (it holds another run, or holds nothing to read)."""


# What pretraining and fine-tuning runs write: a folder holding any of these holds a run.
RUN_FILES = (METRICS, CHECKPOINTS, FINAL, BEST, "finetune.json", "results.json", "summary.json")


def holds_run(folder: Path) -> bool:
    """True when `folder` has what a training run writes (metrics, checkpoints, final/, results...)."""
    folder = Path(folder)
    return any((folder / name).exists() for name in RUN_FILES)


def prepare(folder, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Make `folder` ready for a run: refuse to clobber an existing run unless asked to.

    resume: the folder must hold a run to continue. overwrite: the folder is emptied first.
    Left-over temporary folders from a crash are recovered or removed either way.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: continue the run or replace it")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder} is a file, not a folder")
    if overwrite and folder.is_dir() and any(folder.iterdir()):
        if not holds_run(folder):  # --overwrite --out ~ must not empty a home folder
            raise RunFolderError(f"--overwrite: {folder} holds files but no minilm run; not deleting it: pick "
                                 f"another --out")
        shutil.rmtree(folder)
    elif not resume and folder.is_dir() and holds_run(folder):
        raise RunFolderError(f"--out {folder} already holds a run: continue it with --resume, replace it with "
                             f"--overwrite, or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    for root in (folder, folder / CHECKPOINTS):  # finish or undo replacements a crash interrupted
        left = {m.group(1) for p in root.glob(".*") if (m := _LEFTOVER.fullmatch(p.name))} if root.is_dir() else ()
        for name in left:
            ckpt.recover(root / name, cleanup=True)
    if resume and not step_checkpoints(folder):
        raise RunFolderError(f"--resume: {folder} has no checkpoint under {CHECKPOINTS}/ to continue from")
    return folder


def step_of(path: Path) -> int:
    return int(_STEP.fullmatch(path.name).group(1))


def step_checkpoints(folder) -> list[Path]:
    """The resumable checkpoints of a run folder, oldest step first."""
    root = Path(folder) / CHECKPOINTS
    found = [p for p in root.iterdir() if _STEP.fullmatch(p.name) and p.is_dir()] if root.is_dir() else []
    return sorted(found, key=step_of)


def checkpoint_path(folder, step: int) -> Path:
    return Path(folder) / CHECKPOINTS / f"step_{step:07d}"


def rotate(folder, keep_last: int) -> None:
    """Delete all but the `keep_last` highest-step checkpoints."""
    for old in step_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old)


def resolve(path, *, flag: str = "--init") -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder.

    A run folder gives `final/`; without one (an interrupted run) `best/`, then the latest step
    checkpoint, each with a one-line notice on stderr. Nothing usable: a RunFolderError naming
    `flag`.
    """
    path = Path(path)
    ckpt.recover(path)
    if (path / ckpt.CONFIG).is_file():
        return path
    if not path.exists():
        raise RunFolderError(f"{flag} {path}: no such folder")
    ckpt.recover(path / FINAL)
    if (path / FINAL / ckpt.CONFIG).is_file():
        return path / FINAL
    fallbacks = ([path / BEST] if (path / BEST / ckpt.CONFIG).is_file() else []) + step_checkpoints(path)[::-1]
    if fallbacks:
        print(f"minilm: {path} has no {FINAL}/ (the run was interrupted?): using {fallbacks[0]}", file=sys.stderr)
        return fallbacks[0]
    raise RunFolderError(f"{flag} {path}: not a checkpoint folder (no {ckpt.CONFIG}) and not a run folder with "
                         f"{FINAL}/, {BEST}/ or {CHECKPOINTS}/step_*")


class RunFolder(Sink):
    """The sink that writes a run folder (the layout above); `metadata` goes into every checkpoint.

    Made on rank 0 it prepares the folder (`prepare`: a folder holding a run is refused unless
    `resume` or `overwrite`); other ranks only read it, to resume.
    """

    def __init__(self, folder, *, tokenizer=None, metadata: dict | None = None, keep_last: int = 2,
                 resume: bool = False, overwrite: bool = False, main: bool | None = None):
        self.folder = Path(folder)
        self.tokenizer, self.metadata, self.keep_last = tokenizer, dict(metadata or {}), keep_last
        main = int(os.environ.get("RANK", "0")) == 0 if main is None else main
        if main:
            prepare(self.folder, resume=resume, overwrite=overwrite)

    def log(self, record: dict) -> None:
        append_metrics(self.folder, record)

    def rewind(self, step: int) -> None:
        path = self.folder / METRICS
        if path.is_file():
            lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
            atomic_write_text(path, "".join(l + "\n" for l in lines))

    def _save(self, path: Path, model, step: int, state: dict | None = None) -> Path:
        return ckpt.save_checkpoint(path, model, self.tokenizer, trainer_state=state, step=step, **self.metadata)

    def checkpoint(self, model, step: int, state: dict) -> None:
        self._save(checkpoint_path(self.folder, step), model, step, state)
        rotate(self.folder, self.keep_last)

    def resume_point(self) -> tuple[str, dict, dict]:
        found = step_checkpoints(self.folder)
        if not found:
            raise RunFolderError(f"--resume: no checkpoint under {self.folder}/{CHECKPOINTS} to resume from")
        return str(found[-1]), ckpt.load_trainer_state(found[-1]), ckpt.read_config(found[-1])["extra"]

    def load_weights(self, where: str, model) -> None:
        ckpt.load_weights(where, model)

    def best(self, model, step: int, metrics: dict) -> None:
        self._save(self.folder / BEST, model, step)

    def final(self, model, step: int) -> None:
        self._save(self.folder / FINAL, model, step)

    def close(self) -> None:
        plot_metrics(self.folder)


def append_metrics(folder, record: dict) -> None:
    """One record more in `folder/metrics.jsonl` (a line appended: a crash loses at most that line)."""
    with open(Path(folder) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def plot_metrics(run_dir) -> Path | None:
    """Draw loss (train and eval) and learning-rate curves from `run_dir/metrics.jsonl` into `curves.png`."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train:
        return None
    # Lazy: pyplot takes ~0.5 s to import, which `minilm generate` (it reads run folders) should not pay.
    import matplotlib

    matplotlib.use("Agg")  # drawn headless (CI, ssh, a GPU box)
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
