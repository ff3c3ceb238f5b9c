"""Tokenised corpora and model rows: documents -> token ids, cached -> fixed-length rows.

Design choices:

- A tokenised corpus is three flat arrays (token ids, word-start flags, document
  offsets) saved as .npy and memory-mapped, cached under the corpus name plus
  hashes of the documents and of the tokenizer, so a changed corpus or tokenizer
  is never served stale arrays. Tokenising runs in threads (tiktoken and the
  pre-tokeniser release the GIL).
- The cache is verified when read: a `stamp.json`, written last into the folder,
  holds the size and sha256 of every array, and each array is checked against it
  (hashed once per process, `minilm.store.fetch.sha256_cached`; ~20 MB for IMDB). A cut
  or edited array (token ids changed on disk would otherwise train without
  complaint), or a folder without a stamp (cut short, or written by an older
  minilm), is tokenised again with a one-line notice: minilm can rebuild it, so
  it does. The new folder is built beside the old and renamed into place, so a
  process still reading the old arrays keeps them; temp folders an hour old,
  left by a crash, are removed then.
- `encoder_rows` / `decoder_rows` cut a corpus into model rows with vectorised
  numpy, no Python loop over tokens.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from minilm.store.atomic import atomic_open, atomic_write_text
from minilm.store.fetch import cache_dir, sha256_cached
from minilm.data.text import docs_fingerprint

ARRAYS = ("ids", "word_starts", "doc_offsets")
STAMP = "stamp.json"
STALE_S = 3600  # a temp folder this old beside the cache is a crash's leftover


@dataclass
class TokenizedCorpus:
    """A tokenised corpus: all documents back to back (arrays may be memory-mapped)."""
    ids: np.ndarray          # (n_tokens,) uint16 or uint32
    word_starts: np.ndarray  # (n_tokens,) bool: the token begins a pre-token ("word")
    doc_offsets: np.ndarray  # (n_docs + 1,) int64: document d is ids[doc_offsets[d]:doc_offsets[d + 1]]

    @property
    def n_docs(self) -> int:
        return len(self.doc_offsets) - 1

    def __len__(self) -> int:
        return len(self.ids)


# ---- the cache ------------------------------------------------------------------

def cache_problem(folder: Path) -> str | None:
    """Why the tokenised-corpus cache `folder` cannot be trusted, or None when every array
    has the size and sha256 its stamp records."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
        files = stamp["files"]
    except FileNotFoundError:
        return f"has no {STAMP} (cut short, or written by an older minilm)"
    except (ValueError, KeyError, TypeError) as e:
        return f"has an unreadable {STAMP} ({e})"
    for name in (f"{a}.npy" for a in ARRAYS):
        path, want = folder / name, files.get(name) if isinstance(files, dict) else None
        if not path.is_file():
            return f"has no {name}"
        if not isinstance(want, dict):
            return f"has no stamp for {name}"
        size = path.stat().st_size
        if size != want.get("size"):
            return f"{name} is {size:,} bytes, its stamp says {want.get('size')!r}"
        if sha256_cached(path) != want.get("sha256"):
            return f"{name}'s sha256 differs from its stamp (edited on disk?)"
    return None


def _write_cache(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write `arrays` and their stamp into a new folder beside `folder`, then move it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*"):  # left by a crash; a live builder's is younger
        if time.time() - stale.stat().st_mtime > STALE_S:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        files = {}
        for a in ARRAYS:
            with atomic_open(tmp / f"{a}.npy", "wb") as f:  # fsynced before the folder is renamed
                np.save(f, arrays[a])
            files[f"{a}.npy"] = {"size": (tmp / f"{a}.npy").stat().st_size,
                                 "sha256": sha256_cached(tmp / f"{a}.npy")}
        atomic_write_text(tmp / STAMP, json.dumps({**meta, "files": files}, indent=1) + "\n")  # last: complete
        old = None
        if folder.exists():  # a damaged copy: move it aside, so a reader of it keeps its files
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(folder, old)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep its copy
            pass
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize_corpus(docs: Iterable[str], tokenizer, name: str) -> TokenizedCorpus:
    """Tokenise `docs` once and cache the result (memory-mapped .npy files).

    The cache key is `name` plus hashes of the documents and the tokenizer, so a
    changed corpus or tokenizer is never served stale arrays; a cached folder whose
    arrays do not match their stamp is tokenised again (with a notice), never used.
    """
    docs = list(docs)  # a generator would be used up by the fingerprint
    if not docs:
        raise ValueError(f"tokenize_corpus({name!r}): no documents")
    key = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name))}-{docs_fingerprint(docs)[:12]}-{tokenizer.fingerprint()[:12]}"
    folder = cache_dir() / "tokenized" / key
    problem = cache_problem(folder) if folder.exists() else "missing"
    if problem is not None:
        if problem != "missing":
            print(f"minilm: the tokenised cache {folder} {problem}; tokenising {name!r} again", file=sys.stderr)
        ids, starts, offsets = _tokenize(docs, tokenizer, name)
        dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
        _write_cache(folder, {"ids": ids.astype(dtype), "word_starts": starts, "doc_offsets": offsets},
                     {"name": str(name), "n_docs": len(docs), "n_tokens": len(ids),
                      "vocab_size": tokenizer.vocab_size})
        problem = cache_problem(folder)
        if problem is not None:  # only if something rewrites the folder while we read it
            raise RuntimeError(f"the tokenised cache {folder} {problem} right after it was written; "
                               f"delete the folder and run again")
    return TokenizedCorpus(*(np.load(folder / f"{a}.npy", mmap_mode="r") for a in ARRAYS))


def _tokenize(docs: Sequence[str], tokenizer, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def word_starts(text_and_ids):
        text, doc_ids = text_and_ids
        word = tokenizer.word_ids(text, doc_ids)  # (n,)
        flags = np.ones(len(word), dtype=bool)  # (n,)
        flags[1:] = word[1:] != word[:-1]
        return np.asarray(doc_ids, dtype=np.int64), flags

    ids, starts = [], []
    batch = 512
    # tiktoken and the pre-tokeniser regex both release the GIL, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            tqdm(total=len(docs), desc=f"tokenizing {name}", unit="doc", disable=None) as bar:
        for b in range(0, len(docs), batch):
            texts = [tokenizer.normalize(d) for d in docs[b:b + batch]]  # word_ids reads the normalised text
            # Any tokenizer: BPE, or an --init checkpoint's WordPiece (normalising twice changes nothing).
            encoded = tokenizer.encode_batch(texts)
            for doc_ids, flags in pool.map(word_starts, zip(texts, encoded)):
                ids.append(doc_ids)
                starts.append(flags)
            bar.update(len(texts))
            bar.set_postfix(tokens=f"{sum(map(len, ids)):,}", refresh=False)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    return np.concatenate(ids), np.concatenate(starts), offsets


# ---- rows -----------------------------------------------------------------------

def _joined(corpus: TokenizedCorpus, sep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All non-empty documents back to back with `sep` after each: (stream, is_sep), both
    (n + n_docs,), and the stream position of every corpus token, (n,)."""
    lengths = np.diff(corpus.doc_offsets)  # (n_docs,)
    n_docs = int((lengths > 0).sum())
    n = len(corpus.ids)
    doc_of_token = np.repeat(np.arange(len(lengths)), lengths)  # (n,)
    # Each token moves right by the number of separators before it: one per earlier non-empty doc.
    seps_before = np.cumsum(lengths > 0) - (lengths > 0)  # (n_docs,)
    pos = np.arange(n) + seps_before[doc_of_token]  # (n,)
    stream = np.full(n + n_docs, sep, dtype=np.int64)
    stream[pos] = corpus.ids
    is_sep = np.ones(n + n_docs, dtype=bool)
    is_sep[pos] = False
    return stream, is_sep, pos


def encoder_rows(corpus: TokenizedCorpus, seq_len: int, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed encoder rows `[CLS] t1 … t_{seq_len-2} [SEP]` over the whole corpus.

    Documents follow each other separated by `[SEP]` (so a row can hold several, and
    a long document continues on the next row); the tail that does not fill a row is
    dropped. Word ids number the words of each row from 0 (a word cut by a row edge
    keeps one id on each side); -1 marks [CLS] / [SEP]. Returns (input_ids, word_ids),
    both LongTensor (N, seq_len).
    """
    if not isinstance(seq_len, int) or seq_len < 3:
        raise ValueError(f"seq_len={seq_len!r}: must be an integer >= 3 ([CLS], a token, [SEP])")
    stream, is_sep, pos = _joined(corpus, tokenizer.sep_id)  # (S,)
    # Word number of every stream position: a new word at each word start and after each [SEP].
    starts = np.zeros(len(stream), dtype=bool)
    starts[pos] = np.asarray(corpus.word_starts, dtype=bool)
    words = np.cumsum(starts)  # (S,)
    width = seq_len - 2
    n_rows = len(stream) // width
    if n_rows == 0:
        raise ValueError(f"seq_len={seq_len}: the corpus has only {len(stream)} tokens, not enough for one row")
    body = stream[:n_rows * width].reshape(n_rows, width)  # (N, seq_len - 2)
    word = words[:n_rows * width].reshape(n_rows, width)  # (N, seq_len - 2)
    word = word - word[:, :1]  # (N, seq_len - 2) from 0 in every row
    word[is_sep[:n_rows * width].reshape(n_rows, width)] = -1
    ids = np.empty((n_rows, seq_len), dtype=np.int64)  # (N, seq_len)
    ids[:, 0] = tokenizer.cls_id
    ids[:, 1:-1] = body
    ids[:, -1] = tokenizer.sep_id
    word_ids = np.full((n_rows, seq_len), -1, dtype=np.int64)  # (N, seq_len)
    word_ids[:, 1:-1] = word
    return torch.from_numpy(ids), torch.from_numpy(word_ids)


def token_stream(corpus: TokenizedCorpus, tokenizer) -> torch.Tensor:
    """Every document back to back with `<|endoftext|>` after each: LongTensor (S,), what
    `decoder_rows` cuts into rows and `CausalLMWindows` samples windows from."""
    return torch.from_numpy(_joined(corpus, tokenizer.eot_id)[0])


def decoder_rows(corpus: TokenizedCorpus, seq_len: int, tokenizer) -> torch.Tensor:
    """Rows of `seq_len + 1` consecutive tokens (inputs are row[:-1], targets row[1:]).

    Documents follow each other with `<|endoftext|>` after each; row i starts at
    token i * seq_len, so consecutive rows share one token and every token is a
    target exactly once. LongTensor (N, seq_len + 1).
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r}: must be a positive integer")
    stream, _, _ = _joined(corpus, tokenizer.eot_id)  # (S,)
    n_rows = (len(stream) - 1) // seq_len
    if n_rows <= 0:
        raise ValueError(f"seq_len={seq_len}: the corpus has only {len(stream)} tokens, not enough for one row")
    index = np.arange(n_rows)[:, None] * seq_len + np.arange(seq_len + 1)  # (N, seq_len + 1)
    return torch.from_numpy(stream[index])
