"""Parameter-efficient fine-tuning: probe, LoRA, bottleneck adapters, prefix tuning.

Design choices:
- Every method edits a task model in place and leaves a clear split: the *head* (every
  parameter outside `model.body`: the classifier, and the pooler of a SequenceClassifier)
  is always trained; the body is frozen except for what the method adds. `full` trains
  everything, `probe` only the head.
- LoRA wraps the body's `nn.Linear` layers chosen by their attribute name ("q", "k",
  "v", "o", "up", "gate", "down") with `LoRALinear`, which keeps the frozen layer as `.base` and
  adds `scaling * B A x` with A (r, in) random and B (out, r) zero, so at step 0 the model
  is exactly the base model. scaling = alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski
  2023), which keeps the update's size stable as the rank grows. `merge_lora` folds B A into
  the base weight for inference; `unmerge_lora` takes it out again.
- Adapters (Houlsby et al. 2019) are small bottleneck MLPs added, with a residual, to the
  output of each block's attention projection `attn.o` and feed-forward projection
  `ff.down`, i.e. before the residual add and layer norm. Their up-projection starts at
  zero, so the model starts unchanged. As in the paper, the layer norms train too.
- Prefix tuning (Li & Liang 2021, in the P-tuning v2 form without reparameterisation)
  fills each `SelfAttention.prefix` slot with `PrefixKV`, learned keys and values per
  layer and head; the model concatenates them in front of the real keys and values before
  calling attention(), so every attention backend works unchanged.
- The trainable parameters *are* the adapter file: `trainable_state_dict` (head included)
  is what `save_adapter` writes, and `load_adapter` refuses a file whose names or shapes do
  not match the model it is loaded into.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from minilm.nn.model import RMSNorm
from minilm.store.atomic import atomic_path, atomic_write_text

LINEAR_NAMES = ("q", "k", "v", "o", "up", "gate", "down")  # the body's Linear layers, by attribute name (gate: SwiGLU)


# ---------------------------------------------------------------- freezing and counting


def is_head(name: str) -> bool:
    """True for a parameter name outside the pretrained body: the task head."""
    return not name.startswith("body.")


def freeze_body(model: nn.Module) -> nn.Module:
    """Freeze every parameter of `model.body`; leave the head trainable (the linear probe)."""
    for name, p in model.named_parameters():
        p.requires_grad_(is_head(name))
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied parameters are counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():  # .parameters() already yields a shared tensor once
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (method weights and the head), by name, detached."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update: y = W x + b + scaling * B A dropout(x)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float, rslora: bool):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = alpha / (math.sqrt(rank) if rslora else rank)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init; B = 0 makes the update 0
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The dense update scaling * B A, shaped like the base weight (out, in)."""
        # BEGIN SOLUTION peft
        return self.scaling * (self.lora_B @ self.lora_A)  # (out, in)
        # END SOLUTION peft

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out). The update goes through two thin matmuls, never the dense B A."""
        # BEGIN SOLUTION peft
        y = self.base(x)  # (..., out)
        if self.merged:
            return y  # B A is already inside base.weight
        return y + self.scaling * F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # (..., out)
        # END SOLUTION peft

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base layer for inference: base.weight += delta_weight(), once.

        Sets `self.merged`; a second call changes nothing. Afterwards forward() is the base layer
        alone (the update is not added a second time). Changes base.weight in place.
        """
        # BEGIN SOLUTION peft
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True
        # END SOLUTION peft

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo merge(): base.weight -= delta_weight() if merged, and clear `self.merged`; else nothing.

        Changes base.weight in place; afterwards forward() adds the low-rank update again.
        """
        # BEGIN SOLUTION peft
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False
        # END SOLUTION peft

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


def _body_linears(model: nn.Module, targets: tuple[str, ...]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every plain nn.Linear in model.body whose attribute name is a target."""
    unknown = [t for t in targets if t not in LINEAR_NAMES]
    if unknown or not targets:
        raise ValueError(f"targets={targets!r}: expected a non-empty subset of {LINEAR_NAMES}")
    found = []
    for parent in model.body.modules():
        for attr, child in parent.named_children():
            if attr in targets and type(child) is nn.Linear:
                found.append((parent, attr, child))
    if not found:
        raise ValueError(f"targets={targets!r} matched no nn.Linear in model.body "
                         f"(is a parameter-efficient method already applied?)")
    return found


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16, dropout: float = 0.0,
               targets: tuple[str, ...] = ("q", "v"), rslora: bool = False) -> nn.Module:
    """Wrap the body's target Linear layers with LoRA; freeze the body; keep the head trainable."""
    if not (isinstance(rank, int) and rank > 0):
        raise ValueError(f"rank={rank!r}: expected a positive integer")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r}: expected a positive number")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r}: expected a probability in [0, 1)")
    layers = _body_linears(model, tuple(targets))
    freeze_body(model)
    for parent, attr, layer in layers:
        setattr(parent, attr, LoRALinear(layer, rank, alpha, dropout, rslora).train(model.training))
    return model


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (inference at the base model's cost)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("merge_lora: the model has no LoRA layers (call apply_lora first)")
    for layer in layers:
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo merge_lora: subtract the updates again so training can continue."""
    for layer in lora_layers(model):
        layer.unmerge()
    return model


# ---------------------------------------------------------------- bottleneck adapters


class Adapter(nn.Module):
    """Houlsby's bottleneck: h + up(gelu(down(h))), with `up` zero so it starts as the identity."""

    def __init__(self, d_model: int, bottleneck: int, like: torch.Tensor):
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck, device=like.device, dtype=like.dtype)
        self.up = nn.Linear(bottleneck, d_model, device=like.device, dtype=like.dtype)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., d_model) -> (..., d_model): h + up(gelu(down(h))), the residual around the bottleneck.

        With `up` zero (fresh) this is exactly h. Uses the exact (erf) GELU, F.gelu's default.
        """
        # BEGIN SOLUTION peft
        return h + self.up(F.gelu(self.down(h)))  # (..., d_model)
        # END SOLUTION peft


class AdaptedLinear(nn.Module):
    """A frozen Linear whose output passes through an Adapter: adapter(base(x))."""

    def __init__(self, base: nn.Linear, bottleneck: int):
        super().__init__()
        self.base = base
        self.adapter = Adapter(base.out_features, bottleneck, base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))  # (..., out)


def apply_adapters(model: nn.Module, bottleneck: int = 64) -> nn.Module:
    """Add an adapter after every block's attention output (attn.o) and feed-forward output
    (ff.down); freeze the body except adapters and layer norms; keep the head trainable."""
    if not (isinstance(bottleneck, int) and bottleneck > 0):
        raise ValueError(f"bottleneck={bottleneck!r}: expected a positive integer")
    layers = _body_linears(model, ("o", "down"))
    freeze_body(model)
    for module in model.body.modules():
        if isinstance(module, (nn.LayerNorm, RMSNorm)):
            module.requires_grad_(True)
    for parent, attr, layer in layers:
        setattr(parent, attr, AdaptedLinear(layer, bottleneck).train(model.training))
    return model


# ---------------------------------------------------------------- prefix tuning


class PrefixKV(nn.Module):
    """Learned keys and values for one attention layer: prefix(batch_size) -> (k, v), each (B, Hkv, P, Dh).

    Hkv is the layer's key/value heads (n_heads, or fewer with grouped-query attention)."""

    def __init__(self, n_heads: int, head_dim: int, n_prefix: int, like: torch.Tensor):
        super().__init__()
        shape = (n_heads, n_prefix, head_dim)
        self.key = nn.Parameter(torch.randn(shape, device=like.device, dtype=like.dtype) * 0.02)  # (Hkv, P, Dh)
        self.value = nn.Parameter(torch.randn(shape, device=like.device, dtype=like.dtype) * 0.02)  # (Hkv, P, Dh)

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.key.unsqueeze(0).expand(batch_size, -1, -1, -1)  # (B, Hkv, P, Dh)
        v = self.value.unsqueeze(0).expand(batch_size, -1, -1, -1)  # (B, Hkv, P, Dh)
        return k, v


def apply_prefix(model: nn.Module, n_prefix: int = 16) -> nn.Module:
    """Give every block's attention `n_prefix` learned key/value pairs; freeze the body; keep the head trainable."""
    if not (isinstance(n_prefix, int) and n_prefix > 0):
        raise ValueError(f"n_prefix={n_prefix!r}: expected a positive integer")
    cfg = model.config
    blocks = list(model.body.blocks)
    if any(block.attn.prefix is not None for block in blocks):
        raise ValueError("apply_prefix: the model already has prefixes")
    freeze_body(model)
    for block in blocks:
        prefix = PrefixKV(cfg.kv_heads, cfg.head_dim, n_prefix, block.attn.q.weight)
        block.attn.prefix = prefix.train(model.training)
    return model


# ---------------------------------------------------------------- one entry point, one file


def apply_full(model: nn.Module) -> nn.Module:
    """Full fine-tuning: every parameter trains."""
    model.requires_grad_(True)
    return model


METHODS = {"full": apply_full, "probe": freeze_body, "lora": apply_lora, "adapter": apply_adapters,
           "prefix": apply_prefix}


def apply_method(model: nn.Module, method: str, **settings) -> nn.Module:
    """Apply a method by name with its keyword settings (those of the apply_* function)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {sorted(METHODS)}")
    return METHODS[method](model, **settings)


def save_adapter(path: str | Path, model: nn.Module, method: str, settings: dict, **extra) -> Path:
    """Write the trainable parameters (method weights + head) to `path` (safetensors) and the
    method with its settings, plus any `extra` JSON fields, to `path` with suffix .json."""
    if any(layer.merged for layer in lora_layers(model)):
        raise ValueError("save_adapter: LoRA is merged into the base weights; call unmerge_lora first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.cpu().contiguous() for k, v in trainable_state_dict(model).items()}
    with atomic_path(path) as tmp:  # a reader never sees half a file
        save_file(tensors, str(tmp))
    atomic_write_text(path.with_suffix(".json"), json.dumps({"method": method, "settings": settings, **extra},
                                                            indent=2) + "\n")
    return path


def read_adapter_spec(path: str | Path) -> dict:
    """The JSON side of an adapter file: {"method", "settings", ...extra}."""
    meta = Path(path).with_suffix(".json")
    if not meta.exists():
        raise FileNotFoundError(f"{meta} is missing: an adapter file needs its JSON description beside it")
    return json.loads(meta.read_text())


def load_adapter(path: str | Path, model: nn.Module) -> nn.Module:
    """Apply the file's method to `model` (a task model holding the base weights) and load its tensors.

    Refuses a file whose tensor names or shapes differ from the parameters the method trains.
    """
    spec = read_adapter_spec(path)
    apply_method(model, spec["method"], **spec["settings"])
    tensors = load_file(str(path))
    own = dict(model.named_parameters())
    wanted = {n for n, p in own.items() if p.requires_grad}
    missing, unexpected = sorted(wanted - set(tensors)), sorted(set(tensors) - wanted)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model for method {spec['method']!r}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, t in tensors.items():
            if own[name].shape != t.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(t.shape)}, the model wants {tuple(own[name].shape)}")
            own[name].copy_(t)
    return model
