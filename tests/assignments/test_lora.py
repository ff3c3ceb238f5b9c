"""Assignment peft: LoRA's forward, its merge, and the bottleneck adapter, against their formulas.

`peft` is the student's module (minilm.course.boundary); the layers are built where it lives (from
`student("torch.nn")`), with weights the grader draws, and the formulas are computed here.
"""
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course.boundary import shapes_during, student

peft = student("minilm.nn.peft")
nn = student("torch.nn")


def lora_layer(n_in, n_out, rank, alpha, rslora, seed):
    g = torch.Generator().manual_seed(seed)
    layer = peft.LoRALinear(nn.Linear(n_in, n_out, dtype=torch.float64), rank, alpha, dropout=0.0, rslora=rslora)
    layer.load_state_dict({"base.weight": torch.randn(n_out, n_in, generator=g, dtype=torch.float64),
                           "base.bias": torch.randn(n_out, generator=g, dtype=torch.float64),
                           "lora_A": torch.randn(rank, n_in, generator=g, dtype=torch.float64),
                           "lora_B": torch.randn(n_out, rank, generator=g, dtype=torch.float64)})  # trained B is not 0
    return layer.eval()


dims = st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.floats(0.5, 32.0), st.booleans(),
                 st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(dims, st.integers(1, 3))
def test_lora_forward_is_base_plus_scaled_low_rank(dims, batch):
    n_in, n_out, rank, alpha, rslora, seed = dims
    layer = lora_layer(n_in, n_out, rank, alpha, rslora, seed)
    x = torch.randn(batch, 5, n_in, dtype=torch.float64)
    scaling = alpha / (rank ** 0.5 if rslora else rank)
    A, B, base = layer.lora_A.detach(), layer.lora_B.detach(), layer.base
    dense = base.weight.detach() + scaling * B @ A  # (out, in)
    with torch.no_grad():
        got = layer(x)
        torch.testing.assert_close(layer.delta_weight(), scaling * B @ A,
                                   msg="delta_weight() must be scaling * B @ A, shaped (out, in)")
    assert got.shape == (batch, 5, n_out), f"output shape {tuple(got.shape)}, expected {(batch, 5, n_out)}"
    torch.testing.assert_close(got, F.linear(x, dense, base.bias.detach()),
                               msg="forward must equal x (W + scaling * B A)^T + b")


def test_lora_forward_never_builds_the_dense_update():
    layer = lora_layer(48, 40, 2, 4.0, False, 0)  # in != out, and neither equals batch * tokens
    x = torch.randn(3, 7, 48, dtype=torch.float64)
    with torch.no_grad():
        _, shapes = shapes_during(layer, x)  # every tensor torch made during the forward
    assert (40, 48) not in shapes and (48, 40) not in shapes, \
        "the forward built a dense (out, in) matrix: apply A, then B, to x (two thin matmuls of rank r)"


@settings(max_examples=20, deadline=None)
@given(dims)
def test_merge_folds_the_update_into_the_weight(dims):
    n_in, n_out, rank, alpha, rslora, seed = dims
    layer = lora_layer(n_in, n_out, rank, alpha, rslora, seed)
    x = torch.randn(4, n_in, dtype=torch.float64)
    weight = layer.base.weight.detach().clone()  # a copy, whether the layer is here or in the worker
    with torch.no_grad():
        before = layer(x)
        layer.merge()
        assert layer.merged, "merge() must set merged = True"
        torch.testing.assert_close(layer.base.weight, weight + layer.delta_weight(),
                                   msg="after merge() the base weight holds W + scaling * B A")
        torch.testing.assert_close(layer(x), before, msg="a merged layer must give the same output, "
                                                         "without adding the update a second time")
        layer.merge()  # merging twice changes nothing
        torch.testing.assert_close(layer.base.weight, weight + layer.delta_weight())
        layer.unmerge()
        assert not layer.merged
        torch.testing.assert_close(layer.base.weight, weight, msg="unmerge() must give W back")
        torch.testing.assert_close(layer(x), before)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 2**16))
def test_adapter_is_a_residual_bottleneck(d_model, bottleneck, seed):
    g = torch.Generator().manual_seed(seed)
    adapter = peft.Adapter(d_model, bottleneck, torch.empty(0, dtype=torch.float64))
    h = torch.randn(2, 3, d_model, dtype=torch.float64, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(adapter(h), h, rtol=0, atol=0, msg="a fresh adapter (up = 0) is the identity")
        weights = {k: torch.randn(v.shape, dtype=v.dtype, generator=g) for k, v in adapter.state_dict().items()}
        adapter.load_state_dict(weights)
        down = F.linear(h, weights["down.weight"], weights["down.bias"])
        expected = h + F.linear(F.gelu(down), weights["up.weight"], weights["up.bias"])
        torch.testing.assert_close(adapter(h), expected, msg="adapter(h) = h + up(gelu(down(h)))")
