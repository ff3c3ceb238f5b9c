"""The pytest hook that keeps a handout's suite readable (loaded by tests/conftest.py).

In a handout the functions of its assignment, and of every assignment after it, raise
`NotImplementedError("assignment NAME: ...")`. The handout's own graded tests must fail there
(that is the homework), but every other test that merely *uses* a hollowed function (a model
test that needs attention, a lesson's smoke run, a later assignment's graded tests) is
skipped with a reason naming the assignment, so the rest of the suite still passes or skips.
Which assignment is the handout's own is read from the first line of its HANDOUT.md; without
one (the solution tree) the hook does nothing. The grader sets MINILM_GRADING=1,
which turns the conversion off: under grading an unfinished function is a failure.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import pytest

from minilm.course.catalog import by_name, matches, unfinished_assignment

ROOT = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def own_assignment() -> str | None:
    """The assignment this handout is for (None in the solution tree)."""
    try:
        first = (ROOT / "HANDOUT.md").read_text(encoding="utf-8").split("\n", 1)[0]
    except OSError:
        return None
    found = re.match(r"<!-- minilm handout: ([a-z][a-z0-9_-]*) -->", first)
    return found.group(1) if found else None


def _graded_by(nodeid: str, name: str) -> bool:
    assignment = by_name().get(name)
    return assignment is not None and any(matches(nodeid, t.selector) for t in assignment.tests)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None or os.environ.get("MINILM_GRADING") or own_assignment() is None:
        return  # passing, graded, or the solution tree (where nothing is hollowed): a failure stays a failure
    name = unfinished_assignment(call.excinfo.value)
    if name is None or (_graded_by(item.nodeid, name) and name == own_assignment()):
        return
    later = name != own_assignment()
    report.outcome = "skipped"
    report.longrepr = (str(item.path), (item.location[1] or 0) + 1,
                       f"Skipped: needs assignment {name}, which "
                       + ("comes later in the course" if later else "is not done yet (see HANDOUT.md)"))
