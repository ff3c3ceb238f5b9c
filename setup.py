"""minilm: a from-scratch course and library for language models.

Installs one top-level package, `minilm` (the Triton kernels are `minilm.kernels`; the
name `kernels` belongs to Hugging Face's package, a dependency of transformers), and the
console script `minilm`.
"""
import sys

from setuptools import find_packages, setup

# Triton ships Linux wheels only; elsewhere the kernels are simply unavailable and
# minilm falls back to PyTorch attention.
triton = ["triton>=3.0"] if sys.platform.startswith("linux") else []

setup(
    name="minilm",
    version="0.1.0",
    description="A from-scratch course and library for language models: Transformer, masking, "
    "pretraining, fine-tuning and Triton kernels.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["minilm", "minilm.*"]),
    package_data={"minilm": ["assets/pretrained/*"]},
    install_requires=[
        # Any recent torch works; the README and .ci/run pin the CPU build for CPU machines.
        "torch>=2.4",
        "numpy>=1.24",
        "tiktoken>=0.7",
        "regex>=2022.1",  # the GPT-2 pre-tokenisation pattern (\p{L}); tiktoken needs it too
        "safetensors>=0.4",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        *triton,
    ],
    extras_require={
        # transformers, tokenizers and seqeval are used only to prove parity and to benchmark against.
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3", "transformers>=4.40", "seqeval>=1.2.2"],
    },
    entry_points={"console_scripts": ["minilm=minilm.cli:main"]},
)
