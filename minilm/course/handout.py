"""Handouts: the repository as a student gets it, with the assignment's solutions cut out.

    minilm assignment build NAME --out DIR [--hollow-all]

Design choices:
- A handout is the whole repository (the files git tracks, plus new files it does not
  ignore; without git, a walk that skips runs, caches and build output) with the solution
  regions of its own assignment and of every assignment after it in the course hollowed
  (earlier ones are due already, so their solutions ship, as CS336 does); `--hollow-all`
  hollows every assignment. Other marker lines are removed, and a HANDOUT.md is written.
  No .git, no history. Files are written in a fixed order with fixed modes and no
  timestamps, so building twice gives identical files.
- A handout never holds another handout: a folder inside the tree with a HANDOUT.md in it is
  left out, and `--out` inside the tree is refused.
- HANDOUT.md gives each hollowed function's signature and its whole contract (the docstring;
  tests/test_assignment.py insists that there is one), the graded tests and their points,
  how grading works, and says whether the lesson that goes with it runs the student's code.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

from minilm.course.catalog import ASSIGNMENTS, Assignment
from minilm.course.markers import (HANDOUT, REPO, AssignmentError, Region, _functions, get, hollow, scan,
                                   source_files)

HANDOUT_TAG = "<!-- minilm handout: {} -->"  # the first line of HANDOUT.md, read by minilm/course/testing.py


def hollowed_with(assignment: Assignment, hollow_all: bool = False) -> list[str]:
    """The assignments a handout of `assignment` hollows: itself and every one after it (or all)."""
    return [a.name for a in ASSIGNMENTS if hollow_all or a.number >= assignment.number]


def write_tree(out: Path, root: Path, files: list[str], regions: list[Region], names: list[str]) -> None:
    """Copy `files` from `root` into `out`, with the regions of `names` hollowed and other markers dropped."""
    per_file: dict[str, list[Region]] = {}
    for r in regions:
        per_file.setdefault(r.path, []).append(r)
    for rel in files:
        src, dst = root / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel in per_file:
            text = hollow(src.read_text(encoding="utf-8"), per_file[rel], set(names))
            try:
                compile(text, rel, "exec")
            except SyntaxError as e:
                raise AssignmentError(f"{rel}:{e.lineno}: hollowing {', '.join(names)} leaves invalid Python "
                                      f"({e.msg}); move the markers") from None
            dst.write_bytes(text.encode("utf-8"))
        else:
            dst.write_bytes(src.read_bytes())
        os.chmod(dst, 0o755 if os.access(src, os.X_OK) else 0o644)


def build(name: str, out: Path, root: Path = REPO, *, hollow_all: bool = False) -> list[str]:
    """Write the handout of assignment `name` into `out` (new or empty, outside the tree); returns its files."""
    assignment = get(name)
    root, out = Path(root).resolve(), Path(out).resolve()
    if not (root / "minilm" / "__init__.py").is_file():
        raise AssignmentError(f"{root} is not a minilm tree (no minilm/__init__.py)")
    if out == root or root in out.parents or out in root.parents:
        raise AssignmentError(f"--out {out} is inside the repository {root} (or holds it): a handout written there "
                              "would be copied into the next one; choose a folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AssignmentError(f"--out {out} exists and is not an empty folder; choose a new one")
    files = source_files(root)
    if HANDOUT in files:
        raise AssignmentError(f"{root} already holds a {HANDOUT}: it looks like a handout, not the solution tree")
    regions = scan(root, files)
    mine = [r for r in regions if r.name == name]
    if not mine:
        raise AssignmentError(f"{root} has no solution regions for assignment {name!r} (is it already a handout?)")
    missing = [f for f in assignment.test_files if f not in files]
    if missing:
        raise AssignmentError(f"assignment {name}: its test file {missing[0]} is not in {root}")
    out.mkdir(parents=True, exist_ok=True)
    names = hollowed_with(assignment, hollow_all)
    write_tree(out, root, files, regions, names)
    later = [n for n in names if n != name]
    (out / HANDOUT).write_text(handout_text(assignment, mine, root, later), encoding="utf-8")
    os.chmod(out / HANDOUT, 0o644)
    return files + [HANDOUT]


def contract(root: Path, region: Region) -> tuple[str, str]:
    """(signature, docstring) of the function holding `region`."""
    text = (root / region.path).read_text(encoding="utf-8")
    lines = text.splitlines()
    for qualname, node in _functions(ast.parse(text)):
        if qualname == region.function:
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            header = "\n".join(lines[first - 1:node.body[0].lineno - 1]).rstrip()
            return header, ast.get_docstring(node) or ""
    return region.function, ""


def lesson_runs(root: Path, lesson: str, files: list[str]) -> bool:
    """Whether the lesson imports a module the student edits (so running it runs their code)."""
    path = root / lesson
    if not path.is_file():
        return False
    modules = {f.removesuffix(".py").replace("/", ".") for f in files}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else []
        if any(n in modules for n in names):
            return True
    return False


def handout_text(assignment: Assignment, regions: list[Region], root: Path = REPO, later: list[str] = ()) -> str:
    """The HANDOUT.md of an assignment: goals, what to implement, grading, how to run, time."""
    a = assignment
    points = f"{a.points:g}"
    files = sorted({r.path for r in regions})
    runs = lesson_runs(root, a.lesson, files)
    out = [HANDOUT_TAG.format(a.name), f"# Assignment {a.number}: {a.title}", "",
           f"Assignment `{a.name}` of the minilm course: {points} points, about {a.hours} hours of work. "
           f"It goes with the lesson `{a.lesson}`" + ("." if runs else
                                                      ", which explains the ideas but does not run your code."), "",
           "## What you will learn", ""]
    out += [f"- {g}" for g in a.goals]
    out += ["", "## What to implement", "",
            f"Every place to fill in raises `NotImplementedError(\"assignment {a.name}: ...\")`. Keep the "
            "signatures and the contracts below; everything else in the repository is the finished "
            "library, so read it freely (it is how the rest of the course uses your code)."
            + (f" The assignments that come later ({', '.join(f'`{n}`' for n in later)}) are cut out too: "
               "their functions raise `NotImplementedError` naming them, and what needs them is skipped."
               if later else ""), ""]
    seen = set()
    for r in regions:
        key = (r.path, r.function)
        if key in seen:
            continue
        seen.add(key)
        header, doc = contract(root, r)
        part = "" if r.whole_body else " (only the part of the body that raises; the rest is given)"
        out += [f"### `{r.function}` in `{r.path}`{part}", "", "```python", header, "```", "",
                "Contract:", "", *["    " + ln if ln else "" for ln in doc.splitlines()], ""]
    out += ["## How it is graded", "",
            f"The tests below, {points} points in all. Each test checks the contract, not how you "
            "wrote it: properties over random inputs (hypothesis) and comparisons with a reference. "
            "A parametrised test's points are split over its cases.", "",
            "The grader takes only the files listed at the end from your submission and grades them "
            "with its own copy of everything else: its tests, its settings, its library. Your code "
            "runs in a separate process with no network, under time and memory limits, and answers "
            "the tests with plain data; the tests and their verdicts run outside it. A test scores 0 "
            "if it fails, is skipped, crashes, runs out of time (each test has a limit) or calls the "
            "reference it is compared with. What you print is not shown in the results. Your "
            "instructor may add hidden tests of the same contract.", "",
            "| test | what it checks | points |", "|---|---|---:|"]
    out += [f"| `{t.selector}` | {t.checks} | {t.points:g} |" for t in a.tests]
    out += ["", "## How to run it", "",
            "From the top of this folder (with minilm installed: `pip install -e \".[test]\"`):", "",
            "```bash", f"pytest {' '.join(a.test_files)}          # the graded tests, with tracebacks",
            f"minilm assignment grade {a.name} --dir .        # the points table, as the grader prints it"]
    if runs:
        out += [f"python {a.lesson} --smoke               # the lesson, in seconds, with your code",
                f"python {a.lesson}                       # the lesson, at its real (quick) size"]
    out += ["```", "",
            "Until you are done, other tests that need your functions are skipped with a reason naming "
            f"`{a.name}`" + (", and a lesson that needs them stops with one line saying so" if runs else "")
            + ". The rest of the suite (`pytest`) passes or skips.", ""]
    if a.notes:
        out += ["## Hints", "", a.notes, ""]
    out += ["## Files you edit", "", *[f"- `{f}`" for f in files], ""]
    return "\n".join(out)
