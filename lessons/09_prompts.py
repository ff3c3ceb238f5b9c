"""Prompts instead of heads: zero- and few-shot sentiment with the masked-LM head.

What you will learn:
- turning classification into the pretraining task itself: "<review> It was [MASK]." and
  compare the model's probability of "great" against "terrible" (a cloze prompt);
- zero-shot scores from pretraining alone, how much the choice of label words matters, and
  calibration against a content-free input;
- few-shot prompt-based fine-tuning (train the masked-LM head on the cloze task) against
  ordinary fine-tuning with a new classification head, from a dozen labels to a few hundred;
- why the prompt needs fewer labels: it reuses weights that already know the label words,
  while a new head starts from random numbers.

Run: python lessons/09_prompts.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from minilm import ModelConfig, Trainer, TrainConfig
from minilm.train import model_source
from minilm.train.checkpoint import read_config
from minilm.data.collate import pad
from minilm.data.sampler import RowSampler
from minilm.downstream.finetuning import DEFAULT_LR, FinetuneConfig, run_finetune
from minilm.course.lesson import pretrained_checkpoint, start
from minilm.downstream.metrics import mean_std
from minilm.nn.model import MaskedLM
from minilm.downstream.tasks import ClassifyTask, with_subset

VERBALIZERS = [(" terrible", " great"), (" bad", " good"), (" awful", " wonderful")]  # (negative, positive)
NEAR_CHANCE = 0.05  # a zero-shot accuracy within this of chance: the masked-LM head knows no sentiment yet
PLATEAU = 0.02  # a held-out masked-token accuracy within this of the constant guess: frequencies, not context


def cloze_batch(texts, tokenizer, answers=None, max_len=128) -> dict:
    """'[CLS] text it was [MASK] . [SEP]' rows; labels are -100 except at the mask (the answer id, or 0)."""
    tail = tokenizer.encode(" it was")
    rows = [[tokenizer.cls_id, *tokenizer.encode(t)[: max_len - len(tail) - 4], *tail, tokenizer.mask_id,
             *tokenizer.encode("."), tokenizer.sep_id] for t in texts]
    input_ids = pad(rows, tokenizer.pad_id)  # (B, L)
    labels = torch.full_like(input_ids, -100)
    at_mask = input_ids == tokenizer.mask_id  # (B, L): exactly one per row
    labels[at_mask] = torch.tensor(answers if answers is not None else [0] * len(rows))
    return {"input_ids": input_ids, "attention_mask": (input_ids != tokenizer.pad_id).long(), "labels": labels}


@torch.no_grad()
def mask_log_probs(model, tokenizer, texts, batch_size=128) -> torch.Tensor:
    """(N, V) log-probabilities of the [MASK] token of each text's cloze prompt."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        batch = {k: v.to(device) for k, v in cloze_batch(texts[i:i + batch_size], tokenizer).items()}
        out.append(model(**batch).logits.float().log_softmax(-1).cpu())  # (b, V)
    return torch.cat(out)


def cloze_accuracy(log_probs, labels, ids, bias=None) -> float:
    """Accuracy of choosing the label word with the higher log-probability (minus `bias`, if calibrated)."""
    scores = log_probs[:, ids]  # (N, 2): [negative word, positive word]
    if bias is not None:
        scores = scores - bias
    return float((scores.argmax(-1) == torch.tensor(labels)).float().mean())


class ClozeBatches:
    """Few-shot batches for the Trainer: k labelled sentences as cloze rows, answers = label words.
    Which sentences make a step's batch, on which rank, is the library's one rule (`RowSampler`)."""

    def __init__(self, texts, labels, tokenizer, word_ids, batch_size, seed):
        self.texts, self.labels, self.tok, self.word_ids = texts, labels, tokenizer, word_ids
        self.sampler = RowSampler(len(texts), batch_size, seed)

    def batch(self, step, rank=0, world_size=1):
        idx = self.sampler.indices(step, rank, world_size).tolist()
        return cloze_batch([self.texts[i] for i in idx], self.tok, [self.word_ids[self.labels[i]] for i in idx])


def main(argv=None):
    lesson = start(__file__, argv)
    checkpoint, mlm, tok, task, words = section_1_cloze(lesson)
    zero, pair = section_2_zero_shot(lesson, mlm, tok, task.data.test, words)
    prompt_acc, head_acc = section_3_few_shot(lesson, checkpoint, mlm, tok, task, pair)
    section_4_labels_worth(lesson, checkpoint, mlm, task, pair, zero[pair][0], prompt_acc, head_acc)
    lesson.finish()


def section_1_cloze(lesson):
    """The task as a cloze prompt; returns (checkpoint, masked LM, tokenizer, task, single-token label words)."""
    lesson.section("1. Classification as fill-in-the-blank")
    checkpoint, where = pretrained_checkpoint(lesson)
    mlm, tok = model_source.load(model_source.resolve(checkpoint), MaskedLM)
    eval_size = lesson.pick(smoke=32, quick=300, full=None)
    val_size = lesson.pick(smoke=16, quick=100, full=200)
    # One task for every run: the same test sentences for both methods, and a small validation
    # split for the head's choice of epoch (a few-shot learner has few labels to hold out).
    task = ClassifyTask("rt-polarity")
    task = with_subset(task, "test", eval_size, 0) if eval_size else task
    task = with_subset(task, "validation", val_size, 0)
    test = task.data.test
    words = [(n, p) for n, p in VERBALIZERS if len(tok.encode(n)) == len(tok.encode(p)) == 1]
    example = f"{test.texts[0]} it was [MASK]."
    lesson.say(f"""
        A masked-LM was trained to fill blanks. Write each review sentence as
        "{example}" and compare the probability the model gives to " great" and to
        " terrible" at the blank: no new parameters, no labels. The model is {where}; the
        label-word pairs that are single tokens in its vocabulary: {words}.""")
    lesson.say(real_checkpoint_note(lesson))
    return checkpoint, mlm, tok, task, words


def real_checkpoint_note(lesson) -> str:
    """Whether lesson 06's real pretrained BERT can answer the prompt too: only with a masked-LM head."""
    from minilm.nn import hf
    from minilm.store.fetch import FetchError
    from minilm.nn.model import MaskedLM

    try:
        folder = hf.real_checkpoint(fetch=not lesson.smoke)
    except FetchError:
        return "(The real pretrained BERT of lesson 06 cannot be had here, so only the course's encoder is prompted.)"
    try:
        MaskedLM.from_hf(folder)
    except hf.HFError as e:
        reason = str(e).rsplit(" is ", 1)[-1].split(";")[0]  # the loader's words, without the file's path
        return (f"Lesson 06's real pretrained BERT cannot be prompted this way: the loader refuses it as a masked "
                f"LM, since it is {reason}. It was published as a sentence "
                "encoder, with the prediction head removed, so the blank has no word distribution to read; "
                "only a checkpoint that keeps its masked-LM head can be prompted.")
    return ("Lesson 06's real pretrained BERT keeps its masked-LM head, so it could be prompted the same way; "
            "this lesson prompts the course's encoder.")


def section_2_zero_shot(lesson, mlm, tok, test, words):
    """Zero-shot accuracy per label-word pair, raw and calibrated; returns ({pair: (raw, calibrated)}, the pair
    the few-shot runs use)."""
    lesson.section("2. Zero-shot")
    chance = 1 / len(set(test.labels))
    log_probs = mask_log_probs(mlm, tok, test.texts)  # (N, V)
    empty = mask_log_probs(mlm, tok, [""])  # (1, V): the prompt with no review in it
    zero = {}
    for neg, pos in words:
        ids = [tok.encode(neg)[0], tok.encode(pos)[0]]
        plain = cloze_accuracy(log_probs, test.labels, ids)
        calibrated = cloze_accuracy(log_probs, test.labels, ids, bias=empty[0, ids])
        zero[(neg, pos)] = (plain, calibrated)
        print(f"  {neg.strip():>9} / {pos.strip():<9}: {plain:.1%}   calibrated: {calibrated:.1%}")
    best_pair = max(zero, key=lambda k: zero[k][1])
    lesson.save_data("zero_shot", {f"{n.strip()}/{p.strip()}": {"raw": raw, "calibrated": cal}
                                   for (n, p), (raw, cal) in zero.items()})
    lesson.say(f"""
        Test accuracy on {len(test.texts)} sentences (chance {chance:.0%}), for each pair of label words.
        Raw scores inherit the model's taste for one word over the other regardless of the
        review; "calibrated" subtracts each word's log-probability for the empty prompt
        " it was [MASK]." (contextual calibration, Zhao et al. 2021), a free correction.
        The choice of words alone moves zero-shot accuracy: prompts are a hyperparameter.""")
    lesson.record("zero-shot cloze accuracy (best pair, calibrated)",
                  f"{zero[best_pair][1]:.1%} ({best_pair[0].strip()}/{best_pair[1].strip()})", headline=True)
    return zero, (VERBALIZERS[0] if VERBALIZERS[0] in words else best_pair)


def section_3_few_shot(lesson, checkpoint, mlm, tok, task, pair):
    """k labelled sentences, two ways: prompt-based fine-tuning and a new head; returns their test accuracies
    as ({k: [one per seed]}, {k: [one per seed]})."""
    lesson.section("3. Few-shot: prompt-based fine-tuning vs a new head")
    shots = lesson.pick(smoke=[16], quick=[16, 64], full=[16, 64, 256, 1024])  # quick: the few-shot end only
    seeds = lesson.pick(smoke=[0], quick=[0, 1], full=[0, 1, 2, 3, 4])
    batch_size, steps_for = 16, lesson.pick(smoke={16: 2}, quick={16: 16, 64: 32, 256: 48},
                                            full={16: 16, 64: 32, 256: 48, 1024: 256})
    test = task.data.test
    neg, pos = pair
    word_ids = [tok.encode(neg)[0], tok.encode(pos)[0]]
    lesson.say(f"""
        With k labelled sentences (k = {shots}), two ways to fine-tune the same pretrained
        encoder, with the same learning rate ({DEFAULT_LR['full']:g}, warmup then linear decay),
        batch size {batch_size} and number of steps ({', '.join(f'{steps_for[k]} for k={k}' for k in shots)}):
        (a) prompt-based: keep the masked-LM head and train it to put "{pos.strip()}" or
        "{neg.strip()}" at the blank (the same loss as pretraining, answers taken from the
        labels; the Trainer does it); (b) a SequenceClassifier with a freshly initialised
        pooler and classifier, fine-tuned by `minilm.downstream.finetuning` (which also picks its best epoch
        on {len(task.data.validation.texts)} validation sentences, a small advantage). Seeds {seeds} draw
        different k examples.""")
    prompt_acc, head_acc = {}, {}
    for k in shots:
        for seed in seeds:
            shot_task = with_subset(task, "train", k, seed)  # the same k examples for both methods
            texts, labels = shot_task.data.train.texts, shot_task.data.train.labels
            config = ModelConfig.from_dict({**mlm.config.to_dict(), "dropout": 0.1, "attention_dropout": 0.1})
            model = MaskedLM(config)
            model.load_state_dict(mlm.state_dict())
            steps = steps_for[k]
            tcfg = TrainConfig(steps=steps, lr=DEFAULT_LR["full"], warmup_steps=max(1, steps // 10),
                               schedule="linear", min_lr_ratio=0.0, weight_decay=0.01, beta2=0.999, eps=1e-8,
                               log_every=max(1, steps // 4), seed=seed, progress=False)
            Trainer(model, tcfg, ClozeBatches(texts, labels, tok, word_ids, min(batch_size, k), seed)).fit()
            prompt_acc.setdefault(k, []).append(cloze_accuracy(mask_log_probs(model, tok, test.texts), test.labels,
                                                               word_ids))
            cfg = FinetuneConfig(task="classify", data="rt-polarity", init=str(checkpoint), method="full", seed=seed,
                                 batch_size=batch_size, epochs=max(1, steps * batch_size // k), progress=False)
            row = run_finetune(cfg, shot_task)
            head_acc.setdefault(k, []).append(row["test"]["accuracy"])
            print(f"  [k={k:4d} seed {seed}] prompt {prompt_acc[k][-1]:.1%}   head {head_acc[k][-1]:.1%}", flush=True)
    return prompt_acc, head_acc


def why_the_prompt_lost(checkpoint, pair, zero_shot: float, chance: float) -> str:
    """The explanation of a lost few-shot race, conditional on what was measured about this encoder."""
    neg, pos = (w.strip() for w in pair)
    text = (f"Here the prompt lost. The argument above needs an encoder whose masked-LM head already prefers "
            f'"{pos}" after praise and "{neg}" after scorn. Zero-shot, this one scored {zero_shot:.1%} against '
            f"{chance:.0%} for chance: ")
    if zero_shot - chance < NEAR_CHANCE:
        text += (f"within {100 * NEAR_CHANCE:.0f} points of chance, so its head has not put sentiment into those "
                 f"two words. ")
    else:
        text += "above chance, so the head knows some sentiment, yet too little for a few labels to build on. "
    extra = read_config(checkpoint)["extra"]
    if "eval_accuracy" in extra and "constant_guess_accuracy" in extra:
        acc, guess = extra["eval_accuracy"], extra["constant_guess_accuracy"]
        text += (f"Its checkpoint records a held-out masked-token accuracy of {acc:.1%} against {guess:.1%} for "
                 f"the constant guess: ")
        text += ("still the plateau of frequent words (lesson 05), so it cannot yet fill a blank from context, "
                 "let alone with a sentiment. " if acc - guess < PLATEAU else
                 "it does fill blanks from context (lesson 05), but a word that fits the sentence is not yet a "
                 "word that fits its sentiment. ")
    return text + ("The new head, trained end to end with the encoder, can still find the sentiment in the labels. "
                   "Prompting pays off once pretraining is long enough to put the task into the masked-LM head, "
                   "which is why it arrived with large models.")


def section_4_labels_worth(lesson, checkpoint, mlm, task, pair, zero_shot, prompt_acc, head_acc) -> None:
    """The few-shot curves side by side: mean ± std over seeds per k, the gap at the ends, the picture."""
    lesson.section("4. How many labels is a prompt worth?")
    neg, pos = pair
    shots = sorted(prompt_acc)
    n_seeds = len(prompt_acc[shots[0]])
    chance = 1 / len(set(task.data.test.labels))
    print(f"  {'k':>5} | {'prompt (cloze)':>16} | {'new head':>16}")
    print(f"  {0:5d} | {zero_shot:>16.1%} | {f'(chance) {chance:.1%}':>16}")
    for k in shots:
        (pm, ps), (hm, hs) = mean_std(prompt_acc[k]), mean_std(head_acc[k])
        print(f"  {k:5d} | {pm:9.1%} ± {ps:4.1%} | {hm:9.1%} ± {hs:4.1%}")
        lesson.record(f"{k} labels: prompt vs head test accuracy (mean ± std, {n_seeds} seeds)",
                      f"{pm:.1%} ± {ps:.1%} vs {hm:.1%} ± {hs:.1%}", headline=True)
    k0, k1 = shots[0], shots[-1]
    p0, h0 = mean_std(prompt_acc[k0])[0], mean_std(head_acc[k0])[0]
    gap0 = p0 - h0
    gap1 = mean_std(prompt_acc[k1])[0] - mean_std(head_acc[k1])[0]
    lesson.say(f"""
        With {k0} labels the prompt scores {p0:.1%} and the new head {h0:.1%} ({100 * gap0:+.1f}
        points for the prompt); with {k1} labels the difference is {100 * gap1:+.1f} points. The
        argument for the prompt: it starts from zero-shot, with the masked-LM head and the
        embeddings of "{pos.strip()}" and "{neg.strip()}" trained on every blank of pretraining, so a
        few examples only have to nudge them. A new head starts from random numbers and must
        learn, from the labelled examples alone, which direction in a {mlm.config.d_model}-dimensional
        space means "positive". As labels grow, the way the task is asked matters less and what
        the encoder knows matters more, so the two curves are expected to meet.""")
    if gap0 < 0:
        lesson.say(why_the_prompt_lost(checkpoint, pair, zero_shot, chance))
    lesson.record("prompt minus head at the fewest / most labels (points)", f"{100 * gap0:+.1f} / {100 * gap1:+.1f}")
    lesson.save_data("few_shot", {"prompt_accuracy": prompt_acc, "head_accuracy": head_acc})

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, acc, color in (("prompt-based (cloze)", prompt_acc, "C0"), ("new classification head", head_acc, "C3")):
        ms = [mean_std(acc[k]) for k in shots]
        ax.errorbar(shots, [100 * m for m, _ in ms], yerr=[100 * s for _, s in ms], fmt="o-", capsize=4,
                    color=color, label=f"{name} (mean ± std)")
    ax.axhline(100 * zero_shot, color="C0", ls="--", alpha=0.6, label="zero-shot cloze")
    ax.axhline(100 * chance, color="0.6", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="labelled examples (k)", ylabel="test accuracy (%)", title="rt-polarity: few-shot with prompts")
    ax.legend(fontsize=8)
    lesson.save_figure(fig, "few_shot_curve")


if __name__ == "__main__":
    main()
