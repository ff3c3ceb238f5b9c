"""`minilm course`: run every lesson in order and write `runs/course/REPORT.md`.

Design choices:
- Each lesson runs in its own process (`python lessons/NN_name.py --quick`), exactly as a
  student would run it, so one lesson's imports, threads or crash cannot touch the next.
- Output streams to the terminal and to `runs/course/logs/NN_name.log` at the same time.
- The report is built only from what the lessons wrote (`runs/lessons/NN_name/results.json`:
  key figures and pictures) plus the wall time measured here. A failing or timed-out lesson
  is reported with its exit code and the end of its log, the course goes on, and the
  command exits non-zero: a failure is never hidden.
- `--only 06` reruns one lesson and keeps the others' last results (same mode) in the report,
  from `runs/course/runs.json`, so fixing a lesson does not mean rerunning the course.
- A lesson runs in a process group of its own, so the course can end all of it (torchrun's
  workers too): at its timeout, and at Ctrl-C, which stops the lesson within seconds (SIGTERM,
  then SIGKILL), reaps it, and writes the report of what ran before the course exits.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minilm.store.atomic import atomic_write_text
from minilm.course.lesson import RESULTS_FILE, lesson_title

LESSONS_DIR = Path(__file__).resolve().parents[2] / "lessons"
RUNS_FILE = "runs.json"  # each lesson's last run: wall and CPU time, exit code, end of its log
TIMED_OUT, INTERRUPTED = -1, -2  # LessonRun.returncode of a lesson the course stopped
GRACE_S = 3.0  # after SIGTERM, how long a stopped lesson may take to exit before SIGKILL


@dataclass
class LessonRun:
    path: Path
    seconds: float
    cpu_seconds: float  # user + system CPU time of the lesson and its children: the load-independent cost
    returncode: int  # 0 ok; the exit code otherwise; TIMED_OUT or INTERRUPTED
    results: dict = field(default_factory=dict)
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def status(self) -> str:
        return {0: "ok", TIMED_OUT: "TIMED OUT", INTERRUPTED: "INTERRUPTED"}.get(
            self.returncode, f"FAILED (exit {self.returncode})")


def find_lessons(directory: Path, only: list[str] | None = None) -> list[Path]:
    """Lesson scripts `NN_name.py` in order; `only` keeps the lessons it names.

    An item of `only` is a lesson number (`1`, `01` and `001` all mean lesson 01, never 10-19)
    or the start of a lesson's name including its number (`05_masked`).
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"--lessons {directory} is not a folder of lesson scripts")
    lessons = sorted(p for p in directory.glob("[0-9][0-9]_*.py"))
    if only:
        def named(path: Path, item: str) -> bool:
            return int(item) == int(path.stem[:2]) if item.isdigit() else path.stem.startswith(item)

        missing = [o for o in only if not any(named(p, o) for p in lessons)]
        if missing:
            raise ValueError(f"--only {' '.join(missing)} matches no lesson in {directory} (give lesson numbers, "
                             f"e.g. --only 1 4, or names, e.g. --only 05_masked_lm)")
        lessons = [p for p in lessons if any(named(p, o) for o in only)]
    return lessons


def run_lesson(path: Path, mode: str, runs: Path, timeout: float) -> LessonRun:
    """Run one lesson script in a fresh process, streaming and logging its output."""
    out = runs / "lessons" / path.stem
    (out / RESULTS_FILE).unlink(missing_ok=True)  # never report a previous run's figures
    log_path = runs / "course" / "logs" / f"{path.stem}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(path), f"--{mode}", "--out", str(out)]
    # Passive OpenMP waiting: on a busy machine, torch's spinning threads otherwise burn the
    # very cores they wait for (measured: lessons/measurements/design_choices.md).
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONUNBUFFERED": "1"}
    t0, cpu0 = time.perf_counter(), _children_cpu()
    with open(log_path, "wb") as log:
        # Its own session and process group: Ctrl-C reaches the course, which ends the whole lesson.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        fired = threading.Event()
        watchdog = threading.Timer(timeout, lambda: (fired.set(), _stop(proc)))  # a hang must not stall the course
        watchdog.daemon = True  # never keeps the course alive
        watchdog.start()
        try:
            while chunk := proc.stdout.read1(4096):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                log.write(chunk)
            returncode = proc.wait()
            timed_out = fired.is_set() and returncode != 0
        except KeyboardInterrupt:
            _stop(proc)
            log.write(b"\n[course] interrupted (Ctrl-C): the lesson was stopped\n")
            returncode, timed_out = INTERRUPTED, False
        finally:
            watchdog.cancel()
            _stop(proc)  # whatever happened, no lesson process outlives this call
    if timed_out:
        returncode = TIMED_OUT
    seconds, cpu_seconds = time.perf_counter() - t0, _children_cpu() - cpu0
    results_path = out / RESULTS_FILE
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    tail = "\n".join(log_path.read_text(errors="replace").replace("\r", "\n").splitlines()[-25:])
    return LessonRun(path, seconds, cpu_seconds, returncode, results, tail)


def _stop(proc: subprocess.Popen) -> None:
    """End a running lesson and every process it started (its process group), then reap it: no zombie.

    SIGTERM first, SIGKILL after GRACE_S. The lesson is only reaped once its group is killed, so the
    group's id cannot have been reused by then.
    """
    if proc.returncode is not None:  # it ended by itself and was reaped
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and not os.waitid(os.P_PID, proc.pid,
                                                            os.WEXITED | os.WNOWAIT | os.WNOHANG):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # what is left: the lesson, or what it started (torchrun's workers)
    except (ProcessLookupError, ChildProcessError):
        pass
    proc.wait()


def _children_cpu() -> float:
    """CPU seconds used so far by finished child processes (and theirs, e.g. torchrun workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_report(runs_done: list[LessonRun], mode: str, runs: Path, total: float) -> Path:
    """Write runs/course/REPORT.md: a summary table, then each lesson's key figures and pictures."""
    report = runs / "course" / "REPORT.md"
    failed = [r for r in runs_done if not r.ok]
    lines = [
        "# minilm course report",
        "",
        f"Mode `--{mode}`; {len(runs_done)} lessons, {len(failed)} failed; total {total / 60:.1f} min.",
        f"Machine: {platform.machine()} CPU with {os.cpu_count()} logical cores; "
        f"{'CUDA: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; "
        f"Python {platform.python_version()}, torch {torch.__version__}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Time is wall-clock; CPU is the user + system CPU time of the lesson's processes (a machine",
        "shared with other work stretches the first far more than the second).",
        "",
        "| lesson | title | status | time | CPU |",
        "|---|---|---|---|---|",
    ]
    for r in runs_done:
        lines.append(f"| {r.path.stem} | {lesson_title(r.path)} | {r.status} | {_duration(r.seconds)} "
                     f"| {_duration(r.cpu_seconds)} |")
    headlines = [(r.path.stem, k, r.results["figures"][k]) for r in runs_done
                 for k in r.results.get("headlines", []) if k in r.results.get("figures", {})]
    if headlines:
        lines += ["", "## Headline figures", "", "| lesson | figure | value |", "|---|---|---|"]
        lines += [f"| {stem} | {k} | {v} |" for stem, k, v in headlines]
    for r in runs_done:
        lines += ["", f"## {r.path.stem}: {lesson_title(r.path)}", ""]
        if not r.ok:
            lines += [f"**This lesson did not finish: {r.status}**; the end of its log "
                      f"(`course/logs/{r.path.stem}.log`):", "", "```", r.log_tail, "```", ""]
        figures = r.results.get("figures", {})
        if figures:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in figures.items()]
            lines.append("")
        for title, table in r.results.get("tables", {}).items():
            lines += [f"**{title}**", "", table, ""]
        for picture in r.results.get("pictures", []):
            lines += [f"![{picture}](../lessons/{r.path.stem}/{picture})", ""]
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def save_runs(known: dict, mode: str, runs: Path) -> Path:
    """Write runs/course/runs.json (what each lesson's last run cost) and the report over all of them."""
    ordered = [known[k] for k in sorted(known)]
    data = {"mode": mode, "lessons": {r.path.stem: {"path": str(r.path), "seconds": r.seconds,
                                                         "cpu_seconds": r.cpu_seconds, "returncode": r.returncode,
                                                         "log_tail": r.log_tail} for r in ordered}}
    atomic_write_text(runs / "course" / RUNS_FILE, json.dumps(data, indent=2) + "\n")  # --only reads it back
    return write_report(ordered, mode, runs, sum(r.seconds for r in ordered))


def load_runs(runs: Path, mode: str, lessons: list[Path]) -> dict:
    """With --only, the other lessons' last runs (same mode) stay in the report: {stem: LessonRun}."""
    path = runs / "course" / RUNS_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("mode") != mode:
        return {}
    out = {}
    for lesson in lessons:
        entry = data["lessons"].get(lesson.stem)
        results_path = runs / "lessons" / lesson.stem / RESULTS_FILE
        if entry is not None:
            results = json.loads(results_path.read_text()) if results_path.exists() else {}
            out[lesson.stem] = LessonRun(lesson, entry["seconds"], entry["cpu_seconds"], entry["returncode"], results,
                                         entry["log_tail"])
    return out
