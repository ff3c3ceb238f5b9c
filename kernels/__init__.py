"""Triton kernels for the two hot spots of a Transformer: softmax and attention.

Importable without minilm (it needs torch and triton). `kernels.reference`, the plain-torch
attention every backend is tested against, needs only torch: without Triton the package
still imports, and asking for a kernel raises an ImportError that says why.

The functions are imported eagerly: a lazy module `__getattr__` would be shadowed by the
submodule of the same name the moment that submodule is imported. So `kernels.softmax` is
the *function*; the module is `sys.modules["kernels.softmax"]` (or
`importlib.import_module("kernels.softmax")`), and `from kernels.softmax import
softmax_reference` works as usual.
"""
try:
    from kernels.flash_attention import flash_attention, supports
    from kernels.softmax import softmax
except ImportError as _error:  # no Triton (a laptop without CUDA, macOS): only the reference is usable
    _MISSING = _error

    def __getattr__(name):
        if name in ("flash_attention", "softmax", "supports"):
            raise ImportError(f"kernels.{name} needs Triton, which cannot be imported here ({_MISSING}); "
                              f"install triton, or use kernels.reference / minilm.attention(backend='sdpa')")
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")

__all__ = ["flash_attention", "softmax", "supports"]
