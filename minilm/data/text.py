"""Text cleaning: what every corpus and labelled data set goes through before tokenising.

Design choices:

- The same cleaning for every source (`clean_text`): `\\r\\n` and `\\r` become `\\n`;
  the C1 control characters U+0080..U+009F are read as the Windows-1252 characters
  they almost always are in scraped text (rt-polarity has `\\x96` for an en dash);
  other control characters (except tab and newline) are removed.
- Invalid UTF-8 in a file is an error naming the file and line (`read_text`), never
  silently replaced: a replacement character in the training data is a bug found late.
- IMDB is cased HTML: `<br />` becomes a newline and the few inline tags (`<i>`,
  `<em>`, `<hr>`, ...) are removed (`strip_html`).
- rt-polarity is lower-cased and pre-tokenised ("a splash , jean-claud van damme or
  steven segal ." with quotes as `" conan "`): `detokenize` undoes the spaces so that
  both corpora look alike to an uncased tokenizer: a space is removed before
  `. , ! ? ; : ) ]` and `n't 's 're 've 'm 'll 'd`, after `( [ $`, inside paired
  double quotes and around the point or comma of a number ("$9 . 50" -> "$9.50").
- `docs_fingerprint` names a list of documents by content, for cache keys (tokenised
  corpora, trained tokenizers): an edited corpus is never served a stale cache.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence


def _control_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {c: None for c in range(32) if c not in (9, 10)}
    table[13] = "\n"
    table[127] = None
    for c in range(0x80, 0xA0):
        try:
            table[c] = bytes([c]).decode("cp1252")
        except UnicodeDecodeError:  # 5 code points cp1252 leaves undefined
            table[c] = None
    return table


_CONTROL = _control_table()


def clean_text(text: str) -> str:
    """Line ends to \\n, C1 controls read as Windows-1252, other control characters
    (except tab and newline) removed."""
    return text.replace("\r\n", "\n").translate(_CONTROL)


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_INLINE_TAG = re.compile(r"</?(?:i|b|u|em|strong|hr|p|span|font|a)(?:\s[^<>]*)?/?>", re.IGNORECASE)


def strip_html(text: str) -> str:
    """IMDB markup: `<br />` to a newline, inline tags (<i>, <em>, ...) removed."""
    return _INLINE_TAG.sub("", _BREAK.sub("\n", text))


_CLITIC = re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b")
_SPACE_BEFORE = re.compile(r" ([.,!?;:)\]}%])")
_SPACE_AFTER = re.compile(r"([(\[{$]) ")
_QUOTED = re.compile(r'" ([^"]*?) "')
_NUMBER = re.compile(r"(\d) ([.,]) (\d)")


def detokenize(text: str) -> str:
    """Undo the spaces of pre-tokenised text: "it 's a " big " film ." -> 'it's a "big" film.'"""
    text = _QUOTED.sub(r'"\1"', text)
    text = _NUMBER.sub(r"\1\2\3", text)
    text = _CLITIC.sub(r"\1", text)
    text = _SPACE_BEFORE.sub(r"\1", text)
    return _SPACE_AFTER.sub(r"\1", text)


def read_text(path: Path) -> str:
    """A UTF-8 file's text (a BOM is dropped); invalid UTF-8 is an error naming file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x}); minilm reads UTF-8 only, "
                         f"convert the file first (e.g. `iconv -f latin1 -t utf-8`)") from None


def docs_fingerprint(docs: Sequence[str]) -> str:
    """sha256 over the documents (and their boundaries)."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()
