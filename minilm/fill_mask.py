"""`minilm fill-mask`: what a masked LM predicts for each [MASK] in a sentence.

    minilm fill-mask runs/pretrain-bert-mini "the movie was [MASK] and the acting superb."

Design choices:
- The checkpoint folder is self-describing (`minilm.checkpoint.load_model`); a causal LM is
  refused with a pointer to `generate`.
- The work is `MaskedLM.fill_mask`; this module only prints its top-k table per mask.
"""
from __future__ import annotations

import argparse

import torch


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("checkpoint", help="a checkpoint folder holding a MaskedLM and its tokenizer")
    a("text", help='a sentence with one or more "[MASK]"')
    a("--top-k", type=int, default=5)
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def format_predictions(text: str, predictions: list[list[tuple[str, float]]]) -> str:
    """A readable table: for each mask, its candidates and probabilities, and the sentence filled with the best."""
    best = text
    lines = []
    for i, candidates in enumerate(predictions):
        best = best.replace("[MASK]", candidates[0][0].strip() or candidates[0][0], 1)
        lines.append(f"[MASK] #{i + 1}: " + "  ".join(f"{token.strip() or repr(token)} {p:.3f}"
                                                     for token, p in candidates))
    return "\n".join(lines + [f"best: {best}"])


def run(args) -> int:
    from minilm.checkpoint import load_model
    from minilm.model import MaskedLM

    if args.top_k < 1:
        raise SystemExit(f"--top-k={args.top_k}: expected a positive integer")
    model, tokenizer = load_model(args.checkpoint, device=args.device)
    if not isinstance(model, MaskedLM):
        raise SystemExit(f"{args.checkpoint} holds a {type(model).__name__}, not a MaskedLM; "
                         "for a causal LM use `minilm generate`")
    if tokenizer is None:
        raise SystemExit(f"{args.checkpoint} has no tokenizer.json; fill-mask needs one")
    if "[MASK]" not in args.text:
        raise SystemExit(f'text={args.text!r} has no "[MASK]" to fill')
    print(format_predictions(args.text, model.fill_mask(tokenizer, args.text, top_k=args.top_k)))
    return 0
