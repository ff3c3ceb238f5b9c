"""Optimisation: AdamW's update, the learning-rate schedule, gradient clipping, parameter groups, accumulation.

Each piece is one pure function with a contract, so it can be read, tested and assigned alone;
the `Trainer` only calls them.

Design choices:
- `adamw_update` is AdamW written out (Loshchilov & Hutter: the weight decay is applied to the
  weights directly, not folded into the gradient as L2). The trainer steps with
  `torch.optim.AdamW` (fused on CUDA, foreach on the CPU: several times faster than a Python
  loop over tensors); `AdamW` below wraps `adamw_update` as a drop-in optimiser, and the tests
  prove the two give the same weights step for step.
- No decay on biases, norms and embeddings, decided by module type and tensor rank rather than
  by parameter names, so the rule holds for any model (a tied output matrix is the embedding's).
- The learning rate is a pure function of the step: no scheduler object, nothing to save or
  restore on resume. Step 0 trains at peak / warmup_steps, not at 0 (see `learning_rate`).
- Clipping by the global norm (`clip_grad_norm`) scales every gradient by one factor, so the
  update keeps its direction; it returns the norm before clipping, which the trainer logs.
- Accumulation weights each micro-batch's mean loss by its share of the labelled tokens of the
  *global* batch, so 4 micro-batches of 8 rows give exactly the gradient of one batch of 32,
  whatever the number of labels in each (a plain average of micro-losses does not).
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear", "constant")


def adamw_update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                 step: int, *, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
    """One AdamW step for one tensor, in place.

    Contract: `step` counts from 1 (the first update is step 1). `exp_avg` and `exp_avg_sq` hold
    the running first and second moments (zeros before step 1) and are updated in place, then

        param <- param * (1 - lr * weight_decay)                      (decoupled weight decay)
        param <- param - lr * m_hat / (sqrt(v_hat) + eps)

    with m_hat = exp_avg / (1 - beta1^step) and v_hat = exp_avg_sq / (1 - beta2^step), the
    bias-corrected moments. Matches `torch.optim.AdamW` (amsgrad off) to float rounding.
    """
    # BEGIN SOLUTION optim
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)  # m = b1 m + (1 - b1) g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v = b2 v + (1 - b2) g^2
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    param.mul_(1 - lr * weight_decay)  # decay the weights themselves, not the gradient
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))
    # END SOLUTION optim


class AdamW(torch.optim.Optimizer):
    """`torch.optim.AdamW`'s interface (param groups, state_dict) over `adamw_update`: readable, slower."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                adamw_update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], lr=group["lr"],
                             beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"])
        return loss


def learning_rate(step: int, *, peak: float, warmup_steps: int, total_steps: int, schedule: str = "cosine",
                  min_lr_ratio: float = 0.1) -> float:
    """The learning rate of optimiser step `step` (0-based) of a run of `total_steps` steps.

    Contract: linear warmup from peak/warmup_steps at step 0 to `peak` at step warmup_steps - 1;
    then `constant` stays at peak, `cosine` and `linear` decay to peak * min_lr_ratio, reached
    exactly at the last step (total_steps - 1) and held after it. Never negative, never above peak.

    The convention, since libraries differ: the first update (step 0) already moves the weights,
    at peak / warmup_steps, and step warmup_steps - 1 is the first at the peak (peak 1, warmup 4:
    0.25, 0.5, 0.75, 1.0, then the decay). Hugging Face's get_cosine_schedule_with_warmup
    gives step 0 a rate of 0 and reaches the peak one step later; warmup_steps=0 starts at the peak.
    """
    # BEGIN SOLUTION optim
    floor = peak * min_lr_ratio
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    decay_steps = total_steps - 1 - warmup_steps  # 0: the step after warmup is the last, at the floor
    progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup_steps) / decay_steps)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return floor + (peak - floor) * shape
    # END SOLUTION optim


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Clip gradients by their global norm, in place; returns the norm before clipping.

    Contract: the global norm is sqrt(sum over every parameter with a gradient of ||grad||^2),
    all gradients taken as one vector. When it exceeds `max_norm`, every gradient is multiplied
    by the same factor max_norm / (norm + 1e-6), so the update keeps its direction and its
    norm becomes max_norm; otherwise they are left as they are. Returns the norm before
    clipping as a 0-d tensor on the gradients' device (0 when no parameter has a gradient);
    no value is read back to the host. Matches torch.nn.utils.clip_grad_norm_.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))  # ||all grads||
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # 1 when the norm is already small enough
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return norm


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: [decayed weight matrices, undecayed biases, norms and embeddings].

    Decided by module type (Embedding, any *Norm) and rank (1-D = bias or gain). Frozen
    parameters (requires_grad False) are left out.
    """
    no_decay = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) or "Norm" in type(module).__name__:
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if id(p) in no_decay or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def micro_batches(batch: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """Split a batch (every tensor with the same leading size B) into `n` equal micro-batches, in order."""
    # BEGIN SOLUTION optim
    size = next(iter(batch.values())).shape[0]
    if size % n:
        raise ValueError(f"TrainConfig.accumulation={n} does not divide this rank's batch of {size} rows")
    return [{k: v[i * size // n:(i + 1) * size // n] for k, v in batch.items()} for i in range(n)]
    # END SOLUTION optim


def micro_batch_weights(counts: torch.Tensor, global_count: torch.Tensor, world_size: int = 1) -> torch.Tensor:
    """Weights for the mean losses of a rank's micro-batches so their weighted sum is the global mean.

    Contract: `counts` (M,) are the labelled tokens of each micro-batch of this rank;
    `global_count` is their sum over every micro-batch of every rank. Summing
    weight_i * mean_loss_i over micro-batches (and averaging over ranks, as DistributedDataParallel
    does with gradients) gives the mean loss over all labelled tokens of the global batch.
    """
    # BEGIN SOLUTION optim
    return counts * world_size / global_count.clamp_min(1)  # DDP averages over ranks: multiply back
    # END SOLUTION optim
