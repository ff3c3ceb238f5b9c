"""Every lesson present runs end to end in --smoke mode and reports what it measured.

Lessons are imported and their `main(argv)` called in this process (no new interpreter per
lesson), so the whole file costs seconds per lesson.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from minilm.lesson import lesson_title

LESSONS = sorted((Path(__file__).resolve().parent.parent / "lessons").glob("[0-9][0-9]_*.py"))


def test_the_course_has_lessons():
    assert len(LESSONS) >= 2, "the lessons folder should hold the numbered lessons"
    numbers = [p.name[:2] for p in LESSONS]
    assert len(set(numbers)) == len(numbers), f"two lessons share a number: {numbers}"


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_smoke(path, tmp_path):
    text = path.read_text(encoding="utf-8")
    assert "What you will learn" in text.split('"""')[1], f"{path.name}: docstring must list what is learned"
    spec = importlib.util.spec_from_file_location(f"lesson_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
