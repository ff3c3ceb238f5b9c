"""Triton kernels for the two hot spots of a Transformer: softmax and attention.

Needs only torch and triton: importing `minilm.kernels` pulls in no training code
(`minilm/__init__.py` is lazy). `minilm.kernels.reference`, the plain-torch attention every
backend is tested against, needs only torch: without Triton the package still imports, and
asking for a kernel raises an ImportError that says why.

The modules and the functions have different names, so each import means one thing:
`from minilm.kernels import softmax` is the function, `minilm.kernels.softmax_kernel` the
file it lives in (likewise `flash_attention` in `flash_kernel`).
"""
try:
    from minilm.kernels.flash_kernel import flash_attention, supports
    from minilm.kernels.softmax_kernel import softmax
except ImportError as _error:  # no Triton (a laptop without CUDA, macOS): only the reference is usable
    _MISSING = _error

    def __getattr__(name):
        if name in ("flash_attention", "softmax", "supports"):
            raise ImportError(f"minilm.kernels.{name} needs Triton, which cannot be imported here ({_MISSING}); "
                              f"install triton, or use minilm.kernels.reference / minilm.nn.attention(backend='sdpa')")
        raise AttributeError(f"module 'minilm.kernels' has no attribute {name!r}")

__all__ = ["flash_attention", "softmax", "supports"]
