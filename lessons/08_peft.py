"""Parameter-efficient fine-tuning: full, probe, LoRA, adapters and prefix tuning compared.

What you will learn:
- four ways to adapt a pretrained encoder while training only a sliver of its weights:
  a linear probe (head only), LoRA (low-rank updates beside frozen matrices), bottleneck
  adapters (small MLPs inside each block), prefix tuning (learned keys and values);
- the trade-off measured: trainable parameters against test accuracy, as a table and a plot;
- why it matters in practice: one frozen base model, many tiny task files (sizes measured);
- LoRA merged into the base weights gives the same outputs with no extra inference cost.

Run: python lessons/08_peft.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from minilm.data.collate import classification_batch
from minilm.data.load import load_classification
from minilm.downstream.finetuning import DEFAULT_LR, FinetuneConfig, run_finetune
from minilm.course.lesson import pretrained_checkpoint, start
from minilm.downstream.metrics import mean_std
from minilm.nn.peft import merge_lora
from minilm.train import model_source

METHODS = ("full", "probe", "lora", "adapter", "prefix")
SEEDS_QUICK = 3  # per method, as in --full


def what(method: str, cfg: FinetuneConfig) -> str:
    """One line on what `method` trains, with the sizes `cfg` gives it."""
    return {
        "full": "every weight trains",
        "probe": "body frozen; only the pooler and classifier train",
        "lora": f"frozen matrices + trained low-rank B·A (rank {cfg.lora_rank}) beside the body's "
                f"{', '.join(cfg.lora_targets)} layers",
        "adapter": f"frozen body + a trained {cfg.bottleneck}-wide bottleneck MLP after attention and feed-forward",
        "prefix": f"frozen body + {cfg.n_prefix} learned key/value vectors per layer that every token can attend to",
    }[method]


def main(argv=None):
    lesson = start(__file__, argv)
    configs = section_1_methods(lesson)
    runs = section_2_runs(lesson, configs)
    section_3_trade_off(lesson, runs)
    section_4_merging(lesson, configs["lora"][0].out)
    lesson.finish()


def section_1_methods(lesson) -> dict:
    """The five methods and their settings; returns {method: [the FinetuneConfig of each seed]}."""
    lesson.section("1. Five methods")
    train_size = lesson.pick(smoke=32, quick=512, full=None)
    epochs = lesson.pick(smoke=1, quick=4, full=5)
    eval_size = lesson.pick(smoke=32, quick=400, full=None)
    seeds = [lesson.seed + i for i in range(lesson.pick(smoke=1, quick=SEEDS_QUICK, full=3))]
    checkpoint, where = pretrained_checkpoint(lesson)
    configs = {m: [FinetuneConfig(task="classify", data="rt-polarity", init=str(checkpoint), method=m, seed=seed,
                                  epochs=epochs, train_size=train_size, eval_size=eval_size,
                                  out=str(lesson.out / f"{m}-s{seed}"), overwrite=True, progress=False)
                   for seed in seeds] for m in METHODS}
    for m, cfgs in configs.items():
        print(f"  {m:>8}: {what(m, cfgs[0])} (peak learning rate {DEFAULT_LR[m]:g})")
    n_train = train_size or len(load_classification("rt-polarity").train.texts)
    lesson.say(f"""
        All five start from {where} and fine-tune on rt-polarity sentiment
        ({n_train:,} labelled sentences, {epochs} epochs, epoch chosen on validation,
        test scored once), each with seeds {seeds}: the seed draws the training subset,
        the new weights and the batch order, and the spread over seeds says which
        differences are real. The new parameters start small or at zero (LoRA's B and the
        adapters' up-projection are zero), so each method begins exactly at the pretrained
        model; freshly added weights need a larger learning rate than the pretrained ones.""")
    return configs


def section_2_runs(lesson, configs: dict) -> dict:
    """Every method at every seed; returns {method: [its result row per seed]}."""
    lesson.section("2. Runs")
    runs = {}
    for method, cfgs in configs.items():
        for cfg in cfgs:
            row = run_finetune(cfg)
            runs.setdefault(method, []).append(row)
            print(f"  [{method} seed {cfg.seed}] test accuracy {row['test']['accuracy']:.1%}, "
                  f"{row['trainable_params']:,} trainable parameters, {row['time_s']:.0f} s", flush=True)
    return runs


def section_3_trade_off(lesson, runs: dict) -> None:
    """Trainable parameters, file size and accuracy (mean ± std over seeds) per method, as a table and a plot."""
    lesson.section("3. Trainable parameters against accuracy")
    sizes = {m: sum(f.stat().st_size for f in (lesson.out / f"{m}-s{rows[0]['seed']}").rglob("*.safetensors"))
             for m, rows in runs.items()}
    acc = {m: mean_std([r["test"]["accuracy"] for r in rows]) for m, rows in runs.items()}
    val = {m: mean_std([r["validation"]["accuracy"] for r in rows]) for m, rows in runs.items()}
    n_seeds = len(runs["full"])
    header = "| method | trainable params | share | validation acc | test acc | file on disk | time per run |"
    table = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for m, rows in runs.items():
        r = rows[0]
        table.append(f"| {m} | {r['trainable_params']:,} | {r['trainable_pct']:.2f}% | "
                     f"{val[m][0]:.1%} ± {val[m][1]:.1%} | {acc[m][0]:.1%} ± {acc[m][1]:.1%} | "
                     f"{sizes[m] / 1e6:.2f} MB | {sum(x['time_s'] for x in rows) / len(rows):.0f} s |")
    print("\n".join(table))
    lesson.table(f"PEFT methods on rt-polarity (mean ± std over {n_seeds} seeds)", "\n".join(table))
    (full, full_sd), (lora, lora_sd) = acc["full"], acc["lora"]
    share = runs["lora"][0]["trainable_pct"]
    gap = 100 * (lora - full)
    lesson.save_data("peft", {"test_accuracy": {m: [r["test"]["accuracy"] for r in rows] for m, rows in runs.items()},
                              "trainable_pct": {m: rows[0]["trainable_pct"] for m, rows in runs.items()}})
    lesson.say(f"""
        Full fine-tuning trains all {runs['full'][0]['total_params']:,} parameters and writes the
        whole model ({sizes['full'] / 1e6:.1f} MB). LoRA trains {share:.1f}% of
        them and its file is {sizes['lora'] / 1e6:.2f} MB, and scores {lora:.1%} ± {lora_sd:.1%} against full
        fine-tuning's {full:.1%} ± {full_sd:.1%} ({gap:+.1f} points, over {n_seeds} seed{'s' * (n_seeds > 1)}).
        LoRA's bet is that the update fine-tuning needs has a low rank, so a few percent of
        the parameters should come within a couple of points of training them all. The probe is the
        cheapest and shows how much of the task the frozen features already solve. With one frozen
        base, every further task costs one small file instead of one more model.""")
    lesson.record("LoRA vs full fine-tuning: trainable share, test accuracy",
                  f"{share:.1f}% of the parameters, {lora:.1%} vs {full:.1%} ({gap:+.1f} points, "
                  f"{n_seeds} seeds)", headline=True)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m, rows in runs.items():
        x, (y, dy) = rows[0]["trainable_params"], acc[m]
        ax.errorbar(x, 100 * y, yerr=100 * dy, fmt="o", capsize=3)
        ax.annotate(m, (x, 100 * y), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters (log scale)", ylabel="test accuracy (%)",
           title=f"rt-polarity, {runs['full'][0]['train_size']:,} labels: what each method buys "
                 f"(mean ± std, {n_seeds} seeds)")
    ax.grid(alpha=0.3)
    lesson.save_figure(fig, "params_vs_accuracy")


def section_4_merging(lesson, lora_run: str) -> None:
    """A LoRA run reloaded from its small file, merged into its base weights: the same logits."""
    lesson.section("4. Merging LoRA: same answers, no extra cost")
    model, tok, _ = model_source.load_finetuned(model_source.resolve(lora_run))
    batch = classification_batch(["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate."],
                                 None, tok, 64)
    with torch.no_grad():
        before = model(**batch).logits
        merge_lora(model)
        after = model(**batch).logits
    lesson.say(f"""
        Reloaded from its small file, the LoRA model's logits for two sentences are
        {[[round(x, 4) for x in row] for row in before.tolist()]}. Folding each B·A product into its frozen weight matrix (W + s·B·A)
        turns it back into a plain model; the logits then differ by at most
        {float((before - after).abs().max()):.1e}, and inference runs at the speed of the
        original network.""")
    lesson.record("LoRA merged vs unmerged (max logit difference)", float((before - after).abs().max()), "{:.1e}")


if __name__ == "__main__":
    main()
