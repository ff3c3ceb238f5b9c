"""The red team: each trick of tests/red_team.py, graded through the real `minilm assignment grade`, scores
what it deserves (0, or the points of what it wrote honestly), never more, and leaves nothing behind.

As root (where the grader runs on Gradescope) every trick is graded behind the walls. As an ordinary
user the tricks that do not need a private view of the filesystem are graded again, with user
namespaces and with none at all (no `unshare` on the PATH): the verdict stays outside either way.
Reading the instructor's files is stopped only by the walls; the isolation line says so.
"""
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from red_team import NOBODY, TRICKS, grade_trick, leaves_processes, user_python  # noqa: E402

from minilm.course import sandbox  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10  # seconds per test: the honest bpe tests need well under one
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif((ROOT / "HANDOUT.md").exists(), reason="grades the solution tree; this is a handout")]
walled = pytest.mark.skipif(os.geteuid() != 0 or sandbox.probe().mode != "root",
                            reason="needs root with util-linux unshare, as on Gradescope")
# Tricks an ordinary user's grader must still score right: everything but reading the instructor's files.
WITHOUT_WALLS = ["honest", "half done", "1 forge the record", "5 edit the tests", "8 bring a conftest",
                 "9 crash the grader", "infinite loop"]


def grade_all(tricks, prefix=(), env=None, python=None) -> dict:
    base = Path(tempfile.mkdtemp(prefix="minilm-red-team-"))  # not pytest's tmp_path: nobody must reach it
    os.chmod(base, 0o777)
    try:
        def one(item):
            i, trick = item
            return trick.name, grade_trick(trick, base / f"w{i}", timeout=TIMEOUT, prefix=prefix, env=env,
                                           python=python)
        # A trick that leaves processes behind is graded alone: the check for leftovers looks at every process
        # on the machine, so a fork bomb still being graded would be blamed on its neighbour.
        leaves = [(i, t) for i, t in enumerate(tricks) if leaves_processes(t)]
        rest = [(i, t) for i, t in enumerate(tricks) if not leaves_processes(t)]
        with ThreadPoolExecutor(2) as pool:
            outcomes = dict(pool.map(one, rest))
        outcomes.update(map(one, leaves))
        return outcomes
    finally:
        shutil.rmtree(base, ignore_errors=True)


def check(trick, outcome):
    assert outcome.score is not None, f"{trick.name}: no results.json ({outcome.notes})"
    assert outcome.score <= trick.deserved, f"{trick.name}: {outcome.score} points, deserves {trick.deserved}"
    assert outcome.score == trick.deserved, f"{trick.name}: {outcome.score}, deserves {trick.deserved}: " \
                                            f"{[(t['name'], t['tags']) for t in outcome.results['tests']]}"
    assert outcome.max_score == (24 if trick.hidden else 20), "the maximum is the manifest's, whatever ran"
    assert not outcome.notes, f"{trick.name}: {outcome.notes}"


@pytest.fixture(scope="module")
def as_root():
    return grade_all(TRICKS)


@walled
@pytest.mark.parametrize("trick", TRICKS, ids=[t.name for t in TRICKS])
def test_behind_the_walls_a_trick_scores_what_it_deserves(trick, as_root):
    check(trick, as_root[trick.name])


CHOSEN = [t for t in TRICKS if t.name in WITHOUT_WALLS]
PYTHON = user_python()  # an ordinary user's own Python, with these packages
as_user = pytest.mark.skipif(PYTHON is None, reason="no system Python of this version for an ordinary user to run")


@pytest.fixture(scope="module")
def as_a_user():
    return grade_all(CHOSEN, NOBODY, {**os.environ, "PYTHONPATH": str(ROOT), "HOME": tempfile.gettempdir()}, PYTHON)


@pytest.fixture(scope="module")
def without_namespaces():
    return grade_all(CHOSEN, NOBODY, {**os.environ, "PYTHONPATH": str(ROOT), "HOME": tempfile.gettempdir(),
                                      "PATH": "/nonexistent"}, PYTHON)  # no unshare: a machine without namespaces


@walled
@as_user
@pytest.mark.parametrize("trick", CHOSEN, ids=[t.name for t in CHOSEN])
def test_as_an_ordinary_user_a_trick_scores_what_it_deserves(trick, as_a_user):
    outcome = as_a_user[trick.name]
    check(trick, outcome)
    assert "isolation: not root (nobody): no separate uid" in outcome.stdout


@walled
@as_user
@pytest.mark.parametrize("trick", CHOSEN, ids=[t.name for t in CHOSEN])
def test_without_namespaces_a_trick_still_scores_what_it_deserves(trick, without_namespaces):
    outcome = without_namespaces[trick.name]
    check(trick, outcome)
    assert "no user namespaces" in outcome.stdout
