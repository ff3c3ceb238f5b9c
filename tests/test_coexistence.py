"""minilm lives beside transformers and Hugging Face's own package named `kernels`.

The import name `kernels` is Hugging Face's (transformers depends on it), so minilm claims only
`minilm`: its Triton kernels are `minilm.kernels`, and the repository's top-level `kernels/`
folder holds documents and results, never a module. These tests run the checks a user meets:
Python started from the repository root (the current directory first on `sys.path`), and the
wheel `pip` would build from this checkout.
"""
import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _python_at_repo_root(code):
    """Run `code` as `python -c` from the repository root, where '' (the cwd) leads sys.path."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_repository_root_holds_no_python_package_named_kernels():
    folder = REPO / "kernels"
    assert folder.is_dir(), "the top-level kernels/ folder is the kernel people's front door"
    assert (folder / "README.md").is_file()
    modules = sorted(p.name for p in folder.rglob("*") if p.suffix in (".py", ".pyc", ".so", ".pth"))
    assert modules == [], f"kernels/ must hold no importable file, found {modules}"


def test_transformers_imports_from_the_repository_root_and_kernels_is_hugging_faces():
    pytest.importorskip("transformers")
    try:
        dist = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("Hugging Face's `kernels` is not installed (transformers did not bring it)")
    out = _python_at_repo_root(
        "import sys, kernels, transformers\n"
        "from transformers import BertModel, GPT2LMHeadModel\n"
        "print(kernels.__file__)\n"
        "print(BertModel.__name__, GPT2LMHeadModel.__name__)\n")
    kernels_file, names = out.strip().splitlines()[-2:]
    assert names == "BertModel GPT2LMHeadModel"
    installed = Path(dist.locate_file("kernels")).resolve()
    assert Path(kernels_file).resolve().is_relative_to(installed), (kernels_file, installed)
    # The installed copy may itself live under the checkout (CI makes its venv there): compare to our folder.
    assert not Path(kernels_file).resolve().is_relative_to(REPO / "kernels"), f"`import kernels` found {kernels_file}"


def test_minilm_kernels_imports_without_training_code():
    """`import minilm.kernels` pulls in torch and triton, not the model, the data or the trainer."""
    out = _python_at_repo_root(
        "import sys, minilm.kernels\n"
        "from minilm.kernels import softmax, flash_attention, supports\n"
        "import minilm.kernels.reference\n"
        "print(callable(softmax), callable(flash_attention), callable(supports))\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('minilm'))))\n")
    callables, loaded = out.strip().splitlines()[-2:]
    assert callables == "True True True"
    assert set(loaded.split()) == {"minilm", "minilm.kernels", "minilm.kernels.flash_kernel",
                                   "minilm.kernels.softmax_kernel", "minilm.kernels.reference"}


def _tracked_copy(destination):
    """The checkout's files as git tracks them, so building leaves no build/ folder in the tree."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


@pytest.mark.slow
def test_the_wheel_has_minilm_as_its_only_top_level_name(tmp_path):
    source = _tracked_copy(tmp_path / "checkout")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path / "wheels"), str(source)], check=True, timeout=600,
                   capture_output=True)
    (wheel,) = (tmp_path / "wheels").glob("minilm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"minilm"}, top
    assert "minilm/kernels/flash_kernel.py" in names and "minilm/kernels/softmax_kernel.py" in names
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(top_level).decode().split() == ["minilm"]
