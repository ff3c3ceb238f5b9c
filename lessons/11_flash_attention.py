"""Flash attention: exact attention in tiles, without ever storing the T x T matrix.

What you will learn:
- where naive attention's memory goes: the (T, T) score and probability matrices per head,
  and why moving them, not the arithmetic, is what costs;
- tiling with the online softmax (FlashAttention): a running max, a running sum and a
  rescaled output accumulator per query row, derived and checked numerically in PyTorch;
- the backward without the matrix: recompute P from the saved log-sum-exp and use
  dS = P * (dP - rowsum(dO * O));
- the Triton kernel `minilm.kernels.flash_attention`: the inner loop read line by line, the causal
  split (unmasked blocks, diagonal blocks, skipped blocks) pictured;
- that it is right: output and dQ, dK, dV against float64, causal and padded, at sequence
  lengths that are not block multiples (through Triton's interpreter on a CPU);
- on a GPU: memory and speed against naive attention and PyTorch's SDPA.

Run: python lessons/11_flash_attention.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import inspect
import math
import os
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # no GPU: run the Triton kernels in the interpreter

import matplotlib.pyplot as plt  # noqa: E402

from minilm.kernels import flash_attention  # noqa: E402
from minilm.kernels.flash_kernel import attention_flops  # noqa: E402
import minilm.kernels.flash_kernel as fa_module  # noqa: E402
from minilm.kernels.reference import attention_reference  # noqa: E402
from minilm.kernels.softmax_kernel import online_softmax_update  # noqa: E402
from minilm.course.lesson import start  # noqa: E402

GPU = torch.cuda.is_available()
BATCH, HEADS, HEAD_DIM, BYTES = 8, 16, 64, 2  # the layer sized in section 1 (bf16: 2 bytes a number)


def tiled_attention(q, k, v, block_n, causal=False):
    """Attention for one head, streaming keys in blocks of `block_n` with the online softmax.

    q (Tq, D), k and v (Tk, D). Per query row it keeps only m (running max of the scores),
    l (running sum of exp(score - m)) and acc (running sum of exp(score - m) * value). A new
    block that raises the max from m to m' rescales l and acc by alpha = exp(m - m'): that
    step is the library's `online_softmax_update` (lesson 10). At the end out = acc / l, and
    m + log(l) is the row's log-sum-exp (saved for the backward).
    Returns (out (Tq, D), lse (Tq,)). No (Tq, Tk) matrix is ever formed.
    """
    Tq, D = q.shape
    scale = 1.0 / math.sqrt(D)
    m = torch.full((Tq,), float("-inf"), dtype=q.dtype)
    l = torch.zeros(Tq, dtype=q.dtype)
    acc = torch.zeros(Tq, D, dtype=q.dtype)
    rows = torch.arange(Tq)[:, None]
    for start_ in range(0, k.shape[0], block_n):
        kb, vb = k[start_:start_ + block_n], v[start_:start_ + block_n]  # (BN, D)
        s = (q @ kb.T) * scale  # (Tq, BN): one tile of scores, the only one alive
        if causal:
            s = s.masked_fill(torch.arange(start_, start_ + kb.shape[0])[None, :] > rows, float("-inf"))
        m, l, alpha, p = online_softmax_update(m, l, s)  # p (Tq, BN); alpha: how much the old max over-counted
        acc = acc * alpha[:, None] + p @ vb  # (Tq, D)
    return acc / l[:, None], m + torch.log(l)


def python_source(fn):
    """The Python source of a Triton function, through the autotuner and jit wrappers."""
    while hasattr(fn, "fn"):
        fn = fn.fn
    return inspect.getsource(fn)


def tile_schedule(T, block_m, block_n):
    """For a causal T x T attention: 0 = tile skipped, 1 = unmasked main loop, 2 = masked diagonal loop."""
    grid = torch.zeros(math.ceil(T / block_m), math.ceil(T / block_n), dtype=torch.int64)
    for i in range(grid.shape[0]):
        start_m = i * block_m
        for j in range(grid.shape[1]):
            start_n = j * block_n
            grid[i, j] = 1 if start_n + block_n <= start_m else (2 if start_n < min(start_m + block_m, T) else 0)
    return grid


def main(argv=None):
    lesson = start(__file__, argv)
    torch.manual_seed(lesson.seed)
    section_1_naive_memory(lesson)
    q, k, v = section_2_tiles(lesson)
    section_3_backward(lesson, q, k, v)
    schedule = section_4_inner_loop(lesson)
    section_5_checked(lesson)
    section_6_memory_and_speed(lesson, schedule)
    lesson.finish()


def section_1_naive_memory(lesson) -> None:
    """What naive attention keeps in memory per head and per layer, against q, k, v and o."""
    lesson.section("1. What naive attention stores")
    print(f"  {'T':>6s} {'scores per head (bf16)':>24s} {f'whole layer, B={BATCH} H={HEADS}':>24s} "
          f"{'q, k, v, o per head':>22s}")
    scores_mib = lambda T: T * T * BYTES / 2**20  # one (T, T) table per head
    qkvo_mib = lambda T: 4 * T * HEAD_DIM * BYTES / 2**20
    sizes = [512, 1024, 4096, 16384]
    for T in sizes:
        print(f"  {T:6d} {scores_mib(T):21.1f} MiB {BATCH * HEADS * scores_mib(T) / 2**10:21.2f} GiB "
              f"{qkvo_mib(T):19.2f} MiB")
    T = sizes[-1]
    lesson.say(f"""
        Naive attention computes S = QK^T (a T x T table per head), P = softmax(S), then PV.
        S and P are written to memory and read back, and the backward keeps P. At T = {T:,} one
        such table is {scores_mib(T):,.0f} MiB per head, where Q, K, V and the output together are
        {qkvo_mib(T):,.0f} MiB (head size {HEAD_DIM}). The arithmetic is 4*T^2*D operations per head
        either way; what flash attention removes is the T^2 memory traffic, so that the matrix
        units, not memory, set the speed.""")


def section_2_tiles(lesson):
    """Tiled attention with the online softmax against the exact one, for several block sizes.
    Returns the float64 q, k, v (T, D) that section 3 differentiates."""
    lesson.section("2. Tiles and the online softmax, in PyTorch")
    T, D = lesson.pick(smoke=(37, 16), quick=(300, 64), full=(2048, 64))
    q, k, v = (torch.randn(T, D, dtype=torch.float64) for _ in range(3))
    exact_w = torch.softmax(q @ k.T / math.sqrt(D), -1)
    exact = exact_w @ v
    block = 16
    for b in (block, 64, T):
        out, lse = tiled_attention(q, k, v, b)
        print(f"  key blocks of {b:4d}: max |out - exact| = {(out - exact).abs().max():.1e}; "
              f"lse vs logsumexp: {(lse - torch.logsumexp(q @ k.T / math.sqrt(D), -1)).abs().max():.1e}")
    out_c, _ = tiled_attention(q, k, v, block, causal=True)
    exact_c = attention_reference(q[None, None], k[None, None], v[None, None], causal=True)[0, 0]
    print(f"  causal, blocks of {block}: max |out - exact| = {(out_c - exact_c).abs().max():.1e}")
    lesson.say("""
        The result does not depend on the block size: the rescaling by exp(m - m') makes every
        block's contribution exactly what it would have been had the final maximum been known
        from the start. This is not an approximation. Only the running (m, l, acc) per row
        lives between blocks, and on a GPU that fits in registers.""")
    err = (tiled_attention(q, k, v, block)[0] - exact).abs().max().item()
    lesson.record("tiled (online softmax) vs exact attention, float64", err, "{:.1e}")
    return q, k, v


def section_3_backward(lesson, q, k, v) -> None:
    """dQ, dK, dV recomputed from the saved log-sum-exp, without the stored matrix, against autograd."""
    lesson.section("3. The backward without the matrix")
    D = q.shape[-1]
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    o = torch.softmax(qg @ kg.T / math.sqrt(D), -1) @ vg
    do = torch.randn_like(o)
    dq_auto, dk_auto, dv_auto = torch.autograd.grad(o, (qg, kg, vg), do)
    _, lse = tiled_attention(q, k, v, 16)
    s = q @ k.T / math.sqrt(D)
    p = torch.exp(s - lse[:, None])  # recomputed from the saved log-sum-exp
    delta = (do * o.detach()).sum(-1)  # (T,): rowsum(dO * O)
    dp = do @ v.T
    ds = p * (dp - delta[:, None])
    dq, dk, dv = ds @ k / math.sqrt(D), ds.T @ q / math.sqrt(D), p.T @ do
    worst = max((a - b).abs().max().item() for a, b in ((dq, dq_auto), (dk, dk_auto), (dv, dv_auto)))
    print(f"  dQ, dK, dV from P = exp(S - lse) and dS = P * (dP - delta) vs autograd: max |diff| = {worst:.1e}")
    lesson.say("""
        The softmax backward for a row is dS = P * (dP - sum(P * dP)), and sum(P * dP) equals
        sum(dO * O) for that row (because O = PV and dP = dO V^T): a dot product of two D-sized
        vectors instead of a T-sized one. The forward saves one number per row, the
        log-sum-exp, so the backward can recompute any tile of P as exp(S - lse), exactly.
        The kernel does this twice: a dK/dV kernel owns a block of keys and walks the queries,
        a dQ kernel owns a block of queries and walks the keys. Neither needs atomic adds.""")
    lesson.record("recomputed backward vs autograd, float64", worst, "{:.1e}")


def section_4_inner_loop(lesson):
    """The kernel's inner loop printed, and the causal tile schedule; returns (schedule grid, T, block_m,
    block_n) for the picture."""
    lesson.section("4. The kernel's inner loop, line by line")
    print(python_source(fa_module._fwd_inner))
    lesson.say("""
        `_fwd_inner` is section 2's loop over key blocks, for one block of query rows. tl.dot
        multiplies tiles on the matrix units, accumulating in float32. The online step is a
        call to `_online_update`, the Triton twin of `online_softmax_update`, the same helper
        lesson 10's long-row softmax kernel calls. MASKED is a
        compile-time flag: blocks that need no mask run a loop with no mask arithmetic at
        all, and scores go to base 2 with the scale folded into one multiply-add. The last
        line hands the old accumulator to tl.dot, rescaled, so the product is added in place.""")
    T_pic, bm, bn = 1024, 128, 64
    grid = tile_schedule(T_pic, bm, bn)
    frac_skipped = float((grid == 0).float().mean())
    print(f"  causal T={T_pic}, tiles {bm}x{bn}: {int((grid == 1).sum())} unmasked, {int((grid == 2).sum())} diagonal "
          f"(masked), {int((grid == 0).sum())} skipped = {frac_skipped:.0%} of the work never done")
    lesson.say("""
        In causal attention a query block sees every key block strictly to its left in full
        (the main loop, no mask), the key blocks on the diagonal in part (the masked loop),
        and nothing to its right: those tiles are never loaded. Padding masks (BERT batches)
        add one load of a (BN,) flag vector per block; a row with no real key at all stores
        lse = +inf, which turns every recomputed probability into exactly 0 in the backward.""")
    return grid, T_pic, bm, bn


def section_5_checked(lesson) -> None:
    """The Triton kernel's output and gradients against float64, causal and padded, odd lengths."""
    lesson.section("5. Checked against float64" + ("" if GPU else ", through Triton's interpreter on the CPU"))
    dev = "cuda" if GPU else "cpu"
    cases = lesson.pick(
        smoke=[((1, 2, 37, 32), False, False)],
        quick=[((2, 2, 45, 32), False, False), ((2, 2, 45, 64), True, False), ((3, 2, 45, 64), False, True),
               ((1, 1, 33, 128), True, True)],
        full=[((2, 4, 1000, 64), False, False), ((2, 4, 1000, 64), True, True), ((1, 4, 2000, 128), True, False)])
    dtype = torch.bfloat16 if GPU else torch.float32
    worst = 0.0
    for (B, H, T_, D_), causal, padded in cases:
        q_, k_, v_, do_ = (torch.randn(B, H, T_, D_) for _ in range(4))
        kpm = None
        if padded:
            kpm = torch.arange(T_)[None, :] < torch.randint(T_ // 3, T_ + 1, (B, 1))
        qg, kg, vg = (t.to(dev, dtype).requires_grad_() for t in (q_, k_, v_))
        o = flash_attention(qg, kg, vg, causal=causal, key_padding_mask=None if kpm is None else kpm.to(dev))
        grads = torch.autograd.grad(o, (qg, kg, vg), do_.to(dev, dtype))
        q64, k64, v64 = (t.double().requires_grad_() for t in (q_, k_, v_))
        o64 = attention_reference(q64, k64, v64, causal=causal, key_padding_mask=kpm)
        grads64 = torch.autograd.grad(o64, (q64, k64, v64), do_.double())
        errs = [((a.double().cpu() - b).norm() / b.norm()).item() for a, b in zip((o, *grads), (o64, *grads64))]
        worst = max(worst, max(errs))
        mask_name = "causal" if causal else "full"
        print(f"  B{B} H{H} T{T_} D{D_} {mask_name}{' +padding' if padded else ''}: relative error "
              f"o {errs[0]:.1e}  dq {errs[1]:.1e}  dk {errs[2]:.1e}  dv {errs[3]:.1e}")
    lesson.record(f"Triton flash attention vs float64 (worst relative error, {str(dtype)[6:]})", worst, "{:.1e}")


def section_6_memory_and_speed(lesson, schedule) -> None:
    """Memory against length for naive and flash attention, the tile schedule pictured, and on a GPU the
    kernel timed against naive attention and SDPA."""
    lesson.section("6. Memory and speed")
    grid, T_pic, bm, bn = schedule
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ts = [256 * 2**i for i in range(8)]
    ax1.loglog(ts, [2 * t * t * BYTES / 2**20 for t in ts], "o-", label="naive: scores + probabilities per head")
    ax1.loglog(ts, [4 * t * HEAD_DIM * BYTES / 2**20 + t * 4 / 2**20 for t in ts], "o-",
               label="flash: q, k, v, o + lse per head")
    ax1.set_xlabel("sequence length T")
    ax1.set_ylabel(f"MiB (bf16, head dim {HEAD_DIM})")
    ax1.set_title("what attention keeps in memory")
    ax1.legend(fontsize=8)
    ax2.imshow(grid, cmap="viridis", vmin=0, vmax=2)
    ax2.set_title(f"causal tiles, T={T_pic}, {bm}x{bn}: skipped / main / diagonal")
    ax2.set_xlabel("key block")
    ax2.set_ylabel("query block")
    lesson.save_figure(fig, "flash_attention")
    if GPU:
        B, H, T_, D_ = lesson.pick(smoke=(1, 2, 512, 64), quick=(4, 16, 2048, 64), full=(4, 16, 4096, 64))
        q_, k_, v_ = (torch.randn(B, H, T_, D_, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = attention_flops(B, H, T_, D_, causal=True)
        impls = {"naive": lambda: attention_reference(q_, k_, v_, causal=True),
                 "torch SDPA": lambda: torch.nn.functional.scaled_dot_product_attention(q_, k_, v_, is_causal=True),
                 "minilm flash": lambda: flash_attention(q_, k_, v_, causal=True)}
        for name, fn in impls.items():
            fn()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start_ = time.perf_counter()
            for _ in range(10):
                fn()
            torch.cuda.synchronize()
            ms = (time.perf_counter() - start_) / 10 * 1e3
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            print(f"  {name:12s} {ms:8.2f} ms  {flops / ms / 1e9:7.1f} TFLOP/s  peak extra memory {peak:8.1f} MiB")
            lesson.record(f"{name} causal B{B} H{H} T{T_} D{D_} (GPU)", f"{ms:.2f} ms, {peak:.0f} MiB")
    else:
        lesson.say("""
            No GPU here, so nothing is timed: the interpreter runs the kernel one program at a
            time in NumPy, which says nothing about speed. On a GPU this section times the kernel
            against naive attention and PyTorch's SDPA, and `python -m minilm.kernels.bench --quick`
            runs the full comparison (every SDPA backend, forward and backward).""")


if __name__ == "__main__":
    main()
