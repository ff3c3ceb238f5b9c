"""minilm assignment: markers are well formed, handouts hide every unreleased solution and are reproducible,
the grader scores the manifest, survives hangs and crashes, and reaches the student only through the boundary.

The end-to-end checks are sized for CI:
- per assignment, one pytest run inside the handout, as a student runs it, covers the graded tests
  (they must fail, with NotImplementedError naming the assignment), the neighbours (they must skip,
  naming it; the lesson that needs the functions is one of them) and a fixed cross-section of the
  suite (every module imports; two light model tests pass or skip);
- every graded test of every assignment runs twice through the grader's boundary, in one trusted
  run each: against a worker holding the solution (full marks) and against one holding the
  handout with every assignment hollowed (each case fails as not implemented, which proves that
  no graded test reaches the instructor's solution on the trusted side).
"""
import ast
import hashlib
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minilm.course import grading, handout, markers, sandbox
from minilm.course.catalog import ASSIGNMENTS, Assignment, GradedTest, matches, unfinished_assignment

ROOT = Path(__file__).resolve().parent.parent
NAMES = [a.name for a in ASSIGNMENTS]
# In a handout (this file travels with it) there are no solutions to scan, build from or grade.
solution_only = pytest.mark.skipif((ROOT / "HANDOUT.md").exists(), reason="checks the solution tree; this is a handout")
# What "the rest of the suite still works" is checked with, in every handout.
CROSS_SECTION = (
    "tests/test_assignment.py::test_every_module_imports",
    "tests/test_assignment.py::test_markers_in_the_source_are_well_formed",  # skips there: a handout has none
    "tests/test_model.py::test_heads_shapes_and_losses",
    "tests/test_model.py::test_module_names_other_modules_rely_on",
)


# ------------------------------------------------------------------------------- the source itself


@solution_only
def test_markers_in_the_source_are_well_formed():
    regions = markers.scan(ROOT)  # raises a one-line error on any broken marker
    for a in ASSIGNMENTS:
        assert any(r.name == a.name for r in regions), f"assignment {a.name} has no marked region in the source"


def test_the_table_points_at_real_tests_and_lessons():
    numbers = [a.number for a in ASSIGNMENTS]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), "assignments go in lesson order"
    for a in ASSIGNMENTS:
        assert (ROOT / a.lesson).is_file(), f"{a.name}: lesson {a.lesson} does not exist"
        for reference in a.references:  # each names something that exists, so the worker can watch it
            module, _, name = reference.rpartition(".")
            while module and module not in sys.modules:
                try:
                    importlib.import_module(module)
                except ImportError:
                    module, _, outer = module.rpartition(".")
                    name = f"{outer}.{name}"
            owner = sys.modules[module]
            for part in name.split("."):
                owner = getattr(owner, part)
        assert a.points > 0 and a.goals and a.hours
        selectors = [t.selector for t in a.tests]
        assert len(set(selectors)) == len(selectors), f"{a.name}: a test is listed twice"
        for s in selectors:
            overlap = [o for o in selectors if o != s and (matches(o, s) or matches(s, o))]
            assert not overlap, f"{a.name}: {s} overlaps {overlap} (points would count twice)"
        for selector in selectors + list(a.neighbours):
            path, _, name = selector.partition("::")
            assert (ROOT / path).is_file(), f"{a.name}: {path} does not exist"
            defined = {n.name for n in ast.parse((ROOT / path).read_text()).body if isinstance(n, ast.FunctionDef)}
            assert name.split("[")[0] in defined, f"{a.name}: {path} defines no {name.split('[')[0]}"


def test_the_readme_lists_every_assignment():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Teaching with minilm", 1)[-1].split("\n## ", 1)[0]
    for a in ASSIGNMENTS:
        assert f"| {a.number} | `{a.name}` |" in section, f"README's Teaching section does not list {a.name}"
        assert section.split(f"`{a.name}` |", 1)[1].split("\n")[0].rstrip().endswith(f"| {a.points:g} |")


def test_every_module_imports():
    """Every module of minilm (its kernels too) imports (in a handout too, with functions hollowed)."""
    for package in ("minilm",):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            if info.name.endswith("__main__"):
                continue
            importlib.import_module(info.name)


# ------------------------------------------------------------------------------- markers, one line each

GOOD = '''
def f(x):
    """Double x."""
    # BEGIN SOLUTION bpe
    y = x * 2
    return y
    # END SOLUTION bpe


class C:
    def g(self):
        """Contract of g."""
        a = 1
        # BEGIN SOLUTION masking
        a += 1
        # END SOLUTION masking
        return a
'''

BROKEN = {
    "never closed": ("def f():\n    '''doc'''\n    # BEGIN SOLUTION bpe\n    return 1\n", "never closed", 3),
    "END without BEGIN": ("def f():\n    return 1\n    # END SOLUTION bpe\n", "without a BEGIN", 3),
    "names differ": ("def f():\n    # BEGIN SOLUTION bpe\n    return 1\n    # END SOLUTION masking\n",
                     "closes BEGIN SOLUTION bpe", 4),
    "unknown name": ("def f():\n    # BEGIN SOLUTION homework9\n    return 1\n    # END SOLUTION homework9\n",
                     "homework9", 2),
    "no name": ("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", "names no assignment", 2),
    "misspelt": ("def f():\n    #BEGIN SOLUTION bpe\n    return 1\n", "malformed", 2),
    "outside a function": ("# BEGIN SOLUTION bpe\nx = 1\n# END SOLUTION bpe\n", "not inside a function", 1),
    "around the docstring": ("def f():\n    # BEGIN SOLUTION bpe\n    '''doc'''\n    return 1\n"
                             "    # END SOLUTION bpe\n", "before the body", 2),
    "nested": ("def f():\n    # BEGIN SOLUTION bpe\n    # BEGIN SOLUTION bpe\n    return 1\n"
               "    # END SOLUTION bpe\n    # END SOLUTION bpe\n", "do not nest", 3),
    "empty": ("def f():\n    x = 1\n    # BEGIN SOLUTION bpe\n    # END SOLUTION bpe\n    return x\n",
              "holds no code", 3),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_markers_are_one_line_errors(case):
    text, words, line = BROKEN[case]
    with pytest.raises(markers.AssignmentError) as info:
        markers.scan_text("minilm/x.py", text)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"minilm/x.py:{line}:") and words in message, message


def test_hollow_keeps_signatures_and_contracts_and_drops_other_markers():
    regions = markers.scan_text("minilm/x.py", GOOD)
    assert [(r.function, r.name, r.whole_body) for r in regions] == [("f", "bpe", True), ("C.g", "masking", False)]
    text = markers.hollow(GOOD, regions, "bpe")  # one name, or several
    assert "SOLUTION" not in text and "y = x * 2" not in text and "a += 1" in text
    assert '"""Double x."""' in text and "def f(x):" in text
    namespace = {}
    exec(compile(text, "x.py", "exec"), namespace)
    with pytest.raises(NotImplementedError) as info:
        namespace["f"](3)
    assert unfinished_assignment(info.value) == "bpe" and "implement f (minilm/x.py)" in str(info.value)
    assert namespace["C"]().g() == 2
    partial = markers.hollow(GOOD, regions, "masking")
    assert "raise NotImplementedError(\"assignment masking: implement the marked part of C.g" in partial


def test_unfinished_assignment_reads_wrapped_errors():
    inner = NotImplementedError("assignment flash: implement _online_update (minilm/kernels/softmax_kernel.py); see HANDOUT.md")
    wrapped = RuntimeError(f"InterpreterError({inner!r})")  # what Triton's interpreter raises
    assert unfinished_assignment(wrapped) == "flash"
    try:
        try:
            raise inner
        except NotImplementedError as e:
            raise ValueError("while masking") from e
    except ValueError as outer:
        assert unfinished_assignment(outer) == "flash"
    assert unfinished_assignment(NotImplementedError("not mine")) is None
    assert unfinished_assignment(None) is None


# ------------------------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(markers.AssignmentError, match=r"assignment 'nope' is unknown; known assignments: backprop"):
        markers.get("nope")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(markers.AssignmentError, match="exists and is not an empty folder"):
        handout.build("bpe", tmp_path / "full")
    with pytest.raises(markers.AssignmentError, match="is not a folder"):
        grading.grade("bpe", tmp_path / "missing")
    with pytest.raises(markers.AssignmentError, match="inside the repository"):
        handout.build("bpe", ROOT.parent)
    with pytest.raises(markers.AssignmentError, match="holds no test_"):
        grading.grade("bpe", ROOT, hidden=tmp_path / "full")


@solution_only
def test_a_handout_is_never_written_inside_the_tree_nor_copied_from_it(tmp_path):
    """Issue 30, item 10: `--out handouts/masking` (the README's old example) wrote a folder the next build
    copied, solution included; `--out minilm/h` nested one in the package."""
    for inside in (ROOT / "handouts" / "masking", ROOT / "minilm" / "h"):
        with pytest.raises(markers.AssignmentError, match="inside the repository"):
            handout.build("masking", inside)
        assert not inside.exists()
    from minilm.cli import main
    assert main(["assignment", "build", "masking", "--out", str(ROOT / "handouts" / "m")]) == 2
    stray = ROOT / "stray-handout"  # one left inside the tree by an older minilm: a folder with a HANDOUT.md
    try:
        (stray / "minilm" / "data").mkdir(parents=True)
        (stray / "HANDOUT.md").write_text("# an old handout\n")
        (stray / "minilm" / "data" / "bpe.py").write_text((ROOT / "minilm" / "data" / "bpe.py").read_text())
        assert not [f for f in markers.source_files(ROOT) if f.startswith("stray-handout/")]
        files = handout.build("bpe", tmp_path / "bpe")
        assert not [f for f in files if f.startswith("stray-handout/")]
        assert not (tmp_path / "bpe" / "stray-handout").exists()
    finally:
        shutil.rmtree(stray)


@solution_only
def test_the_command_lists_every_assignment(capsys):
    from minilm.cli import main

    assert main(["assignment", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(ASSIGNMENTS)
    for line, a in zip(out, ASSIGNMENTS):
        assert line.startswith(f"{a.number}. {a.name}") and f"{a.points:g} points" in line and ".py" in line


# ------------------------------------------------------------------------------- the grader

HIDDEN = """
import os
import signal
import time

import pytest

from minilm.course.boundary import student

os_ = student("os")


@pytest.mark.points(2)
def test_passes():
    assert os_.path.join("a", "b") == "a/b"


def test_fails():
    assert os_.path.join("a", "b") == "b/a", "SECRET-IN-A-HIDDEN-ASSERTION"


def test_hangs_in_the_worker():
    student("time").sleep(60)


def test_hangs_where_nothing_can_interrupt_it():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # pytest-timeout's alarm never arrives
    time.sleep(60)


def test_kills_the_worker():
    os_._exit(3)


def test_kills_the_grading_process():
    os._exit(3)


@pytest.mark.skip(reason="needs an NVIDIA GPU")
@pytest.mark.points(3)
def test_gpu_only():
    pass


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_split(n):
    assert n % 2 == 0


def test_runs_after_the_crashes():
    assert os_.getpid() > 1
"""


def test_the_manifest_is_the_denominator_and_grading_goes_on(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "test_hidden.py").write_text(HIDDEN)
    toy = Assignment("toy", 99, "Toy", "lessons/none.py", "1", ("g",), ())
    submission = tmp_path / "submission"
    submission.mkdir()
    out = tmp_path / "results" / "results.json"
    results = grading.grade(toy, submission, hidden=hidden, timeout=3, grace=3, json_path=out)
    assert json.loads(out.read_text()) == results
    tests = {t["name"].split("::")[-1]: t for t in results["tests"]}
    assert all(t["name"].startswith("hidden: test_hidden.py::") for t in results["tests"])
    expected = {"test_passes": (2, 2, "passed"), "test_fails": (0, 1, "wrong_answer"),
                "test_hangs_in_the_worker": (0, 1, "timeout"),
                "test_hangs_where_nothing_can_interrupt_it": (0, 1, "timeout"),
                "test_kills_the_worker": (0, 1, "crashed"), "test_kills_the_grading_process": (0, 1, "crashed"),
                "test_gpu_only": (0, 3, "skipped"), "test_split": (0.5, 1, "wrong_answer"),
                "test_runs_after_the_crashes": (1, 1, "passed")}
    assert {k: (t["score"], t["max_score"], t["tags"][-1]) for k, t in tests.items()} == expected
    assert results["score"] == 3.5 and results["extra_data"]["max_score"] == 12  # skipped points stay in the maximum
    assert all(t["visibility"] == "after_published" for t in results["tests"])
    assert "SECRET-IN-A-HIDDEN-ASSERTION" not in out.read_text(), "a hidden test's text reached the results"
    for t in results["tests"]:  # Gradescope's fields
        assert {"name", "number", "score", "max_score", "status", "output", "visibility", "tags"} <= set(t)
        assert t["status"] in ("passed", "failed")
    assert {"score", "execution_time", "output", "visibility", "stdout_visibility", "tests"} <= set(results)
    assert results["stdout_visibility"] == "hidden"


def test_points_are_split_over_every_case_and_a_skip_scores_zero():
    run = grading.Run(cases={n: grading.Case(n, outcome=o, reason="passed" if o == "passed" else r)
                             for n, o, r in [
                                 ("tests/t.py::test_a[0]", "passed", ""), ("tests/t.py::test_a[1]", "failed", "error"),
                                 ("tests/t.py::test_a[2]", "passed", ""), ("tests/t.py::test_a[3]", "failed", "skipped"),
                                 ("tests/t.py::test_ab", "passed", ""), ("tests/t.py::test_b", "failed", "skipped")]})
    rows = grading.manifest(Assignment("toy", 99, "Toy", "x", "1", ("g",), (
        GradedTest("tests/t.py::test_a", 6, ""), GradedTest("tests/t.py::test_ab", 1, ""),
        GradedTest("tests/t.py::test_b", 2, ""), GradedTest("tests/t.py::test_gone", 3, ""))), None)
    got = {s.name: (s.score, s.max_score, s.status, s.reason) for s in grading.score(rows, run)}
    assert got == {"tests/t.py::test_a": (3.0, 6, "failed", "error"), "tests/t.py::test_ab": (1.0, 1, "passed", "passed"),
                   "tests/t.py::test_b": (0.0, 2, "failed", "skipped"),
                   "tests/t.py::test_gone": (0.0, 3, "failed", "not_run")}


@solution_only
def test_a_results_file_is_there_whatever_happens(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "minilm.cli", "assignment", "grade", "bpe", "--dir",
                           str(tmp_path / "nothing-here"), "--json", str(out)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("minilm: error: --dir")
    results = json.loads(out.read_text())
    assert results["score"] == 0 and "did not finish" in results["output"] and results["extra_data"]["max_score"] == 20


# ------------------------------------------------------------------------------- handouts


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def solution_blocks(name: str) -> list[tuple[str, ...]]:
    """What would give `name`'s solution away, as runs of stripped lines: each region's lines that
    are not short, not comments and not also kept elsewhere in the same file, taken two at a time
    (one at a time for a one-line region). A single line shared with other code (a shape unpacking,
    say) is not a leak; two solution lines in a row are."""
    blocks = []
    for r in markers.scan(ROOT):
        if r.name != name:
            continue
        text = (ROOT / r.path).read_text().splitlines()
        inside = set(range(r.begin - 1, r.end))
        kept = {ln.strip() for i, ln in enumerate(text) if i not in inside}
        lines = [text[i].strip() for i in sorted(inside)
                 if len(text[i].strip()) >= 20 and not text[i].strip().startswith("#") and text[i].strip() not in kept]
        blocks += [tuple(lines)] if len(lines) == 1 else list(zip(lines, lines[1:]))
    return blocks


def leaked(text: str, blocks: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    singles, pairs = set(lines), set(zip(lines, lines[1:]))
    return [b for b in blocks if (b[0] in singles if len(b) == 1 else b in pairs)]


def leaks_in(folder: Path, blocks) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".md", ".txt", ".json", ""):
            if leaked(path.read_text(errors="replace"), blocks):
                found.append(path.relative_to(folder).as_posix())
    return found


@pytest.fixture(scope="module")
def handouts(tmp_path_factory):
    """Every assignment's handout, built once for this module's tests."""
    base = tmp_path_factory.mktemp("handouts")
    return {name: (handout.build(name, base / name), base / name) for name in NAMES}


def test_the_leak_check_finds_a_copied_solution():
    blocks = solution_blocks("masking")
    source = (ROOT / "minilm" / "data" / "masking.py").read_text()
    assert leaked(source, blocks), "the unhollowed file must count as a leak"
    assert not leaked("device = input_ids.device\n", blocks)


@solution_only
@pytest.mark.parametrize("name", NAMES)
def test_handout_is_reproducible_and_ships_no_unreleased_solution(name, handouts, tmp_path):
    files, folder = handouts[name]
    handout.build(name, tmp_path / "again")
    assert digest(folder) == digest(tmp_path / "again"), "building twice gave different files"
    assert (folder / "HANDOUT.md").is_file() and not (folder / ".git").exists()
    assert not [f for f in files if "__pycache__" in f or f.startswith("runs/") or f.endswith(".pyc")]
    number = markers.get(name).number
    for other in ASSIGNMENTS:  # its own and every later one hollowed; the earlier ones, already due, ship
        blocks = solution_blocks(other.name)
        assert blocks, f"{other.name}: no solution lines found"
        found = leaks_in(folder, blocks)
        if other.number >= number:
            assert not found, f"the {name} handout holds solution lines of {other.name}: {found[:3]}"
        else:
            assert found, f"the {name} handout should ship {other.name}'s solution (already due)"
    text = (folder / "HANDOUT.md").read_text()
    a = markers.get(name)
    assert text.splitlines()[0] == handout.HANDOUT_TAG.format(name)
    for heading in ("## What you will learn", "## What to implement", "## How it is graded", "## How to run it"):
        assert heading in text
    assert f"{a.points:g} points" in text and a.hours in text and a.lesson in text
    for t in a.tests:
        assert t.selector in text
    assert markers.scan(folder) == [], "the handout still holds solution markers"
    with pytest.raises(markers.AssignmentError, match="already holds a HANDOUT.md"):
        handout.build(name, tmp_path / "from-a-handout", root=folder)


@solution_only
def test_hollow_all_ships_no_solution(tmp_path):
    handout.build("backprop", tmp_path / "all", hollow_all=True)
    for a in ASSIGNMENTS:
        assert not leaks_in(tmp_path / "all", solution_blocks(a.name)), a.name


@solution_only
def test_every_hollowed_function_has_its_whole_contract_in_the_handout():
    """A student sees only the signature and docstring: each must say what it takes and returns."""
    for r in markers.scan(ROOT):
        header, doc = handout.contract(ROOT, r)
        assert len(doc.split()) >= 8, f"{r.path}: {r.function} has no contract a student could work from: {doc!r}"


@solution_only
@pytest.mark.parametrize("name", NAMES)
def test_handout_fails_its_tests_and_keeps_the_rest(name, handouts):
    _, folder = handouts[name]
    a = markers.get(name)
    rest = list(a.neighbours) + [t for t in CROSS_SECTION if t not in a.neighbours]
    run = grading.run_tests(folder, [t.selector for t in a.tests] + rest, grading=False, timeout=600,
                            env=grading.grading_env(a))
    assert run.cases and not run.collect_errors, run.log_tail
    graded = [c for c in run.cases.values() if any(matches(c.nodeid, t.selector) for t in a.tests)]
    assert graded
    for c in graded:
        assert c.outcome == "failed" and f"NotImplementedError: assignment {name}: implement" in c.private, \
            (c.nodeid, c.reason, c.private[-800:])
    others = [c for c in run.cases.values() if c not in graded]
    broken = [(c.nodeid, c.reason, c.private[-500:]) for c in others if c.outcome != "passed" and c.reason != "skipped"]
    assert not broken, f"outside the graded tests the handout of {name} must pass or skip: {broken}"
    for neighbour in a.neighbours:  # (a parametrised one may pass in the cases that do not need the functions)
        cases = [c for c in others if matches(c.nodeid, neighbour)]
        assert any(c.reason == "skipped" and f"needs assignment {name}" in c.detail for c in cases), \
            f"{neighbour} should skip in the {name} handout, naming it: {[(c.reason, c.detail) for c in cases]}"


@solution_only
def test_a_lesson_that_needs_a_hollowed_function_stops_with_one_line(handouts):
    _, folder = handouts["backprop"]
    done = subprocess.run([sys.executable, "lessons/01_neural_networks.py", "--smoke", "--out", "runs/l01"],
                          cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(folder)})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "this lesson needs assignment backprop, which is not done yet: finish it first (see HANDOUT.md)"]


# ------------------------------------------------------------------------------- every graded test, through the boundary


def through_the_boundary(tmp_path: Path, hollow_all: bool) -> grading.Run:
    """Every graded test of every assignment, in one trusted run, its worker holding the solution (or the
    handout with every assignment hollowed)."""
    tree = tmp_path / "tree"
    files = [f for f in markers.source_files(ROOT) if f.startswith("minilm/")]
    regions = markers.scan(ROOT, files)
    handout.write_tree(tree, ROOT, files, regions, [a.name for a in ASSIGNMENTS] if hollow_all else [])
    for path in [tree, *tree.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(tmp_path, 0o711)
    config = grading.worker_config(tree, tmp_path, ROOT, sandbox.probe(), sandbox.Limits(), sorted({r.path for r in regions}),
                                   (), 600, {"TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""})
    (tmp_path / "worker.json").write_text(json.dumps(config))
    selectors = [t.selector for a in ASSIGNMENTS for t in a.tests]
    return grading.run_tests(ROOT, selectors, timeout=600, env={"TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "",
                                                                  "MINILM_WORKER": str(tmp_path / "worker.json")})


@solution_only
@pytest.mark.slow
def test_the_solution_gets_full_marks_through_the_boundary(tmp_path):
    run = through_the_boundary(tmp_path, hollow_all=False)
    for a in ASSIGNMENTS:
        scores = grading.score(grading.manifest(a, None), run)
        assert sum(s.score for s in scores) == a.points, \
            [(s.name, s.reason, s.private[-800:]) for s in scores if s.score != s.max_score]


@solution_only
@pytest.mark.slow
def test_no_graded_test_reaches_the_solution_on_the_grader_side(tmp_path):
    """With every assignment hollowed in the worker, every graded case fails as not implemented: a test
    that passed would be reading the instructor's solution in the grader's own process."""
    run = through_the_boundary(tmp_path, hollow_all=True)
    for a in ASSIGNMENTS:
        for s in grading.score(grading.manifest(a, None), run):
            assert s.score == 0 and s.reason == "not_implemented", (s.name, s.reason, s.private[-800:])
