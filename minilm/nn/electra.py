"""ELECTRA: pretraining by replaced-token detection (Clark et al., 2020).

    model = ELECTRA(config, special_ids=tokenizer.special_ids)
    out = model(**mlm_batch(...))     # out.loss = generator MLM loss + 50 x discriminator loss
    model.body                         # the discriminator's encoder: what fine-tuning starts from

A small masked-LM *generator* fills the masked positions with tokens it samples; a
*discriminator* of the full size reads the result and says, at every position, whether the
token there is the original or a replacement. The discriminator learns from every token of
the row, where a masked LM learns only from the masked ~15-30%: at small compute that is why
it gets more out of each step.

Design choices:
- The batch is an ordinary masked-LM batch (`collate.mlm_batch`) whose chosen positions all
  show [MASK] (the generator's input); `labels` hold the originals. So the data pipeline,
  the trainer and resume need nothing new.
- The generator is the discriminator's width with a quarter of its layers (at least one), and
  shares its embeddings (token table, positions, norm) and tied decoder, as in the paper:
  the discriminator's embeddings learn from the generator's dense MLM signal too.
- Sampling: at the masked positions only, from the generator's softmax at temperature 1
  (Gumbel-max: argmax of logits + Gumbel noise), with the special tokens' logits set to -inf,
  so a replacement is never [CLS], [SEP], [PAD] or [MASK]. No gradient flows through the
  sample (the paper trains the generator by its MLM loss only, not adversarially).
- A sampled token equal to the original counts as original (label 0), as in the paper: the
  discriminator's labels are exactly "this token differs from the text".
- The discriminator's loss is binary cross-entropy over every real (non-padding) position,
  weighted 50 against the generator's loss (the paper's lambda).
- `ELECTRA` lives beside the other model classes' rules: a checkpoint names it, `load_model`
  rebuilds it, `minilm finetune --init` takes its `.body`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from minilm.nn.attention import kept, model_padding_mask
from minilm.nn.config import ModelConfig
from minilm.nn.model import MaskedLM, ModelOutput, TaskModel, Transformer, init_weights

DISC_WEIGHT = 50.0  # the paper's lambda: the binary loss is much smaller than the MLM loss


@dataclass
class ElectraOutput(ModelOutput):
    """ModelOutput (loss, and the generator's logits and labels at the masked positions), plus the discriminator's side."""
    generator_loss: Tensor | None = None  # scalar
    discriminator_loss: Tensor | None = None  # scalar
    replaced: Tensor | None = None  # (B, T) bool: the corrupted row differs from the original here
    scores: Tensor | None = None  # (B, T) discriminator logits: > 0 means "replaced"
    real: Tensor | None = None  # (B, T) bool: the positions scored (not padding)


class ReplacedTokenHead(nn.Module):
    """The discriminator's head: dense, GELU, then one logit per token."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.out = nn.Linear(config.d_model, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(F.gelu(self.dense(h))).squeeze(-1)  # (..., D) -> (...)


def sample_replacements(logits: Tensor, special_ids: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token per row of `logits` (N, V), drawn from softmax(logits), never one of `special_ids`: (N,) long."""
    logits = logits.detach().float().index_fill(-1, special_ids, float("-inf"))  # (N, V)
    u = torch.rand(logits.shape, generator=generator, device=generator.device if generator else logits.device)
    gumbel = -torch.log(-torch.log(u.to(logits.device).clamp(1e-20, 1.0)))  # (N, V)
    return (logits + gumbel).argmax(-1)  # (N,)


def corrupt(input_ids: Tensor, labels: Tensor, sampled: Tensor) -> tuple[Tensor, Tensor]:
    """The discriminator's input and labels: (corrupted (B, T), replaced (B, T) bool).

    input_ids show [MASK] where labels != -100; those positions get `sampled` (N,) in order,
    every other position keeps its token. replaced = the corrupted token differs from the original.
    """
    where = labels != -100  # (B, T)
    original = torch.where(where, labels, input_ids)  # (B, T)
    corrupted = original.masked_scatter(where, sampled.to(original.dtype))  # (B, T)
    return corrupted, corrupted != original


class ELECTRA(TaskModel):
    """Generator (small masked LM) + discriminator (`body` + `head`): replaced-token detection."""

    def __init__(self, config: ModelConfig, special_ids: tuple[int, ...] = (), generator_layers: int | None = None):
        super().__init__()
        self.config = config
        self.special_ids = tuple(sorted(int(i) for i in special_ids))
        self.generator_layers = generator_layers or max(1, config.n_layers // 4)
        self.body = Transformer(config, causal=False)  # the discriminator
        self.head = ReplacedTokenHead(config)
        self.generator = MaskedLM(dataclasses.replace(config, n_layers=self.generator_layers))
        init_weights(self, config)
        self.generator.body.embeddings = self.body.embeddings  # one embedding table for both
        if config.tie_embeddings:
            self.generator.head.decoder.weight = self.body.embeddings.tok.weight
        self.register_buffer("_specials", torch.tensor(self.special_ids, dtype=torch.long), persistent=False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None, rng: torch.Generator | None = None) -> ModelOutput:
        """With labels (a masked-LM batch): the ELECTRA loss and both sides' outputs.
        Without labels: the discriminator's replaced-token logits (B, T) for input_ids as they are.
        `rng` drives the sampling (None: torch's global generator)."""
        if labels is None:
            return ModelOutput(loss=None, logits=self.head(self.body(input_ids, attention_mask, token_type_ids)),
                               labels=None)
        gen = self.generator(input_ids, attention_mask, token_type_ids, labels=labels)  # logits (N, V)
        corrupted, replaced = corrupt(input_ids, labels, sample_replacements(gen.logits, self._specials, rng))
        scores = self.head(self.body(corrupted, attention_mask, token_type_ids))  # (B, T)
        real = (torch.ones_like(replaced) if attention_mask is None
                else kept(model_padding_mask(attention_mask)))  # (B, T) bool
        disc = F.binary_cross_entropy_with_logits(scores.float()[real], replaced[real].float())
        return ElectraOutput(loss=gen.loss + DISC_WEIGHT * disc, logits=gen.logits, labels=gen.labels,
                             generator_loss=gen.loss, discriminator_loss=disc, replaced=replaced, scores=scores,
                             real=real)


@torch.no_grad()
def held_out_metrics(model: ELECTRA, batches, device, autocast, seed: int = 0) -> dict:
    """Both sides on held-out masked-LM batches, the same samples every call (seeded):
    eval_loss (the training loss), eval_accuracy (the generator's masked-token accuracy),
    eval_generator_loss, eval_discriminator_loss, and the discriminator's accuracy over every
    real token, its recall and precision on the replaced ones, and the replaced fraction."""
    sums = dict.fromkeys(("loss", "gen", "disc", "correct", "masked", "right", "real", "replaced", "found", "flagged"),
                         0.0)
    g = torch.Generator(device=device).manual_seed(seed)
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            out = model(**batch, rng=g)
        n = (out.labels != -100).sum().item()
        guess, real = out.scores > 0, out.real
        sums["loss"] += out.loss.item() * n
        sums["gen"] += out.generator_loss.item() * n
        sums["correct"] += (out.logits.argmax(-1) == out.labels).sum().item()
        sums["masked"] += n
        sums["disc"] += out.discriminator_loss.item() * real.sum().item()
        sums["right"] += ((guess == out.replaced) & real).sum().item()
        sums["real"] += real.sum().item()
        sums["replaced"] += (out.replaced & real).sum().item()
        sums["found"] += (guess & out.replaced & real).sum().item()
        sums["flagged"] += (guess & real).sum().item()
    m, r = max(sums["masked"], 1), max(sums["real"], 1)
    return {"eval_loss": sums["loss"] / m, "eval_accuracy": sums["correct"] / m, "eval_generator_loss": sums["gen"] / m,
            "eval_discriminator_loss": sums["disc"] / r, "eval_discriminator_accuracy": sums["right"] / r,
            "eval_replaced_recall": sums["found"] / max(sums["replaced"], 1),
            "eval_replaced_precision": sums["found"] / max(sums["flagged"], 1),
            "eval_replaced_fraction": sums["replaced"] / r, "eval_tokens": int(sums["masked"])}
