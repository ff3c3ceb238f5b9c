"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Design choices:

- One recipe, used by every module that writes a file minilm later reads: write
  to a temporary file in the *same folder* (a rename is atomic only within one
  file system), flush and fsync it (so a crash after the rename cannot leave a
  renamed but empty file), `os.replace` it over the target, then fsync the folder
  (so the rename itself survives a power cut; skipped where folders cannot be
  opened, e.g. Windows).
- The temporary name is hidden and unique (`.NAME.XXXXXX.tmp` plus the target's
  suffix, so `np.save` and friends do not append one of their own); two
  processes writing the same target at once each write their own temp file and
  the last rename wins, whole. On any error the temp file is removed and the
  target is left as it was.
- The new file gets the permissions a plain `open(path, "w")` would give
  (0o666 minus the umask), not the 0o600 of `tempfile.mkstemp`, so atomic writes
  do not make checkpoints or caches private by accident.
- Three entry points: `atomic_write_bytes` / `atomic_write_text` for data in
  memory, `atomic_open` for writing through a file object, and `atomic_path` for
  libraries that insist on writing to a path name (safetensors' `save_file`).
- Whole folders (a checkpoint, a Hugging Face export, a tokenised corpus) are
  written by `atomic_folder`: complete under a temporary name (`.NAME.tmp-PID`)
  before the old folder is moved aside (`.NAME.old-PID`), then the new one is
  moved in and the old removed. A kill between the two renames leaves no folder
  under the name, but a complete new one and the old one beside it:
  `recover_folder` moves the right one back (the new one if it is complete),
  so a reader finds the old folder or the new one, never half of one and never
  none. `FAULT_HOOK` lets a test stop the process at every rename.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

# Read once at import (os.umask can only be read by setting it, which is not thread-safe later).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# Called with a label before each rename of a folder replacement; tests set it to kill the process there.
FAULT_HOOK: Callable[[str], None] | None = None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_in(path: Path) -> Path:
    """Create (empty) and return a unique hidden temp file beside `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    return Path(tmp)


def _commit(tmp: Path, path: Path) -> None:
    """fsync `tmp`, give it normal permissions and move it over `path`."""
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error, the file
    written there replaces `path` atomically. On error it is deleted and `path` is untouched.

        with atomic_path(out / "model.safetensors") as tmp:
            save_file(tensors, str(tmp))
    """
    path = Path(path)
    tmp = _temp_in(path)
    try:
        yield tmp
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """`open(path, mode)` whose result appears at `path` only when the block ends without
    error, all at once. `mode` is "w" (text, `encoding`) or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r}: atomic_open writes a whole new file; use 'w' or 'wb'")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename); returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (temp file in the same folder, fsync, rename); returns the path."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def _rename(src: Path, dst: Path, label: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(label)
    os.replace(src, dst)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder beside `path`; when the block ends without error, it replaces `path`
    (the old folder is removed only once the new one is in). On error it is deleted and `path` is untouched.

        with atomic_folder(out / "final") as tmp:
            save_file(tensors, str(tmp / "model.safetensors"))
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        _rename(final, old, "move the old folder aside")
    _rename(tmp, final, "move the new folder in")
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def recover_folder(final: str | os.PathLike, *, complete: Callable[[Path], bool] = lambda p: True,
                   cleanup: bool = False) -> None:
    """Finish or undo a replacement of `final` that a kill interrupted (see `atomic_folder`).

    With `final` missing, the newest `.final.tmp-*` that `complete` accepts (a new folder that
    was fully written) is moved in, else the `.final.old-*` that was moved aside goes back. With
    `cleanup`, left-over temporary folders beside an intact `final` are removed (only the
    process that owns the folder may do that: another may be writing one right now).
    """
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return
    temps = sorted(parent.glob(f".{final.name}.tmp-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    olds = sorted(parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not final.exists():
        for candidate in [*filter(complete, temps), *olds]:
            os.replace(candidate, final)
            break
    if cleanup:
        for left in parent.glob(f".{final.name}.*-*"):
            shutil.rmtree(left, ignore_errors=True)
