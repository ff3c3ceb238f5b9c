"""The benchmark's suites (what is measured) and the two ways of measuring them.

Design choices
- A suite is written once, against a *lab*: `lab.randn` makes its inputs, `lab.check` runs
  a correctness check against the reference, `lab.time` / `lab.time_backward` time a
  callable. `GPULab` does all of that for real; `DryLab` makes shape-only "meta" tensors,
  launches nothing and returns made-up timings computed from the work each case must do,
  so the whole harness (cases, tables, files, plots) runs on a CPU in a second. The suites
  never ask which lab they have.
- Every kernel is checked before it is timed: the relative error against the plain-torch
  reference in fp32 (`minilm.kernels.reference.attention_reference`, `minilm.kernels.softmax_kernel.softmax_reference`).
- The eager attention baseline ("naive") *is* that reference, in the benchmark's dtype.
- An implementation that refuses a case (an SDPA backend without a kernel for it) is
  recorded with a note, not fatal.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from minilm.kernels.reference import attention_reference

# Triton and the kernels (which import it) are imported inside the functions that run them: a dry run,
# `minilm bench --help` and a machine without Triton need neither.

# Headline shapes (B, H, S, D): GPT-like long sequences and a BERT-base-like batch.
ATTENTION_HEADLINE = [(8, 16, 1024, 64), (4, 16, 4096, 64), (4, 16, 4096, 128), (2, 16, 8192, 128),
                      (1, 16, 16384, 128), (32, 12, 512, 64)]
PADDED_CASE = (32, 12, 512, 64)  # a padded BERT batch
SOFTMAX_ELEMENTS = 2**27  # rows * cols of every softmax shape: 256 MiB in fp32, well past L2
SOFTMAX_QUICK_COLS = [1024, 4096, 16384, 65536]
SOFTMAX_FULL_COLS = [256, 512, 1024, 2048, 3000, 4096, 8192, 16384, 32768, 65536]
MASKED_SOFTMAX_SHAPE = (8, 16, 1024, 1024)  # attention scores (B, H, T, T)
MASKED_SOFTMAX_SCALE = 0.125
NAIVE_MAX_SEQ = 4096  # the eager baseline materialises (B, H, S, S) scores: skip it beyond
REFERENCE_CHUNK_BYTES = 2**31  # the fp32 reference runs a few heads at a time, each (S, S) block under 2 GiB
NAN = float("nan")


@dataclass
class Result:
    suite: str  # ceiling | softmax | masked-softmax | attention
    impl: str  # minilm | torch | flash | cudnn | efficient | naive | copy | matmul
    case: str  # readable shape, e.g. "bf16 32768x4096" or "B8 H16 S1024 D64 causal"
    direction: str  # fwd | bwd
    ms: float = NAN
    ms_lo: float = NAN  # 20th percentile
    ms_hi: float = NAN  # 80th percentile
    gbps: float = NAN
    tflops: float = NAN
    rel_err: float = NAN  # vs the fp32 reference, checked before timing
    params: dict = field(default_factory=dict)
    note: str = ""


# ----------------------------------------------------------------------------- labs
class GPULab:
    """Real inputs on the GPU, real checks, timings from `triton.testing.do_bench`."""

    device = "cuda"
    launches = True

    def __init__(self, warmup_ms=25, rep_ms=100):
        import triton.testing

        self._bench = triton.testing.do_bench
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self.method = (f"triton.testing.do_bench on {torch.cuda.get_device_name()}: median of repeated runs "
                       f"({warmup_ms} ms warm-up, {rep_ms} ms of repetitions, L2 flushed before each run); "
                       "spread = 20th-80th percentile; errors vs the fp32 reference, checked before timing")

    def randn(self, *shape, dtype=torch.float32):
        return torch.randn(*shape, device=self.device, dtype=dtype)

    def check(self, errors, default):
        """The relative errors `errors()` computes (the dry lab returns `default` instead)."""
        return errors()

    def time(self, fn, *, key, nbytes=0, flops=0, grad_to_none=None):
        """(median, p20, p80) in ms of fn()."""
        return tuple(self._bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, quantiles=[0.5, 0.2, 0.8],
                                 grad_to_none=grad_to_none))

    def time_backward(self, forward, inputs, grad, *, key, nbytes=0, flops=0):
        """(median, p20, p80) in ms of the backward of forward(*inputs) given the output gradient."""
        leaves = [t.detach().requires_grad_() for t in inputs]
        out = forward(*leaves)
        return self.time(lambda: out.backward(grad, retain_graph=True), key=key, grad_to_none=leaves)

    def release(self):
        torch.cuda.empty_cache()


class DryLab:
    """No GPU, nothing launched: shape-only tensors and deterministic made-up timings (--dry-run)."""

    device = "meta"  # a "meta" tensor has a shape and a dtype and no storage
    launches = False
    method = ("dry run: nothing was launched; timings are made up from the bytes or FLOPs each case must move "
              "(3 TB/s, 300 TFLOP/s, a fixed per-implementation factor) to exercise the harness; no errors checked")

    def randn(self, *shape, dtype=torch.float32):
        return torch.empty(*shape, device=self.device, dtype=dtype)

    def check(self, errors, default):
        return default

    def time(self, fn, *, key, nbytes=0, flops=0, grad_to_none=None):
        speed = 1.0 + (sum(map(ord, key)) % 7) / 10  # a per-implementation fudge so ratios differ
        ms = max(nbytes / 3.0e9, flops / 3.0e11) / speed + 1e-3
        return ms, ms * 0.98, ms * 1.03

    def time_backward(self, forward, inputs, grad, *, key, nbytes=0, flops=0):
        return self.time(None, key=key, nbytes=nbytes, flops=flops)

    def release(self):
        pass


def rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def dtype_name(dtype):
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


# ----------------------------------------------------------------------------- suites
def ceilings(lab, progress):
    """What the GPU can do at all: copy bandwidth (bytes read + written) and a bf16 matmul's rate."""
    n = 2**28  # 1 GiB of fp32
    src, dst = lab.randn(n), lab.randn(n)
    ms = lab.time(lambda: dst.copy_(src), key="copy", nbytes=8 * n)
    out = [Result("ceiling", "copy", "fp32 1 GiB", "fwd", *ms, gbps=8 * n / ms[0] / 1e6)]
    del src, dst
    m = 8192
    a, b = lab.randn(m, m, dtype=torch.bfloat16), lab.randn(m, m, dtype=torch.bfloat16)
    ms = lab.time(lambda: a @ b, key="matmul", flops=2 * m**3)
    out.append(Result("ceiling", "matmul", f"bf16 {m}x{m}x{m}", "fwd", *ms, tflops=2 * m**3 / ms[0] / 1e9))
    progress.update(2)
    return out


def softmax_suite(lab, cols_list, progress):
    """softmax over the last dim, minilm vs torch.softmax, forward and backward, in GB/s."""
    from minilm.kernels.softmax_kernel import softmax, softmax_bytes, softmax_reference

    impls = {"minilm": lambda t: softmax(t), "torch": lambda t: torch.softmax(t, -1)}
    out = []
    for dtype in (torch.bfloat16, torch.float32):
        for cols in cols_list:
            rows = SOFTMAX_ELEMENTS // cols
            name, params = f"{dtype_name(dtype)} {rows}x{cols}", dict(dtype=dtype_name(dtype), rows=rows, cols=cols)
            x, dy = lab.randn(rows, cols, dtype=dtype), lab.randn(rows, cols, dtype=dtype)
            fwd_bytes, bwd_bytes = softmax_bytes(x), softmax_bytes(x, backward=True)

            @functools.cache
            def reference():
                xf = x.float().requires_grad_()
                y = softmax_reference(xf)
                return y.detach(), torch.autograd.grad(y, xf, dy.float())[0]

            def errors(fn):
                xg = x.detach().requires_grad_()
                y = fn(xg)
                ref_y, ref_dx = reference()
                return rel_err(y, ref_y), rel_err(torch.autograd.grad(y, xg, dy)[0], ref_dx)

            for impl, fn in impls.items():
                err = lab.check(lambda: errors(fn), default=(NAN, NAN))
                ms = lab.time(lambda: fn(x), key=impl + "f", nbytes=fwd_bytes)
                out.append(Result("softmax", impl, name, "fwd", *ms, gbps=fwd_bytes / ms[0] / 1e6, rel_err=err[0],
                                  params=params))
                ms = lab.time_backward(fn, [x], dy, key=impl + "b", nbytes=bwd_bytes)
                out.append(Result("softmax", impl, name, "bwd", *ms, gbps=bwd_bytes / ms[0] / 1e6, rel_err=err[1],
                                  params=params))
                progress.update(2)
            del x, dy, reference
            lab.release()
    return out


def masked_softmax_suite(lab, progress):
    """The softmax inside attention: scores (B, H, T, T) * scale, causal mask, softmax; vs eager torch."""
    from minilm.kernels.softmax_kernel import softmax, softmax_bytes, softmax_reference

    B, H, T, _ = MASKED_SOFTMAX_SHAPE
    scale = MASKED_SOFTMAX_SCALE
    name = f"bf16 scores B{B} H{H} T{T} causal"
    x = lab.randn(B, H, T, T, dtype=torch.bfloat16)
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
    impls = {"minilm": lambda t: softmax(t, scale=scale, causal=True),
             "torch": lambda t: torch.softmax((t * scale).masked_fill(future, float("-inf")), -1)}
    nbytes = softmax_bytes(x)
    reference = functools.cache(lambda: softmax_reference(x.float(), scale=scale, causal=True))
    out = []
    for impl, fn in impls.items():
        err = lab.check(lambda: rel_err(fn(x), reference()), default=NAN)
        # the eager chain moves the scores three times (scale, mask, softmax): its dry-run time says so
        ms = lab.time(lambda: fn(x), key=impl, nbytes=nbytes * (1 if impl == "minilm" else 3))
        out.append(Result("masked-softmax", impl, name, "fwd", *ms, gbps=nbytes / ms[0] / 1e6, rel_err=err,
                          params=dict(B=B, H=H, T=T)))
        progress.update(1)
    lab.release()
    return out


def attention_cases(quick):
    """(shape (B, H, S, D), causal, padded) for every attention case, headline shapes first."""
    cases = [(shape, causal, False) for shape in ATTENTION_HEADLINE for causal in (False, True)]
    cases.append((PADDED_CASE, False, True))
    if not quick:
        for D in (64, 128):
            for S in (512, 1024, 2048, 4096, 8192, 16384):
                for causal in (False, True):
                    shape = (max(1, 16384 // S), 2048 // D, S, D)  # 16k tokens, width 2048
                    if (shape, causal, False) not in cases:
                        cases.append((shape, causal, False))
    return cases


def attention_impls(seq, padded):
    """The implementations timed on one attention case."""
    impls = ["minilm"] + ([] if padded else ["flash"]) + ["cudnn", "efficient"]  # SDPA flash takes no mask
    return impls + (["naive"] if seq <= NAIVE_MAX_SEQ else [])


def planned_timings(cols_list, quick):
    """How many (implementation, direction) timings the suites will record: the progress bar's total."""
    softmax = 2 * len(cols_list) * 2 * 2  # dtypes x widths x impls x directions
    attention = sum(2 * len(attention_impls(shape[2], padded)) for shape, _, padded in attention_cases(quick))
    return 2 + softmax + 2 + attention


def _sdpa(backend, causal, key_padding_mask):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # bool, True = keep

    def fn(q, k, v):
        with sdpa_kernel(chosen):
            return scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

    return fn


def _attention_impl(impl, causal, key_padding_mask):
    from minilm.kernels.flash_kernel import flash_attention

    if impl == "minilm":
        return lambda q, k, v: flash_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
    if impl == "naive":
        return lambda q, k, v: attention_reference(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
    return _sdpa(impl, causal, key_padding_mask)


def reference_with_grads(q, k, v, do, *, causal, key_padding_mask):
    """attention_reference in fp32 and its (dq, dk, dv), a few heads at a time to bound the (S, S) memory."""
    B, H, S, _ = q.shape
    step = max(1, REFERENCE_CHUNK_BYTES // (B * S * S * 4))
    parts = []
    for h in range(0, H, step):
        qf, kf, vf = (t[:, h:h + step].float().requires_grad_() for t in (q, k, v))
        o = attention_reference(qf, kf, vf, causal=causal, key_padding_mask=key_padding_mask)  # (B, h, S, D)
        parts.append((o.detach(), *torch.autograd.grad(o, (qf, kf, vf), do[:, h:h + step].float())))
    return [torch.cat(chunks, 1) for chunks in zip(*parts)]  # o, dq, dk, dv: (B, H, S, D) fp32


def attention_suite(lab, quick, progress):
    """bf16 attention, minilm vs torch's SDPA backends and the eager reference, fwd and bwd, in TFLOP/s."""
    from minilm.kernels.flash_kernel import attention_flops

    out = []
    for (B, H, S, D), causal, padded in attention_cases(quick):
        mask_name = "causal" if causal else ("padded" if padded else "none")
        name = f"B{B} H{H} S{S} D{D} {mask_name}"
        kpm = None
        if padded:
            g = torch.Generator().manual_seed(0)
            kpm = torch.arange(S)[None, :] < torch.randint(S // 4, S + 1, (B, 1), generator=g)  # (B, S) bool
        params = dict(B=B, H=H, S=S, D=D, mask=mask_name,
                      real_token_fraction=round(1.0 if kpm is None else kpm.float().mean().item(), 3))
        kpm = None if kpm is None else kpm.to(lab.device)
        flops = attention_flops(B, H, S, D, causal=causal)
        q, k, v, do = (lab.randn(B, H, S, D, dtype=torch.bfloat16) for _ in range(4))
        reference = functools.cache(lambda: reference_with_grads(q, k, v, do, causal=causal, key_padding_mask=kpm))

        def errors(fn):
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            o = fn(*leaves)
            ours = [o, *torch.autograd.grad(o, leaves, do)]
            errs = [rel_err(a, b) for a, b in zip(ours, reference())]
            return errs[0], max(errs[1:])

        for impl in attention_impls(S, padded):
            fn = _attention_impl(impl, causal, kpm)
            try:
                err = lab.check(lambda: errors(fn), default=(NAN, NAN))
                fwd = lab.time(lambda: fn(q, k, v), key=impl + "fwd", flops=flops)
                bwd = lab.time_backward(fn, [q, k, v], do, key=impl + "bwd", flops=2.5 * flops)
            except Exception as e:  # noqa: BLE001 - a backend that does not take this case is reported, not fatal
                note = f"unavailable: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}"
                out += [Result("attention", impl, name, d, params=params, note=note) for d in ("fwd", "bwd")]
            else:
                out.append(Result("attention", impl, name, "fwd", *fwd, tflops=flops / fwd[0] / 1e9, rel_err=err[0],
                                  params=params))
                out.append(Result("attention", impl, name, "bwd", *bwd, tflops=2.5 * flops / bwd[0] / 1e9,
                                  rel_err=err[1], params=params))
            progress.update(2)
        del q, k, v, do, reference
        lab.release()
    return out


def run_suites(lab, cols_list, quick, progress):
    """Every suite in order: ceilings, softmax, masked softmax, attention. A list of Result."""
    return (ceilings(lab, progress) + softmax_suite(lab, cols_list, progress) + masked_softmax_suite(lab, progress)
            + attention_suite(lab, quick, progress))
