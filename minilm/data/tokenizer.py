"""A byte-level BPE tokenizer: trained here in pure Python, served by tiktoken.

Design choices:

- Byte level. Text is UTF-8 bytes, the first 256 tokens are the 256 byte values, so
  every string encodes losslessly (no unknown token is ever needed) and
  `decode(encode(s)) == s` for any valid Unicode `s` when `lowercase=False`
  (control characters included; lone surrogates become U+FFFD).
- GPT-2 pre-tokenisation. A regex cuts text into pre-tokens ("words": a letter run
  with its leading space, a digit run, a punctuation run, whitespace); merges never
  cross a pre-token, so training works on a table of word counts, not on the text.
  Counting (`count_words`) runs the pattern only on distinct chunks of text (a word
  with the space before it), which the standard library's `re` finds faster.
- Training (`bpe_merges`) is the textbook merge loop made incremental: pair counts
  are kept up to date when a merge rewrites the words that contain it (an index
  pair -> words finds them), and a heap with lazy invalidation finds the most
  frequent pair. Ties go to the smallest (left, right) pair of byte strings (or,
  with `tie_break="largest"`, the largest, as Stanford CS336 asks), so training is
  deterministic. A merge whose result already exists (abc from a+bc, then from
  ab+c) is still applied but adds no token, as in the `tokenizers` library.
- Encoding is tiktoken's: the learned tokens become its mergeable ranks (rank =
  creation order). tiktoken merges the adjacent pair whose concatenation has the
  lowest rank, which is the learned merge order for all but rare duplicate-merge
  cases; it is exact for GPT-2's own ranks (`Tokenizer.gpt2()`).
- Special tokens `<|endoftext|> [PAD] [CLS] [SEP] [MASK] [UNK]` sit at the top of
  the id range, in that order (so `<|endoftext|>` is 50256 for GPT-2 as it must be),
  followed by the user's own (`train(..., special_tokens=["<|im_start|>"])`), which
  the file keeps. By default `encode` treats text such as "[MASK]" as ordinary text,
  so user text can never forge a special token; `allowed_special` ("all" or a set)
  parses them and `disallowed_special` refuses them, as in tiktoken
  (`minilm.data.text_cuts`). Training cuts their text out of the corpus.
- `encode_iterable` encodes a stream (a file's lines) in bounded memory: it cuts the
  stream only after a non-space character followed by a space, where GPT-2's
  pre-tokens never cross, so its ids are those of the whole text.
- `lowercase=True` lower-cases text, once any special tokens are found in it (stored
  in the saved file, so a model and its tokenizer stay in step). It is the simple way
  to make a cased pretraining corpus (IMDB) and a lower-cased fine-tuning set
  (rt-polarity) look alike; decoding cannot bring the case back.
- Word ids: the index of the pre-token each token came from. Token boundaries
  refine pre-token boundaries, so they are found by comparing byte offsets
  (vectorised), not by encoding word by word. Whole-word and span masking use them.
- One JSON file holds everything (`save`/`load`); `for_corpus` trains once per
  corpus, vocabulary size and casing, and caches the file.
"""
from __future__ import annotations

import base64
import binascii
import functools
import gc
import hashlib
import heapq
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import regex
import tiktoken
from tqdm.auto import tqdm

from minilm.data import text_cuts
from minilm.store.atomic import atomic_write_text

# GPT-2's pre-tokenisation pattern (tiktoken's r50k_base): contractions, letter runs,
# digit runs and punctuation runs each with an optional leading space, then whitespace.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The whitespace of GPT-2's pattern (the regex module's \s, Unicode's White_Space), spelled out for the
# standard library's re, whose \s also takes \x1c-\x1f. The tests check it against regex on every code point.
WHITESPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Chunks of text that GPT-2's pieces never cross: a run of non-whitespace with the space before it; a run
# of whitespace (less its last character when a word follows); that last character, when not a space.
_CHUNK = re.compile(rf" ?[^{WHITESPACE}]+|[{WHITESPACE}]+(?![^{WHITESPACE}])|[{WHITESPACE}]")
# encode_iterable's safe places: after a non-space character, before a space (see _CHUNK).
_LAST_PLACE = re.compile(rf"(?s).*[^{WHITESPACE}](?=[{WHITESPACE}])")
SPECIAL_TOKENS = ("<|endoftext|>", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
FORMAT = "minilm-tokenizer/1"
# Whisper's copy of GPT-2's ranks (pinned in minilm/store/fetch.py): the same file tiktoken checks for r50k_base.
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def count_words(texts: Iterable[str], *, lowercase: bool = False, special_tokens: Iterable[str] = ()) -> Counter:
    """Pre-tokenise `texts` with GPT-2's pattern and count the pre-tokens: {word (str): occurrences}.

    The text of `special_tokens` is cut out first, so no word spans or contains one (a corpus
    whose documents are joined by "<|endoftext|>" learns no merge across the join).

    Equal to counting `regex.findall(GPT2_PATTERN, text)` over all texts, computed faster:
    the standard library's `re` first cuts each text into chunks that GPT-2's pieces never
    cross (a run of non-whitespace with the space before it, or whitespace), the chunks are
    counted, and only the distinct chunks go through GPT-2's pattern. One thread: the work is
    under the GIL, and threads only queue for it when the machine is busy.
    """
    cut = _splitter(special_tokens)
    chunks: Counter = Counter()
    for text in tqdm(texts, desc="counting words", unit="doc", disable=None):
        for part in cut(text):
            chunks.update(_CHUNK.findall(part.lower() if lowercase else part))
    pattern = regex.compile(GPT2_PATTERN)
    counts: Counter = Counter()
    for chunk, n in chunks.items():
        for word in pattern.findall(chunk):
            counts[word] += n
    return counts


def _splitter(special_tokens: Iterable[str]):
    """text -> the pieces of text between occurrences of `special_tokens` (all of it when it holds none)."""
    specials = sorted(set(special_tokens), key=lambda s: (-len(s), s))  # the longest wins where two overlap
    if not specials:
        return lambda text: (text,)
    pattern = re.compile("|".join(map(re.escape, specials)))
    return lambda text: pattern.split(text) if any(s in text for s in specials) else (text,)


TIE_BREAKS = ("smallest", "largest")


def _without_cycle_collector(fn):
    """Run `fn` with Python's cyclic garbage collector paused (and restored after): learning merges
    makes millions of small lists and tuples, none in a cycle, and the collector's passes over
    them cost about a tenth of the time. Nothing is leaked: reference counting frees them."""
    @functools.wraps(fn)
    def paused(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return paused


@_without_cycle_collector


def bpe_merges(word_counts: dict[bytes, int], n_tokens: int, *,
               tie_break: str = "smallest") -> list[tuple[bytes, bytes]]:
    """Learn byte-pair merges from a table of word counts.

    Contract: starting from the 256 single bytes, repeatedly merge the adjacent pair
    of tokens with the highest total count over all words (a word counts as often as
    it occurs; a pair occurring twice in a word counts twice); a merge rewrites every
    word left to right, non-overlapping. Stop when `n_tokens` distinct tokens exist (a
    merge whose result already exists adds none) or no pair is left. Returns the merges
    in order, as (left, right) byte strings.

    The tie-break rule: among pairs of equal count, `tie_break="smallest"` takes the
    smallest (left, right) as Python orders tuples of byte strings (left first, then
    right; a byte string sorts before its extensions), which is `minilm.data.bpe`'s
    reference; "largest" takes the largest, the rule of Stanford CS336's BPE assignment.

    Incremental: pair counts are updated only in the words a merge touches (found
    through `where`, an index pair -> words that may hold stale entries), and the
    heap holds upper bounds of counts: an entry that no longer matches its pair's
    count is re-queued at the current count when popped. Where a word holds the pair
    once (almost always) only the two neighbouring pairs change, and the word is
    rewritten in place.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break={tie_break!r}: expected one of {TIE_BREAKS}")
    # The heap pops the smallest entry, so "largest" orders tokens by a key that reverses byte order: each
    # byte b becomes 255 - b and an end marker 256 follows, so that a byte string sorts after its extensions.
    key = (lambda tok: tok) if tie_break == "smallest" else (lambda tok: (*(255 - b for b in tok), 256))
    vocab = [bytes([b]) for b in range(256)]  # id -> bytes
    keys = [key(tok) for tok in vocab]  # id -> tie-break key
    index = {tok: i for i, tok in enumerate(vocab)}  # bytes -> id
    words = [list(w) for w in word_counts]  # each word as a list of token ids
    freqs = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], list[int]] = defaultdict(list)  # a word may be listed twice: visits are checked
    for i, (w, n) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += n
            where[pair].append(i)
    heap = [(-c, keys[a], keys[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[bytes, bytes]] = []
    bar = tqdm(total=n_tokens, initial=len(vocab), desc="BPE merges", unit="tok", disable=None)
    while len(vocab) < n_tokens and heap:
        neg, key_a, key_b, a, b = heapq.heappop(heap)
        count = pair_counts.get((a, b), 0)
        if count != -neg:  # stale entry
            if 0 < count < -neg:
                heapq.heappush(heap, (-count, key_a, key_b, a, b))
            continue
        merges.append((vocab[a], vocab[b]))
        merged = vocab[a] + vocab[b]
        t = index.get(merged)
        if t is None:
            t = index[merged] = len(vocab)
            vocab.append(merged)
            keys.append(key(merged))
            bar.update(1)
        touched = set()  # pairs that contain t: the only ones whose count can grow
        for i in where.pop((a, b)):
            w = words[i]
            n_a = w.count(a)
            if not n_a:  # stale index entry: the pair left this word earlier
                continue
            end = len(w) - 1
            if n_a == 1:  # the pair at most once: only its neighbours' pairs change
                k = w.index(a)
                if k == end or w[k + 1] != b:
                    continue
                n = freqs[i]
                if k:
                    pair_counts[w[k - 1], a] -= n
                    pair = (w[k - 1], t)
                    pair_counts[pair] += n
                    touched.add(pair)
                    where[pair].append(i)
                if k < end - 1:
                    pair_counts[b, w[k + 2]] -= n
                    pair = (t, w[k + 2])
                    pair_counts[pair] += n
                    touched.add(pair)
                    where[pair].append(i)
                w[k:k + 2] = (t,)
                continue
            new, j = [], 0
            while j <= end:
                if j < end and w[j] == a and w[j + 1] == b:
                    new.append(t)
                    j += 2
                else:
                    new.append(w[j])
                    j += 1
            if len(new) == len(w):
                continue
            n = freqs[i]
            for pair in zip(w, w[1:]):
                pair_counts[pair] -= n
            for pair in zip(new, new[1:]):
                pair_counts[pair] += n
                if t in pair:
                    touched.add(pair)
                    where[pair].append(i)
            words[i] = new
        del pair_counts[(a, b)]  # every occurrence is merged now (only its scratch count is left)
        for pair in touched:
            c = pair_counts[pair]
            if c > 0:
                heapq.heappush(heap, (-c, keys[pair[0]], keys[pair[1]], pair[0], pair[1]))
        bar.set_postfix(count=-neg, refresh=False)
    bar.close()
    return merges


class Tokenizer:
    """Byte-level BPE over tiktoken, with special tokens, casing option and word ids.

    `ranks` lists the token byte strings in rank order; ids 0..len(ranks)-1 are
    those tokens and the special tokens follow: the built-in six (`SPECIAL_TOKENS`),
    then the user's own from `special_tokens` (listing one of the six there is
    harmless). `self.special_tokens` is {text: id} of all of them.
    """

    def __init__(self, ranks: Sequence[bytes], *, lowercase: bool = False, pattern: str = GPT2_PATTERN,
                 name: str = "minilm-bpe", special_tokens: Sequence[str] = ()):
        self.ranks = list(ranks)
        if (not all(isinstance(t, bytes) for t in self.ranks) or len(set(self.ranks)) != len(self.ranks)
                or not set(bytes([b]) for b in range(256)) <= set(self.ranks)):
            raise ValueError("ranks: must be distinct byte strings including all 256 single bytes")
        self.lowercase = bool(lowercase)
        self.pattern = pattern
        self.name = name
        n = len(self.ranks)
        # {text: id} of every special token, in id order: the built-in six, then the user's.
        self.special_tokens = {s: n + i for i, s in enumerate(SPECIAL_TOKENS + _user_specials(special_tokens))}
        self.encoding = tiktoken.Encoding(
            name, pat_str=pattern, mergeable_ranks={tok: i for i, tok in enumerate(self.ranks)},
            special_tokens=self.special_tokens)
        self._pat = regex.compile(pattern)
        # Byte length of every id, to turn token ids into byte offsets without decoding.
        self._token_bytes = np.array([len(t) for t in self.ranks] + [len(s.encode()) for s in self.special_tokens],
                                     dtype=np.int64)

    # ---- construction -------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, lowercase: bool = False,
              special_tokens: Sequence[str] = (), tie_break: str = "smallest") -> "Tokenizer":
        """Learn a BPE of `vocab_size` ids (special tokens included) from `texts`.

        `special_tokens` adds the user's own (e.g. "<|im_start|>") after the built-in six;
        they are saved with the tokenizer. Every special token's text in `texts` is a
        boundary, never part of a learned token. Deterministic: the same texts give the same
        tokenizer, in any order. `tie_break` picks between pairs of equal count (see `bpe_merges`).
        """
        specials = SPECIAL_TOKENS + _user_specials(special_tokens)
        minimum = 256 + len(specials)
        if not isinstance(vocab_size, int) or vocab_size < minimum:
            raise ValueError(f"vocab_size={vocab_size!r}: must be an integer >= {minimum} "
                             f"(256 byte tokens + {len(specials)} special tokens)")
        counts = count_words(texts, lowercase=lowercase, special_tokens=specials)
        if not counts:
            raise ValueError("Tokenizer.train: no text to learn from (the texts are empty)")
        # Sorted so the internal state (not only the result) is the same run to run.
        word_counts = {w.encode("utf-8"): n for w, n in sorted(counts.items())}
        merges = bpe_merges(word_counts, vocab_size - len(specials), tie_break=tie_break)
        ranks = [bytes([b]) for b in range(256)]
        seen = set(ranks)
        for left, right in merges:
            if left + right not in seen:
                seen.add(left + right)
                ranks.append(left + right)
        return cls(ranks, lowercase=lowercase, special_tokens=specials)

    @classmethod
    def gpt2(cls) -> "Tokenizer":
        """GPT-2's exact encoding (50,257 ids; `<|endoftext|>` = 50256), fetched offline.

        The rank file comes out of openai-whisper's sdist (see `minilm.store.fetch`); the
        five BERT-style special tokens are appended after `<|endoftext|>`.
        """
        from minilm.store.fetch import fetch_file

        path = fetch_file("openai-whisper", "whisper/assets/gpt2.tiktoken")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != GPT2_RANKS_SHA256:
            raise ValueError(f"{path}: sha256 {digest} does not match GPT-2's rank file ({GPT2_RANKS_SHA256}); "
                             f"delete it so it is fetched again")
        pairs = [line.split() for line in data.splitlines() if line]
        ranks = [b""] * len(pairs)
        for token, rank in pairs:
            ranks[int(rank)] = base64.b64decode(token)
        return cls(ranks, lowercase=False, name="gpt2")

    @classmethod
    def for_corpus(cls, name: str, vocab_size: int, *, lowercase: bool = True) -> "Tokenizer":
        """The tokenizer trained on `load_corpus(name)`: trained once, then loaded from the cache.

        Named sources are pinned by checksum, so their key is the name; a local path
        is keyed by the hash of its documents, so editing the files retrains.
        """
        from minilm.data import load as data
        from minilm.data.text import docs_fingerprint

        docs = None
        if name in data.CORPORA:
            key = name
        else:
            docs = data.load_corpus(name)
            key = f"{Path(name).name or 'corpus'}-{docs_fingerprint(docs)[:12]}"
        path = data.cache_dir() / "tokenizers" / f"{key}-{vocab_size}-{'uncased' if lowercase else 'cased'}.json"
        if path.exists():
            return cls.load(path)
        print(f"minilm: training a {vocab_size:,}-token BPE on {name} (once; cached as {path})", file=sys.stderr)
        tok = cls.train(data.load_corpus(name) if docs is None else docs, vocab_size, lowercase=lowercase)
        tok.save(path)
        return tok

    # ---- persistence --------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "lowercase": self.lowercase, "pattern": self.pattern,
                "special_tokens": list(self.special_tokens),
                "ranks": [base64.b64encode(t).decode("ascii") for t in self.ranks]}

    def save(self, path) -> None:
        """Write the tokenizer as one JSON file (atomically)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Read a file written by `save`: a byte-level BPE, or a WordPiece (`minilm.data.wordpiece`)."""
        from minilm.data import wordpiece

        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a tokenizer file ({e})") from None
        if isinstance(d, dict) and d.get("format") == wordpiece.FORMAT:
            return wordpiece.WordPiece.from_dict(d)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{path}: format={d.get('format') if isinstance(d, dict) else None!r}; "
                             f"expected {FORMAT!r} (a file written by Tokenizer.save)")
        return cls._from_dict(d, path)

    @classmethod
    def _from_dict(cls, d: dict, path) -> "Tokenizer":
        """The tokenizer a `to_dict` describes; a hand-edited file gets one line naming it and what is wrong."""
        missing = [k for k in ("ranks", "special_tokens", "lowercase", "pattern", "name") if k not in d]
        if missing:
            raise ValueError(f"{path}: no {', '.join(map(repr, missing))} (a file written by Tokenizer.save has them)")
        specials = d["special_tokens"]
        if (not isinstance(specials, list) or specials[:len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS)
                or len(set(map(str, specials))) != len(specials)):
            raise ValueError(f"{path}: special_tokens={specials!r}; expected {list(SPECIAL_TOKENS)} first, "
                             f"then any of the user's own, each once")
        if not isinstance(d["ranks"], list):
            raise ValueError(f"{path}: ranks must be a list of base64 strings, got {type(d['ranks']).__name__}")
        ranks = []
        for i, token in enumerate(d["ranks"]):
            try:
                ranks.append(base64.b64decode(token, validate=True))
            except (binascii.Error, TypeError, ValueError):
                raise ValueError(f"{path}: ranks[{i}]={token!r} is not base64") from None
        try:
            regex.compile(d["pattern"])
        except (regex.error, TypeError) as e:
            raise ValueError(f"{path}: pattern {d['pattern']!r} is not a regular expression ({e})") from None
        try:
            return cls(ranks, lowercase=d["lowercase"], pattern=d["pattern"], name=d["name"],
                       special_tokens=specials[len(SPECIAL_TOKENS):])
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    # ---- Hugging Face tokenizer files -------------------------------------------------

    @classmethod
    def from_hf(cls, path):
        """The tokenizer of a Hugging Face folder (or of its tokenizer.json / vocab.txt / vocab.json).

        WordPiece (BERT family: tokenizer.json with a WordPiece model, or vocab.txt) comes back
        as a `minilm.data.wordpiece.WordPiece`; byte-level BPE (GPT-2: tokenizer.json with a BPE
        model, or vocab.json) as a `Tokenizer`, its ranks in id order, <|endoftext|> right
        after them, then minilm's other special tokens.
        """
        from minilm.data.wordpiece import WordPiece

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such tokenizer folder or file")
        folder = path if path.is_dir() else path.parent
        files = [path] if path.is_file() else [folder / n for n in ("tokenizer.json", "vocab.txt", "vocab.json")
                                               if (folder / n).is_file()]
        if not files:
            raise FileNotFoundError(f"{path}: no tokenizer.json, vocab.txt or vocab.json (a Hugging Face tokenizer)")
        f = files[0]
        kind = json.loads(f.read_text(encoding="utf-8")).get("model", {}).get("type") if f.name == "tokenizer.json" \
            else ("WordPiece" if f.suffix == ".txt" else "BPE")
        if kind == "WordPiece":
            return WordPiece.from_hf(f)
        if kind != "BPE":
            raise ValueError(f"{f}: model type {kind!r}; minilm reads WordPiece (BERT) and byte-level BPE (GPT-2)")
        lowercase = False
        if f.name == "tokenizer.json":
            d = json.loads(f.read_text(encoding="utf-8"))
            pre = (d.get("pre_tokenizer") or {}).get("type")
            if pre != "ByteLevel" or (d.get("pre_tokenizer") or {}).get("add_prefix_space"):
                raise ValueError(f"{f}: pre_tokenizer {d.get('pre_tokenizer')}; minilm's BPE is GPT-2's byte level "
                                 f"(ByteLevel, add_prefix_space false)")
            lowercase = (d.get("normalizer") or {}).get("type") == "Lowercase"
            vocab = d["model"]["vocab"]
            specials = {t["content"]: t["id"] for t in d.get("added_tokens", []) if t.get("special")}
            vocab = {**specials, **vocab}  # a special token may be listed only among the added ones
        else:
            vocab = json.loads(f.read_text(encoding="utf-8"))
            config = folder / "tokenizer_config.json"
            extra = json.loads(config.read_text(encoding="utf-8")).get("additional_special_tokens", []) \
                if config.is_file() else []
            # GPT-2's <|endoftext|>, and ours when save_hf wrote the file (with the user's in its config)
            specials = set(SPECIAL_TOKENS) | {t["content"] if isinstance(t, dict) else t for t in extra}
        chars = {c: b for b, c in _byte_chars().items()}
        ordinary = sorted((i, t) for t, i in vocab.items() if t not in specials)
        if [i for i, _ in ordinary] != list(range(len(ordinary))):
            raise ValueError(f"{f}: the non-special tokens' ids are not 0..{len(ordinary) - 1}")
        try:
            ranks = [bytes(chars[c] for c in t) for _, t in ordinary]
        except KeyError as e:
            raise ValueError(f"{f}: token character {e.args[0]!r} is not in GPT-2's byte alphabet: "
                             f"not a byte-level BPE") from None
        users = [t for i, t in sorted((i, t) for t, i in vocab.items() if t in specials) if t not in SPECIAL_TOKENS]
        tok = cls(ranks, lowercase=lowercase, name=folder.name or "bpe", special_tokens=users)
        for t, i in tok.special_tokens.items():
            if t in vocab and vocab[t] != i:
                raise ValueError(f"{f}: special token {t!r} has id {vocab[t]}; minilm's BPE puts the special tokens "
                                 f"right after the {len(ranks)} ordinary ones, {list(tok.special_tokens)} in that "
                                 f"order, so {t!r} would be {i}")
        return tok

    def save_hf(self, folder) -> None:
        """vocab.json, merges.txt and tokenizer.json (byte-level BPE, with a Lowercase normalizer when
        uncased): transformers' AutoTokenizer reads them and gives the same ids as `encode`."""
        folder = Path(folder)
        chars = _byte_chars()
        name = lambda t: "".join(chars[b] for b in t)  # noqa: E731
        vocab = {name(t): i for i, t in enumerate(self.ranks)} | self.special_tokens
        merges = [(name(a), name(b)) for a, b in _merges_of(self.ranks)]
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                           encoding="utf-8")
        level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        spec = {"version": "1.0", "truncation": None, "padding": None,
                "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                                  "normalized": False, "special": True} for t, i in self.special_tokens.items()],
                "normalizer": {"type": "Lowercase"} if self.lowercase else None, "pre_tokenizer": level,
                "post_processor": None, "decoder": level,
                "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                          "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                          "ignore_merges": False, "vocab": vocab, "merges": [list(m) for m in merges]}}
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        config = {"tokenizer_class": "PreTrainedTokenizerFast",  # the class that runs tokenizer.json as written
                  "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "[UNK]",
                  "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
                  "add_prefix_space": False}
        users = list(self.special_tokens)[len(SPECIAL_TOKENS):]
        if users:
            config["additional_special_tokens"] = users
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    def fingerprint(self) -> str:
        """A hash of everything that decides the encoding (cache key for tokenised corpora)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # ---- ids ----------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.ranks) + len(self.special_tokens)

    @property
    def eot_id(self) -> int:
        return self.special_tokens["<|endoftext|>"]

    @property
    def pad_id(self) -> int:
        return self.special_tokens["[PAD]"]

    @property
    def cls_id(self) -> int:
        return self.special_tokens["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.special_tokens["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self.special_tokens["[MASK]"]

    @property
    def unk_id(self) -> int:
        return self.special_tokens["[UNK]"]

    @property
    def special_ids(self) -> list[int]:
        return list(self.special_tokens.values())

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    # ---- encoding -----------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """What the tokenizer actually sees: `text`, lower-cased if `lowercase`, with
        lone surrogates (a Python str that is not valid Unicode, e.g. from
        `errors="surrogateescape"`) replaced by U+FFFD, as tiktoken itself does."""
        text = _valid_unicode(text)
        return text.lower() if self.lowercase else text

    def encode(self, text: str, *, allowed_special=(), disallowed_special=()) -> list[int]:
        """Token ids of `text`.

        A special token's text is ordinary text unless asked for, in tiktoken's convention:
        the special tokens in `allowed_special` ("all", or a set of them) become their token,
        and those in `disallowed_special` ("all": every one not allowed, or a set) make
        `encode` raise ValueError. By default neither (tiktoken's default raises): user text
        that reads "[MASK]" cannot forge a mask. Special tokens are matched before
        lower-casing, so "[MASK]" is found in an uncased tokenizer's input too.
        """
        if not allowed_special and not disallowed_special:
            return self.encoding.encode_ordinary(self.normalize(text))
        allowed, disallowed = text_cuts.resolve(allowed_special, disallowed_special, self.special_tokens)
        return self._encode(text, allowed, disallowed)

    def _encode(self, text: str, allowed: frozenset, disallowed: frozenset) -> list[int]:
        parts = text_cuts.split_specials(_valid_unicode(text), allowed, disallowed)
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encoding.encode_ordinary(part.lower() if self.lowercase else part))
        return ids

    def encode_batch(self, texts: Sequence[str], *, allowed_special=(), disallowed_special=()) -> list[list[int]]:
        """`encode` over many texts (tiktoken's threads)."""
        if not allowed_special and not disallowed_special:
            return self.encoding.encode_ordinary_batch([self.normalize(t) for t in texts])
        allowed, disallowed = text_cuts.resolve(allowed_special, disallowed_special, self.special_tokens)
        return [self._encode(t, allowed, disallowed) for t in texts]

    def encode_iterable(self, texts: Iterable[str], *, allowed_special=(),
                        disallowed_special=()) -> Iterator[int]:
        """The ids of `"".join(texts)`, yielded as they are ready: a file or any stream of lines or
        chunks, however large, in memory bounded by one item plus the longest word (not by the total).

        Equal to `encode` of the whole text, with the same special-token arguments (a
        disallowed special token raises when the stream reaches it, after the ids before it).
        The stream is cut only after a non-space character followed by a space: GPT-2's
        pre-tokens never span such a place, and lower-casing does not look across it. A
        place inside a special token that is parsed or refused is not used.
        """
        if self.pattern != GPT2_PATTERN:
            raise ValueError(f"encode_iterable: knows where GPT-2's pattern may be cut, not {self.pattern!r}")
        allowed, disallowed = text_cuts.resolve(allowed_special, disallowed_special, self.special_tokens)
        return self._stream(texts, allowed, disallowed)  # the arguments are checked now, not at the first id

    def _stream(self, texts: Iterable[str], allowed: frozenset, disallowed: frozenset) -> Iterator[int]:
        for piece in text_cuts.regroup(texts, _LAST_PLACE, allowed | disallowed):
            yield from self._encode(piece, allowed, disallowed)

    def word_ids(self, text: str, ids: Sequence[int]) -> np.ndarray:
        """For `ids == encode(text)`: the index of the pre-token each token lies in, (n_tokens,) int64.

        `text` must already be normalised. Computed from byte offsets: the token
        starts (cumulative token byte lengths) are located among the pre-token starts.
        """
        pieces = self._pat.findall(text, concurrent=True)  # releases the GIL: callers may use threads
        if text.isascii():
            lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        else:
            lengths = np.fromiter((len(p.encode("utf-8")) for p in pieces), dtype=np.int64, count=len(pieces))
        piece_starts = np.cumsum(lengths) - lengths  # (n_pieces,)
        tok_lengths = self._token_bytes[np.asarray(ids, dtype=np.int64)]  # (n_tokens,)
        tok_starts = np.cumsum(tok_lengths) - tok_lengths  # (n_tokens,)
        return np.searchsorted(piece_starts, tok_starts, side="right") - 1

    def encode_with_word_ids(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids and, per token, the index of its pre-token (its "word")."""
        text = self.normalize(text)
        ids = self.encoding.encode_ordinary(text)
        return ids, self.word_ids(text, ids).tolist()

    def encode_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
        """Encode pre-split words (NER): each word as in running text, i.e. with a
        leading space except the first. Word ids index `words`. An empty word would
        get no token (and lose its label), so it is an error.

        (Encoding word by word is faster here than encoding the joined sentence and
        mapping offsets back: sentences are short and numpy's per-call cost dominates.)
        """
        ids: list[int] = []
        word_ids: list[int] = []
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word:
                raise ValueError(f"words[{i}]={word!r}: every word must be a non-empty string")
            piece = self.encoding.encode_ordinary(self.normalize(word if i == 0 else " " + word))
            ids.extend(piece)
            word_ids.extend([i] * len(piece))
        return ids, word_ids

    def decode(self, ids) -> str:
        """Text of `ids` (special tokens as their strings; a cut UTF-8 sequence becomes U+FFFD)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"decode: id {bad[0]} out of range; ids must be in [0, {self.vocab_size})")
        return self.encoding.decode(ids)

    def token_str(self, id: int) -> str:
        """A readable form of one token, for display: its text, with bytes that are
        not whole UTF-8 characters shown as \\xNN."""
        if not 0 <= id < self.vocab_size:
            raise ValueError(f"token_str: id {id} out of range; ids must be in [0, {self.vocab_size})")
        return self.encoding.decode_single_token_bytes(id).decode("utf-8", errors="backslashreplace")


def _valid_unicode(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (what tiktoken does before encoding)."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _user_specials(special_tokens: Sequence[str]) -> tuple[str, ...]:
    """The user's special tokens beyond the built-in six (which may be listed too, and are skipped)."""
    if isinstance(special_tokens, str):
        raise ValueError(f"special_tokens={special_tokens!r}: expected a list of strings, e.g. [{special_tokens!r}]")
    tokens = tuple(special_tokens)
    bad = [t for t in tokens if not isinstance(t, str) or not t]
    if bad:
        raise ValueError(f"special_tokens: {bad[0]!r} is not a non-empty string")
    repeated = sorted({t for t in tokens if tokens.count(t) > 1})
    if repeated:
        raise ValueError(f"special_tokens: {repeated} listed more than once")
    return tuple(t for t in tokens if t not in SPECIAL_TOKENS)


def _byte_chars() -> dict[int, str]:
    """GPT-2's printable alphabet for bytes in vocab.json: printable Latin-1 bytes stand for
    themselves; the other 68 (controls, space, ...) are shifted to U+0100 onwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = chr(256 + n)
    return chars


def _merges_of(ranks: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """The merge that made each token after the 256 bytes: BPE its bytes with only the lower ranks;
    the two pieces left are the merge (what merges.txt lists, in rank order)."""
    rank = {t: i for i, t in enumerate(ranks)}
    merges = []
    for r, token in enumerate(ranks[256:], start=256):
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pair_ranks = [rank.get(a + b, r) for a, b in zip(parts, parts[1:])]
            best = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[best] >= r:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {r}) is not a merge of two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges
