"""`minilm bench wordpiece`: minilm's WordPiece encoder against transformers' BertTokenizer (Rust `tokenizers`).

One ratio, measured in one run on the same machine and the same documents: the wall time
of `WordPiece.encode_batch` over that of the `tokenizers` library encoding the same texts
with the same vocabulary and settings, read from the same folder by transformers'
`AutoTokenizer` (its `backend_tokenizer`). Both sides are timed twice, alternating, best
of `--repeats`: minilm from a cold word cache (a fresh tokenizer, what a first pass over a
corpus costs) and warm; `tokenizers` one text at a time and as one `encode_batch` (its
threads on every core). Every document's ids are checked to be the same first.
Goal: minilm within 5x of `tokenizers`' time.
"""
from __future__ import annotations

import os
import platform
import time

from minilm.data.load import load_corpus
from minilm.data.wordpiece import WordPiece
from minilm.nn.hf import real_checkpoint


def configure(parser):
    parser.add_argument("--folder", default=None,
                        help="a Hugging Face folder with vocab.txt or tokenizer.json (default: minilm.nn.hf.real_checkpoint())")
    parser.add_argument("--docs", type=int, default=3000, help="the first N IMDB reviews (default 3000)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(args):
    # Lazy: the reference library is a test-only dependency and slow to import; only a run of this benchmark needs it.
    from transformers import AutoTokenizer

    folder = args.folder or real_checkpoint()
    docs = load_corpus("imdb")[: args.docs]
    theirs = AutoTokenizer.from_pretrained(folder).backend_tokenizer
    ours = WordPiece.from_hf(folder)
    expected = [e.ids for e in theirs.encode_batch(docs, add_special_tokens=False)]
    got = ours.encode_batch(docs)
    same = sum(a == b for a, b in zip(got, expected))
    n_tokens = sum(map(len, expected))
    print(f"{len(docs):,} IMDB reviews, {n_tokens:,} tokens, vocabulary of {ours.vocab_size:,} from {folder}; "
          f"same ids on {same:,}/{len(docs):,} reviews")
    if same != len(docs):
        print("ids differ: not timing")
        return 1
    timings = {"minilm cold": [], "minilm warm": [], "tokenizers one by one": [], "tokenizers encode_batch": []}
    for _ in range(args.repeats):  # alternate, so a slow spell of a shared machine hits both sides
        fresh = WordPiece.from_hf(folder)  # an empty word cache
        timings["minilm cold"].append(_best(lambda: fresh.encode_batch(docs), 1))
        timings["minilm warm"].append(_best(lambda: ours.encode_batch(docs), 1))
        timings["tokenizers one by one"].append(_best(
            lambda: [theirs.encode(d, add_special_tokens=False) for d in docs], 1))
        timings["tokenizers encode_batch"].append(_best(lambda: theirs.encode_batch(docs, add_special_tokens=False), 1))
    best = {k: min(v) for k, v in timings.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:24s} {seconds:7.2f} s   {n_tokens / seconds / 1e6:6.2f} M tokens/s")
    ratio = best["minilm cold"] / min(best["tokenizers one by one"], best["tokenizers encode_batch"])
    print(f"minilm (cold) / tokenizers (its faster way): {ratio:.2f}x the time (goal <= 5x)")
    return 0
