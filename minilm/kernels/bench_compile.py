"""Compile every kernel variant the benchmark will time, ahead of time and in parallel.

Triton compiles one kernel at a time per process, and its autotuner compiles each candidate
configuration in turn the first time a variant runs; timed one after the other, that is
minutes of compiling on a GPU host with many idle cores. So each variant (a kernel, its
dtype, its shape class and its flags) runs once, forward and backward, in a worker process
of its own: the autotuner there compiles and tries every candidate, and Triton keeps the
binaries in its on-disk cache. The benchmark's own process then only loads them (and
re-times the candidates, which takes milliseconds).

Design choice: only public entry points. A worker calls `minilm.kernels.softmax` and
`minilm.kernels.flash_attention` exactly as a user would, on inputs of the real shapes (so the
compiled specialisations, such as which sizes and strides divide by 16, match); it never
touches the autotuner's configs or cache.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch
from tqdm import tqdm

from minilm.kernels.bench_suites import MASKED_SOFTMAX_SCALE, MASKED_SOFTMAX_SHAPE, SOFTMAX_ELEMENTS, attention_cases

# Triton and the kernels (which import it) are imported inside the functions that run them: a dry run,
# `minilm bench --help` and a machine without Triton need neither.


def compile_tasks(cols_list, quick):
    """One task per distinct compiled variant: ("softmax", (dtype, shape, scale, causal)) or
    ("attention", (shape, causal, padded))."""
    tasks = [("softmax", (dt, (SOFTMAX_ELEMENTS // c, c), 1.0, False)) for dt in ("bfloat16", "float32")
             for c in cols_list]
    tasks.append(("softmax", ("bfloat16", MASKED_SOFTMAX_SHAPE, MASKED_SOFTMAX_SCALE, True)))
    seen = set()
    for shape, causal, padded in attention_cases(quick):
        key = (shape[1], shape[3], causal, padded)  # what changes the compiled code: H's divisibility, D, flags
        if key not in seen:
            seen.add(key)
            tasks.append(("attention", (shape, causal, padded)))
    return tasks


def run_variant(task, device="cuda"):
    """In a worker: run one variant forward and backward once, so Triton compiles it. Returns (task, seconds)."""
    start = time.time()
    kind, args = task
    if kind == "attention":
        from minilm.kernels.flash_kernel import flash_attention

        (B, H, S, D), causal, padded = args
        dtype = torch.bfloat16 if device == "cuda" else torch.float32  # the interpreter's bf16 dot is wrong
        q, k, v = (torch.randn(B, H, S, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        kpm = (torch.arange(S, device=device)[None, :] < S - 7).expand(B, S).contiguous() if padded else None
        o = flash_attention(q, k, v, causal=causal, key_padding_mask=kpm)
    else:
        from minilm.kernels.softmax_kernel import softmax

        dtype, shape, scale, causal = args
        x = torch.randn(shape, device=device, dtype=getattr(torch, dtype), requires_grad=True)
        o = softmax(x, scale=scale, causal=causal)
    o.backward(torch.randn_like(o))  # a dense gradient, as the benchmark gives
    if device == "cuda":
        torch.cuda.synchronize()
    return task, time.time() - start


def compile_ahead(tasks, progress_desc="compiling kernels"):
    """Run every task in parallel processes (one per CPU core, at most 16); the seconds it took.

    A failure here is reported and otherwise ignored: the benchmark then compiles as it goes.
    """
    workers = max(1, min(len(tasks), os.cpu_count() or 1, 16))
    start = time.time()
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_variant, t) for t in tasks]
            for f in tqdm(as_completed(futures), total=len(futures), desc=progress_desc, file=sys.stderr):
                f.result()
    except Exception as e:  # noqa: BLE001 - compiling ahead only saves time
        print(f"minilm.kernels.bench: compiling ahead failed ({type(e).__name__}: {str(e)[:200]}); compiling as we go")
    return time.time() - start
