"""The grader's pytest plugin: a record of every test that survives a hang or a crash.

`minilm assignment grade` copies this file next to the run and loads it with `-p`, so it
imports nothing from the tree being graded (which may be broken, or a student's).

Design choices:
- Every collected test, every start and every result is appended to the file named by
  MINILM_GRADER_LOG as one JSON line, flushed at once. A test that hangs or kills the
  interpreter leaves a record of everything before it; the grader scores that test 0,
  and starts pytest again on the tests not yet run.
- Hypothesis runs derandomized and without its example database, so the same code gets
  the same grade on every run. It does not shrink a failing example either: shrinking costs
  seconds per failing test (tens of seconds when several functions fail differently), and
  a handout fails every test. `pytest` run by hand still shrinks, to show a minimal example.
- Points for instructors' hidden tests: `@pytest.mark.points(3)` (1 when absent).
"""
from __future__ import annotations

import json
import os

LOG = os.environ.get("MINILM_GRADER_LOG", "")
_state: dict[str, dict] = {}  # nodeid -> the outcome so far, over setup, call and teardown


def _log(event: dict) -> None:
    if LOG:
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
            f.flush()


def pytest_configure(config):
    config.addinivalue_line("markers", "points(n): points a hidden grading test is worth (default 1)")
    try:
        from hypothesis import Phase, settings
    except ImportError:
        return
    settings.register_profile("minilm-grading", database=None, derandomize=True, print_blob=False,
                              report_multiple_bugs=False, phases=(Phase.explicit, Phase.generate))
    settings.load_profile("minilm-grading")


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


def pytest_runtest_logreport(report):
    state = _state.setdefault(report.nodeid, {"outcome": "passed", "output": "", "duration": 0.0})
    state["duration"] += report.duration
    if report.failed:
        state["outcome"] = "failed"
        where = "" if report.when == "call" else f"(in {report.when}) "
        state["output"] += where + str(report.longrepr)[-6000:] + "\n"
    elif report.skipped and state["outcome"] == "passed":
        state["outcome"] = "skipped"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        state["output"] += str(reason) + "\n"
    if report.when == "teardown":
        state = _state.pop(report.nodeid)
        state["duration"] = round(state["duration"], 3)
        _log({"event": "finish", "nodeid": report.nodeid, **state})
