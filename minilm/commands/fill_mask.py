"""`minilm fill-mask`: what a masked LM predicts for each [MASK] in a sentence.

    minilm fill-mask runs/pretrain-bert-mini "the movie was [MASK] and the acting superb."

Design choices:
- Any model source (`minilm.train.model_source`): a checkpoint, a run folder (its final/), a
  Hugging Face BERT folder with its masked-LM head; a causal LM, a headless BERT or a
  fine-tuned classifier is refused in one line.
- The work is `MaskedLM.fill_mask`; this module only prints its top-k table per mask.
"""
from __future__ import annotations

import argparse

from minilm.nn.model import MaskedLM
from minilm.train import model_source
from minilm.train.trainer import resolve_device


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("checkpoint", help="a checkpoint or run folder holding a MaskedLM and its tokenizer, or a Hugging Face BERT "
                         "folder")
    a("text", help='a sentence with one or more "[MASK]"')
    a("--top-k", type=int, default=5)
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def shown(token: str) -> str:
    """A token as a terminal can show it: stripped, or quoted (escapes visible) when it is blank or holds a
    control character, which a byte-level vocabulary has (a bare "\\x07" would ring the bell)."""
    stripped = token.strip()
    return stripped if stripped and stripped.isprintable() else repr(token)


def format_predictions(text: str, predictions: list[list[tuple[str, float]]]) -> str:
    """A readable table: for each mask, its candidates and probabilities, and the sentence filled with the best."""
    best = text
    lines = []
    for i, candidates in enumerate(predictions):
        best = best.replace("[MASK]", shown(candidates[0][0]), 1)
        lines.append(f"[MASK] #{i + 1}: " + "  ".join(f"{shown(token)} {p:.3f}" for token, p in candidates))
    return "\n".join(lines + [f"best: {best}"])


def run(args) -> int:
    if args.top_k < 1:
        raise ValueError(f"--top-k={args.top_k}: expected a positive integer")
    if "[MASK]" not in args.text:
        raise ValueError(f'text={args.text!r} has no "[MASK]" to fill')
    device = resolve_device(args.device)
    source = model_source.resolve(args.checkpoint, flag="checkpoint", accept=("checkpoint", "huggingface"))
    model, tokenizer = model_source.load(source, MaskedLM, device=device,
                                         hint="; for a causal LM use `minilm generate`")
    if args.top_k > model.config.vocab_size:
        raise ValueError(f"--top-k={args.top_k} is more than the model's vocabulary of {model.config.vocab_size} "
                         f"tokens")
    print(format_predictions(args.text, model.fill_mask(tokenizer, args.text, top_k=args.top_k)))
    return 0
