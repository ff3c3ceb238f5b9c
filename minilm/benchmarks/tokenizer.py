"""`minilm bench tokenizer`: minilm's BPE against the tools a user would pick instead.

Two ratios, measured in one run on the same machine and the same documents:

- training: wall time of `Tokenizer.train` (pure Python, one thread: pre-tokenise,
  count, merge) over the wall time of the `tokenizers` library's BpeTrainer set up the
  same way (lower-casing, GPT-2 byte-level pre-tokenisation, same vocabulary size and
  special tokens; it runs in Rust on all cores). `--repeats` rounds, the two trainers
  alternating within each, so a change in the machine's load hits both; the ratio is
  of the best times, and each round's ratio is printed beside it. Goal: at most 1x.
- encoding: throughput of `Tokenizer.encode_batch` / `encode` over that of a raw
  `tiktoken.Encoding` holding the same ranks, given text already lower-cased (so
  minilm's own work, lower-casing and the checks, is what the ratio charges).
  Best of `--repeats`, alternating the two. Goal: at least 0.8x.

It also reports how many of the learned tokens the two trainers share, a check that
they learn the same thing (they break ties differently, so a few differ), and where minilm's
training time goes: one more run of its two steps, counting the words and learning the merges.
"""
from __future__ import annotations

import os
import platform
import time

import tiktoken

from minilm.data.load import load_corpus
from minilm.data.tokenizer import SPECIAL_TOKENS, Tokenizer, bpe_merges, count_words


def configure(parser):
    parser.add_argument("--corpus", default="imdb", help="named corpus or a path (default: imdb)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size, special tokens included")
    parser.add_argument("--docs", type=int, default=None, help="use only the first N documents (quick runs)")
    parser.add_argument("--repeats", type=int, default=3, help="training and encoding: best of this many rounds")


def _gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map, in which `tokenizers` writes byte-level tokens."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def train_hf(docs, vocab_size):
    try:  # lazy: `tokenizers` is a test-only dependency, needed only when this benchmark runs
        from tokenizers import Tokenizer as HFTokenizer, models, normalizers, pre_tokenizers, trainers
    except ImportError:
        raise SystemExit("minilm bench tokenizer: needs the `tokenizers` library "
                         "(pip install -e '.[test]' installs it with transformers)") from None
    hf = HFTokenizer(models.BPE())
    hf.normalizer = normalizers.Lowercase()
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(docs, trainer)
    return hf


def _best(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _seconds(times) -> str:
    return " ".join(f"{t:.2f}" for t in times)


def run(args):
    if args.repeats < 1 or (args.docs is not None and args.docs < 1):
        raise SystemExit(f"minilm bench tokenizer: --repeats={args.repeats}, --docs={args.docs}: "
                         f"both must be positive integers")
    docs = load_corpus(args.corpus)[:args.docs]
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"corpus {args.corpus}: {len(docs):,} documents, {n_bytes / 1e6:.1f} MB; vocabulary {args.vocab_size:,}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"Python {platform.python_version()}, tiktoken {tiktoken.__version__}; wall clock (time.perf_counter)")

    rounds_hf, rounds_ours = [], []
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both sides alike
        t = time.perf_counter()
        hf = train_hf(docs, args.vocab_size)
        rounds_hf.append(time.perf_counter() - t)
        t = time.perf_counter()
        tok = Tokenizer.train(docs, args.vocab_size, lowercase=True)
        rounds_ours.append(time.perf_counter() - t)
    t_hf, t_ours = min(rounds_hf), min(rounds_ours)

    t = time.perf_counter()  # Tokenizer.train's two steps, timed apart
    counts = count_words(docs, lowercase=True, special_tokens=SPECIAL_TOKENS)
    t_count = time.perf_counter() - t
    word_counts = {w.encode("utf-8"): n for w, n in sorted(counts.items())}
    t = time.perf_counter()
    bpe_merges(word_counts, args.vocab_size - len(SPECIAL_TOKENS))
    t_merge = time.perf_counter() - t

    chars = _gpt2_byte_chars()
    ours = {"".join(chars[b] for b in r) for r in tok.ranks}
    theirs = set(hf.get_vocab()) - set(SPECIAL_TOKENS)
    shared = len(ours & theirs) / max(len(ours), 1)

    lowered = [d.lower() for d in docs]
    raw = tiktoken.Encoding("raw", pat_str=tok.pattern, mergeable_ranks={r: i for i, r in enumerate(tok.ranks)},
                            special_tokens=tok.special_tokens)
    n_tokens = sum(map(len, raw.encode_ordinary_batch(lowered)))
    batch_ours = batch_raw = loop_ours = loop_raw = float("inf")
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both sides alike
        batch_raw = min(batch_raw, _best(lambda: raw.encode_ordinary_batch(lowered), 1))
        batch_ours = min(batch_ours, _best(lambda: tok.encode_batch(docs), 1))
        loop_raw = min(loop_raw, _best(lambda: [raw.encode_ordinary(d) for d in lowered], 1))
        loop_ours = min(loop_ours, _best(lambda: [tok.encode(d) for d in docs], 1))

    print()
    print(f"BPE training (pre-tokenise + count + merge), best of {args.repeats} alternating rounds")
    print(f"  tokenizers BpeTrainer (Rust, threads)  {t_hf:8.2f} s   rounds: {_seconds(rounds_hf)}")
    print(f"  minilm Tokenizer.train (pure Python)   {t_ours:8.2f} s   rounds: {_seconds(rounds_ours)}")
    print(f"  ratio minilm / tokenizers              {t_ours / t_hf:8.2f} x   (goal <= 1x)   rounds: "
          + " ".join(f"{a / b:.2f}x" for a, b in zip(rounds_ours, rounds_hf)))
    print(f"  learned tokens shared with tokenizers  {shared:8.1%}")
    print(f"  minilm's steps, one more run: counting {sum(counts.values()):,} words ({len(counts):,} distinct) "
          f"{t_count:.2f} s, learning the merges {t_merge:.2f} s")
    print(f"encoding {n_tokens:,} tokens ({n_tokens / len(docs):.0f} per document), best of {args.repeats}")
    for label, t_raw, t_us in (("encode_batch (threads)", batch_raw, batch_ours),
                               ("encode, one doc at a time", loop_raw, loop_ours)):
        print(f"  {label:26s} raw tiktoken {n_bytes / t_raw / 1e6:6.1f} MB/s   minilm {n_bytes / t_us / 1e6:6.1f} MB/s"
              f"   ratio {t_raw / t_us:5.2f} x   (goal >= 0.8x)")
    return 0
