"""minilm: a from-scratch course and library for language models.

The public names are imported lazily, so `import minilm` stays fast and a lesson that
needs only the tokenizer does not pay for the model or the trainer.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Tokenizer": "minilm.tokenizer",
    "ModelConfig": "minilm.config",
    "TrainConfig": "minilm.trainer",
    "Trainer": "minilm.trainer",
    "MaskedLM": "minilm.model",
    "CausalLM": "minilm.model",
    "SequenceClassifier": "minilm.model",
    "TokenClassifier": "minilm.model",
    "Transformer": "minilm.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'minilm' has no attribute {name!r}")
