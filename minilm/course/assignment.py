"""`minilm assignment list | build | grade`: homework cut from the library itself, and its autograder.

    minilm assignment list                                  one line per assignment
    minilm assignment build NAME --out DIR                  a student's copy of the repository
    minilm assignment grade NAME [--dir DIR] [--json FILE] [--hidden-tests DIR2]

A solution is a region of a function body between two comment lines that name their
assignment, `# BEGIN SOLUTION masking` and `# END SOLUTION masking`. The signature and the
contract docstring stay; in the handout the region becomes one
`raise NotImplementedError("assignment masking: implement ...")`. The solutions are the
library's real, tested code, so a handout can never drift from its solution.

Design choices:
- Markers are checked strictly (balanced, named after a known assignment, inside a function
  body, after its docstring, not nested) and every error is one line naming file and line.
  tests/test_assignment.py scans the source with the same code, so broken markers cannot land.
- A handout is the whole repository (the files git tracks, plus new files it does not
  ignore; without git, a walk that skips runs, caches and build output) with that
  assignment's regions hollowed, every other marker line removed, and a generated
  HANDOUT.md. Nothing else: no .git, no history. Files are written in a fixed order with
  fixed modes and no timestamps, so building twice gives identical files.
- Grading runs the assignment's tests (minilm/course/catalog.py) in a separate pytest process
  with the graded tree first on PYTHONPATH. A watchdog reads the record the grader plugin
  (minilm/course/grader_plugin.py) writes as tests start and finish: a test that runs past the
  timeout is killed, a test that kills the interpreter is found by its missing result; both
  score 0 and pytest starts again on the tests not yet run. One process for everything
  that behaves (a few seconds of imports, paid once), one more per misbehaving test.
- Scores: a selector's points are split evenly over its cases that ran; GPU cases skipped
  on a CPU count for nothing (max_score 0), never as failures. The JSON is Gradescope's
  results format: score, tests [{name, score, max_score, output, status}].
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from minilm.course.catalog import Assignment, by_name, matches

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("minilm", "lessons")  # where markers may live (not tests/: they are the contract)
HANDOUT = "HANDOUT.md"
SKIP_PARTS = {".git", "__pycache__", "runs", ".hypothesis", ".pytest_cache", "build", "dist", ".venv",
              ".ci-venv", ".whl", ".carry"}
MARKER = re.compile(r"^(?P<indent>[ \t]*)# (?P<kind>BEGIN|END) SOLUTION(?: (?P<name>\S+))?[ \t]*$")
LOOSE = re.compile(r"^[ \t]*#+[ \t]*(BEGIN|END)[ \t_-]*SOLUTION", re.IGNORECASE)  # near misses are errors too


class AssignmentError(ValueError):
    """A one-line error about an assignment, a marker, a folder or a grading run."""


def get(name: str) -> Assignment:
    table = by_name()
    if name not in table:
        raise AssignmentError(f"assignment {name!r} is unknown; known assignments: {', '.join(table)}")
    return table[name]


# ---------------------------------------------------------------------------------------- markers


@dataclass(frozen=True)
class Region:
    """One marked solution region: lines begin..end (1-based, the marker lines included)."""

    path: str  # relative to the repository root, with forward slashes
    name: str
    begin: int
    end: int
    indent: str
    function: str  # qualified name of the enclosing function, e.g. "Linear.backward"
    whole_body: bool  # the region is everything after the docstring


def _functions(tree: ast.AST):
    """(qualname, node) for every function, nested ones included."""
    stack = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                stack.append((prefix + child.name + ".", child))
            elif isinstance(child, ast.ClassDef):
                stack.append((prefix + child.name + ".", child))


def _header_end(node) -> int:
    """The last line before a function's body proper: its docstring's last line, or else its signature's."""
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].end_lineno
    parts = [node.returns, *node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
             node.args.vararg, node.args.kwarg]
    return max([node.lineno] + [p.end_lineno for p in parts if p is not None])


def _extent(lines: list[str], node) -> int:
    """The last line of a function, counting the comment lines that close its body (an END marker
    after the final statement is not part of the syntax tree)."""
    end = node.end_lineno
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped and not (stripped.startswith("#") and indent > node.col_offset):
            break
        end += 1
    while end > node.end_lineno and not lines[end - 1].strip():
        end -= 1  # trailing blank lines belong to no one
    return end


def scan_text(path: str, text: str, known: set[str] | None = None) -> list[Region]:
    """The marked regions of one Python file; AssignmentError (one line, with file:line) if a marker is broken."""
    known = set(by_name()) if known is None else known
    lines = text.splitlines()
    marks = []
    for number, line in enumerate(lines, 1):
        m = MARKER.match(line)
        if m is None:
            if LOOSE.match(line):
                raise AssignmentError(f"{path}:{number}: malformed solution marker {line.strip()!r}; "
                                      f"write '# BEGIN SOLUTION <name>' or '# END SOLUTION <name>'")
            continue
        name = m.group("name")
        if not name:
            raise AssignmentError(f"{path}:{number}: '# {m.group('kind')} SOLUTION' names no assignment; "
                                  f"write '# {m.group('kind')} SOLUTION <name>' with one of {sorted(known)}")
        if name not in known:
            raise AssignmentError(f"{path}:{number}: marker names assignment {name!r}, which is not in "
                                  f"minilm/course/catalog.py; known: {sorted(known)}")
        marks.append((number, m.group("kind"), name, m.group("indent")))
    if not marks:
        return []
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise AssignmentError(f"{path}:{e.lineno}: cannot parse the file to place its solution markers ({e.msg})")
    functions = list(_functions(tree))
    regions, open_mark = [], None
    for number, kind, name, indent in marks:
        if kind == "BEGIN":
            if open_mark is not None:
                raise AssignmentError(f"{path}:{number}: BEGIN SOLUTION {name} inside the region opened at line "
                                      f"{open_mark[0]} (regions do not nest)")
            open_mark = (number, name, indent)
            continue
        if open_mark is None:
            raise AssignmentError(f"{path}:{number}: END SOLUTION {name} without a BEGIN SOLUTION before it")
        begin, begin_name, begin_indent = open_mark
        open_mark = None
        if name != begin_name:
            raise AssignmentError(f"{path}:{number}: END SOLUTION {name} closes BEGIN SOLUTION {begin_name} "
                                  f"of line {begin}; the names must match")
        if indent != begin_indent:
            raise AssignmentError(f"{path}:{number}: END SOLUTION {name} is indented differently from its "
                                  f"BEGIN at line {begin}")
        inside = [(q, f) for q, f in functions if f.lineno < begin and number <= _extent(lines, f)]
        if not inside:
            raise AssignmentError(f"{path}:{begin}: solution region {name} is not inside a function body")
        qualname, function = max(inside, key=lambda qf: qf[1].lineno)  # the innermost function
        start = _header_end(function) + 1
        if begin < start:
            raise AssignmentError(f"{path}:{begin}: solution region {name} starts before the body of "
                                  f"{qualname} (the signature and docstring stay in the handout)")
        body = [ln for ln in lines[begin:number - 1] if ln.strip() and not ln.strip().startswith("#")]
        if not body:
            raise AssignmentError(f"{path}:{begin}: solution region {name} in {qualname} holds no code")
        if any(not ln.startswith(indent) for ln in body):
            raise AssignmentError(f"{path}:{begin}: a line of solution region {name} is indented less than "
                                  f"its markers")
        before = [ln for ln in lines[start - 1:begin - 1] if ln.strip() and not ln.strip().startswith("#")]
        after = [ln for ln in lines[number:_extent(lines, function)] if ln.strip() and not ln.strip().startswith("#")]
        regions.append(Region(path, name, begin, number, indent, qualname, whole_body=not before and not after))
    if open_mark is not None:
        raise AssignmentError(f"{path}:{open_mark[0]}: BEGIN SOLUTION {open_mark[1]} is never closed "
                              f"(no END SOLUTION {open_mark[1]})")
    return regions


def source_files(root: Path, exclude: Path | None = None) -> list[str]:
    """The repository's files (relative, sorted): what git tracks plus new files it does not ignore;
    without git, a walk that skips runs, caches and build output."""
    root = Path(root).resolve()
    names: list[str] = []
    if (root / ".git").exists() and shutil.which("git"):
        listing = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                  "--exclude-standard"], capture_output=True, check=False)
        if listing.returncode == 0:
            names = [n for n in listing.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    if not names:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_PARTS and not d.endswith(".egg-info")]
            for f in filenames:
                if not f.endswith((".pyc", ".pyo")):
                    names.append(Path(dirpath, f).relative_to(root).as_posix())
    exclude = Path(exclude).resolve() if exclude is not None else None
    keep = set()
    for name in names:
        parts = Path(name).parts
        if any(p in SKIP_PARTS or p.endswith(".egg-info") for p in parts) or name.endswith((".pyc", ".pyo")):
            continue
        path = root / name
        if not path.is_file() or path.is_symlink():
            continue  # deleted in the working tree, or a link
        if exclude is not None and (path.resolve() == exclude or exclude in path.resolve().parents):
            continue  # the handout being written, when --out lies inside the tree
        keep.add(Path(name).as_posix())
    return sorted(keep)


def scan(root: Path = REPO, files: list[str] | None = None) -> list[Region]:
    """Every marked region under the source folders of `root` (markers checked strictly)."""
    root = Path(root)
    files = source_files(root) if files is None else files
    known = set(by_name())
    regions = []
    for name in files:
        if name.endswith(".py") and name.split("/")[0] in SOURCE_DIRS:
            regions += scan_text(name, (root / name).read_text(encoding="utf-8"), known)
    return regions


def _stub(region: Region) -> str:
    what = region.function if region.whole_body else f"the marked part of {region.function}"
    return (f'{region.indent}raise NotImplementedError("assignment {region.name}: implement {what} '
            f'({region.path}); see HANDOUT.md")')


def hollow(text: str, regions: list[Region], name: str) -> str:
    """`text` with `name`'s regions replaced by a raise and every other marker line removed."""
    lines = text.splitlines(keepends=True)
    newline = "\n"
    out, i = [], 0
    by_begin = {r.begin: r for r in regions}
    while i < len(lines):
        number = i + 1
        region = by_begin.get(number)
        if region is not None and region.name == name:
            out.append(_stub(region) + newline)
            i = region.end  # skip to the line after END
            continue
        if region is not None or any(r.end == number for r in regions):
            i += 1  # a marker of another assignment: dropped, its code stays
            continue
        out.append(lines[i])
        i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------- build


def build(name: str, out: Path, root: Path = REPO) -> list[str]:
    """Write the handout of assignment `name` into `out` (new or empty); returns the files written."""
    assignment = get(name)
    root, out = Path(root).resolve(), Path(out).resolve()
    if not (root / "minilm" / "__init__.py").is_file():
        raise AssignmentError(f"{root} is not a minilm tree (no minilm/__init__.py)")
    if out == root or out in root.parents:
        raise AssignmentError(f"--out {out} would hold the repository itself; choose a folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AssignmentError(f"--out {out} exists and is not an empty folder; choose a new one")
    files = source_files(root, exclude=out)
    regions = scan(root, files)
    mine = [r for r in regions if r.name == name]
    if not mine:
        raise AssignmentError(f"{root} has no solution regions for assignment {name!r} "
                              f"(is it already a handout?)")
    if HANDOUT in files:
        raise AssignmentError(f"{root} already holds a {HANDOUT}: it looks like a handout, not the solution tree")
    missing = [f for f in assignment.test_files if f not in files]
    if missing:
        raise AssignmentError(f"assignment {name}: its test file {missing[0]} is not in {root}")
    per_file: dict[str, list[Region]] = {}
    for r in regions:
        per_file.setdefault(r.path, []).append(r)
    out.mkdir(parents=True, exist_ok=True)
    for rel in files:
        src, dst = root / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel in per_file:
            text = hollow(src.read_text(encoding="utf-8"), per_file[rel], name)
            try:
                compile(text, rel, "exec")
            except SyntaxError as e:
                raise AssignmentError(f"{rel}:{e.lineno}: hollowing assignment {name} leaves invalid Python "
                                      f"({e.msg}); move its markers") from None
            dst.write_bytes(text.encode("utf-8"))
        else:
            dst.write_bytes(src.read_bytes())
        os.chmod(dst, 0o755 if os.access(src, os.X_OK) else 0o644)
    (out / HANDOUT).write_text(handout_text(assignment, mine, root), encoding="utf-8")
    os.chmod(out / HANDOUT, 0o644)
    return files + [HANDOUT]


def _signature_and_doc(root: Path, region: Region) -> tuple[str, str]:
    text = (root / region.path).read_text(encoding="utf-8")
    lines = text.splitlines()
    for qualname, node in _functions(ast.parse(text)):
        if qualname == region.function:
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            header = "\n".join(lines[first - 1:node.body[0].lineno - 1]).rstrip()
            doc = ast.get_docstring(node) or "(no docstring: read the comments around the function)"
            return header, doc
    return region.function, ""


def handout_text(assignment: Assignment, regions: list[Region], root: Path = REPO) -> str:
    """The HANDOUT.md of an assignment: goals, what to implement, grading, how to run, time."""
    a = assignment
    points = f"{a.points:g}"
    files = sorted({r.path for r in regions})
    out = [f"# Assignment {a.number}: {a.title}", "",
           f"Assignment `{a.name}` of the minilm course: {points} points, about {a.hours} hours of work. "
           f"It goes with the lesson `{a.lesson}`.", "",
           "## What you will learn", ""]
    out += [f"- {g}" for g in a.goals]
    out += ["", "## What to implement", "",
            f"Every place to fill in raises `NotImplementedError(\"assignment {a.name}: ...\")`. Keep the "
            "signatures and the contracts below; everything else in the repository is the finished "
            "library, so read it freely (it is how the rest of the course uses your code).", ""]
    seen = set()
    for r in regions:
        key = (r.path, r.function)
        if key in seen:
            continue
        seen.add(key)
        header, doc = _signature_and_doc(root, r)
        part = "" if r.whole_body else " (only the part of the body that raises; the rest is given)"
        out += [f"### `{r.function}` in `{r.path}`{part}", "", "```python", header, "```", "",
                "Contract:", "", *["    " + ln if ln else "" for ln in doc.splitlines()], ""]
    out += ["## How it is graded", "",
            f"The tests below, {points} points in all. Each test checks the contract, not how you "
            "wrote it: properties over random inputs (hypothesis) and comparisons with a reference. "
            "A parametrised test's points are split over its cases. A test that hangs past the "
            "timeout or crashes the interpreter scores 0 and grading goes on. Your instructor may "
            "add hidden tests of the same contract.", "",
            "| test | what it checks | points |", "|---|---|---:|"]
    out += [f"| `{t.selector}` | {t.checks} | {t.points:g} |" for t in a.tests]
    out += ["", "## How to run it", "",
            "From the top of this folder (with minilm installed: `pip install -e \".[test]\"`):", "",
            "```bash", f"pytest {' '.join(a.test_files)}          # the graded tests",
            f"minilm assignment grade {a.name} --dir .        # the points table, as the grader prints it",
            f"python {a.lesson} --smoke               # the lesson, in seconds",
            f"python {a.lesson}                       # the lesson, at its real (quick) size",
            "```", "",
            "Until you are done, other tests that need your functions are skipped with a reason naming "
            f"`{a.name}`, and a lesson that needs them stops with one line saying so. The rest of the "
            "suite (`pytest`) passes or skips.", ""]
    if a.notes:
        out += ["## Hints", "", a.notes, ""]
    out += ["## Files you edit", "", *[f"- `{f}`" for f in files], ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- grading


@dataclass
class Case:
    """One collected test case and what happened to it."""

    nodeid: str
    path: str
    points: float = 1.0  # from @pytest.mark.points (hidden tests)
    outcome: str = "not run"  # passed | failed | skipped | timeout | crashed | not run
    output: str = ""
    duration: float = 0.0


@dataclass
class Run:
    cases: dict[str, Case] = field(default_factory=dict)  # in collection order
    collect_errors: list[tuple[str, str]] = field(default_factory=list)  # (nodeid of the file, output)
    log_tail: str = ""
    restarts: int = 0


def check_tree(directory: Path) -> Path:
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise AssignmentError(f"--dir {directory} is not a folder")
    if not (directory / "minilm" / "__init__.py").is_file() or not (directory / "tests").is_dir():
        raise AssignmentError(f"--dir {directory} is not a minilm tree (it needs minilm/__init__.py and tests/)")
    return directory


def run_tests(directory: Path, args: list[str], *, grading: bool = True, timeout: float = 300.0,
              grace: float = 30.0, env: dict | None = None) -> Run:
    """Run pytest on `args` inside `directory` under the watchdog; every case gets an outcome.

    pytest-timeout fails a test that runs past `timeout` seconds where Python can interrupt it;
    one that still runs `grace` seconds later (stuck in native code, signals blocked) is killed
    (outcome "timeout"), and one that takes the interpreter down is "crashed". Either way
    pytest starts again without the cases already done.
    """
    directory = check_tree(directory)
    run = Run()
    with tempfile.TemporaryDirectory(prefix="minilm-grade-") as tmp:
        shutil.copy(Path(__file__).with_name("grader_plugin.py"), Path(tmp) / "minilm_grader_plugin.py")
        base_env = {**os.environ, **(env or {})}
        base_env["PYTHONPATH"] = os.pathsep.join([str(directory), tmp] + (
            [base_env["PYTHONPATH"]] if base_env.get("PYTHONPATH") else []))
        base_env["PYTHONDONTWRITEBYTECODE"] = "1"  # grading writes nothing into the graded tree
        base_env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(Path(tmp) / "hypothesis")
        base_env.pop("MINILM_GRADING", None)
        if grading:
            base_env["MINILM_GRADING"] = "1"
        try:
            import torch
            cuda = torch.cuda.is_available()
        except ImportError:
            cuda = False
        if not cuda:
            base_env.setdefault("TRITON_INTERPRET", "1")  # kernels run through Triton's interpreter
        done: set[str] = set()
        for attempt in range(10_000):
            log = Path(tmp) / f"record-{attempt}.jsonl"
            output = Path(tmp) / f"output-{attempt}.txt"
            # The tree's own settings and test ids ("tests/test_x.py::test_y"), even when hidden tests
            # from another folder are graded alongside.
            config = ["--rootdir", str(directory)] + (["-c", str(directory / "pytest.ini")]
                                                      if (directory / "pytest.ini").is_file() else [])
            cmd = [sys.executable, "-m", "pytest", *args, *config, "-p", "minilm_grader_plugin",
                   "-p", "no:cacheprovider", "-q", "-rN", "--tb=short", "--continue-on-collection-errors", "-o", f"timeout={timeout:g}",
                   *[f"--deselect={n}" for n in sorted(done)]]
            with open(output, "wb") as sink:
                proc = subprocess.Popen(cmd, cwd=directory, env={**base_env, "MINILM_GRADER_LOG": str(log)},
                                        stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
                current, since, position = None, time.monotonic(), 0
                killed = None
                while True:
                    finished = proc.poll() is not None
                    position, current, since = _read_record(log, position, run, done, current, since)
                    if finished:
                        break
                    if time.monotonic() - since > timeout + grace:  # pytest-timeout did not (or could not) stop it
                        killed = current
                        _kill(proc)
                        proc.wait()
                        position, current, since = _read_record(log, position, run, done, current, since)
                        break
                    time.sleep(0.05)
            tail = output.read_text(encoding="utf-8", errors="replace")[-4000:]
            run.log_tail = tail
            if current is not None:  # started, never finished: it hung, or it killed the interpreter
                case = run.cases.setdefault(current, Case(current, ""))
                if killed == current:
                    case.outcome, case.output = "timeout", f"killed after running past the {timeout:g} s timeout"
                else:
                    case.outcome = "crashed"
                    case.output = f"the interpreter died during this test (exit code {proc.returncode})\n{tail}"
                done.add(current)
                run.restarts += 1
                if any(c.nodeid not in done for c in run.cases.values()):
                    continue
                break
            if killed is None and proc.returncode not in (0, 1, 5):  # 2: collection errors, 3/4: pytest itself
                if not run.cases and not run.collect_errors:
                    raise AssignmentError(f"pytest could not run in {directory} (exit code {proc.returncode}): "
                                          f"{_last_line(tail)}")
            if killed is not None and current is None:  # stuck outside any test (collecting, importing)
                run.collect_errors.append(("(collection)", f"no progress for {timeout:g} s outside any test; "
                                                           f"killed\n{tail}"))
            break
    return run


def _read_record(log: Path, position: int, run: Run, done: set, current, since):
    if not log.exists():
        return position, current, since
    with open(log, "rb") as f:
        f.seek(position)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line being written stays for the next read
    for line in data[:end].decode("utf-8", "replace").splitlines():
        event = json.loads(line)
        kind, nodeid = event["event"], event.get("nodeid")
        if kind == "collected":
            run.cases.setdefault(nodeid, Case(nodeid, event["path"], event["points"]))
        elif kind == "collect_error":
            run.collect_errors.append((nodeid, event["output"]))
        elif kind == "start":
            current = nodeid
        elif kind == "finish":
            case = run.cases.setdefault(nodeid, Case(nodeid, ""))
            case.outcome, case.output, case.duration = event["outcome"], event["output"], event["duration"]
            done.add(nodeid)
            current = None
        since = time.monotonic()
    return position + end, current, since


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: pytest and anything it started
    except ProcessLookupError:
        pass


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no output)"


def concise(output: str) -> str:
    """A failure caused only by unfinished functions, said in one line per function (not a traceback)."""
    found = dict.fromkeys(re.findall(r"(assignment [a-z][a-z0-9_-]*: implement .+?\)); see HANDOUT\.md", output))
    return "\n".join(f"NotImplementedError: {f}" for f in found) if found else output


@dataclass
class Score:
    name: str
    score: float
    max_score: float
    status: str  # passed | failed | skipped
    output: str


def score(assignment: Assignment, run: Run, hidden: Path | None = None,
          directory: Path | None = None) -> list[Score]:
    """One Score per graded selector (and per hidden test case)."""
    results = []
    for test in assignment.tests:
        cases = [c for c in run.cases.values() if matches(c.nodeid, test.selector)]
        ran = [c for c in cases if c.outcome != "skipped"]
        file = test.selector.split("::")[0]
        errors = [out for nodeid, out in run.collect_errors if nodeid == file or nodeid == "(collection)"]
        if not cases:
            why = errors[0] if errors else "no test was collected for this selector (renamed or deleted?)"
            results.append(Score(test.selector, 0.0, test.points, "failed", why[-3000:]))
        elif not ran:
            results.append(Score(test.selector, 0.0, 0.0, "skipped",
                                 "skipped, not scored: " + cases[0].output.strip()[:500]))
        else:
            passed = [c for c in ran if c.outcome == "passed"]
            bad = [c for c in ran if c.outcome != "passed"]
            out = "\n".join(f"{c.nodeid}: {c.outcome}\n{concise(c.output.strip())}" for c in bad)[-6000:]
            results.append(Score(test.selector, round(test.points * len(passed) / len(ran), 4), test.points,
                                 "passed" if not bad else "failed", out or "passed"))
    if hidden is not None:
        hidden = Path(hidden).resolve()
        for c in run.cases.values():
            path = Path(c.path) if c.path else None
            if path is None or hidden not in path.resolve().parents:
                continue
            label = "hidden: " + Path(c.path).relative_to(hidden).as_posix() + "::" + c.nodeid.split("::", 1)[-1]
            if c.outcome == "skipped":
                results.append(Score(label, 0.0, 0.0, "skipped", "skipped, not scored: " + c.output.strip()[:500]))
            else:
                ok = c.outcome == "passed"
                results.append(Score(label, c.points if ok else 0.0, c.points, "passed" if ok else "failed",
                                     "passed" if ok else f"{c.outcome}\n{c.output.strip()}"[-6000:]))
        for nodeid, out in run.collect_errors:  # a hidden file that does not even import
            path = (Path(directory) / nodeid).resolve() if directory is not None and nodeid else None
            if path is not None and hidden in path.parents:
                results.append(Score("hidden: " + path.relative_to(hidden).as_posix(), 0.0, 1.0, "failed",
                                     "could not collect this file:\n" + out[-3000:]))
    return results


def grading_env(assignment: Assignment) -> dict:
    """Environment for an assignment's tests: Triton ones run through the interpreter, GPU hidden."""
    return {"CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1"} if assignment.interpreter else {}


def hidden_files(hidden: Path) -> list[str]:
    hidden = Path(hidden).resolve()
    if not hidden.is_dir():
        raise AssignmentError(f"--hidden-tests {hidden} is not a folder")
    files = sorted(str(p) for p in hidden.rglob("test_*.py"))
    if not files:
        raise AssignmentError(f"--hidden-tests {hidden} holds no test_*.py file")
    return files


def grade(name: str | Assignment, directory: Path = Path("."), *, hidden: Path | None = None,
          timeout: float = 300.0, grace: float = 30.0, json_path: Path | None = None) -> dict:
    """Grade assignment `name` against the code in `directory`; returns Gradescope's results dict."""
    assignment = get(name) if isinstance(name, str) else name
    name = assignment.name
    directory = check_tree(directory)
    missing = [f for f in assignment.test_files if not (directory / f).is_file()]
    if missing:
        raise AssignmentError(f"--dir {directory} lacks {missing[0]}: build the handout with this minilm "
                              f"(minilm assignment build {name})")
    args = [t.selector for t in assignment.tests] + (hidden_files(hidden) if hidden is not None else [])
    if not args:
        raise AssignmentError(f"assignment {name} lists no tests and no --hidden-tests were given: nothing to grade")
    started = time.monotonic()
    run = run_tests(directory, args, grading=True, timeout=timeout, grace=grace, env=grading_env(assignment))
    scores = score(assignment, run, hidden, directory)
    total = round(sum(s.score for s in scores), 2)
    best = round(sum(s.max_score for s in scores), 2)
    skipped = sum(s.status == "skipped" for s in scores)
    summary = (f"assignment {name}: {total:g} / {best:g} points in {time.monotonic() - started:.0f} s"
               + (f" ({skipped} GPU-only tests skipped, not scored)" if skipped else ""))
    results = {
        "score": total,
        "max_score": best,
        "output": summary,
        "tests": [{"name": s.name, "score": s.score, "max_score": s.max_score, "status": s.status,
                   "output": s.output, **({"visibility": "after_published"} if s.name.startswith("hidden: ") else {})}
                  for s in scores],
    }
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, json_path)
    return results


# ---------------------------------------------------------------------------------------- the command
