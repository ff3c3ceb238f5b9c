"""minilm: a from-scratch course and library for language models.

The public names are imported lazily, so `import minilm` stays fast and a lesson that
needs only the tokenizer does not pay for the model or the trainer.

The modules live in rooms (store, data, nn, train, downstream, kernels, commands, course).
Code written against the old flat layout (`minilm.checkpoint`, `minilm.finetune`, ...) keeps
working: `_MOVED` maps each old name to its new home, and importing the old name gives the
very same module object (so patching it patches the one the library uses).
"""
import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_EXPORTS = {
    "Tokenizer": "minilm.data.tokenizer",
    "ModelConfig": "minilm.nn.config",
    "TrainConfig": "minilm.train.trainer",
    "Trainer": "minilm.train.trainer",
    "MaskedLM": "minilm.nn.model",
    "CausalLM": "minilm.nn.model",
    "SequenceClassifier": "minilm.nn.model",
    "TokenClassifier": "minilm.nn.model",
    "Transformer": "minilm.nn.model",
}

__all__ = sorted(_EXPORTS)

_MOVED = {
    "atomic": "store.atomic",
    "fetch": "store.fetch",
    "text": "data.text",
    "tokenizer": "data.tokenizer",
    "wordpiece": "data.wordpiece",
    "bpe": "data.bpe",
    "corpus": "data.corpus",
    "masking": "data.masking",
    "collate": "data.collate",
    "show": "data.show",
    "config": "nn.config",
    "attention": "nn.attention",
    "model": "nn.model",
    "sampling": "nn.sampling",
    "hf": "nn.hf",
    "electra": "nn.electra",
    "backprop": "nn.backprop",
    "peft": "nn.peft",
    "optim": "train.optim",
    "trainer": "train.trainer",
    "checkpoint": "train.checkpoint",
    "run_folder": "train.run_folder",
    "pretrain": "train.pretraining",
    "tasks": "downstream.tasks",
    "finetune": "downstream.finetuning",
    "metrics": "downstream.metrics",
    "compare": "downstream.compare",
    "linear": "downstream.linear",
    "evaluate": "commands.evaluate",
    "generate": "commands.generate",
    "fill_mask": "commands.fill_mask",
    "bench": "commands.bench",
    "course": "course.runner",
    "lesson": "course.lesson",
    "assignments": "course.catalog",
    "assignment": "course.grading",
    "grader_plugin": "course.grader_plugin",
    "testing": "course.testing",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import minilm.OLD` gives the module now at minilm.NEW (see _MOVED)."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix("minilm.")
        if fullname.startswith("minilm.") and old in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module("minilm." + _MOVED[spec.name.removeprefix("minilm.")])
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its new name; importlib has just stamped the alias's spec on it: put its own back.
        module.__spec__, module.__loader__ = self.own_spec, self.own_spec.loader


sys.meta_path.append(_MovedModules())


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'minilm' has no attribute {name!r}")
