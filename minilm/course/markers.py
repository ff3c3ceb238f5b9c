"""Solution markers: the regions of the library's source that a handout hollows out.

A solution is a region of a function body between two comment lines that name their
assignment, `# BEGIN SOLUTION masking` and `# END SOLUTION masking`. The signature and the
contract docstring stay; in a handout the region becomes one
`raise NotImplementedError("assignment masking: implement ...")`. The solutions are the
library's real, tested code, so a handout can never drift from its solution.

Design choices:
- Markers are checked strictly (balanced, named after a known assignment, inside a function
  body, after its docstring, not nested) and every error is one line naming file and line.
  tests/test_assignment.py scans the source with the same code, so broken markers cannot land.
- The files a student edits for an assignment are exactly the files holding its regions
  (`editable_files`): the grader takes those, and only those, from a submission.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from minilm.course.catalog import Assignment, by_name

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("minilm", "lessons")  # where markers may live (not tests/: they are the contract)
HANDOUT = "HANDOUT.md"
SKIP_PARTS = {".git", "__pycache__", "runs", ".hypothesis", ".pytest_cache", "build", "dist", ".venv",
              ".ci-venv", ".whl", ".carry"}
MARKER = re.compile(r"^(?P<indent>[ \t]*)# (?P<kind>BEGIN|END) SOLUTION(?: (?P<name>\S+))?[ \t]*$")
LOOSE = re.compile(r"^[ \t]*#+[ \t]*(BEGIN|END)[ \t_-]*SOLUTION", re.IGNORECASE)  # near misses are errors too


class AssignmentError(ValueError):
    """A one-line error about an assignment, a marker, a folder or a grading run."""


def get(name: str) -> Assignment:
    table = by_name()
    if name not in table:
        raise AssignmentError(f"assignment {name!r} is unknown; known assignments: {', '.join(table)}")
    return table[name]


@dataclass(frozen=True)
class Region:
    """One marked solution region: lines begin..end (1-based, the marker lines included)."""

    path: str  # relative to the repository root, with forward slashes
    name: str
    begin: int
    end: int
    indent: str
    function: str  # qualified name of the enclosing function, e.g. "Linear.backward"
    whole_body: bool  # the region is everything after the docstring


def _functions(tree: ast.AST):
    """(qualname, node) for every function, nested ones included."""
    stack = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                stack.append((prefix + child.name + ".", child))
            elif isinstance(child, ast.ClassDef):
                stack.append((prefix + child.name + ".", child))


def _header_end(node) -> int:
    """The last line before a function's body proper: its docstring's last line, or else its signature's."""
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].end_lineno
    parts = [node.returns, *node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
             node.args.vararg, node.args.kwarg]
    return max([node.lineno] + [p.end_lineno for p in parts if p is not None])


def _extent(lines: list[str], node) -> int:
    """The last line of a function, counting the comment lines that close its body (an END marker
    after the final statement is not part of the syntax tree)."""
    end = node.end_lineno
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped and not (stripped.startswith("#") and indent > node.col_offset):
            break
        end += 1
    while end > node.end_lineno and not lines[end - 1].strip():
        end -= 1  # trailing blank lines belong to no one
    return end


def scan_text(path: str, text: str, known: set[str] | None = None) -> list[Region]:
    """The marked regions of one Python file; AssignmentError (one line, with file:line) if a marker is broken."""
    known = set(by_name()) if known is None else known
    lines = text.splitlines()
    marks = []
    for number, line in enumerate(lines, 1):
        m = MARKER.match(line)
        if m is None:
            if LOOSE.match(line):
                raise AssignmentError(f"{path}:{number}: malformed solution marker {line.strip()!r}; "
                                      f"write '# BEGIN SOLUTION <name>' or '# END SOLUTION <name>'")
            continue
        name = m.group("name")
        if not name:
            raise AssignmentError(f"{path}:{number}: '# {m.group('kind')} SOLUTION' names no assignment; "
                                  f"write '# {m.group('kind')} SOLUTION <name>' with one of {sorted(known)}")
        if name not in known:
            raise AssignmentError(f"{path}:{number}: marker names assignment {name!r}, which is not in "
                                  f"minilm/course/catalog.py; known: {sorted(known)}")
        marks.append((number, m.group("kind"), name, m.group("indent")))
    if not marks:
        return []
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise AssignmentError(f"{path}:{e.lineno}: cannot parse the file to place its solution markers ({e.msg})")
    functions = list(_functions(tree))
    regions, open_mark = [], None
    for number, kind, name, indent in marks:
        if kind == "BEGIN":
            if open_mark is not None:
                raise AssignmentError(f"{path}:{number}: BEGIN SOLUTION {name} inside the region opened at line "
                                      f"{open_mark[0]} (regions do not nest)")
            open_mark = (number, name, indent)
            continue
        if open_mark is None:
            raise AssignmentError(f"{path}:{number}: END SOLUTION {name} without a BEGIN SOLUTION before it")
        begin, begin_name, begin_indent = open_mark
        open_mark = None
        if name != begin_name:
            raise AssignmentError(f"{path}:{number}: END SOLUTION {name} closes BEGIN SOLUTION {begin_name} "
                                  f"of line {begin}; the names must match")
        if indent != begin_indent:
            raise AssignmentError(f"{path}:{number}: END SOLUTION {name} is indented differently from its "
                                  f"BEGIN at line {begin}")
        inside = [(q, f) for q, f in functions if f.lineno < begin and number <= _extent(lines, f)]
        if not inside:
            raise AssignmentError(f"{path}:{begin}: solution region {name} is not inside a function body")
        qualname, function = max(inside, key=lambda qf: qf[1].lineno)  # the innermost function
        start = _header_end(function) + 1
        if begin < start:
            raise AssignmentError(f"{path}:{begin}: solution region {name} starts before the body of "
                                  f"{qualname} (the signature and docstring stay in the handout)")
        body = [ln for ln in lines[begin:number - 1] if ln.strip() and not ln.strip().startswith("#")]
        if not body:
            raise AssignmentError(f"{path}:{begin}: solution region {name} in {qualname} holds no code")
        if any(not ln.startswith(indent) for ln in body):
            raise AssignmentError(f"{path}:{begin}: a line of solution region {name} is indented less than "
                                  f"its markers")
        before = [ln for ln in lines[start - 1:begin - 1] if ln.strip() and not ln.strip().startswith("#")]
        after = [ln for ln in lines[number:_extent(lines, function)] if ln.strip() and not ln.strip().startswith("#")]
        regions.append(Region(path, name, begin, number, indent, qualname, whole_body=not before and not after))
    if open_mark is not None:
        raise AssignmentError(f"{path}:{open_mark[0]}: BEGIN SOLUTION {open_mark[1]} is never closed "
                              f"(no END SOLUTION {open_mark[1]})")
    return regions


def source_files(root: Path) -> list[str]:
    """The repository's files (relative, sorted): what git tracks plus new files it does not ignore;
    without git, a walk that skips runs, caches and build output. A folder holding a HANDOUT.md
    (a handout built inside the tree) is left out with everything in it."""
    root = Path(root).resolve()
    names: list[str] = []
    if (root / ".git").exists() and shutil.which("git"):
        listing = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                  "--exclude-standard"], capture_output=True, check=False)
        if listing.returncode == 0:
            names = [n for n in listing.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    if not names:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_PARTS and not d.endswith(".egg-info")]
            for f in filenames:
                if not f.endswith((".pyc", ".pyo")):
                    names.append(Path(dirpath, f).relative_to(root).as_posix())
    handouts = {str(Path(n).parent) for n in names if Path(n).name == HANDOUT and "/" in n}
    handouts |= {d for d in {str(Path(n).parent) for n in names if "/" in n} if (root / d / HANDOUT).is_file()}
    keep = set()
    for name in names:
        parts = Path(name).parts
        if any(p in SKIP_PARTS or p.endswith(".egg-info") for p in parts) or name.endswith((".pyc", ".pyo")):
            continue
        if any(name.startswith(h + "/") for h in handouts):
            continue  # another handout, built inside the tree: never copied into this one
        path = root / name
        if not path.is_file() or path.is_symlink():
            continue  # deleted in the working tree, or a link
        keep.add(Path(name).as_posix())
    return sorted(keep)

def scan(root: Path = REPO, files: list[str] | None = None) -> list[Region]:
    """Every marked region under the source folders of `root` (markers checked strictly)."""
    root = Path(root)
    files = source_files(root) if files is None else files
    known = set(by_name())
    regions = []
    for name in files:
        if name.endswith(".py") and name.split("/")[0] in SOURCE_DIRS:
            regions += scan_text(name, (root / name).read_text(encoding="utf-8"), known)
    return regions


def _stub(region: Region) -> str:
    what = region.function if region.whole_body else f"the marked part of {region.function}"
    return (f'{region.indent}raise NotImplementedError("assignment {region.name}: implement {what} '
            f'({region.path}); see HANDOUT.md")')


def hollow(text: str, regions: list[Region], names) -> str:
    """`text` with the regions of the assignments in `names` (one name or several) replaced by a raise,
    and every other marker line removed."""
    names = {names} if isinstance(names, str) else set(names)
    lines = text.splitlines(keepends=True)
    newline = "\n"
    out, i = [], 0
    by_begin = {r.begin: r for r in regions}
    while i < len(lines):
        number = i + 1
        region = by_begin.get(number)
        if region is not None and region.name in names:
            out.append(_stub(region) + newline)
            i = region.end  # skip to the line after END
            continue
        if region is not None or any(r.end == number for r in regions):
            i += 1  # a marker of another assignment: dropped, its code stays
            continue
        out.append(lines[i])
        i += 1
    return "".join(out)

def editable_files(name: str, root: Path = REPO) -> list[str]:
    """The files a student edits for assignment `name`: those holding its solution regions."""
    return sorted({r.path for r in scan(root) if r.name == name})
