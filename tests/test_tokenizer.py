"""Tokenizer: round trips, the BPE merge loop against the textbook one (minilm/data/bpe.py), special
tokens, word ids, persistence and the cached per-corpus tokenizer."""
import functools
import json
import random
import re
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.data.bpe import count_pairs, merge_pair
from minilm.data.bpe import learn_merges as naive_merges  # the textbook loop: the reference
from minilm.data.tokenizer import GPT2_PATTERN, SPECIAL_TOKENS, WHITESPACE, Tokenizer, bpe_merges, count_words

WORDS = ("the", "cat", "sat", "on", "mat", "hello", "world", "naïve", "café", "日本語", "it's", "42", "3.14",
         "don't", "[MASK]", "<|endoftext|>", "emoji😀", "tab\there", "new\nline")


def corpus(n_docs=200, seed=0):
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(1, 30))) for _ in range(n_docs)]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(corpus(), 400)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=10).map(lambda b: bytes(x % 4 + 97 for x in b)),
                       st.integers(1, 20), min_size=1, max_size=30),
       st.integers(0, 60))
def test_merges_equal_naive_reference(word_counts, extra):
    # A 4-letter alphabet forces ties, repeated letters (aaa) and merges that recreate a token.
    assert bpe_merges(word_counts, 256 + extra) == naive_merges(word_counts, 256 + extra)


def naive_merges_largest(word_counts, n_tokens):
    """The textbook loop with the other tie-break: the largest (left, right) among pairs of equal count."""
    words = Counter()
    for word, n in word_counts.items():
        words[tuple(bytes([b]) for b in word)] += n
    vocab, merges = {bytes([b]) for b in range(256)}, []
    while len(vocab) < n_tokens and (pairs := count_pairs(words)):
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab.add(best[0] + best[1])
        merged = Counter()
        for word, n in words.items():
            merged[merge_pair(word, best)] += n
        words = merged
    return merges


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=10).map(lambda b: bytes(x % 4 + 97 for x in b)),
                       st.integers(1, 20), min_size=1, max_size=30),
       st.integers(0, 60))
def test_largest_tie_break_equals_its_naive_reference(word_counts, extra):
    assert bpe_merges(word_counts, 256 + extra, tie_break="largest") == naive_merges_largest(word_counts, 256 + extra)


def test_tie_break_rule_on_a_small_table():
    # Every pair occurs once: the rule alone decides. Tuples of byte strings order left first, then right.
    counts = {b"ab": 1, b"cd": 1, b"ac": 1}
    assert bpe_merges(counts, 257) == [(b"a", b"b")]
    assert bpe_merges(counts, 257, tie_break="largest") == [(b"c", b"d")]
    # Once "ab" is a token, (a, x) and (ab, x) tie at 2: a byte string sorts before its extensions.
    counts = {b"abx": 2, b"ax": 2, b"ab": 1}
    assert bpe_merges(counts, 258) == [(b"a", b"b"), (b"a", b"x")]
    assert bpe_merges(counts, 258, tie_break="largest") == [(b"a", b"b"), (b"ab", b"x")]
    assert bpe_merges(counts, 300) == naive_merges(counts, 300)
    assert bpe_merges(counts, 300, tie_break="largest") == naive_merges_largest(counts, 300)
    with pytest.raises(ValueError, match="tie_break"):
        bpe_merges(counts, 300, tie_break="first")


def test_whitespace_class_is_the_patterns_whitespace():
    everything = "".join(map(chr, range(0x110000)))
    assert regex.findall(rf"[{WHITESPACE}]", everything) == regex.findall(r"\s", everything)
    assert re.findall(rf"[{WHITESPACE}]", everything) == regex.findall(r"\s", everything)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x1c\x85\xa0\u2003'sdlvetAΣσ9٣,.!é😀"), max_size=30)
                | st.text(), max_size=5),
       st.booleans())
def test_count_words_equals_counting_the_patterns_pieces(texts, lowercase):
    expected = Counter(w for t in texts for w in regex.findall(GPT2_PATTERN, t.lower() if lowercase else t))
    assert count_words(texts, lowercase=lowercase) == expected


def test_count_words_cuts_special_tokens_out():
    texts = ["one doc<|endoftext|>the next", "[MASK] x"]
    assert count_words(texts, special_tokens=["<|endoftext|>", "[MASK]"]) == Counter(
        ["one", " doc", "the", " next", " x"])


def test_merges_equal_naive_reference_on_real_words():
    counts = Counter(w.encode() for doc in corpus(50, seed=1) for w in regex.findall(GPT2_PATTERN, doc))
    assert bpe_merges(dict(counts), 330) == naive_merges(counts, 330)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_arbitrary_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_gpt2_and_its_known_ids():
    gpt2 = Tokenizer.gpt2()
    assert gpt2.encode("Hello world!") == [15496, 995, 0]
    assert gpt2.eot_id == 50256 and gpt2.vocab_size == 50257 + 5
    text = "Byte-level BPE: naïve café, 日本語 😀 <|endoftext|> [MASK]\n\ttabs"
    assert gpt2.decode(gpt2.encode(text)) == text
    assert not set(gpt2.encode(text)) & set(gpt2.special_ids)


def test_special_tokens_on_top_and_never_from_text(tok):
    assert tok.special_ids == list(range(tok.vocab_size - len(SPECIAL_TOKENS), tok.vocab_size))
    assert tok.eot_id == tok.special_ids[0]
    assert [tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.unk_id] == tok.special_ids[1:]
    text = "a [MASK] b [CLS][SEP] [PAD] [UNK] <|endoftext|>"
    ids = tok.encode(text)
    assert not set(ids) & set(tok.special_ids)
    assert tok.decode(ids) == text
    assert all(not set(x) & set(tok.special_ids) for x in tok.encode_batch([text, "[MASK]"]))


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_special_tokens_survive_round_trip(tok, left, right):
    ids = [tok.cls_id] + tok.encode(left) + [tok.mask_id, tok.sep_id] + tok.encode(right) + [tok.eot_id]
    assert tok.decode(ids) == "[CLS]" + left + "[MASK][SEP]" + right + "<|endoftext|>"
    assert [tok.token_str(i) for i in (tok.pad_id, tok.unk_id)] == ["[PAD]", "[UNK]"]


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_word_ids_index_pre_tokens(tok, text):
    ids, word_ids = tok.encode_with_word_ids(text)
    assert ids == tok.encode(text)
    pieces = regex.findall(GPT2_PATTERN, text)
    # The tokens of word k decode (as bytes) to exactly the k-th pre-token.
    got = [b""] * len(pieces)
    for i, w in zip(ids, word_ids):
        got[w] += tok.encoding.decode_single_token_bytes(i)
    assert got == [p.encode() for p in pieces]


def test_lone_surrogates_become_replacement_character(tok):
    text = "a\ud800b \udcff"  # not valid Unicode: what errors="surrogateescape" produces
    assert tok.encode(text) == tok.encode("a\ufffdb \ufffd")
    ids, word_ids = tok.encode_with_word_ids(text)
    assert ids == tok.encode(text) and word_ids[-1] == 3  # a, \ufffd, b, " \ufffd"
    assert tok.encode_words(["\udcff"])[0] == tok.encode("\ufffd")


def test_encode_words_as_in_running_text(tok):
    words = ["the", "cat", "sat", "naïve", ".", "42"]
    ids, word_ids = tok.encode_words(words)
    assert tok.decode(ids) == "the cat sat naïve . 42"
    pieces = [tok.encode(w if i == 0 else " " + w) for i, w in enumerate(words)]
    assert ids == [t for p in pieces for t in p]
    assert word_ids == [i for i, p in enumerate(pieces) for _ in p]
    with pytest.raises(ValueError, match=r"words\[1\]"):
        tok.encode_words(["a", ""])
    assert tok.encode_words([]) == ([], [])


def test_lowercase_option_is_saved(tmp_path):
    lower = Tokenizer.train(corpus(), 300, lowercase=True)
    assert lower.encode("Hello WORLD") == lower.encode("hello world")
    lower.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    assert again.lowercase and again.ranks == lower.ranks
    assert again.encode("Hello WORLD") == lower.encode("hello world")


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    text = " ".join(corpus(5, seed=3))
    assert again.encode(text) == tok.encode(text) and again.vocab_size == tok.vocab_size
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="format"):
        Tokenizer.load(tmp_path / "bad.json")


def test_training_is_deterministic_and_reaches_vocab_size():
    docs = corpus(300, seed=5)
    a = Tokenizer.train(docs, 320)
    b = Tokenizer.train(list(reversed(docs)), 320)
    assert a.ranks == b.ranks and a.vocab_size == 320
    # Learned tokens are frequent words of the corpus.
    assert b" hello" in a.ranks and "日本語".encode() in a.ranks
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(docs, 100)


def test_merged_tokens_shorten_text(tok):
    text = " ".join(corpus(20, seed=7))
    assert len(tok.encode(text)) < 0.5 * len(text.encode())
    assert tok.token_str(tok.encode(" hello")[0]).startswith(" h")
    assert tok.token_str(tok.encode("日")[0]) == "\\xe6"  # a partial UTF-8 character is shown as bytes


def test_decode_rejects_out_of_range(tok):
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])
    assert tok.decode(np.array(tok.encode("the cat"))) == "the cat"


def test_for_corpus_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "docs.txt").write_text("\n".join(corpus(100, seed=9)), encoding="utf-8")
    first = Tokenizer.for_corpus(str(tmp_path / "docs.txt"), 320)
    cached = list((tmp_path / "cache" / "tokenizers").glob("*.json"))
    assert len(cached) == 1 and first.lowercase
    mtime = cached[0].stat().st_mtime_ns
    second = Tokenizer.for_corpus(str(tmp_path / "docs.txt"), 320)
    assert second.ranks == first.ranks and cached[0].stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------------- special tokens in text

USER_SPECIALS = ["<|im_start|>", "<|im_end|>", "<| spaced token |>"]
# Words the tokenizers learned, ordinary text, whitespace of every kind, near misses of special tokens, and
# the special tokens themselves.
PIECES = st.one_of(st.sampled_from(WORDS).map(lambda w: " " + w), st.sampled_from(WORDS), st.text(max_size=12),
                   st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x85\u3000'sdtlveAΣσé9,.!<|>[]"), max_size=12),
                   st.sampled_from(["<|", "|>", "[MASK", "MASK]", "<|endoftext", "<| spaced", "token |>", "[", " "]),
                   st.sampled_from(list(SPECIAL_TOKENS) + USER_SPECIALS))
TEXT_WITH_SPECIALS = st.lists(PIECES, max_size=12).map("".join)


@pytest.fixture(scope="module")
def chat_tok():
    docs = [d.replace("the", "<|im_start|>the") + "<| spaced token |>" for d in corpus(200)]
    return Tokenizer.train(docs, 420, special_tokens=USER_SPECIALS)


def tiktoken_of(tok):
    import tiktoken

    return tiktoken.Encoding("reference", pat_str=tok.pattern, special_tokens=tok.special_tokens,
                             mergeable_ranks={t: i for i, t in enumerate(tok.ranks)})


@settings(max_examples=300, deadline=None)
@given(TEXT_WITH_SPECIALS, st.sets(st.sampled_from(list(SPECIAL_TOKENS) + USER_SPECIALS)))
def test_allowed_special_gives_tiktokens_ids(chat_tok, text, subset):
    reference = tiktoken_of(chat_tok)
    assert chat_tok.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
    assert chat_tok.encode(text, allowed_special=subset) == reference.encode(text, allowed_special=subset,
                                                                             disallowed_special=())
    assert chat_tok.encode(text) == reference.encode_ordinary(text)  # the default: all of it is text
    assert chat_tok.encode_batch([text, text[::-1]], allowed_special=subset) == [
        chat_tok.encode(t, allowed_special=subset) for t in (text, text[::-1])]


def test_allowed_special_on_gpt2_ranks():
    gpt2 = Tokenizer.gpt2()
    assert gpt2.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    assert gpt2.encode("hello <|endoftext|>", allowed_special={"<|endoftext|>"}) == [31373, 220, 50256]
    assert 50256 not in gpt2.encode("hello <|endoftext|>")


def test_disallowed_special_raises_one_line_naming_the_token(chat_tok):
    text = "fine so far <|im_end|> and then"
    for disallowed in ("all", {"<|im_end|>"}):
        with pytest.raises(ValueError) as info:
            chat_tok.encode(text, disallowed_special=disallowed)
        assert "'<|im_end|>' at character 12" in str(info.value) and "\n" not in str(info.value)
    assert chat_tok.encode(text, disallowed_special={"[MASK]"}) == chat_tok.encode(text)  # not in the text
    # allowed wins over disallowed="all", as in tiktoken
    assert chat_tok.special_tokens["<|im_end|>"] in chat_tok.encode(
        text, allowed_special={"<|im_end|>"}, disallowed_special="all")
    with pytest.raises(ValueError, match="expected 'all' or a set"):
        chat_tok.encode(text, allowed_special="<|im_end|>")
    with pytest.raises(ValueError, match=r"\['<\|nope\|>'\] are not special tokens"):
        chat_tok.encode(text, allowed_special={"<|nope|>"})


def test_specials_are_found_before_lower_casing():
    tok = Tokenizer.train(corpus(100), 300, lowercase=True)
    ids = tok.encode("A [MASK] B", allowed_special={"[MASK]"})
    assert ids == tok.encode("a ") + [tok.mask_id] + tok.encode(" b")
    assert tok.mask_id not in tok.encode("A [MASK] B")


def test_overlapping_specials_the_longest_wins():
    tok = Tokenizer([bytes([b]) for b in range(256)], special_tokens=["<|a|>", "<|a|>b", "b<|"])
    a, ab, b_ = (tok.special_tokens[s] for s in ("<|a|>", "<|a|>b", "b<|"))
    assert tok.encode("x<|a|>b<|a|>", allowed_special="all") == [ord("x"), ab, a]
    assert tok.encode("xb<|a|>", allowed_special="all") == [ord("x"), b_] + tok.encode("a|>")


# ---------------------------------------------------------------------------------- the user's special tokens


def test_user_special_tokens_are_saved_and_never_learned(chat_tok, tmp_path):
    ids = chat_tok.special_tokens
    n = len(chat_tok.ranks)
    assert list(ids) == list(SPECIAL_TOKENS) + USER_SPECIALS and list(ids.values()) == list(range(n, n + 9))
    assert chat_tok.vocab_size == n + 9 and set(chat_tok.special_ids) == set(ids.values())
    assert not [r for r in chat_tok.ranks if b"<|" in r or b"|>" in r]  # the trainer cut their text out
    chat_tok.save(tmp_path / "chat.json")
    again = Tokenizer.load(tmp_path / "chat.json")
    assert again.special_tokens == ids and again.fingerprint() == chat_tok.fingerprint()
    text = "<|im_start|>user\nhello<|im_end|>"
    assert again.encode(text, allowed_special="all")[0] == ids["<|im_start|>"]
    assert again.decode(again.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match="more than once"):
        Tokenizer.train(corpus(10), 300, special_tokens=["<|x|>", "<|x|>"])
    with pytest.raises(ValueError, match="list of strings"):
        Tokenizer.train(corpus(10), 300, special_tokens="<|x|>")
    with pytest.raises(ValueError, match="vocab_size.*9 special tokens"):
        Tokenizer.train(corpus(10), 264, special_tokens=USER_SPECIALS)
    # The built-in six may be listed too (tiktoken users list <|endoftext|>): they stay where they are.
    listed = Tokenizer.train(corpus(10), 300, special_tokens=["<|endoftext|>", "<|im_start|>"])
    assert list(listed.special_tokens)[-2:] == ["[UNK]", "<|im_start|>"]


def test_files_without_user_specials_are_written_and_read_as_before(tok, tmp_path):
    assert list(tok.to_dict()) == ["format", "name", "lowercase", "pattern", "special_tokens", "ranks"]
    assert tok.to_dict()["special_tokens"] == list(SPECIAL_TOKENS)
    committed = Tokenizer.load(Path(__file__).parent.parent / "minilm" / "assets" / "pretrained" / "tokenizer.json")
    assert list(committed.special_tokens) == list(SPECIAL_TOKENS)


def test_hand_edited_files_get_one_line_naming_the_file(tok, tmp_path):
    good = tok.to_dict()
    cases = {"no-ranks": ({k: v for k, v in good.items() if k != "ranks"}, "no 'ranks'"),
             "base64": (good | {"ranks": good["ranks"][:300] + ["not base64!"]}, r"ranks\[300\]"),
             "regex": (good | {"pattern": "(unclosed"}, "not a regular expression"),
             "specials": (good | {"special_tokens": ["[PAD]"]}, "special_tokens"),
             "bytes": (good | {"ranks": good["ranks"][256:]}, "256 single bytes")}
    for name, (d, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(d))
        with pytest.raises(ValueError) as info:
            Tokenizer.load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
        assert regex.search(message, str(info.value)), (name, str(info.value))


def test_user_specials_through_hugging_face_files(chat_tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    chat_tok.save_hf(tmp_path)
    back = Tokenizer.from_hf(tmp_path)
    assert back.special_tokens == chat_tok.special_tokens and back.ranks == chat_tok.ranks
    (tmp_path / "tokenizer.json").unlink()  # vocab.json + the config's additional_special_tokens read the same
    assert Tokenizer.from_hf(tmp_path).special_tokens == chat_tok.special_tokens
    chat_tok.save_hf(tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\nhello there<|im_end|> [MASK] done<| spaced token |>"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == chat_tok.encode(text, allowed_special="all")


# ---------------------------------------------------------------------------------------------- streaming


def cut_at(text, places):
    places = sorted({p % (len(text) + 1) for p in places})
    return [text[i:j] for i, j in zip([0] + places, places + [len(text)])]


@settings(max_examples=300, deadline=None)
@given(TEXT_WITH_SPECIALS, st.lists(st.integers(0, 10_000), max_size=12), st.booleans())
def test_any_split_of_the_stream_gives_the_ids_of_the_whole(chat_tok, text, places, parse):
    chunks = cut_at(text, places)
    assert "".join(chunks) == text
    kw = {"allowed_special": "all"} if parse else {}
    assert list(chat_tok.encode_iterable(chunks, **kw)) == chat_tok.encode(text, **kw)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(" \n\tΣσΑΒ'sİı.[MASK]"), max_size=40),
       st.lists(st.integers(0, 100), max_size=8))
def test_streaming_an_uncased_tokenizer_lower_cases_as_the_whole(text, places):
    tok = uncased()
    kw = {"allowed_special": {"[MASK]"}}
    assert list(tok.encode_iterable(cut_at(text, places), **kw)) == tok.encode(text, **kw)


@functools.lru_cache(maxsize=None)
def uncased():
    return Tokenizer.train(corpus(50) + ["ΣΟΦΟΣ σοφός İstanbul"] * 5, 300, lowercase=True)


def test_streaming_raises_at_a_disallowed_special_and_checks_arguments_at_once(chat_tok):
    stream = chat_tok.encode_iterable(["fine ", "then <|im_", "end|> more"], disallowed_special="all")
    with pytest.raises(ValueError, match="<\\|im_end\\|>"):
        list(stream)
    with pytest.raises(ValueError, match="not special tokens"):
        chat_tok.encode_iterable(iter(()), allowed_special={"<|nope|>"})  # before any item is read
    with pytest.raises(TypeError, match="must be str"):
        list(chat_tok.encode_iterable([b"bytes"]))
    assert list(chat_tok.encode_iterable("one string, not a stream")) == chat_tok.encode("one string, not a stream")


def test_streaming_memory_does_not_grow_with_the_stream(chat_tok):
    """Peak Python memory while streaming 4x more text stays where it was (and far below the text's size)."""
    def lines(n):
        r = random.Random(0)
        for _ in range(n):
            yield " ".join(r.choice(WORDS) for _ in range(30)) + "\n"

    peaks = []
    for n in (2_000, 8_000):
        tracemalloc.start()
        n_ids = sum(1 for _ in chat_tok.encode_iterable(lines(n)))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert n_ids > 50 * n
    size = 8_000 * 30 * 5  # about the bytes of the longer stream
    assert peaks[1] < 1.2 * peaks[0] and peaks[1] < size / 10, peaks


def test_bench_tokenizer_prints_both_ratios_and_minilms_steps(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    from minilm.cli import main
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus(40, seed=3)))
    assert main(["bench", "tokenizer", "--corpus", str(path), "--vocab-size", "400", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "ratio minilm / tokenizers" in out and "(goal >= 0.8x)" in out
    assert "counting" in out and "learning the merges" in out


def test_bpe_merges_leaves_the_garbage_collector_as_it_found_it():
    import gc
    assert gc.isenabled()
    bpe_merges({b"aab": 3}, 258)
    with pytest.raises(ValueError):
        bpe_merges({b"aab": 3}, 258, tie_break="first")
    assert gc.isenabled()
    gc.disable()
    try:
        bpe_merges({b"aab": 3}, 258)
        assert not gc.isenabled()
    finally:
        gc.enable()
