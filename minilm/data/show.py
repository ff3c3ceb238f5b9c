"""Masked sentences for a terminal: what the model sees, and what it must predict.

Design choices:
- Plain text first, so it reads the same in a log file, a notebook and a terminal:
  `[MASK]` a position replaced by the mask token, `~~the~~→dog` a position replaced by a
  random token (the model sees "dog" and must say "the"), `_the_` a position left as it was
  but still predicted. Everything else is shown as is; special tokens and padding are left out.
- Colour (ANSI) on top when writing to a terminal, or when asked; NO_COLOR switches it off.
- The renderer reads only ids and labels, so it shows any strategy, and any batch from
  `minilm.data.collate.mlm_batch`, without knowing how it was masked.
"""
from __future__ import annotations

import os
import sys

import torch

from minilm.data.collate import mlm_batch
from minilm.data.masking import IGNORE, STRATEGIES, MaskingConfig

LEGEND = ("[MASK] = replaced by the mask token · ~~was~~→new = replaced by a random token "
          "(the model still predicts 'was') · _kept_ = left unchanged but predicted")

_RESET = "\x1b[0m"
_STYLE = {"mask": "\x1b[1;97;41m", "struck": "\x1b[9;31m", "random": "\x1b[1;33m", "kept": "\x1b[4;32m"}


def _use_color(color: bool | None) -> bool:
    if color is not None:
        return color
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def render_masked(tokenizer, input_ids, masked_ids, labels, *, color: bool | None = None) -> str:
    """One row as one line of text: original `input_ids`, `masked_ids` and `labels`, each (T,).

    A position with a label (!= -100) is shown as `[MASK]` if the model sees the mask token,
    as `~~orig~~→new` if it sees another token than the original, and as `_orig_` if it sees
    the original (kept; a random draw that hit the original token also shows this way).
    Special tokens and padding are left out; a token's leading space stays outside its marker.
    color=None: colour only when stdout is a terminal.
    """
    paint = _use_color(color)
    specials = set(tokenizer.special_ids) | {tokenizer.pad_id}

    def mark(kind: str, text: str, plain: str) -> str:
        return f"{_STYLE[kind]}{text}{_RESET}" if paint else plain

    out = []
    for orig, seen, label in zip(*(torch.as_tensor(x).tolist() for x in (input_ids, masked_ids, labels))):
        if orig in specials and label == IGNORE:
            continue
        piece = tokenizer.token_str(orig)
        word = piece.lstrip()
        space = piece[: len(piece) - len(word)]
        if label == IGNORE:
            out.append(piece)
        elif seen == tokenizer.mask_id:
            out.append(space + mark("mask", "[MASK]", "[MASK]"))
        elif seen != orig:
            new = tokenizer.token_str(seen).strip()
            out.append(space + mark("struck", word, f"~~{word}~~") + mark("random", "→" + new, "→" + new))
        else:
            out.append(space + mark("kept", word, f"_{word}_"))
    return "".join(out)


def show_masking(tokenizer, text: str, *, strategies=STRATEGIES, mask_prob: float | None = None,
                 count: str = "exact", seed: int = 0, color: bool | None = None) -> str:
    """`text` masked by each strategy, one line each (same seed), then the legend.

    mask_prob=None uses each strategy's default (15%, or half the row for "sequence");
    count="exact" so that even a short sentence shows something.
    """
    ids, word_ids = tokenizer.encode_with_word_ids(text)
    row = torch.tensor([[tokenizer.cls_id, *ids, tokenizer.sep_id]])  # (1, T)
    words = torch.tensor([[-1, *word_ids, -1]])  # (1, T)
    width = max(len(s) for s in strategies)
    lines = []
    for strategy in strategies:
        config = MaskingConfig(strategy=strategy, mask_prob=mask_prob, count=count)
        batch = mlm_batch(row, words, tokenizer, config, torch.Generator().manual_seed(seed))
        shown = render_masked(tokenizer, row[0], batch["input_ids"][0], batch["labels"][0], color=color)
        lines.append(f"{strategy:>{width}}  {shown}")
    return "\n".join([*lines, LEGEND])
