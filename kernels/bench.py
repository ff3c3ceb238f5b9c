"""Benchmark the Triton kernels against torch on the GPU at hand, with its ceilings measured in the same run.

    python -m kernels.bench [--quick] [--out DIR] [--dry-run]

What it measures (all medians of `triton.testing.do_bench`, which flushes L2 between
runs; the spread is the 20th-80th percentile):
- ceilings: device-to-device copy bandwidth (bytes read + written) and a bf16
  8192^3 matmul's TFLOP/s;
- softmax over the last dim, fp32 and bf16, 256..65,536 columns (--quick: the four
  headline widths), minilm vs `torch.softmax`, forward and backward, in GB/s
  (`softmax_bytes`); plus the attention-shaped scaled causal softmax vs eager torch;
- attention, bf16, minilm vs torch's SDPA backends (flash, cudnn, efficient) and eager
  matmul-softmax-matmul, forward and backward, in TFLOP/s (`attention_flops`), on the
  headline shapes (BERT-like and GPT-like batches, head dim 64 and 128, causal and not,
  one padded BERT batch); the full run adds a sequence-length sweep.

Every kernel is checked against torch before it is timed (relative error in the table).
It prints the ratios and the goals of issue 7 last, and writes results.csv, results.json
and PNG plots under --out. Without a CUDA GPU it says so and exits 0; --dry-run runs the
whole harness on fake timings (no kernels launched) so the formatting can be tested on a CPU.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# Headline shapes (B, H, S, D): GPT-like long sequences and a BERT-base-like batch.
ATTENTION_HEADLINE = [(8, 16, 1024, 64), (4, 16, 4096, 64), (4, 16, 4096, 128), (2, 16, 8192, 128),
                      (1, 16, 16384, 128), (32, 12, 512, 64)]
SOFTMAX_ELEMENTS = 2**27  # rows * cols of every softmax shape: 256 MiB in fp32, well past L2
SOFTMAX_QUICK_COLS = [1024, 4096, 16384, 65536]
SOFTMAX_FULL_COLS = [256, 512, 1024, 2048, 3000, 4096, 8192, 16384, 32768, 65536]
MASKED_SOFTMAX_SHAPE = (8, 16, 1024, 1024)  # attention scores (B, H, T, T)
NAIVE_MAX_SEQ = 4096  # the eager baseline materialises (B, H, S, S) scores: skip it beyond


@dataclass
class Result:
    suite: str  # ceiling | softmax | masked-softmax | attention
    impl: str  # minilm | torch | flash | cudnn | efficient | naive | copy | matmul
    case: str  # readable shape, e.g. "bf16 32768x4096" or "B8 H16 S1024 D64 causal"
    direction: str  # fwd | bwd
    ms: float = float("nan")
    ms_lo: float = float("nan")  # 20th percentile
    ms_hi: float = float("nan")  # 80th percentile
    gbps: float = float("nan")
    tflops: float = float("nan")
    rel_err: float = float("nan")  # vs the torch result, checked before timing
    params: dict = field(default_factory=dict)
    note: str = ""


# ----------------------------------------------------------------------------- timing
class Timer:
    """Times a zero-argument callable with do_bench: (median, p20, p80) in ms."""

    def __init__(self, warmup_ms=25, rep_ms=100):
        import triton.testing

        self._bench = triton.testing.do_bench
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms

    def __call__(self, fn, *, grad_to_none=None, nbytes=0, flops=0, key=""):
        med, lo, hi = self._bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, quantiles=[0.5, 0.2, 0.8],
                                  grad_to_none=grad_to_none)
        return med, lo, hi

    real = True


class FakeTimer:
    """Deterministic made-up timings from the work to do, for --dry-run on a CPU."""

    real = False

    def __call__(self, fn, *, grad_to_none=None, nbytes=0, flops=0, key=""):
        speed = 1.0 + (sum(map(ord, key)) % 7) / 10  # a per-implementation fudge so ratios differ
        ms = max(nbytes / 3.0e9, flops / 3.0e11) / speed + 1e-3
        return ms, ms * 0.98, ms * 1.03


def _rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


# ----------------------------------------------------------------------------- suites
def bench_ceilings(timer, device):
    out = []
    n = 2**28  # 1 GiB of fp32
    if timer.real:
        src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
        ms = timer(lambda: dst.copy_(src))
        del src, dst
    else:
        ms = timer(None, nbytes=8 * n, key="copy")
    out.append(Result("ceiling", "copy", "fp32 1 GiB", "fwd", *ms, gbps=8 * n / ms[0] / 1e6))
    m = 8192
    if timer.real:
        a = torch.randn(m, m, device=device, dtype=torch.bfloat16)
        b = torch.randn(m, m, device=device, dtype=torch.bfloat16)
        ms = timer(lambda: a @ b)
        del a, b
    else:
        ms = timer(None, flops=2 * m**3, key="matmul")
    out.append(Result("ceiling", "matmul", f"bf16 {m}x{m}x{m}", "fwd", *ms, tflops=2 * m**3 / ms[0] / 1e9))
    return out


def bench_softmax(timer, device, cols_list, progress):
    from kernels.softmax import softmax, softmax_bytes

    out = []
    for dtype in (torch.bfloat16, torch.float32):
        for cols in cols_list:
            rows = SOFTMAX_ELEMENTS // cols
            name = f"{_dt(dtype)} {rows}x{cols}"
            params = dict(dtype=_dt(dtype), rows=rows, cols=cols)
            # a dry run only needs the sizes: a "meta" tensor has a shape and no storage
            x = torch.randn(rows, cols, device=device if timer.real else "meta", dtype=dtype)
            fwd_bytes, bwd_bytes = softmax_bytes(x), softmax_bytes(x, backward=True)
            impls = {"minilm": lambda t: softmax(t), "torch": lambda t: torch.softmax(t, -1)}
            errs = {}
            if timer.real:
                ref = torch.softmax(x.float(), -1)
                dy = torch.randn_like(x)
                xg = x.detach().requires_grad_()
                ref_dx = torch.autograd.grad(torch.softmax(xg.float(), -1), xg, dy.float())[0]
                for impl, fn in impls.items():
                    y = fn(xg)
                    dx = torch.autograd.grad(y, xg, dy)[0]
                    errs[impl] = (_rel_err(y, ref), _rel_err(dx, ref_dx))
                    del y, dx
            for impl, fn in impls.items():
                e = errs.get(impl, (float("nan"), float("nan")))
                if timer.real:
                    ms = timer(lambda: fn(x))
                else:
                    ms = timer(None, nbytes=fwd_bytes, key=impl + "f")
                out.append(Result("softmax", impl, name, "fwd", *ms, gbps=fwd_bytes / ms[0] / 1e6, rel_err=e[0],
                                  params=params))
                if timer.real:
                    xg = x.detach().requires_grad_()
                    y = fn(xg)
                    ms = timer(lambda: y.backward(dy, retain_graph=True), grad_to_none=[xg])
                    del y, xg
                else:
                    ms = timer(None, nbytes=bwd_bytes, key=impl + "b")
                out.append(Result("softmax", impl, name, "bwd", *ms, gbps=bwd_bytes / ms[0] / 1e6, rel_err=e[1],
                                  params=params))
                progress.update(2)
            del x
            if timer.real:
                del dy, ref, ref_dx
                torch.cuda.empty_cache()
    return out


def bench_masked_softmax(timer, device, progress):
    """The softmax inside attention: scores (B, H, T, T) * scale, causal mask, softmax."""
    from kernels.softmax import softmax, softmax_bytes

    B, H, T, _ = MASKED_SOFTMAX_SHAPE
    scale = 0.125
    name = f"bf16 scores B{B} H{H} T{T} causal"
    out = []
    x = torch.randn(B, H, T, T, device=device if timer.real else "meta", dtype=torch.bfloat16)
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)

    def eager(t):
        return torch.softmax((t * scale).masked_fill(future, float("-inf")), -1)

    impls = {"minilm": lambda t: softmax(t, scale=scale, causal=True), "torch": eager}
    nbytes = softmax_bytes(x)
    ref = eager(x.float()) if timer.real else None
    for impl, fn in impls.items():
        err = _rel_err(fn(x), ref) if timer.real else float("nan")
        if timer.real:
            ms = timer(lambda: fn(x))
        else:
            ms = timer(None, nbytes=nbytes * (1 if impl == "minilm" else 3), key=impl)
        out.append(Result("masked-softmax", impl, name, "fwd", *ms, gbps=nbytes / ms[0] / 1e6, rel_err=err,
                          params=dict(B=B, H=H, T=T)))
        progress.update(1)
    return out


def _naive_attention(q, k, v, causal, key_padding_mask):
    s = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, H, S, S)
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    if key_padding_mask is not None:
        s = s.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    return torch.softmax(s, -1) @ v


def _sdpa(backend, causal, key_padding_mask):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]

    def fn(q, k, v):
        with sdpa_kernel(chosen):
            return scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

    return fn


def _attention_cases(quick):
    cases = [(shape, causal, False) for shape in ATTENTION_HEADLINE for causal in (False, True)]
    cases.append(((32, 12, 512, 64), False, True))  # a padded BERT batch
    if not quick:
        for D in (64, 128):
            for S in (512, 1024, 2048, 4096, 8192, 16384):
                for causal in (False, True):
                    shape = (max(1, 16384 // S), 2048 // D, S, D)  # 16k tokens, width 2048
                    if (shape, causal, False) not in cases:
                        cases.append((shape, causal, False))
    return cases


def bench_attention(timer, device, quick, progress):
    from kernels.flash_attention import attention_flops, flash_attention

    out = []
    for (B, H, S, D), causal, padded in _attention_cases(quick):
        mask_name = "causal" if causal else ("padded" if padded else "none")
        name = f"B{B} H{H} S{S} D{D} {mask_name}"
        params = dict(B=B, H=H, S=S, D=D, mask=mask_name)
        kpm = None
        if padded:
            g = torch.Generator().manual_seed(0)
            lengths = torch.randint(S // 4, S + 1, (B, 1), generator=g)
            kpm = (torch.arange(S)[None, :] < lengths).to(device)
        real_frac = 1.0 if kpm is None else kpm.float().mean().item()
        fwd_flops = attention_flops(B, H, S, D, causal=causal)
        impls = {"minilm": lambda q, k, v: flash_attention(q, k, v, causal=causal, key_padding_mask=kpm)}
        if not padded:
            impls["flash"] = _sdpa("flash", causal, None)
        impls["cudnn"] = _sdpa("cudnn", causal, kpm)
        impls["efficient"] = _sdpa("efficient", causal, kpm)
        if S <= NAIVE_MAX_SEQ:
            impls["naive"] = lambda q, k, v: _naive_attention(q, k, v, causal, kpm)
        if timer.real:
            q, k, v, do = (torch.randn(B, H, S, D, device=device, dtype=torch.bfloat16) for _ in range(4))
            qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
            ref = torch.nn.functional.scaled_dot_product_attention(
                qf, kf, vf, attn_mask=None if kpm is None else kpm[:, None, None, :], is_causal=causal)
            if kpm is not None:  # rows with no key: SDPA gives NaN, the kernels give 0
                ref = ref.nan_to_num(0.0)
            ref_grads = torch.autograd.grad(ref, (qf, kf, vf), do.float())
            del qf, kf, vf
        for impl, fn in impls.items():
            p = dict(params, real_token_fraction=round(real_frac, 3))
            if not timer.real:
                for direction, mult in (("fwd", 1.0), ("bwd", 2.5)):
                    ms = timer(None, flops=fwd_flops * mult, key=impl + direction)
                    out.append(Result("attention", impl, name, direction, *ms, tflops=fwd_flops * mult / ms[0] / 1e9,
                                      params=p))
                progress.update(2)
                continue
            try:
                qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
                o = fn(qg, kg, vg)
                grads = torch.autograd.grad(o, (qg, kg, vg), do)
                errs = [_rel_err(o, ref)] + [_rel_err(a, b) for a, b in zip(grads, ref_grads)]
                del o, grads
                ms = timer(lambda: fn(q, k, v))
                out.append(Result("attention", impl, name, "fwd", *ms, tflops=fwd_flops / ms[0] / 1e9,
                                  rel_err=errs[0], params=p))
                o = fn(qg, kg, vg)
                ms = timer(lambda: o.backward(do, retain_graph=True), grad_to_none=[qg, kg, vg])
                out.append(Result("attention", impl, name, "bwd", *ms, tflops=2.5 * fwd_flops / ms[0] / 1e9,
                                  rel_err=max(errs[1:]), params=p))
                del o, qg, kg, vg
            except Exception as e:  # noqa: BLE001 - a backend that does not take this case is reported, not fatal
                note = str(e).splitlines()[0][:160]
                for direction in ("fwd", "bwd"):
                    out.append(Result("attention", impl, name, direction, params=p, note=f"unavailable: {note}"))
            progress.update(2)
        if timer.real:
            del q, k, v, do, ref, ref_grads
            torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- compiling ahead
def _compile_candidates(task, device="cuda"):
    """In a worker process: launch one kernel variant once per autotuning candidate.

    Each launch pins the autotuner to one config, so Triton compiles exactly what the
    autotuner will ask for later and stores it in its on-disk cache; the main process then
    only loads and times. Inputs have the real shapes, so the compiled specialisations
    (divisibility of sizes and strides) match. Returns (task, seconds).
    """
    start = time.time()
    kind, args = task
    if kind == "attention":
        fa = importlib.import_module("kernels.flash_attention")
        (B, H, S, D), causal, padded = args
        dtype = torch.bfloat16 if device == "cuda" else torch.float32  # the interpreter's bf16 dot is wrong
        q, k, v = (torch.randn(B, H, S, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        kpm = (torch.arange(S, device=device)[None, :] < S - 7).expand(B, S).contiguous() if padded else None
        kernels = {"fwd": fa._fwd_kernel, "dkdv": fa._dkdv_kernel, "dq": fa._dq_kernel}
        lists = {name: fa._prune(name)(kern.configs, {}, HEAD_DIM=D) for name, kern in kernels.items()}
        saved = {name: kern.configs for name, kern in kernels.items()}
        try:
            for i in range(max(map(len, lists.values()))):
                for name, kern in kernels.items():
                    kern.configs = [lists[name][i % len(lists[name])]]
                fa.flash_attention(q, k, v, causal=causal, key_padding_mask=kpm).sum().backward()
        finally:
            for name, kern in kernels.items():
                kern.configs = saved[name]
    else:
        import triton

        sm = importlib.import_module("kernels.softmax")
        dtype, shape, scale, causal = args
        x = torch.randn(shape, device=device, dtype=getattr(torch, dtype), requires_grad=True)
        block_n = triton.next_power_of_2(shape[-1])
        kernels = (sm._fwd_kernel, sm._bwd_kernel)
        saved = [kern.configs for kern in kernels]
        lists = [sm._prune(kern.configs, {}, BLOCK_N=block_n) for kern in kernels]
        try:
            for i in range(max(map(len, lists))):
                for kern, cands in zip(kernels, lists):
                    kern.configs = [cands[i % len(cands)]]
                sm.softmax(x, scale=scale, causal=causal).sum().backward()
        finally:
            for kern, configs in zip(kernels, saved):
                kern.configs = configs
    if device == "cuda":
        torch.cuda.synchronize()
    return task, time.time() - start


def compile_ahead(tasks, progress_desc="compiling kernels"):
    """Compile every autotuning candidate of every variant in parallel processes (one per CPU core).

    Triton compiles one kernel at a time per process and the autotuner tries each candidate
    in turn; on a many-core GPU host this turns minutes of compiling into seconds. A failure
    here is reported and otherwise ignored: the benchmark then compiles as it goes.
    """
    from tqdm import tqdm

    workers = max(1, min(len(tasks), os.cpu_count() or 1, 16))
    start = time.time()
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_compile_candidates, t) for t in tasks]
            for f in tqdm(as_completed(futures), total=len(futures), desc=progress_desc, file=sys.stderr):
                f.result()
    except Exception as e:  # noqa: BLE001 - compiling ahead only saves time
        print(f"kernels.bench: compiling ahead failed ({type(e).__name__}: {str(e)[:200]}); compiling as we go")
    return time.time() - start


def _compile_tasks(cols_list, quick):
    tasks = [("softmax", (dt, (SOFTMAX_ELEMENTS // c, c), 1.0, False)) for dt in ("bfloat16", "float32")
             for c in cols_list]
    tasks.append(("softmax", ("bfloat16", MASKED_SOFTMAX_SHAPE, 0.125, True)))
    seen = set()
    for shape, causal, padded in _attention_cases(quick):
        key = (shape[1], shape[3], causal, padded)  # what changes the compiled code: H's divisibility, D, flags
        if key not in seen:
            seen.add(key)
            tasks.append(("attention", (shape, causal, padded)))
    return tasks


# ----------------------------------------------------------------------------- reporting
def _dt(dtype):
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def _geomean(xs):
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def _ms(results, suite, impl, case, direction):
    for r in results:
        if (r.suite, r.impl, r.case, r.direction) == (suite, impl, case, direction):
            return r.ms
    return float("nan")


def summarize(results):
    """The figures issue 7 asks for, computed from the results of this run: a dict."""
    copy = next((r.gbps for r in results if r.impl == "copy"), float("nan"))
    matmul = next((r.tflops for r in results if r.impl == "matmul"), float("nan"))
    s = {"copy_gbps": copy, "matmul_tflops": matmul, "softmax": {}, "attention": []}
    for dtype in ("bf16", "fp32"):
        cases = sorted({r.case for r in results if r.suite == "softmax" and r.params.get("dtype") == dtype})
        if not cases:
            continue
        entry = {}
        for direction in ("fwd", "bwd"):
            entry[f"{direction}_speedup_geomean"] = _geomean(
                [_ms(results, "softmax", "torch", c, direction) / _ms(results, "softmax", "minilm", c, direction)
                 for c in cases])
        fwd_mid = [r.gbps / copy for r in results if r.suite == "softmax" and r.impl == "minilm"
                   and r.direction == "fwd" and r.params.get("dtype") == dtype and 1024 <= r.params["cols"] <= 16384]
        entry["fwd_min_fraction_of_copy_1k_16k"] = min(fwd_mid) if fwd_mid else float("nan")
        s["softmax"][dtype] = entry
    cases = []
    for r in results:
        if r.suite == "attention" and r.impl == "minilm" and r.direction == "fwd" and r.case not in cases:
            cases.append(r.case)
    for c in cases:
        row = {"case": c}
        for direction in ("fwd", "bwd"):
            ours = _ms(results, "attention", "minilm", c, direction)
            row[f"{direction}_tflops"] = next(r.tflops for r in results if (r.suite, r.impl, r.case, r.direction)
                                              == ("attention", "minilm", c, direction))
            for base in ("flash", "cudnn", "efficient", "naive"):
                row[f"{direction}_vs_{base}"] = _ms(results, "attention", base, c, direction) / ours
        s["attention"].append(row)
    return s


def _fmt(x, digits=2):
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _sci(x):
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1e}"


def _yes(ok):
    return "MET" if ok else "not met"


def short_table(results, summary, env):
    """The few lines printed last: ceilings, softmax ratios, attention ratios, goals."""
    lines = [f"== kernels.bench on {env['gpu']} | torch {env['torch']} | triton {env['triton']} =="]
    lines.append(f"ceilings: copy {_fmt(summary['copy_gbps'], 0)} GB/s, "
                 f"bf16 matmul {_fmt(summary['matmul_tflops'], 0)} TFLOP/s")
    lines.append("")
    lines.append("softmax (GB/s, minilm / torch; ratio = torch time / minilm time)")
    lines.append(f"{'case':24s} {'fwd GB/s':>16s} {'x':>5s} {'bwd GB/s':>16s} {'x':>5s} {'err':>8s}")
    for r in results:
        if r.suite in ("softmax", "masked-softmax") and r.impl == "minilm" and r.direction == "fwd":
            t_f = next(x for x in results
                       if (x.suite, x.impl, x.case, x.direction) == (r.suite, "torch", r.case, "fwd"))
            b = [x for x in results if (x.suite, x.case, x.direction) == (r.suite, r.case, "bwd")]
            mb = next((x for x in b if x.impl == "minilm"), None)
            tb = next((x for x in b if x.impl == "torch"), None)
            bw = f"{_fmt(mb.gbps, 0)}/{_fmt(tb.gbps, 0)}" if mb and tb else ""
            bx = _fmt(tb.ms / mb.ms) if mb and tb else ""
            lines.append(f"{r.case:24s} {_fmt(r.gbps, 0) + '/' + _fmt(t_f.gbps, 0):>16s} {_fmt(t_f.ms / r.ms):>5s} "
                         f"{bw:>16s} {bx:>5s} {_sci(r.rel_err):>8s}")
    lines.append("")
    lines.append("attention bf16 (minilm TFLOP/s; ratio = baseline time / minilm time)")
    lines.append(f"{'case':28s} {'fwd':>5s} {'xflash':>6s} {'xcudnn':>6s} {'xeff':>5s} {'xnaive':>6s} "
                 f"{'bwd':>5s} {'xflash':>6s} {'xcudnn':>6s} {'xeff':>5s}")
    for row in summary["attention"]:
        lines.append(f"{row['case']:28s} {_fmt(row['fwd_tflops'], 0):>5s} {_fmt(row['fwd_vs_flash']):>6s} "
                     f"{_fmt(row['fwd_vs_cudnn']):>6s} {_fmt(row['fwd_vs_efficient']):>5s} "
                     f"{_fmt(row['fwd_vs_naive'], 1):>6s} {_fmt(row['bwd_tflops'], 0):>5s} "
                     f"{_fmt(row['bwd_vs_flash']):>6s} {_fmt(row['bwd_vs_cudnn']):>6s} "
                     f"{_fmt(row['bwd_vs_efficient']):>5s}")
    errs = [r.rel_err for r in results if r.impl == "minilm" and math.isfinite(r.rel_err)]
    lines.append("")
    worst = max(errs) if errs else float("nan")
    lines.append(f"largest minilm relative error vs torch (fp32 reference): {_sci(worst)}")
    bf = summary["softmax"].get("bf16", {})
    lines.append("goals (issue 7):")
    g_sm = min(bf.get("fwd_speedup_geomean", float("nan")), bf.get("bwd_speedup_geomean", float("nan")))
    lines.append(f"  softmax bf16 geomean vs torch fwd {_fmt(bf.get('fwd_speedup_geomean'))}x, "
                 f"bwd {_fmt(bf.get('bwd_speedup_geomean'))}x (goal >= 1.3x): {_yes(g_sm >= 1.3)}")
    frac = bf.get("fwd_min_fraction_of_copy_1k_16k", float("nan"))
    lines.append(f"  softmax bf16 fwd, 1k-16k cols, worst {_fmt(100 * frac, 0)}% of copy bandwidth "
                 f"(goal >= 80%): {_yes(frac >= 0.8)}")
    head = [row for row in summary["attention"] if math.isfinite(row.get("fwd_vs_flash", float("nan")))]
    if head:
        f_min = min(row["fwd_vs_flash"] for row in head)
        b_min = min(row["bwd_vs_flash"] for row in head)
        lines.append(f"  attention vs SDPA flash, worst shape: fwd {_fmt(f_min)}x (goal >= 1.2x): "
                     f"{_yes(f_min >= 1.2)}, "
                     f"bwd {_fmt(b_min)}x (goal >= 1.0x): {_yes(b_min >= 1.0)}")
        c_f = _geomean([row["fwd_vs_cudnn"] for row in head])
        c_b = _geomean([row["bwd_vs_cudnn"] for row in head])
        lines.append(f"  distance to cuDNN (geomean): fwd {_fmt(c_f)}x, bwd {_fmt(c_b)}x of cuDNN's speed")
    return "\n".join(lines)


def write_outputs(results, summary, env, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = [f for f in Result.__dataclass_fields__ if f != "params"] + ["params"]
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in results:
            d = asdict(r)
            w.writerow([json.dumps(d[c]) if c == "params" else d[c] for c in cols])
    payload = {"env": env, "summary": summary, "results": [asdict(r) for r in results]}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1, default=str))
    plot(results, summary, out_dir)


def plot(results, summary, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, direction in zip(axes, ("fwd", "bwd")):
        for dtype, style in (("bf16", "-"), ("fp32", "--")):
            for impl, color in (("minilm", "tab:blue"), ("torch", "tab:orange")):
                pts = sorted((r.params["cols"], r.gbps) for r in results if r.suite == "softmax" and r.impl == impl
                             and r.direction == direction and r.params.get("dtype") == dtype)
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=color, label=f"{impl} {dtype}")
        if math.isfinite(summary["copy_gbps"]):
            ax.axhline(summary["copy_gbps"], color="gray", lw=1, ls=":", label="copy ceiling")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("columns")
        ax.set_ylabel("GB/s")
        ax.set_title(f"softmax {direction}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "softmax.png", dpi=120)
    plt.close(fig)

    cases = [row["case"] for row in summary["attention"]]
    impls = ["minilm", "flash", "cudnn", "efficient", "naive"]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(cases)), 8))
    for ax, direction in zip(axes, ("fwd", "bwd")):
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            ys = [next((r.tflops for r in results if (r.suite, r.impl, r.case, r.direction)
                        == ("attention", impl, c, direction)), float("nan")) for c in cases]
            ax.bar([j + i * width for j in range(len(cases))], ys, width, label=impl)
        if math.isfinite(summary["matmul_tflops"]):
            ax.axhline(summary["matmul_tflops"], color="gray", lw=1, ls=":", label="bf16 matmul")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))])
        ax.set_xticklabels(cases, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("TFLOP/s")
        ax.set_title(f"attention {direction} (bf16)")
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out_dir / "attention.png", dpi=120)
    plt.close(fig)


def environment(real):
    import triton

    gpu = torch.cuda.get_device_name() if real else "no GPU (dry run, fake timings)"
    return {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "real_timings": real}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="headline shapes only (a few minutes on an H200)")
    parser.add_argument("--out", type=Path, default=Path("runs/kernels-bench"), help="folder for CSV, JSON and PNGs")
    parser.add_argument("--dry-run", action="store_true", help="fake timings, no kernels: tests the harness on a CPU")
    args = parser.parse_args(argv)
    real = not args.dry_run
    if real and not torch.cuda.is_available():
        print("kernels.bench: no CUDA GPU on this machine, so there is nothing to measure. Run it where there is "
              "an NVIDIA GPU (or pass --dry-run to exercise the harness on fake timings).")
        return 0
    from tqdm import tqdm

    device = "cuda" if real else "cpu"
    timer = Timer() if real else FakeTimer()
    env = environment(real)
    cols = SOFTMAX_QUICK_COLS if args.quick else SOFTMAX_FULL_COLS
    cases = _attention_cases(args.quick)
    total = 2 * 2 * 2 * len(cols) + 2 + sum(2 * (4 + (c[0][2] <= NAIVE_MAX_SEQ) - c[2]) for c in cases)
    start = time.time()
    if real:
        env["compile_ahead_seconds"] = round(compile_ahead(_compile_tasks(cols, args.quick)), 1)
    results = []
    with tqdm(total=total, desc="kernels.bench", unit="timing", file=sys.stderr) as progress:
        results += bench_ceilings(timer, device)
        results += bench_softmax(timer, device, cols, progress)
        results += bench_masked_softmax(timer, device, progress)
        results += bench_attention(timer, device, args.quick, progress)
    env["seconds"] = round(time.time() - start, 1)
    summary = summarize(results)
    write_outputs(results, summary, env, args.out)
    print(f"wrote {args.out}/results.csv, results.json, softmax.png, attention.png ({env['seconds']} s)")
    print(short_table(results, summary, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
