"""Language modelling: a small GPT learns to continue movie reviews.

What you will learn:
- the causal objective: every position predicts the next token, so one row of T tokens
  is T training examples, and the causal mask keeps the answer hidden;
- cross-entropy, perplexity (e to the loss: "as unsure as a choice among N tokens") and
  what the numbers mean before training, for a unigram baseline, and after training;
- how the library trains it: contiguous token rows, `CausalLMBatches`, `Trainer`;
- sampling: temperature and top-k, with the KV cache that makes generation cheap;
  the same prompts continued before and after training.

Run: python lessons/04_language_modelling.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import torch

from minilm import CausalLM, ModelConfig, Trainer, TrainConfig
from minilm.data.corpus import decoder_rows, tokenize_corpus
from minilm.course.lesson import lesson_corpus, start
from minilm.train.pretraining import CausalLMBatches

PROMPTS = ["this movie was", "the acting in this film", "i went to see it because"]


def samples(model, tokenizer, seed: int, n_new: int) -> list[str]:
    """Continue each prompt with temperature 0.8 and top-k 40 (the same random stream every time)."""
    out = []
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer.encode(prompt)], device=next(model.parameters()).device)  # (1, T)
        gen = torch.Generator().manual_seed(seed)
        new = model.generate(ids, n_new, temperature=0.8, top_k=40, generator=gen)[0, ids.shape[1]:]
        out.append(prompt + " " + tokenizer.decode(new).replace("\n", " ").strip())
    return out


def main(argv=None):
    lesson = start(__file__, argv)
    seq_len = lesson.pick(smoke=32, quick=128, full=256)
    tok, train_rows, eval_rows = section_1_data(lesson, seq_len)
    model, train_data, eval_data, baseline = section_2_before_training(lesson, tok, train_rows, eval_rows, seq_len)
    summary, history, seconds = section_3_training(lesson, model, tok, train_data, eval_data, seq_len)
    section_4_after_training(lesson, model, tok, summary, history, baseline, seconds)
    lesson.finish()


def section_1_data(lesson, seq_len: int):
    """IMDB as one token stream cut into rows of seq_len + 1; returns (tokenizer, train rows, held-out rows)."""
    lesson.section("1. The data: one long stream of tokens")
    docs, tok = lesson_corpus(lesson)
    corpus = tokenize_corpus(docs, tok, "imdb" if not lesson.smoke else "imdb-smoke")
    rows = decoder_rows(corpus, seq_len, tok)  # (N, T + 1)
    n_eval = min(lesson.pick(smoke=8, quick=256, full=1024), len(rows) // 10)
    train_rows, eval_rows = rows[:-n_eval], rows[-n_eval:]
    example = rows[0, :12].tolist()
    lesson.say(f"""
        {len(docs):,} IMDB reviews become {len(corpus.ids):,} tokens, joined into one stream with
        an <|endoftext|> token between reviews, and cut into {len(rows):,} rows of {seq_len + 1}
        tokens ({len(train_rows):,} to train on, the last {n_eval} held out). A row gives
        {seq_len} examples at once: the input is tokens 0..{seq_len - 1}, the target tokens
        1..{seq_len}, i.e. the same row shifted by one. The first tokens of row 0:
        {[tok.token_str(i) for i in example]}.""")
    return tok, train_rows, eval_rows


def section_2_before_training(lesson, tok, train_rows, eval_rows, seq_len: int):
    """An untrained GPT's loss against ln(V) and a unigram model, and its samples.
    Returns (model, train batches, held-out batches, {"preset", "init": its eval metrics, "unigram_loss"})."""
    lesson.section("2. A small GPT, before training")
    preset = lesson.pick(smoke="gpt-micro", quick="gpt-micro", full="gpt-mini")
    batch_size = lesson.pick(smoke=8, quick=16, full=128)
    config = ModelConfig.preset(preset, vocab_size=tok.vocab_size, max_seq_len=seq_len, dropout=0.0,
                                attention_dropout=0.0)
    model = CausalLM(config)
    info = model.describe(seq_len)
    train_data = CausalLMBatches(train_rows, tok, batch_size, seed=lesson.seed)
    eval_data = CausalLMBatches(eval_rows, tok, batch_size, seed=lesson.seed)
    with torch.no_grad():
        labels = torch.cat([b["labels"].flatten() for b in eval_data.eval_batches()])
        counts = torch.bincount(train_rows[:, 1:].flatten(), minlength=tok.vocab_size).double() + 1.0
        unigram_loss = float(-(counts / counts.sum()).log()[labels[labels != -100]].mean())
    init_eval = Trainer(model, TrainConfig(steps=1, progress=False), train_data, eval_data).evaluate()
    before = samples(model, tok, lesson.seed, lesson.pick(smoke=5, quick=20, full=30))
    lesson.say(f"""
        `{preset}`: {config.n_layers} pre-norm blocks, width {config.d_model}, {config.n_heads} heads,
        {info['params']:,} parameters, of which {info['params'] - info['non_embedding_params']:,}
        are token and position embeddings (the token embedding doubles as the output layer:
        tied weights). The
        loss is the cross-entropy of the true next token: -log p(next). Untrained, the model
        spreads its bets evenly, so the loss is about ln({tok.vocab_size}) =
        {math.log(tok.vocab_size):.2f}; measured: {init_eval['eval_loss']:.2f}. Perplexity is e^loss,
        {init_eval['eval_perplexity']:,.0f} here: as unsure as a uniform choice among that many
        tokens. A model that ignores context and always predicts each token's frequency in the
        training text (a unigram model) already scores perplexity {math.exp(unigram_loss):,.0f}.
        Everything below that is learned from context.""")
    print("\n  Samples before training (temperature 0.8, top-k 40):")
    for s in before:
        print("   ", s)
    return model, train_data, eval_data, {"preset": preset, "init": init_eval, "unigram_loss": unigram_loss}


def section_3_training(lesson, model, tok, train_data, eval_data, seq_len: int):
    """Train with the causal objective; returns (the fit's summary, the trainer's history, wall time in s)."""
    lesson.section("3. Training with the causal objective")
    steps = lesson.pick(smoke=4, quick=200, full=5000)
    tcfg = TrainConfig(steps=steps, lr=lesson.pick(smoke=1e-3, quick=3e-3, full=1e-3), warmup_steps=max(1, steps // 10),
                       weight_decay=0.1, eval_every=lesson.pick(smoke=0, quick=50, full=500), log_every=max(1, steps // 30),
                       seed=lesson.seed, overwrite=True)  # the lesson's own run folder: replaced on every run
    batch_size = train_data.batch_size
    lesson.say(f"""
        {steps} steps of {batch_size} rows x {seq_len} tokens = {steps * batch_size * seq_len:,} tokens,
        AdamW with peak learning rate {tcfg.lr} (linear warmup over {tcfg.warmup_steps} steps,
        then {tcfg.schedule} decay), gradient clipping at {tcfg.grad_clip}. The trainer calls the model,
        reads its loss and steps; it knows nothing else about it.""")
    trainer = Trainer(model, tcfg, train_data, eval_data, lesson.out / "run", tokenizer=tok)
    t0 = time.perf_counter()
    summary = trainer.fit()
    return summary, trainer.history, time.perf_counter() - t0


def section_4_after_training(lesson, model, tok, summary: dict, history: list, baseline: dict, seconds: float) -> None:
    """Perplexity and samples after training, against the untrained model and the unigram; the loss curve."""
    lesson.section("4. After training")
    init_eval, unigram_loss = baseline["init"], baseline["unigram_loss"]
    train_log = [r for r in history if "loss" in r]
    eval_log = [r for r in history if "eval_loss" in r]
    tokens_per_s = sum(r["tokens_per_s"] * r["time_s"] for r in train_log) / sum(r["time_s"] for r in train_log)
    after = samples(model, tok, lesson.seed, lesson.pick(smoke=5, quick=20, full=30))
    lesson.say(f"""
        Held-out perplexity went from {init_eval['eval_perplexity']:,.0f} to
        {summary['eval_perplexity']:,.1f} (unigram baseline {math.exp(unigram_loss):,.0f}); the
        next token is now right {summary['eval_accuracy']:.1%} of the time with a single guess.
        Training ran at {tokens_per_s:,.0f} tokens/s on this machine. The same prompts, the same
        random numbers:""")
    for s in after:
        print("   ", s)
    lesson.say(f"""
        Sampling draws each token from the model's distribution: temperature below 1 sharpens
        it, top-k keeps only the k likeliest tokens. Generation reuses each layer's keys and
        values for the tokens already seen (the KV cache), so each new token costs one
        position, not the whole prefix. {seconds:.0f} s of training here buy the frequent words of
        reviews and some local word order at best; grammar and coherence need far more tokens,
        width and steps (`--full`, meant for a GPU).""")
    lesson.record("held-out perplexity: untrained / unigram / trained",
                  f"{init_eval['eval_perplexity']:,.0f} / {math.exp(unigram_loss):,.0f} / "
                  f"{summary['eval_perplexity']:,.1f}", headline=True)
    lesson.record("next-token accuracy", summary["eval_accuracy"], "{:.1%}")
    lesson.record("training tokens/s", tokens_per_s, "{:,.0f}")
    lesson.record("sample after training", after[0])

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot([r["step"] for r in train_log], [r["loss"] for r in train_log], label="train loss")
    ax.plot([0] + [r["step"] for r in eval_log], [init_eval["eval_loss"]] + [r["eval_loss"] for r in eval_log],
            "o-", label="held-out loss")
    ax.axhline(unigram_loss, color="0.5", ls="--", label=f"unigram baseline (ppl {math.exp(unigram_loss):,.0f})")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title=f"{baseline['preset']} on IMDB, next-token prediction")
    ax.legend()
    lesson.save_figure(fig, "loss_curve")


if __name__ == "__main__":
    main()
