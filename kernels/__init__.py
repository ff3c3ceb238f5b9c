"""Triton kernels for the two hot spots of a Transformer: softmax and attention.

Importable without minilm. Names are imported lazily so that `import kernels` works
(and says what is missing) on machines without Triton.
"""
import importlib

_EXPORTS = {"softmax": "kernels.softmax", "flash_attention": "kernels.flash_attention"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
