"""`minilm assignment list | build | grade`: handouts cut from the library, and the autograder (minilm.course)."""
from __future__ import annotations

from pathlib import Path

from minilm.course.assignment import HANDOUT, REPO, build, grade, scan
from minilm.course.catalog import ASSIGNMENTS


def points_table(results: dict) -> str:
    width = max([len(t["name"]) for t in results["tests"]] + [4])
    rows = [f"{'test':<{width}}  {'result':<8}  points"]
    for t in results["tests"]:
        rows.append(f"{t['name']:<{width}}  {t['status']:<8}  {t['score']:g} / {t['max_score']:g}")
    rows.append(f"{'total':<{width}}  {'':<8}  {results['score']:g} / {results['max_score']:g}")
    return "\n".join(rows)


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="one line per assignment: name, title, points, the files a student edits")
    b = sub.add_parser("build", help="write a student's copy of the repository with one assignment hollowed")
    b.add_argument("name")
    b.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    g = sub.add_parser("grade", help="run an assignment's tests against a tree; points table and Gradescope JSON")
    g.add_argument("name")
    g.add_argument("--dir", type=Path, default=Path("."), help="the tree to grade (default: this folder)")
    g.add_argument("--json", type=Path, default=None, help="write Gradescope's results.json here")
    g.add_argument("--hidden-tests", type=Path, default=None, help="a folder of instructor-only test_*.py files")
    g.add_argument("--timeout", type=float, default=300.0, help="seconds one test may run (default 300)")


def run(args) -> int:
    if args.action == "list":
        regions = scan(REPO)
        for a in ASSIGNMENTS:
            files = sorted({r.path for r in regions if r.name == a.name})
            print(f"{a.number}. {a.name:<10} {a.title} ({a.points:g} points, {a.hours} h): "
                  f"{', '.join(files) or '(no marked regions)'}")
        return 0
    if args.action == "build":
        files = build(args.name, args.out)
        print(f"wrote the handout of assignment {args.name} into {args.out} ({len(files)} files); "
              f"give students the folder, and read {args.out / HANDOUT} first")
        return 0
    results = grade(args.name, args.dir, hidden=args.hidden_tests, timeout=args.timeout, json_path=args.json)
    print(points_table(results))
    print(results["output"] + (f"; results in {args.json}" if args.json else ""))
    return 0
