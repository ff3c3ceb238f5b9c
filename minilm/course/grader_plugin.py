"""The grader's pytest plugin: runs in the trusted process that holds the tests, records each verdict.

`minilm assignment grade` starts pytest on the instructor's tests with `-p
minilm.course.grader_plugin`. This process never imports the submission: the tests reach it
through minilm.course.boundary, so every verdict here is the grader's own.

Design choices:
- The record is JSON lines written to a pipe the grader passed in (MINILM_GRADER_RECORD_FD),
  not a file: nothing the worker can open. The process makes itself non-dumpable, so a worker
  running under the same uid (no namespaces) cannot read its memory, environment or
  descriptors either.
- Each finished test is one line with its outcome (passed or failed), a reason code, a
  student-visible detail composed here from whitelisted parts, and an instructor-only text.
  A test that passes but in which the submission ran the reference it is compared with is
  failed with reason `used_reference`. A skipped test is a failure (reason `skipped`):
  points are never taken off the denominator.
- Hypothesis runs derandomized and without its example database, so the same code gets the
  same grade on every run, and without shrinking (seconds per failing test); the falsifying
  example it reports is the one that failed, and it is shown for visible tests.
- Points for instructors' hidden tests: `@pytest.mark.points(3)` (1 when absent).
- Each test's calls into the worker share its time limit (MINILM_GRADER_TIMEOUT seconds).
"""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from minilm.course import boundary, sandbox

RECORD_FD = int(os.environ.get("MINILM_GRADER_RECORD_FD", "-1"))
TIMEOUT = float(os.environ.get("MINILM_GRADER_TIMEOUT", "300"))
HIDDEN = os.environ.get("MINILM_GRADER_HIDDEN", "")  # the hidden tests' folder: their details stay hidden
_state: dict[str, dict] = {}  # nodeid -> the verdict so far, over setup, call and teardown


def _log(event: dict) -> None:
    if RECORD_FD >= 0:
        os.write(RECORD_FD, (json.dumps(event) + "\n").encode("utf-8"))


def pytest_configure(config):
    sandbox.protect_grader()
    config.addinivalue_line("markers", "points(n): points a hidden grading test is worth (default 1)")
    try:
        from hypothesis import Phase, settings
    except ImportError:
        return
    settings.register_profile("minilm-grading", database=None, derandomize=True, print_blob=False,
                              report_multiple_bugs=False, phases=(Phase.explicit, Phase.generate))
    settings.load_profile("minilm-grading")


def pytest_unconfigure(config):
    conn = boundary._CONNECTION
    if conn is not None:
        conn.kill()
        _log({"event": "output", "text": conn.output.text(), "bytes": conn.output.total})
    sandbox.kill_orphans()


def pytest_sessionstart(session):
    if boundary.grading():  # the worker's imports overlap the collection of the tests
        boundary.connection().start(wait=False)


def pytest_collection_finish(session):
    for item in session.items:
        marker = item.get_closest_marker("points")
        points = float(marker.args[0]) if marker and marker.args else 1.0
        _log({"event": "collected", "nodeid": item.nodeid, "path": str(item.path), "points": points})


def pytest_collectreport(report):
    if report.failed:
        _log({"event": "collect_error", "nodeid": report.nodeid, "output": str(report.longrepr)[-6000:]})


def pytest_runtest_logstart(nodeid, location):
    _log({"event": "start", "nodeid": nodeid})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    conn = boundary.connection() if boundary.grading() else None
    if conn is not None:
        conn.deadline, conn.flags = time.monotonic() + TIMEOUT, []
    yield
    if conn is not None:
        conn.deadline = None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: sees the report as the other hooks left it
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    state = _state.setdefault(item.nodeid, {"outcome": "passed", "reason": "passed", "detail": "", "private": "",
                                            "duration": 0.0})
    state["duration"] += report.duration
    hidden = bool(HIDDEN) and str(item.path).startswith(HIDDEN)
    if report.failed and state["reason"] == "passed":
        reason, detail, private = _verdict(call.excinfo, report, hidden)
        where = "" if report.when == "call" else f" (in {report.when})"
        state.update(outcome="failed", reason=reason, detail=detail + where)
        state["private"] += f"[{report.when}] {report.longreprtext[-6000:]}\n{private}"
    elif report.skipped and state["reason"] == "passed":
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        state.update(outcome="failed", reason="skipped", detail=f"skipped ({_short(str(why), 160)}): skipped tests score 0")
    if report.when == "teardown":
        conn = boundary._CONNECTION
        flags = sorted(set(conn.flags)) if conn is not None else []
        if flags and state["outcome"] == "passed":
            state.update(outcome="failed", reason="used_reference",
                         detail=f"the submission called {', '.join(flags)}, which this test compares with")
        if flags:
            state["private"] += f"references called: {', '.join(flags)}\n"
        if conn is not None and conn.output.total:
            state["private"] += f"the submission's output so far: {conn.output.total} bytes\n"
        state = _state.pop(item.nodeid)
        state["duration"] = round(state["duration"], 3)
        _log({"event": "finish", "nodeid": item.nodeid, **state})


def _verdict(excinfo, report, hidden: bool) -> tuple[str, str, str]:
    """(reason code, student-visible detail, instructor-only text) for a failed phase. The student-visible
    part is composed here and never holds the submission's own text."""
    if excinfo is None:
        return "failed", "", ""
    e = excinfo.value
    found, seen = e, set()
    candidates = []
    while found is not None and id(found) not in seen:  # hypothesis and pytest may wrap the original
        seen.add(id(found))
        candidates.append(found)
        found = found.__cause__ or found.__context__
    candidates += list(getattr(e, "exceptions", ()))  # an ExceptionGroup from hypothesis
    for c in candidates:
        if isinstance(c, boundary.SubmissionError):
            return c.reason, "" if hidden else _short(c.detail, 300), c.private
    if hidden:
        return "wrong_answer", "", ""
    example = _falsifying(report)
    case = f"; failing case: {example}" if example else ""
    if isinstance(e, AssertionError) or type(e).__name__ == "Failed":
        return "wrong_answer", _short(str(e).split("\nassert ")[0], 400) + case, ""
    return "wrong_type", f"the answer could not be checked ({type(e).__name__}: {_short(str(e), 200)}){case}", ""


def _falsifying(report) -> str:
    """The example hypothesis says failed (`test(x=..., y=...)`), as it printed it, on one line."""
    text = report.longreprtext
    found = list(re.finditer(r"(?:Falsifying|Failing) (?:explicit )?(?:example|test case): ", text))
    if not found:
        return ""
    call = []
    for line in text[found[-1].end():].splitlines():
        line = line[4:] if line.startswith("E   ") else line
        call.append(line.strip())
        if line.strip() == ")" or (len(call) == 1 and line.rstrip().endswith(")")):
            break
    return _short(" ".join(call).replace("( ", "(").replace(", )", ")"), 300)


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."
