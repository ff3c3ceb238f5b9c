"""`minilm assignment package`: the Gradescope autograder zip, unpacked into a fake /autograder and run.

Gradescope unpacks the zip into /autograder/source, runs setup.sh once (pip installs; not run
here: no network), then run_autograder per submission with the student's upload in
/autograder/submission. This test does the same in a temporary folder (AUTOGRADER_ROOT), with
this interpreter standing for the one setup.sh installs (AUTOGRADER_PYTHON).
"""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minilm.course import markers, packaging

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif((ROOT / "HANDOUT.md").exists(), reason="packages the solution tree; this is a handout")

HIDDEN = '''
import pytest

from minilm.course.boundary import student

bpe = student("minilm.data.bpe")


@pytest.mark.points(4)
def test_hidden_merges():
    assert bpe.learn_merges({b"abab": 3, b"ab": 1}, 258) == [(b"a", b"b"), (b"ab", b"ab")]
'''


def test_the_zip_holds_the_grader_and_refuses_to_land_in_the_tree(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "test_hidden_bpe.py").write_text(HIDDEN)
    names = packaging.package("bpe", tmp_path / "autograder.zip", hidden=hidden, timeout=60)
    with zipfile.ZipFile(tmp_path / "autograder.zip") as z:
        assert sorted(z.namelist()) == names
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
    assert {"setup.sh", "run_autograder", "hidden_tests/test_hidden_bpe.py", "setup.py",
            "minilm/course/grading.py", "tests/assignments/test_bpe.py"} <= set(names)
    assert modes["run_autograder"] == modes["setup.sh"] == 0o755
    assert not [n for n in names if "__pycache__" in n or n.startswith("runs/") or n.endswith("HANDOUT.md")]
    assert packaging.package("bpe", tmp_path / "again.zip", hidden=hidden, timeout=60) == names
    assert (tmp_path / "again.zip").read_bytes() == (tmp_path / "autograder.zip").read_bytes(), "not reproducible"
    with pytest.raises(markers.AssignmentError, match="inside the repository"):
        packaging.package("bpe", ROOT / "autograder.zip")


@pytest.mark.slow
def test_run_autograder_grades_an_upload_in_a_fake_autograder_root(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "test_hidden_bpe.py").write_text(HIDDEN)
    packaging.package("bpe", tmp_path / "autograder.zip", hidden=hidden, timeout=60)
    root = tmp_path / "autograder"
    with zipfile.ZipFile(tmp_path / "autograder.zip") as z:
        z.extractall(root / "source")
    for name in ("run_autograder", "setup.sh"):
        os.chmod(root / "source" / name, 0o755)
    (root / "submission").mkdir()
    (root / "submission" / "bpe.py").write_text((ROOT / "minilm/data/bpe.py").read_text())  # just the file, uploaded
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], capture_output=True, text=True,
                          timeout=900, env={**env, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 24 and results["extra_data"]["max_score"] == 24, (results["output"], done.stdout[-3000:])
    assert results["extra_data"]["taken"] == ["minilm/data/bpe.py"]
    assert [t["visibility"] for t in results["tests"]].count("after_published") == 1
