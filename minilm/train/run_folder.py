"""Run folders: where a training run keeps its metrics and checkpoints, and how commands find them.

`RunFolder` is the Trainer's sink (see `sink.py`) that writes one:

    runs/NAME/
      metrics.jsonl            one JSON record per log or eval point
      curves.png               loss / learning rate / accuracy
      checkpoints/step_N/      resumable checkpoints (weights + trainer state), the last K kept
      best/                    lowest held-out loss so far (weights only)
      final/                   the weights at the end of the run

Design choices:
- A folder is a run only if minilm's own marker (`.minilm-run`, written by `prepare`) says so,
  never because it holds a file with a familiar name such as results.json. A run is never
  written over by accident: `prepare` refuses, and says how to continue (`--resume`), start
  afresh (`--overwrite`) or pick another `--out`. `--overwrite` removes only what minilm
  writes in a run folder (`OWN`); a folder holding anything else is refused, naming what it
  would not touch, before anything is deleted. A folder that holds files but no run is never
  used as a run folder at all.
- One run per folder at a time: `prepare` takes an exclusive lock (flock) on the marker, held
  until `release` (a `RunFolder` releases it when the run closes) or the end of the process;
  a second run into the folder is refused in one line naming the holder. The system drops the
  lock of a process that died, so a crash never leaves a stale lock behind.
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

import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path

from minilm.store.atomic import atomic_write_text
from minilm.train import checkpoint as ckpt
from minilm.train.sink import Sink

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
FINAL = "final"
BEST = "best"
_STEP = re.compile(r"step_(\d+)")
_LEFTOVER = re.compile(r"\.(.+)\.(?:tmp|old)-\d+")  # see checkpoint.save_checkpoint


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (it holds another run, or holds nothing to read)."""


MARKER = ".minilm-run"  # written by `prepare`: what makes a folder a run
# Everything minilm writes at the top of a run folder (the trainer, `minilm pretrain`, `minilm finetune`
# and `minilm evaluate`'s default output, temporary files a crash left): `--overwrite` removes these
# and nothing else.
OWN = (MARKER, METRICS, "curves.png", CHECKPOINTS, FINAL, BEST, "summary.json", "finetune.json", "results.json",
       "results.md", "report_test.txt", "adapter.safetensors", "adapter.json", "tokenizer.json", "model", "base",
       "confusion_*.png", "eval_*.json", ".*.tmp*", ".*.old-*")


_claims: dict[Path, object] = {}  # the run folders this process has prepared: their locked markers


def _q(path) -> str:
    """A path as a shell would need it (quoted when it holds spaces), so a message can be copied."""
    return shlex.quote(str(path))


def _own(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in OWN)


def _unmarked_run(folder: Path) -> bool:
    """A run written before minilm marked its runs: a metrics.jsonl of minilm's, and nothing but minilm's files."""
    try:
        with open(folder / METRICS) as f:  # checked first: most folders have none, and are not even listed
            first = json.loads(f.readline())
        return isinstance(first, dict) and "step" in first and all(_own(p.name) for p in folder.iterdir())
    except (OSError, ValueError):  # none, unreadable, not JSON, or a folder this user may not list
        return False


def is_run(folder) -> bool:
    """True when `folder` holds a minilm run: its marker (or, for a run older than markers, only minilm's files)."""
    folder = Path(folder)
    return folder.is_dir() and ((folder / MARKER).is_file() or _unmarked_run(folder))


def _listing(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def prepare(folder, *, resume: bool = False, overwrite: bool = False, resumable: bool = True) -> Path:
    """Make `folder` ready for a run and lock it for this process: refuse to clobber a run unless asked to.

    resume: the folder must hold a run to continue. overwrite: what minilm wrote in the folder
    is removed first; a folder holding anything else is refused, naming it, before anything is
    deleted. A folder that holds files but no run is refused either way, and so is a folder
    another process is running in. The folder is marked as a run and stays locked until
    `release` (or the end of the process, however it ends). Left-over temporary folders from
    a crash are recovered or removed. `resumable=False`: the command has no --resume to suggest.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: continue the run or replace it")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {_q(folder)} is a file, not a folder")
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    if names and not is_run(folder) and not (resume and step_checkpoints(folder)):  # --overwrite --out ~: no
        raise RunFolderError(f"--out {_q(folder)} holds files but no minilm run ({_listing(names)}); "
                             + ("not deleting it: " if overwrite else "not writing a run among them: ")
                             + "choose a new or empty folder")
    if resume and not folder.is_dir():
        raise RunFolderError(f"--resume: {_q(folder)}: no such folder")
    key = folder.resolve()
    try:  # the run's first write: a read-only --out is found here, before any data is loaded
        folder.mkdir(parents=True, exist_ok=True)
        lock = _claims.get(key) or _lock(folder)  # this process's own earlier run there (it ended in an error), or new
    except OSError as e:  # no permission, a read-only file system, a full disk
        raise RunFolderError(f"--out {_q(folder)} is not writable ({e.strerror or e}): choose another --out") from None
    lock.seek(0)
    before = lock.read()
    _write(lock, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    try:
        _make_ready(folder, resume=resume, overwrite=overwrite, resumable=resumable)
    except BaseException:
        _write(lock, before)  # refused: the folder is left as it was
        _claims.pop(key, None)
        lock.close()
        raise
    _claims[key] = lock
    return folder


def _make_ready(folder: Path, *, resume: bool, overwrite: bool, resumable: bool) -> None:
    """The checks and clean-up of `prepare`, with the folder locked."""
    names = [p.name for p in folder.iterdir() if p.name != MARKER]
    if overwrite:
        foreign = [n for n in names if not _own(n)]
        if foreign:
            raise RunFolderError(f"--overwrite: {_q(folder)} holds files minilm did not write ({_listing(foreign)}); "
                                 f"not deleting anything: move them out, or choose another --out")
        for name in names:
            path = folder / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    elif not resume and names:
        raise RunFolderError(f"--out {_q(folder)} already holds a run: "
                             + ("continue it with --resume, " if resumable else "")
                             + "replace it with --overwrite, or choose another --out")
    for root in (folder, folder / CHECKPOINTS):  # finish or undo replacements a crash interrupted
        left = {m.group(1) for p in root.glob(".*") if (m := _LEFTOVER.fullmatch(p.name))} if root.is_dir() else ()
        for name in left:
            ckpt.recover(root / name, cleanup=True)
    if resume and not step_checkpoints(folder):
        raise RunFolderError(f"--resume: {_q(folder)} has no checkpoint under {CHECKPOINTS}/ to continue from")


def _lock(folder: Path):
    """The run marker, opened and exclusively locked by this process (`prepare` writes who holds it).

    An flock belongs to the open file: the system drops it when the process ends, however it
    ends, so a marker left by a crashed run is simply free again (no stale lock to clear).
    """
    marker = open(folder / MARKER, "a+")
    if fcntl is None:  # no flock on this system (Windows): the folder is marked, not locked
        return marker
    try:
        fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        for _ in range(20):  # the holder writes its name just after it took the lock
            marker.seek(0)
            if holder := marker.read().strip():
                break
            time.sleep(0.05)
        marker.close()
        raise RunFolderError(f"--out {_q(folder)} is in use by another minilm run ({holder or 'starting'}): wait "
                             f"for it to end, or choose another --out") from None
    return marker


def _write(marker, text: str) -> None:
    """Who holds the folder, in the marker: the message a second run gets names it."""
    marker.seek(0)
    marker.truncate()
    marker.write(text)
    marker.flush()


def release(folder) -> None:
    """The run in `folder` is over: unlock it (the marker stays: the folder holds a run)."""
    lock = _claims.pop(Path(folder).resolve(), None)
    if lock is not None:
        lock.close()


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
        raise RunFolderError(f"{flag} {_q(path)}: no such folder")
    ckpt.recover(path / FINAL)
    if (path / FINAL / ckpt.CONFIG).is_file():
        return path / FINAL
    fallbacks = ([path / BEST] if (path / BEST / ckpt.CONFIG).is_file() else []) + step_checkpoints(path)[::-1]
    if fallbacks:
        print(f"minilm: {_q(path)} has no {FINAL}/ (the run was interrupted?): using {_q(fallbacks[0])}",
              file=sys.stderr)
        return fallbacks[0]
    raise RunFolderError(f"{flag} {_q(path)}: not a checkpoint folder (no {ckpt.CONFIG}) and not a run folder with "
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
            raise RunFolderError(f"--resume: no checkpoint under {_q(self.folder / CHECKPOINTS)} to resume from")
        return str(found[-1]), ckpt.load_trainer_state(found[-1]), ckpt.read_config(found[-1])["extra"]

    def load_weights(self, where: str, model) -> None:
        ckpt.load_weights(where, model)

    def best(self, model, step: int, metrics: dict) -> None:
        self._save(self.folder / BEST, model, step)

    def final(self, model, step: int) -> None:
        self._save(self.folder / FINAL, model, step)

    def close(self) -> None:
        plot_metrics(self.folder)
        release(self.folder)


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
