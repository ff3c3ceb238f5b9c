"""Neural networks from scratch: an MLP with backpropagation written by hand in numpy.

What you will learn:
- what a layer computes, and how the chain rule turns one backward function per layer
  into the gradient of the whole network (backpropagation);
- how to check hand-written gradients: against finite differences and against PyTorch's
  autograd on the same weights;
- mini-batch gradient descent with momentum, and why we watch a validation set;
- how far a bag of words gets on a real task: sentence sentiment (rt-polarity), the same
  task lesson 06 returns to with a pretrained Transformer.

Why this data: the Rotten Tomatoes sentences ship with the course's own data layer (no extra
download), are real, balanced and small enough for numpy, and give lesson 06 a baseline.

Run: python lessons/01_neural_networks.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import os

# One BLAS thread: these matrices are small, and on a busy 2-core machine a second thread
# spends more time waiting than working. Set before numpy is imported, or it has no effect.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import re
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import torch

from minilm.nn.backprop import MLP, softmax_cross_entropy
from minilm.data.load import load_classification
from minilm.course.lesson import start

# -- data: sentences as bags of words --------------------------------------------------------


def words(text: str) -> set[str]:
    """The distinct lower-cased words and punctuation marks of a sentence."""
    return set(re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", text.lower()))


def bag_of_words(texts, vocab):
    """(N, V) matrix: 1 where the word occurs in the sentence (presence, not counts)."""
    index = {w: i for i, w in enumerate(vocab)}
    x = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in words(text):
            if word in index:
                x[row, index[word]] = 1.0
    return x


def accuracy(model, x, y):
    return float((model.forward(x).argmax(axis=1) == y).mean())


def main(argv=None):
    lesson = start(__file__, argv)
    vocab_size = lesson.pick(smoke=300, quick=3000, full=8000)
    hidden = lesson.pick(smoke=16, quick=64, full=256)
    epochs = lesson.pick(smoke=2, quick=10, full=30)

    lesson.section("1. The task and the features")
    data = load_classification("rt-polarity")
    train, val, test = data.train, data.validation, data.test
    if lesson.smoke:
        train = type(train)(train.texts[:600], train.labels[:600])
    counts = Counter(w for t in train.texts for w in words(t))
    vocab = [w for w, _ in counts.most_common(vocab_size)]
    x_train, x_val, x_test = (bag_of_words(s.texts, vocab) for s in (train, val, test))
    y_train, y_val, y_test = (np.array(s.labels) for s in (train, val, test))
    lesson.say(f"""
        rt-polarity holds short movie-review sentences labelled {data.label_names}. We have
        {len(y_train):,} training, {len(y_val):,} validation and {len(y_test):,} test sentences;
        {y_train.mean():.1%} of the training labels are positive, so always guessing the commoner
        class scores {max(y_train.mean(), 1 - y_train.mean()):.1%}. A sentence becomes a vector of {len(vocab):,} zeros and ones: one per
        word of the {len(vocab):,} most common training words, 1 if the sentence contains it.
        Word order is thrown away. Example: "{train.texts[0][:90]}" lights up
        {int(x_train[0].sum())} of the {len(vocab):,} inputs.""")

    lesson.section("2. Forward and backward by hand")
    model = MLP(len(vocab), hidden, 2, seed=lesson.seed)
    n_params = sum(p.size for _, p, _ in model.params())
    lesson.say(f"""
        The network is Linear({len(vocab)} -> {hidden}) -> ReLU -> Linear({hidden} -> 2):
        {n_params:,} numbers to learn. Each piece has a forward (compute the output, keep what
        the backward needs) and a backward (given dLoss/dOutput, return dLoss/dInput and store
        dLoss/dWeights). Backpropagation is nothing more than calling the backwards in reverse
        order: the chain rule, one layer at a time. Softmax and cross-entropy together have
        the famously simple gradient (probabilities - one-hot label) / batch size. The code
        is in minilm/nn/backprop.py: read it next to this lesson.""")

    lesson.section("3. Are the gradients right?")
    batch = slice(0, 8)
    xb, yb = x_train[batch].astype(np.float64), y_train[batch]
    model.to_float64()  # check in float64 so rounding does not hide a bug
    loss, dlogits = softmax_cross_entropy(model.forward(xb), yb)
    model.backward(dlogits)
    # The same weights in PyTorch; autograd computes the gradients independently.
    tparams = {name: torch.tensor(p, requires_grad=True) for name, p, _ in model.params()}
    h = torch.relu(torch.tensor(xb) @ tparams["W0"] + tparams["b0"])
    tloss = torch.nn.functional.cross_entropy(h @ tparams["W2"] + tparams["b2"], torch.tensor(yb))
    tloss.backward()
    worst = max(float(np.abs(g - tparams[name].grad.numpy()).max() / (np.abs(g).max() + 1e-12))
                for name, _, g in model.params())
    # Finite differences on a few weights: nudge one number, watch the loss move.
    eps, fd_err = 1e-6, 0.0
    rng = np.random.default_rng(0)
    W0 = model.layers[0].W
    active = np.flatnonzero(xb.sum(axis=0))  # only words present in the batch have a gradient
    for _ in range(5):
        i, j = rng.choice(active), rng.integers(hidden)
        analytic = model.layers[0].dW[i, j]
        W0[i, j] += eps
        up = softmax_cross_entropy(model.forward(xb), yb)[0]
        W0[i, j] -= 2 * eps
        down = softmax_cross_entropy(model.forward(xb), yb)[0]
        W0[i, j] += eps
        fd_err = max(fd_err, abs((up - down) / (2 * eps) - analytic) / (abs(analytic) + 1e-8))
    lesson.say(f"""
        On a batch of {len(yb)} sentences our loss is {loss:.6f} and PyTorch's is {tloss.item():.6f}.
        The largest difference between our gradients and autograd's, relative to the
        gradient's size, is {worst:.1e} over all {n_params:,} parameters. Finite differences
        ((L(w+e) - L(w-e)) / 2e on 5 random first-layer weights) agree to a relative {fd_err:.1e}.
        Both checks are how you trust a backward pass you wrote yourself.""")
    lesson.record("gradient vs autograd (max rel. error)", worst, "{:.1e}")
    assert worst < 1e-8, f"hand-written gradients disagree with autograd: {worst}"

    lesson.section("4. Training: mini-batch SGD with momentum")
    model = MLP(len(vocab), hidden, 2, seed=lesson.seed)
    lr, momentum, weight_decay, batch_size = 0.05, 0.9, 1e-3, 64
    velocity = [np.zeros_like(p) for _, p, _ in model.params()]
    rng = np.random.default_rng(lesson.seed)
    step_losses, curve, best = [], [], (-1.0, 0, None)
    lesson.say(f"""
        Each step takes {batch_size} random sentences, runs forward and backward, and moves
        every weight against its gradient: v = {momentum} v + g + {weight_decay} w, w = w - {lr} v.
        Momentum averages gradients over steps, which smooths the noise of small batches.
        After each epoch (one pass over the training set) we measure the validation set,
        which the weights never learn from, and keep the best epoch's weights (early stopping):
        a bag-of-words MLP memorises its training set quickly.""")
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y_train))
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            loss, dlogits = softmax_cross_entropy(model.forward(x_train[idx]), y_train[idx])
            model.backward(dlogits)
            for v, (_, p, g) in zip(velocity, model.params()):
                v *= momentum
                v += g + weight_decay * p
                p -= lr * v
            step_losses.append(loss)
        val_loss = softmax_cross_entropy(model.forward(x_val), y_val)[0]
        train_acc, val_acc = accuracy(model, x_train, y_train), accuracy(model, x_val, y_val)
        curve.append((len(step_losses), val_loss, train_acc, val_acc))
        print(f"  epoch {epoch:2d}  train loss {np.mean(step_losses[-50:]):.3f}  val loss {val_loss:.3f}  "
              f"train acc {train_acc:.1%}  val acc {val_acc:.1%}")
        if val_acc > best[0]:
            best = (val_acc, epoch, [p.copy() for _, p, _ in model.params()])
    for (_, p, _), saved in zip(model.params(), best[2]):
        p[...] = saved
    test_acc = accuracy(model, x_test, y_test)
    lesson.say(f"""
        The best validation accuracy was {best[0]:.1%} at epoch {best[1]}; with those weights
        the test accuracy is {test_acc:.1%} (always guessing the commoner test label:
        {max(y_test.mean(), 1 - y_test.mean()):.1%}). Bag-of-words models like this one, tuned
        (naive Bayes features with an SVM, Wang & Manning 2012), are the classic baseline on
        this data. Lesson 06 asks how much a Transformer pretrained on unlabelled reviews adds.""")
    lesson.record("MLP test accuracy (rt-polarity)", test_acc, "{:.1%}", headline=True)
    lesson.record("best epoch", best[1])

    lesson.section("5. What did it learn?")
    # Feed each word alone: the difference of the two logits is how positive that word is.
    scores = model.forward(np.eye(len(vocab), dtype=np.float32))  # (V, 2)
    polarity = scores[:, 1] - scores[:, 0]
    order = np.argsort(polarity)
    lesson.say(f"""
        Feeding the network one word at a time shows what it learned. Most negative:
        {", ".join(vocab[i] for i in order[:12])}. Most positive:
        {", ".join(vocab[i] for i in order[::-1][:12])}.""")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    smooth = np.convolve(step_losses, np.ones(20) / 20, mode="valid") if len(step_losses) > 20 else step_losses
    ax1.plot(step_losses, color="0.8", lw=0.6, label="train loss (per step)")
    ax1.plot(np.arange(len(smooth)) + (len(step_losses) - len(smooth)), smooth, label="train loss (smoothed)")
    ax1.plot([c[0] for c in curve], [c[1] for c in curve], "o-", label="validation loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax1.set_title("Hand-written MLP on rt-polarity")
    ax2.plot(range(1, len(curve) + 1), [c[2] for c in curve], "o-", label="train")
    ax2.plot(range(1, len(curve) + 1), [c[3] for c in curve], "o-", label="validation")
    ax2.axvline(best[1], color="0.6", ls="--", label="best epoch")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    lesson.save_figure(fig, "loss_curve")
    lesson.finish()


if __name__ == "__main__":
    main()
