"""Lesson 06's ladder at the two sizes issue 13 set goals for (512 and all 6,824 labels), 3 seeds.

    python lessons/measurements/ladder_goal_sizes.py      # about 40 minutes on an idle 2-core CPU

`lessons/06_sentiment.py --full` runs these sizes too, among five, with every rung; on two CPU
cores that is hours, so this runs the lesson's own rung functions (`bag_of_words`,
`linear_probe`, `fine_tune`) at the goal sizes only, with the lesson's recipe and the whole
validation and test splits (as --full does), and without task-adaptive pretraining.
One JSON line per run goes to ladder_goal_sizes.jsonl beside this file (runs already there are
skipped, so an interrupted run continues); the table at the end is read from that file.
"""
import importlib.util
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
spec = importlib.util.spec_from_file_location("sentiment", HERE.parent / "06_sentiment.py")
l06 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(l06)

from minilm.nn import hf  # noqa: E402
from minilm.nn.config import PRETRAINED_DIR  # noqa: E402
from minilm.downstream.metrics import mean_std  # noqa: E402
from minilm.downstream.tasks import ClassifyTask, with_subset  # noqa: E402

OUT = HERE / "ladder_goal_sizes.jsonl"
SEEDS = [0, 1, 2]


def main():
    done = {(r["rung"], r["size"], r["seed"]) for r in map(json.loads, OUT.read_text().splitlines())} \
        if OUT.exists() else set()
    task = ClassifyTask("rt-polarity")
    n_train = task.split_size("train")
    real = hf.real_checkpoint()
    plan = l06.Plan(sizes=[512, n_train], seeds=SEEDS, rungs=[], epochs=4, min_steps=l06.MIN_STEPS, tapt_steps=0,
                    task=task, n_train=n_train, checkpoint=PRETRAINED_DIR, where="the committed encoder", real=real)
    grid = [(r, 512) for r in ("bag of words", "real BERT probe", "scratch", "shared encoder", "real BERT fine-tuned")]
    grid += [(r, n_train) for r in ("bag of words", "real BERT probe", "scratch", "shared encoder")]
    probe = l06.probe_features(plan)
    for rung, size in grid:
        for seed in SEEDS:
            if (rung, size, seed) in done:
                continue
            sub = task if size >= n_train else with_subset(task, "train", size, seed)
            if rung == "bag of words":
                acc, note, secs = l06.bag_of_words(sub)
            elif rung == "real BERT probe":
                acc, note, secs = l06.linear_probe(sub, probe)
            else:
                init = {"scratch": "scratch", "shared encoder": str(PRETRAINED_DIR), "real BERT fine-tuned": str(real)}
                acc, note, secs = l06.fine_tune(plan, init[rung], size, seed,
                                                l06.REAL_LR if rung.startswith("real") else None)
            row = dict(rung=rung, size=size, seed=seed, acc=acc, note=note, secs=round(secs, 1),
                       at=time.strftime("%Y-%m-%d %H:%M:%S"))
            print(row, flush=True)
            with OUT.open("a") as f:
                f.write(json.dumps(row) + "\n")
    table()


def table():
    cells = defaultdict(list)
    for r in map(json.loads, OUT.read_text().splitlines()):
        cells[r["rung"], r["size"]].append(r["acc"])
    sizes = sorted({s for _, s in cells})
    print("| rung | " + " | ".join(f"{s:,} labels" for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for rung in dict.fromkeys(r for r, _ in cells):
        print(f"| {rung} | " + " | ".join(
            "–" if (rung, s) not in cells else "{:.1%} ± {:.1%}".format(*mean_std(cells[rung, s])) for s in sizes) + " |")


if __name__ == "__main__":
    table() if sys.argv[1:] == ["--table"] else main()
