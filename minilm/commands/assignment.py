"""`minilm assignment list | build | grade | package`: handouts cut from the library, the autograder, and
its Gradescope upload (minilm.course)."""
from __future__ import annotations

from pathlib import Path

from minilm.course.catalog import ASSIGNMENTS
from minilm.course.grading import grade
from minilm.course.handout import build
from minilm.course.markers import HANDOUT, REPO, scan
from minilm.course.packaging import package


def points_table(results: dict) -> str:
    width = max([len(t["name"]) for t in results["tests"]] + [4])
    rows = [f"{'test':<{width}}  {'result':<8}  points"]
    for t in results["tests"]:
        why = "" if t["status"] == "passed" else f"  {t['tags'][-1]}"
        rows.append(f"{t['name']:<{width}}  {t['status']:<8}  {t['score']:g} / {t['max_score']:g}{why}")
    rows.append(f"{'total':<{width}}  {'':<8}  {results['score']:g} / {results['extra_data']['max_score']:g}")
    return "\n".join(rows)


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="one line per assignment: name, title, points, the files a student edits")
    b = sub.add_parser("build", help="write a student's copy of the repository with the assignment hollowed")
    b.add_argument("name")
    b.add_argument("--out", type=Path, required=True, help="a new or empty folder outside the repository")
    b.add_argument("--hollow-all", action="store_true",
                   help="hollow every assignment, not only this one and the ones after it")
    g = sub.add_parser("grade", help="grade a submission with the instructor's tests; points table and Gradescope JSON")
    g.add_argument("name")
    g.add_argument("--dir", type=Path, default=Path("."),
                   help="the submission: a handout folder, or just the files the assignment edits (default: here)")
    g.add_argument("--json", type=Path, default=None, help="write Gradescope's results.json here")
    g.add_argument("--hidden-tests", type=Path, default=None, help="a folder of instructor-only test_*.py files")
    g.add_argument("--timeout", type=float, default=300.0, help="seconds one test may run (default 300)")
    p = sub.add_parser("package", help="write the Gradescope autograder zip (setup.sh, run_autograder) for one assignment")
    p.add_argument("name")
    p.add_argument("--out", type=Path, required=True, help="the zip to write, e.g. autograder.zip")
    p.add_argument("--hidden-tests", type=Path, default=None, help="a folder of instructor-only test_*.py files to include")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one test may run (default 300)")


def run(args) -> int:
    if args.action == "list":
        regions = scan(REPO)
        for a in ASSIGNMENTS:
            files = sorted({r.path for r in regions if r.name == a.name})
            print(f"{a.number}. {a.name:<10} {a.title} ({a.points:g} points, {a.hours} h): "
                  f"{', '.join(files) or '(no marked regions)'}")
        return 0
    if args.action == "build":
        files = build(args.name, args.out, hollow_all=args.hollow_all)
        print(f"wrote the handout of assignment {args.name} into {args.out} ({len(files)} files); "
              f"give students the folder, and read {args.out / HANDOUT} first")
        return 0
    if args.action == "package":
        files = package(args.name, args.out, hidden=args.hidden_tests, timeout=args.timeout)
        print(f"wrote {args.out} ({len(files)} files): upload it as the autograder of assignment {args.name}")
        return 0
    details = []
    results = grade(args.name, args.dir, hidden=args.hidden_tests, timeout=args.timeout, json_path=args.json,
                    log=details.append)
    print(points_table(results))
    print(results["output"] + (f"; results in {args.json}" if args.json else ""))
    print(results["extra_data"]["isolation"])
    if details:  # on Gradescope this output is the instructor's only (stdout_visibility: hidden)
        print("\n".join(details))
    return 0
