"""Tokenised corpora and rows: the cache is exact and verified when read, rows match a plain reference."""
import json
import os
import random

import numpy as np
import pytest
import torch

from minilm.store import fetch
from minilm.data.corpus import TokenizedCorpus, decoder_rows, encoder_rows, tokenize_corpus
from minilm.data.load import load_corpus
from minilm.data.tokenizer import Tokenizer

@pytest.fixture(scope="module")
def small():
    r = random.Random(0)
    words = ["the", "film", "was", "great", "awful", "naïve", "it's", "42", "!", "plot"]
    docs = [" ".join(r.choice(words) for _ in range(r.randint(0, 40))) for _ in range(60)]
    return docs, Tokenizer.train(docs, 300)


def test_tokenize_corpus_cached_and_exact(small, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    docs, tok = small
    corpus = tokenize_corpus(docs, tok, "small")
    assert isinstance(corpus.ids, np.memmap) and corpus.ids.dtype == np.uint16
    assert corpus.n_docs == len(docs) and corpus.doc_offsets[-1] == len(corpus.ids)
    for d, doc in enumerate(docs):
        ids, word_ids = tok.encode_with_word_ids(doc)
        lo, hi = corpus.doc_offsets[d], corpus.doc_offsets[d + 1]
        assert corpus.ids[lo:hi].tolist() == ids
        assert corpus.word_starts[lo:hi].tolist() == [i == 0 or w != word_ids[i - 1] for i, w in enumerate(word_ids)]
    again = tokenize_corpus(docs, tok, "small")
    assert np.array_equal(again.ids, corpus.ids)
    assert len(list((tmp_path / "tokenized").iterdir())) == 1
    tokenize_corpus(docs[:-1], tok, "small")  # different documents: a different cache entry
    assert len(list((tmp_path / "tokenized").iterdir())) == 2


def reference_stream(corpus, sep):
    """The documents one after another, `sep` after each non-empty one, with word numbers."""
    ids, words, n = [], [], 0
    for d in range(corpus.n_docs):
        lo, hi = corpus.doc_offsets[d], corpus.doc_offsets[d + 1]
        if hi == lo:
            continue
        for i in range(lo, hi):
            n += bool(corpus.word_starts[i])
            ids.append(int(corpus.ids[i]))
            words.append(n)
        ids.append(sep)
        words.append(None)
    return ids, words


@pytest.mark.parametrize("seq_len", [3, 16, 64])
def test_encoder_rows_match_reference(small, tmp_path, monkeypatch, seq_len):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    docs, tok = small
    corpus = tokenize_corpus(docs, tok, "small")
    input_ids, word_ids = encoder_rows(corpus, seq_len, tok)
    stream, words = reference_stream(corpus, tok.sep_id)
    width = seq_len - 2
    assert input_ids.shape == word_ids.shape == (len(stream) // width, seq_len)
    assert input_ids.dtype == word_ids.dtype == torch.long
    for r in range(len(input_ids)):
        body = stream[r * width:(r + 1) * width]
        assert input_ids[r].tolist() == [tok.cls_id] + body + [tok.sep_id]
        w = words[r * width:(r + 1) * width]
        first = next((x for x in w if x is not None), 0)
        # Word ids: -1 at specials; equal ids exactly where the stream says same word.
        expected = [-1] + [-1 if x is None else x - first for x in w] + [-1]
        got = word_ids[r].tolist()
        real = [i for i, x in enumerate(expected) if x != -1]
        assert [got[i] == -1 for i in range(seq_len)] == [x == -1 for x in expected]
        assert [[got[i] == got[j] for j in real] for i in real] == [[expected[i] == expected[j] for j in real]
                                                                   for i in real]
        assert min((got[i] for i in real), default=0) >= 0


@pytest.mark.parametrize("seq_len", [1, 8, 50])
def test_decoder_rows_match_reference(small, tmp_path, monkeypatch, seq_len):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    docs, tok = small
    corpus = tokenize_corpus(docs, tok, "small")
    rows = decoder_rows(corpus, seq_len, tok)
    stream, _ = reference_stream(corpus, tok.eot_id)
    n = (len(stream) - 1) // seq_len
    assert rows.shape == (n, seq_len + 1) and rows.dtype == torch.long
    assert rows.tolist() == [stream[i * seq_len:i * seq_len + seq_len + 1] for i in range(n)]


def test_rows_errors(small):
    docs, tok = small
    corpus = TokenizedCorpus(np.array([5, 6], dtype=np.uint16), np.ones(2, bool), np.array([0, 2]))
    with pytest.raises(ValueError, match="seq_len=2"):
        encoder_rows(corpus, 2, tok)
    with pytest.raises(ValueError, match="not enough for one row"):
        encoder_rows(corpus, 8, tok)
    with pytest.raises(ValueError, match="not enough for one row"):
        decoder_rows(corpus, 8, tok)
    assert decoder_rows(corpus, 2, tok).tolist() == [[5, 6, tok.eot_id]]


@pytest.mark.slow
def test_imdb_rows_fast_and_word_ids_sane():
    tok = Tokenizer.for_corpus("imdb", 8192, lowercase=True)
    corpus = tokenize_corpus(load_corpus("imdb"), tok, "imdb")
    assert 6_000_000 < len(corpus) < 9_000_000 and corpus.n_docs == 25_000
    input_ids, word_ids = encoder_rows(corpus, 128, tok)
    assert (input_ids[:, 0] == tok.cls_id).all() and (input_ids[:, -1] == tok.sep_id).all()
    assert ((word_ids == -1) == ((input_ids == tok.cls_id) | (input_ids == tok.sep_id))).all()
    rows = decoder_rows(corpus, 256, tok)
    assert (rows[:-1, -1] == rows[1:, 0]).all()
    assert (rows == tok.eot_id).sum() >= 24_000


# ---- the cache is verified when read ---------------------------------------------------


def _folder(tmp_path):
    (folder,) = (tmp_path / "tokenized").iterdir()
    return folder


def test_edited_token_ids_in_the_cache_are_rebuilt(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    docs, tok = small
    good = np.array(tokenize_corpus(docs, tok, "small").ids)
    path = _folder(tmp_path) / "ids.npy"
    edited = np.load(path)
    edited[:10] = (edited[:10] + 1) % tok.vocab_size  # same size, other tokens: used to train without complaint
    np.save(path, edited)
    capsys.readouterr()
    again = tokenize_corpus(docs, tok, "small")
    assert np.array_equal(again.ids, good)
    err = capsys.readouterr().err
    assert "ids.npy's sha256 differs from its stamp" in err and "tokenising 'small' again" in err
    assert [p.name for p in (tmp_path / "tokenized").iterdir()] == [_folder(tmp_path).name]  # no leftovers


def test_a_crash_leftover_is_removed_on_the_next_build(small, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    docs, tok = small
    tokenize_corpus(docs, tok, "small")
    folder = _folder(tmp_path)
    leftover, fresh = folder.with_name(f".{folder.name}.crashed"), folder.with_name(f".{folder.name}.building")
    leftover.mkdir()
    fresh.mkdir()
    os.utime(leftover, (0, 0))
    (folder / "stamp.json").unlink()
    tokenize_corpus(docs, tok, "small")
    assert not leftover.exists() and fresh.exists()  # another process may still be writing the young one


@pytest.mark.parametrize("damage", ["truncate", "no stamp", "bad stamp"])
def test_damaged_cache_folders_are_rebuilt(small, tmp_path, monkeypatch, capsys, damage):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    docs, tok = small
    good = tokenize_corpus(docs, tok, "small")
    good = [np.array(a) for a in (good.ids, good.word_starts, good.doc_offsets)]
    folder = _folder(tmp_path)
    if damage == "truncate":
        data = (folder / "word_starts.npy").read_bytes()
        (folder / "word_starts.npy").write_bytes(data[:len(data) // 2])
    elif damage == "no stamp":  # as written by an older minilm, or a copy cut short
        (folder / "stamp.json").unlink()
    else:
        (folder / "stamp.json").write_text("{not json")
    capsys.readouterr()
    again = tokenize_corpus(docs, tok, "small")
    assert all(np.array_equal(a, b) for a, b in zip(good, (again.ids, again.word_starts, again.doc_offsets)))
    assert "tokenising 'small' again" in capsys.readouterr().err


def test_cache_hashed_once_per_process(small, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    docs, tok = small
    tokenize_corpus(docs, tok, "small")
    calls = []
    real = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(fetch, "_HASHED", {})  # a fresh process
    tokenize_corpus(docs, tok, "small")
    tokenize_corpus(docs, tok, "small")
    assert len(calls) == 3  # three arrays, hashed on the first load only
    stamp = json.loads((_folder(tmp_path) / "stamp.json").read_text())
    assert sorted(stamp["files"]) == ["doc_offsets.npy", "ids.npy", "word_starts.npy"]
