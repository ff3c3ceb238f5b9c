"""Metrics for the fine-tuning tasks: how the field scores sentence and token classification.

Design choices:
- Plain Python and numpy over lists of labels: metrics run once per evaluation, on
  gathered predictions, so clarity beats speed. Torch tensors are accepted and converted.
- Sentence classification: accuracy, macro-F1 (the unweighted mean of per-class F1 over
  the classes seen in gold or prediction, as scikit-learn does), a per-class report and a
  confusion matrix with a PNG picture (of the 20 most frequent classes when there are more:
  a 1,000-class picture would take minutes and gigabytes to draw, and nobody could read it).
- Named entities are scored as *entities*, not tags, in the conlleval convention for IOB2:
  an entity is a maximal run "B-T I-T I-T…" and, as conlleval does, an "I-T" that follows
  "O" or a different type opens a new entity instead of being thrown away. A predicted
  entity counts only if its type, start and end all match a gold one. This is exactly
  seqeval's default mode (tests prove it on random tag sequences); seqeval itself is a
  test-only dependency.
- Scores over seeds are summarised as mean ± sample standard deviation (`mean_std`), one
  definition for every lesson and comparison.
- Undefined ratios (no predicted entities, no gold entities) are 0, as in seqeval.
- Inputs that are not what they claim (lengths differ, a tag outside IOB2) fail with a
  message naming the sentence and the tag.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

Entity = tuple[str, int, int]  # (type, first word, last word), both ends inclusive


def _as_list(x) -> list:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _check_pair(gold: Sequence, pred: Sequence) -> tuple[list, list]:
    gold, pred = _as_list(gold), _as_list(pred)
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items but pred has {len(pred)}: they must align one to one")
    return gold, pred


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts; 0 where a ratio is undefined (seqeval's zero_division=0)."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


# ---------------------------------------------------------------- sentence classification


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Fraction of positions where pred == gold. Empty input is an error, not 0 or 1."""
    gold, pred = _check_pair(gold, pred)
    if not gold:
        raise ValueError("accuracy of an empty set is undefined: gold and pred are empty")
    return sum(g == p for g, p in zip(gold, pred)) / len(gold)


def perplexity(mean_loss: float) -> float:
    """exp(mean token cross-entropy in nats); the language-model score."""
    return math.exp(min(mean_loss, 700.0))  # past exp(700) a float overflows: report a huge number


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator) of repeated runs' scores.

    This is how the lessons and `minilm.downstream.compare` summarise one arm over seeds: the spread is
    the seed-to-seed noise, so a gap between two arms smaller than it says nothing. One value
    has no spread to estimate and gets 0.0; no values at all is an error.
    """
    values = [float(v) for v in _as_list(values)]
    if not values:
        raise ValueError("mean_std of no values is undefined: pass at least one score")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def per_class_scores(gold: Sequence[int], pred: Sequence[int]) -> dict[int, dict]:
    """{class: {"precision", "recall", "f1", "support"}} for every class in gold or pred."""
    gold, pred = _check_pair(gold, pred)
    tp, n_pred, n_true = Counter(), Counter(pred), Counter(gold)
    for g, p in zip(gold, pred):
        tp[g] += g == p
    out = {}
    for c in sorted(set(gold) | set(pred)):
        p, r, f = _prf(tp[c], n_pred[c], n_true[c])
        out[c] = {"precision": p, "recall": r, "f1": f, "support": n_true[c]}
    return out


def macro_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or pred."""
    scores = per_class_scores(gold, pred)
    if not scores:
        raise ValueError("macro-F1 of an empty set is undefined: gold and pred are empty")
    return float(np.mean([s["f1"] for s in scores.values()]))


def confusion_matrix(gold: Sequence[int], pred: Sequence[int], num_labels: int) -> np.ndarray:
    """(C, C) int64 counts; row = gold class, column = predicted class."""
    gold, pred = _check_pair(gold, pred)
    bad = [x for x in gold + pred if not 0 <= x < num_labels]
    if bad:
        raise ValueError(f"label {bad[0]!r} is outside [0, num_labels={num_labels})")
    m = np.zeros((num_labels, num_labels), dtype=np.int64)  # (C, C)
    np.add.at(m, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return m


PLOT_CLASSES = 20  # a confusion plot shows at most this many classes: a 1,000-class picture is unreadable and huge


def most_frequent_classes(matrix: np.ndarray, label_names: Sequence[str], k: int = PLOT_CLASSES):
    """The (k+1, k+1) matrix of the k most frequent gold classes, every other class summed into
    "(other)", and its label names; the matrix as it is when it has k classes or fewer."""
    matrix = np.asarray(matrix)
    n = len(label_names)
    if n <= k:
        return matrix, list(label_names)
    keep = np.sort(np.argsort(-matrix.sum(axis=1), kind="stable")[:k])  # (k,) in label order
    group = np.full(n, k)  # (n,): each class's row/column in the small matrix; k = "(other)"
    group[keep] = np.arange(k)
    small = np.zeros((k + 1, k + 1), dtype=matrix.dtype)
    np.add.at(small, (group[:, None], group[None, :]), matrix)  # (k+1, k+1)
    return small, [label_names[i] for i in keep] + [f"(other {n - k})"]


def plot_confusion_matrix(matrix: np.ndarray, label_names: Sequence[str], path: str | Path,
                          title: str = "confusion matrix") -> Path:
    """Write the matrix as a PNG heat map, counts in the cells, rows normalised for the colour.

    With more than PLOT_CLASSES classes, the most frequent ones are drawn and the rest summed into one
    row and column (the title says so): the picture stays readable and its size bounded.
    """
    # Lazy: pyplot takes ~0.5 s to import, which only a run that draws should pay.
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    if matrix.shape != (len(label_names), len(label_names)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(label_names)} label names")
    if len(label_names) > PLOT_CLASSES:
        title = f"{title} ({PLOT_CLASSES} most frequent of {len(label_names)} classes)"
        matrix, label_names = most_frequent_classes(matrix, label_names)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)  # colour = recall per gold class
    n = len(label_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n + 2, 1.0 + 0.6 * n + 1.5))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), label_names, rotation=45, ha="right")
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if rows[i, j] > 0.5 else "black", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- entities (IOB2, conlleval)


def _split_tag(tag: str, where: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[0], tag[2:]
    raise ValueError(f"tag {tag!r} at {where} is not IOB2: expected 'O', 'B-TYPE' or 'I-TYPE'")


def get_entities(tags: Sequence[str]) -> list[Entity]:
    """Entities of one IOB2 tag sequence, conlleval convention.

    An entity starts at "B-T", or at "I-T" when the previous tag is "O" or of another
    type; it continues while tags are "I-T" of the same type. Returns (type, start, end)
    with `end` inclusive, in order of start.
    """
    entities: list[Entity] = []
    kind, start = None, 0  # type of the open entity (None: none open) and where it began
    for i, tag in enumerate(list(tags) + ["O"]):  # a trailing "O" closes the last entity
        prefix, t = _split_tag(tag, f"position {i}")
        continues = prefix == "I" and t == kind
        if kind is not None and not continues:
            entities.append((kind, start, i - 1))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = t, i
    return entities


def entity_scores(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision, recall, F1 over sentences of IOB2 tags.

    Returns {"precision", "recall", "f1", "support"} micro-averaged over all entities
    (the number papers report for CoNLL-2003), plus "per_type": {type: same keys} and
    "macro" / "weighted" averages over types (seqeval's other report rows).
    `support` counts gold entities.
    """
    gold_tags, pred_tags = _check_pair(gold_tags, pred_tags)
    gold_set, pred_set = defaultdict(set), defaultdict(set)
    for s, (g, p) in enumerate(zip(gold_tags, pred_tags)):
        if len(g) != len(p):
            raise ValueError(f"sentence {s}: gold has {len(g)} tags but pred has {len(p)}")
        for kind, a, b in get_entities(g):
            gold_set[kind].add((s, a, b))
        for kind, a, b in get_entities(p):
            pred_set[kind].add((s, a, b))

    per_type = {}
    for kind in sorted(set(gold_set) | set(pred_set)):
        tp = len(gold_set[kind] & pred_set[kind])
        p, r, f = _prf(tp, len(pred_set[kind]), len(gold_set[kind]))
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": len(gold_set[kind])}

    tp = sum(len(gold_set[k] & pred_set[k]) for k in per_type)
    n_pred = sum(len(v) for v in pred_set.values())
    n_true = sum(len(v) for v in gold_set.values())
    p, r, f = _prf(tp, n_pred, n_true)
    rows = list(per_type.values())
    weights = np.array([row["support"] for row in rows], dtype=np.float64)

    def average(key: str, w: np.ndarray) -> float:
        values = np.array([row[key] for row in rows], dtype=np.float64)
        return float((values * w).sum() / w.sum()) if rows and w.sum() else 0.0

    macro = {k: average(k, np.ones(len(rows))) for k in ("precision", "recall", "f1")}
    weighted = {k: average(k, weights) for k in ("precision", "recall", "f1")}
    return {"precision": p, "recall": r, "f1": f, "support": n_true, "per_type": per_type,
            "macro": {**macro, "support": n_true}, "weighted": {**weighted, "support": n_true}}


def _format_report(rows: list[tuple[str, dict]], averages: list[tuple[str, dict]], digits: int) -> str:
    width = max([len(name) for name, _ in rows + averages] + [len("weighted avg"), digits])
    head = f"{'':>{width}s} " + "".join(f" {h:>9}" for h in ("precision", "recall", "f1-score", "support"))

    def line(name: str, s: dict) -> str:
        return (f"{name:>{width}s} " + "".join(f" {s[k]:>9.{digits}f}" for k in ("precision", "recall", "f1"))
                + f" {s['support']:>9}")

    return "\n".join([head, "", *[line(n, s) for n, s in rows], "", *[line(n, s) for n, s in averages], ""])


def classification_report(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]],
                          digits: int = 4) -> str:
    """The per-entity-type table people know from seqeval: P, R, F1, support; micro/macro/weighted."""
    s = entity_scores(gold_tags, pred_tags)
    micro = {k: s[k] for k in ("precision", "recall", "f1", "support")}
    return _format_report(list(s["per_type"].items()),
                          [("micro avg", micro), ("macro avg", s["macro"]), ("weighted avg", s["weighted"])],
                          digits)


def label_report(gold: Sequence[int], pred: Sequence[int], label_names: Sequence[str], digits: int = 4) -> str:
    """The same table for sentence classification: one row per class, then accuracy and macro."""
    scores = per_class_scores(gold, pred)
    rows = [(label_names[c], scores[c]) for c in scores]
    n = len(_as_list(gold))
    macro = {k: float(np.mean([s[k] for s in scores.values()])) for k in ("precision", "recall", "f1")}
    acc = accuracy(gold, pred)
    return _format_report(rows, [("accuracy", {"precision": acc, "recall": acc, "f1": acc, "support": n}),
                                 ("macro avg", {**macro, "support": n})], digits)
