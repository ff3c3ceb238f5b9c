"""The package's rooms: one level deep, each importing only the rooms below it; old import paths still work."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minilm"
# Lowest first: a room may import the rooms before it in this list, never one after it.
ORDER = ["store", "data", "kernels", "nn", "train", "downstream", "benchmarks", "course", "commands"]
TOP = "cli"  # minilm.cli, the command table, sits above every room: nothing in a room imports it


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minilm."):
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.module == "minilm":  # from minilm import cli
            yield from (f"minilm.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("minilm."))


def test_rooms_are_one_level_deep_and_hold_no_stray_module():
    rooms = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert rooms == sorted(ORDER)
    for room in rooms:
        nested = [p for p in (PACKAGE / room).iterdir() if p.is_dir() and (p / "__init__.py").exists()]
        assert nested == [], f"minilm/{room} nests a package: {nested}"
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py"], top


def test_rooms_import_one_way():
    wrong = []
    for room in ORDER:
        for path in (PACKAGE / room).glob("*.py"):
            for module in _imports(path):
                target = module.split(".")[1]
                ranks = ORDER + [TOP]
                if target in ranks and ranks.index(target) > ranks.index(room):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert wrong == [], "an import runs up the rooms:\n" + "\n".join(wrong)


@pytest.mark.parametrize("old, new", [("minilm.checkpoint", "minilm.train.checkpoint"),
                                      ("minilm.finetune", "minilm.downstream.finetuning"),
                                      ("minilm.masking", "minilm.data.masking"),
                                      ("minilm.model", "minilm.nn.model")])
def test_an_old_import_path_gives_the_same_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new  # the alias leaves the module's own spec alone


def test_the_public_names_import():
    code = ("from minilm import Tokenizer, ModelConfig, TrainConfig, Trainer, MaskedLM, CausalLM, "
            "SequenceClassifier, TokenClassifier, Transformer\n"
            "from minilm.data import load_corpus, load_classification, load_ner\n"
            "from minilm.data.masking import MaskingConfig, mask_tokens\n"
            "from minilm.nn.attention import attention\n"
            "from minilm.nn.peft import apply_lora, apply_adapters, apply_prefix, merge_lora\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_every_command_has_its_module_in_commands():
    from minilm.cli import COMMANDS

    for name, (module, _) in COMMANDS.items():
        assert module.startswith("minilm.commands."), (name, module)
        loaded = importlib.import_module(module)
        assert callable(loaded.configure) and callable(loaded.run), module
