"""Benchmark the Triton kernels against torch on the GPU at hand, with its ceilings measured in the same run.

    python -m minilm.kernels.bench [--quick] [--out DIR] [--dry-run]
    minilm bench kernels [--quick] [--out DIR] [--dry-run]       (the same)

What it measures (all medians of `triton.testing.do_bench`, which flushes L2 between
runs; the spread is the 20th-80th percentile):
- ceilings: device-to-device copy bandwidth (bytes read + written) and a bf16
  8192^3 matmul's TFLOP/s;
- softmax over the last dim, fp32 and bf16, 256..65,536 columns (--quick: the four
  headline widths), minilm vs `torch.softmax`, forward and backward, in GB/s
  (`softmax_bytes`); plus the attention-shaped scaled causal softmax vs eager torch;
- attention, bf16, minilm vs torch's SDPA backends (flash, cudnn, efficient) and the eager
  matmul-softmax-matmul reference, forward and backward, in TFLOP/s (`attention_flops`), on
  the headline shapes (BERT-like and GPT-like batches, head dim 64 and 128, causal and not,
  one padded BERT batch); the full run adds a sequence-length sweep.

Every kernel is checked against the fp32 reference before it is timed (relative error in
the table). It prints the ratios and the goals last, and writes results.csv, results.json
and PNG plots under --out, each saying how it measured. Without a CUDA GPU it says so and
exits 0; --dry-run runs the whole harness on fake timings (no kernels launched) so the
formatting can be tested on a CPU.

The parts: `bench_suites` (the cases, and the GPU and dry-run labs they are measured in),
`bench_compile` (every variant compiled ahead, in parallel), `bench_report` (summary,
table, files, plots). This file only wires them together.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from minilm.kernels.bench_compile import compile_ahead, compile_tasks
from minilm.kernels.bench_report import environment, short_table, summarize, write_outputs
from minilm.kernels.bench_suites import SOFTMAX_FULL_COLS, SOFTMAX_QUICK_COLS, DryLab, GPULab, planned_timings, run_suites


def configure(parser):
    parser.add_argument("--quick", action="store_true", help="headline shapes only (a few minutes on an H200)")
    parser.add_argument("--out", type=Path, default=Path("runs/kernels-bench"), help="folder for CSV, JSON and PNGs")
    parser.add_argument("--dry-run", action="store_true", help="fake timings, no kernels: tests the harness on a CPU")


def run(args):
    """The sweep; `python -m minilm.kernels.bench` and `minilm bench kernels` both land here."""
    if not args.dry_run and not torch.cuda.is_available():
        print("minilm.kernels.bench: no CUDA GPU on this machine, so there is nothing to measure. Run it where there is "
              "an NVIDIA GPU (or pass --dry-run to exercise the harness on fake timings).")
        return 0
    lab = DryLab() if args.dry_run else GPULab()
    env = environment(lab)
    cols = SOFTMAX_QUICK_COLS if args.quick else SOFTMAX_FULL_COLS
    start = time.time()
    if lab.launches:  # a dry run compiles nothing
        env["compile_ahead_seconds"] = round(compile_ahead(compile_tasks(cols, args.quick)), 1)
    with tqdm(total=planned_timings(cols, args.quick), desc="minilm.kernels.bench", unit="timing", file=sys.stderr) as bar:
        results = run_suites(lab, cols, args.quick, bar)
    env["seconds"] = round(time.time() - start, 1)
    summary = summarize(results)
    write_outputs(results, summary, env, args.out)
    print(f"wrote {args.out}/results.csv, results.json, softmax.png, attention.png ({env['seconds']} s)")
    print(short_table(results, summary, env))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minilm.kernels.bench", description=__doc__.split("\n\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
