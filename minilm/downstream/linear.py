"""Linear classifiers on fixed features: the bag-of-words baseline and the linear probe.

    vocab = word_vocabulary(train.texts)
    l2, W, b, val_acc = select_l2(word_counts(train.texts, vocab), train.labels,
                                  word_counts(val.texts, vocab), val.labels, num_classes=2)
    test_pred = predict(word_counts(test.texts, vocab), W, b)

Design choices:
- One learner, two kinds of features. Multinomial logistic regression fitted to its optimum by
  L-BFGS on the whole training set: the objective is convex, so there is no learning rate,
  epoch count or seed to tune, only the L2 strength, chosen on validation (`select_l2`).
  Lesson 06 runs it on word counts (bag of words, the rung below every neural one) and on a
  frozen encoder's sentence vectors (a linear probe): the same classifier both times, so the
  difference between the two is the features'.
- Words are lower-cased runs of letters and digits, with an apostrophe ending kept on the word
  ("isn't", "film's"); every other non-space character is a word of its own, since "!" and "?"
  carry sentiment too. Lesson 01 splits the same way.
- Counts, not presence or tf-idf: the plainest bag of words. They are a sparse COO tensor
  (n, V): rt-polarity's training split has about 18,000 distinct words, and a dense
  6,824 x 18,000 matrix would take half a gigabyte for 0.1% of non-zeros.
- The gradient is written by hand beside the loss (two sparse products and a softmax), not left
  to autograd, whose backward through a sparse product was ~30x slower here.
- float64 throughout: L-BFGS stops on tiny changes of the loss, which float32 rounds away.
- Sentence vectors (`encoder_features`) are the mean of the encoder's last layer over the real
  tokens, in eval mode and without gradients: what `SequenceClassifier(pooling="mean")` feeds
  its pooler. Computed once per sentence, they make a probe of every seed and size cost seconds.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.data.collate import classification_batch

L2_GRID = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)  # strongest first: ties keep the simpler model
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """The lower-cased words and punctuation marks of `text`, in order (repeats kept)."""
    return _WORD.findall(text.lower())


def word_vocabulary(texts: Sequence[str], min_count: int = 1) -> dict[str, int]:
    """word -> column for every word seen at least `min_count` times in `texts`, commonest first
    (ties in alphabetical order), so the same texts always give the same columns."""
    if min_count < 1:
        raise ValueError(f"min_count={min_count!r} is invalid: expected an integer >= 1")
    counts = Counter(w for t in texts for w in words(t))
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if not kept:
        raise ValueError(f"word_vocabulary: no word occurs {min_count} or more times in {len(texts)} texts")
    return {w: i for i, w in enumerate(kept)}


def word_counts(texts: Sequence[str], vocab: dict[str, int]) -> Tensor:
    """(n, V) sparse COO float64: how often each vocabulary word occurs in each text (words
    outside `vocab` are dropped; a text with none is a zero row)."""
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        for col, c in Counter(vocab[w] for w in words(text) if w in vocab).items():
            rows.append(i)
            cols.append(col)
            vals.append(float(c))
    index = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)  # (2, nnz)
    return torch.sparse_coo_tensor(index, torch.tensor(vals, dtype=torch.float64), (len(texts), len(vocab)),
                                   check_invariants=True).coalesce()


def _check(x: Tensor, y: Tensor, num_classes: int, where: str) -> None:
    if x.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: x has shape {tuple(x.shape)} and y {tuple(y.shape)}; expected x (n, V) "
                         f"and y (n,) with the same n")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: no examples")
    if y.numel() and not (0 <= int(y.min()) and int(y.max()) < num_classes):
        raise ValueError(f"{where}: labels range over {int(y.min())}..{int(y.max())}; expected class ids in "
                         f"0..{num_classes - 1} (num_classes={num_classes})")


def _as_inputs(x, y) -> tuple[Tensor, Tensor]:
    x = x.to(torch.float64) if isinstance(x, Tensor) else torch.as_tensor(x, dtype=torch.float64)
    return x, torch.as_tensor(y, dtype=torch.long).reshape(-1)


def _for_products(x: Tensor) -> Tensor:
    """x in the layout that multiplies fastest: CSR when sparse (measured: ~25x faster than COO
    for the (n, V) x (V, 2) product of a bag of words), unchanged when dense."""
    if x.layout == torch.strided:
        return x
    with warnings.catch_warnings():  # CSR support is labelled beta; these products are not
        warnings.simplefilter("ignore", UserWarning)
        return x.to_sparse_csr()


def fit_logistic_regression(x, y, num_classes: int, *, l2: float, max_iter: int = 300) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression: the W (V, C) and b (C,) that minimise

        J(W, b) = mean_i [ -log softmax(x_i W + b)[y_i] ]  +  (l2 / 2) * ||W||^2

    (the bias is not penalised), found by L-BFGS started from zeros.

    x: (n, V) features, a dense tensor or array or a sparse (COO or CSR) tensor; y: (n,) class
    ids in [0, num_classes). l2 > 0 makes the minimiser unique and finite even on separable
    data. The gradient is written out: with P (n, C) the softmax probabilities and Y (n, C)
    the one-hot labels, dJ/dW = x^T (P - Y) / n + l2 W and dJ/db = mean_i (P - Y)_i, and at
    the returned point both vanish (to L-BFGS's tolerance, within `max_iter` iterations).
    Returns float64 tensors.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is invalid: expected an integer >= 2")
    if not l2 > 0:
        raise ValueError(f"l2={l2!r} is invalid: expected a positive float (without it separable data has no "
                         f"finite optimum)")
    x, y = _as_inputs(x, y)
    _check(x, y, num_classes, "fit_logistic_regression")
    n = x.shape[0]
    xs, xts = _for_products(x), _for_products(x.t())  # (n, V), (V, n)
    onehot = F.one_hot(y, num_classes).to(torch.float64)  # (n, C)
    W = torch.zeros(x.shape[1], num_classes, dtype=torch.float64)  # (V, C)
    b = torch.zeros(num_classes, dtype=torch.float64)  # (C,)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        logp = (xs @ W + b).log_softmax(-1)  # (n, C)
        loss = -(logp * onehot).sum() / n + 0.5 * l2 * (W * W).sum()
        g = (logp.exp() - onehot) / n  # (n, C): dJ/dlogits
        W.grad = xts @ g + l2 * W  # (V, C)
        b.grad = g.sum(0)  # (C,)
        return loss

    with torch.no_grad():  # the gradient is the one written above, not autograd's
        opt.step(objective)
    return W, b


def predict(x, W: Tensor, b: Tensor) -> Tensor:
    """(n,) class ids: the arg-max of x W + b."""
    x, _ = _as_inputs(x, [])
    return (_for_products(x) @ W + b).argmax(-1)


def accuracy(x, y, W: Tensor, b: Tensor) -> float:
    x, y = _as_inputs(x, y)
    return (predict(x, W, b) == y).double().mean().item()


def select_l2(x_train, y_train, x_val, y_val, num_classes: int, grid: Sequence[float] = L2_GRID):
    """Fit once per L2 strength in `grid` and keep the best on validation (the first of equals):
    -> (l2, W, b, validation accuracy)."""
    if not grid:
        raise ValueError("select_l2: the grid of l2 strengths is empty")
    best = None
    for l2 in grid:
        W, b = fit_logistic_regression(x_train, y_train, num_classes, l2=l2)
        score = accuracy(x_val, y_val, W, b)
        if best is None or score > best[3]:
            best = (l2, W, b, score)
    return best


def encoder_features(body: torch.nn.Module, tokenizer, texts: Sequence[str], *, max_len: int = 128,
                     batch_size: int = 128) -> Tensor:
    """(n, D) float64 sentence vectors: the mean over real tokens of `body`'s last layer (a
    `minilm.Transformer`, called as body(input_ids, attention_mask) -> (B, T, D)) for each text,
    framed and truncated as fine-tuning frames it (`collate.classification_batch`)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: little padding
    out = torch.empty(len(texts), body.config.d_model, dtype=torch.float64)
    device = next(body.parameters()).device
    was_training = body.training
    body.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = classification_batch([texts[i] for i in idx], None, tokenizer, max_len)
                mask = batch["attention_mask"].to(device)  # (B, T)
                h = body(batch["input_ids"].to(device), mask)  # (B, T, D)
                real = mask.to(h.dtype)[..., None]  # (B, T, 1)
                out[idx] = ((h * real).sum(1) / real.sum(1).clamp(min=1)).double().cpu()  # (B, D)
    finally:
        body.train(was_training)
    return out
