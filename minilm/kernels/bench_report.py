"""The benchmark's reporting: the summary figures, the short table printed last, CSV/JSON and plots.

Everything here reads a list of `Result` from this run and the environment it ran in;
nothing is measured and no figure is typed in. The environment (GPU, versions, date, and
how the timings were taken) is written into every output.
"""
from __future__ import annotations

import csv
import json
import math
import platform
import time
from dataclasses import asdict

import torch

from minilm.kernels.bench_suites import Result

# Triton and the kernels (which import it) are imported inside the functions that run them: a dry run,
# `minilm bench --help` and a machine without Triton need neither.


def _geomean(xs):
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def _ms(results, suite, impl, case, direction):
    for r in results:
        if (r.suite, r.impl, r.case, r.direction) == (suite, impl, case, direction):
            return r.ms
    return float("nan")


def summarize(results):
    """The headline figures and the goals' inputs, computed from the results of this run: a dict."""
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
    lines = [f"== minilm.kernels.bench on {env['gpu']} | torch {env['torch']} | triton {env['triton']} =="]
    if env.get("method"):
        lines.append(f"measured: {env['method']}")
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
    lines.append("goals:")
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


def environment(lab):
    """Where and how this run measured: GPU, versions, date, and the lab's method (in every output)."""
    import triton

    gpu = torch.cuda.get_device_name() if lab.launches else "no GPU (dry run, fake timings)"
    return {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "real_timings": lab.launches, "method": lab.method}
