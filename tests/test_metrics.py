"""Metrics: entity scores equal seqeval's default mode; classification metrics equal scikit-learn's."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.downstream import metrics

seqeval_metrics = pytest.importorskip("seqeval.metrics")
sk_metrics = pytest.importorskip("sklearn.metrics")

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


@st.composite
def tagged_pairs(draw):
    """Gold and predicted sentences of IOB2 tags, including ill-formed runs (I- after O, type switches)."""
    lengths = draw(st.lists(st.integers(0, 12), min_size=1, max_size=6))
    gold = [draw(st.lists(st.sampled_from(TAGS), min_size=n, max_size=n)) for n in lengths]
    # Predictions near the gold (so some entities match) with random edits.
    pred = []
    for sent in gold:
        edits = draw(st.lists(st.booleans(), min_size=len(sent), max_size=len(sent)))
        pred.append([draw(st.sampled_from(TAGS)) if e else t for t, e in zip(sent, edits)])
    return gold, pred


def seqeval_quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


@settings(max_examples=300, deadline=None)
@given(tagged_pairs())
def test_entity_scores_equal_seqeval_default_mode(pair):
    gold, pred = pair
    ours = metrics.entity_scores(gold, pred)
    assert ours["precision"] == pytest.approx(seqeval_quiet(seqeval_metrics.precision_score, gold, pred))
    assert ours["recall"] == pytest.approx(seqeval_quiet(seqeval_metrics.recall_score, gold, pred))
    assert ours["f1"] == pytest.approx(seqeval_quiet(seqeval_metrics.f1_score, gold, pred))
    report = seqeval_quiet(seqeval_metrics.classification_report, gold, pred, output_dict=True)
    for kind, row in ours["per_type"].items():
        ref = report[kind]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (ref["precision"], ref["recall"], ref["f1-score"], ref["support"]))
    assert set(ours["per_type"]) == set(report) - {"micro avg", "macro avg", "weighted avg"}
    for ours_key, ref_key in (("macro", "macro avg"), ("weighted", "weighted avg")):
        if ours["per_type"]:
            ref = report[ref_key]
            assert (ours[ours_key]["precision"], ours[ours_key]["recall"], ours[ours_key]["f1"]) == pytest.approx(
                (ref["precision"], ref["recall"], ref["f1-score"]))
    if ours["per_type"]:
        assert metrics.classification_report(gold, pred) == seqeval_quiet(
            seqeval_metrics.classification_report, gold, pred, digits=4)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TAGS), max_size=20))
def test_get_entities_equals_seqeval(tags):
    from seqeval.metrics.sequence_labeling import get_entities

    assert metrics.get_entities(tags) == [tuple(e) for e in get_entities(tags)]


def test_conlleval_convention_examples():
    # I- after O opens an entity; a type switch inside a run splits it; B- always opens.
    assert metrics.get_entities(["I-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-ORG", "B-ORG", "B-ORG"]) == [
        ("PER", 0, 1), ("LOC", 3, 4), ("ORG", 5, 5), ("ORG", 6, 6), ("ORG", 7, 7)]
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "O", "O", "B-LOC"]]  # a truncated entity is wrong, not half right
    s = metrics.entity_scores(gold, pred)
    assert (s["precision"], s["recall"], s["f1"], s["support"]) == (0.5, 0.5, 0.5, 2)
    assert s["per_type"]["PER"]["f1"] == 0.0 and s["per_type"]["LOC"]["f1"] == 1.0


def test_entity_errors_are_clear():
    with pytest.raises(ValueError, match="E-PER"):
        metrics.entity_scores([["E-PER"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1"):
        metrics.entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 items"):
        metrics.entity_scores([["O"], ["O"]], [["O"]])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5).flatmap(
    lambda c: st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, c - 1)), min_size=1, max_size=40)))
def test_classification_metrics_equal_sklearn(pairs):
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    assert metrics.accuracy(gold, pred) == pytest.approx(sk_metrics.accuracy_score(gold, pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sk_metrics.f1_score(gold, pred, average="macro", zero_division=0)
    assert metrics.macro_f1(gold, pred) == pytest.approx(ref)
    m = metrics.confusion_matrix(gold, pred, 5)
    assert m.sum() == len(gold)
    assert (m == sk_metrics.confusion_matrix(gold, pred, labels=list(range(5)))).all()


def test_label_report_and_plot(tmp_path):
    gold, pred = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    text = metrics.label_report(gold, pred, ["neg", "pos"])
    assert "neg" in text and "accuracy" in text and "0.6000" in text
    path = metrics.plot_confusion_matrix(metrics.confusion_matrix(gold, pred, 2), ["neg", "pos"], tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="num_labels=2"):
        metrics.confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], [])
    assert metrics.perplexity(np.log(7.0)) == pytest.approx(7.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12))
def test_mean_std_is_numpy_mean_and_sample_std(values):
    m, s = metrics.mean_std(values)
    assert m == pytest.approx(np.mean(values), abs=1e-9)
    assert s == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-9)  # n - 1, not n


def test_mean_std_edge_cases():
    assert metrics.mean_std([0.25]) == (0.25, 0.0)  # one seed: no spread to estimate
    assert metrics.mean_std(np.array([1.0, 3.0])) == (2.0, pytest.approx(2 ** 0.5))
    with pytest.raises(ValueError, match="no values"):
        metrics.mean_std([])


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 25), seed=st.integers(0, 10_000))
def test_a_confusion_plot_keeps_the_most_frequent_classes_and_sums_the_rest(n, k, seed):
    rng = np.random.default_rng(seed)
    matrix = rng.integers(0, 5, (n, n)) * (rng.random((n, n)) < 0.3)  # (n, n)
    names = [f"c{i}" for i in range(n)]
    small, shown = metrics.most_frequent_classes(matrix, names, k)
    if n <= k:
        assert (small == matrix).all() and shown == names
        return
    assert small.shape == (k + 1, k + 1) and len(shown) == k + 1 and shown[-1] == f"(other {n - k})"
    assert small.sum() == matrix.sum()  # every count is still there
    kept = [names.index(name) for name in shown[:-1]]
    assert kept == sorted(kept)
    assert (small[:k, :k] == matrix[np.ix_(kept, kept)]).all()
    assert (small[:k].sum(1) == matrix[kept].sum(1)).all() and (small[:, :k].sum(0) == matrix[:, kept].sum(0)).all()
    dropped = sorted(set(range(n)) - set(kept))
    assert matrix[dropped].sum(1).max() <= matrix[kept].sum(1).min()  # the kept are the most frequent gold classes


def test_a_confusion_plot_of_a_thousand_classes_is_bounded(tmp_path):
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 1000, 3000).tolist(), rng.integers(0, 1000, 3000).tolist()
    path = metrics.plot_confusion_matrix(metrics.confusion_matrix(gold, pred, 1000),
                                         [f"label {i}" for i in range(1000)], tmp_path / "cm.png")
    width, height = int.from_bytes(path.read_bytes()[16:20], "big"), int.from_bytes(path.read_bytes()[20:24], "big")
    assert width <= 2500 and height <= 2500  # the PNG header's size: 21 rows and columns, not 1,000
