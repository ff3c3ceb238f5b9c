"""`minilm evaluate`: score a fine-tuned model on a data split.

    minilm evaluate runs/finetune-ner-lora-pretrained-s0                 # its test split
    minilm evaluate runs/finetune-classify-full-scratch-s0 --split validation
    minilm evaluate RUN --data my_other.tsv                               # same labels, other text

Design choices:
- A run folder written by `minilm finetune` is self-describing (finetune.json): task,
  label names, max length, and either a full checkpoint or an adapter file with its base
  checkpoint (checked by sha256). `model_source.load_finetuned` rebuilds the model; this
  command only scores, with the same code path fine-tuning used, so it reproduces the
  run's own validation and test scores exactly.
- Another data set may be scored if its labels are the model's: a label the model never
  saw is an error (or, with --allow-unseen-labels, a counted miss), never a silent remap.
- Prints the seqeval-style report (entities) or the per-class report and writes the scores
  as JSON (and a confusion matrix PNG for classification) next to the run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from minilm.downstream.tasks import TASKS
from minilm.nn import peft
from minilm.train import model_source

SPLITS = ("train", "validation", "test")


def evaluate_run(run_dir: str | Path, split: str = "test", data: str | None = None,
                 allow_unseen_labels: bool | None = None, batch_size: int = 128, merge_lora: bool = False) -> dict:
    """Score the fine-tuned model in `run_dir` on `split` of its data (or of `data`) -> scores dict.

    merge_lora: fold a LoRA run's updates into the base weights first (inference at the base
    model's cost; equal to the unmerged model up to float rounding).
    Returns {"task", "data", "split", "metric", <scores>, "report"}; predictions are left out.
    """
    if split not in SPLITS:
        raise ValueError(f"--split={split!r}: expected one of {SPLITS}")
    model, tokenizer, info = model_source.load_finetuned(model_source.resolve(run_dir, flag="run", accept=("finetuned",)))
    if merge_lora:
        if info["method"] != "lora":
            raise ValueError(f"--merge-lora: {run_dir} was fine-tuned with method {info['method']!r}, not 'lora'")
        peft.merge_lora(model)
    data = data or info["data"]
    allow = info.get("allow_unseen_labels", False) if allow_unseen_labels is None else allow_unseen_labels
    task = TASKS[info["task"]](data, label_names=info["label_names"], allow_unseen=allow)
    source = task.source(split, tokenizer, batch_size=batch_size, max_len=info["max_len"])
    source.eval_batch_size = batch_size
    scored = task.score(model, source)
    picture = Path(run_dir) / f"confusion_{split}.png"
    report = task.report(source, scored, picture)
    scores = {k: v for k, v in scored.items() if k != "predictions"}
    return {"task": info["task"], "data": data, "split": split, "metric": task.metric, **scores, "report": report}


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
