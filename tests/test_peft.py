"""Parameter-efficient fine-tuning: LoRA, adapters, prefixes and probes start from the base model,
train only what they should, merge exactly, and save/reload exactly."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course.boundary import student
from minilm.nn import peft
from minilm.nn.config import ModelConfig
from minilm.nn.model import SequenceClassifier, TokenClassifier

their_peft = student("minilm.nn.peft")  # assignment peft, as the student wrote it (the graded tests)

D, L, H, F, V, C = 32, 2, 4, 64, 100, 3


def tiny(norm="post", cls=SequenceClassifier, backend="reference", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, max_seq_len=32, d_model=D, n_layers=L, n_heads=H, d_ff=F, dropout=0.0,
                      attention_dropout=0.0, norm=norm, attention_backend=backend)
    return cls(cfg, num_labels=C).eval()


def tiny_theirs(norm="post", cls=SequenceClassifier, seed=0):
    """tiny(), built where the student's code lives, with the same weights."""
    ours = tiny(norm, cls, seed=seed)
    model = getattr(student("minilm.nn.model"), cls.__name__)(ours.config, num_labels=C)
    model.load_state_dict(ours.state_dict())
    return model.eval()


def batch(seed=1, B=3, T=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 7:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def logits(model, b):
    with torch.no_grad():
        return model(**b).logits


def head_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("body."))


def perturb(model):
    """Give the zero-initialised parts (LoRA's B, the adapters' up-projection) random values, as training would."""
    g = torch.Generator().manual_seed(7)
    weights = model.state_dict()
    for n, p in weights.items():
        if n.endswith("lora_B") or ".adapter.up." in n:
            weights[n] = torch.randn(p.shape, generator=g) * 0.1
    model.load_state_dict(weights)


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("method,settings_", [("lora", {}), ("lora", {"targets": ("q", "k", "v", "o", "up", "down"),
                                                                      "rslora": True}), ("adapter", {})])
def test_starts_as_the_base_model(norm, method, settings_):
    model, b = tiny_theirs(norm), batch()
    before = logits(model, b)
    their_peft.apply_method(model, method, **settings_)
    assert torch.equal(logits(model, b), before)  # exactly: B = 0 / adapter up = 0


@settings(max_examples=8, deadline=None)
@given(rank=st.integers(1, 8), alpha=st.floats(0.5, 64), rslora=st.booleans(),
       targets=st.lists(st.sampled_from([n for n in peft.LINEAR_NAMES if n != "gate"]),  # tiny() has GELU, no gate
                        min_size=1, max_size=6, unique=True),
       token=st.booleans())
def test_merged_lora_equals_unmerged(rank, alpha, rslora, targets, token):
    cls = TokenClassifier if token else SequenceClassifier
    model, b = tiny_theirs(cls=cls), batch()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    their_peft.apply_lora(model, rank=rank, alpha=alpha, targets=tuple(targets), rslora=rslora)
    perturb(model)
    unmerged = logits(model, b)
    assert not torch.allclose(unmerged, logits(tiny(cls=cls), b))  # the update does something
    their_peft.merge_lora(model)
    assert all(layer.merged for layer in their_peft.lora_layers(model))
    torch.testing.assert_close(logits(model, b), unmerged, rtol=1e-5, atol=1e-5)
    their_peft.unmerge_lora(model)
    torch.testing.assert_close(logits(model, b), unmerged, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():  # the base weights are back to what they were
        plain = n.replace(".base.", ".")
        if plain in weights:
            torch.testing.assert_close(p, weights[plain], rtol=0, atol=1e-6)


def test_lora_scaling_and_layers():
    model = tiny()
    peft.apply_lora(model, rank=4, alpha=8, targets=("q", "v"))
    layers = peft.lora_layers(model)
    assert len(layers) == 2 * L and all(l.scaling == 2.0 for l in layers)
    model = tiny()
    peft.apply_lora(model, rank=4, alpha=8, rslora=True)
    assert all(l.scaling == 4.0 for l in peft.lora_layers(model))  # alpha / sqrt(r)
    with pytest.raises(ValueError, match="targets"):
        peft.apply_lora(tiny(), targets=("qkv",))
    with pytest.raises(ValueError, match="rank"):
        peft.apply_lora(tiny(), rank=0)
    with pytest.raises(ValueError, match="no LoRA"):
        peft.merge_lora(tiny())


def expected_trainable(method, model, **kw):
    head = head_params(model)
    if method == "probe":
        return head
    if method == "lora":
        r, sizes = kw["rank"], {"q": (D, D), "k": (D, D), "v": (D, D), "o": (D, D), "up": (D, F), "down": (F, D)}
        return head + L * sum(r * (sizes[t][0] + sizes[t][1]) for t in kw["targets"])
    if method == "adapter":
        m = kw["bottleneck"]
        adapters = L * 2 * (D * m + m + m * D + D)
        norms = sum(p.numel() for mod in model.body.modules() if isinstance(mod, torch.nn.LayerNorm)
                    for p in mod.parameters())
        return head + adapters + norms
    if method == "prefix":
        return head + L * 2 * kw["n_prefix"] * D  # keys and values: H * P * Dh = P * D per layer each
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("method,kw", [
    ("full", {}), ("probe", {}), ("lora", {"rank": 4, "targets": ("q", "v")}),
    ("lora", {"rank": 2, "targets": ("q", "k", "v", "o", "up", "down")}),
    ("adapter", {"bottleneck": 8}), ("prefix", {"n_prefix": 5})])
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_trains_only_what_it_should(method, kw, norm):
    model, b = tiny(norm), batch()
    model.train()
    expected = expected_trainable(method, model, **kw)
    frozen_before = copy.deepcopy(model.state_dict())
    peft.apply_method(model, method, **kw)
    trainable, total = peft.count_parameters(model)
    assert trainable == expected
    assert set(peft.trainable_state_dict(model)) == {n for n, p in model.named_parameters() if p.requires_grad}
    if method != "full":
        assert all(n.startswith("body.") for n, p in model.named_parameters() if not p.requires_grad)
    # One optimiser step: trainable parameters move, frozen ones do not and get no gradient.
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):  # two steps, so the factors behind a zero-initialised one move too
        out = model(**b, labels=torch.tensor([0, 1, 2]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    state = model.state_dict()
    for n, p in model.named_parameters():
        plain = n.replace(".base.", ".")
        if not p.requires_grad:
            assert p.grad is None
            assert torch.equal(p, frozen_before[plain]), n
        elif plain in frozen_before and method != "full":
            assert not torch.equal(state[n], frozen_before[plain]), f"{n} should have trained"


def test_prefix_agrees_across_backends_and_masks_padding():
    b = batch()
    outs = []
    for backend in ("reference", "sdpa", "auto"):  # (the triton kernel needs Tq == Tk: "auto" falls back)
        model = tiny(backend=backend)
        torch.manual_seed(3)
        peft.apply_prefix(model, n_prefix=4)
        outs.append(logits(model, b))
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(outs[0], logits(tiny(), b))  # the prefix changes attention
    # Padding after the real tokens must not change a row's output, prefix or not.
    model = tiny()
    peft.apply_prefix(model, n_prefix=4)
    short = {"input_ids": b["input_ids"][:1, :7], "attention_mask": b["attention_mask"][:1, :7]}
    torch.testing.assert_close(logits(model, short)[0], logits(model, b)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="already"):
        peft.apply_prefix(model)


@pytest.mark.parametrize("method,kw", [("probe", {}), ("lora", {"rank": 4, "targets": ["q", "v", "down"],
                                                                 "dropout": 0.1, "rslora": True}),
                                       ("adapter", {"bottleneck": 8}), ("prefix", {"n_prefix": 3})])
def test_adapter_file_round_trip_is_exact_and_small(tmp_path, method, kw):
    b = batch()
    base = tiny(seed=0)
    base_state = copy.deepcopy(base.state_dict())
    peft.apply_method(base, method, **kw)
    perturb(base)
    with torch.no_grad():  # stand-in for training: move every trainable parameter
        for p in base.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    expected = logits(base, b)
    path = peft.save_adapter(tmp_path / "adapter.safetensors", base, method, kw, base="somewhere")
    assert peft.read_adapter_spec(path)["base"] == "somewhere"
    trainable, total = peft.count_parameters(base)
    assert path.stat().st_size < 4 * trainable + 16_384  # only the trained tensors, plus a header

    fresh = tiny(seed=5)  # a different head init: the file must overwrite it
    fresh.load_state_dict(base_state)
    torch.manual_seed(99)
    peft.load_adapter(path, fresh)
    assert torch.equal(logits(fresh.eval(), b), expected)

    # A file whose tensors (a rank-2 LoRA on k) do not match what its description says is refused.
    wrong = tiny()
    peft.apply_lora(wrong, rank=2, targets=("k",))
    bad = peft.save_adapter(tmp_path / "bad.safetensors", wrong, method, kw)
    with pytest.raises(ValueError, match="does not fit"):
        peft.load_adapter(bad, tiny())


def test_merged_lora_refuses_to_save(tmp_path):
    model = tiny()
    peft.apply_lora(model)
    peft.merge_lora(model)
    with pytest.raises(ValueError, match="merged"):
        peft.save_adapter(tmp_path / "a.safetensors", model, "lora", {})


def test_unknown_method():
    with pytest.raises(ValueError, match="method='bitfit'"):
        peft.apply_method(tiny(), "bitfit")
