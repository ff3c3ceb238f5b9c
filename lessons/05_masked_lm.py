"""Masked language modelling: self-supervision by hiding words and predicting them.

What you will learn:
- the masked-LM objective: hide some tokens, predict them from both sides, so unlabelled
  text becomes millions of free exercises;
- four ways to choose what to hide (token, whole word, SpanBERT span, MASS-style
  sequence), shown on one sentence, and BERT's 80/10/10 replacement rule measured;
- pretraining a small BERT live on IMDB and watching held-out masked-token accuracy climb
  past the best constant guess;
- `fill-mask` before training, after a few minutes, and with the course's shared
  pretrained encoder (the one lessons 06-09 fine-tune).

Run: python lessons/05_masked_lm.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from minilm import MaskedLM, ModelConfig, Trainer, TrainConfig
from minilm.collate import mlm_batch
from minilm.corpus import encoder_rows, tokenize_corpus
from minilm.lesson import lesson_corpus, pretrained_mlm, start
from minilm.masking import STRATEGIES, MaskingConfig
from minilm.pretrain import RECIPE, MaskedLMBatches
from minilm.show import LEGEND, show_masking

SENTENCE = "The director somehow turned a brilliant novel into two hours of unwatchable, self-indulgent nonsense."
PROBES = [
    "this movie was [MASK], i loved every minute of it.",
    "the [MASK] was terrible, but the music was great.",
    "i would not recommend this [MASK] to anyone.",
    "she gives a wonderful [MASK] as the mother.",
]


def fill(model, tokenizer, text: str, k: int = 5) -> str:
    """The top-k guesses for the first [MASK] of `text`, as 'word (prob)'."""
    return ", ".join(f"{w.strip()} ({p:.2f})" for w, p in model.fill_mask(tokenizer, text, top_k=k)[0])


def main(argv=None):
    lesson = start(__file__, argv)
    steps = lesson.pick(smoke=3, quick=600, full=3000)
    batch_size = lesson.pick(smoke=8, quick=16, full=128)
    preset = lesson.pick(smoke="bert-tiny", quick="bert-tiny", full="bert-mini")

    lesson.section("1. Four ways to choose what to hide")
    docs, tok = lesson_corpus(lesson)
    shown = show_masking(tok, SENTENCE, color=False, seed=lesson.seed)
    print(shown)
    lesson.say("""
        Token masking (BERT) picks tokens independently, so half a word can be hidden while
        its other half gives it away. Whole-word masking hides every piece of a chosen word.
        Span masking (SpanBERT) hides runs of whole words whose lengths follow a geometric law
        (mean about 3.8 words), with one replacement decision per span. Sequence masking
        (MASS) hides one contiguous fragment, about half the row. The harder the guess, the
        more the model must use context rather than spelling.""")
    fig, ax = plt.subplots(figsize=(12, 2.4))
    ax.axis("off")
    for i, line in enumerate([*shown.splitlines()[:len(STRATEGIES)], "", LEGEND]):
        ax.text(0, 1 - i * 0.16, line, family="monospace", fontsize=8, va="top", transform=ax.transAxes)
    lesson.save_figure(fig, "masking_strategies")

    lesson.section("2. BERT's 80/10/10, measured")
    corpus = tokenize_corpus(docs, tok, "imdb" if not lesson.smoke else "imdb-smoke")
    rows, word_ids = encoder_rows(corpus, lesson.pick(smoke=32, quick=128, full=128), tok)  # (N, T) each
    sample = rows[:256]
    batch = mlm_batch(sample, word_ids[:256], tok, MaskingConfig(strategy="token", mask_prob=0.15),
                      torch.Generator().manual_seed(lesson.seed))
    chosen = batch["labels"] != -100  # (B, T)
    seen = batch["input_ids"][chosen]
    n = int(chosen.sum())
    as_mask = float((seen == tok.mask_id).sum()) / n
    kept = float((seen == batch["labels"][chosen]).sum()) / n
    maskable = sample.numel() - int(torch.isin(sample, torch.tensor(tok.special_ids)).sum())
    lesson.say(f"""
        On {len(sample)} real rows ({maskable:,} maskable tokens), token masking at 15% chose
        {n:,} positions ({n / maskable:.1%}). Of those, {as_mask:.1%} became [MASK],
        {1 - as_mask - kept:.1%} a random token and {kept:.1%} were left as they were (a random
        draw can hit the original token, so "kept" runs a hair above 10%). The model must
        predict all of them, so it cannot learn that only [MASK] positions matter; and since
        [MASK] never appears when the model is used later, the 20% that are not [MASK] soften
        that mismatch. "10% random" means 10% of the chosen positions, not 10% of the rest.
        The kept tokens are a trap for measurement, though: their answer is in the input, and a
        model learns to copy its input long before it learns to use context (scored that way,
        copying alone is worth about 9 points of accuracy). So every held-out accuracy in this
        course hides all the tokens it scores behind [MASK].""")
    lesson.record("token masking: chosen / [MASK] / random / kept",
                  f"{n / maskable:.1%} / {as_mask:.1%} / {1 - as_mask - kept:.1%} / {kept:.1%}")

    lesson.section("3. Pretraining a small BERT, live")
    config = ModelConfig.preset(preset, vocab_size=tok.vocab_size, max_seq_len=rows.shape[1],
                                dropout=0.0, attention_dropout=0.0, position=RECIPE.position)
    model = MaskedLM(config)
    masking = RECIPE.masking()
    lr = RECIPE.lr
    n_eval = min(lesson.pick(smoke=8, quick=256, full=1024), len(rows) // 10)
    train = MaskedLMBatches(rows[:-n_eval], word_ids[:-n_eval], tok, masking, batch_size, seed=lesson.seed)
    held = MaskedLMBatches(rows[-n_eval:], word_ids[-n_eval:], tok, masking, batch_size, seed=lesson.seed)
    guess = held.constant_guess_accuracy()
    # The unigram's loss: predict every blank with the token frequencies of the training rows.
    counts = torch.bincount(train.input_ids.flatten(), minlength=tok.vocab_size).double() + 1.0  # (V,)
    held_labels = torch.cat([b["labels"][b["labels"] != -100] for b in held.eval_batches()])
    unigram_loss = float(-(counts / counts.sum()).log()[held_labels].mean())
    before = {p: fill(model, tok, p) for p in PROBES}
    lesson.say(f"""
        `{preset}` ({config.n_layers} layers, width {config.d_model},
        {sum(p.numel() for p in model.parameters()):,} parameters) with the course's low-budget
        recipe, the one `minilm pretrain` uses: BERT's post-norm blocks, no dropout,
        {masking.mask_prob:.0%} of the tokens masked with an exact count per row (more predictions per
        step, steadier gradients), the vocabulary projection computed only at masked positions,
        small batches (many cheap steps), and rotary positions instead of BERT's learned table: q and k are turned
        by angles set by their positions, so from the first step attention scores can depend
        on how far apart two tokens are, and heads that look at the neighbours of a blank are
        found far sooner than when every position vector starts as random noise. {steps}
        steps of {batch_size} rows x {rows.shape[1]} tokens at a peak learning rate of {lr:g}. The bar
        to beat: always guessing the most frequent masked token scores {guess:.1%} on the
        held-out rows.""")
    tcfg = TrainConfig(steps=steps, lr=lr,
                       warmup_steps=max(1, steps // 10), eval_every=lesson.pick(smoke=0, quick=50, full=300),
                       log_every=max(1, steps // 30), seed=lesson.seed, overwrite=True)  # replaced on every run
    trainer = Trainer(model, tcfg, train, held, lesson.out / "run", tokenizer=tok)
    summary = trainer.fit()
    acc = summary["eval_accuracy"]
    evals = [r for r in trainer.history if "eval_accuracy" in r]
    lesson.say(f"""
        After {steps} steps the held-out masked-token accuracy is {acc:.1%}, against {guess:.1%}
        for the constant guess ({100 * (acc - guess):+.1f} points); the held-out loss is
        {summary['eval_loss']:.3f}, against {unigram_loss:.3f} for the unigram (the token
        frequencies of the training rows, context ignored).""")
    if acc - guess < 0.02:
        lesson.say("""
            That is the plateau every masked LM starts on: the cheapest way to lower the loss is
            to learn how frequent each token is and predict the commonest one everywhere. The
            loss keeps falling while the accuracy sits still; using the context comes later,
            after thousands of steps. The shared encoder below had 1,535 steps (30 CPU-minutes)
            and is still on the plateau too (3.8% against 3.9%): leaving it is a job for a GPU.""")
    lesson.record("live pretraining: held-out masked-token accuracy vs constant guess",
                  f"{acc:.1%} vs {guess:.1%} ({preset}, {steps} steps)", headline=True)
    lesson.record("live pretraining: held-out masked-token loss vs unigram",
                  f"{summary['eval_loss']:.3f} vs {unigram_loss:.3f}")

    lesson.section("4. fill-mask: before, after, and the shared pretrained encoder")
    shared, shared_tok, where = pretrained_mlm(lesson)
    lesson.say(f"""
        The shared encoder is {where}. It trained far longer than the live run above, and it
        is the starting point of lessons 06-09.""")
    for p in PROBES:
        print(f"\n  {p}")
        print(f"    untrained : {before[p]}")
        print(f"    live run  : {fill(model, tok, p)}")
        print(f"    shared    : {fill(shared, shared_tok, p)}")
    lesson.record("fill-mask, shared encoder: " + PROBES[0], fill(shared, shared_tok, PROBES[0], 3))
    lesson.record("fill-mask, live run: " + PROBES[0], fill(model, tok, PROBES[0], 3))
    lesson.say(f"""
        Untrained, every guess has a probability near 1/{tok.vocab_size:,} = {1 / tok.vocab_size:.5f}: noise. A
        few minutes of pretraining first teach the frequent tokens and punctuation, and that
        is what both trained rows show; far longer pretraining teaches which words fit both
        sides of the gap (sentiment adjectives after "this movie was", nouns after "the").
        Even without that, what the encoder did learn from unlabelled text (the words, their
        frequencies, embeddings shaped by millions of predictions) is what lessons 06-09 reuse,
        and lesson 06 measures what it is worth.""")

    steps_seen = [r["step"] for r in evals]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(steps_seen, [r["eval_loss"] for r in evals], "o-", label=f"{preset}, held out")
    left.axhline(unigram_loss, color="0.5", ls="--", label="unigram (context ignored)")
    left.set(xlabel="step", ylabel="masked-token loss (nats)", title="Loss: below the unigram = context used")
    right.plot(steps_seen, [100 * r["eval_accuracy"] for r in evals], "o-", label=f"{preset}, held out")
    right.axhline(100 * guess, color="0.5", ls="--", label="best constant guess")
    right.set_ylim(0, max(10.0, 100 * max(r["eval_accuracy"] for r in evals) + 2))
    right.set(xlabel="step", ylabel="masked-token accuracy (%)", title="Accuracy, every scored token hidden")
    for ax in (left, right):
        ax.legend()
    fig.suptitle("Masked-LM pretraining on IMDB (live run)")
    lesson.save_figure(fig, "pretraining_accuracy")
    lesson.finish()


if __name__ == "__main__":
    main()
