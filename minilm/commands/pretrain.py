"""`minilm pretrain`: self-supervised pretraining on unlabelled text (the recipe: minilm.train.pretraining).

    minilm pretrain                                   # 10 CPU-minutes of bert-mini MLM on IMDB -> runs/pretrain/final
    minilm pretrain --device cuda --precision bf16 --batch-size 256 --lr 1e-3 --warmup 300 \\
        --time-budget 4 --out runs/bert-mini-gpu       # a few GPU minutes
    torchrun --nproc_per_node=2 -m minilm pretrain …  # data parallel, same global batch
    MINILM_CACHE=/path/to/cache minilm pretrain …     # offline: fetched IMDB, tokenizer and tokenized corpus
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from minilm.store.atomic import atomic_write_text
from minilm.train.pretraining import ELECTRA_MASK_PROB, OBJECTIVES, RECIPE, PretrainRecipe, build


def configure(parser: argparse.ArgumentParser) -> None:
    d = RECIPE
    a = parser.add_argument
    a("--preset", default=None, help="model shape (ModelConfig preset); default bert-mini, or the --init checkpoint's")
    a("--objective", default=d.objective, choices=sorted(OBJECTIVES),
      help="mlm (token masking), whole_word, span, sequence, clm (causal), or electra (replaced-token "
           "detection: a small generator fills the masks, the encoder spots its replacements); default %(default)s")
    a("--data", default=d.data, help="'imdb', 'rt-polarity:train-text' (the task's training sentences, for "
                                     "task-adaptive pretraining) or a path to a text file / folder of .txt files; "
                                     "default %(default)s")
    a("--init", default=None, metavar="CHECKPOINT",
      help="start from a checkpoint's weights, tokenizer and shape (a checkpoint or run folder) with a fresh "
           "optimiser and warmup: continued, domain- or task-adaptive pretraining")
    a("--vocab-size", type=int, default=None, help="BPE vocabulary of the corpus tokenizer (default 8192)")
    a("--seq-len", type=int, default=d.seq_len, help="tokens per row, [CLS] and [SEP] included")
    a("--batch-size", type=int, default=d.batch_size, help="global rows per optimiser step (all ranks)")
    a("--accumulation", type=int, default=d.accumulation, help="micro-batches per step (splits each rank's batch)")
    a("--steps", type=int, default=d.steps, help="optimiser steps (default: fill --time-budget)")
    a("--time-budget", type=float, default=None, metavar="MINUTES",
      help=f"train for about this long instead of a fixed --steps: the warmup steps are timed, then the number of "
           f"steps is fixed (default {d.DEFAULT_MINUTES:g} minutes when --steps is not given)")
    a("--lr", type=float, default=d.lr, help="peak learning rate")
    a("--warmup", type=int, default=d.warmup, help="linear warmup steps")
    a("--schedule", default=d.schedule, choices=["cosine", "linear", "constant"], help="decay after warmup")
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--mask-prob", type=float, default=None,
      help=f"fraction of maskable tokens to predict (default {d.RECIPE_MASK_PROB}; 0.5 for --objective sequence, "
           f"as in MASS; {ELECTRA_MASK_PROB} for electra, as in ELECTRA)")
    a("--mask-count", default=d.mask_count, choices=["exact", "bernoulli"],
      help="exact: the same number masked in every row; bernoulli: each token independently")
    a("--dropout", type=float, default=d.dropout, help="dropout while pretraining (the recipe: 0)")
    a("--position", default=None, choices=["rope", "learned"],
      help="rotary positions (the default: they leave the unigram plateau in a few hundred steps) or BERT's "
           "learned table (needed to export to Hugging Face BERT)")
    a("--eval-rows", type=int, default=d.eval_rows, help="rows held out at the end of the corpus for evaluation")
    a("--eval-every", type=int, default=0, help="steps between evaluations (0: ~8 per run; 250 with a time budget)")
    a("--save-every", type=int, default=0,
      help="steps between resumable checkpoints (0: ~4 per run; 1000 with a time budget)")
    a("--log-every", type=int, default=10, help="steps between log lines (host syncs)")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    a("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="auto: bf16 on cuda, fp32 on cpu")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--seed", type=int, default=d.seed)
    a("--out", default="runs/pretrain", help="run folder: metrics.jsonl, curves.png, checkpoints, final/")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    group.add_argument("--overwrite", action="store_true", help="empty --out first (it holds an earlier run)")
    a("--no-progress", action="store_true", help="no progress bar (logs only)")


def recipe_from(args) -> PretrainRecipe:
    names = {f.name for f in dataclasses.fields(PretrainRecipe)}
    return PretrainRecipe(**{k: v for k, v in vars(args).items() if k in names})


def run(args) -> int:
    from minilm.train import run_folder
    from minilm.train.trainer import TrainConfig, Trainer, resolve_device, resolve_precision, setup_distributed

    recipe = recipe_from(args)  # every check that needs no data runs before any is loaded
    rank, _, device = setup_distributed(resolve_device(args.device))  # under torchrun: this rank's GPU
    budget = 60 * recipe.time_budget if recipe.time_budget else 0.0
    steps = recipe.steps
    config = TrainConfig(
        steps=steps, lr=recipe.lr, warmup_steps=min(recipe.warmup, steps) if steps else recipe.warmup,
        schedule=recipe.schedule, weight_decay=recipe.weight_decay, accumulation=recipe.accumulation,
        device=args.device, precision=args.precision, compile=args.compile, log_every=args.log_every,
        eval_every=args.eval_every or (250 if budget else max(1, steps // 8)),
        save_every=args.save_every or (1000 if budget else max(1, steps // 4)),
        seed=recipe.seed, resume=args.resume, progress=not args.no_progress, time_budget_s=budget)
    resolve_precision(config.precision, device)
    if rank == 0:
        run_folder.prepare(args.out, resume=args.resume, overwrite=args.overwrite)
    tokenizer, model, train, held = build(recipe, device, verbose=rank == 0)
    metadata = {"command": "minilm " + " ".join(getattr(args, "argv", ["pretrain"])),  # as typed, or as a lesson called it
                "objective": recipe.objective, "data": str(recipe.data), "seq_len": recipe.seq_len,
                "settings": recipe.settings()}
    evaluate = None
    if recipe.objective == "electra":  # both sides' scores; the trainer's default knows only token accuracy
        from minilm.nn.electra import held_out_metrics

        evaluate = lambda m: held_out_metrics(m, held.eval_batches(), trainer.device, trainer._autocast, recipe.seed)
    trainer = Trainer(model, config, train, held, args.out, tokenizer=tokenizer, metadata=metadata, evaluate=evaluate)
    baseline = held.constant_guess_accuracy()
    info = model.describe()
    if trainer.is_main:
        print(f"model: {model.config.d_model}-wide x {model.config.n_layers} layers ({model.config.norm}-norm, "
              f"{model.config.position} positions, dropout {recipe.dropout}), {info['params']:,} parameters; "
              f"{recipe.objective} on {recipe.data}; {steps or '?'} steps x {recipe.batch_size} x {recipe.seq_len} "
              f"tokens on {trainer.device} ({trainer.precision}); world size {trainer.world_size}"
              + (f"; time budget {recipe.time_budget:g} min" if budget else ""), flush=True)
        print(f"best constant guess on the held-out set: {100 * baseline:.2f}% token accuracy", flush=True)
    t0 = time.perf_counter()
    summary = trainer.fit()
    summary.update(constant_guess_accuracy=baseline, wall_s=time.perf_counter() - t0,
                   tokens_seen=trainer.step * recipe.batch_size * recipe.seq_len)
    if trainer.is_main:
        if "eval_accuracy" in summary:
            print(f"held-out token accuracy {100 * summary['eval_accuracy']:.2f}% vs constant guess "
                  f"{100 * baseline:.2f}% ({100 * (summary['eval_accuracy'] - baseline):+.2f} points)"
                  + ("" if "eval_perplexity" not in summary else
                     f"; eval loss {summary['eval_loss']:.3f}, perplexity {summary['eval_perplexity']:.1f}"))
        if "eval_discriminator_accuracy" in summary:
            print(f"(that is the generator's; the discriminator: {100 * summary['eval_discriminator_accuracy']:.2f}% "
                  f"of held-out tokens right, {100 * summary['eval_replaced_recall']:.1f}% of the replaced ones found "
                  f"at {100 * summary['eval_replaced_precision']:.1f}% precision; "
                  f"{100 * summary['eval_replaced_fraction']:.1f}% of tokens were replaced)")
        atomic_write_text(Path(args.out, "summary.json"), json.dumps(summary, indent=2) + "\n")
        if not summary["interrupted"]:
            print(f"saved {Path(args.out) / 'final'} (load with minilm.train.checkpoint.load_model or "
                  f"`minilm finetune --init {Path(args.out) / 'final'}`)")
    return 130 if summary["interrupted"] else 0
