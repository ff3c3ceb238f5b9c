"""`minilm assignment grade`: the verdict made outside the student's code, the manifest as the denominator.

    minilm assignment grade NAME --dir SUBMISSION [--hidden-tests DIR] [--json FILE] [--timeout S]

How one submission is graded:
1. `results.json` is written at once (0 points, "grading did not finish") and rewritten at the
   end, so there is a results file whatever happens in between.
2. The grading tree is built from the instructor's own copy: the library as the handout has
   it (this assignment and the later ones hollowed), then, from the submission, only the
   files this assignment lets a student edit (minilm/course/markers.editable_files), each a
   regular file inside the submission, UTF-8, at most 1 MB, found at its path or by its name
   alone. Everything else in the submission (tests, conftest.py, pytest settings, .pth and
   sitecustomize files) is ignored, and the grade says so.
3. The instructor's tests (the catalog's graded tests, then the hidden ones) run in a pytest
   process that never imports the submission (minilm/course/grader_plugin.py); they reach
   the student's functions through minilm/course/boundary.py, whose worker runs behind the
   walls of minilm/course/sandbox.py. Its record comes back through a pipe.
4. Scores come from the manifest, not from what ran: every graded test (and every hidden
   test, read from its file's syntax tree) is a row with its declared points. A case that
   fails, is skipped, crashes, times out, is not implemented, answers with the wrong type,
   calls the reference or never runs scores 0 with a reason code. The maximum is always the
   assignment's points (plus the hidden tests').

Design choices:
- results.json is Gradescope's format: `score`, `execution_time`, `output`, `visibility`,
  `stdout_visibility` ("hidden": what this command prints, the submission's own output
  included, is for the instructor), `tests` (name, number, score, max_score, status,
  output, visibility, tags) and `extra_data` (the maximum, the isolation applied, the files
  taken and ignored). A hidden test's row shows only its name and reason code, after the
  grades are published.
- One trusted pytest process for every test; a watchdog restarts it on the tests not yet
  run if it ever stops making progress (a test past its time limit plus a grace period).
"""
from __future__ import annotations

import ast
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minilm.course import sandbox
from minilm.course.catalog import Assignment, matches
from minilm.course.handout import hollowed_with, write_tree
from minilm.course.markers import HANDOUT, REPO, AssignmentError, get, scan, source_files

MAX_FILE = 1 << 20  # bytes of one submitted source file
WORKER_TREE = "minilm"  # what the worker's tree holds: the library only, no tests, no lessons
REASONS = {
    "passed": "passed",
    "wrong_answer": "wrong answer",
    "wrong_type": "an answer of the wrong type or shape",
    "error": "your code raised an exception",
    "not_implemented": "not implemented yet",
    "timeout": "ran past the time limit",
    "crashed": "your code's process died",
    "bad_answer": "an answer that is not plain data, or too large",
    "import_error": "your module could not be imported",
    "used_reference": "called the reference this test compares with",
    "skipped": "skipped (a skipped test scores 0)",
    "not_run": "did not run",
    "missing_file": "your submission does not hold this file",
}


@dataclass
class Case:
    """One collected test case and the trusted process's verdict on it."""

    nodeid: str
    path: str = ""
    points: float = 1.0
    outcome: str = "not run"  # passed | failed | not run
    reason: str = "not_run"
    detail: str = ""
    private: str = ""
    duration: float = 0.0


@dataclass
class Run:
    cases: dict[str, Case] = field(default_factory=dict)  # in collection order
    collect_errors: list[tuple[str, str]] = field(default_factory=list)
    log_tail: str = ""
    restarts: int = 0
    output: str = ""  # what the submission printed (head and tail), for the instructor
    output_bytes: int = 0


@dataclass
class Row:
    """One line of the manifest: a graded test (or a hidden one) and its points."""

    name: str
    points: float
    selector: str = ""  # a visible test's pytest selector
    path: str = ""  # a hidden test's file
    function: str = ""  # a hidden test's function (Class::function for methods)


@dataclass
class Score:
    name: str
    score: float
    max_score: float
    status: str  # passed | failed
    output: str  # what the student sees
    reason: str
    private: str = ""  # what only the instructor sees
    hidden: bool = False


# ---------------------------------------------------------------------------------------- the manifest


def hidden_rows(hidden: Path) -> list[Row]:
    """Every test function in the hidden folder's test_*.py files, with its @pytest.mark.points (1 when absent),
    read from the syntax tree (an instructor's file that fails to import still counts its points)."""
    hidden = Path(hidden).resolve()
    if not hidden.is_dir():
        raise AssignmentError(f"--hidden-tests {hidden} is not a folder")
    files = sorted(hidden.rglob("test_*.py"))
    if not files:
        raise AssignmentError(f"--hidden-tests {hidden} holds no test_*.py file")
    rows = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError as e:
            raise AssignmentError(f"{path}:{e.lineno}: the hidden test does not parse ({e.msg})") from None
        rel = path.relative_to(hidden).as_posix()
        for node, prefix in [(n, "") for n in tree.body] + [(m, c.name + "::") for c in tree.body
                                                          if isinstance(c, ast.ClassDef) and c.name.startswith("Test")
                                                          for m in c.body]:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                rows.append(Row(f"hidden: {rel}::{prefix}{node.name}", _points(node), path=str(path),
                                function=prefix + node.name))
    return rows


def _points(node) -> float:
    for d in node.decorator_list:
        if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "points" \
                and d.args and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, (int, float)):
            return float(d.args[0].value)
    return 1.0


def manifest(assignment: Assignment, hidden: Path | None) -> list[Row]:
    rows = [Row(t.selector, float(t.points), selector=t.selector) for t in assignment.tests]
    return rows + (hidden_rows(hidden) if hidden is not None else [])


def _cases_of(row: Row, run: Run) -> list[Case]:
    if row.selector:
        return [c for c in run.cases.values() if matches(c.nodeid, row.selector)]
    path = os.path.realpath(row.path)
    out = []
    for c in run.cases.values():
        name = c.nodeid.split("::", 1)[-1]
        if c.path and os.path.realpath(c.path) == path and (name == row.function or name.startswith(row.function + "[")):
            out.append(c)
    return out


def score(rows: list[Row], run: Run) -> list[Score]:
    """One Score per manifest row: its points split over its cases, a case that did not pass scoring 0."""
    scores = []
    for row in rows:
        hidden = not row.selector
        cases = _cases_of(row, run)
        if not cases:
            errors = [out for nodeid, out in run.collect_errors]
            private = errors[0][-3000:] if errors else "no test was collected for this row"
            scores.append(Score(row.name, 0.0, row.points, "failed", _explain("not_run", ""), "not_run", private,
                                hidden))
            continue
        passed = [c for c in cases if c.outcome == "passed" and c.reason == "passed"]
        bad = [c for c in cases if c not in passed]
        got = round(row.points * len(passed) / len(cases), 4)
        lines = []
        for c in bad:
            case = c.nodeid.split("::", 1)[-1]
            detail = "" if hidden else c.detail
            lines.append((f"{case}: " if len(cases) > 1 else "") + _explain(c.reason, detail))
        reason = bad[0].reason if bad else "passed"
        output = "passed" if not bad else "\n".join(lines)[:4000]
        private = "\n".join(f"{c.nodeid}: {c.reason}\n{c.private}" for c in bad)[-8000:]
        scores.append(Score(row.name, got, row.points, "passed" if not bad else "failed", output, reason, private,
                            hidden))
    return scores


def _explain(reason: str, detail: str) -> str:
    words = REASONS.get(reason, reason)
    return f"{reason} ({words})" + (f": {detail}" if detail else "")


# ---------------------------------------------------------------------------------------- the grading tree


@dataclass
class Taken:
    files: list[str]  # taken from the submission
    missing: list[str]  # editable files the submission lacks (graded as the handout's)
    refused: list[str]  # present but not acceptable (a link, too large, not UTF-8), with why
    ignored: int  # other files in the submission
    notable: list[str]  # ignored files that would have changed grading had they been used
    mentions: list[str] = field(default_factory=list)  # "file:line name": the references the student's code names


def _read_submitted(submission: Path, rel: str) -> tuple[bytes | None, str]:
    """The bytes of the student's `rel`, or None and why not. Links, special files and paths leaving the
    submission are refused: the grader may run as root."""
    for candidate in (submission / rel, submission / Path(rel).name):
        try:
            info = os.lstat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            return None, f"{candidate.relative_to(submission)} is not a regular file"
        real = os.path.realpath(candidate)
        if not real.startswith(os.path.realpath(submission) + os.sep):
            return None, f"{candidate.relative_to(submission)} leads outside the submission"
        if info.st_size > MAX_FILE:
            return None, f"{candidate.relative_to(submission)} is larger than {MAX_FILE >> 20} MB"
        fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE + 1)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None, f"{candidate.relative_to(submission)} is not UTF-8 text"
        return data, ""
    return None, ""


def _handout_files(root: Path) -> list[str]:
    """Grading from inside a handout (no solution regions left): the files its HANDOUT.md says a student edits."""
    try:
        text = (root / HANDOUT).read_text(encoding="utf-8")
    except OSError:
        return []
    section = text.split("## Files you edit", 1)[-1] if "## Files you edit" in text else ""
    return [line[3:-1] for line in section.splitlines() if line.startswith("- `") and line.endswith("`")]


def build_tree(assignment: Assignment, submission: Path, tree: Path, root: Path = REPO) -> Taken:
    """The worker's tree: the library as the handout has it, with only the student's editable files put in."""
    files = [f for f in source_files(root) if f.startswith(WORKER_TREE + "/")]
    regions = scan(root, files)
    editable = sorted({r.path for r in regions if r.name == assignment.name}) or _handout_files(root)
    write_tree(tree, root, files, regions, hollowed_with(assignment))
    taken, missing, refused, mentions = [], [], [], []
    for rel in editable:
        data, why = _read_submitted(submission, rel)
        if data is None:
            (refused if why else missing).append(f"{rel} ({why})" if why else rel)
            continue
        mentions += _mentions(rel, (tree / rel).read_text(encoding="utf-8"), data.decode("utf-8"),
                              assignment.references)
        (tree / rel).write_bytes(data)
        os.chmod(tree / rel, 0o644)
        taken.append(rel)
    ignored, notable = _ignored(submission, root, set(editable))
    for path in [tree, *[p for p in tree.rglob("*") if p.is_dir()]]:
        os.chmod(path, 0o755)
    return Taken(taken, missing, refused, ignored, notable, mentions)


def _mentions(rel: str, ours: str, theirs: str, references) -> list[str]:
    """Lines of a submitted file (read as text, never run) that name a reference its tests compare with and
    are not in the handout's own copy: for the instructor, beside the flag a call raises when it runs."""
    names = {r.rpartition(".")[2] for r in references}
    given = set(ours.splitlines())
    return [f"{rel}:{number}: {line.strip()[:120]}" for number, line in enumerate(theirs.splitlines(), 1)
            if line not in given and any(n in line for n in names)][:20]


def _ignored(submission: Path, root: Path, editable: set[str]) -> tuple[int, list[str]]:
    """How many other files the submission holds, and the ones that differ from the grader's copy and could
    have changed grading had they been used (tests, pytest or Python start-up files)."""
    count, notable = 0, []
    for dirpath, dirnames, filenames in os.walk(submission):  # links are not followed
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__", ".pytest_cache", ".hypothesis"))
        for name in sorted(filenames):
            rel = Path(dirpath, name).relative_to(submission).as_posix()
            if rel in editable or Path(rel).name in {Path(e).name for e in editable} and "/" not in rel:
                continue
            count += 1
            if count > 20000:
                return count, notable
            special = name in ("conftest.py", "pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml",
                               "sitecustomize.py", "usercustomize.py") or name.endswith(".pth") or \
                rel.startswith("tests/")
            if special and len(notable) < 8:
                ours = root / rel
                try:
                    same = ours.is_file() and os.path.getsize(ours) == os.lstat(Path(dirpath, name)).st_size and \
                        ours.read_bytes() == Path(dirpath, name).read_bytes()
                except OSError:
                    same = False
                if not same:
                    notable.append(rel)
    return count, notable


# ---------------------------------------------------------------------------------------- the trusted run


def grading_env(assignment: Assignment) -> dict:
    """Environment for an assignment's tests: Triton ones run through the interpreter, GPU hidden."""
    return {"CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1"} if assignment.interpreter else {}


def run_tests(directory: Path, args: list[str], *, timeout: float, grace: float = 30.0, env: dict | None = None,
              scratch: Path | None = None, hidden: Path | None = None, grading: bool = True) -> Run:
    """Run pytest on `args` in the trusted tree `directory` under the watchdog; every case gets a verdict.

    The grader plugin records each test's start and verdict through a pipe. `grading=False` runs a
    handout's own tests the way a student does (in-process, unfinished functions skip their
    neighbours), still recorded. A test still running
    `timeout + grace` seconds after it started (its own calls into the worker stop at `timeout`)
    is killed with its process and scored "timeout"; a test during which the process died is
    "crashed"; either way pytest starts again without the cases already done.
    """
    run = Run()
    own_scratch = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="minilm-grade-")) if own_scratch else scratch
    try:
        base_env = {**os.environ, **(env or {})}
        base_env["PYTHONPATH"] = os.pathsep.join([str(directory)] + (
            [base_env["PYTHONPATH"]] if base_env.get("PYTHONPATH") else []))
        base_env.pop("MINILM_GRADING", None)
        base_env.update({"PYTHONDONTWRITEBYTECODE": "1", **({"MINILM_GRADING": "1"} if grading else {}),
                         "HYPOTHESIS_STORAGE_DIRECTORY": str(scratch / "hypothesis"),
                         "MINILM_GRADER_TIMEOUT": f"{timeout:g}",
                         "MINILM_GRADER_HIDDEN": str(Path(hidden).resolve()) if hidden else ""})
        done: set[str] = set()
        for attempt in range(1000):
            output = scratch / f"pytest-{attempt}.txt"
            config = ["--rootdir", str(directory)] + (["-c", str(directory / "pytest.ini")]
                                                      if (directory / "pytest.ini").is_file() else [])
            cmd = [sys.executable, "-m", "pytest", *args, *config, "-p", "minilm.course.grader_plugin",
                   "-p", "no:cacheprovider", "-q", "-rN", "--tb=short", "--continue-on-collection-errors",
                   "-o", f"timeout={timeout + grace:g}", *[f"--deselect={n}" for n in sorted(done)]]
            record_r, record_w = os.pipe()
            with open(output, "wb") as sink:
                proc = subprocess.Popen(cmd, cwd=directory, stdout=sink, stderr=subprocess.STDOUT,
                                        env={**base_env, "MINILM_GRADER_RECORD_FD": str(record_w)},
                                        pass_fds=(record_w,), start_new_session=True)
            os.close(record_w)
            current, since, buffer, killed = None, time.monotonic(), b"", None
            with os.fdopen(record_r, "rb", buffering=0) as record:
                while True:
                    ready, _, _ = select.select([record], [], [], 0.5)
                    if ready:
                        chunk = record.read(1 << 16)
                        if not chunk:
                            break
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            current, since = _event(line, run, done, current, since)
                    elif current is not None and time.monotonic() - since > timeout + grace:
                        killed = current
                        _kill(proc)
                        break
            proc.wait()
            tail = output.read_text(encoding="utf-8", errors="replace")[-4000:]
            run.log_tail = tail
            if current is not None:  # started, never finished: it hung past the limit, or the process died
                case = run.cases.setdefault(current, Case(current))
                case.outcome = "failed"
                if killed == current:
                    case.reason, case.detail = "timeout", f"stopped after {timeout + grace:g} s"
                else:
                    case.reason, case.private = "crashed", f"the grading process died (exit {proc.returncode})\n{tail}"
                done.add(current)
                run.restarts += 1
                if any(c.nodeid not in done for c in run.cases.values()):
                    continue
            elif proc.returncode not in (0, 1, 5) and not run.cases and not run.collect_errors:
                raise AssignmentError(f"pytest could not run in {directory} (exit code {proc.returncode}): "
                                      f"{_last_line(tail)}")
            break
    finally:
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return run


def _event(line: bytes, run: Run, done: set, current, since):
    try:
        event = json.loads(line)
        kind = event["event"]
    except (ValueError, KeyError, TypeError):
        return current, since
    nodeid = event.get("nodeid")
    if kind == "collected":
        run.cases.setdefault(nodeid, Case(nodeid, event.get("path", ""), float(event.get("points", 1.0))))
    elif kind == "collect_error":
        run.collect_errors.append((nodeid, event.get("output", "")))
    elif kind == "start":
        current = nodeid
    elif kind == "finish":
        case = run.cases.setdefault(nodeid, Case(nodeid))
        for key in ("outcome", "reason", "detail", "private", "duration"):
            if key in event:
                setattr(case, key, event[key])
        done.add(nodeid)
        current = None
    elif kind == "output":
        run.output, run.output_bytes = event.get("text", ""), int(event.get("bytes", 0))
    return current, time.monotonic()


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no output)"


# ---------------------------------------------------------------------------------------- grade


def worker_config(tree: Path, scratch: Path, root: Path, isolation: sandbox.Isolation, limits: sandbox.Limits,
                  student_files, references, timeout: float, extra_env: dict | None = None) -> dict:
    """What minilm.course.boundary needs to start workers on `tree` (the JSON behind MINILM_WORKER)."""
    inside = sandbox.TREE if isolation.mode in ("root", "userns") else str(tree)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1))),
           "MPLCONFIGDIR": "/tmp/matplotlib", "TRITON_CACHE_DIR": "/tmp/triton", "HF_HUB_OFFLINE": "1",
           **(extra_env or {})}
    return {"isolation": isolation.mode, "user": isolation.user, "tree": str(tree), "scratch": str(scratch),
            "repo": str(root), "env": env, "limits": asdict(limits),
            "student_files": [f"{inside}/{rel}" for rel in student_files], "references": list(references),
            "timeout": timeout, "start_timeout": 180.0, "max_answer_mb": 256}


def results_json(name: str, scores: list[Score], *, seconds: float, summary: str, extra: dict) -> dict:
    tests = [{"name": s.name, "number": str(i), "score": s.score, "max_score": s.max_score, "status": s.status,
              "output": s.output,
              "visibility": "after_published" if s.hidden else "visible", "tags": [name, s.reason]}
             for i, s in enumerate(scores, 1)]
    return {"score": round(sum(s.score for s in scores), 2), "execution_time": round(seconds, 1), "output": summary,
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests, "extra_data": extra}


def write_results(path: Path | None, results: dict) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def grade(name: str | Assignment, directory: Path = Path("."), *, hidden: Path | None = None,
          timeout: float = 300.0, grace: float = 30.0, json_path: Path | None = None, root: Path = REPO,
          limits: sandbox.Limits | None = None, isolation: sandbox.Isolation | None = None, log=None) -> dict:
    """Grade assignment `name` against the submission in `directory`; returns Gradescope's results dict
    (also written to `json_path`, first as a 0 that says grading did not finish). What only the
    instructor may see (tracebacks, the submission's own output, references it called) goes to
    `log(text)`, never into the results."""
    started = time.monotonic()
    assignment = get(name) if isinstance(name, str) else name
    name = assignment.name
    max_points = assignment.points
    write_results(json_path, {"score": 0.0, "execution_time": 0, "output": f"assignment {name}: grading did not "
                              "finish", "visibility": "visible", "stdout_visibility": "hidden", "tests": [],
                              "extra_data": {"max_score": max_points, "finished": False}})
    sandbox.protect_grader()
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise AssignmentError(f"--dir {directory} is not a folder")
    root = Path(root).resolve()
    if not (root / "tests").is_dir():
        raise AssignmentError(f"{root} has no tests/: grading needs the instructor's minilm source tree")
    rows = manifest(assignment, hidden)
    max_points = sum(r.points for r in rows)
    isolation = isolation or sandbox.probe()
    limits = limits or sandbox.Limits()
    scratch = Path(tempfile.mkdtemp(prefix="minilm-grade-"))
    try:
        os.chmod(scratch, 0o711)  # the worker's uid may pass through to its tree, list nothing
        tree = scratch / "tree"
        tree.mkdir()
        taken = build_tree(assignment, directory, tree, root)
        config = worker_config(tree, scratch, root, isolation, limits, taken.files, assignment.references, timeout,
                               grading_env(assignment))
        config_path = scratch / "worker.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        os.chmod(config_path, 0o600)
        args = [r.selector for r in rows if r.selector] + sorted({r.path for r in rows if r.path})
        run = run_tests(root, args, timeout=timeout, grace=grace, scratch=scratch, hidden=hidden,
                        env={**grading_env(assignment), "MINILM_WORKER": str(config_path)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    scores = score(rows, run)
    for s in scores:
        if taken.missing and s.status == "failed" and s.reason == "not_implemented" and not s.hidden:
            s.output += f"\n(your submission does not hold {', '.join(taken.missing)})"
    total = round(sum(s.score for s in scores), 2)
    parts = [f"assignment {name}: {total:g} / {max_points:g} points"]
    parts.append("graded from your submission: " + (", ".join(taken.files) or "nothing"))
    if taken.missing:
        parts.append("not in your submission (graded as the handout's unfinished file): " + ", ".join(taken.missing))
    if taken.refused:
        parts.append("refused: " + ", ".join(taken.refused))
    if taken.ignored:
        parts.append(f"ignored: {taken.ignored} other files in the submission (the grader uses its own tests, "
                     "settings and library)" + (f", including {', '.join(taken.notable)}" if taken.notable else ""))
    summary = "; ".join(parts)
    extra = {"max_score": max_points, "finished": True, "isolation": isolation.line, "taken": taken.files,
             "missing": taken.missing, "refused": taken.refused, "ignored": taken.ignored,
             "ignored_notable": taken.notable, "submission_output_bytes": run.output_bytes}
    results = results_json(name, scores, seconds=time.monotonic() - started, summary=summary, extra=extra)
    write_results(json_path, results)
    if log is not None:
        if taken.mentions:
            log("--- the submission names references its tests compare with (a call that runs is scored 0):\n"
                + "\n".join(taken.mentions))
        for s in scores:
            if s.private:
                log(f"--- {s.name} ({s.reason}), for the instructor:\n{_printable(s.private[-3000:])}")
        if run.output_bytes:
            log(f"--- the submission printed {run.output_bytes} bytes; its head and tail:\n{_printable(run.output)}")
    return results


def _printable(text: str) -> str:
    """What the submission wrote may hold control characters: shown escaped, never interpreted."""
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text)
