"""Every lesson present runs end to end in --smoke mode and reports what it measured, and is built
from section functions that main calls in order.

Lessons are imported and their `main(argv)` called in this process (no new interpreter per
lesson), so the whole file costs seconds per lesson.
"""
import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from minilm.course.lesson import lesson_title

LESSONS = sorted((Path(__file__).resolve().parent.parent / "lessons").glob("[0-9][0-9]_*.py"))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"lesson_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_course_has_lessons():
    assert len(LESSONS) >= 2, "the lessons folder should hold the numbered lessons"
    numbers = [p.name[:2] for p in LESSONS]
    assert len(set(numbers)) == len(numbers), f"two lessons share a number: {numbers}"


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_smoke(path, tmp_path):
    text = path.read_text(encoding="utf-8")
    assert "What you will learn" in text.split('"""')[1], f"{path.name}: docstring must list what is learned"
    module = _load(path)
    threads = torch.get_num_threads()
    try:
        module.main(["--smoke", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)  # a lesson may pin threads; do not leak that into other tests
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "smoke" and results["title"] == lesson_title(path)
    assert results["seconds"] is not None, "the lesson did not call lesson.finish()"
    assert results["figures"] or results["pictures"], "a lesson must record key figures or pictures"
    for picture in results["pictures"]:
        assert (tmp_path / picture).stat().st_size > 1000, f"{picture} is empty"


# Lessons whose sections are still inline in main (their owners are reshaping them).
NOT_YET_IN_SECTIONS = {"01_neural_networks", "06_sentiment"}


def _section_functions(path: Path) -> tuple[list[ast.FunctionDef], ast.FunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    return [f for name, f in functions.items() if re.fullmatch(r"section_\d+_\w+", name)], functions["main"]


def _heading(call: ast.Call) -> str:
    """The constant start of a `lesson.section(...)` heading (a plain or an f-string)."""
    arg = call.args[0]
    if isinstance(arg, ast.BinOp):  # "4. Checked" + (...)
        arg = arg.left
    if isinstance(arg, ast.JoinedStr):
        arg = arg.values[0]
    return arg.value if isinstance(arg, ast.Constant) else ""


def _section_calls(node) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "section"]


@pytest.mark.parametrize("path", [p for p in LESSONS if p.stem not in NOT_YET_IN_SECTIONS],
                         ids=[p.stem for p in LESSONS if p.stem not in NOT_YET_IN_SECTIONS])
def test_each_section_is_a_function_called_in_order(path):
    """`section_N_name(lesson, ...)` opens part N, main calls them 1, 2, 3... in order, and no part of the
    lesson is left inline in main: so a section can be run, read or assigned alone."""
    sections, main = _section_functions(path)
    numbers = [int(f.name.split("_")[1]) for f in sections]
    assert numbers == list(range(1, len(numbers) + 1)), f"{path.name}: sections numbered {numbers}"
    assert not _section_calls(main), f"{path.name}: main opens a section itself; move it into a section function"
    for f in sections:
        assert f.args.args and f.args.args[0].arg == "lesson", f"{path.name}: {f.name} must take the lesson first"
        assert ast.get_docstring(f), f"{path.name}: {f.name} needs a docstring saying what it shows"
        headings = [_heading(c) for c in _section_calls(f)]
        assert len(headings) == 1 and headings[0].startswith(f"{f.name.split('_')[1]}. "), \
            f"{path.name}: {f.name} must open exactly one section, numbered like itself: {headings}"
    called = [n.func.id for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
              and n.func.id.startswith("section_")]
    assert called == [f.name for f in sections], f"{path.name}: main calls {called}"


def _first_standalone(path: Path) -> str | None:
    """The first section that needs nothing but the lesson (no earlier section's results)."""
    return next((f.name for f in _section_functions(path)[0] if [a.arg for a in f.args.args] == ["lesson"]), None)


ALONE = [p for p in LESSONS if p.stem not in NOT_YET_IN_SECTIONS and _first_standalone(p)]


@pytest.mark.parametrize("path", ALONE, ids=[p.stem for p in ALONE])
def test_a_section_runs_alone(path, tmp_path, capsys):
    """A section that takes only the lesson runs by itself and prints its own heading."""
    from minilm.course.lesson import start

    module, name = _load(path), _first_standalone(path)
    lesson = start(str(path), ["--smoke", "--out", str(tmp_path)])
    threads = torch.get_num_threads()
    try:
        getattr(module, name)(lesson)
    finally:
        torch.set_num_threads(threads)
    assert f"== {name.split('_')[1]}. " in capsys.readouterr().out
