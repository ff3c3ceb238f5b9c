"""From GPT-2 to Llama: the modern decoder block, one change at a time, measured.

What you will learn:
- what separates the 2019 decoder (GPT-2) from the one every model since Llama uses:
  rotary positions, RMSNorm, the SwiGLU MLP, no biases, grouped-query attention and
  an output matrix of its own, each a switch in `ModelConfig`;
- how to measure an architectural change honestly: the same data, the same batches, the
  same number of steps, held-out loss over several seeds, and a rule for when a difference
  is larger than the noise;
- what each change costs or saves that the loss does not show: parameters, tokens per
  second, the bytes of KV cache each generated token keeps;
- which of the changes a few CPU-minutes can show, and which need the scale they were made at.

Run: python lessons/13_gpt2_to_llama.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import statistics

import matplotlib.pyplot as plt
import torch

from minilm import CausalLM, ModelConfig, Trainer, TrainConfig
from minilm.course.lesson import lesson_corpus, start
from minilm.data.corpus import token_stream, tokenize_corpus
from minilm.data.load import load_corpus
from minilm.data.tokenizer import Tokenizer
from minilm.nn.config import swiglu_hidden
from minilm.train.pretraining import CausalLMWindows


def main(argv=None):
    lesson = start(__file__, argv)
    tok, train_stream, held_stream = section_1_data(lesson)
    configs = section_2_the_changes(lesson, tok)
    runs = section_3_training(lesson, configs, tok, train_stream, held_stream)
    section_4_what_it_showed(lesson, configs, runs, unigram_loss(train_stream, held_stream, tok.vocab_size))
    lesson.finish()


def section_1_data(lesson):
    """IMDB as one token stream, the last reviews held out; returns (tokenizer, train stream, held-out stream)."""
    lesson.section("1. The data: one stream of IMDB reviews, random windows")
    if lesson.full:  # the course tokenizer on all of IMDB
        docs, tok = lesson_corpus(lesson)
    else:
        # A slice of IMDB and a small BPE learned on it: with 8,192 tokens the output layer alone would
        # take most of a CPU step in a model this small, and the comparison is about the blocks.
        docs = load_corpus("imdb")[:lesson.pick(smoke=300, quick=4000, full=None)]
        tok = Tokenizer.train(docs[:int(0.9 * len(docs))], lesson.pick(smoke=400, quick=1024, full=None),
                              lowercase=True)  # learned on the training reviews only
    cut = int(0.9 * len(docs))
    corpus, held = tokenize_corpus(docs[:cut], tok, "imdb-train"), tokenize_corpus(docs[cut:], tok, "imdb-heldout")
    train_stream, held_stream = token_stream(corpus, tok), token_stream(held, tok)
    lesson.say(f"""
        {len(docs):,} IMDB reviews, {tok.vocab_size:,}-token byte-level BPE learned on the first 90%
        of them: {len(train_stream):,} training tokens as one stream (reviews joined by
        <|endoftext|>), {len(held_stream):,} held-out tokens from the last 10%. Each training row
        is a window of that stream starting at a random position (`CausalLMWindows`, nanoGPT's
        get_batch), drawn by a generator seeded by (seed, step): every model trained with seed s
        sees exactly the same batches, so the models differ only in their blocks.""")
    return tok, train_stream, held_stream


# Each row adds one change to the row above it; the last row is the Llama block.
CHANGES = [
    ("GPT-2", "learned positions, pre-norm LayerNorm, GELU MLP, biases, multi-head, tied output", {}),
    ("+ rotary positions", "q and k rotated by position; no position table", dict(position="rope")),
    ("+ RMSNorm", "no centring, no shift", dict(norm_type="rms")),
    ("+ SwiGLU", "gated MLP, 2/3 of the width", dict(activation="swiglu")),
    ("+ no biases", "in every linear layer", dict(bias=False)),
    ("+ grouped-query attention", "2 query heads per key/value head", dict(n_kv_heads="half")),
    ("+ untied embeddings (Llama)", "an output matrix of its own", dict(tie_embeddings=False)),
]


def section_2_the_changes(lesson, tok) -> list[tuple[str, ModelConfig]]:
    """The seven configurations, GPT-2 to Llama one switch at a time, with what each costs in parameters and
    KV cache; returns [(name, config)]."""
    lesson.section("2. Seven models, one switch apart")
    d_model, n_layers, n_heads, seq_len = lesson.pick(smoke=(32, 2, 4, 32), quick=(64, 2, 4, 64),
                                                      full=(256, 4, 4, 256))
    config = ModelConfig.preset("gpt-micro", vocab_size=tok.vocab_size, max_seq_len=seq_len, d_model=d_model,
                                n_layers=n_layers, n_heads=n_heads, d_ff=4 * d_model, dropout=0.0,
                                attention_dropout=0.0)
    configs = []
    for name, _, change in CHANGES:
        change = dict(change)
        if change.get("activation") == "swiglu":
            change["d_ff"] = swiglu_hidden(d_model, multiple_of=16)  # the same weights as GELU's 4 x d_model
        if change.get("n_kv_heads") == "half":
            change["n_kv_heads"] = n_heads // 2
        config = dataclasses.replace(config, **change)
        configs.append((name, config))
    llama = ModelConfig.preset("llama-mini")
    block = ("norm", "norm_type", "activation", "bias", "position", "rope_pairing", "tie_embeddings")
    assert all(getattr(config, f) == getattr(llama, f) for f in block), "the last row should be the Llama block"
    print(f"  {'model':<30} {'parameters':>10} {'KV cache per token':>19}   the change")
    for (name, c), (_, what, _) in zip(configs, CHANGES):
        print(f"  {name:<30} {n_params(c):>10,} {kv_bytes(c):>15,} B   {what}")
    lesson.say(f"""
        Every model is {n_layers} blocks of width {d_model} with {n_heads} heads of {d_model // n_heads}
        channels, trained on rows of {seq_len} tokens. The last row is the block of the `llama-mini`
        preset (and of Llama 2, Mistral, Qwen 2) at this size. SwiGLU has three matrices where GELU's MLP
        has two, so its hidden width is 2/3 of 4 x {d_model} ({configs[3][1].d_ff}, rounded up as Llama
        rounds it) and the parameter count barely moves. Grouped-query attention shrinks the key and
        value projections and, more to the point, the KV cache: the bytes each generated token leaves
        behind in every layer (fp32 here), which is what limits long contexts and large batches at
        inference. Untying the output matrix costs {tok.vocab_size} x {d_model} =
        {tok.vocab_size * d_model:,} parameters.""")
    return configs


def n_params(config: ModelConfig) -> int:
    return sum(p.numel() for p in CausalLM(config).parameters())


def kv_bytes(config: ModelConfig) -> int:
    """Bytes of keys and values one token keeps in the cache, all layers, fp32."""
    return 2 * config.n_layers * config.kv_heads * config.head_dim * 4


def section_3_training(lesson, configs, tok, train_stream, held_stream) -> dict:
    """Every configuration at every seed, the same steps and batches; returns {name: [run per seed]}, a run
    being {"steps": [...], "eval_loss": [...], "tokens_per_s": float}."""
    lesson.section("3. Training each model on the same budget")
    seeds = lesson.pick(smoke=[0, 1], quick=[0, 1], full=[0, 1, 2])
    steps = lesson.pick(smoke=3, quick=120, full=3000)
    batch_size = lesson.pick(smoke=4, quick=16, full=64)
    seq_len = configs[0][1].max_seq_len
    eval_rows = lesson.pick(smoke=4, quick=32, full=512)
    held = CausalLMWindows(held_stream[:eval_rows * seq_len + 1], tok, batch_size, seq_len)
    tcfg = dict(steps=steps, lr=lesson.pick(smoke=1e-3, quick=3e-3, full=1e-3), warmup_steps=max(1, steps // 10),
                weight_decay=0.1, eval_every=lesson.pick(smoke=1, quick=20, full=250),
                log_every=lesson.pick(smoke=1, quick=20, full=100), progress=False, device="cpu" if not lesson.full
                else "auto")
    lesson.say(f"""
        Each model trains {steps} steps of {batch_size} windows x {seq_len} tokens
        ({steps * batch_size * seq_len:,} tokens), AdamW at peak learning rate {tcfg['lr']:g} with
        {tcfg['warmup_steps']} warmup steps and cosine decay, weight decay {tcfg['weight_decay']}, gradients
        clipped at norm 1; held-out loss on {eval_rows} windows ({eval_rows * seq_len:,} tokens) every
        {tcfg['eval_every']} steps; seeds {seeds}. The seed fixes the initial weights and the batches.""")
    runs = {}
    for name, config in configs:
        for seed in seeds:
            torch.manual_seed(seed)
            model = CausalLM(config)
            train = CausalLMWindows(train_stream, tok, batch_size, seq_len, seed=seed)
            trainer = Trainer(model, TrainConfig(seed=seed, **tcfg), train, held)
            with contextlib.redirect_stdout(io.StringIO()):  # one line per run below, not the trainer's log lines
                summary = trainer.fit()
            evals = [r for r in trainer.history if "eval_loss" in r]
            logs = [r for r in trainer.history if "tokens_per_s" in r]
            tokens_per_s = sum(r["tokens_per_s"] * r["time_s"] for r in logs) / sum(r["time_s"] for r in logs)
            runs.setdefault(name, []).append(dict(steps=[r["step"] for r in evals],
                                                  eval_loss=[r["eval_loss"] for r in evals],
                                                  final=summary["eval_loss"], tokens_per_s=tokens_per_s,
                                                  params=n_params(config), kv=kv_bytes(config)))
            print(f"  {name:<30} seed {seed}: held-out loss {summary['eval_loss']:.3f}, "
                  f"{tokens_per_s:,.0f} tokens/s", flush=True)
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def unigram_loss(train_stream, held_stream, vocab_size: int) -> float:
    """Held-out cross-entropy of the token frequencies of the training stream (add-one smoothed):
    what a model that ignores context scores."""
    counts = torch.bincount(train_stream, minlength=vocab_size).double() + 1.0
    return float(-(counts / counts.sum()).log()[held_stream].mean())


def verdict(delta: float, noise: float) -> str:
    """One phrase for a change in mean held-out loss against twice the seed spread."""
    way = "lowered" if delta < 0 else "raised"
    if abs(delta) > noise:
        return f"{way} the held-out loss by {abs(delta):.3f}, more than twice the seed spread ({noise:.3f})"
    return f"moved the held-out loss by {delta:+.3f}, within twice the seed spread ({noise:.3f})"


def section_4_what_it_showed(lesson, configs, runs: dict, baseline: float) -> None:
    """The table (held-out loss over seeds, tokens/s, parameters, KV cache), the loss curves, and which
    changes the budget could show: a difference counts when it exceeds twice the seed spread."""
    lesson.section("4. What the budget could and could not show")
    names = [name for name, _ in configs]
    loss = {n: mean_std([r["final"] for r in runs[n]]) for n in names}
    speed = {n: statistics.fmean(r["tokens_per_s"] for r in runs[n]) for n in names}
    n_seeds, steps = len(runs[names[0]]), runs[names[0]][0]["steps"][-1]
    table = ["| model | held-out loss | change | tokens/s | parameters | KV cache per token |",
             "|---|---:|---:|---:|---:|---:|"]
    changes = {}  # name -> (change in mean loss, twice the larger seed spread)
    for i, n in enumerate(names):
        m, s = loss[n]
        if i:
            previous = loss[names[i - 1]]
            changes[n] = (m - previous[0], 2 * max(s, previous[1]))
        table.append(f"| {n} | {m:.3f} ± {s:.3f} | {f'{changes[n][0]:+.3f}' if i else ''} | {speed[n]:,.0f} | "
                     f"{runs[n][0]['params']:,} | {runs[n][0]['kv']:,} B |")
    print("\n".join(table))
    lesson.table(f"GPT-2 to Llama on IMDB (held-out loss after {steps} steps, mean ± std over {n_seeds} seeds)",
                 "\n".join(table))
    shown = [n for n, (d, noise) in changes.items() if abs(d) > noise]
    first, last = loss[names[0]], loss[names[-1]]
    best = min(names, key=lambda n: loss[n][0])
    lesson.say(f"""
        After the same {steps} steps (mean ± std over {n_seeds} seeds): GPT-2 {first[0]:.3f} ±
        {first[1]:.3f}, the full Llama block {last[0]:.3f} ± {last[1]:.3f}; a model that ignores context
        (the unigram frequencies of the training text) scores {baseline:.3f}. The lowest loss here is
        that of "{best}", {loss[best][0]:.3f}. A change counts as shown when it moves the mean loss by more than
        twice the larger seed spread of the two rows it separates; shown at this budget:
        {', '.join(shown) if shown else 'none'}.""")
    rows = {n: runs[n][0] for n in names}
    lesson.say(f"""
        Rotary positions {verdict(*changes[names[1]])}. Relative position is in every attention score
        from the first step, where a learned position table starts as noise and must itself be learned
        before attention can use word order (GPT-2 at {first[0]:.3f} against the unigram's
        {baseline:.3f} says how far it got).

        RMSNorm {verdict(*changes[names[2]])}. It drops LayerNorm's centring and shift (one reduction
        instead of two); it was adopted because it is cheaper and trains as well at scale, so a small
        change in loss is what one expects to see.

        SwiGLU {verdict(*changes[names[3]])}, at the same parameter count. Its gate multiplies two
        projections, so a freshly initialised MLP outputs the product of two small numbers and starts
        slowly; its reported gain (Shazeer 2020, GLU variants) is a few hundredths of a nat after
        65,000 steps, a scale this run does not reach.

        Dropping the biases {verdict(*changes[names[4]])}. A bias is a constant vector a layer can add,
        and the first thing a language model learns is a constant: the unigram frequencies. With
        RMSNorm (no shift) and no biases, that constant must be built from the inputs, which can
        slow the first steps. PaLM (Chowdhery et al. 2022) dropped them because large models then
        trained more stably, a benefit of scale that a small model cannot show.

        Grouped-query attention {verdict(*changes[names[5]])}. It is a saving, not an improvement:
        the KV cache per token falls from {rows[names[4]]['kv']:,} to {rows[names[5]]['kv']:,} bytes
        (the last column), which is what bounds batch size and context length at inference.

        Untying the output matrix {verdict(*changes[names[6]])}, with {rows[names[6]]['params'] -
        rows[names[5]]['params']:,} more parameters: the output layer no longer has to serve as the
        input embedding too.

        Tokens per second ({min(speed.values()):,.0f} to {max(speed.values()):,.0f} here) are
        measured on whatever else the CPU was doing, and at this width the changes barely alter the
        work per token (the parameter column); they are the column to read at scale, on a GPU. `--full` runs the comparison at
        gpt-mini's size for 3,000 steps with three seeds, where the changes made for scale have room
        to show.""")
    for n, (d, noise) in changes.items():
        lesson.record(f"{n}: change in held-out loss", f"{d:+.3f} ({'shown' if abs(d) > noise else 'within'} "
                                                          f"2 x seed spread {noise:.3f})")
    lesson.record("held-out loss, GPT-2 -> Llama block", f"{first[0]:.3f} ± {first[1]:.3f} -> "
                  f"{last[0]:.3f} ± {last[1]:.3f} ({n_seeds} seeds, {steps} steps; unigram {baseline:.3f})",
                  headline=True)
    lesson.record("changes shown at this budget", ", ".join(shown) or "none", headline=True)
    lesson.record("KV cache per token, multi-head -> grouped-query",
                  f"{rows[names[4]]['kv']:,} B -> {rows[names[5]]['kv']:,} B")

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = plt.cm.viridis([i / (len(names) - 1) for i in range(len(names))])
    for n, color in zip(names, colors):
        curves = torch.tensor([run["eval_loss"] for run in runs[n]])  # (seeds, evaluations)
        x = runs[n][0]["steps"]
        ax.plot(x, curves.mean(0), "o-", ms=3, color=color, label=f"{n} ({loss[n][0]:.3f})")
        ax.fill_between(x, curves.min(0).values, curves.max(0).values, color=color, alpha=0.15)
    ax.axhline(baseline, color="0.5", ls="--", label=f"unigram ({baseline:.3f})")
    ax.set(xlabel="step", ylabel="held-out loss (nats)",
           title=f"GPT-2 to Llama, one change at a time (mean and range over {n_seeds} seeds)")
    ax.legend(fontsize=8)
    lesson.save_figure(fig, "heldout_loss")


if __name__ == "__main__":
    main()
