"""`minilm bench NAME`: benchmarks of minilm against the library a user would pick instead.

Each benchmark is a module with `configure(parser)` and `run(args)`: `minilm/benchmarks/NAME.py`,
and the Triton kernels' sweep in `minilm/kernels/bench.py`. Every figure is a ratio measured in the same run, on the same machine,
because shared machines are noisy; each benchmark prints how it measured.
"""
from __future__ import annotations

import importlib

BENCHMARKS = {
    "tokenizer": "BPE training time vs `tokenizers`, encode throughput vs raw tiktoken",
    "wordpiece": "WordPiece encode time vs transformers' BertTokenizer (`tokenizers`) on IMDB reviews",
    "model": "bert-mini masked-LM training step: minilm vs transformers' BertForMaskedLM",
    "masking": "masking time vs a training step; token masking vs DataCollatorForLanguageModeling",
    "pretrain": "end-to-end pretraining throughput (data, masking, step) vs transformers",
    "objectives": "pretraining objectives (mlm, electra, …) at the same wall-clock budget, judged on rt-polarity",
    "kernels": "the Triton softmax and flash attention vs torch on a CUDA GPU (also `python -m minilm.kernels.bench`)",
}
MODULES = {"kernels": "minilm.kernels.bench"}  # the rest are minilm.benchmarks.NAME


def configure(parser):
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, help_text in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text)
        module = importlib.import_module(MODULES.get(name, f"minilm.benchmarks.{name}"))
        module.configure(p)
        p.set_defaults(_bench=module.run)


def run(args):
    return args._bench(args)
