"""`minilm bench objectives`: pretraining objectives at the same budget, judged downstream.

    minilm bench objectives                       # mlm vs electra, 12 CPU-minutes each, rt-polarity at 512 labels
    minilm bench objectives --minutes 30 --objectives mlm,span,electra --labels 256,1024

How it measures:
- Each objective runs `minilm pretrain --objective X --time-budget M` from scratch with the
  recipe's defaults (bert-mini, IMDB, 16 x 128 rows, lr 1e-3): the same wall-clock budget on
  the same machine, one after the other. Equal time, not equal steps, is the budget a user
  has: an ELECTRA step costs more (a generator pass and a discriminator pass) and sees fewer
  steps. Run it on an otherwise idle machine, or the budgets are not equal.
- Masked accuracy is not comparable across objectives (ELECTRA's masked-LM side is a small
  generator; the encoder kept is the discriminator), so the verdict is downstream: every
  encoder, and the same shape from scratch, fine-tuned on the same rt-polarity subsets
  (lesson 06's recipe: every weight, batch 32, at least 4 epochs and 64 steps, the epoch
  chosen on the whole validation split), the whole test split scored once, mean ± std over
  seeds.
- Each pretraining run is kept in `--out`; a finished one (its summary.json written) is
  reused, so a rerun only fine-tunes. results.json and results.md hold the table.
"""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

from minilm.downstream.finetuning import FinetuneConfig, run_finetune
from minilm.downstream.metrics import mean_std
from minilm.downstream.tasks import ClassifyTask
from minilm.store.atomic import atomic_write_text
from minilm.train.pretraining import PretrainRecipe, pretrain

BATCH, MIN_STEPS, EPOCHS = 32, 64, 4  # lesson 06's fine-tuning recipe


def configure(parser):
    parser.add_argument("--objectives", default="mlm,electra", help="comma-separated `minilm pretrain --objective`s")
    parser.add_argument("--minutes", type=float, default=12.0, help="pretraining budget per objective")
    parser.add_argument("--steps", type=int, default=None, help="a fixed step count instead of --minutes (tests)")
    parser.add_argument("--preset", default=None, help="model shape (default: the recipe's bert-mini)")
    parser.add_argument("--labels", default="512", help="comma-separated rt-polarity training-set sizes")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per cell")
    parser.add_argument("--eval-size", type=int, default=None,
                        help="score a fixed subset of validation and test (tests); default the whole splits")
    parser.add_argument("--out", default="runs/bench-objectives", help="folder for the runs and the table")


def pretrain_once(objective: str, args, folder: Path) -> dict:
    """`minilm pretrain` for one objective into `folder` (reused when finished): its summary."""
    if not (folder / "summary.json").exists():
        budget = dict(steps=args.steps, warmup=min(10, args.steps)) if args.steps else dict(time_budget=args.minutes)
        recipe = PretrainRecipe(objective=objective, preset=args.preset, progress=False, overwrite=True,
                                out=str(folder), **budget)
        flags = " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in budget.items())
        command = (f"minilm pretrain --objective {objective} {flags}" + (f" --preset {args.preset}" if args.preset
                                                                          else "") + f" --out {folder}")
        print("  " + command, flush=True)
        if pretrain(recipe, command=command)["interrupted"]:
            raise KeyboardInterrupt
    return json.loads((folder / "summary.json").read_text())


def fine_tune(init: str, arch: str, size: int, seed: int, task, eval_size) -> float:
    n_train = task.split_size("train")
    cfg = FinetuneConfig(task="classify", data="rt-polarity", init=init, arch=arch, method="full", seed=seed,
                         epochs=max(EPOCHS, math.ceil(MIN_STEPS * BATCH / size)), batch_size=BATCH,
                         train_size=None if size >= n_train else size, eval_size=eval_size, progress=False)
    return run_finetune(cfg, task=task)["test"]["accuracy"]


def run(args):
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    sizes = [int(s) for s in args.labels.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    summaries = {o: pretrain_once(o, args, out / o) for o in objectives}
    task = ClassifyTask("rt-polarity")
    arms = {"scratch": "scratch", **{o: str(out / o / "final") for o in objectives}}
    arch = arms[objectives[0]]  # the scratch arm takes the first encoder's shape and tokenizer
    scores: dict[str, dict[int, list[float]]] = {a: {s: [] for s in sizes} for a in arms}
    for arm, init in arms.items():
        for size in sizes:
            for seed in range(args.seeds):
                acc = fine_tune(init, arch, size, seed, task, args.eval_size)
                scores[arm][size].append(acc)
                print(f"  [{arm:>8} | {size:,} labels | seed {seed}] test accuracy {acc:.1%}", flush=True)

    def cell(values):
        m, s = mean_std(values)
        return f"{100 * m:.1f} ± {100 * s:.1f}"

    head = ("| encoder | steps | tokens | pretrain s | held-out masked acc | discriminator acc | "
            + " | ".join(f"{s:,} labels" for s in sizes) + " |")
    rows = [head, "|---|" + "---:|" * (5 + len(sizes))]
    for arm in arms:
        s = summaries.get(arm)
        if s is None:
            pre = ["–"] * 5
        else:
            disc = s.get("eval_discriminator_accuracy")
            pre = [f"{s['step']:,}", f"{s['tokens_seen'] / 1e6:.1f} M", f"{s['wall_s']:.0f}",
                   f"{100 * s['eval_accuracy']:.1f}%", "–" if disc is None else f"{100 * disc:.1f}%"]
        rows.append("| " + " | ".join([arm, *pre, *(cell(scores[arm][z]) for z in sizes)]) + " |")
    table = "\n".join(rows)
    how = (f"Measured on {platform.node()} ({platform.processor() or platform.machine()}), one after the other: "
           + (f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes") + " of `minilm pretrain` per "
           f"objective from scratch; rt-polarity test accuracy (%) over {args.seeds} seeds, "
           + ("the whole test split" if args.eval_size is None else f"{args.eval_size} test sentences")
           + f". Masked accuracy: every scored token hidden (ELECTRA's is its generator's). "
           f"Total {time.perf_counter() - t_start:.0f} s.")
    print(table + "\n" + how)
    results = {"objectives": objectives, "sizes": sizes, "seeds": args.seeds, "minutes": args.minutes,
               "steps": args.steps, "pretraining": summaries, "test_accuracy": scores, "how": how}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / "results.md", table + "\n\n" + how + "\n")
    return 0
