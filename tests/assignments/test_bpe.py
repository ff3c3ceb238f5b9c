"""Assignment bpe: the textbook merge loop and encoder (minilm/data/bpe.py) against the fast engine and tiktoken.

`bpe` is the student's module (minilm.course.boundary): imported here when the tests run by hand,
reached through the grader's worker when graded. The engine and tiktoken are the grader's.
"""
import random
from collections import Counter

import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minilm.course.boundary import student
from minilm.data.tokenizer import GPT2_PATTERN, Tokenizer, bpe_merges

bpe = student("minilm.data.bpe")

# Words over a 4-letter alphabet force ties, repeated letters (aaa) and merges that recreate a token.
small_tables = st.dictionaries(st.binary(min_size=1, max_size=10).map(lambda b: bytes(x % 4 + 97 for x in b)),
                               st.integers(1, 20), min_size=1, max_size=30)
tokens = st.lists(st.sampled_from([b"a", b"b", b"ab", b"ba", b"aa"]), max_size=12).map(tuple)


def test_count_pairs_weights_by_word_count():
    words = {(b"a", b"a", b"a"): 2, (b"a", b"b"): 5, (b"b",): 7, (b"ab", b"a"): 1}
    got = bpe.count_pairs(words)
    assert dict(got) == {(b"a", b"a"): 4, (b"a", b"b"): 5, (b"ab", b"a"): 1}, \
        "a pair counts once per occurrence (aaa holds aa twice), times the word's count; one-token words add nothing"
    assert bpe.count_pairs({}) == Counter()


def greedy_merge(word, pair):
    """The merge the contract describes, written another way: scan left to right, take each occurrence."""
    out, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


@settings(max_examples=200, deadline=None)
@given(word=tokens, pair=st.sampled_from([(b"a", b"a"), (b"a", b"b"), (b"ab", b"a"), (b"b", b"ba")]))
@example(word=(b"a", b"a", b"a"), pair=(b"a", b"a"))  # aaa -> (aa, a): the scan takes the first two
def test_merge_pair_is_left_to_right_without_overlap(word, pair):
    merged = bpe.merge_pair(word, pair)
    assert isinstance(merged, tuple), f"merge_pair should return a tuple of tokens, got {type(merged).__name__}"
    assert b"".join(merged) == b"".join(word), f"{word} with {pair} gave {merged}: a merge must not change the " \
                                               "bytes of the word"
    assert pair not in set(zip(merged, merged[1:])), f"{pair} is still adjacent in {merged}: a merge rewrites " \
                                                     "every occurrence"
    assert merged == greedy_merge(word, pair), f"{word} with {pair} gave {merged}, expected " \
                                               f"{greedy_merge(word, pair)}: left to right, without overlaps"


@settings(max_examples=80, deadline=None)
@given(small_tables, st.integers(0, 60))
def test_learn_merges_equals_the_fast_engine(word_counts, extra):
    ours, engine = bpe.learn_merges(word_counts, 256 + extra), bpe_merges(word_counts, 256 + extra)
    for step, (a, b) in enumerate(zip(ours, engine)):
        assert a == b, f"merge {step} differs: yours {a}, the engine's {b} (counts: {word_counts}); " \
                       "most frequent pair first, ties to the smallest (left, right)"
    assert len(ours) == len(engine), f"you learned {len(ours)} merges, the engine {len(engine)}: stop when " \
                                     "the vocabulary holds n_tokens tokens or no pair is left"


def english(n_docs, seed):
    words = ("the", "cat", "sat", "on", "mat", "hello", "world", "naïve", "café", "it's", "42", "don't",
             "there", "then", "theory", "other", "another")
    r = random.Random(seed)
    return [" ".join(r.choice(words) for _ in range(r.randint(1, 30))) for _ in range(n_docs)]


def test_learn_merges_on_real_words():
    counts = Counter(w.encode() for doc in english(60, seed=1) for w in regex.findall(GPT2_PATTERN, doc))
    assert bpe.learn_merges(dict(counts), 330) == bpe_merges(dict(counts), 330)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["the", "cat", "theory", "other", "then", "café", "42", "hello", "x", "thé"]),
                min_size=1, max_size=12), st.integers(0, 2**16))
def test_encode_word_matches_the_tokenizer(words, seed):
    docs = english(80, seed=7)
    counts = Counter(w.encode() for doc in docs for w in regex.findall(GPT2_PATTERN, doc))
    merges = bpe_merges(dict(counts), 320)
    made = [a + b for a, b in merges]
    assert len(set(made)) == len(made)  # no duplicate merges: tiktoken's rule is then the merge order
    tok = Tokenizer([bytes([b]) for b in range(256)] + made)
    text = " ".join(random.Random(seed).sample(words, len(words)))
    expected = [tok.encoding.decode_single_token_bytes(i) for i in tok.encode(text)]
    got = [t for piece in regex.findall(GPT2_PATTERN, text) for t in bpe.encode_word(piece.encode(), merges)]
    assert got == expected, f"{text!r}: your tokens {got}, the tokenizer's {expected}"


# Words over the tables' alphabet (so learnt merges apply, again and again), with some other bytes mixed in.
words = st.lists(st.one_of(st.sampled_from(b"abcd"), st.integers(0, 255)), max_size=24).map(bytes)


@settings(max_examples=100, deadline=None)
@given(words, small_tables)
@example(b"", {b"ab": 1})  # the empty word has no tokens
def test_encode_word_keeps_the_bytes(word, table):
    merges = bpe_merges(table, 280)  # the engine's merges: this test is about encode_word alone
    pieces = bpe.encode_word(word, merges)
    assert isinstance(pieces, list), f"encode_word should return a list of tokens, got {type(pieces).__name__}"
    assert b"".join(pieces) == word, f"the tokens {pieces} of {word} must concatenate back to the word"
    vocab = {bytes([b]) for b in range(256)} | {a + b for a, b in merges}
    assert all(p in vocab for p in pieces), f"{pieces} holds a token no merge made"
    expected = tuple(bytes([b]) for b in word)
    for pair in merges:  # the contract, written another way: every merge, in the order it was learned
        expected = greedy_merge(expected, pair)
    assert pieces == list(expected), f"{word}: your tokens {pieces}, with every merge applied in order {list(expected)}"
