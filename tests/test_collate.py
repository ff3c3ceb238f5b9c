"""Batches for every objective, with the real Tokenizer trained on a few sentences."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.data.collate import (
    clm_batch, classification_batch, maskable_positions, mlm_batch, replacement_ids, token_classification_batch,
    word_predictions,
)
from minilm.nn.config import ModelConfig
from minilm.data.masking import IGNORE, STRATEGIES, MaskingConfig
from minilm.data.show import LEGEND, render_masked, show_masking
from minilm.data.tokenizer import Tokenizer

TEXTS = [
    "The cat sat on the mat, and the dog watched it from the doorway.",
    "Transformers learn representations from unlabelled text by predicting masked words.",
    "A span of several words is harder to guess than a single token.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "She said: \"unbelievable!\" and left the room at 5 o'clock.",
]
WORDS = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", ".", "Peter", "Blackburn",
         "unbelievably", "x", "Ünïcödé", "1996-08-22", "(", ")", "'s"]
TAGS = ["O", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TAG_TO_ID = {t: i for i, t in enumerate(TAGS)}
KEYS = {"input_ids", "attention_mask", "labels"}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS * 10, 330)


def framed(tok, texts):
    """Encoder rows "[CLS] ids [SEP]" of different lengths with their word ids (-1 at specials)."""
    ids, words = [], []
    for text in texts:
        i, w = tok.encode_with_word_ids(text)
        ids.append([tok.cls_id, *i, tok.sep_id])
        words.append([-1, *w, -1])
    return ids, words


def tiny_config(tok, **overrides):
    return ModelConfig(vocab_size=tok.vocab_size, max_seq_len=128, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                       **overrides)


# --------------------------------------------------------------------------- masked LM


def test_replacement_ids_exclude_every_special_token(tok):
    allowed = replacement_ids(tok)
    assert not set(allowed.tolist()) & set(tok.special_ids)
    assert len(allowed) == tok.vocab_size - len(set(tok.special_ids) | {tok.pad_id})


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mlm_batch_pads_and_never_masks_specials_or_padding(tok, strategy):
    ids, words = framed(tok, TEXTS)
    config = MaskingConfig(strategy=strategy, mask_prob=1.0, mask_frac=0.0, random_frac=1.0, keep_frac=0.0)
    batch = mlm_batch(ids, words, tok, config, torch.Generator().manual_seed(0))
    assert set(batch) == KEYS
    lengths = torch.tensor([len(r) for r in ids])
    B, T = batch["input_ids"].shape
    assert (B, T) == (len(TEXTS), int(lengths.max()))
    real = torch.arange(T)[None] < lengths[:, None]
    assert torch.equal(batch["attention_mask"], real.long())
    padded = torch.full((B, T), tok.pad_id)
    for b, row in enumerate(ids):
        padded[b, : len(row)] = torch.tensor(row)
    maskable = maskable_positions(padded, tok) & real
    selected = batch["labels"] != IGNORE
    assert not (selected & ~maskable).any()
    assert torch.equal(batch["labels"][selected], padded[selected])
    assert torch.equal(batch["input_ids"][~selected], padded[~selected])  # specials and padding untouched
    # Every predicted position got a random token here: none may be special.
    assert not torch.isin(batch["input_ids"][selected], torch.tensor(tok.special_ids)).any()
    assert torch.equal(selected, maskable)  # mask_prob 1.0: every maskable position, whatever the strategy


def test_mlm_batch_same_seed_same_batch_and_tensor_rows(tok):
    ids, words = framed(tok, TEXTS[:1] * 4)
    rows, word_ids = torch.tensor(ids), torch.tensor(words)
    config = MaskingConfig(strategy="span", mask_prob=0.3)
    a = mlm_batch(rows, word_ids, tok, config, torch.Generator().manual_seed(3))
    b = mlm_batch(ids, words, tok, config, torch.Generator().manual_seed(3))  # lists of equal length
    assert all(torch.equal(a[k], b[k]) for k in KEYS)
    assert (a["attention_mask"] == 1).all()


def test_mlm_batch_needs_word_ids_for_word_strategies(tok):
    ids, _ = framed(tok, TEXTS)
    with pytest.raises(ValueError, match="needs word_ids"):
        mlm_batch(ids, None, tok, MaskingConfig(strategy="whole_word"), torch.Generator())
    mlm_batch(ids, None, tok, MaskingConfig(strategy="token"), torch.Generator())  # token needs none


def test_mlm_batch_feeds_the_masked_lm(tok, tmp_path, monkeypatch):
    from minilm.data.corpus import encoder_rows, tokenize_corpus
    from minilm.nn.model import MaskedLM

    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    rows, word_ids = encoder_rows(tokenize_corpus(TEXTS * 4, tok, "collate-test"), 24, tok)  # (N, 24)
    batch = mlm_batch(rows, word_ids, tok, MaskingConfig(strategy="whole_word", count="exact"),
                      torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    out = MaskedLM(tiny_config(tok))(**batch)
    n = int((batch["labels"] != IGNORE).sum())
    assert n > 0 and out.logits.shape == (n, tok.vocab_size) and torch.isfinite(out.loss)


# --------------------------------------------------------------------------- causal LM


def test_clm_batch_shifts_packed_rows(tok, tmp_path, monkeypatch):
    from minilm.data.corpus import decoder_rows, tokenize_corpus
    from minilm.nn.model import CausalLM

    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    rows = decoder_rows(tokenize_corpus(TEXTS * 3, tok, "collate-clm"), 16, tok)  # (N, 17)
    batch = clm_batch(rows, tok)
    assert set(batch) == KEYS
    assert torch.equal(batch["input_ids"], rows[:, :-1]) and torch.equal(batch["labels"], rows[:, 1:])
    assert (batch["attention_mask"] == 1).all()
    # <|endoftext|> closes each document (a target) and opens the next (an input): nothing is dropped.
    assert (batch["labels"] == tok.eot_id).any()
    torch.manual_seed(0)
    out = CausalLM(tiny_config(tok, type_vocab_size=0))(**batch)
    assert torch.isfinite(out.loss)


def test_clm_batch_pads_documents_and_never_predicts_padding(tok):
    docs = [tok.encode(t) + [tok.eot_id] for t in TEXTS]
    batch = clm_batch(docs, tok)
    for b, doc in enumerate(docs):
        n = len(doc) - 1  # inputs of this document
        assert batch["input_ids"][b, :n].tolist() == doc[:-1]
        assert batch["labels"][b, :n].tolist() == doc[1:]
        assert (batch["labels"][b, n:] == IGNORE).all()
        width = batch["input_ids"].shape[1]
        real = min(len(doc), width)  # the closing <|endoftext|> is a real input whose target is padding
        assert batch["attention_mask"][b].tolist() == [1] * real + [0] * (width - real)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        clm_batch(torch.zeros(2, 1, dtype=torch.long), tok)


# --------------------------------------------------------------------------- sentence classification


def test_classification_batch_frames_truncates_and_pads(tok):
    batch = classification_batch(TEXTS, [0, 1, 0, 1, 1], tok, max_len=12)
    assert set(batch) == KEYS and batch["labels"].tolist() == [0, 1, 0, 1, 1]
    for b, text in enumerate(TEXTS):
        body = tok.encode(text)[:10]
        row = [tok.cls_id, *body, tok.sep_id]
        assert batch["input_ids"][b, : len(row)].tolist() == row
        assert batch["attention_mask"][b].sum() == len(row)
    short = classification_batch(["a b", "the cat sat"], None, tok, max_len=64)
    assert set(short) == {"input_ids", "attention_mask"}
    assert short["input_ids"].shape[1] == len(tok.encode("the cat sat")) + 2  # padded to the longest, not max_len
    with pytest.raises(ValueError, match="max_len"):
        classification_batch(TEXTS, None, tok, max_len=2)
    with pytest.raises(ValueError, match="labels"):
        classification_batch(TEXTS, [0, 1], tok, max_len=12)
    with pytest.raises(ValueError, match="class indices"):
        classification_batch(TEXTS[:1], ["pos"], tok, max_len=12)
    import numpy as np

    assert classification_batch(TEXTS[:2], np.array([1, 0]), tok, max_len=12)["labels"].tolist() == [1, 0]


# --------------------------------------------------------------------------- token classification


sentences = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
@given(words=sentences, max_len=st.integers(3, 40), data=st.data())
def test_ner_labels_sit_on_first_subtokens_and_map_back(tok, words, max_len, data):
    tags = [data.draw(st.lists(st.sampled_from(TAGS), min_size=len(s), max_size=len(s))) for s in words]
    batch = token_classification_batch(words, tags, tok, TAG_TO_ID, max_len)
    assert set(batch) == KEYS and batch["input_ids"].shape[1] <= max_len
    for b, sentence in enumerate(words):
        ids, wids = tok.encode_words(sentence)
        kept = wids[: max_len - 2]
        row = [tok.cls_id, *ids[: max_len - 2], tok.sep_id]
        assert batch["input_ids"][b, : len(row)].tolist() == row
        expected = [IGNORE] + [TAG_TO_ID[tags[b][w]] if i == 0 or kept[i - 1] != w else IGNORE
                               for i, w in enumerate(kept)] + [IGNORE]
        expected += [IGNORE] * (batch["labels"].shape[1] - len(expected))
        assert batch["labels"][b].tolist() == expected
    # One-hot logits of the gold labels give back the gold tags; words cut off by max_len get "O".
    logits = torch.nn.functional.one_hot(batch["labels"].clamp(min=0), len(TAGS)).float()
    predicted = word_predictions(logits, words, tok, max_len, TAGS)
    for b, sentence in enumerate(words):
        n_kept = len(set(tok.encode_words(sentence)[1][: max_len - 2]))
        assert predicted[b] == tags[b][:n_kept] + ["O"] * (len(sentence) - n_kept)


def test_ner_bad_input(tok):
    with pytest.raises(ValueError, match="'B-FOO' of sentence 1"):
        token_classification_batch([["a"], ["b"]], [["O"], ["B-FOO"]], tok, TAG_TO_ID, 16)
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        token_classification_batch([["a", "b"]], [["O"]], tok, TAG_TO_ID, 16)
    with pytest.raises(ValueError, match="logits must be"):
        word_predictions(torch.zeros(1, 3, len(TAGS)), [["a", "b", "c", "d"]], tok, 16, TAGS)
    unlabeled = token_classification_batch([["a", "b"]], None, tok, TAG_TO_ID, 16)
    assert set(unlabeled) == {"input_ids", "attention_mask"}


# --------------------------------------------------------------------------- the renderer


def test_render_masked_marks_mask_random_and_kept(tok):
    ids = tok.encode(" the cat sat on the mat")
    row = torch.tensor([tok.cls_id, *ids, tok.sep_id, tok.pad_id])
    masked, labels = row.clone(), torch.full_like(row, IGNORE)
    other = tok.encode(" dog")[0]
    labels[2], masked[2] = row[2], tok.mask_id  # -> [MASK]
    labels[3], masked[3] = row[3], other  # -> a random token
    labels[4] = row[4]  # kept
    piece = [tok.token_str(i) for i in ids]

    def marked(p, word):  # leading space outside the marker
        return p[: len(p) - len(p.lstrip())] + word

    expected = (piece[0] + marked(piece[1], "[MASK]")
                + marked(piece[2], f"~~{piece[2].lstrip()}~~→{tok.token_str(other).strip()}")
                + marked(piece[3], f"_{piece[3].lstrip()}_") + "".join(piece[4:]))
    assert render_masked(tok, row, masked, labels, color=False) == expected
    colored = render_masked(tok, row, masked, labels, color=True)
    assert "\x1b[" in colored and "[MASK]" in colored and "~~" not in colored


def test_show_masking_shows_every_strategy(tok):
    out = show_masking(tok, TEXTS[0], mask_prob=0.3, seed=1, color=False).splitlines()
    assert [line.split()[0] for line in out[:-1]] == list(STRATEGIES) and out[-1] == LEGEND
    assert all("[MASK]" in line or "~~" in line or "_" in line for line in out[:-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mlm_batch_on_the_gpu_never_waits_for_it(tok, strategy):
    ids, words = framed(tok, TEXTS)
    width = max(len(r) for r in ids)
    rows = torch.tensor([r + [tok.pad_id] * (width - len(r)) for r in ids]).cuda()
    word_ids = torch.tensor([w + [-1] * (width - len(w)) for w in words]).cuda()
    config = MaskingConfig(strategy=strategy, count="exact")
    g = torch.Generator(device="cuda")
    first = mlm_batch(rows, word_ids, tok, config, g.manual_seed(0))  # builds the cached id tables
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = mlm_batch(rows, word_ids, tok, config, g.manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(again[k].is_cuda and torch.equal(again[k], first[k]) for k in KEYS)
    selected = again["labels"] != IGNORE
    assert not (selected & ~maskable_positions(rows, tok)).any()
    assert torch.equal(again["attention_mask"], (rows != tok.pad_id).long())
