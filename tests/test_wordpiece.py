"""WordPiece: the algorithm's contract, BERT's normalisation, and the same ids as transformers' BertTokenizer.

The reference is transformers' BertTokenizer (the `tokenizers` library underneath), built
from the very vocab.txt + tokenizer_config.json minilm reads, for a cased and an uncased
vocabulary trained here on real text (IMDB reviews, CoNLL sentences) plus other scripts.
"""
import functools
import json
import string
import unicodedata

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minilm.data.tokenizer import Tokenizer
from minilm.data.wordpiece import WordPiece, bert_normalize, pre_tokenize, wordpiece

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
OTHER_SCRIPTS = ["Ελληνικά ΣΟΦΊΑ και σοφία", "Русский текст, ёлка", "日本語のテキスト、漢字とかな", "中文分词测试",
                 "한국어 문장입니다", "العربية نص", "naïve café Zoë façade Ångström", "emoji 😀👍🏽 ok", "ß İstanbul ǅ ﬁ"]


# ---------------------------------------------------------------------------------------------- the algorithm


def test_wordpiece_contract():
    vocab = {"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3, "a": 4, "ab": 5, "abc": 6, "##c": 7, "##bc": 8, "##a": 9}
    assert wordpiece("unaffable", vocab, 0) == [1, 2, 3]
    assert wordpiece("abc", vocab, 0) == [6]  # longest first: abc, not ab ##c
    assert wordpiece("abcc", vocab, 0) == [6, 7]
    assert wordpiece("aa", vocab, 0) == [4, 9]  # inside a word only ##-pieces count
    assert wordpiece("abx", vocab, 0) == [0]  # one uncovered position makes the whole word [UNK]
    assert wordpiece("c", vocab, 0) == [0]  # "##c" does not start a word
    assert wordpiece("a" * 100, {"a": 1, "##a": 2}, 0) == [1] + [2] * 99
    assert wordpiece("a" * 101, {"a": 1, "##a": 2}, 0) == [0]  # longer than max_chars
    assert wordpiece("ab", {"a": 1, "@@b": 2}, 0, prefix="@@") == [1, 2]


@given(st.lists(st.sampled_from(["a", "b", "c", "ab", "bca"]), min_size=1, max_size=6).map("".join))
def test_wordpiece_pieces_spell_the_word_and_are_each_the_longest(word):
    vocab = {t: i for i, t in enumerate(["[UNK]", "a", "b", "ab", "bca", "##a", "##c", "##ab", "##ca", "##bc"])}
    ids = wordpiece(word, vocab, 0)
    tokens = [t for i in ids for t, j in vocab.items() if j == i]
    assume(ids != [0])  # a word greedy matching cannot cover is [UNK]: test_wordpiece_contract pins those
    pieces = [t.removeprefix("##") for t in tokens]
    assert "".join(pieces) == word
    start = 0
    for n, piece in enumerate(pieces):  # no longer piece was available at its position
        for end in range(start + len(piece) + 1, len(word) + 1):
            assert (word[start:end] if n == 0 else "##" + word[start:end]) not in vocab
        start += len(piece)


def test_normalisation_and_pre_tokenisation():
    assert bert_normalize("a\x00b\ufffdc\u200bd\te\x07", lowercase=False, strip_accents=False) == "abcd e"
    assert bert_normalize("Héllo 中文", lowercase=True, strip_accents=True) == "hello  中  文 "
    assert bert_normalize("Héllo", lowercase=False, strip_accents=False) == "Héllo"
    assert bert_normalize("a\udc80b", lowercase=False, strip_accents=False) == "ab"  # a lone surrogate: dropped
    assert bert_normalize("ΟΔΟΣ", lowercase=True, strip_accents=False) == "οδοσ"  # per character: no final sigma
    assert pre_tokenize("don't stop... $5+3=8") == ["don", "'", "t", "stop", ".", ".", ".", "$", "5", "+", "3", "=", "8"]
    assert pre_tokenize(" a\u3000b\u00a0c ") == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------- the reference


def train_vocab(texts, lowercase, size=3000):
    model = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    model.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=lowercase)
    model.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    trainer = tokenizers.trainers.WordPieceTrainer(vocab_size=size, special_tokens=SPECIALS, show_progress=False)
    model.train_from_iterator(texts, trainer)
    vocab = model.get_vocab()
    return sorted(vocab, key=vocab.get)


@functools.lru_cache(maxsize=None)
def corpus():
    from minilm.data.load import load_corpus, load_ner

    reviews = load_corpus("imdb")[:400]
    sentences = [s for s in load_ner("conll2003").train.words[:400]]
    return reviews, sentences


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def pair(request, tmp_path_factory):
    """(minilm WordPiece, transformers' tokenizer) read from the same vocab.txt + tokenizer_config.json."""
    lowercase = request.param
    reviews, sentences = corpus()
    vocab = train_vocab(reviews[:300] + [" ".join(s) for s in sentences[:300]] + OTHER_SCRIPTS * 3, lowercase)
    folder = tmp_path_factory.mktemp("uncased" if lowercase else "cased")
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase,
                                                              "tokenizer_class": "BertTokenizer"}))
    ours = Tokenizer.from_hf(folder)
    assert isinstance(ours, WordPiece) and ours.lowercase is lowercase
    return ours, transformers.AutoTokenizer.from_pretrained(folder)


def hf_ids(hf, text):
    return hf(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


@functools.lru_cache(maxsize=None)
def unicode_version_gap(char: str, lowercase: bool) -> bool:
    """True if `tokenizers` and minilm treat this one character differently (their Unicode tables differ)."""
    norm = tokenizers.normalizers.BertNormalizer(lowercase=lowercase)
    pre = tokenizers.pre_tokenizers.BertPreTokenizer()
    text = f"a{char}b"
    theirs = [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))]
    return theirs != pre_tokenize(bert_normalize(text, lowercase=lowercase, strip_accents=lowercase))


def test_real_text_gives_the_same_ids(pair):
    ours, hf = pair
    reviews, sentences = corpus()
    for text in reviews[300:] + OTHER_SCRIPTS + ["[MASK] and [CLS] are ordinary text here"]:
        assert ours.encode(text) == hf_ids(hf, text), text[:80]
    for words in sentences:  # CoNLL words: one word id per input word, as is_split_into_words gives
        ids, word_ids = ours.encode_words(words)
        enc = hf(words, is_split_into_words=True, add_special_tokens=False)
        assert ids == enc["input_ids"] and word_ids == enc.word_ids(), words
    ids, word_ids = ours.encode_with_word_ids(reviews[0])
    enc = hf(reviews[0], add_special_tokens=False)
    assert ids == enc["input_ids"] and word_ids == enc.word_ids()
    assert ours.encode_batch(reviews[:5]) == [ours.encode(r) for r in reviews[:5]]


# Any code point, mixed with the characters real text is made of (else ASCII would hardly ever be drawn).
TEXT = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(string.printable),
                         st.sampled_from("éèüñçÅßΣσİı中文日本語한국어😀\u00a0\u200b\u3000\x00\ufffd")), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_arbitrary_unicode_gives_the_same_ids(pair, text):
    ours, hf = pair
    gap = {c for c in text if unicode_version_gap(c, ours.lowercase)}
    clean = "".join(c for c in text if c not in gap)  # compared where both libraries read the same Unicode
    assert ours.encode(clean) == hf_ids(hf, clean)


def test_the_unicode_version_gap_is_rare_and_spares_the_common_scripts():
    """Characters new in recent Unicode versions (or re-categorised) can differ; no common script does."""
    common = [*range(0x20, 0x250), *range(0x370, 0x530), *range(0x3040, 0x3100), *range(0x4E00, 0x4E00 + 2000),
              *range(0xAC00, 0xAC00 + 500), *range(0x2000, 0x2070), *range(0x600, 0x6FF)]
    common = [c for c in common if unicodedata.ucd_3_2_0.category(chr(c)) != "Cn"]  # already in Unicode 3.2 (2002)
    for lowercase in (True, False):
        assert [hex(c) for c in common if unicode_version_gap(chr(c), lowercase)] == []
    sample = range(0, 0x10000, 7)  # every 7th BMP code point
    found = [c for c in sample if not 0xD800 <= c < 0xE000 and unicode_version_gap(chr(c), True)]
    assert len(found) < 0.01 * len(sample), len(found)


# ---------------------------------------------------------------------------------------------- the interface


def small():
    vocab = SPECIALS + ["the", "movie", "was", "great", "!", "un", "##watch", "##able", "mess", ".", "u", "s"]
    return WordPiece(vocab, lowercase=True)


def test_special_ids_decode_and_token_str():
    tok = small()
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.eot_id) == (0, 1, 2, 3, 4, 3)
    assert tok.special_ids == [0, 1, 2, 3, 4] and tok.vocab_size == len(tok) == 17
    ids = tok.encode("The movie was UNWATCHABLE!")
    assert [tok.token_str(i) for i in ids] == ["the", "movie", "was", "un", "##watch", "##able", "!"]
    assert tok.decode([tok.cls_id] + ids) == "[CLS] the movie was unwatchable !"
    assert tok.encode("[MASK]") == [tok.unk_id] * 3  # "[", "mask", "]" as text: nothing forged
    # "U.S." is four pre-tokens of word 0; a zero-width space normalises to nothing and gets no token.
    assert tok.encode_words(["U.S.", "\u200b", "mess"]) == ([15, 14, 16, 14, 13], [0, 0, 0, 0, 2])
    with pytest.raises(ValueError, match="words\\[1\\]"):
        tok.encode_words(["mess", ""])
    with pytest.raises(ValueError, match="out of range"):
        tok.token_str(17)


def test_saved_and_loaded_alone_and_inside_a_checkpoint(tmp_path):
    from minilm import MaskedLM, ModelConfig
    from minilm.train.checkpoint import load_model, save_checkpoint

    tok = small()
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    assert isinstance(again, WordPiece) and again.fingerprint() == tok.fingerprint()
    model = MaskedLM(ModelConfig.preset("bert-tiny", vocab_size=tok.vocab_size, n_layers=1))
    save_checkpoint(tmp_path / "ckpt", model, tok)
    _, loaded = load_model(tmp_path / "ckpt")
    assert isinstance(loaded, WordPiece) and loaded.encode("the movie!") == tok.encode("the movie!")
    predictions = model.fill_mask(loaded, "the movie was [MASK] !", top_k=3)  # fill-mask works on WordPiece too
    assert len(predictions) == 1 and len(predictions[0]) == 3


def test_batches_frame_and_align_with_wordpiece():
    from minilm.data.collate import classification_batch, token_classification_batch

    tok = small()
    batch = classification_batch(["the movie was great !", "mess"], [1, 0], tok, max_len=8)
    assert batch["input_ids"].tolist() == [[2, 5, 6, 7, 8, 9, 3], [2, 13, 3, 0, 0, 0, 0]]
    batch = token_classification_batch([["unwatchable", "mess"]], [["B-X", "O"]], tok, {"O": 0, "B-X": 1}, max_len=8)
    assert batch["labels"].tolist() == [[-100, 1, -100, -100, 0, -100]]


def test_exported_vocabulary_reads_the_same_in_transformers(tmp_path):
    tok = WordPiece(small().vocab, lowercase=False, strip_accents=True)
    tok.save_hf(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in ["the movie was great !", "The Movie", "thé mövie unwatchable."]:
        assert hf_ids(hf, text) == tok.encode(text)
    back = WordPiece.from_hf(tmp_path)
    assert back.to_dict() | {"name": ""} == tok.to_dict() | {"name": ""}


def test_tokenizer_json_reads_like_vocab_txt(pair, tmp_path):
    ours, hf = pair
    hf.save_pretrained(tmp_path)  # writes tokenizer.json too; it wins over vocab.txt
    (tmp_path / "vocab.txt").unlink(missing_ok=True)  # (transformers 5 writes none)
    from_json = Tokenizer.from_hf(tmp_path / "tokenizer.json")
    assert from_json.vocab == ours.vocab and from_json.lowercase == ours.lowercase
    text = corpus()[0][5]
    assert from_json.encode(text) == ours.encode(text)


def test_bad_tokenizer_files_name_the_file(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(ValueError) as info:
        Tokenizer.from_hf(tmp_path)
    assert "vocab.txt" in str(info.value) and "[MASK]" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(ValueError, match="tokenizer.json.*Unigram"):
        Tokenizer.from_hf(tmp_path)
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        Tokenizer.from_hf(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json, vocab.txt or vocab.json"):
        Tokenizer.from_hf((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_bench_checks_the_ids_and_reports_a_ratio(pair, tmp_path, capsys):
    import argparse

    from minilm.benchmarks import wordpiece as bench

    ours, hf = pair
    hf.save_pretrained(tmp_path)
    parser = argparse.ArgumentParser()
    bench.configure(parser)
    assert bench.run(parser.parse_args(["--folder", str(tmp_path), "--docs", "20", "--repeats", "1"])) == 0
    out = capsys.readouterr().out
    assert "same ids on 20/20 reviews" in out and "the time (goal <= 5x)" in out.splitlines()[-1]


# --------------------------------------------------------------------------------- special tokens and streams

WITH_SPECIALS = st.lists(st.one_of(TEXT, st.sampled_from(SPECIALS), st.sampled_from(["[", "]", "MASK", "[mask]", " "])),
                         max_size=6).map("".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=WITH_SPECIALS)
def test_allowed_special_gives_transformers_ids(pair, text):
    """transformers' BertTokenizer parses its special tokens in text: so does encode(..., allowed_special="all")."""
    ours, hf = pair
    gap = {c for c in text if unicode_version_gap(c, ours.lowercase)}
    clean = "".join(c for c in text if c not in gap)
    assert ours.encode(clean, allowed_special="all") == hf(clean, add_special_tokens=False)["input_ids"]
    assert ours.encode(clean) == hf_ids(hf, clean)  # the default: all of it is text


def test_special_arguments_as_in_the_bpe_tokenizer():
    tok = small()
    assert tok.special_tokens == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert tok.encode("the [MASK] was great", allowed_special={"[MASK]"}) == [5, 4, 7, 8]
    assert tok.encode_batch(["[CLS] mess"], allowed_special="all") == [[2, 13]]
    with pytest.raises(ValueError, match="'\\[SEP\\]' at character 4"):
        tok.encode("the [SEP]", disallowed_special="all")
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("the", allowed_special={"<|endoftext|>"})


STREAM_TEXT = st.lists(st.one_of(st.sampled_from(small().vocab), TEXT,
                                 st.sampled_from([" ", "\n", "\t", "\r", "\x0b", "\u3000", "unwatchable", "Σ", "é", "\u0301"])),
                       max_size=10).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=STREAM_TEXT, places=st.lists(st.integers(0, 1000), max_size=8), parse=st.booleans())
def test_any_split_of_the_stream_gives_the_ids_of_the_whole(text, places, parse):
    tok = small()
    places = sorted({p % (len(text) + 1) for p in places})
    chunks = [text[i:j] for i, j in zip([0] + places, places + [len(text)])]
    kw = {"allowed_special": "all"} if parse else {}
    assert list(tok.encode_iterable(chunks, **kw)) == tok.encode(text, **kw)
