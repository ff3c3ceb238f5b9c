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

from minilm.collate import classification_batch
from minilm.data import load_classification
from minilm.finetune import DEFAULT_LR, FinetuneConfig, load_finetuned, run_finetune
from minilm.lesson import pretrained_checkpoint, start
from minilm.peft import merge_lora

METHODS = ("full", "probe", "lora", "adapter", "prefix")


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
    rows = section_2_runs(lesson, configs)
    section_3_trade_off(lesson, rows)
    section_4_merging(lesson)
    lesson.finish()


def section_1_methods(lesson) -> dict:
    """The five methods and their settings; returns {method: the FinetuneConfig it runs with}."""
    lesson.section("1. Five methods")
    train_size = lesson.pick(smoke=32, quick=512, full=None)
    epochs = lesson.pick(smoke=1, quick=4, full=5)
    eval_size = lesson.pick(smoke=32, quick=400, full=None)
    checkpoint, where = pretrained_checkpoint(lesson)
    configs = {m: FinetuneConfig(task="classify", data="rt-polarity", init=str(checkpoint), method=m,
                                 seed=lesson.seed, epochs=epochs, train_size=train_size, eval_size=eval_size,
                                 out=str(lesson.out / m), overwrite=True, progress=False) for m in METHODS}
    for m, cfg in configs.items():
        print(f"  {m:>8}: {what(m, cfg)} (peak learning rate {DEFAULT_LR[m]:g})")
    n_train = train_size or len(load_classification("rt-polarity").train.texts)
    lesson.say(f"""
        All five start from {where} and fine-tune on rt-polarity sentiment
        ({n_train:,} labelled sentences, {epochs} epochs, epoch chosen on validation,
        test scored once). The new parameters start small or at zero (LoRA's B and the
        adapters' up-projection are zero), so each method begins exactly at the pretrained
        model; freshly added weights need a larger learning rate than the pretrained ones.""")
    return configs


def section_2_runs(lesson, configs: dict) -> dict:
    """One fine-tuning run per method; returns {method: its result row}."""
    lesson.section("2. Runs")
    rows = {}
    for method, cfg in configs.items():
        rows[method] = run_finetune(cfg)
        print(f"  [{method}] test accuracy {rows[method]['test']['accuracy']:.1%}, "
              f"{rows[method]['trainable_params']:,} trainable parameters", flush=True)
    return rows


def section_3_trade_off(lesson, rows: dict) -> None:
    """Trainable parameters, file size and accuracy per method, as a table and a plot."""
    lesson.section("3. Trainable parameters against accuracy")
    sizes = {m: sum(f.stat().st_size for f in (lesson.out / m).rglob("*.safetensors")) for m in rows}
    header = "| method | trainable params | share | validation acc | test acc | file on disk | time |"
    table = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in rows.items():
        table.append(f"| {m} | {r['trainable_params']:,} | {r['trainable_pct']:.2f}% | "
                     f"{r['validation']['accuracy']:.1%} | {r['test']['accuracy']:.1%} | "
                     f"{sizes[m] / 1e6:.2f} MB | {r['time_s']:.0f} s |")
    print("\n".join(table))
    lesson.table("PEFT methods on rt-polarity", "\n".join(table))
    full, lora = rows["full"]["test"]["accuracy"], rows["lora"]["test"]["accuracy"]
    lesson.say(f"""
        Full fine-tuning trains all {rows['full']['total_params']:,} parameters and writes the
        whole model ({sizes['full'] / 1e6:.1f} MB). LoRA trains {rows['lora']['trainable_pct']:.1f}% of
        them and its file is {sizes['lora'] / 1e6:.2f} MB, and scores {lora:.1%} against full
        fine-tuning's {full:.1%} ({100 * (lora - full):+.1f} points). The probe is the cheapest
        and shows how much of the task the frozen features already solve. With one frozen
        base, every further task costs one small file instead of one more model.""")
    lesson.record("LoRA vs full fine-tuning: trainable share, test accuracy",
                  f"{rows['lora']['trainable_pct']:.1f}% of the parameters, {lora:.1%} vs {full:.1%} "
                  f"({100 * (lora - full):+.1f} points)", headline=True)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m, r in rows.items():
        ax.scatter(r["trainable_params"], 100 * r["test"]["accuracy"], s=50)
        ax.annotate(m, (r["trainable_params"], 100 * r["test"]["accuracy"]), textcoords="offset points",
                    xytext=(6, 4))
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters (log scale)", ylabel="test accuracy (%)",
           title=f"rt-polarity, {rows['full']['train_size']:,} labels: what each method buys")
    ax.grid(alpha=0.3)
    lesson.save_figure(fig, "params_vs_accuracy")


def section_4_merging(lesson) -> None:
    """The LoRA run reloaded from its small file, merged into its base weights: the same logits."""
    lesson.section("4. Merging LoRA: same answers, no extra cost")
    model, tok, _ = load_finetuned(lesson.out / "lora")
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
