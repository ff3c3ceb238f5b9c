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
- --out never writes over a file that `minilm evaluate` did not write, nor into a run
  folder's own files: the scores file says who wrote it, and inside a run folder only
  `eval_*.json` is allowed. Checked before the model is loaded.
"""
from __future__ import annotations

import argparse
import json
import shlex
from fnmatch import fnmatch
from pathlib import Path

from minilm.downstream.finetuning import SPLITS, evaluate_run
from minilm.store.atomic import atomic_write_text
from minilm.train import run_folder

WRITTEN_BY = "minilm evaluate"  # in every scores file: the only files --out may write over


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


def scores_path(out: str | None, run: str | Path, split: str) -> Path:
    """Where the scores go: --out, or RUN/eval_SPLIT.json; a path that would clobber something is refused.

    An existing file is written over only if `minilm evaluate` wrote it (its WRITTEN_BY field);
    inside a run folder only `eval_*.json` at its top, never one of the run's own files.
    """
    path = Path(out) if out else Path(run) / f"eval_{split}.json"
    if path.is_dir():
        raise ValueError(f"--out {shlex.quote(str(path))} is a folder: give a file name for the scores")
    if path.exists():
        try:
            ours = json.loads(path.read_text()).get("written_by") == WRITTEN_BY
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"--out {shlex.quote(str(path))} exists and minilm evaluate did not write it: not "
                             f"writing over it; choose another file")
    for folder in path.resolve().parents:
        if run_folder.is_run(folder) and not (folder == path.resolve().parent and fnmatch(path.name, "eval_*.json")):
            raise ValueError(f"--out {shlex.quote(str(path))} is inside the run folder {shlex.quote(str(folder))}, "
                             f"whose files belong to the run: scores go to its eval_SPLIT.json (the default) or "
                             f"outside it")
    return path


def run(args: argparse.Namespace) -> int:
    out = scores_path(args.out, args.run, args.split)  # before any work
    result = evaluate_run(args.run, args.split, args.data, args.allow_unseen_labels, args.batch_size, args.merge_lora)
    print(result["report"])
    print(f"{result['split']} {result['metric']}: {100 * result[result['metric']]:.2f}")
    scores = {"written_by": WRITTEN_BY, **{k: v for k, v in result.items() if k != "report"}}
    atomic_write_text(out, json.dumps(scores, indent=2) + "\n")
    print(f"wrote {shlex.quote(str(out))}")
    return 0
