"""The course's acceptance targets, checked against what the lessons measured.

    minilm course                                   # or the lessons one by one, in any mode
    python lessons/measurements/targets.py [--runs runs] [--out targets.md]

The lessons teach; they say what they expect and what the run shows, and keep their raw
figures in JSON beside their results (`Lesson.save_data`). The project's own bar (how far
the course's encoder must carry each lesson, set when the lessons were built) lives here, so
tracking it never crowds a lesson. Each target prints one line, `met` or `MISSED` with the
measured value; a target whose lesson did not run, or not at the size it names, is
`not measured` (06's 512- and 6,824-label targets need `--full`, or ladder_goal_sizes.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from minilm.downstream.compare import LORA_TARGET  # noqa: E402  (after the path line: run as a script)

# Lesson 06 (mean test accuracy over the seeds, the whole test split):
GAP_GOALS = {512: (12.0, True), 6824: (5.0, False)}  # shared minus scratch: (points, must clear 2 std), per size
BOW_GOAL = 512  # the shared encoder scores higher than bag of words at this many labels
REAL_GOALS = {512: 0.75, 6824: 0.80}  # the real checkpoint's accuracy at that many labels
# Lesson 09:
ZERO_SHOT_GOAL = 0.65  # the best label words, calibrated
PROMPT_GOAL_SHOTS = (16, 64)  # where the prompt should beat a new head


def _read(runs: Path, lesson: str, name: str) -> dict | None:
    path = runs / "lessons" / lesson / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _mean(values) -> float:
    return statistics.fmean(values)


def _spread(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def verdicts(runs: Path) -> list[tuple[str, str]]:
    """(target, verdict) for every target, the verdict "met (…)", "MISSED (…)" or "not measured"."""
    out = []

    def check(what: str, ok: bool | None, measured: str = "") -> None:
        out.append((what, "not measured" if ok is None else f"{'met' if ok else 'MISSED'} ({measured})"))

    ladder = _read(runs, "06_sentiment", "ladder")
    acc = ladder["test_accuracy"] if ladder else {}

    def cell(rung: str, size: int) -> list[float] | None:
        return acc.get(rung, {}).get(str(size))

    for size, (goal, clear) in GAP_GOALS.items():
        shared, scratch = cell("shared encoder", size), cell("scratch", size)
        what = f"06: shared encoder - scratch at {size:,} labels >= +{goal:g} points" + (" and outside 2 std"
                                                                                            if clear else "")
        if shared is None or scratch is None:
            check(what, None)
            continue
        gap, noise = 100 * (_mean(shared) - _mean(scratch)), 100 * max(_spread(shared), _spread(scratch))
        check(what, gap >= goal and (not clear or gap > 2 * noise), f"{gap:+.1f}")
    enc, bow = cell("shared encoder", BOW_GOAL), cell("bag of words", BOW_GOAL)
    check(f"06: shared encoder > bag of words at {BOW_GOAL:,} labels", None if enc is None or bow is None else
          _mean(enc) > _mean(bow), "" if enc is None or bow is None else f"{_mean(enc):.1%} vs {_mean(bow):.1%}")
    sizes = ladder["sizes"] if ladder else []
    gains = [100 * (_mean(cell("shared + TAPT", s)) - _mean(cell("shared encoder", s))) for s in sizes
             if cell("shared + TAPT", s) and cell("shared encoder", s)]
    check("06: shared + TAPT >= the shared encoder alone, at every size run", min(gains) >= 0 if gains else None,
          f"worst {min(gains):+.1f} points" if gains else "")
    for size, goal in REAL_GOALS.items():
        real = {r: cell(r, size) for r in ("real BERT fine-tuned", "real BERT probe") if cell(r, size)}
        best = max(real, key=lambda r: _mean(real[r])) if real else None
        check(f"06: the real BERT at {size:,} labels >= {goal:.0%}", None if best is None else
              _mean(real[best]) >= goal, "" if best is None else f"{_mean(real[best]):.1%}, {best}")

    peft = _read(runs, "08_peft", "peft")
    what = (f"08: LoRA at most {LORA_TARGET['max_trainable_pct']:g}% of the parameters and within "
            f"{LORA_TARGET['max_gap']:g} points of full fine-tuning")
    if peft is None:
        check(what, None)
    else:
        share = peft["trainable_pct"]["lora"]
        gap = 100 * (_mean(peft["test_accuracy"]["lora"]) - _mean(peft["test_accuracy"]["full"]))
        check(what, share <= LORA_TARGET["max_trainable_pct"] and gap >= -LORA_TARGET["max_gap"],
              f"{share:.1f}%, {gap:+.1f} points")

    zero = _read(runs, "09_prompts", "zero_shot")
    best = max(zero.values(), key=lambda z: z["calibrated"])["calibrated"] if zero else None
    check(f"09: zero-shot >= {ZERO_SHOT_GOAL:.0%} (best label words, calibrated)",
          None if best is None else best >= ZERO_SHOT_GOAL, "" if best is None else f"{best:.1%}")
    few = _read(runs, "09_prompts", "few_shot")
    for k in PROMPT_GOAL_SHOTS:
        prompt = few["prompt_accuracy"].get(str(k)) if few else None
        head = few["head_accuracy"].get(str(k)) if few else None
        check(f"09: the prompt beats the head at {k} labels", None if not prompt or not head else
              _mean(prompt) > _mean(head), "" if not prompt or not head else
              f"{_mean(prompt):.1%} vs {_mean(head):.1%}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the lessons wrote (runs/lessons/NN_*)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    rows = verdicts(args.runs)
    table = "\n".join(["| target | verdict |", "|---|---|"] + [f"| {what} | {verdict} |" for what, verdict in rows])
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
