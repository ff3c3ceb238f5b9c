"""`minilm finetune`: a pretrained (or scratch) model fine-tuned on a labelled task (minilm.downstream.finetuning)."""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from minilm.downstream.finetuning import DEFAULT_LR, RUN_INFO, FinetuneConfig, run_finetune
from minilm.downstream.tasks import TASKS
from minilm.nn import peft


def configure(parser: argparse.ArgumentParser) -> None:
    d = FinetuneConfig()
    a = parser.add_argument
    a("--task", choices=sorted(TASKS), default=d.task)
    a("--data", default=None, help="a named data set (rt-polarity, conll2003, atis) or a TSV / CoNLL path")
    a("--init", default=d.init, help="checkpoint or run folder of a pretrained model, or 'scratch'")
    a("--method", choices=sorted(peft.METHODS), default=d.method)
    a("--arch", default=None, help="with --init scratch: checkpoint or preset to copy shape and tokenizer from")
    a("--tokenizer", default=None, help="tokenizer.json (or checkpoint folder) overriding the checkpoint's")
    a("--train-size", type=int, default=None, help="use a seeded random subset of N training examples")
    a("--eval-size", type=int, default=None,
      help="score a fixed random subset of N validation and N test examples (quick runs); default: all")
    a("--allow-unseen-labels", action="store_true",
      help="score validation/test labels that train lacks as misses instead of refusing (ATIS's test set has some)")
    a("--allow-rare-labels", action="store_true",
      help="accept labels that occur in only a few rows or look like a typo of another label")
    a("--seed", type=int, default=d.seed)
    a("--epochs", type=int, default=d.epochs)
    a("--batch-size", type=int, default=d.batch_size)
    a("--lr", type=float, default=None, help=f"peak learning rate (default per method: {DEFAULT_LR})")
    a("--warmup-ratio", type=float, default=d.warmup_ratio)
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--dropout", type=float, default=d.dropout)
    a("--max-len", type=int, default=None,
      help="sub-tokens per example, [CLS] and [SEP] included (default: min(128, the model's max_seq_len))")
    a("--lora-rank", type=int, default=d.lora_rank)
    a("--lora-alpha", type=float, default=d.lora_alpha)
    a("--lora-dropout", type=float, default=d.lora_dropout)
    a("--lora-targets", default=",".join(d.lora_targets), help=f"comma list of {peft.LINEAR_NAMES}")
    a("--rslora", action="store_true", help="scale LoRA by alpha/sqrt(rank) instead of alpha/rank")
    a("--bottleneck", type=int, default=d.bottleneck, help="adapter width")
    a("--n-prefix", type=int, default=d.n_prefix, help="prefix length per layer")
    a("--device", default=d.device)
    a("--out", default=None, help="run folder (default runs/finetune-TASK-DATA-METHOD-INIT-sSEED)")
    a("--overwrite", action="store_true", help="replace the run already in --out")
    a("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["lora_targets"] = tuple(t for t in args.lora_targets.split(",") if t)
    cfg = FinetuneConfig(**values)
    cfg.out = cfg.out or cfg.default_out()  # the command always keeps a run folder
    row = run_finetune(cfg)
    print(f"wrote results.md, results.json and {RUN_INFO} in {shlex.quote(str(cfg.out))}", file=sys.stderr)
    return 130 if row["interrupted"] else 0  # interrupted: the best epoch so far was still scored and saved
