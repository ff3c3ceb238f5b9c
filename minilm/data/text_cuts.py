"""Where a tokenizer may cut text: at special tokens it was asked to parse, and at safe places in a stream.

Both tokenizers (byte-level BPE in `minilm.data.tokenizer`, WordPiece in `minilm.data.wordpiece`)
use these two cuts, so they parse special tokens and stream text the same way.

Design choices:
- tiktoken's convention for special tokens in text. `allowed_special` ("all" or a set) names
  the special tokens whose text becomes that token; `disallowed_special` ("all": every special
  token not allowed, or a set) names those whose text makes `encode` raise. minilm's default
  is neither (tiktoken's is to raise): a special token's text is ordinary text, so text a user
  typed can never forge [MASK] or <|endoftext|>; parsing is asked for, per call.
- Where two special tokens overlap in the text, the leftmost wins and, of those starting at
  the same character, the longest (tiktoken leaves that to its set's iteration order).
- A stream is re-cut only where the tokenizer's pieces cannot cross: the tokenizer names the
  places with a pattern, and a place inside the text of a special token that is parsed or
  refused is skipped. Everything after the last such place is held until more text comes, so
  memory is bounded by one item of the stream plus the longest run without a safe place (for
  natural text, a word), not by the length of the stream.
"""
from __future__ import annotations

import functools
import re
from typing import Collection, Iterable, Iterator


def resolve(allowed_special, disallowed_special, specials: Collection[str]) -> tuple[frozenset, frozenset]:
    """(allowed, disallowed) as sets of special-token strings, checked against `specials` (the tokenizer's).

    Each argument is "all" or a collection of special tokens; disallowed "all" means every special
    token that is not allowed. A token that is not one of `specials` is an error, as is a bare
    string other than "all" (a common slip for a set holding it).
    """
    def as_set(value, name: str) -> frozenset:
        if isinstance(value, str):
            if value == "all":
                return frozenset(specials)
            raise ValueError(f"{name}={value!r}: expected 'all' or a set of special tokens, e.g. {{{value!r}}}")
        chosen = frozenset(value)
        unknown = sorted(chosen - set(specials), key=str)
        if unknown:
            raise ValueError(f"{name}: {unknown} are not special tokens of this tokenizer; "
                             f"its special tokens are {list(specials)}")
        return chosen

    allowed = as_set(allowed_special, "allowed_special")
    disallowed = frozenset(specials) - allowed if disallowed_special == "all" \
        else as_set(disallowed_special, "disallowed_special") - allowed
    return allowed, disallowed


@functools.lru_cache(maxsize=64)
def _special_pattern(tokens: frozenset) -> re.Pattern:
    longest_first = sorted(tokens, key=lambda s: (-len(s), s))  # at one place, the longest token matches
    return re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")


def split_specials(text: str, allowed: frozenset, disallowed: frozenset) -> list[str]:
    """`text` cut at the special tokens in `allowed | disallowed`: [ordinary, special, ordinary, ...,
    ordinary], specials at the odd positions (ordinary parts may be empty). Raises ValueError, naming
    the token and where it is, if one of `disallowed` is found."""
    tokens = allowed | disallowed
    if not tokens or not any(t in text for t in tokens):
        return [text]
    parts = _special_pattern(tokens).split(text)
    for i in range(1, len(parts), 2):
        if parts[i] in disallowed:
            where = sum(map(len, parts[:i]))
            raise ValueError(f"encode: the text holds the special token {parts[i]!r} at character {where}, "
                             f"and disallowed_special forbids it; pass allowed_special={{{parts[i]!r}}} to encode "
                             f"it as that token, or leave it out of disallowed_special to encode it as text")
    return parts


def regroup(texts: Iterable[str], last_place: re.Pattern, guard: Collection[str]) -> Iterator[str]:
    """The concatenation of `texts`, yielded again as consecutive non-empty pieces cut at safe places.

    `last_place.match(s, pos, endpos)` must match from `pos` up to the last safe place p with
    pos < p < endpos (a place is the boundary before s[p], so the character after it is in
    view), its match ending at p; e.g. "(?s).*\\S(?=\\s)" for "after a non-space, before a space".
    A place where a string of `guard` would be cut in two is not used. Each piece ends at the
    last usable place seen so far; the rest waits for more text.
    """
    reach = max(1, max((len(g) for g in guard), default=1) - 1)  # a guard string covering p lies within this of p
    pending, checked = "", 0  # no usable place in pending[:checked + 1]
    for text in [texts] if isinstance(texts, str) else texts:  # one string is one item, not its characters
        if not isinstance(text, str):
            raise TypeError(f"encode_iterable: the items must be str, got {type(text).__name__} "
                            f"(a file opened in binary mode? open it with encoding='utf-8')")
        pending += text
        stop = len(pending) - reach + 1  # places up to stop - 1 have every guard string around them in view
        end, cut = stop, 0
        while end > checked + 1 and (m := last_place.match(pending, checked, end)):
            place = m.end()
            if not any(g in pending[max(0, place - len(g) + 1):place + len(g) - 1] for g in guard):
                cut = place
                break
            end = place  # a guard string spans it: look further back
        checked = max(checked, stop - 1) - cut
        if cut:
            yield pending[:cut]
            pending = pending[cut:]
    if pending:
        yield pending
