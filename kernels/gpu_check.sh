#!/usr/bin/env bash
# One call on a lent GPU machine: the CUDA tests of the kernels, then the kernel benchmark's quick sweep.
#
#   PYTHONPATH=. bash kernels/gpu_check.sh OUT              # on the GPU machine, from the repository root
#   PYTHONPATH=. bash kernels/gpu_check.sh OUT --dry-run    # here, on a CPU: interpreter tests, fake timings
#
# Everything lands in OUT (at most 8 files, one folder down, so the device tool brings all of it back):
#   env.json      GPU, driver, torch, triton, python
#   pytest.txt    the tests' output; pytest.xml the same as JUnit XML (what was skipped, and why)
#   bench.txt     the benchmark's output, its short table last
#   bench/        results.csv, results.json, softmax.png, attention.png
# It uses the machine's own torch and triton (nothing is installed). The printed summary comes last.
# A GPU run must skip no CUDA test: a skip there is reported as a failure of this script.
set -uo pipefail
out=${1:?usage: bash kernels/gpu_check.sh OUT [--dry-run]}
dry=${2:-}
mkdir -p "$out/bench"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-.}
if [ "$dry" = "--dry-run" ]; then export TRITON_INTERPRET=1; bench_flags=(--dry-run); else bench_flags=(); fi

python3 - "$out/env.json" <<'EOF'
import json, platform, subprocess, sys
import torch, triton
env = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
       "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)"}
try:
    env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=30).stdout.strip()
except OSError:
    env["driver"] = "none"
open(sys.argv[1], "w").write(json.dumps(env, indent=2) + "\n")
print(" | ".join(f"{k} {v}" for k, v in env.items()))
EOF

tests=(tests/test_softmax_kernel.py tests/test_flash_attention_kernel.py tests/test_attention.py tests/test_kernel_bench.py)
python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$out/pytest.xml" "${tests[@]}" > "$out/pytest.txt" 2>&1
tests_rc=$?
python3 -m minilm.kernels.bench --quick "${bench_flags[@]}" --out "$out/bench" > "$out/bench.txt" 2>&1
bench_rc=$?

python3 - "$out" "$dry" "$tests_rc" "$bench_rc" <<'EOF'
import sys, xml.etree.ElementTree as ET
out, dry, tests_rc, bench_rc = sys.argv[1], sys.argv[2] == "--dry-run", int(sys.argv[3]), int(sys.argv[4])
suite = ET.parse(f"{out}/pytest.xml").getroot().iter("testsuite").__next__()
skipped = [(case.get("classname") + "::" + case.get("name"), s.get("message", ""))
           for case in ET.parse(f"{out}/pytest.xml").getroot().iter("testcase") for s in case.findall("skipped")]
gpu_skips = [name for name, why in skipped if "GPU" in why or "cuda" in why.lower()]
print(f"\n== kernels/gpu_check.sh {'(dry run: interpreter, fake timings)' if dry else ''} ==")
print(f"tests: {suite.get('tests')} run, {suite.get('failures')} failed, {suite.get('errors')} errors, "
      f"{suite.get('skipped')} skipped (pytest exit {tests_rc}); details in pytest.txt")
if gpu_skips and not dry:
    print(f"FAIL: {len(gpu_skips)} CUDA tests were skipped on a GPU machine, e.g. {gpu_skips[0]}")
bench = open(f"{out}/bench.txt").read()
print(bench[bench.find("== minilm.kernels.bench"):] if "== minilm.kernels.bench" in bench else bench[-3000:])
print(f"benchmark exit {bench_rc}")
sys.exit(1 if tests_rc or bench_rc or (gpu_skips and not dry) else 0)
EOF
