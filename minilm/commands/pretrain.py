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
import os
import shlex
from pathlib import Path

from minilm.data.masking import COUNTS
from minilm.nn.config import POSITIONS
from minilm.train.optim import SCHEDULES
from minilm.train.pretraining import ELECTRA_MASK_PROB, OBJECTIVES, RECIPE, PretrainRecipe, pretrain
from minilm.train.trainer import PRECISIONS


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
    a("--init", default=None, metavar="SOURCE",
      help="start from a model's weights, tokenizer and shape with a fresh optimiser and warmup (continued, domain- "
           "or task-adaptive pretraining): a checkpoint or run folder, or a Hugging Face folder (BERT for the "
           "masked objectives, GPT-2 for clm)")
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
    a("--schedule", default=d.schedule, choices=SCHEDULES, help="decay after warmup")
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--mask-prob", type=float, default=None,
      help=f"fraction of maskable tokens to predict (default {d.RECIPE_MASK_PROB}; 0.5 for --objective sequence, "
           f"as in MASS; {ELECTRA_MASK_PROB} for electra, as in ELECTRA)")
    a("--mask-count", default=d.mask_count, choices=COUNTS,
      help="exact: the same number masked in every row; bernoulli: each token independently")
    a("--dropout", type=float, default=d.dropout, help="dropout while pretraining (the recipe: 0)")
    a("--position", default=None, choices=POSITIONS,
      help="rotary positions (rope, the default: they leave the unigram plateau in a few hundred steps) or BERT's "
           "learned table (needed to export to Hugging Face BERT)")
    a("--eval-rows", type=int, default=d.eval_rows, help="rows held out at the end of the corpus for evaluation")
    a("--eval-every", type=int, default=d.eval_every,
      help="steps between evaluations (0: ~8 per run; 250 with a time budget)")
    a("--save-every", type=int, default=d.save_every,
      help="steps between resumable checkpoints (0: ~4 per run; 1000 with a time budget)")
    a("--log-every", type=int, default=d.log_every, help="steps between log lines (host syncs)")
    a("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    a("--precision", default=d.precision, choices=PRECISIONS, help="auto: bf16 on cuda, fp32 on cpu")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--seed", type=int, default=d.seed)
    a("--out", default=d.out, help="run folder: metrics.jsonl, curves.png, checkpoints, final/")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    group.add_argument("--overwrite", action="store_true",
                       help="replace the run in --out (removes only the files minilm wrote there)")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar (logs only)")


def recipe_from(args) -> PretrainRecipe:
    names = {f.name for f in dataclasses.fields(PretrainRecipe)}
    return PretrainRecipe(**{k: v for k, v in vars(args).items() if k in names})


def run(args) -> int:
    recipe = recipe_from(args)  # every check that needs no data runs here, before any is loaded
    # As typed, or as a lesson called it: recorded in every checkpoint.
    summary = pretrain(recipe, command="minilm " + " ".join(getattr(args, "argv", ["pretrain"])))
    if not summary["interrupted"] and int(os.environ.get("RANK", "0")) == 0:
        final = shlex.quote(str(Path(recipe.out) / "final"))  # a path with spaces stays one argument
        print(f"saved {final} (load with minilm.train.checkpoint.load_model or `minilm finetune --init {final}`)")
    return 130 if summary["interrupted"] else 0
