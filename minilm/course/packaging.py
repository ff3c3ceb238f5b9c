"""`minilm assignment package NAME --out autograder.zip`: the grader, ready to upload to Gradescope.

Gradescope unpacks the zip into /autograder/source, runs `setup.sh` once to build the image,
then `run_autograder` for every submission, with the student's files in
/autograder/submission, and reads /autograder/results/results.json.

    setup.sh          installs the dependencies the project pins (the CPU build of torch, then
                      minilm from the source with its test extras), as the README does
    run_autograder    grades /autograder/submission with `minilm assignment grade`, as root, so
                      the walls of minilm/course/sandbox.py apply; writes a results.json
                      saying what went wrong if the grader itself could not start
    everything else   the instructor's repository (solutions included: the worker never sees it)
    hidden_tests/     the hidden tests, if given

Design choices:
- The zip is reproducible: sorted entries, fixed timestamps and modes.
- `--out` inside the repository is refused: the zip holds every solution, and the next
  handout built from the tree would copy it.
- run_autograder reads the root from AUTOGRADER_ROOT (default /autograder), which is how the
  tests run it in a temporary folder.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from minilm.course.markers import REPO, AssignmentError, get, scan, source_files
from minilm.course.grading import hidden_rows

TORCH = "2.13.0"  # the README's pin for CPU machines
STAMP = (2020, 1, 1, 0, 0, 0)

SETUP = f"""#!/usr/bin/env bash
# Gradescope runs this once, as root, to build the autograder's image.
set -euo pipefail
apt-get update -qq && apt-get install -y -qq python3 python3-pip python3-venv util-linux git >/dev/null
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --quiet --upgrade pip
/autograder/venv/bin/pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch=={TORCH}
/autograder/venv/bin/pip install --quiet -e "/autograder/source[test]"
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission, as root.
set -u
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
mkdir -p "$ROOT/results"
cd "$ROOT/source"
"$PYTHON" -m minilm.cli assignment grade {name} --dir "$ROOT/submission" --json "$ROOT/results/results.json" \\
    --timeout {timeout:g}{hidden}
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
    printf '{{"score": 0, "output": "the autograder could not start (exit %s); ask your instructor", "tests": []}}\\n' \\
        "$status" > "$ROOT/results/results.json"
fi
exit 0
"""


def package(name: str, out: Path, *, hidden: Path | None = None, timeout: float = 300.0,
            root: Path = REPO) -> list[str]:
    """Write the autograder zip of assignment `name` to `out`; returns the names inside it."""
    get(name)
    root, out = Path(root).resolve(), Path(out).resolve()
    if root in out.parents:
        raise AssignmentError(f"--out {out} is inside the repository {root}: the zip holds every solution and the "
                              "next handout would copy it; write it outside")
    if out.suffix != ".zip":
        raise AssignmentError(f"--out {out} should end in .zip")
    files = source_files(root)
    if not any(r.name == name for r in scan(root, files)):
        raise AssignmentError(f"{root} has no solution regions for assignment {name!r}: package the solution tree")
    entries: dict[str, tuple[bytes, int]] = {}
    hidden_arg = ""
    if hidden is not None:
        hidden = Path(hidden).resolve()
        hidden_rows(hidden)  # refuses an empty or unparsable folder, in one line
        for path in sorted(hidden.rglob("*.py")):
            entries[f"hidden_tests/{path.relative_to(hidden).as_posix()}"] = (path.read_bytes(), 0o644)
        hidden_arg = ' --hidden-tests "$ROOT/source/hidden_tests"'
    for rel in files:
        path = root / rel
        entries[rel] = (path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)
    entries["setup.sh"] = (SETUP.encode(), 0o755)
    entries["run_autograder"] = (RUN.format(name=name, timeout=timeout, hidden=hidden_arg).encode(), 0o755)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for arcname in sorted(entries):
            data, mode = entries[arcname]
            info = zipfile.ZipInfo(arcname, STAMP)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    tmp.replace(out)
    return sorted(entries)
