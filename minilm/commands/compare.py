"""`minilm compare`: the pretrained-versus-scratch and PEFT grids over seeds (minilm.downstream.compare)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from minilm.downstream.compare import TASKS, central_arms, run_comparison
from minilm.train.checkpoint import PRETRAINED_DIR


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", default=str(PRETRAINED_DIR), help="the pretrained checkpoint or run folder")
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="the lesson-sized grid (512 labels, 1k NER sentences)")
    p.add_argument("--only", choices=sorted(TASKS), default=None, help="run one task's arms")
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="run the seeds in this many processes at once (a GPU has "
                                                         "room for several BERT-mini runs)")


def run(args) -> int:
    arms = [a for a in central_arms(args.quick) if args.only in (None, a.task)]
    if args.jobs > 1 and len(args.seeds) > 1:
        _parallel_seeds(args)
    print(run_comparison(args.init, args.out, arms=arms, seeds=tuple(args.seeds), device=args.device,
                         progress=args.progress))
    return 0


def _parallel_seeds(args) -> None:
    """Run each seed in its own process (at most args.jobs at once); they share out/runs.jsonl."""
    base = [sys.executable, "-m", "minilm", "compare", "--init", args.init, "--out", args.out, "--device", args.device]
    base += ["--quick"] * args.quick + (["--only", args.only] if args.only else [])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    pending, running = list(args.seeds), []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            log = open(Path(args.out) / f"seed{seed}.log", "w")
            proc = subprocess.Popen([*base, "--seeds", str(seed)], stdout=log, stderr=subprocess.STDOUT)
            running.append((proc, seed))
        proc, seed = running.pop(0)
        if proc.wait() != 0:
            print(f"[compare] seed {seed} failed: see {Path(args.out) / f'seed{seed}.log'}", file=sys.stderr)
