"""`minilm pretrain`: self-supervised pretraining on unlabelled text, and its batch sources.

    minilm pretrain                                   # 10 CPU-minutes of bert-mini MLM on IMDB -> runs/pretrain/final
    minilm pretrain --device cuda --precision bf16 --batch-size 256 --lr 1e-3 --warmup 300 \
        --time-budget 4 --out runs/bert-mini-gpu       # a few GPU minutes
    torchrun --nproc_per_node=2 -m minilm pretrain …  # data parallel, same global batch
    MINILM_CACHE=/path/to/cache minilm pretrain …     # offline: fetched IMDB, tokenizer and tokenized corpus

Design choices:
- The default is a recipe that *learns* on a small budget (in the spirit of Geiping &
  Goldstein's "Cramming"): no dropout while pretraining, exact-count masking at a higher rate
  than BERT's 15% (more supervised positions per step), loss and logits only at masked
  positions (the model's sparse prediction), short rows (128), a short warmup, and small
  batches (16 rows) at lr 1e-3. BERT's original masking stays flags away (`--dropout 0.1
  --mask-prob 0.15 --mask-count bernoulli`).
- Held-out accuracy is scored with every predicted token hidden (`eval_batches`). Scored
  BERT's way, the 10% of predicted tokens left visible are answered by copying the input,
  which models learn within a few hundred steps: on IMDB that alone reads as ~12% against a
  3.9% constant guess, and it hid the fact that the learned-position runs never left the
  unigram plateau (30 CPU-minutes of bert-mini, 1,535 steps: 3.8% vs 3.9%, loss 6.79
  against the unigram's 6.85; neither 100% [MASK] training nor lr 3e-4 changed that).
- Rotary positions (RoFormer) are what got the model off the plateau on the CPU: with the
  same recipe, bert-mini reached 6.7% after 150 steps and 11.9% after 250 (one thread, then
  two; honest scoring). Angles fixed by position let attention find a blank's neighbours
  from the first step, where a learned position table starts as noise (on a synthetic task
  whose blanks are copies of their neighbours, learned positions stayed at chance for 300
  steps at every lr tried). `--position learned` keeps BERT's table, for Hugging Face export.
- The blocks are the preset's: post-norm for the BERT presets. Not Cramming's pre-norm: a
  pre-norm masked LM whose embeddings are not normalised (GPT-2's layout) could not even
  memorise one batch (loss stuck at the batch's unigram entropy, 5.08, after 150 steps,
  where post-norm and transformers' BERT reached 0.02), most likely because the tied
  decoder's gradient drags every token embedding, and with them the unnormalised residual
  stream, the same way (with the embeddings normalised, or the decoder untied, the same
  model memorised the batch).
- Batches are a pure function of (seed, step): the rows of a step come from a seeded
  permutation of the epoch, the masks from a generator seeded by (seed, step). Resume needs no
  data state, and the *global* batch is the same for any number of ranks: each rank masks
  the global batch and keeps its slice.
- Rows live on the training device and are masked there, batched: on a GPU, data and masking
  cost no host round trip.
- The tokenizer is `Tokenizer.for_corpus(data, vocab, lowercase=True)`, cached under
  $MINILM_CACHE with the tokenized corpus, so a copied cache folder lets an offline machine
  start training at once, and fine-tuning on lower-cased rt-polarity sees the same pieces.
- The run folder's `final/` (and `best/`) is a checkpoint `minilm finetune --init` reads.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

OBJECTIVES = {"mlm": "token", "whole_word": "whole_word", "span": "span", "sequence": "sequence", "clm": None}

# The recipe (Cramming-style choices, see the docstring).
DEFAULTS = dict(preset="bert-mini", objective="mlm", data="imdb", vocab_size=8192, seq_len=128, batch_size=16,
                steps=None, time_budget=10.0, lr=1e-3, warmup=50, mask_prob=0.3, mask_count="exact",
                dropout=0.0, weight_decay=0.01, eval_rows=256, position="rope")


def _mix(seed: int, *values: int) -> int:
    """A 63-bit seed from a tuple of integers (splitmix-style), so (seed, step) streams never collide."""
    x = seed & 0xFFFFFFFFFFFFFFFF
    for v in values:
        x = (x ^ (v + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class RowSampler:
    """Which rows make the global batch of a step: epoch after epoch of seeded permutations."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, device: torch.device):
        if n_rows < 1:
            raise ValueError("the corpus gave no training rows: use a larger corpus or a smaller --seq-len")
        self.n_rows, self.batch_size, self.seed, self.device = n_rows, batch_size, seed, device
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator(device="cpu").manual_seed(_mix(self.seed, 1, epoch))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n_rows, generator=g).to(self.device)  # (N,)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """Row indices of the global batch of `step` (B,), on the device."""
        start = step * self.batch_size
        first, last = start // self.n_rows, (start + self.batch_size - 1) // self.n_rows
        parts = []
        for epoch in range(first, last + 1):
            lo = max(start, epoch * self.n_rows) - epoch * self.n_rows
            hi = min(start + self.batch_size, (epoch + 1) * self.n_rows) - epoch * self.n_rows
            parts.append(self._perm(epoch)[lo:hi])
        return torch.cat(parts)  # (B,)


def _shard(batch: dict, rank: int, world_size: int) -> dict:
    size = next(iter(batch.values())).shape[0]
    if size % world_size:
        raise ValueError(f"--batch-size {size} is not divisible by the world size {world_size}")
    per = size // world_size
    return {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}


class MaskedLMBatches:
    """Masked-LM batches from packed rows held on `device`.

    `batch(step, rank, world_size)` -> this rank's slice of the global batch of `step`;
    `eval_batches()` -> the whole set in order, masked once with a fixed seed (the same every call).
    """

    def __init__(self, input_ids: torch.Tensor, word_ids: torch.Tensor, tokenizer, masking, batch_size: int,
                 seed: int = 0, device="cpu"):
        self.device = torch.device(device)
        self.input_ids = input_ids.to(self.device)  # (N, T)
        self.word_ids = word_ids.to(self.device)  # (N, T)
        self.tokenizer, self.masking, self.batch_size, self.seed = tokenizer, masking, batch_size, seed
        self.sampler = RowSampler(len(self.input_ids), batch_size, seed, self.device)
        self.generator = torch.Generator(device=self.device)
        self._eval: list[dict] | None = None

    def _mask(self, rows: torch.Tensor, seed: int, masking=None) -> dict:
        from minilm.collate import mlm_batch

        self.generator.manual_seed(seed)
        return mlm_batch(self.input_ids[rows], self.word_ids[rows], self.tokenizer, masking or self.masking,
                         self.generator)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        return _shard(self._mask(self.sampler.indices(step), _mix(self.seed, 2, step)), rank, world_size)

    def eval_batches(self):
        """Held-out batches in which every chosen token is replaced by [MASK].

        Training keeps some chosen tokens unchanged (BERT's 80/10/10); scoring those would reward
        copying the visible input, which a model learns long before it learns to use context
        (it alone is worth about 9 points of accuracy). Evaluation hides every token it scores.
        """
        if self._eval is None:
            hidden = dataclasses.replace(self.masking, mask_frac=1.0, random_frac=0.0, keep_frac=0.0)
            rows = torch.arange(len(self.input_ids), device=self.device)
            self._eval = [self._mask(r, _mix(self.seed, 3, i), hidden) for i, r in enumerate(rows.split(self.batch_size))]
        return self._eval

    def constant_guess_accuracy(self) -> float:
        """Accuracy of always predicting the most frequent masked token of the eval set."""
        labels = torch.cat([b["labels"][b["labels"] != -100] for b in self.eval_batches()])
        return (torch.bincount(labels).max() / max(1, labels.numel())).item()


class CausalLMBatches:
    """Next-token batches from contiguous rows (N, T+1) held on `device`; same contract as MaskedLMBatches."""

    def __init__(self, rows: torch.Tensor, tokenizer, batch_size: int, seed: int = 0, device="cpu"):
        self.device = torch.device(device)
        self.rows = rows.to(self.device)  # (N, T+1)
        self.tokenizer, self.batch_size, self.seed = tokenizer, batch_size, seed
        self.sampler = RowSampler(len(self.rows), batch_size, seed, self.device)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        from minilm.collate import clm_batch

        return _shard(clm_batch(self.rows[self.sampler.indices(step)], self.tokenizer), rank, world_size)

    def eval_batches(self):
        from minilm.collate import clm_batch

        return [clm_batch(r, self.tokenizer) for r in self.rows.split(self.batch_size)]

    def constant_guess_accuracy(self) -> float:
        labels = torch.cat([b["labels"][b["labels"] != -100] for b in self.eval_batches()])
        return (torch.bincount(labels).max() / max(1, labels.numel())).item()


def configure(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    a = parser.add_argument
    a("--preset", default=d["preset"], help="model shape (ModelConfig preset), default %(default)s")
    a("--objective", default=d["objective"], choices=sorted(OBJECTIVES),
      help="mlm (token masking), whole_word, span, sequence, or clm (causal); default %(default)s")
    a("--data", default=d["data"], help="'imdb' or a path to a text file / folder of .txt files; default %(default)s")
    a("--vocab-size", type=int, default=d["vocab_size"], help="BPE vocabulary of the corpus tokenizer")
    a("--seq-len", type=int, default=d["seq_len"], help="tokens per row, [CLS] and [SEP] included")
    a("--batch-size", type=int, default=d["batch_size"], help="global rows per optimiser step (all ranks)")
    a("--accumulation", type=int, default=1, help="micro-batches per step (splits each rank's batch)")
    a("--steps", type=int, default=d["steps"], help="optimiser steps (default: fill --time-budget)")
    a("--time-budget", type=float, default=None, metavar="MINUTES",
      help=f"train for about this long instead of a fixed --steps: the warmup steps are timed, then the number of "
           f"steps is fixed (default {d['time_budget']:g} minutes when --steps is not given)")
    a("--lr", type=float, default=d["lr"], help="peak learning rate")
    a("--warmup", type=int, default=d["warmup"], help="linear warmup steps")
    a("--schedule", default="cosine", choices=["cosine", "linear", "constant"], help="decay after warmup")
    a("--weight-decay", type=float, default=d["weight_decay"])
    a("--mask-prob", type=float, default=None,
      help=f"fraction of maskable tokens to predict (default {d['mask_prob']}; 0.5 for --objective sequence, as in MASS)")
    a("--mask-count", default=d["mask_count"], choices=["exact", "bernoulli"],
      help="exact: the same number masked in every row; bernoulli: each token independently")
    a("--dropout", type=float, default=d["dropout"], help="dropout while pretraining (the recipe: 0)")
    a("--position", default=d["position"], choices=["rope", "learned"],
      help="rotary positions (the recipe: they leave the unigram plateau in a few hundred steps) or BERT's "
           "learned table (needed to export to Hugging Face BERT); default %(default)s")
    a("--eval-rows", type=int, default=d["eval_rows"], help="rows held out at the end of the corpus for evaluation")
    a("--eval-every", type=int, default=0, help="steps between evaluations (0: ~8 per run; 250 with a time budget)")
    a("--save-every", type=int, default=0,
      help="steps between resumable checkpoints (0: ~4 per run; 1000 with a time budget)")
    a("--log-every", type=int, default=10, help="steps between log lines (host syncs)")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    a("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="auto: bf16 on cuda, fp32 on cpu")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--seed", type=int, default=0)
    a("--out", default="runs/pretrain", help="run folder: metrics.jsonl, curves.png, checkpoints, final/")
    a("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    a("--no-progress", action="store_true", help="no progress bar (logs only)")


def _validate(args) -> None:
    def need(ok: bool, flag: str, accepted: str):
        if not ok:
            raise SystemExit(f"minilm pretrain: {flag}={getattr(args, flag[2:].replace('-', '_'))!r} is invalid: "
                             f"expected {accepted}")

    need(args.vocab_size >= 300, "--vocab-size", "an integer >= 300 (256 bytes + specials + merges)")
    need(args.seq_len >= 8, "--seq-len", "an integer >= 8")
    need(args.batch_size >= 1, "--batch-size", "a positive integer")
    need(args.steps >= 1, "--steps", "a positive integer")
    need(args.time_budget >= 0, "--time-budget", "minutes >= 0")
    need(not args.time_budget or args.warmup >= 10, "--warmup", "at least 10 steps with --time-budget")
    if args.mask_prob is None:  # MASS hides about half of the row; the other objectives use the recipe's rate
        args.mask_prob = 0.5 if args.objective == "sequence" else DEFAULTS["mask_prob"]
    need(0.0 < args.mask_prob < 1.0, "--mask-prob", "a fraction in (0, 1)")
    need(0.0 <= args.dropout < 1.0, "--dropout", "a probability in [0, 1)")
    need(args.eval_rows >= 1, "--eval-rows", "a positive integer")


def build(args, device: torch.device, verbose: bool = True):
    """Tokenizer, model, train and eval batch sources for `args` -> (tokenizer, model, train, eval)."""
    from minilm.config import ModelConfig
    from minilm.corpus import decoder_rows, encoder_rows, tokenize_corpus
    from minilm.data import load_corpus
    from minilm.model import CausalLM, MaskedLM
    from minilm.tokenizer import Tokenizer

    causal = args.objective == "clm"
    t0 = time.perf_counter()
    tokenizer = Tokenizer.for_corpus(args.data, args.vocab_size, lowercase=True)
    docs = load_corpus(args.data)
    corpus = tokenize_corpus(docs, tokenizer, str(args.data))
    if causal:
        rows = decoder_rows(corpus, args.seq_len, tokenizer)  # (N, T+1)
    else:
        rows, word_ids = encoder_rows(corpus, args.seq_len, tokenizer)  # (N, T), (N, T)
    n_eval = min(args.eval_rows, len(rows) // 10)
    if n_eval < 1:
        raise SystemExit(f"minilm pretrain: --data {args.data} gave only {len(rows)} rows of {args.seq_len} "
                         f"tokens: too few to hold out an eval set")
    if verbose:
        print(f"data: {len(docs):,} documents -> {len(rows):,} rows of {args.seq_len} tokens "
              f"({len(rows) - n_eval:,} train, {n_eval:,} held out), tokenizer vocab {tokenizer.vocab_size:,} "
              f"[{time.perf_counter() - t0:.1f}s]", flush=True)

    preset = ModelConfig.preset(args.preset)
    config = ModelConfig.preset(args.preset, vocab_size=tokenizer.vocab_size,
                                max_seq_len=max(args.seq_len, min(preset.max_seq_len, 512)),
                                dropout=args.dropout, attention_dropout=args.dropout, position=args.position)
    torch.manual_seed(args.seed)
    if causal:
        model = CausalLM(config)
        train = CausalLMBatches(rows[:-n_eval], tokenizer, args.batch_size, args.seed, device)
        held = CausalLMBatches(rows[-n_eval:], tokenizer, args.batch_size, args.seed, device)
    else:
        from minilm.masking import MaskingConfig

        model = MaskedLM(config)
        masking = MaskingConfig(strategy=OBJECTIVES[args.objective], mask_prob=args.mask_prob, count=args.mask_count)
        train = MaskedLMBatches(rows[:-n_eval], word_ids[:-n_eval], tokenizer, masking, args.batch_size, args.seed,
                                device)
        held = MaskedLMBatches(rows[-n_eval:], word_ids[-n_eval:], tokenizer, masking, args.batch_size, args.seed,
                               device)
    return tokenizer, model, train, held


def run(args) -> int:
    from minilm.trainer import TrainConfig, Trainer, resolve_device, setup_distributed

    if args.time_budget is None and args.steps is None:
        args.time_budget = DEFAULTS["time_budget"]
    args.time_budget = args.time_budget or 0.0
    if args.steps is None:
        args.steps = 1  # unused: the budget fixes the steps
    _validate(args)
    rank, _, device = setup_distributed(resolve_device(args.device))  # under torchrun: this rank's GPU
    tokenizer, model, train, held = build(args, device, verbose=rank == 0)
    budget = args.time_budget * 60
    steps = 10**9 if budget else args.steps  # with a budget, the trainer fixes the steps after the warmup
    config = TrainConfig(
        steps=steps, lr=args.lr, warmup_steps=min(args.warmup, steps), schedule=args.schedule,
        weight_decay=args.weight_decay, accumulation=args.accumulation, device=args.device,
        precision=args.precision, compile=args.compile, log_every=args.log_every,
        eval_every=args.eval_every or (250 if budget else max(1, steps // 8)),
        save_every=args.save_every or (1000 if budget else max(1, steps // 4)),
        seed=args.seed, resume=args.resume, progress=not args.no_progress, time_budget_s=budget)
    metadata = {"command": "minilm pretrain " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["pretrain"] else []),
                "objective": args.objective, "data": str(args.data), "seq_len": args.seq_len}
    trainer = Trainer(model, config, train, held, args.out, tokenizer=tokenizer, metadata=metadata)
    baseline = held.constant_guess_accuracy()
    info = model.describe() if hasattr(model, "describe") else {}
    if trainer.is_main:
        print(f"model: {args.preset} ({model.config.norm}-norm, {args.position} positions, dropout {args.dropout}), "
              f"{info.get('params', sum(p.numel() for p in model.parameters())):,} parameters; "
              f"{args.objective} on {args.data}; {'?' if budget else args.steps} steps x {args.batch_size} x "
              f"{args.seq_len} tokens on "
              f"{trainer.device} ({trainer.precision}); world size {trainer.world_size}"
              + (f"; time budget {args.time_budget:g} min" if budget else ""), flush=True)
        print(f"best constant guess on the held-out set: {100 * baseline:.2f}% token accuracy", flush=True)
    t0 = time.perf_counter()
    summary = trainer.fit()
    summary.update(constant_guess_accuracy=baseline, wall_s=time.perf_counter() - t0)
    if trainer.is_main:
        if "eval_accuracy" in summary:
            print(f"held-out token accuracy {100 * summary['eval_accuracy']:.2f}% vs constant guess "
                  f"{100 * baseline:.2f}% ({100 * (summary['eval_accuracy'] - baseline):+.2f} points); "
                  f"eval loss {summary['eval_loss']:.3f}, perplexity {summary['eval_perplexity']:.1f}")
        Path(args.out, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if not summary["interrupted"]:
            print(f"saved {Path(args.out) / 'final'} (load with minilm.checkpoint.load_model or "
                  f"`minilm finetune --init {Path(args.out) / 'final'}`)")
    return 0
