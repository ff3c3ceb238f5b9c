"""Lesson 06's ladder: the bag-of-words rung (minilm.downstream.linear) and the lesson's smoke run.

fit_logistic_regression's contract is pinned three ways: it separates a separable set, its
answer is where the gradient of the stated objective vanishes (computed here in numpy, apart
from the library), and it equals scikit-learn's multinomial logistic regression where that
is installed. Sparse and dense features give the same weights.
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from minilm.downstream import linear

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "06_sentiment.py"


def blobs(n_per_class: int, n_classes: int, dim: int, spread: float, seed: int):
    """Gaussian clusters around well-separated centres: (x (n, dim) float64, y (n,) int64)."""
    rng = np.random.default_rng(seed)
    centres = 6.0 * np.eye(n_classes, dim)
    x = np.concatenate([c + spread * rng.standard_normal((n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(n_classes), n_per_class)
    return x, y


def objective_gradient(x: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, l2: float):
    """dJ/dW and dJ/db of mean cross-entropy + (l2 / 2) ||W||^2, in float64 numpy."""
    logits = x @ W + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = (p - np.eye(W.shape[1])[y]) / len(y)
    return x.T @ g + l2 * W, g.sum(0)


def test_words_and_counts():
    assert linear.words("It isn't BAD, it's great!!") == ["it", "isn't", "bad", ",", "it's", "great", "!", "!"]
    vocab = linear.word_vocabulary(["good good bad", "bad plot", "good"])
    assert vocab == {"good": 0, "bad": 1, "plot": 2}  # commonest first, ties alphabetical
    counts = linear.word_counts(["good good bad", "unseen words only", "plot bad plot"], vocab).to_dense()
    assert counts.tolist() == [[2, 1, 0], [0, 0, 0], [0, 1, 2]]
    assert linear.word_vocabulary(["a a b", "b c"], min_count=2) == {"a": 0, "b": 1}


def test_learns_a_separable_set():
    x, y = blobs(40, 3, 5, 0.5, seed=0)
    W, b = linear.fit_logistic_regression(x, y, 3, l2=1e-3)
    assert W.shape == (5, 3) and b.shape == (3,) and W.dtype == torch.float64
    assert linear.accuracy(x, y, W, b) == 1.0
    x_new, y_new = blobs(40, 3, 5, 0.5, seed=1)  # fresh points from the same clusters
    assert linear.accuracy(x_new, y_new, W, b) == 1.0


def test_the_answer_is_the_minimiser_of_the_stated_objective():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 6))
    y = rng.integers(0, 3, 80)  # noisy labels: the optimum is interior, not separable
    for l2 in (1e-2, 1.0):
        W, b = linear.fit_logistic_regression(x, y, 3, l2=l2)
        gW, gb = objective_gradient(x, y, W.numpy(), b.numpy(), l2)
        assert np.abs(gW).max() < 1e-6 and np.abs(gb).max() < 1e-6
    # A stronger penalty shrinks the weights.
    small = linear.fit_logistic_regression(x, y, 3, l2=10.0)[0]
    assert small.norm() < W.norm()


def test_sparse_and_dense_features_give_the_same_weights():
    texts = ["a good film", "a bad film", "good good", "bad plot", "good plot", "bad bad film"]
    labels = [1, 0, 1, 0, 1, 0]
    vocab = linear.word_vocabulary(texts)
    sparse = linear.word_counts(texts, vocab)
    W_s, b_s = linear.fit_logistic_regression(sparse, labels, 2, l2=0.1)
    W_d, b_d = linear.fit_logistic_regression(sparse.to_dense(), labels, 2, l2=0.1)
    torch.testing.assert_close(W_s, W_d, atol=1e-7, rtol=0)
    torch.testing.assert_close(b_s, b_d, atol=1e-7, rtol=0)
    assert linear.predict(sparse, W_s, b_s).tolist() == labels


def test_equals_scikit_learn():
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 4))
    y = (x @ rng.standard_normal((4, 3)) + rng.standard_normal((120, 3))).argmax(1)
    l2 = 0.05
    W, b = linear.fit_logistic_regression(x, y, 3, l2=l2)
    # scikit-learn minimises C * sum(loss) + ||W||^2 / 2, i.e. ours with C = 1 / (n * l2).
    ref = sklearn_linear.LogisticRegression(C=1 / (len(y) * l2), tol=1e-10, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(W.numpy(), ref.coef_.T, atol=1e-5)
    np.testing.assert_allclose(b.numpy() - b.numpy().mean(), ref.intercept_ - ref.intercept_.mean(), atol=1e-5)


def test_select_l2_keeps_the_best_on_validation():
    x, y = blobs(30, 2, 8, 3.0, seed=2)  # overlapping clusters: the strength matters
    xv, yv = blobs(30, 2, 8, 3.0, seed=3)
    grid = (10.0, 1.0, 1e-2)
    l2, W, b, val_acc = linear.select_l2(x, y, xv, yv, 2, grid)
    scores = [linear.accuracy(xv, yv, *linear.fit_logistic_regression(x, y, 2, l2=g)) for g in grid]
    assert val_acc == max(scores) and l2 == grid[scores.index(max(scores))]
    assert linear.accuracy(xv, yv, W, b) == val_acc


def test_bad_input_is_a_clear_error():
    x, y = blobs(5, 2, 3, 0.5, seed=0)
    with pytest.raises(ValueError, match="l2=0"):
        linear.fit_logistic_regression(x, y, 2, l2=0)
    with pytest.raises(ValueError, match="num_classes=1"):
        linear.fit_logistic_regression(x, y, 1, l2=1.0)
    with pytest.raises(ValueError, match=r"labels range over 0\.\.2"):
        linear.fit_logistic_regression(x, np.where(y == 1, 2, 0), 2, l2=1.0)
    with pytest.raises(ValueError, match=r"x has shape \(10, 3\) and y \(9,\)"):
        linear.fit_logistic_regression(x, y[:9], 2, l2=1.0)
    with pytest.raises(ValueError, match="min_count=0"):
        linear.word_vocabulary(["a"], min_count=0)


def test_encoder_features_are_the_unpadded_mean_of_the_last_layer():
    from minilm.data.collate import classification_batch
    from minilm.nn.config import ModelConfig
    from minilm.nn.model import Transformer
    from minilm.data.tokenizer import Tokenizer

    texts = ["a short one", "a much longer sentence than the first, with more words in it", "mid length text"]
    tok = Tokenizer.train(texts * 5, 300)
    torch.manual_seed(0)
    body = Transformer(ModelConfig.preset("bert-tiny", vocab_size=tok.vocab_size, max_seq_len=64), causal=False)
    got = linear.encoder_features(body, tok, texts, batch_size=2)  # sorted by length, padded, put back
    assert got.shape == (3, body.config.d_model) and body.training  # training mode restored
    body.eval()
    with torch.no_grad():
        for i, text in enumerate(texts):  # one at a time: no padding at all
            h = body(classification_batch([text], None, tok, 128)["input_ids"])  # (1, T, D)
            torch.testing.assert_close(got[i], h[0].mean(0).double(), atol=1e-5, rtol=1e-5)


def _lesson():
    spec = importlib.util.spec_from_file_location("lesson_06_sentiment", LESSON)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bag_of_words_rung_on_real_labels():
    # 1,024 rt-polarity labels, the whole test split: well above chance, well below memorising.
    from minilm.downstream.tasks import ClassifyTask, with_subset

    task = with_subset(ClassifyTask("rt-polarity"), "train", 1024, 0)
    acc, note, _ = _lesson().bag_of_words(task)
    assert 0.62 < acc < 0.80, (acc, note)
    assert "words, L2" in note


def test_lesson_smoke_runs_every_rung(tmp_path):
    threads = torch.get_num_threads()
    try:
        _lesson().main(["--smoke", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    results = json.loads((tmp_path / "results.json").read_text())
    (title, table), = results["tables"].items()
    assert "test accuracy" in title
    for rung in ("bag of words", "scratch", "shared encoder", "shared + TAPT"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {rung} |"))
        assert "%" in row.split("|")[2], row
    assert "ladder.png" in results["pictures"] and (tmp_path / "ladder.png").stat().st_size > 1000
    assert any(k.startswith("task-adaptive pretraining") for k in results["figures"])
