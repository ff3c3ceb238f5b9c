"""Batches for every objective: dicts of tensors whose keys are exactly the model's forward arguments.

Design choices:
- A batch is `model(**batch)`-ready: `input_ids`, `attention_mask` (1 = real token, 0 =
  padding) and `labels` (-100 where nothing is predicted), nothing else, so the trainer
  never needs to know which objective it runs.
- Sequences of different lengths are padded on the right to the longest in the batch
  (dynamic padding); fixed-length rows (tensors) pass through unpadded. Everything stays on
  the device of the rows it is given, so masked-LM batches can be built on the GPU.
- The tokenizer is read through its interface only: pad_id, cls_id, sep_id, mask_id,
  eot_id, special_ids, vocab_size, encode_batch, encode_words.
- Labels are aligned here, once: masked positions for MLM (`minilm.data.masking`), next tokens for
  causal LM (already shifted: the model does not shift), one label per sentence, and for
  named entities one label per word on its first sub-token. `word_predictions` maps token
  logits back to words with the very same alignment, for evaluation.
"""
from __future__ import annotations

import itertools
import numbers
from functools import lru_cache
from typing import Sequence

import torch

from minilm.data.masking import IGNORE, MaskingConfig, mask_tokens

Rows = torch.Tensor | Sequence[Sequence[int]]


# --------------------------------------------------------------------------- helpers


def pad(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad integer sequences to the longest one: LongTensor (B, L), L >= 1."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # (B,)
    real = torch.arange(max(lengths.tolist() + [1]))[None, :] < lengths[:, None]  # (B, L)
    flat = torch.tensor(list(itertools.chain.from_iterable(seqs)), dtype=torch.long)  # all ids, one copy
    return torch.full(real.shape, value, dtype=torch.long).masked_scatter_(real, flat)


@lru_cache(maxsize=32)
def _replacement_ids(vocab_size: int, special_ids: tuple[int, ...], device: str) -> torch.Tensor:
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[[i for i in special_ids if 0 <= i < vocab_size]] = False
    return allowed.nonzero().squeeze(1).to(device)


def special_ids(tokenizer) -> tuple[int, ...]:
    """The ids never masked, replaced or sampled: the special tokens and padding, sorted."""
    return tuple(sorted(set(tokenizer.special_ids) | {tokenizer.pad_id}))


def replacement_ids(tokenizer, device="cpu") -> torch.Tensor:
    """Every id of the vocabulary except the special tokens (1-D long): what a random replacement may be."""
    return _replacement_ids(tokenizer.vocab_size, special_ids(tokenizer), str(torch.device(device)))


@lru_cache(maxsize=32)
def _special_tensor(special_ids: tuple[int, ...], device: str) -> torch.Tensor:
    return torch.tensor(special_ids, dtype=torch.long, device=device)


def maskable_positions(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """(B, T) bool: True where the token is neither a special token nor padding."""
    return ~torch.isin(input_ids, _special_tensor(special_ids(tokenizer), str(input_ids.device)))  # (B, T)


def _as_rows(rows: Rows, value: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A tensor passes through; a list of sequences is right-padded. Returns (ids, real-token mask or None)."""
    if isinstance(rows, torch.Tensor):
        if rows.dim() != 2:
            raise ValueError("rows must be a 2-D tensor (B, T) or a list of id sequences; "
                             f"got shape {tuple(rows.shape)}")
        return rows.long(), None
    ids = pad(rows, value)  # (B, L)
    return ids, torch.arange(ids.shape[1])[None, :] < torch.tensor([len(r) for r in rows])[:, None]


# --------------------------------------------------------------------------- pretraining


def mlm_batch(input_ids: Rows, word_ids: Rows | None, tokenizer, config: MaskingConfig,
              generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """A masked-LM batch: {"input_ids", "attention_mask", "labels"}, all (B, T).

    input_ids: rows that already carry their special tokens ("[CLS] ... [SEP]", as
    `minilm.data.corpus.encoder_rows` makes them), a (B, T) tensor or a list of id lists (padded here
    with pad_id). word_ids: the same shape, -1 at special tokens; needed by the "whole_word" and
    "span" strategies, may be None otherwise. Special tokens and padding are never masked,
    random replacements are never special tokens; labels are -100 except at masked positions.
    Runs on the device of input_ids (pass a generator on that device to avoid a copy).
    """
    ids, real = _as_rows(input_ids, tokenizer.pad_id)  # (B, T)
    if word_ids is not None:
        word_ids, _ = _as_rows(word_ids, -1)  # (B, T)
        word_ids = word_ids.to(ids.device)
    if real is None:
        real = ids != tokenizer.pad_id  # (B, T)
    maskable = maskable_positions(ids, tokenizer) & real  # (B, T)
    masked, labels = mask_tokens(ids, config, mask_id=tokenizer.mask_id, maskable=maskable,
                                 replacement_ids=replacement_ids(tokenizer, ids.device), word_ids=word_ids,
                                 generator=generator)
    return {"input_ids": masked, "attention_mask": real.long(), "labels": labels}


def clm_batch(rows: Rows, tokenizer) -> dict[str, torch.Tensor]:
    """A causal-LM batch from rows of T + 1 tokens: inputs rows[:, :-1], labels rows[:, 1:] (already shifted).

    rows: a (B, T + 1) tensor of contiguous text (`minilm.data.corpus.decoder_rows`: documents joined by
    <|endoftext|>) or a list of id lists (padded here). Padding is never attended to and never a
    target (label -100). Document boundaries: every target is the next token of the same
    document, or the <|endoftext|> that closes it, or, right after an <|endoftext|>, the first
    token of the document it opens (as in GPT-2, <|endoftext|> both ends one text and starts the
    next, which is how the model learns to begin a text). No other target crosses a boundary.
    Attention within a packed row still reaches back into the previous documents, as in GPT-2's
    training; the contract's attention mask is per key, not per document.
    """
    ids, real = _as_rows(rows, tokenizer.pad_id)  # (B, T + 1)
    if ids.shape[1] < 2:
        raise ValueError("clm_batch needs rows of at least 2 tokens (inputs and their next tokens); "
                         f"got {ids.shape[1]}")
    if real is None:
        # A packed tensor is unpadded when pad and <|endoftext|> share an id (GPT-2 has no pad token).
        shared = tokenizer.pad_id == tokenizer.eot_id
        real = torch.ones_like(ids, dtype=torch.bool) if shared else ids != tokenizer.pad_id  # (B, T + 1)
    real = real.to(ids.device)
    labels = ids[:, 1:].masked_fill(~real[:, 1:], IGNORE)  # (B, T) next tokens; none at padding
    return {"input_ids": ids[:, :-1], "attention_mask": real[:, :-1].long(), "labels": labels}


def document_mask(input_ids: torch.Tensor, eot_id: int) -> torch.Tensor:
    """Which keys each query may see when every token should attend only within its own document.

    input_ids (B, T): packed rows, documents joined by `eot_id` (<|endoftext|>), which closes the
    document it ends. Returns a bool attn_mask (B, 1, T, T) for `CausalLM(..., attn_mask=...)`
    (broadcast over the heads; the model adds the causal rule). `clm_batch` rows attend across
    documents, as GPT-2 trained; this is the alternative most long-context recipes now use.
    """
    ends = (input_ids == eot_id).long()  # (B, T)
    document = torch.cumsum(ends, dim=1) - ends  # (B, T): how many documents closed before each token
    return (document[:, :, None] == document[:, None, :])[:, None]  # (B, 1, T, T)


# --------------------------------------------------------------------------- fine-tuning


def _check_max_len(max_len: int) -> None:
    if not (isinstance(max_len, int) and max_len >= 3):
        raise ValueError(f"max_len={max_len!r} is invalid: expected an integer >= 3 ([CLS], one token, [SEP])")


def _frame(ids: Sequence[int], tokenizer, max_len: int) -> list[int]:
    """[CLS] ids [SEP], with ids truncated so the whole fits in max_len."""
    return [tokenizer.cls_id, *ids[: max_len - 2], tokenizer.sep_id]


def classification_batch(texts: Sequence[str], labels: Sequence[int] | None, tokenizer,
                         max_len: int) -> dict[str, torch.Tensor]:
    """A sentence-classification batch: {"input_ids", "attention_mask" (B, L), "labels" (B,)}.

    Each text becomes "[CLS] tokens [SEP]", truncated to max_len tokens in all, then the batch is
    right-padded to its longest row. labels (class indices) may be None for prediction; the
    "labels" key is then left out.
    """
    _check_max_len(max_len)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"classification_batch got {len(texts)} texts but {len(labels)} labels")
    if labels is not None:
        bad = [x for x in labels if isinstance(x, bool) or not isinstance(x, (numbers.Integral, torch.Tensor))]
        if bad:
            raise ValueError(f"labels must be class indices (int); got {bad[0]!r}")
    rows = [_frame(ids, tokenizer, max_len) for ids in tokenizer.encode_batch(list(texts))]
    ids, real = _as_rows(rows, tokenizer.pad_id)  # (B, L)
    batch = {"input_ids": ids, "attention_mask": real.long()}
    if labels is not None:
        batch["labels"] = torch.as_tensor([int(x) for x in labels], dtype=torch.long)  # (B,)
    return batch


def _encode_sentences(words: Sequence[Sequence[str]], tokenizer,
                      max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Framed, padded ids (B, L), word ids (B, L) (-1 at specials and padding) and real-token mask (B, L)."""
    ids, wids = [], []
    for sentence in words:
        s_ids, s_wids = tokenizer.encode_words(list(sentence))
        ids.append(_frame(s_ids, tokenizer, max_len))
        wids.append([-1, *s_wids[: max_len - 2], -1])
    input_ids, real = _as_rows(ids, tokenizer.pad_id)  # (B, L)
    word_ids, _ = _as_rows(wids, -1)  # (B, L)
    return input_ids, word_ids, real


def _first_subtokens(word_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: True at the first sub-token of each word."""
    prev = torch.nn.functional.pad(word_ids[:, :-1], (1, 0), value=-1)  # (B, L)
    return (word_ids >= 0) & (word_ids != prev)


def token_classification_batch(words: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None, tokenizer,
                               tag_to_id: dict[str, int], max_len: int) -> dict[str, torch.Tensor]:
    """A token-classification (NER) batch: {"input_ids", "attention_mask", "labels"}, all (B, L).

    Each sentence (a list of words) becomes "[CLS] sub-tokens [SEP]", truncated to max_len tokens;
    a word's tag id sits on its first sub-token, -100 on its other sub-tokens, on [CLS], [SEP] and
    padding. Words cut off by max_len (or that encode to nothing) have no label here; use
    `word_predictions` to get one prediction per word back. tags may be None (prediction only);
    a tag missing from tag_to_id raises, naming the tag and the sentence.
    """
    _check_max_len(max_len)
    if tags is not None and len(tags) != len(words):
        raise ValueError(f"token_classification_batch got {len(words)} sentences but {len(tags)} tag sequences")
    input_ids, word_ids, real = _encode_sentences(words, tokenizer, max_len)  # (B, L) each
    batch = {"input_ids": input_ids, "attention_mask": real.long()}
    if tags is None:
        return batch
    tag_rows = []
    for i, (sentence, sentence_tags) in enumerate(zip(words, tags)):
        if len(sentence_tags) != len(sentence):
            raise ValueError(f"sentence {i} has {len(sentence)} words but {len(sentence_tags)} tags")
        unknown = [t for t in sentence_tags if t not in tag_to_id]
        if unknown:
            raise ValueError(f"tag {unknown[0]!r} of sentence {i} is not in tag_to_id (known: {sorted(tag_to_id)})")
        tag_rows.append([tag_to_id[t] for t in sentence_tags])
    word_tags = pad(tag_rows, IGNORE)  # (B, W) tag id of each word
    labels = word_tags.gather(1, word_ids.clamp(min=0))  # (B, L) each token reads its word's tag
    batch["labels"] = labels.masked_fill(~_first_subtokens(word_ids), IGNORE)  # (B, L)
    return batch


def word_predictions(logits: torch.Tensor, words: Sequence[Sequence[str]], tokenizer, max_len: int,
                     tag_names: Sequence[str], fill: str = "O") -> list[list[str]]:
    """Per-sentence word tags from the token logits (B, L, C) of a `token_classification_batch`.

    `words`, tokenizer and max_len must be the ones the batch was built from: the alignment is
    recomputed the same way. Each word takes the arg-max class at its first sub-token, named by
    tag_names; a word with no sub-token in the batch (cut off by max_len, or encoding to nothing)
    gets `fill` ("O": outside any entity). Returns one list of len(words[i]) tags per sentence,
    ready for entity-level scoring against the gold tags.
    """
    _, word_ids, _ = _encode_sentences(words, tokenizer, max_len)  # (B, L)
    if logits.dim() != 3 or logits.shape[:2] != word_ids.shape:
        raise ValueError(f"logits must be (B, L, C) = ({word_ids.shape[0]}, {word_ids.shape[1]}, C) for these words; "
                         f"got {tuple(logits.shape)}")
    predicted = logits.argmax(-1).cpu()  # (B, L)
    first = _first_subtokens(word_ids)  # (B, L)
    out = []
    for b, sentence in enumerate(words):
        tags = [fill] * len(sentence)
        for w, p in zip(word_ids[b][first[b]].tolist(), predicted[b][first[b]].tolist()):
            tags[w] = tag_names[p]
        out.append(tags)
    return out
