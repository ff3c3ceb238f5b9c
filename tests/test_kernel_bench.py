"""kernels.bench runs end to end on fake timings (--dry-run), so the GPU run is known to format and write.

On a CPU it also checks that the real mode exits 0 saying there is no GPU.
"""
import json

import pytest
import torch

from kernels import bench


def test_dry_run_writes_results_and_table(tmp_path, capsys):
    assert bench.main(["--quick", "--dry-run", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name in ("results.csv", "results.json", "softmax.png", "attention.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    payload = json.loads((tmp_path / "results.json").read_text())
    results = payload["results"]
    # every headline attention case has minilm and the SDPA baselines, forward and backward
    cases = {r["case"] for r in results if r["suite"] == "attention"}
    assert len(cases) == 2 * len(bench.ATTENTION_HEADLINE) + 1
    impls = {r["impl"] for r in results if r["suite"] == "attention"}
    assert {"minilm", "flash", "cudnn", "efficient", "naive"} <= impls
    assert {r["params"]["cols"] for r in results if r["suite"] == "softmax"} == set(bench.SOFTMAX_QUICK_COLS)
    summary = payload["summary"]
    assert summary["copy_gbps"] > 0 and summary["matmul_tflops"] > 0
    assert summary["softmax"]["bf16"]["fwd_speedup_geomean"] > 0
    # the short table comes last and carries the ratios and the goals
    tail = printed[printed.index("== kernels.bench"):]
    assert "xflash" in tail and "goals (issue 7)" in tail and "copy" in tail


def test_summary_ratios_come_from_the_timings():
    r = bench.Result
    results = [
        r("ceiling", "copy", "c", "fwd", 1.0, gbps=4000.0),
        r("ceiling", "matmul", "m", "fwd", 1.0, tflops=700.0),
        r("softmax", "minilm", "bf16 4x1024", "fwd", 1.0, gbps=3600.0, params={"dtype": "bf16", "cols": 1024}),
        r("softmax", "torch", "bf16 4x1024", "fwd", 2.0, gbps=1800.0, params={"dtype": "bf16", "cols": 1024}),
        r("softmax", "minilm", "bf16 4x1024", "bwd", 1.0, params={"dtype": "bf16", "cols": 1024}),
        r("softmax", "torch", "bf16 4x1024", "bwd", 4.0, params={"dtype": "bf16", "cols": 1024}),
        r("attention", "minilm", "a", "fwd", 2.0, tflops=100.0),
        r("attention", "flash", "a", "fwd", 3.0),
        r("attention", "minilm", "a", "bwd", 2.0, tflops=100.0),
        r("attention", "flash", "a", "bwd", 1.0),
    ]
    s = bench.summarize(results)
    assert s["softmax"]["bf16"]["fwd_speedup_geomean"] == pytest.approx(2.0)
    assert s["softmax"]["bf16"]["bwd_speedup_geomean"] == pytest.approx(4.0)
    assert s["softmax"]["bf16"]["fwd_min_fraction_of_copy_1k_16k"] == pytest.approx(0.9)
    (row,) = s["attention"]
    assert row["fwd_vs_flash"] == pytest.approx(1.5) and row["bwd_vs_flash"] == pytest.approx(0.5)
    table = bench.short_table(results, s, {"gpu": "x", "torch": "t", "triton": "tr"})
    assert "fwd 1.50x (goal >= 1.2x): MET" in table and "bwd 0.50x (goal >= 1.0x): not met" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_gpu_says_so_and_exits_cleanly(tmp_path, capsys):
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
    assert not (tmp_path / "results.json").exists()


def test_compile_tasks_cover_every_variant_and_run():
    tasks = bench._compile_tasks(bench.SOFTMAX_QUICK_COLS, quick=True)
    attention = [args for kind, args in tasks if kind == "attention"]
    # H=16/12 x D=64/128 x causal/not, plus the padded BERT batch, once each
    assert len(attention) == len({(s[1], s[3], c, p) for s, c, p in attention}) == 7
    assert sum(kind == "softmax" for kind, _ in tasks) == 2 * len(bench.SOFTMAX_QUICK_COLS) + 1
    if torch.cuda.is_available():
        return
    # the worker body, on tiny shapes through the interpreter: it must leave the autotuners as it found them
    import importlib

    fa = importlib.import_module("kernels.flash_attention")
    before = list(fa._fwd_kernel.configs)
    bench._compile_candidates(("attention", ((1, 2, 20, 32), True, True)), device="cpu")
    bench._compile_candidates(("softmax", ("float32", (2, 3, 40), 0.5, True)), device="cpu")
    assert fa._fwd_kernel.configs == before
