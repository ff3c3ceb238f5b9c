"""Model FLOPs utilisation: the share of a GPU's peak that training turns into model FLOPs.

    mfu = tokens/s x training FLOPs per token / (peak FLOP/s x ranks)

Design choices:
- FLOPs per token come from the model's own `describe(seq_len)` (forward + backward, the
  PaLM estimate), so the trainer knows nothing about the model's insides.
- The peak is the datasheet's dense bf16/fp16 tensor-core figure, looked up by a substring of
  the device name; an unknown GPU or a CPU gets no MFU rather than a guessed one.
"""
from __future__ import annotations

import inspect

import torch

# Dense bf16/fp16 tensor-core peak FLOP/s by device-name substring (the first match wins).
PEAK_FLOPS = {
    "H200": 989e12, "H100": 989e12, "H800": 989e12, "GH200": 989e12, "B200": 2250e12,
    "A100": 312e12, "A800": 312e12, "A10G": 125e12, "L40S": 362e12, "L4": 121e12,
    "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12,
}


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of a known GPU, else None (no MFU on the CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float | None:
    """Training (forward + backward) FLOPs per token from `model.describe()`, or None when it cannot say."""
    describe = getattr(model, "describe", None)
    if describe is None:
        return None
    info = describe(seq_len=seq_len) if "seq_len" in inspect.signature(describe).parameters else describe()
    return float(info["flops_per_token"]) if "flops_per_token" in info else None


def mfu(tokens_per_s: float, flops: float, peak: float, world_size: int = 1) -> float:
    """The fraction of `world_size` GPUs' peak that `tokens_per_s` (all ranks) at `flops` per token uses."""
    return tokens_per_s * flops / peak / world_size
