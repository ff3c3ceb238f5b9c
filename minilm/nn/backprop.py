"""Backpropagation by hand: a multi-layer perceptron in numpy, one forward and one backward per piece.

This is lesson 01's network, kept in the library so that the lesson imports it and an
assignment can hollow it out (`minilm assignment build backprop`).

Design choices:
- micrograd's rule: each backward sits right under the forward it differentiates. A layer's
  `forward` keeps what its `backward` will need (the input, the on/off pattern of a ReLU);
  `backward(dy)` receives dLoss/dOutput, stores dLoss/dWeights on the layer and returns
  dLoss/dInput. Backpropagation is then one loop: the backwards in reverse order.
- Arrays are numpy, any float dtype: float32 for training, float64 when the gradients are
  checked against autograd or finite differences (rounding would hide a bug otherwise).
- Softmax and cross-entropy are one function, because together their gradient is simply
  (probabilities - one-hot) / batch, which is cheaper and more accurate than chaining the two.
- No optimiser here: `MLP.params()` lists (name, array, gradient) and the caller updates the
  arrays in place (lesson 01 writes SGD with momentum in four lines).
"""
from __future__ import annotations

import numpy as np


class Linear:
    """y = x W + b, with W (I, O) and b (O,). He initialisation, so ReLU stacks keep their variance."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator):
        self.W = rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out)).astype(np.float32)  # (I, O)
        self.b = np.zeros(n_out, dtype=np.float32)  # (O,)
        self.dW: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (B, I) -> y (B, O). Keeps x for the backward."""
        self.x = x  # (B, I)
        return x @ self.W + self.b  # (B, O)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Given dy = dLoss/dy (B, O) for the last `forward`: set self.dW = dLoss/dW (I, O) and
        self.db = dLoss/db (O,), summed over the batch, and return dLoss/dx (B, I)."""
        # BEGIN SOLUTION backprop
        self.dW = self.x.T @ dy  # (I, O): each weight's gradient sums over the batch
        self.db = dy.sum(axis=0)  # (O,)
        return dy @ self.W.T  # (B, I)
        # END SOLUTION backprop


class ReLU:
    """max(x, 0), element-wise."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (B, H) -> (B, H). Keeps which units were on (x > 0) for the backward."""
        self.on = x > 0  # (B, H)
        return x * self.on

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Given dLoss/dy (B, H) for the last `forward`, return dLoss/dx (B, H).
        Convention at x == 0 (where ReLU has no derivative): 0, as in PyTorch."""
        # BEGIN SOLUTION backprop
        return dy * self.on  # the gradient flows only where the unit was active
        # END SOLUTION backprop


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of logits (B, C) against integer labels (B,), and its gradient.

    Returns (loss, dlogits): loss = -mean_i log softmax(logits_i)[labels_i], a Python float,
    and dlogits = dLoss/dlogits (B, C). Must stay finite for any finite logits (logits of
    1e4 included): subtract each row's maximum before exponentiating.
    """
    # BEGIN SOLUTION backprop
    shifted = logits - logits.max(axis=1, keepdims=True)  # (B, C), stable: exp never overflows
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (B, C)
    n = len(labels)
    loss = -float(log_probs[np.arange(n), labels].mean())
    dlogits = np.exp(log_probs)  # (B, C) the probabilities
    dlogits[np.arange(n), labels] -= 1.0  # softmax + cross-entropy: gradient is p - onehot
    return loss, dlogits / n
    # END SOLUTION backprop


class MLP:
    """Linear -> ReLU -> Linear: the lesson's network. `backward` runs the layers' backwards in reverse."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, seed: int):
        rng = np.random.default_rng(seed)
        self.layers = [Linear(n_in, n_hidden, rng), ReLU(), Linear(n_hidden, n_out, rng)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (B, I) -> logits (B, O)."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dlogits: np.ndarray) -> None:
        """Given dLoss/dlogits (B, O) for the last `forward`, fill every Linear's dW and db."""
        # BEGIN SOLUTION backprop
        for layer in reversed(self.layers):
            dlogits = layer.backward(dlogits)  # the chain rule, one layer at a time
        # END SOLUTION backprop

    def params(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        """(name, array, gradient) triples in a fixed order: W0, b0, W2, b2 (the index is the layer's)."""
        out = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Linear):
                out += [(f"W{i}", layer.W, layer.dW), (f"b{i}", layer.b, layer.db)]
        return out

    def to_float64(self) -> "MLP":
        """Cast the weights to float64 in place (for gradient checks); returns self."""
        for layer in self.layers:
            if isinstance(layer, Linear):
                layer.W, layer.b = layer.W.astype(np.float64), layer.b.astype(np.float64)
        return self
