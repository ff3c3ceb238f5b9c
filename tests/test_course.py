"""`minilm course` and the lesson harness, on tiny stand-in lessons (the real ones are
exercised by test_lessons.py): ordering, reporting, failures and timeouts made visible."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilm.cli import main as minilm
from minilm.course.runner import find_lessons
from minilm.course.lesson import start

OK = '''
"""A lesson that works.

What you will learn: nothing."""
import matplotlib.pyplot as plt
from minilm.course.lesson import start

lesson = start(__file__)
lesson.record("accuracy", 0.8761, "{:.1%}", headline=True)
lesson.table("scores", "| a | b |\\n|---|---|\\n| 1 | 2 |")
fig, ax = plt.subplots()
ax.plot([0, 1], [1, 0])
lesson.save_figure(fig, "curve")
lesson.finish()
'''
FAILS = '''
"""A lesson that breaks half way."""
from minilm.course.lesson import start

lesson = start(__file__)
lesson.record("before the crash", 42)
raise RuntimeError("the data set is on fire")
'''
HANGS = '''
"""A lesson that never ends."""
import time
time.sleep(600)
'''


def write_lessons(folder, **lessons):
    folder.mkdir()
    for name, code in lessons.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(code))
    return folder


def test_course_reports_figures_pictures_and_failures(tmp_path, capsys):
    lessons = write_lessons(tmp_path / "lessons", **{"02_fails": FAILS, "01_works": OK, "notes": "x = 1"})
    runs = tmp_path / "runs"
    code = minilm(["course", "--mode", "smoke", "--lessons", str(lessons), "--runs", str(runs)])
    assert code == 1, "a failing lesson must make the course fail"
    report = (runs / "course" / "REPORT.md").read_text()
    # Both lessons, in numeric order, with their status; the non-lesson file is ignored.
    assert report.index("| 01_works | A lesson that works. | ok |") < report.index("| 02_fails |")
    assert "FAILED (exit 1)" in report and "the data set is on fire" in report
    assert "notes" not in report
    assert "| accuracy | 87.6% |" in report and "| before the crash | 42 |" in report
    assert report.index("## Headline figures") < report.index("## 01_works")
    assert "| 01_works | accuracy | 87.6% |" in report and "**scores**\n\n| a | b |" in report
    assert "![curve.png](../lessons/01_works/curve.png)" in report
    assert (runs / "lessons" / "01_works" / "curve.png").exists()
    assert "the data set is on fire" in (runs / "course" / "logs" / "02_fails.log").read_text()
    assert "1/2 lessons ok" in capsys.readouterr().out
    # Rerunning one lesson keeps the other's last result in the report.
    code = minilm(["course", "--mode", "smoke", "--lessons", str(lessons), "--runs", str(runs), "--only", "01"])
    report = (runs / "course" / "REPORT.md").read_text()
    assert code == 0 and "| 01_works | A lesson that works. | ok |" in report and "FAILED (exit 1)" in report


def test_course_stops_a_hung_lesson_and_ignores_stale_results(tmp_path):
    lessons = write_lessons(tmp_path / "lessons", **{"01_hangs": HANGS})
    runs = tmp_path / "runs"
    stale = runs / "lessons" / "01_hangs"
    stale.mkdir(parents=True)
    (stale / "results.json").write_text(json.dumps({"figures": {"stale figure": 1}, "pictures": []}))
    code = minilm(["course", "--lessons", str(lessons), "--runs", str(runs), "--timeout", "3"])
    report = (runs / "course" / "REPORT.md").read_text()
    assert code == 1 and "TIMED OUT" in report and "stale figure" not in report


def test_course_rejects_bad_options(tmp_path, capsys):
    lessons = write_lessons(tmp_path / "lessons", **{"01_works": OK})
    with pytest.raises(ValueError, match="--only"):
        find_lessons(lessons, ["07"])
    with pytest.raises(FileNotFoundError, match="--lessons"):
        find_lessons(tmp_path / "nowhere")
    assert minilm(["course", "--lessons", str(lessons), "--timeout", "0"]) == 2  # one line, no traceback
    assert capsys.readouterr().err.startswith("minilm: error: --timeout")
    assert [p.stem for p in find_lessons(lessons, ["01"])] == ["01_works"]


def test_lesson_harness_modes_and_results(tmp_path, capsys):
    path = tmp_path / "05_demo.py"
    path.write_text('"""Demo title.\n\nMore."""\n')
    lesson = start(str(path), ["--out", str(tmp_path / "out")])
    assert lesson.mode == "quick" and lesson.quick and lesson.title == "Demo title."
    assert lesson.pick(smoke=1, quick=2, full=3) == 2
    lesson = start(str(path), ["--smoke", "--seed", "3", "--out", str(tmp_path / "out")])
    assert lesson.smoke and lesson.seed == 3 and lesson.pick(smoke=1, quick=2, full=3) == 1
    lesson.record("loss", 1.23456, "{:.2f}")
    lesson.finish()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["figures"] == {"loss": "1.23"} and results["seconds"] is not None
    with pytest.raises(SystemExit):
        start(str(path), ["--smoke", "--full"])  # modes are exclusive
    assert "not allowed with argument" in capsys.readouterr().err


def test_shared_checkpoint_falls_back_to_a_cached_cpu_pretraining(tmp_path, monkeypatch):
    """Without the committed checkpoint, lessons 05-09 pretrain once with `minilm pretrain` and reuse it."""
    import minilm.course.lesson as harness
    from minilm.train.checkpoint import load_model

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"review {i}: the film was {'good' if i % 2 else 'bad'} and the cast was fine."
                              for i in range(200)))
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(harness, "PRETRAINED_DIR", tmp_path / "no-such-asset")
    monkeypatch.setattr(harness, "FALLBACK_PRETRAIN", dict(
        preset="bert-tiny", data=str(text), vocab_size=300, seq_len=16, batch_size=4, steps=2, warmup=1, eval_rows=4,
        progress=False))
    (tmp_path / "06_x.py").write_text('"""A lesson that fine-tunes."""\n')
    lesson = start(str(tmp_path / "06_x.py"), ["--out", str(tmp_path / "out")])
    path, where = harness.pretrained_checkpoint(lesson)
    assert path == tmp_path / "cache" / "lessons" / "pretrained-bert-mini" / "final" and "CPU pretraining" in where
    assert "--vocab-size 300" in where and "--no-progress" in where  # the command that made it, as flags
    model, tokenizer = load_model(path)
    assert type(model).__name__ == "MaskedLM" and tokenizer.vocab_size == 300

    def no_second_pretraining(recipe, **_):
        raise AssertionError(f"pretrained again: {recipe}")

    monkeypatch.setattr(harness, "pretrain", no_second_pretraining)
    assert harness.pretrained_checkpoint(lesson)[0] == path  # cached: no second pretraining


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(numbers=st.sets(st.integers(0, 30), min_size=1, max_size=8), asked=st.integers(0, 30),
       spelling=st.sampled_from(["{}", "{:02d}", "{:03d}"]))
def test_only_names_a_lesson_by_its_number_never_by_a_prefix(tmp_path_factory, numbers, asked, spelling):
    folder = tmp_path_factory.mktemp("lessons")
    for n in numbers:
        (folder / f"{n:02d}_lesson.py").write_text("")
    item = spelling.format(asked)
    if asked in numbers:
        assert [p.stem for p in find_lessons(folder, [item])] == [f"{asked:02d}_lesson"]
    else:
        with pytest.raises(ValueError, match=f"--only {item} matches no lesson"):
            find_lessons(folder, [item])


def test_only_1_runs_lesson_01_and_not_10_to_12(tmp_path, capsys):
    lessons = write_lessons(tmp_path / "lessons", **{f"{n:02d}_lesson": OK for n in (1, 10, 11, 12)})
    assert minilm(["course", "--mode", "smoke", "--lessons", str(lessons), "--runs", str(tmp_path / "runs"),
                   "--only", "1"]) == 0
    assert "1 lessons in --smoke mode" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs" / "lessons").iterdir()) == ["01_lesson"]


STARTS_AND_WAITS = '''
"""A lesson that starts a helper process and waits, as a long training run would."""
import os, subprocess, sys, time
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["PIDS"] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {helper.pid}")
os.replace(os.environ["PIDS"] + ".tmp", os.environ["PIDS"])
print("waiting", flush=True)
time.sleep(600)
'''


def _state(pid: int) -> str:
    """The process's state letter (R, S, Z for a zombie, ...), or "" when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_ctrl_c_ends_the_course_at_once_with_the_report_of_what_ran(tmp_path):
    lessons = write_lessons(tmp_path / "lessons", **{"01_works": OK, "02_waits": STARTS_AND_WAITS,
                                                     "03_never": OK})
    runs, pids = tmp_path / "runs", tmp_path / "pids"
    # As a terminal does: the course in a process group of its own, Ctrl-C sent to that whole group.
    course = subprocess.Popen([sys.executable, "-m", "minilm", "course", "--mode", "smoke", "--lessons", str(lessons),
                               "--runs", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PIDS": str(pids)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not pids.exists() and course.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pids.exists(), course.communicate()[0]
        lesson, helper = map(int, pids.read_text().split())
        os.killpg(course.pid, signal.SIGINT)
        out, _ = course.communicate(timeout=60)  # before: waited for the lesson's 1,800 s watchdog
    finally:
        if course.poll() is None:
            os.killpg(course.pid, signal.SIGKILL)
            course.wait()
    assert course.returncode == 130, out
    assert "[course] interrupted (Ctrl-C): 1/2 lessons ok" in out
    assert _state(lesson) in ("", "X")  # the lesson ended and the course reaped it: not even a zombie
    assert _state(helper) in ("", "X", "Z")  # what it started ended too (reaping it is its new parent's job)
    report = (runs / "course" / "REPORT.md").read_text()
    assert "| 01_works | A lesson that works. | ok |" in report and "| 02_waits |" in report
    assert "INTERRUPTED" in report and "03_never" not in report
