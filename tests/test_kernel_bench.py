"""minilm.kernels.bench runs end to end on fake timings (--dry-run), so the GPU run is known to format and write.

On a CPU it also checks that the real mode exits 0 saying there is no GPU, and runs the
compile-ahead worker and the suites' correctness checks on tiny shapes through the interpreter.
"""
import json

import pytest
import torch

from minilm.kernels import bench, bench_compile, bench_report, bench_suites
from minilm.kernels.bench_suites import Result


def test_dry_run_writes_results_and_table(tmp_path, capsys):
    assert bench.main(["--quick", "--dry-run", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name in ("results.csv", "results.json", "softmax.png", "attention.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    payload = json.loads((tmp_path / "results.json").read_text())
    results = payload["results"]
    # every headline attention case has minilm and the SDPA baselines, forward and backward
    cases = {r["case"] for r in results if r["suite"] == "attention"}
    assert len(cases) == 2 * len(bench_suites.ATTENTION_HEADLINE) + 1
    impls = {r["impl"] for r in results if r["suite"] == "attention"}
    assert {"minilm", "flash", "cudnn", "efficient", "naive"} <= impls
    assert not any(r["note"] for r in results)  # nothing was launched, so nothing can have refused
    assert {r["params"]["cols"] for r in results if r["suite"] == "softmax"} == set(bench_suites.SOFTMAX_QUICK_COLS)
    # the progress bar's total is the number of timings the suites record
    assert len(results) == bench_suites.planned_timings(bench_suites.SOFTMAX_QUICK_COLS, quick=True)
    summary = payload["summary"]
    assert summary["copy_gbps"] > 0 and summary["matmul_tflops"] > 0
    assert summary["softmax"]["bf16"]["fwd_speedup_geomean"] > 0
    # how it measured is in the output: the JSON and the table both say it was a dry run
    assert payload["env"]["real_timings"] is False and "dry run" in payload["env"]["method"]
    # the short table comes last and carries the ratios and the goals
    tail = printed[printed.index("== minilm.kernels.bench"):]
    assert "xflash" in tail and "goals:" in tail and "copy" in tail and "measured: dry run" in tail


def test_summary_ratios_come_from_the_timings():
    r = Result
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
    s = bench_report.summarize(results)
    assert s["softmax"]["bf16"]["fwd_speedup_geomean"] == pytest.approx(2.0)
    assert s["softmax"]["bf16"]["bwd_speedup_geomean"] == pytest.approx(4.0)
    assert s["softmax"]["bf16"]["fwd_min_fraction_of_copy_1k_16k"] == pytest.approx(0.9)
    (row,) = s["attention"]
    assert row["fwd_vs_flash"] == pytest.approx(1.5) and row["bwd_vs_flash"] == pytest.approx(0.5)
    table = bench_report.short_table(results, s, {"gpu": "x", "torch": "t", "triton": "tr"})
    assert "fwd 1.50x (goal >= 1.2x): MET" in table and "bwd 0.50x (goal >= 1.0x): not met" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_gpu_says_so_and_exits_cleanly(tmp_path, capsys):
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
    assert not (tmp_path / "results.json").exists()


def test_compile_tasks_cover_every_variant_and_run():
    tasks = bench_compile.compile_tasks(bench_suites.SOFTMAX_QUICK_COLS, quick=True)
    attention = [args for kind, args in tasks if kind == "attention"]
    # H=16/12 x D=64/128 x causal/not, plus the padded BERT batch, once each
    assert len(attention) == len({(s[1], s[3], c, p) for s, c, p in attention}) == 7
    assert sum(kind == "softmax" for kind, _ in tasks) == 2 * len(bench_suites.SOFTMAX_QUICK_COLS) + 1
    # the worker body, on tiny shapes (through the interpreter without a GPU): each kernel forward and backward
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for task in [("attention", ((1, 2, 20, 32), True, True)), ("softmax", ("float32", (2, 3, 40), 0.5, True))]:
        done, seconds = bench_compile.run_variant(task, device=device)
        assert done == task and seconds >= 0


class _CPULab(bench_suites.GPULab):
    """The real lab's checks on CPU tensors (through the interpreter), with do_bench replaced by one call."""

    device = "cpu"

    def __init__(self):
        self.method = "test"

    def randn(self, *shape, dtype=torch.float32):
        return torch.randn(*shape)  # float32: the interpreter's bf16 dot is not exact enough to check

    def time(self, fn, *, key, nbytes=0, flops=0, grad_to_none=None):
        fn()
        return 1.0, 1.0, 1.0

    def release(self):
        pass


class _Bar:
    def update(self, n):
        pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check; the GPU run checks at real sizes")
def test_softmax_suites_check_every_impl_against_the_reference(monkeypatch):
    """The real path of both softmax suites, at tiny sizes: every impl is checked, then timed."""
    monkeypatch.setattr(bench_suites, "SOFTMAX_ELEMENTS", 256)
    monkeypatch.setattr(bench_suites, "MASKED_SOFTMAX_SHAPE", (1, 2, 8, 8))
    results = bench_suites.softmax_suite(_CPULab(), [16, 64], _Bar()) + bench_suites.masked_softmax_suite(_CPULab(),
                                                                                                          _Bar())
    assert len(results) == 2 * 2 * 2 * 2 + 2  # dtypes x widths x impls x directions, plus the masked pair
    for r in results:
        assert r.rel_err < 1e-5 and r.ms == 1.0, r


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check; the GPU run checks at real sizes")
def test_attention_suite_checks_every_impl_against_the_reference(monkeypatch):
    """The real path of the attention suite, on one tiny padded case: every impl that runs is close to the reference."""
    monkeypatch.setattr(bench_suites, "attention_cases", lambda quick: [((2, 2, 32, 16), False, True)])
    monkeypatch.setattr(bench_suites, "attention_impls", lambda seq, padded: ["minilm", "naive"])
    results = bench_suites.attention_suite(_CPULab(), True, _Bar())
    by_impl = {(r.impl, r.direction): r for r in results}
    assert len(results) == 4
    for impl in ("minilm", "naive"):
        for direction in ("fwd", "bwd"):
            r = by_impl[(impl, direction)]
            assert r.note == "" and r.rel_err < 1e-5, (impl, direction, r.rel_err, r.note)
    # the reference chunked over heads equals the reference on all heads at once
    q, k, v, do = (torch.randn(2, 3, 8, 4) for _ in range(4))
    monkeypatch.setattr(bench_suites, "REFERENCE_CHUNK_BYTES", 2 * 8 * 8 * 4)  # one head per chunk
    chunked = bench_suites.reference_with_grads(q, k, v, do, causal=True, key_padding_mask=None)
    monkeypatch.setattr(bench_suites, "REFERENCE_CHUNK_BYTES", 2**31)
    whole = bench_suites.reference_with_grads(q, k, v, do, causal=True, key_padding_mask=None)
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b)


def test_minilm_bench_kernels_is_the_same_sweep(tmp_path, capsys):
    """`minilm bench kernels` and `python -m minilm.kernels.bench` are one entry point."""
    from minilm.cli import main

    assert main(["bench", "kernels", "--quick", "--dry-run", "--out", str(tmp_path)]) == 0
    assert "== minilm.kernels.bench" in capsys.readouterr().out
    assert (tmp_path / "results.json").stat().st_size > 0
