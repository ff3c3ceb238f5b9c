"""Masked language modelling: self-supervision by hiding words and predicting them.

What you will learn:
- the masked-LM objective: hide some tokens, predict them from both sides, so unlabelled
  text becomes millions of free exercises;
- four ways to choose what to hide (token, whole word, SpanBERT span, MASS-style
  sequence), shown on one sentence, and BERT's 80/10/10 replacement rule measured;
- pretraining a small BERT live on IMDB and watching whether held-out masked-token accuracy
  climbs past the best constant guess;
- `fill-mask` before training, after a short run, and with the course's shared
  pretrained encoder (the one lessons 06-09 fine-tune).

Run: python lessons/05_masked_lm.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch

from minilm import MaskedLM, ModelConfig, Trainer, TrainConfig
from minilm.train import model_source
from minilm.train.checkpoint import read_config
from minilm.data.collate import mlm_batch
from minilm.data.corpus import encoder_rows, tokenize_corpus
from minilm.course.lesson import lesson_corpus, pretrained_checkpoint, start
from minilm.data.masking import DEFAULT_MASK_PROB, STRATEGIES, MaskingConfig, span_lengths
from minilm.train.pretraining import RECIPE, MaskedLMBatches
from minilm.data.show import LEGEND, show_masking

SENTENCE = "The director somehow turned a brilliant novel into two hours of unwatchable, self-indulgent nonsense."
PROBES = [
    "this movie was [MASK], i loved every minute of it.",
    "the [MASK] was terrible, but the music was great.",
    "i would not recommend this [MASK] to anyone.",
    "she gives a wonderful [MASK] as the mother.",
]
PLATEAU = 0.02  # within this much of the constant guess, a masked LM has not yet learned to use context


def fill(model, tokenizer, text: str, k: int = 5) -> str:
    """The top-k guesses for the first [MASK] of `text`, as 'word (prob)'."""
    return ", ".join(f"{w.strip()} ({p:.2f})" for w, p in model.fill_mask(tokenizer, text, top_k=k)[0])


def main(argv=None):
    lesson = start(__file__, argv)
    docs, tok = lesson_corpus(lesson)
    section_1_strategies(lesson, tok)
    rows, word_ids = section_2_replacement(lesson, docs, tok)
    model, before, steps = section_3_pretraining(lesson, tok, rows, word_ids)
    section_4_fill_mask(lesson, model, tok, before, steps)
    lesson.finish()


def section_1_strategies(lesson, tok) -> None:
    """The four masking strategies on one sentence, as text and as a picture."""
    lesson.section("1. Four ways to choose what to hide")
    shown = show_masking(tok, SENTENCE, color=False, seed=lesson.seed)
    print(shown)
    span = MaskingConfig(strategy="span")
    draws = span_lengths((100_000,), span.span_p, span.max_span, torch.Generator().manual_seed(lesson.seed), "cpu")
    lesson.say(f"""
        Token masking (BERT) picks tokens independently, so half a word can be hidden while
        its other half gives it away. Whole-word masking hides every piece of a chosen word.
        Span masking (SpanBERT) hides runs of whole words whose lengths follow a geometric law
        (p = {span.span_p:g}, at most {span.max_span} words: {float(draws.float().mean()):.2f} words on average
        over {draws.numel():,} draws), with one replacement decision per span. Sequence masking
        (MASS) hides one contiguous fragment, {DEFAULT_MASK_PROB["sequence"]:.0%} of the row by default.
        The harder the guess, the more the model must use context rather than spelling.""")
    fig, ax = plt.subplots(figsize=(12, 2.4))
    ax.axis("off")
    for i, line in enumerate([*shown.splitlines()[:len(STRATEGIES)], "", LEGEND]):
        ax.text(0, 1 - i * 0.16, line, family="monospace", fontsize=8, va="top", transform=ax.transAxes)
    lesson.save_figure(fig, "masking_strategies")


def section_2_replacement(lesson, docs, tok):
    """BERT's replacement rule measured on real rows; returns the rows and word ids `(N, T)` for training."""
    rule = MaskingConfig(strategy="token")
    lesson.section(f"2. BERT's {rule.mask_frac:.0%}/{rule.random_frac:.0%}/{rule.keep_frac:.0%}, measured")
    corpus = tokenize_corpus(docs, tok, "imdb" if not lesson.smoke else "imdb-smoke")
    rows, word_ids = encoder_rows(corpus, lesson.pick(smoke=32, quick=128, full=128), tok)  # (N, T) each
    sample = rows[:256]
    batch = mlm_batch(sample, word_ids[:256], tok, rule, torch.Generator().manual_seed(lesson.seed))
    chosen = batch["labels"] != -100  # (B, T)
    seen = batch["input_ids"][chosen]
    n = int(chosen.sum())
    as_mask = float((seen == tok.mask_id).sum()) / n
    kept = float((seen == batch["labels"][chosen]).sum()) / n
    maskable = sample.numel() - int(torch.isin(sample, torch.tensor(tok.special_ids)).sum())
    lesson.say(f"""
        On {len(sample)} real rows ({maskable:,} maskable tokens), token masking at {rule.mask_prob:.0%} chose
        {n:,} positions ({n / maskable:.1%}). Of those, {as_mask:.1%} became [MASK],
        {1 - as_mask - kept:.1%} a random token and {kept:.1%} were left as they were (a random
        draw can hit the original token, so "kept" runs a hair above the rule's {rule.keep_frac:.0%}).
        The model must predict all of them, so it cannot learn that only [MASK] positions
        matter; and since [MASK] never appears when the model is used later, the
        {1 - rule.mask_frac:.0%} that are not [MASK] soften that mismatch. "{rule.random_frac:.0%} random"
        means {rule.random_frac:.0%} of the chosen positions, not of the rest. The kept tokens are a trap
        for measurement, though: their answer is in the input, and a model learns to copy its
        input long before it learns to use context. Scored on these positions, copying the
        input alone would be right {kept:.1%} of the time. So every held-out accuracy in this
        course hides all the tokens it scores behind [MASK].""")
    lesson.record("token masking: chosen / [MASK] / random / kept",
                  f"{n / maskable:.1%} / {as_mask:.1%} / {1 - as_mask - kept:.1%} / {kept:.1%}")
    return rows, word_ids


def section_3_pretraining(lesson, tok, rows, word_ids):
    """Pretrain a small BERT with the course's recipe; returns (model, its untrained fill-mask guesses, steps)."""
    lesson.section("3. Pretraining a small BERT, live")
    steps = lesson.pick(smoke=3, quick=600, full=3000)
    batch_size = lesson.pick(smoke=8, quick=16, full=128)
    preset = lesson.pick(smoke="bert-tiny", quick="bert-tiny", full="bert-mini")
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
    positions = ("rotary positions instead of BERT's learned table: q and k are turned by angles set by "
                 "their positions, so from the first step attention scores can depend on how far apart two "
                 "tokens are, and heads that look at the neighbours of a blank are found far sooner than when "
                 "every position vector starts as random noise" if config.position == "rope"
                 else f"{config.position} positions")
    lesson.say(f"""
        `{preset}` ({config.n_layers} layers, width {config.d_model},
        {sum(p.numel() for p in model.parameters()):,} parameters) with the course's low-budget
        recipe, the one `minilm pretrain` uses: {config.norm}-norm blocks as in BERT, dropout
        {RECIPE.dropout:g}, {masking.mask_prob:.0%} of the tokens masked with {"an exact count per row (more "
        "predictions per step, steadier gradients)" if masking.count == "exact" else "independent draws"},
        the vocabulary projection computed only at masked positions, small batches (many cheap
        steps), and {positions}. {steps} steps of {batch_size} rows x {rows.shape[1]} tokens at a peak
        learning rate of {lr:g}. The bar
        to beat: always guessing the most frequent masked token scores {guess:.1%} on the
        held-out rows.""")
    tcfg = TrainConfig(steps=steps, lr=lr,
                       warmup_steps=max(1, steps // 10), eval_every=lesson.pick(smoke=0, quick=50, full=300),
                       log_every=max(1, steps // 30), seed=lesson.seed, overwrite=True)  # replaced on every run
    trainer = Trainer(model, tcfg, train, held, lesson.out / "run", tokenizer=tok)
    t0 = time.perf_counter()
    summary = trainer.fit()
    seconds = time.perf_counter() - t0
    acc = summary["eval_accuracy"]
    evals = [r for r in trainer.history if "eval_accuracy" in r]
    lesson.say(f"""
        After {steps} steps ({seconds:.0f} s here) the held-out masked-token accuracy is {acc:.1%},
        against {guess:.1%} for the constant guess ({100 * (acc - guess):+.1f} points); the held-out
        loss is {summary['eval_loss']:.3f}, against {unigram_loss:.3f} for the unigram (the token
        frequencies of the training rows, context ignored).""")
    if acc - guess < PLATEAU:
        lesson.say(f"""
            Less than {100 * PLATEAU:.0f} points above the constant guess: that is the plateau every
            masked LM starts on. The cheapest way to lower the loss is to learn how frequent each
            token is and predict the commonest one everywhere, so the loss keeps falling while the
            accuracy sits still; using the context comes later, after many more steps. Section 4
            shows where the longer-trained shared encoder stands.""")
    lesson.record("live pretraining: held-out masked-token accuracy vs constant guess",
                  f"{acc:.1%} vs {guess:.1%} ({preset}, {steps} steps)", headline=True)
    lesson.record("live pretraining: held-out masked-token loss vs unigram",
                  f"{summary['eval_loss']:.3f} vs {unigram_loss:.3f}")

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
    return model, before, steps


def shared_encoder_summary(extra: dict, live_steps: int) -> str:
    """What the shared encoder's checkpoint says about its own pretraining, in words (from config.json)."""
    if "step" not in extra:
        return "Its checkpoint records no pretraining (steps, accuracy), so there is nothing to compare."
    text = f"It was pretrained for {extra['step']:,} steps (the live run above: {live_steps:,})"
    if "wall_s" in extra:
        text += f" in {extra['wall_s'] / 60:.0f} minutes"
    if "command" in extra:
        text += f", by `{extra['command']}`"
    if "eval_accuracy" not in extra or "constant_guess_accuracy" not in extra:
        return text + "; its checkpoint records no held-out accuracy."
    acc, guess = extra["eval_accuracy"], extra["constant_guess_accuracy"]
    text += (f". Its checkpoint records a held-out masked-token accuracy of {acc:.1%} against {guess:.1%} for "
             f"the constant guess ({100 * (acc - guess):+.1f} points): ")
    if acc - guess < PLATEAU:
        return text + "still on the plateau, knowing frequencies rather than context; leaving it takes a GPU."
    return text + "off the plateau, so it fills blanks from their context, not from frequencies alone."


def section_4_fill_mask(lesson, model, tok, before, live_steps: int) -> None:
    """fill-mask on a few probes: untrained, the live run, and the shared pretrained encoder."""
    lesson.section("4. fill-mask: before, after, and the shared pretrained encoder")
    path, where = pretrained_checkpoint(lesson)
    shared, shared_tok = model_source.load(model_source.resolve(path), MaskedLM)
    shared.eval()
    lesson.say(f"""
        The shared encoder is {where}, the starting point of lessons 06-09.
        {shared_encoder_summary(read_config(path)["extra"], live_steps)}""")
    for p in PROBES:
        print(f"\n  {p}")
        print(f"    untrained : {before[p]}")
        print(f"    live run  : {fill(model, tok, p)}")
        print(f"    shared    : {fill(shared, shared_tok, p)}")
    lesson.record("fill-mask, shared encoder: " + PROBES[0], fill(shared, shared_tok, PROBES[0], 3))
    lesson.record("fill-mask, live run: " + PROBES[0], fill(model, tok, PROBES[0], 3))
    lesson.say(f"""
        Untrained, every guess has a probability near 1/{tok.vocab_size:,} = {1 / tok.vocab_size:.5f}: noise. A
        short run first learns the frequent tokens and punctuation; longer pretraining is what
        teaches which words fit both sides of the gap (sentiment adjectives after "this movie
        was", nouns after "the"). Read the rows above for how far each model got. Either way,
        what the encoder learned from unlabelled text (the words, their frequencies, embeddings
        shaped by its predictions) is what lessons 06-09 reuse, and lesson 06 measures what it
        is worth.""")


if __name__ == "__main__":
    main()
