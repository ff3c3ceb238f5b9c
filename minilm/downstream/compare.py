"""The course's central experiment: pretrained versus scratch, and LoRA versus full fine-tuning.

    minilm compare --init minilm/assets/pretrained --out runs/compare              # the full grid
    minilm compare --init runs/pretrain --out runs/compare-quick --quick           # minutes, one seed
    minilm compare --device cuda ...                                               # same code on a GPU

Design choices:
- An `Arm` is one configuration (task, data, number of labels, init, method); the grid
  runs every arm for every seed through `finetune.run_finetune`, the very code the CLI
  uses, so a table entry is something a user can reproduce with one `minilm finetune`.
- Paired seeds: the seed picks the training subset, the head's initialisation and the
  batch order, and the pretrained and scratch arms of a seed share it, so the gain is
  measured on the same data.
- Every finished run is appended to `runs.jsonl` at once and skipped when the grid runs
  again, so a long CPU grid can be stopped and resumed (or split across machines).
- The summary reports mean ± sample standard deviation over seeds, the gain of
  pretraining, LoRA's gap to full fine-tuning, and whether each of the course's targets
  (`TARGETS`, `LORA_TARGET`) was met.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from minilm.downstream.finetuning import FinetuneConfig, run_finetune
from minilm.downstream.metrics import mean_std
from minilm.downstream.tasks import TASKS


# What pretraining should buy, in test points (F1 points for NER), per (task, data, labels; None = all).
TARGETS = {("classify", "rt-polarity", None): 5.0, ("classify", "rt-polarity", 512): 12.0,
           ("ner", "conll2003", None): 8.0}
# LoRA passes when it trains at most this share of the parameters and trails full fine-tuning by at most this.
LORA_TARGET = {"max_trainable_pct": 5.0, "max_gap": 2.0}


@dataclass(frozen=True)
class Arm:
    task: str  # "classify" | "ner"
    data: str
    train_size: int | None  # None = the whole training split
    init: str  # "pretrained" | "scratch"
    method: str
    epochs: int

    @property
    def key(self) -> str:
        size = "all" if self.train_size is None else str(self.train_size)
        return f"{self.task}-{self.data}-{size}-{self.init}-{self.method}"


def central_arms(quick: bool = False) -> list[Arm]:
    """The central grid: every task with pretrained, scratch and LoRA arms. Small training sets get more epochs (the best one is picked on validation).

    quick: the lesson-sized version: rt-polarity at 512 labels and CoNLL-2003 at 1,000
    sentences, so a CPU runs it in minutes.
    """
    if quick:
        return [Arm("classify", "rt-polarity", 512, init, method, 8)
                for init, method in (("pretrained", "full"), ("scratch", "full"), ("pretrained", "lora"))] + \
               [Arm("ner", "conll2003", 1000, init, "full", 5) for init in ("pretrained", "scratch")]
    arms = []
    for task, data, size, epochs in (("classify", "rt-polarity", None, 4), ("classify", "rt-polarity", 512, 10),
                                     ("ner", "conll2003", None, 4)):
        arms += [Arm(task, data, size, "pretrained", "full", epochs), Arm(task, data, size, "scratch", "full", epochs),
                 Arm(task, data, size, "pretrained", "lora", epochs)]
    return arms


def _fmt(values: list[float]) -> str:
    m, s = mean_std([100 * v for v in values])
    return f"{m:.2f} ± {s:.2f}"


def summarize(rows: list[dict]) -> str:
    """Markdown: per-arm mean ± std, pretrained-vs-scratch gains, LoRA-vs-full gaps, targets met or not."""
    by_arm: dict[str, list[dict]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r)
    lines = ["## Every arm (test score, mean ± std over seeds)", "",
             "| task | data | labels | init | method | seeds | trainable | validation | test | time/run |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for key, rs in by_arm.items():
        r0 = rs[0]
        lines.append(f"| {r0['task']} | {r0['data']} | {r0['train_size']:,} | {r0['init_kind']} | {r0['method']} "
                     f"| {len(rs)} | {r0['trainable_pct']:.2f}% | {_fmt([r['validation'][r['metric']] for r in rs])} "
                     f"| {_fmt([r['test'][r['metric']] for r in rs])} "
                     f"| {statistics.fmean(r['time_s'] for r in rs):.0f} s |")

    def scores(task, data, size, init, method):
        return {r["seed"]: r["test"][r["metric"]] for r in rows if (r["task"], r["data"], r["train_size_arg"],
                                                                     r["init_kind"], r["method"]) ==
                (task, data, size, init, method)}

    combos = sorted({(r["task"], r["data"], r["train_size_arg"]) for r in rows}, key=str)

    def paired(a: tuple[str, str], b: tuple[str, str]):
        """Per (task, data, labels): arms a and b, each (init, method), on the seeds both ran:
        (task, data, size, number of labels, a's test scores, b's test scores, a - b per seed)."""
        for task, data, size in combos:
            sa, sb = scores(task, data, size, *a), scores(task, data, size, *b)
            seeds = sorted(set(sa) & set(sb))
            if seeds:
                n = next(r["train_size"] for r in rows
                         if (r["task"], r["data"], r["train_size_arg"]) == (task, data, size))
                yield (task, data, size, n, [sa[s] for s in seeds], [sb[s] for s in seeds],
                       [sa[s] - sb[s] for s in seeds])

    lines += ["", "## Pretrained versus scratch (full fine-tuning, test)", "",
              "| task | labels | pretrained | scratch | gain (paired seeds) | target | met |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for task, data, size, n, pre, scr, gains in paired(("pretrained", "full"), ("scratch", "full")):
        target = TARGETS.get((task, data, size))
        met = "" if target is None else ("yes" if 100 * statistics.fmean(gains) >= target else "no")
        lines.append(f"| {task} {data} | {n:,} | {_fmt(pre)} | {_fmt(scr)} "
                     f"| {_fmt(gains)} | {'' if target is None else f'+{target:g}'} | {met} |")
    lines += ["", "## LoRA versus full fine-tuning (pretrained, test)", "",
              f"| task | labels | full | LoRA | LoRA trainable | gap | within {LORA_TARGET['max_gap']:g} points |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for task, data, size, n, full, lora, gaps in paired(("pretrained", "full"), ("pretrained", "lora")):
        pct = next(r["trainable_pct"] for r in rows if r["method"] == "lora" and r["task"] == task)
        ok = "yes" if (100 * statistics.fmean(gaps) <= LORA_TARGET["max_gap"]
                       and pct <= LORA_TARGET["max_trainable_pct"]) else "no"
        lines.append(f"| {task} {data} | {n:,} | {_fmt(full)} | {_fmt(lora)} | {pct:.2f}% | {_fmt(gaps)} | {ok} |")
    return "\n".join(lines) + "\n"


def _read_rows(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def run_comparison(pretrained: str | Path, out: str | Path, *, arms: list[Arm] | None = None,
                   seeds: tuple[int, ...] = (0, 1, 2), device: str = "auto", progress: bool = False,
                   **overrides) -> str:
    """Run every arm for every seed (skipping runs already in out/runs.jsonl); write summary.md.

    `overrides` are FinetuneConfig fields applied to every run (e.g. batch_size, lr, max_len,
    arch). Returns the summary Markdown.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = {(r["arm"], r["seed"]) for r in _read_rows(log)}
    arms = arms if arms is not None else central_arms()
    tasks: dict[tuple[str, str], object] = {}
    for arm in arms:
        for seed in seeds:
            if (arm.key, seed) in done:
                continue
            if (arm.task, arm.data) not in tasks:  # load and check each data set once
                tasks[(arm.task, arm.data)] = TASKS[arm.task](arm.data)
            cfg = FinetuneConfig(task=arm.task, data=arm.data, init="scratch" if arm.init == "scratch" else
                                 str(pretrained), arch=str(pretrained), method=arm.method, train_size=arm.train_size,
                                 seed=seed, epochs=arm.epochs, device=device, progress=progress)
            cfg = replace(cfg, **overrides)
            print(f"[compare] {arm.key} seed {seed}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            row = run_finetune(cfg, task=tasks[(arm.task, arm.data)])
            row.update(arm=arm.key, init_kind=arm.init, train_size_arg=arm.train_size,
                       wall_s=time.perf_counter() - t0)
            with open(log, "a") as f:  # one write per line: parallel processes (one per seed) can share the log
                f.write(json.dumps(row) + "\n")
            rows = _read_rows(log)  # including what other processes finished meanwhile
            (out / "summary.md").write_text(summarize(rows))  # a partial grid still reports what it measured
    rows = _read_rows(log)
    text = summarize(rows)
    (out / "summary.md").write_text(text)
    return text
