"""Byte-pair encoding, the textbook way: the plain merge loop and the plain encoder.

`minilm.data.tokenizer` trains with `bpe_merges`, an incremental engine (pair counts updated
only where a merge changed something, a heap to find the best pair) and encodes with
tiktoken. This file is the definition those are tested against, written to be read:

    learn_merges   count every adjacent pair, merge the most frequent one everywhere, repeat
    encode_word    apply the learned merges, in the order they were learned, to one word

Design choices:
- Words are byte strings (a pre-token's UTF-8 bytes) and tokens are byte strings too, so a
  merge is a pair of byte strings and the vocabulary starts as the 256 single bytes.
- Training works on a table of word counts, never on the text: merges never cross a
  pre-token, so "the" seen 10,000 times is one entry of weight 10,000.
- Ties go to the smallest (left, right) pair as Python orders tuples of byte strings: the
  left token decides, then the right, and a byte string sorts before its extensions
  (b"a" < b"ab" < b"b"). That makes training deterministic; the fast engine breaks ties
  the same way by default (its `tie_break="largest"` is the opposite rule).
- Slow on purpose: every step recounts every pair of every word (O(merges x corpus)).
  That is fine for the small tables of the tests and the assignment; the engine is what
  trains real tokenizers.
"""
from __future__ import annotations

from collections import Counter

Word = tuple[bytes, ...]  # a word as its current tokens


def count_pairs(words: dict[Word, int]) -> Counter:
    """How often each adjacent pair of tokens occurs, over all words, weighted by word count.

    words maps a word (a tuple of tokens) to how often it occurs. A pair that occurs twice in
    one word counts twice: ("a", "a", "a") holds the pair ("a", "a") twice. Returns a Counter
    {(left, right): total count}; a word of one token contributes nothing.
    """
    # BEGIN SOLUTION bpe
    pairs: Counter = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += n
    return pairs
    # END SOLUTION bpe


def merge_pair(word: Word, pair: tuple[bytes, bytes]) -> Word:
    """Rewrite one word with `pair` merged: scanning left to right, every occurrence of
    (left, right) becomes the single token left + right, without overlaps.

    ("a", "a", "a") with pair ("a", "a") becomes ("aa", "a"): the scan takes the first two
    and moves on. The concatenation of the tokens never changes.
    """
    # BEGIN SOLUTION bpe
    left, right = pair
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
            out.append(left + right)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
    # END SOLUTION bpe


def learn_merges(word_counts: dict[bytes, int], n_tokens: int) -> list[tuple[bytes, bytes]]:
    """Learn byte-pair merges from a table of word counts {word bytes: occurrences}.

    Start from every word split into single bytes and a vocabulary of the 256 single bytes.
    Repeat: count the pairs (`count_pairs`); take the most frequent pair, ties broken by the
    smallest (left, right); record it; merge it in every word (`merge_pair`); add left + right
    to the vocabulary (a merge whose result is already a token adds nothing, but still
    counts as a merge). Stop when the vocabulary holds `n_tokens` tokens or no pair is left.
    Returns the merges in the order they were learned. `minilm.data.tokenizer.bpe_merges` returns
    exactly the same list, faster.
    """
    words: dict[Word, int] = Counter()
    for word, n in word_counts.items():
        words[tuple(bytes([b]) for b in word)] += n
    vocab = {bytes([b]) for b in range(256)}
    merges: list[tuple[bytes, bytes]] = []
    # BEGIN SOLUTION bpe
    while len(vocab) < n_tokens:
        pairs = count_pairs(words)
        if not pairs:
            break  # every word is a single token: nothing left to merge
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent, then smallest bytes
        merges.append(best)
        vocab.add(best[0] + best[1])
        merged: dict[Word, int] = Counter()
        for word, n in words.items():
            merged[merge_pair(word, best)] += n  # two words may become one: add their counts
        words = merged
    # END SOLUTION bpe
    return merges


def encode_word(word: bytes, merges: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Split one word (a pre-token's bytes) into tokens with the learned merges.

    Start from single bytes and apply every merge in the order it was learned (`merge_pair`),
    so a word is cut exactly as training cut it. Returns the tokens; their concatenation is
    `word`. For merges without duplicates (no token made twice) this equals tiktoken's
    lowest-rank-first rule, which is how `Tokenizer.encode` reaches the same tokens faster.
    """
    # BEGIN SOLUTION bpe
    tokens: Word = tuple(bytes([b]) for b in word)
    for pair in merges:
        if len(tokens) == 1:
            break  # nothing left to merge
        tokens = merge_pair(tokens, pair)
    return list(tokens)
    # END SOLUTION bpe
