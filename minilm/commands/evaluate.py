"""`minilm evaluate`: score a fine-tuned model on a data split.

    minilm evaluate runs/finetune-ner-lora-pretrained-s0                 # its test split
    minilm evaluate runs/finetune-classify-full-scratch-s0 --split validation
    minilm evaluate RUN --data my_other.tsv                               # same labels, other text

Design choices:
- A run folder written by `minilm finetune` is self-describing (finetune.json): task,
  label names, max length, and either a full checkpoint or an adapter file with its base
  checkpoint (checked by sha256). `finetuning.evaluate_run` rebuilds the model
  (`model_source.load_finetuned`) and scores it with the same code path fine-tuning used, so
  it reproduces the run's own validation and test scores exactly; this command prints.
- Another data set may be scored if its labels are the model's: a label the model never
  saw is an error (or, with --allow-unseen-labels, a counted miss), never a silent remap.
- Prints the seqeval-style report (entities) or the per-class report and writes the scores
  as JSON (and a confusion matrix PNG for classification) next to the run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from minilm.downstream.finetuning import SPLITS, evaluate_run


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("run", help="a run folder written by `minilm finetune` (holds finetune.json)")
    a("--split", choices=SPLITS, default="test")
    a("--data", default=None, help="score this data set instead of the run's own (same labels)")
    a("--allow-unseen-labels", action="store_true", default=None,
      help="score labels the model never saw as misses instead of refusing")
    a("--batch-size", type=int, default=128)
    a("--merge-lora", action="store_true", help="merge a LoRA run's updates into the base weights before scoring")
    a("--out", default=None, help="JSON file for the scores (default RUN/eval_SPLIT.json)")


def run(args: argparse.Namespace) -> int:
    result = evaluate_run(args.run, args.split, args.data, args.allow_unseen_labels, args.batch_size, args.merge_lora)
    print(result["report"])
    print(f"{result['split']} {result['metric']}: {100 * result[result['metric']]:.2f}")
    out = Path(args.out) if args.out else Path(args.run) / f"eval_{args.split}.json"
    out.write_text(json.dumps({k: v for k, v in result.items() if k != "report"}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
