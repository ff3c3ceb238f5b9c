"""minilm assignment: markers are well formed, handouts hide their solution and are reproducible,
the grader survives hangs and crashes, and every handout grades 0 while the solution grades full marks.

The end-to-end check (`test_handout_fails_its_tests_and_keeps_the_rest`) is sized for CI: per
assignment one pytest run inside the handout covers the graded tests (they must fail, with
NotImplementedError naming the assignment), the assignment's neighbours (they must skip, naming
it; the lesson that needs the functions is one of them) and a fixed cross-section of the suite
(every module imports; two light model tests pass or skip). The full suite in every handout
would cost one full suite per assignment; the cross-section exercises the same mechanism (the
skip hook, the lesson stop) at a fraction of that. The solution checkout is graded for every assignment in one run.
"""
import ast
import hashlib
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from minilm.course import assignment as A
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
    regions = A.scan(ROOT)  # raises a one-line error on any broken marker
    for a in ASSIGNMENTS:
        assert any(r.name == a.name for r in regions), f"assignment {a.name} has no marked region in the source"


def test_the_table_points_at_real_tests_and_lessons():
    numbers = [a.number for a in ASSIGNMENTS]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), "assignments go in lesson order"
    for a in ASSIGNMENTS:
        assert (ROOT / a.lesson).is_file(), f"{a.name}: lesson {a.lesson} does not exist"
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
    with pytest.raises(A.AssignmentError) as info:
        A.scan_text("minilm/x.py", text)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"minilm/x.py:{line}:") and words in message, message


def test_hollow_keeps_signatures_and_contracts_and_drops_other_markers():
    regions = A.scan_text("minilm/x.py", GOOD)
    assert [(r.function, r.name, r.whole_body) for r in regions] == [("f", "bpe", True), ("C.g", "masking", False)]
    text = A.hollow(GOOD, regions, "bpe")
    assert "SOLUTION" not in text and "y = x * 2" not in text and "a += 1" in text
    assert '"""Double x."""' in text and "def f(x):" in text
    namespace = {}
    exec(compile(text, "x.py", "exec"), namespace)
    with pytest.raises(NotImplementedError) as info:
        namespace["f"](3)
    assert unfinished_assignment(info.value) == "bpe" and "implement f (minilm/x.py)" in str(info.value)
    assert namespace["C"]().g() == 2
    partial = A.hollow(GOOD, regions, "masking")
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
    with pytest.raises(A.AssignmentError, match=r"assignment 'nope' is unknown; known assignments: backprop"):
        A.get("nope")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(A.AssignmentError, match="exists and is not an empty folder"):
        A.build("bpe", tmp_path / "full")
    with pytest.raises(A.AssignmentError, match="is not a minilm tree"):
        A.grade("bpe", tmp_path / "full")
    with pytest.raises(A.AssignmentError, match="is not a folder"):
        A.grade("bpe", tmp_path / "missing")
    with pytest.raises(A.AssignmentError, match="would hold the repository"):
        A.build("bpe", ROOT.parent)
    fake = tree(tmp_path / "tree")
    with pytest.raises(A.AssignmentError, match="lacks tests/assignments/test_bpe.py"):
        A.grade("bpe", fake)
    with pytest.raises(A.AssignmentError, match="holds no test_"):
        A.grade("bpe", ROOT, hidden=tmp_path / "full")


@solution_only
def test_the_command_lists_every_assignment(capsys):
    from minilm.cli import main

    assert main(["assignment", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(ASSIGNMENTS)
    for line, a in zip(out, ASSIGNMENTS):
        assert line.startswith(f"{a.number}. {a.name}") and f"{a.points:g} points" in line and ".py" in line


# ------------------------------------------------------------------------------- the grader


def tree(path: Path) -> Path:
    """The smallest folder the grader accepts as a minilm tree."""
    (path / "minilm").mkdir(parents=True)
    (path / "minilm" / "__init__.py").write_text("")
    (path / "tests").mkdir()
    return path


HIDDEN = '''
import os
import signal
import time

import pytest


@pytest.mark.points(2)
def test_passes():
    assert True


def test_fails():
    assert 1 == 2, "one is not two"


def test_hangs_in_python():
    time.sleep(60)  # pytest-timeout interrupts it


def test_hangs_where_nothing_can_interrupt_it():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # pytest-timeout's alarm never arrives
    time.sleep(60)


def test_kills_the_interpreter():
    os._exit(3)


@pytest.mark.skip(reason="needs an NVIDIA GPU")
def test_gpu_only():
    pass


def test_runs_after_the_crash():
    assert True
'''


def test_grader_scores_hangs_and_crashes_zero_and_goes_on(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "test_hidden.py").write_text(HIDDEN)
    only_hidden = Assignment("toy", 99, "Toy", "lessons/none.py", "1", ("g",), ())
    out = tmp_path / "results.json"
    results = A.grade(only_hidden, tree(tmp_path / "tree"), hidden=hidden, timeout=2, grace=2, json_path=out)
    assert json.loads(out.read_text()) == results
    tests = {t["name"].split("::")[-1]: t for t in results["tests"]}
    assert all(t["name"].startswith("hidden: test_hidden.py::") for t in results["tests"])
    expected = {"test_passes": (2, 2), "test_fails": (0, 1), "test_hangs_in_python": (0, 1),
                "test_hangs_where_nothing_can_interrupt_it": (0, 1), "test_kills_the_interpreter": (0, 1),
                "test_gpu_only": (0, 0), "test_runs_after_the_crash": (1, 1)}
    assert {k: (t["score"], t["max_score"]) for k, t in tests.items()} == expected
    assert "one is not two" in tests["test_fails"]["output"]
    assert "Timeout" in tests["test_hangs_in_python"]["output"]
    assert "timeout" in tests["test_hangs_where_nothing_can_interrupt_it"]["output"]
    assert "exit code 3" in tests["test_kills_the_interpreter"]["output"]
    assert tests["test_gpu_only"]["status"] == "skipped"
    assert results["score"] == 3 and results["max_score"] == 7
    assert all(t.get("visibility") == "after_published" for t in results["tests"])
    assert all({"name", "score", "max_score", "output", "status"} <= set(t) for t in results["tests"])


def test_points_are_split_over_the_cases_that_ran():
    run = A.Run(cases={n: A.Case(n, "", outcome=o) for n, o in [
        ("tests/t.py::test_a[0]", "passed"), ("tests/t.py::test_a[1]", "failed"), ("tests/t.py::test_a[2]", "passed"),
        ("tests/t.py::test_a[3]", "skipped"), ("tests/t.py::test_ab", "passed"), ("tests/t.py::test_b", "skipped")]})
    toy = Assignment("toy", 99, "Toy", "x", "1", ("g",), (
        GradedTest("tests/t.py::test_a", 6, ""), GradedTest("tests/t.py::test_ab", 1, ""),
        GradedTest("tests/t.py::test_b", 2, ""), GradedTest("tests/t.py::test_gone", 3, "")))
    got = {s.name: (s.score, s.max_score, s.status) for s in A.score(toy, run)}
    assert got == {"tests/t.py::test_a": (4.0, 6, "failed"), "tests/t.py::test_ab": (1.0, 1, "passed"),
                   "tests/t.py::test_b": (0.0, 0.0, "skipped"), "tests/t.py::test_gone": (0.0, 3, "failed")}


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
    for r in A.scan(ROOT):
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


@pytest.fixture(scope="module")
def handouts(tmp_path_factory):
    """Every assignment's handout, built once for this module's tests."""
    base = tmp_path_factory.mktemp("handouts")
    return {name: (A.build(name, base / name), base / name) for name in NAMES}


def test_the_leak_check_finds_a_copied_solution():
    blocks = solution_blocks("masking")
    source = (ROOT / "minilm" / "data" / "masking.py").read_text()
    assert leaked(source, blocks), "the unhollowed file must count as a leak"
    assert not leaked("device = input_ids.device\n", blocks)


@solution_only
@pytest.mark.parametrize("name", NAMES)
def test_handout_is_reproducible_and_hides_its_solution(name, handouts, tmp_path):
    files, folder = handouts[name]
    A.build(name, tmp_path / "again")
    assert digest(folder) == digest(tmp_path / "again"), "building twice gave different files"
    assert (folder / "HANDOUT.md").is_file() and not (folder / ".git").exists()
    assert not [f for f in files if "__pycache__" in f or f.startswith("runs/") or f.endswith(".pyc")]
    secret = solution_blocks(name)
    assert secret, f"{name}: no solution lines found"
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".md", ".txt", ".json", ""):
            found = leaked(path.read_text(errors="replace"), secret)
            assert not found, f"{path.relative_to(folder)} holds solution lines of {name}: {found[:2]}"
    handout = (folder / "HANDOUT.md").read_text()
    a = A.get(name)
    for heading in ("## What you will learn", "## What to implement", "## How it is graded", "## How to run it"):
        assert heading in handout
    assert f"{a.points:g} points" in handout and a.hours in handout and a.lesson in handout
    for t in a.tests:
        assert t.selector in handout
    assert A.scan(folder) == [], "the handout still holds solution markers"
    with pytest.raises(A.AssignmentError, match="no solution regions"):
        A.build(name, tmp_path / "from-a-handout", root=folder)


@solution_only
@pytest.mark.parametrize("name", NAMES)
def test_handout_fails_its_tests_and_keeps_the_rest(name, handouts):
    _, folder = handouts[name]
    a = A.get(name)
    rest = list(a.neighbours) + [t for t in CROSS_SECTION if t not in a.neighbours]
    run = A.run_tests(folder, [t.selector for t in a.tests] + rest, grading=False, timeout=600,
                      env=A.grading_env(a))
    assert run.cases and not run.collect_errors, run.log_tail
    scores = A.score(a, run)
    assert sum(s.score for s in scores) == 0, [s for s in scores if s.score]
    for s in scores:
        assert s.status == "failed" and f"NotImplementedError: assignment {name}: implement" in s.output, s
    others = [c for c in run.cases.values() if not any(matches(c.nodeid, t.selector) for t in a.tests)]
    broken = [(c.nodeid, c.outcome, c.output[-500:]) for c in others if c.outcome not in ("passed", "skipped")]
    assert not broken, f"outside the graded tests the handout of {name} must pass or skip: {broken}"
    for neighbour in a.neighbours:  # (a parametrised one may pass in the cases that do not need the functions)
        cases = [c for c in others if matches(c.nodeid, neighbour)]
        assert any(c.outcome == "skipped" and f"needs assignment {name}" in c.output for c in cases), \
            f"{neighbour} should skip in the {name} handout, naming it: {[(c.outcome, c.output) for c in cases]}"


@solution_only
def test_a_lesson_that_needs_a_hollowed_function_stops_with_one_line(handouts):
    _, folder = handouts["backprop"]
    done = subprocess.run([sys.executable, "lessons/01_neural_networks.py", "--smoke", "--out", "runs/l01"],
                          cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(folder)})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "this lesson needs assignment backprop, which is not done yet: finish it first (see HANDOUT.md)"]


@solution_only
def test_the_solution_gets_full_marks():
    selectors = [t.selector for a in ASSIGNMENTS for t in a.tests]
    run = A.run_tests(ROOT, selectors, grading=True, timeout=600, env={"TRITON_INTERPRET": "1"})
    for a in ASSIGNMENTS:
        scores = A.score(a, run)
        assert sum(s.score for s in scores) == sum(s.max_score for s in scores), \
            [(s.name, s.output[-800:]) for s in scores if s.score != s.max_score]
        unscored = sum(t.points for t, s in zip(a.tests, scores) if s.status == "skipped")  # GPU-only, on a CPU
        assert sum(s.max_score for s in scores) == a.points - unscored
