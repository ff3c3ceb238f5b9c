"""Assignment peft: LoRA's forward, its merge, and the bottleneck adapter, against their formulas."""
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from minilm.nn.peft import Adapter, LoRALinear


def lora_layer(n_in, n_out, rank, alpha, rslora, seed):
    torch.manual_seed(seed)
    base = torch.nn.Linear(n_in, n_out).double()
    layer = LoRALinear(base, rank, alpha, dropout=0.0, rslora=rslora)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(n_out, rank, dtype=torch.float64))  # trained B is not zero
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
    dense = layer.base.weight + scaling * layer.lora_B @ layer.lora_A  # (out, in)
    with torch.no_grad():
        got = layer(x)
        torch.testing.assert_close(layer.delta_weight(), scaling * layer.lora_B @ layer.lora_A,
                                   msg="delta_weight() must be scaling * B @ A, shaped (out, in)")
    assert got.shape == (batch, 5, n_out), f"output shape {tuple(got.shape)}, expected {(batch, 5, n_out)}"
    torch.testing.assert_close(got, F.linear(x, dense, layer.base.bias),
                               msg="forward must equal x (W + scaling * B A)^T + b")


class RecordShapes(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.shapes.append(tuple(out.shape))
        return out


def test_lora_forward_never_builds_the_dense_update():
    layer = lora_layer(48, 40, 2, 4.0, False, 0)  # in != out, and neither equals batch * tokens
    x = torch.randn(3, 7, 48, dtype=torch.float64)
    with torch.no_grad(), RecordShapes() as record:
        layer(x)
    assert (40, 48) not in record.shapes and (48, 40) not in record.shapes, \
        "the forward built a dense (out, in) matrix: apply A, then B, to x (two thin matmuls of rank r)"


@settings(max_examples=20, deadline=None)
@given(dims)
def test_merge_folds_the_update_into_the_weight(dims):
    n_in, n_out, rank, alpha, rslora, seed = dims
    layer = lora_layer(n_in, n_out, rank, alpha, rslora, seed)
    x = torch.randn(4, n_in, dtype=torch.float64)
    weight = layer.base.weight.detach().clone()
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
    torch.manual_seed(seed)
    adapter = Adapter(d_model, bottleneck, torch.empty(0, dtype=torch.float64))
    h = torch.randn(2, 3, d_model, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(adapter(h), h, rtol=0, atol=0, msg="a fresh adapter (up = 0) is the identity")
        for p in adapter.parameters():
            p.copy_(torch.randn_like(p))
        expected = h + adapter.up(F.gelu(adapter.down(h)))
        torch.testing.assert_close(adapter(h), expected, msg="adapter(h) = h + up(gelu(down(h)))")
