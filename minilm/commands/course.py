"""`minilm course`: every lesson in order, one process each, then `runs/course/REPORT.md` (minilm.course.runner)."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from minilm.course.lesson import MODES, lesson_title
from minilm.course.runner import INTERRUPTED, LESSONS_DIR, find_lessons, load_runs, run_lesson, save_runs


def configure(parser):
    parser.add_argument("--mode", choices=MODES, default="quick",
                        help="quick: ~30 min on a 2-core CPU (default); full: real scale, for a GPU; smoke: seconds")
    parser.add_argument("--only", nargs="+", metavar="NN",
                        help="run only these lessons (numbers or names), e.g. --only 1 4")
    parser.add_argument("--lessons", type=Path, default=LESSONS_DIR, help="folder of lesson scripts")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where run folders and the report go")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before one lesson is stopped")


def run(args) -> int:
    if args.timeout <= 0:
        raise ValueError(f"--timeout {args.timeout} is invalid: expected a positive number of seconds")
    lessons = find_lessons(args.lessons, args.only)
    print(f"minilm course: {len(lessons)} lessons in --{args.mode} mode; report in "
          f"{shlex.quote(str(args.runs / 'course' / 'REPORT.md'))}")
    known = load_runs(args.runs, args.mode, find_lessons(args.lessons)) if args.only else {}
    done, t0 = [], time.perf_counter()
    try:
        for i, path in enumerate(lessons, 1):
            print(f"\n{'#' * 88}\n# [{i}/{len(lessons)}] {path.stem}: {lesson_title(path)}\n{'#' * 88}", flush=True)
            r = run_lesson(path, args.mode, args.runs, args.timeout)  # Ctrl-C: the lesson is stopped, r says so
            done.append(r)
            known[path.stem] = r
            print(f"\n[course] {path.stem}: {r.status} in {r.seconds:.0f} s ({r.cpu_seconds:.0f} s CPU)", flush=True)
            if r.returncode == INTERRUPTED:
                raise KeyboardInterrupt
            save_runs(known, args.mode, args.runs)  # a report even if stopped early
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    report = save_runs(known, args.mode, args.runs) if known else None
    print(f"\n[course] {'interrupted (Ctrl-C): ' if interrupted else ''}{sum(r.ok for r in done)}/{len(done)} "
          f"lessons ok in {(time.perf_counter() - t0) / 60:.1f} min; report: {shlex.quote(str(report))}", flush=True)
    for r in done:
        print(f"  {r.path.stem:<28} {r.status:<12} {r.seconds:6.0f} s wall {r.cpu_seconds:6.0f} s CPU")
    if interrupted:
        return 130
    return 0 if all(r.ok for r in done) else 1
