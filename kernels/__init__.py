"""Triton kernels for the two hot spots of a Transformer: softmax and attention.

Importable without minilm (it needs torch and triton). The functions are imported
eagerly: a lazy module `__getattr__` would be shadowed by the submodule of the same name
the moment that submodule is imported. So `kernels.softmax` is the *function*; the module
is `sys.modules["kernels.softmax"]` (or `importlib.import_module("kernels.softmax")`),
and `from kernels.softmax import softmax_reference` works as usual.
"""
from kernels.flash_attention import flash_attention, supports
from kernels.softmax import softmax

__all__ = ["flash_attention", "softmax", "supports"]
