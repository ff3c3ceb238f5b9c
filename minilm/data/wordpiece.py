"""WordPiece: BERT's tokenizer, read from a Hugging Face folder and served with minilm's interface.

    tok = Tokenizer.from_hf("path/to/bert")     # a WordPiece (vocab.txt or tokenizer.json inside)
    tok.encode("Unaffable!")                    # the ids of un, ##aff, ##able, ! in that vocabulary

Where byte-level BPE (minilm/data/tokenizer.py) builds words up from bytes by learned merges,
WordPiece cuts each word down into the longest pieces its vocabulary has, and gives up with
[UNK] when a word cannot be covered. Encoding runs in four steps, each one function here:

    bert_normalize   drop control characters, space out CJK characters, strip accents and
                     lower-case (when the checkpoint says so)
    pre_tokenize     split on whitespace and around every punctuation character
    wordpiece        each word: greedy longest-match-first pieces, "##" inside a word
    WordPiece        the tokenizer object: vocabulary, special ids, word ids, save / load

Design choices:
- The rules follow the `tokenizers` library's BertNormalizer, BertPreTokenizer and WordPiece
  model, which is what transformers' BertTokenizer runs: characters of category Cc, Cf and Co
  are dropped (tab, newline and carriage return are whitespace), as are U+0000 and U+FFFD;
  whitespace is Unicode's White_Space property; punctuation is every ASCII punctuation
  character plus Unicode category P; strip_accents defaults to lowercase; lower-casing is per
  character (no final-sigma rule), and accents go through NFD before the case. Unicode's own
  tables are Python's (`unicodedata`, `regex`), so a character whose category changed between
  Unicode versions can be classified differently from a library built on older tables: the
  tests measure that set and compare ids everywhere else.
- `wordpiece` is the readable algorithm, and the one used: a word cache makes it fast, since
  text repeats its words (Zipf). The cache maps a normalised word to its ids; it is bounded.
- The same interface as `minilm.Tokenizer` (encode, encode_batch, encode_with_word_ids,
  encode_words, decode, token_str, the special ids, vocab_size, save / load, fingerprint), so
  batches, masking, fine-tuning and fill-mask run on it unchanged. `eot_id` is [SEP]: BERT
  separates documents with it. A word id is the index of the pre-token a token came from (a
  punctuation mark is a word of its own), as `word_ids()` of transformers' fast tokenizers.
- Text such as "[MASK]" is ordinary text here unless `encode` is asked to parse it
  (`allowed_special`, tiktoken's convention, as in minilm's BPE: `minilm.data.text_cuts`), so
  user text cannot forge a special token. `encode_iterable` streams text, cut only before a
  space, tab or newline: words never span one and normalisation does not look across it.
- Saved as one JSON file (`save` / `Tokenizer.load`) inside minilm checkpoints, and as
  vocab.txt + tokenizer_config.json (`save_hf`) for transformers.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import regex

from minilm.data import text_cuts
from minilm.store.atomic import atomic_write_text

FORMAT = "minilm-wordpiece/1"
SPECIAL_NAMES = ("pad", "unk", "cls", "sep", "mask")
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}

# U+0000, U+FFFD and control/format/private-use characters, except the three whitespace controls; and lone
# surrogates (a Python str that is not valid Unicode, e.g. from errors="surrogateescape"), as U+FFFD would be.
_DROP = regex.compile(r"[\x00\ufffd\p{Cc}\p{Cf}\p{Co}\p{Cs}--[\t\n\r]]", regex.V1)
_SPACE = regex.compile(r"[\t\n\r\p{White_Space}]")
# The CJK Unified Ideograph blocks (not Hangul, Hiragana or Katakana, which are written with spaces).
_CJK = regex.compile("[\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
                     "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f]")
_MARKS = regex.compile(r"\p{Mn}")
_PUNCT = r"\p{P}!-/:-@\[-`{-~"  # Unicode punctuation and all ASCII punctuation ($, +, <, =, >, ^, `, |, ~ too)
_WORDS = regex.compile(rf"[^\p{{White_Space}}{_PUNCT}]+|[{_PUNCT}]")
_ASCII_DROP = regex.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LAST_PLACE = re.compile(r"(?s).+(?=[ \t\n\r])")  # encode_iterable's safe places: before a space, tab or newline
CACHE_WORDS = 1 << 20  # the word cache is emptied when it holds this many words


def bert_normalize(text: str, *, lowercase: bool, strip_accents: bool, chinese_chars: bool = True) -> str:
    """BERT's normalisation of `text`: what the pre-tokenizer sees.

    Drops U+0000, U+FFFD and characters of category Cc, Cf, Co (tab, newline, carriage return
    excepted), turns whitespace into spaces, puts spaces around CJK ideographs (if
    chinese_chars), removes non-spacing marks after NFD (if strip_accents), lower-cases
    character by character (if lowercase).
    """
    if text.isascii():  # the common case: no CJK, no accents, only ASCII controls to drop
        text = _SPACE.sub(" ", _ASCII_DROP.sub("", text))
        return text.lower() if lowercase else text
    text = _SPACE.sub(" ", _DROP.sub("", text))
    if chinese_chars:
        text = _CJK.sub(r" \g<0> ", text)
    if strip_accents:
        text = _MARKS.sub("", unicodedata.normalize("NFD", text))
    if lowercase:
        # str.lower() applies Unicode's final-sigma rule (a word-final Σ becomes ς); BERT's is per character.
        text = "".join(map(str.lower, text)) if "Σ" in text else text.lower()
    return text


def pre_tokenize(text: str) -> list[str]:
    """Normalised text -> words: runs of characters that are neither whitespace nor punctuation,
    and every punctuation character on its own. Whitespace is dropped."""
    return _WORDS.findall(text)


def wordpiece(word: str, vocab: Mapping[str, int], unk_id: int, *, prefix: str = "##",
              max_chars: int = 100) -> list[int]:
    """WordPiece's encoding of one word: greedy longest-match-first.

    Contract: from the start of `word`, take the longest piece that is in `vocab`, looking it
    up as-is at the start of the word and as `prefix + piece` anywhere after; continue after
    it until the word is used up. If at some position no piece (not even one character) is in
    the vocabulary, or the word is longer than `max_chars` characters, the whole word is one
    [UNK]: returns [unk_id]. Otherwise the pieces' ids, in order. `word` is non-empty and
    already normalised and pre-tokenised (no whitespace inside).

    >>> wordpiece("unaffable", {"un": 0, "##aff": 1, "##able": 2}, unk_id=3)
    [0, 1, 2]
    """
    if len(word) > max_chars:
        return [unk_id]
    ids = []
    start = 0
    while start < len(word):
        end = len(word)
        while end > start:  # shrink the candidate from the right until the vocabulary has it
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                break
            end -= 1
        else:
            return [unk_id]  # nothing covers position `start`: the word is unknown
        start = end
    return ids


class WordPiece:
    """BERT's WordPiece tokenizer with minilm's tokenizer interface.

    `vocab` lists the tokens by id (vocab.txt's lines); `specials` names the tokens that play
    [PAD], [UNK], [CLS], [SEP] and [MASK] (all must be in the vocabulary).
    """

    def __init__(self, vocab: Sequence[str], *, lowercase: bool, strip_accents: bool | None = None,
                 chinese_chars: bool = True, specials: Mapping[str, str] | None = None, prefix: str = "##",
                 max_chars: int = 100, name: str = "wordpiece"):
        self.vocab = list(vocab)
        self.ids = {}
        for i, token in enumerate(self.vocab):
            self.ids[token] = i  # a token listed twice answers with its last line, as transformers reads vocab.txt
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self.chinese_chars = bool(chinese_chars)
        self.specials = {**BERT_SPECIALS, **(specials or {})}
        unknown = set(self.specials) - set(SPECIAL_NAMES)
        if unknown:
            raise ValueError(f"specials: unknown role(s) {sorted(unknown)}; expected {list(SPECIAL_NAMES)}")
        missing = {role: tok for role, tok in self.specials.items() if tok not in self.ids}
        if missing:
            raise ValueError(f"the vocabulary ({len(self.vocab)} tokens) has no {missing}: every one of "
                             f"{list(SPECIAL_NAMES)} needs a token in it")
        self.prefix = prefix
        self.max_chars = int(max_chars)
        self.name = name
        self._cache: dict[str, tuple[int, ...]] = {}

    # ---- construction and persistence --------------------------------------------------

    @classmethod
    def from_hf(cls, path) -> "WordPiece":
        """Read a Hugging Face WordPiece tokenizer: a folder, its tokenizer.json, or its vocab.txt.

        tokenizer.json wins when a folder has both (transformers does the same). With vocab.txt,
        tokenizer_config.json beside it gives do_lower_case (default True, as BertTokenizer),
        strip_accents, tokenize_chinese_chars and the special tokens.
        """
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        if path.is_dir():
            path = next((folder / n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()), None)
            if path is None:
                raise FileNotFoundError(f"{folder}: no tokenizer.json or vocab.txt")
        if path.name.endswith(".json"):
            return cls._from_tokenizer_json(path)
        vocab = path.read_text(encoding="utf-8").split("\n")
        if vocab and vocab[-1] == "":
            vocab.pop()  # the final newline ends the last line; it is not an empty token
        config = {}
        if (folder / "tokenizer_config.json").is_file():
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        specials = {role: _token_text(config[f"{role}_token"]) for role in SPECIAL_NAMES if config.get(f"{role}_token")}
        lowercase = config.get("do_lower_case", True)
        try:
            return cls(vocab, lowercase=lowercase, strip_accents=config.get("strip_accents"),
                       chinese_chars=config.get("tokenize_chinese_chars", True), specials=specials,
                       name=folder.name or "wordpiece")
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def _from_tokenizer_json(cls, path: Path) -> "WordPiece":
        d = json.loads(path.read_text(encoding="utf-8"))
        model = d.get("model") or {}
        if model.get("type") != "WordPiece":
            raise ValueError(f"{path}: model.type={model.get('type')!r}, not a WordPiece tokenizer")
        norm = d.get("normalizer") or {}
        if norm and norm.get("type") != "BertNormalizer":
            raise ValueError(f"{path}: normalizer type {norm.get('type')!r}; expected BertNormalizer (or none)")
        pre = (d.get("pre_tokenizer") or {}).get("type")
        if pre not in ("BertPreTokenizer", None):
            raise ValueError(f"{path}: pre_tokenizer type {pre!r}; expected BertPreTokenizer")
        vocab_map = dict(model["vocab"])
        for added in d.get("added_tokens", []):
            vocab_map.setdefault(added["content"], added["id"])
        size = max(vocab_map.values()) + 1
        vocab = [""] * size
        for token, i in vocab_map.items():
            vocab[i] = token
        if sum(1 for t in vocab if t == "") > ("" in vocab_map):
            raise ValueError(f"{path}: the vocabulary's ids are not 0..{size - 1} without gaps")
        specials = {}
        config_path = path.parent / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        for role in SPECIAL_NAMES:
            if config.get(f"{role}_token"):
                specials[role] = _token_text(config[f"{role}_token"])
        specials.setdefault("unk", model.get("unk_token", "[UNK]"))
        try:
            return cls(vocab, lowercase=norm.get("lowercase", False) if norm else False,
                       strip_accents=norm.get("strip_accents") if norm else False,
                       chinese_chars=norm.get("handle_chinese_chars", True) if norm else False,
                       specials=specials, prefix=model.get("continuing_subword_prefix", "##"),
                       max_chars=model.get("max_input_chars_per_word", 100), name=path.parent.name or "wordpiece")
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "lowercase": self.lowercase, "strip_accents": self.strip_accents,
                "chinese_chars": self.chinese_chars, "specials": self.specials, "prefix": self.prefix,
                "max_chars": self.max_chars, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, d: dict) -> "WordPiece":
        return cls(d["vocab"], lowercase=d["lowercase"], strip_accents=d["strip_accents"],
                   chinese_chars=d["chinese_chars"], specials=d["specials"], prefix=d["prefix"],
                   max_chars=d["max_chars"], name=d["name"])

    def save(self, path) -> None:
        """One JSON file (atomically), read back by `Tokenizer.load` or `WordPiece.load`."""
        atomic_write_text(Path(path), json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> "WordPiece":
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if d.get("format") != FORMAT:
            raise ValueError(f"{path}: format={d.get('format')!r}; expected {FORMAT!r}")
        return cls.from_dict(d)

    def save_hf(self, folder) -> None:
        """vocab.txt, tokenizer_config.json and special_tokens_map.json: what transformers' BertTokenizer reads."""
        folder = Path(folder)
        if any("\n" in t for t in self.vocab):
            raise ValueError("save_hf: a token contains a newline, which vocab.txt (one token a line) cannot hold")
        (folder / "vocab.txt").write_text("".join(t + "\n" for t in self.vocab), encoding="utf-8")
        tokens = {f"{role}_token": tok for role, tok in self.specials.items()}
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
                  "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.chinese_chars, **tokens}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2) + "\n")

    def fingerprint(self) -> str:
        """A hash of everything that decides the encoding."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # ---- ids ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"WordPiece(name={self.name!r}, vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    @property
    def pad_id(self) -> int:
        return self.ids[self.specials["pad"]]

    @property
    def unk_id(self) -> int:
        return self.ids[self.specials["unk"]]

    @property
    def cls_id(self) -> int:
        return self.ids[self.specials["cls"]]

    @property
    def sep_id(self) -> int:
        return self.ids[self.specials["sep"]]

    @property
    def mask_id(self) -> int:
        return self.ids[self.specials["mask"]]

    @property
    def eot_id(self) -> int:
        return self.sep_id  # BERT has no end-of-text token; documents are separated by [SEP]

    @property
    def special_ids(self) -> list[int]:
        return [self.ids[self.specials[role]] for role in SPECIAL_NAMES]

    @property
    def special_tokens(self) -> dict[str, int]:
        """{text: id} of the special tokens ([PAD], [UNK], [CLS], [SEP], [MASK] as this vocabulary spells them)."""
        return {self.specials[role]: self.ids[self.specials[role]] for role in SPECIAL_NAMES}

    # ---- encoding -----------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """What the pre-tokenizer sees (BERT's normalisation with this checkpoint's settings)."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        return bert_normalize(text, lowercase=self.lowercase, strip_accents=self.strip_accents,
                              chinese_chars=self.chinese_chars)

    def _word(self, word: str) -> tuple[int, ...]:
        ids = self._cache.get(word)
        if ids is None:
            if len(self._cache) >= CACHE_WORDS:
                self._cache.clear()
            ids = self._cache[word] = tuple(wordpiece(word, self.ids, self.unk_id, prefix=self.prefix,
                                                      max_chars=self.max_chars))
        return ids

    def encode(self, text: str, *, allowed_special=(), disallowed_special=()) -> list[int]:
        """Token ids of `text`, without [CLS]/[SEP] around it.

        "[MASK]" in the text is ordinary text unless asked for, as in `minilm.Tokenizer.encode`:
        special tokens in `allowed_special` ("all" or a set) become their id, those in
        `disallowed_special` ("all" or a set) raise ValueError. They are matched in the text as
        written, before normalisation (as transformers' BertTokenizer matches its special tokens).
        """
        if not allowed_special and not disallowed_special:
            return self._encode_ordinary(text)
        allowed, disallowed = text_cuts.resolve(allowed_special, disallowed_special, self.special_tokens)
        return self._encode(text, allowed, disallowed)

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        word = self._word
        for w in pre_tokenize(self.normalize(text)):
            ids.extend(word(w))
        return ids

    def _encode(self, text: str, allowed: frozenset, disallowed: frozenset) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        ids: list[int] = []
        for i, part in enumerate(text_cuts.split_specials(text, allowed, disallowed)):
            if i % 2:
                ids.append(self.ids[part])
            elif part:
                ids.extend(self._encode_ordinary(part))
        return ids

    def encode_batch(self, texts: Sequence[str], *, allowed_special=(), disallowed_special=()) -> list[list[int]]:
        return [self.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special) for t in texts]

    def encode_iterable(self, texts: Iterable[str], *, allowed_special=(),
                        disallowed_special=()) -> Iterator[int]:
        """The ids of `"".join(texts)`, yielded as they are ready, in memory bounded by one item plus
        the longest word; equal to `encode` of the whole text with the same arguments."""
        allowed, disallowed = text_cuts.resolve(allowed_special, disallowed_special, self.special_tokens)
        return self._stream(texts, allowed, disallowed)  # the arguments are checked now, not at the first id

    def _stream(self, texts: Iterable[str], allowed: frozenset, disallowed: frozenset) -> Iterator[int]:
        for piece in text_cuts.regroup(texts, _LAST_PLACE, allowed | disallowed):
            yield from self._encode(piece, allowed, disallowed)

    def encode_with_word_ids(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids and, per token, the index of the pre-token ("word") it came from."""
        ids: list[int] = []
        word_ids: list[int] = []
        for i, w in enumerate(pre_tokenize(self.normalize(text))):
            piece = self._word(w)
            ids.extend(piece)
            word_ids.extend([i] * len(piece))
        return ids, word_ids

    def word_ids(self, text: str, ids: Sequence[int]) -> list[int]:
        """For `ids == encode(text)` of normalised `text`: the pre-token index of every token."""
        _, word_ids = self.encode_with_word_ids(text)
        if len(word_ids) != len(ids):
            raise ValueError(f"word_ids: {len(ids)} ids given, but the text encodes to {len(word_ids)}")
        return word_ids

    def encode_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
        """Encode pre-split words (NER); word ids index `words`. A word may become several
        pre-tokens ("U.S." is three) and all of them carry its index; a word that normalises to
        nothing (a lone control character) gets no token. An empty string is an error."""
        ids: list[int] = []
        word_ids: list[int] = []
        for i, w in enumerate(words):
            if not isinstance(w, str) or not w:
                raise ValueError(f"words[{i}]={w!r}: every word must be a non-empty string")
            piece = self.encode(w)
            ids.extend(piece)
            word_ids.extend([i] * len(piece))
        return ids, word_ids

    def decode(self, ids) -> str:
        """The tokens joined by spaces, "##" pieces glued to the piece before (special tokens as their text).

        Normalisation is not undone: an uncased vocabulary decodes lower-cased, and spaces
        appear around punctuation.
        """
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        out = []
        for n, i in enumerate(ids):
            token = self.token_str(i)
            if token.startswith(self.prefix) and n:
                out.append(token[len(self.prefix):])
            else:
                out.append((" " if n else "") + token)
        return "".join(out)

    def token_str(self, id: int) -> str:
        """The vocabulary entry of one id, e.g. "##able" or "[MASK]"."""
        if not 0 <= id < self.vocab_size:
            raise ValueError(f"token_str: id {id} out of range; ids must be in [0, {self.vocab_size})")
        return self.vocab[id]


def _token_text(value) -> str:
    """tokenizer_config.json writes a special token as a string or as {"content": ...}."""
    return value["content"] if isinstance(value, dict) else str(value)
