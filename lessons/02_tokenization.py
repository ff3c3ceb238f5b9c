"""Tokenization: byte-level BPE trained on movie reviews, compared with GPT-2's.

What you will learn:
- why a byte-level vocabulary never needs an "unknown" token;
- pre-tokenisation: the regex that cuts text into words before any merge happens;
- byte-pair encoding: merges learned from word counts, watched as they form, and how one
  sentence's tokens grow longer as merges are added;
- what vocabulary size buys: bytes per token on unseen text, ours against GPT-2's;
- special tokens ([CLS], [SEP], [MASK], [PAD], <|endoftext|>) are inserted by id, and text
  becomes one only when `encode` is asked to parse it (allowed_special), so user text cannot
  forge one; your own special tokens (a chat format's <|im_start|>); word ids tie tokens back
  to words (whole-word masking).
- WordPiece, the tokenizer of a real pretrained BERT: a fixed vocabulary of words and "##"
  pieces, greedy longest match, and [UNK] where BPE would fall back to bytes.

Run: python lessons/02_tokenization.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import regex

from minilm import Tokenizer
from minilm.data.load import load_classification, load_corpus
from minilm.store.fetch import FetchError
from minilm.nn.hf import real_checkpoint
from minilm.course.lesson import start
from minilm.data.tokenizer import GPT2_PATTERN, bpe_merges, count_words

SENTENCE = "The unbelievably charming Amélie rewatched it twice: 10/10, no regrets!"
HELLO, GPT2_HELLO_IDS = "Hello world!", [15496, 995, 0]  # the ids GPT-2's own tokenizer gives: a check, not a claim


def show(tok: Tokenizer, text: str) -> str:
    """Tokens of `text` separated by |, spaces shown as _."""
    return "|".join(tok.token_str(i).replace(" ", "_") for i in tok.encode(text))


def bytes_per_token(tok: Tokenizer, texts: list[str]) -> float:
    n_bytes = sum(len(tok.normalize(t).encode("utf-8")) for t in texts)
    return n_bytes / sum(len(ids) for ids in tok.encode_batch(texts))


def main(argv=None):
    lesson = start(__file__, argv)
    section_1_bytes(lesson)
    section_2_pretokenisation(lesson)
    ranks, docs = section_3_merges(lesson)
    tok, gpt2, heldout = section_4_vocabulary_size(lesson, ranks, docs)
    section_5_against_gpt2(lesson, tok, gpt2)
    section_6_special_tokens(lesson, tok)
    section_7_wordpiece(lesson, tok, heldout)
    lesson.finish()


def section_1_bytes(lesson) -> None:
    """A string as UTF-8 bytes: the 256 starting tokens of a byte-level tokenizer."""
    lesson.section("1. Text is bytes")
    raw = SENTENCE.encode("utf-8")
    lesson.say(f"""
        A computer sees "{SENTENCE}" as {len(raw)} UTF-8 bytes for {len(SENTENCE)} characters
        ("é" alone takes {len("é".encode())} bytes: {list("é".encode())}). A byte-level tokenizer
        starts from the 256 possible byte values as its first 256 tokens, so any string at
        all, in any script, with emoji or typos, can be encoded: nothing is ever "unknown".
        The price is length: one token per byte is a long sequence. BPE fixes that.""")


def section_2_pretokenisation(lesson) -> None:
    """GPT-2's regex cuts the sentence into pre-tokens, the units merges never cross."""
    lesson.section("2. Pre-tokenisation")
    pieces = regex.findall(GPT2_PATTERN, SENTENCE.lower())
    lesson.say(f"""
        Before merging, GPT-2's regular expression cuts text into pre-tokens: a run of
        letters with the space before it, a run of digits, a run of punctuation. Merges never
        cross these boundaries, so training only needs a table of word counts, and the index
        of the pre-token a token came from is its "word id". Our sentence (lower-cased, since
        the course's tokenizer is uncased to match the lower-cased rt-polarity data) cuts into
        {len(pieces)} pre-tokens: {" | ".join(p.replace(" ", "_") for p in pieces)}""")


def section_3_merges(lesson):
    """BPE merges learned from IMDB word counts, and one sentence as merges are added; returns (ranks, docs)."""
    lesson.section("3. Byte-pair encoding: watching merges form")
    n_docs = lesson.pick(smoke=200, quick=3000, full=25000)
    n_merges = lesson.pick(smoke=300, quick=2000, full=8000)
    docs = load_corpus("imdb")
    counts = count_words(docs[:n_docs], lowercase=True)
    n_docs = min(n_docs, len(docs))
    word_counts = {w.encode("utf-8"): n for w, n in sorted(counts.items())}
    merges = bpe_merges(word_counts, 256 + n_merges)
    readable = [(a + b).decode("utf-8", "backslashreplace").replace(" ", "_") for a, b in merges]
    first = 30
    lesson.say(f"""
        We count the {len(counts):,} distinct pre-tokens of {n_docs:,} IMDB reviews
        ({sum(counts.values()):,} pre-tokens in all). BPE then repeats one step: find the
        most frequent adjacent pair of tokens across all words (weighted by word count),
        make it a new token, rewrite the words. The first {first} merges it learned:
        {", ".join(readable[:first])}. Spaces glue onto the word that follows them (_ marks a
        space), so "_the" is a token and "the" inside a word is another. The last five of the
        {len(merges):,} merges are longer, rarer pieces: {", ".join(readable[-5:])}.""")
    ranks = [bytes([b]) for b in range(256)]
    for a, b in merges:
        if a + b not in ranks:
            ranks.append(a + b)
    print(f"\n  How '{SENTENCE.lower()}' tokenizes as merges are added:")
    for n in sorted({0, 10, 100, 500, len(ranks) - 256} & set(range(len(ranks) - 255))):
        tok = Tokenizer(ranks[:256 + n], lowercase=True)
        print(f"  {n:5d} merges, {len(tok.encode(SENTENCE)):3d} tokens: {show(tok, SENTENCE)}")
    return ranks, docs


def section_4_vocabulary_size(lesson, ranks, docs):
    """Bytes per token on unseen text against vocabulary size, ours and GPT-2's; returns (ours, GPT-2, the
    held-out sentences)."""
    lesson.section("4. How big a vocabulary?")
    vocab_size = lesson.pick(smoke=512, quick=8192, full=8192)
    tok = Tokenizer.for_corpus("imdb", vocab_size) if not lesson.smoke else Tokenizer(ranks, lowercase=True)
    gpt2 = Tokenizer.gpt2()
    gpt2_vocab = gpt2.eot_id + 1  # GPT-2's own ids end at <|endoftext|>; minilm's specials come after
    heldout = load_classification("rt-polarity").test.texts  # text none of the tokenizers trained on
    n_special = tok.vocab_size - len(tok.ranks)  # vocabulary sizes count the special tokens too
    sizes = [s for s in (256 + n_special, 300, 512, 1024, 2048, 4096, 8192) if s <= tok.vocab_size]
    ours = [(s, bytes_per_token(Tokenizer(tok.ranks[:s - n_special], lowercase=True), heldout)) for s in sizes]
    gpt2_bpt = bytes_per_token(gpt2, heldout)
    for s, bpt in ours:
        print(f"  ours, {s:5d} tokens: {bpt:.2f} bytes per token")
    print(f"  GPT-2, {gpt2_vocab} tokens: {gpt2_bpt:.2f} bytes per token")
    which = (f"the cached one trained on all {len(docs):,} IMDB reviews" if not lesson.smoke
             else "the small one from above")
    lesson.say(f"""
        Compression measured on {len(heldout):,} Rotten Tomatoes sentences that no tokenizer
        here was trained on. Our tokenizer is {which};
        the first N of its tokens form the tokenizer with vocabulary N, so one training run
        gives the whole curve. With only bytes a token carries 1 byte; at {ours[-1][0]:,}
        tokens it carries {ours[-1][1]:.2f}; GPT-2's {gpt2_vocab:,} tokens, trained on a web
        crawl, carry {gpt2_bpt:.2f}. A bigger vocabulary shortens sequences (attention costs grow
        with the square of the length) but costs an embedding row per token and sees each
        rare token less often. The course's tokenizer has {tok.vocab_size:,}, an embedding table a
        CPU can afford.""")
    lesson.record("bytes/token, ours at vocab %d (rt-polarity)" % ours[-1][0], ours[-1][1], "{:.2f}", headline=True)
    lesson.record(f"bytes/token, GPT-2 at vocab {gpt2_vocab:,}", gpt2_bpt, "{:.2f}")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s for s, _ in ours], [b for _, b in ours], "o-", label="minilm BPE (IMDB, uncased)")
    ax.plot([gpt2_vocab], [gpt2_bpt], "s", color="C3", label="GPT-2 (web text, cased)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("bytes per token on unseen sentences")
    ax.set_title("Bigger vocabularies compress better")
    ax.grid(alpha=0.3)
    ax.legend()
    lesson.save_figure(fig, "compression")
    return tok, gpt2, heldout


def section_5_against_gpt2(lesson, tok, gpt2) -> None:
    """One sentence through both tokenizers; GPT-2's ids checked against its own tokenizer's."""
    lesson.section("5. Ours against GPT-2 on one sentence")
    print(f"  ours  ({len(tok.encode(SENTENCE))} tokens): {show(tok, SENTENCE)}")
    print(f"  GPT-2 ({len(gpt2.encode(SENTENCE))} tokens): {show(gpt2, SENTENCE)}")
    ids = gpt2.encode(HELLO)
    print(f"  GPT-2 ids of {HELLO!r}: {ids}  (the same as GPT-2's own tokenizer: {ids == GPT2_HELLO_IDS})")
    lesson.say(f"""
        GPT-2 is cased, so "The" and "the" are different tokens, and it round-trips text
        exactly: decode(encode(s)) == s is {gpt2.decode(gpt2.encode(SENTENCE)) == SENTENCE}. Ours
        lower-cases first (decode gives "{tok.decode(tok.encode('Amélie'))}" back for "Amélie").""")


def section_6_special_tokens(lesson, tok) -> None:
    """Special tokens are put in by id, parsed from text only on request; your own; word ids tie tokens to words."""
    lesson.section("6. Special tokens and word ids")
    specials = {name: getattr(tok, f"{name}_id") for name in ("pad", "cls", "sep", "mask", "unk", "eot")}
    forged = tok.encode("[MASK]")
    ids, word_ids = tok.encode_with_word_ids("An unwatchable mess.")
    row = [tok.cls_id] + ids + [tok.sep_id]
    lesson.say(f"""
        Special tokens sit at the top of the id range: {specials}. By default they are only
        put in by id, never produced from text: the string "[MASK]" in a review encodes as
        {forged} ({"|".join(tok.token_str(i) for i in forged)}), so a user cannot forge a
        mask. A BERT row is built by id: {row} = {" ".join(tok.token_str(i).strip() or "_" for i in row)}.
        Word ids say which pre-token each token came from: "An unwatchable mess." gives
        tokens {[tok.token_str(i) for i in ids]} with word ids {word_ids}. Whole-word masking
        (lesson 05) uses them to mask "unwatchable" entirely or not at all.""")
    lesson.record("special ids", specials)

    joined = "Loved it.<|endoftext|>Hated it."  # two documents, joined the way GPT-2's training text is
    parsed = tok.encode(joined, allowed_special={"<|endoftext|>"})
    try:
        tok.encode(joined, disallowed_special="all")
        refused = "nothing"
    except ValueError as e:
        refused = str(e).split(",")[0]
    chat = Tokenizer(tok.ranks, lowercase=True, special_tokens=["<|im_start|>", "<|im_end|>"])
    turn = "<|im_start|>user\nIs it any good?<|im_end|>"
    turn_ids = chat.encode(turn, allowed_special="all")
    shown = turn.replace("\n", "\\n")
    lines = [t + "\n" for t in load_classification("rt-polarity").test.texts[:200]]
    streamed = list(tok.encode_iterable(lines))
    lesson.say(f"""
        Text you trust can ask for them: a pretraining corpus whose documents are joined by
        <|endoftext|> is read with `encode(text, allowed_special={{"<|endoftext|>"}})` (tiktoken's
        convention), and "{joined}" becomes {parsed}, with one id, {tok.eot_id}, where by
        default "<|endoftext|>" is {len(tok.encode("<|endoftext|>"))} ordinary tokens. `disallowed_special="all"`
        refuses text that looks like a special token instead of encoding it ({refused!r}).
        You can add your own: a chat format marks turns with <|im_start|> and <|im_end|>;
        `Tokenizer.train(texts, size, special_tokens=["<|im_start|>", "<|im_end|>"])` puts them
        after the built-in six (here on our ranks: {dict(list(chat.special_tokens.items())[-2:])}),
        keeps their text out of the merges it learns, and saves them with the tokenizer.
        "{shown}" encodes as {turn_ids}. For text larger than memory,
        `encode_iterable(open(path))` yields the ids line by line in bounded memory, cutting only
        where GPT-2's pre-tokens cannot cross: over {len(lines)} held-out sentences its
        {len(streamed):,} ids equal those of the whole text: {streamed == tok.encode("".join(lines))}.""")
    lesson.record("<|endoftext|> parsed on request, text by default",
                  parsed.count(tok.eot_id) == 1 and tok.eot_id not in tok.encode(joined))


def section_7_wordpiece(lesson, bpe: Tokenizer, heldout: list[str]) -> None:
    """WordPiece from a real checkpoint against our BPE: vocabulary, pieces, unknowns, compression."""
    lesson.section("7. WordPiece: the vocabulary of a real BERT")
    try:  # smoke runs use the checkpoint only when it is already cached (it is an 83 MB download)
        folder = real_checkpoint(fetch=not lesson.smoke)
    except FetchError as e:
        print(f"  (skipped: the real checkpoint is not available here: {str(e)[:120]})")
        return
    wp = Tokenizer.from_hf(folder)
    pieces = sum(t.startswith("##") for t in wp.vocab)
    unused = sum(t.startswith("[unused") for t in wp.vocab)
    print(f"  WordPiece ({wp.vocab_size:,} tokens, {'uncased' if wp.lowercase else 'cased'}): "
          f"{show_wordpiece(wp, SENTENCE)}")
    print(f"  our BPE   ({bpe.vocab_size:,} tokens): {show(bpe, SENTENCE)}")
    emoji = "Loved it 😍"
    n_unk = sum(ids.count(wp.unk_id) for ids in wp.encode_batch(heldout))
    n_wp = sum(map(len, wp.encode_batch(heldout)))
    n_bytes = sum(len(wp.normalize(t).encode("utf-8")) for t in heldout)
    lesson.say(f"""
        all-MiniLM-L6-v2 is a real pretrained BERT (a sentence encoder shipped in a PyPI wheel).
        Its vocabulary, like BERT's, is a list of {wp.vocab_size:,} strings: whole words, and
        {pieces:,} pieces that start with "##" and may only continue a word ({unused:,} more are
        "[unused…]" slots left free for fine-tuning). WordPiece first normalises the text
        (lower-cases it and strips the accent from "Amélie"), splits it at spaces and around every
        punctuation mark, then cuts each word greedily: the longest vocabulary entry from the
        start, then the longest "##" piece, and so on: encoding is lookups, with no merge rules
        to replay. Where BPE can always fall back to bytes, a word WordPiece cannot cover becomes
        one [UNK]: "{emoji}" gives {[wp.token_str(i) for i in wp.encode(emoji)]}, and
        {n_unk:,} of the {n_wp:,} tokens of the {len(heldout):,} held-out sentences are [UNK].
        On those sentences it carries {n_bytes / n_wp:.2f} bytes per token, with
        {wp.vocab_size / bpe.vocab_size:.1f}x our vocabulary. Its special tokens sit at the
        bottom of the id range: [PAD]={wp.pad_id}, [UNK]={wp.unk_id}, [CLS]={wp.cls_id},
        [SEP]={wp.sep_id}, [MASK]={wp.mask_id}. `minilm.nn.hf.real_checkpoint()` gives its folder;
        `SequenceClassifier.from_hf(folder, num_labels=2)` starts fine-tuning from it.""")
    lesson.record("bytes/token, all-MiniLM-L6-v2 WordPiece at vocab %d (rt-polarity)" % wp.vocab_size,
                  n_bytes / n_wp, "{:.2f}")
    lesson.record("[UNK] share of WordPiece tokens (rt-polarity)", n_unk / n_wp, "{:.3%}")


def show_wordpiece(tok, text: str) -> str:
    """WordPiece tokens of `text` separated by | (the ## pieces continue a word)."""
    return "|".join(tok.token_str(i) for i in tok.encode(text))


if __name__ == "__main__":
    main()
