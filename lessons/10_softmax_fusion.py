"""Kernel fusion: a softmax in Triton that reads its input once.

What you will learn:
- why softmax is memory-bound: count the bytes each eager PyTorch operation moves, against
  the two passes (read x, write y) a fused kernel needs;
- the numerically safe softmax (subtract the row maximum) and the online softmax, which
  finds the maximum and the sum in one sweep over a row too long for one block;
- the Triton kernel `minilm.kernels.softmax`, read line by line: one program per block of rows,
  masks and scale applied in registers, float32 arithmetic, base-2 exponentials;
- that it is right: checked through Triton's interpreter on the CPU against float64, forward
  and backward, with every mask kind, on both the one-block and the online path;
- what fusion buys, measured on this machine: the eager chain of operations against one
  fused softmax (and, on a GPU, the Triton kernel against torch.softmax).

Run: python lessons/10_softmax_fusion.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import inspect
import os
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # no GPU: run the Triton kernels in the interpreter

import matplotlib.pyplot as plt  # noqa: E402

from minilm.kernels import softmax  # noqa: E402
from minilm.kernels.softmax_kernel import online_softmax_update, softmax_bytes, softmax_reference  # noqa: E402
import minilm.kernels.softmax_kernel as sm_module  # noqa: E402
from minilm.course.lesson import start  # noqa: E402

GPU = torch.cuda.is_available()

# What an eager softmax(scale * x + mask) costs, one row per operation:
# (operation, full-size tensors read, full-size tensors written). The mask is broadcast
# from a small tensor, so it is not counted.
EAGER_OPS = [("x * scale", 1, 1), ("+ mask", 1, 1), ("row max", 1, 0), ("- max", 1, 1), ("exp", 1, 1),
             ("row sum", 1, 0), ("/ sum", 1, 1)]
# `torch.softmax(x * scale + mask)`: two eager operations, then PyTorch's own fused softmax.
TORCH_OPS = [("x * scale", 1, 1), ("+ mask", 1, 1), ("torch.softmax", 1, 1)]
SCALE = 0.125  # 1 / sqrt(64): an attention-like scale for the timings


def passes(ops) -> int:
    """Full-size trips through memory of a list of (operation, tensors read, tensors written)."""
    return sum(r + w for _, r, w in ops)


def eager_masked_softmax(x, scale, mask):
    """softmax(scale * x + mask) as separate PyTorch operations, each a full trip through memory."""
    z = x * scale
    z = z + mask
    m = z.amax(-1, keepdim=True)
    e = torch.exp(z - m)
    return e / e.sum(-1, keepdim=True)


def best_time(fn, repeat):
    """Fastest of `repeat` runs in seconds (the least disturbed by other work on the machine)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if GPU:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def python_source(kernel):
    """The Python source of a Triton kernel, through the autotuner and jit wrappers."""
    fn = kernel
    while hasattr(fn, "fn"):
        fn = fn.fn
    return inspect.getsource(fn)


def main(argv=None):
    lesson = start(__file__, argv)
    torch.manual_seed(lesson.seed)
    x, mask, fused_passes = section_1_count_bytes(lesson)
    section_2_online_softmax(lesson)
    section_3_kernel(lesson)
    section_4_checked(lesson)
    section_5_fusion_measured(lesson, x, mask, fused_passes)
    lesson.finish()


def section_1_count_bytes(lesson):
    """The memory traffic of an eager masked softmax against a fused one, counted before any kernel runs.
    Returns (x (rows, cols), a padding-style additive mask (cols,), the fused kernel's passes)."""
    lesson.section("1. Count the bytes before writing a kernel")
    rows, cols = lesson.pick(smoke=(256, 256), quick=(2048, 2048), full=(8192, 8192))
    x = torch.randn(rows, cols)
    mask = torch.zeros(cols).masked_fill(torch.rand(cols) < 0.1, float("-inf"))  # a key-padding style mask
    tensor_mb = x.numel() * x.element_size() / 2**20
    print(f"  x is {rows} x {cols} float32 = {tensor_mb:.0f} MiB")
    print(f"  {'eager operation':16s} {'reads':>6s} {'writes':>7s}")
    for name, r, w in EAGER_OPS:
        print(f"  {name:16s} {r:6d} {w:7d}")
    eager_passes = passes(EAGER_OPS)
    fused_passes = softmax_bytes(x) // (x.numel() * x.element_size())
    lesson.say(f"""
        Softmax does {len(EAGER_OPS)} arithmetic operations per element (a multiply, an add, a max, a
        subtraction, an exponential, a sum, a division), while a modern processor can do far more
        operations per second than it can fetch elements from main memory. So the time is set
        by memory traffic, not arithmetic. Written as separate PyTorch operations, each one
        reads its input from memory and writes its output back: {eager_passes} full-size passes over
        the data. A fused kernel reads x once and writes y once: {fused_passes} passes. The forecast,
        before any kernel exists, is a speed-up of about {eager_passes / fused_passes:.1f}x wherever the
        eager version runs at the memory's speed.""")
    lesson.record("memory passes, eager vs fused", f"{eager_passes} vs {fused_passes}")
    return x, mask, fused_passes


def section_2_online_softmax(lesson) -> None:
    """Why the max is subtracted, and the online softmax folding a row through `online_softmax_update`."""
    lesson.section("2. Safe softmax, and the online softmax")
    big = torch.tensor([1000.0, 999.0, 998.0])
    naive = torch.exp(big) / torch.exp(big).sum()
    safe = torch.exp(big - big.max()) / torch.exp(big - big.max()).sum()
    print(f"  exp(x) / sum exp(x) for x = {big.tolist()}: {naive.tolist()}  (exp({big.max():.0f}) overflows)")
    print(f"  subtract the max first:                      {[round(v, 4) for v in safe.tolist()]}")
    row = torch.randn(lesson.pick(smoke=40, quick=1000, full=100000), dtype=torch.float64) * 5
    chunk = lesson.pick(smoke=16, quick=128, full=8192)
    m, s = torch.tensor(float("-inf"), dtype=row.dtype), torch.tensor(0.0, dtype=row.dtype)
    for start_ in range(0, row.numel(), chunk):  # one sweep; only (m, s) is kept between chunks
        m, s, _, _ = online_softmax_update(m, s, row[start_:start_ + chunk])
    print(python_source(online_softmax_update))
    exact = torch.logsumexp(row, 0)
    print(f"  one sweep in chunks of {chunk}: max + log(sum) = {float(m + torch.log(s)):.12f}; "
          f"torch.logsumexp = {float(exact):.12f}")
    lesson.say("""
        Subtracting the row maximum changes nothing mathematically (it cancels between the
        numerator and the sum) and keeps every exponential at most 1. The catch: the maximum
        must be known before the exponentials. The online softmax removes the catch. It keeps a
        running maximum m and a running sum s; when a new chunk raises the maximum to m', the
        sum so far is multiplied by exp(m - m'), which is exactly what it would have been had
        m' been known all along. That one step is `online_softmax_update` (printed above), the
        loop folds the row through it chunk by chunk. The kernel does the same for rows longer
        than one block, and flash attention (lesson 11) is built on it.""")
    lesson.record("online softmax vs logsumexp (abs diff)", abs(float(m + torch.log(s) - exact)), "{:.1e}")


def section_3_kernel(lesson) -> None:
    """The forward kernel and its online-update helper, printed and read line by line."""
    lesson.section("3. The kernel, line by line")
    print(python_source(sm_module._fwd_kernel))
    lesson.say("""
        Read it top to bottom. The decorator @triton.autotune tries a few block shapes on the
        GPU and keeps the fastest. One *program* handles ROWS whole rows: tl.program_id(0) says
        which. tl.arange builds the vector of column indices, and `in_bounds` marks the columns
        past the end of a row (the block is a power of two; the row need not be). tl.load
        brings the block into registers in one trip, converting bf16/fp16 to float32. The
        helper _logits2 applies the scale (times log2(e), so that exp2, the instruction the GPU
        actually has, can be used), the mask and the causal limit, all in registers. Then the
        safe softmax of section 2, with one twist: a row where every entry is masked has
        maximum -inf, and -inf - (-inf) is NaN, so such rows use 0 instead and come out as
        zeros. tl.store writes y once. Everything between the load and the store happens in
        registers: that is the fusion.""")
    print(python_source(sm_module._online_update))
    lesson.say("""
        The online update of section 2 in Triton, as the kernel does it for rows too long for
        one block, vectorised over the rows of a program, in base 2, and taking raw logits and
        their scale so that flash attention's hot loop (which calls this same function) pays
        one fused multiply-add per score. The backward kernel is shorter still:
        dx = scale * y * (dy - sum(y * dy)), reading y and dy and writing dx.""")


def section_4_checked(lesson) -> None:
    """The kernel against float64, forward and backward, every mask kind, one-block and online paths."""
    lesson.section("4. Checked against float64" + ("" if GPU else ", through Triton's interpreter on the CPU"))
    shape = lesson.pick(smoke=(2, 3, 5, 24), quick=(2, 4, 9, 77), full=(4, 8, 64, 1000))
    dev = "cuda" if GPU else "cpu"
    xs = (torch.randn(*shape) * 3).to(dev)
    keep = torch.rand(shape[0], 1, 1, shape[-1]) > 0.3
    keep[0] = False  # batch entry 0 has nothing to attend to: its rows must come out as zeros
    cases = {"plain": {}, "scale + bool mask": dict(scale=0.5, mask=keep.to(dev)),
             "additive mask": dict(mask=torch.randn(shape[-2], shape[-1]).to(dev)), "causal": dict(causal=True)}
    if lesson.smoke:  # the interpreter is slow: two cases are enough to prove the lesson runs
        cases = dict(list(cases.items())[1:3])
    worst = 0.0
    saved_block, chunk = sm_module.MAX_BLOCK, 16
    for path, max_block in (("one block per row", saved_block), (f"online, {chunk}-column chunks", chunk)):
        sm_module.MAX_BLOCK = max_block  # force the long-row kernels on these short rows
        try:
            for name, kw in cases.items():
                xg = xs.detach().requires_grad_()
                y = softmax(xg, **kw)
                dy = torch.randn_like(y)
                (dx,) = torch.autograd.grad(y, xg, dy)
                x64 = xs.detach().double().cpu().requires_grad_()
                kw64 = {k: (v.double().cpu() if torch.is_tensor(v) and v.is_floating_point() else
                            (v.cpu() if torch.is_tensor(v) else v)) for k, v in kw.items()}
                y64 = softmax_reference(x64, **kw64)
                (dx64,) = torch.autograd.grad(y64, x64, dy.double().cpu())
                err = max((y.double().cpu() - y64).abs().max().item(), (dx.double().cpu() - dx64).abs().max().item())
                worst = max(worst, err)
                print(f"  {path:26s} {name:18s} max |error| forward/backward {err:.1e}")
        finally:
            sm_module.MAX_BLOCK = saved_block
    y = softmax(xs, mask=keep.to(dev))
    print(f"  rows with every key masked: all zeros = {bool((y[0] == 0).all())}, any NaN = {bool(y.isnan().any())}")
    lesson.record("Triton softmax vs float64 (max abs error, fwd and bwd)", worst, "{:.1e}")


def section_5_fusion_measured(lesson, x, mask, fused_passes: int) -> None:
    """The eager chain, torch.softmax and a plain copy timed here (and the kernel on a GPU), against the
    forecast of section 1."""
    lesson.section("5. What fusion buys, measured here")
    repeat = lesson.pick(smoke=2, quick=10, full=30)
    dev = "cuda" if GPU else "cpu"
    xb = x.to(dev)
    maskb = mask.to(dev)
    t_eager = best_time(lambda: eager_masked_softmax(xb, SCALE, maskb), repeat)
    t_torch = best_time(lambda: torch.softmax(xb * SCALE + maskb, -1), repeat)
    t_copy = best_time(lambda: xb.clone(), repeat)
    timings = {"copy (x.clone)": t_copy, "eager chain": t_eager, "torch.softmax": t_torch}
    if GPU:
        timings["minilm kernel"] = best_time(lambda: softmax(xb, scale=SCALE, mask=maskb), repeat)
    for name, t in timings.items():
        gbps = 2 * xb.numel() * xb.element_size() / t / 1e9  # counted as the fused floor: read x, write y
        print(f"  {name:16s} {t * 1e3:8.2f} ms   {gbps:8.2f} GB/s of useful traffic (read x, write y)")
    speedup = t_eager / t_torch
    eager_passes, torch_passes = passes(EAGER_OPS), passes(TORCH_OPS)
    lesson.say(f"""
        Measured in units of a plain copy of x (which is itself {fused_passes} passes): the eager chain
        takes {t_eager / t_copy:.1f}x, and `torch.softmax(x * scale + mask)` {t_torch / t_copy:.1f}x (it is
        {len(TORCH_OPS)} operations: the multiply, the add, then PyTorch's own fused softmax). Counting
        bytes forecast {eager_passes / fused_passes:.1f}x for the chain ({eager_passes} passes) and
        {torch_passes / fused_passes:.1f}x for torch ({torch_passes} passes). Where a measurement lands above its
        forecast, arithmetic (the exponentials) or parallel overhead is also paying a share, as it
        does on a CPU; a GPU has far more arithmetic per byte of memory bandwidth, and there the
        byte count is close to the whole story. {'' if GPU else 'With a GPU, this section also times the '
        'Triton kernel; the full sweep against torch is `python -m minilm.kernels.bench --quick`.'}""")
    lesson.record("eager chain / torch softmax time (" + ("GPU" if GPU else "CPU") + ")", speedup, "{:.2f}x")
    if GPU:
        lesson.record("Triton kernel vs eager chain (GPU)", t_eager / timings["minilm kernel"], "{:.2f}x")

    rows, cols = x.shape
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bottom = 0
    for (name, r, w), color in zip(EAGER_OPS, plt.cm.Oranges(torch.linspace(0.3, 0.9, len(EAGER_OPS)).tolist())):
        ax1.bar(["eager chain"], [r + w], bottom=bottom, color=color, edgecolor="white")
        ax1.text(0, bottom + (r + w) / 2, name, ha="center", va="center", fontsize=8)
        bottom += r + w
    ax1.bar(["fused kernel"], [fused_passes], color="tab:blue")
    ax1.text(1, fused_passes / 2, "read x, write y", ha="center", va="center", fontsize=8, color="white")
    ax1.set_ylabel("full-size passes over memory")
    ax1.set_title(f"bytes moved: {eager_passes} passes vs {fused_passes}")
    ax2.bar(list(timings), [1e3 * t for t in timings.values()],
            color=["gray", "tab:orange", "tab:green", "tab:blue"][: len(timings)])
    ax2.set_ylabel("ms (best of runs)")
    ax2.set_title(f"softmax(scale*x + mask), {rows}x{cols} fp32, {'GPU' if GPU else 'CPU'}")
    ax2.tick_params(axis="x", rotation=20)
    lesson.save_figure(fig, "softmax_fusion")


if __name__ == "__main__":
    main()
