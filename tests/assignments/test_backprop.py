"""Assignment backprop: minilm/nn/backprop.py's hand-written gradients against PyTorch autograd and finite differences.

Every check runs in float64, so a mismatch is a bug in the formula, not rounding. `backprop` is the
student's module (minilm.course.boundary): in-process by hand, through the grader's worker when graded;
autograd, finite differences and the training loop's bookkeeping are the grader's.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course.boundary import student

backprop = student("minilm.nn.backprop")
numpy_random = student("numpy.random")  # the generator a Linear is built with lives beside it

shapes = st.tuples(st.integers(1, 7), st.integers(1, 9), st.integers(1, 6), st.integers(0, 2**16))


def close(ours, theirs, what):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours is not None, f"{what} was not set (still None): the backward must store it"
    assert np.shape(ours) == np.shape(theirs), f"{what} has shape {np.shape(ours)}, expected {np.shape(theirs)}"
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12, err_msg=f"{what} differs from autograd's")


@settings(max_examples=30, deadline=None)
@given(shapes)
def test_linear_backward_matches_autograd(shape):
    batch, n_in, n_out, seed = shape
    rng = np.random.default_rng(seed)
    layer = backprop.Linear(n_in, n_out, numpy_random.default_rng(seed))
    layer.W, layer.b = rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)  # float64, nonzero bias
    x, dy = rng.normal(size=(batch, n_in)), rng.normal(size=(batch, n_out))
    y = layer.forward(x)
    dx = layer.backward(dy)
    tx, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, layer.W, layer.b))
    ty = tx @ tW + tb
    ty.backward(torch.tensor(dy))
    close(y, ty, "Linear.forward's output")
    close(dx, tx.grad, "dx returned by Linear.backward")
    close(layer.dW, tW.grad, "Linear.dW (sum over the batch of x^T dy)")
    close(layer.db, tb.grad, "Linear.db")


@settings(max_examples=30, deadline=None)
@given(shapes)
def test_relu_backward_matches_autograd(shape):
    batch, width, _, seed = shape
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, width))
    x[rng.random(size=x.shape) < 0.2] = 0.0  # exact zeros: the derivative is taken as 0 there, as in torch
    dy = rng.normal(size=(batch, width))
    relu = backprop.ReLU()
    relu.forward(x)
    dx = relu.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.tensor(dy))
    close(dx, tx.grad, "dx returned by ReLU.backward")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(2, 7), st.floats(0.1, 30.0), st.integers(0, 2**16))
def test_softmax_cross_entropy_matches_torch(batch, classes, spread, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, classes)) * spread
    labels = rng.integers(0, classes, size=batch)
    loss, dlogits = backprop.softmax_cross_entropy(logits, labels)
    t = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    tloss.backward()
    assert isinstance(loss, float), f"the loss should be a Python float, got {type(loss).__name__}"
    assert loss == pytest.approx(tloss.item(), rel=1e-9, abs=1e-12), "the loss is not the mean cross-entropy"
    close(dlogits, t.grad, "dlogits (remember: the loss is a mean over the batch)")


def test_softmax_cross_entropy_is_stable():
    logits = np.array([[1e4, 0.0, -1e4], [-5e3, -5e3, 2e3], [0.0, 0.0, 0.0]])
    labels = np.array([1, 2, 0])
    loss, dlogits = backprop.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and np.isfinite(dlogits).all(), "huge logits overflowed: subtract each row's max first"
    t = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-9)
    close(dlogits, t.grad, "dlogits on huge logits")


def torch_mlp_grads(model, x, y):
    params = {name: torch.tensor(p, requires_grad=True) for name, p, _ in model.params()}
    h = torch.relu(torch.tensor(x) @ params["W0"] + params["b0"])
    loss = torch.nn.functional.cross_entropy(h @ params["W2"] + params["b2"], torch.tensor(y))
    loss.backward()
    return loss.item(), {name: p.grad for name, p in params.items()}


@settings(max_examples=20, deadline=None)
@given(shapes, st.integers(2, 5))
def test_mlp_gradients_match_autograd(shape, classes):
    batch, n_in, hidden, seed = shape
    rng = np.random.default_rng(seed)
    model = backprop.MLP(n_in, hidden, classes, seed=seed).to_float64()
    x, y = rng.normal(size=(batch, n_in)), rng.integers(0, classes, size=batch)
    loss, dlogits = backprop.softmax_cross_entropy(model.forward(x), y)
    model.backward(dlogits)
    tloss, grads = torch_mlp_grads(model, x, y)
    assert loss == pytest.approx(tloss, rel=1e-9)
    for name, _, grad in model.params():
        close(grad, grads[name], f"the MLP's gradient for {name}")


def reference_loss(params, x, y):
    """The MLP's loss written out in numpy: linear, ReLU, linear, mean cross-entropy."""
    h = np.maximum(x @ params["W0"] + params["b0"], 0.0)
    logits = h @ params["W2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    return float(-(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(axis=1))).mean())


def test_gradients_agree_with_finite_differences():
    rng = np.random.default_rng(0)
    model = backprop.MLP(6, 5, 3, seed=1).to_float64()
    x, y = rng.normal(size=(4, 6)), np.array([0, 2, 1, 2])
    model.backward(backprop.softmax_cross_entropy(model.forward(x), y)[1])
    params = {name: p for name, p, _ in model.params()}
    eps = 1e-6
    for name, p, grad in model.params():
        assert grad is not None, f"the MLP's backward did not set the gradient of {name}"
        for index in [tuple(rng.integers(0, n) for n in p.shape) for _ in range(4)]:
            up, down = {**params, name: p.copy()}, {**params, name: p.copy()}
            up[name][index] += eps
            down[name][index] -= eps
            numeric = (reference_loss(up, x, y) - reference_loss(down, x, y)) / (2 * eps)
            assert grad[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8), \
                f"d loss / d {name}{list(index)}: backward says {grad[index]:.8g}, finite differences {numeric:.8g}"


def test_training_learns_a_separable_task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = ((x[:, 0] * x[:, 1] > 0)).astype(np.int64)  # XOR of two signs: needs the hidden layer
    model = backprop.MLP(4, 32, 2, seed=0)
    first, loss = None, None
    layers = model.layers
    for step in range(300):
        idx = rng.integers(0, len(x), size=64)
        loss, dlogits = backprop.softmax_cross_entropy(model.forward(x[idx]), y[idx])
        first = loss if first is None else first
        model.backward(dlogits)
        for (name, p, g), layer in zip(model.params(), [layers[0], layers[0], layers[2], layers[2]]):
            setattr(layer, name[0], p - 0.3 * g)  # plain SGD, the weights set back where the model lives
    accuracy = float((model.forward(x).argmax(1) == y).mean())
    assert accuracy > 0.9, f"after 300 SGD steps the MLP fits only {accuracy:.0%} of a learnable task " \
                           f"(loss {first:.3f} -> {loss:.3f}): are the gradients' signs and sums right?"
