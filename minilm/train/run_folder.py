"""Run folders: where a training run keeps its metrics and checkpoints, and how commands find them.

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
- Commands (`finetune --init`, `evaluate`, `fill-mask`, `generate`) take a checkpoint folder
  or a run folder; `resolve` turns a run folder into `final/`, and says so in one line when it
  has to use `best/` or the latest step instead (an interrupted run has no `final/`).
- Temporary folders a crash left behind (`.NAME.tmp-PID`, `.NAME.old-PID`, see
  `checkpoint.py`) are put right or removed by the next run that prepares the folder.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from minilm.train import checkpoint as ckpt

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


def load(path, want: type, *, device="cpu", flag: str = "checkpoint", hint: str = ""):
    """(model, tokenizer) for a command: a minilm checkpoint or run folder, or a Hugging Face folder.

    `want` is the model class the command needs (MaskedLM for fill-mask, CausalLM for generate);
    a checkpoint of another class, or one without a tokenizer, is refused naming both.
    """
    from minilm.nn import hf

    path = Path(path)
    if hf.is_hf_folder(path):
        model, tokenizer = hf.load_pretrained(path, want)
        return model.to(device), tokenizer
    where = resolve(path, flag=flag)
    model, tokenizer = ckpt.load_model(where, device=device)
    if not isinstance(model, want):
        raise RunFolderError(f"{flag} {where} holds a {type(model).__name__}, not a {want.__name__}{hint}")
    if tokenizer is None:
        raise RunFolderError(f"{flag} {where} has no {ckpt.TOKENIZER}: the command needs one to encode text")
    return model, tokenizer
