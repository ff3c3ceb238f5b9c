"""Scaling up: mixed precision, MFU, gradient accumulation and data-parallel training.

What you will learn:
- number formats: why bf16 trains without loss scaling and fp16 needs it, with real
  round-off and overflow numbers, and what autocast changes in a model's loss;
- model FLOPs utilisation (MFU): FLOPs per token from the model's shape, tokens per
  second from the trainer, and the machine's ceiling measured with one big matmul;
- gradient accumulation: micro-batches, weighted by their labelled tokens, give the same update
  as one big batch;
- data parallelism: two processes launched by `torchrun` (gloo on the CPU), each with half
  of every batch, train exactly like one process with the whole batch.

Run: python lessons/12_scaling.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import torch

from minilm import MaskedLM, ModelConfig, Trainer, TrainConfig
from minilm.data.corpus import encoder_rows, tokenize_corpus
from minilm.course.lesson import lesson_corpus, start
from minilm.train.pretraining import RECIPE, MaskedLMBatches
from minilm.train.mfu import PEAK_FLOPS


def matmul_flops(n: int, dtype=torch.float32, repeats: int = 3) -> float:
    """Achieved FLOP/s of an n x n matmul on this machine (best of `repeats`)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in map(json.loads, open(run_dir / "metrics.jsonl")) if "loss" in r]


def main(argv=None):
    lesson = start(__file__, argv)
    docs, tok, config, data = build_data(lesson)
    section_1_number_formats(lesson, config, data)
    section_2_mfu(lesson, config, data)
    section_3_accumulation(lesson, config, data)
    section_4_data_parallel(lesson, docs, tok)
    lesson.finish()


def build_data(lesson):
    """The masked-LM rows and encoder config every section uses: (docs, tokenizer, ModelConfig, batches)."""
    docs, tok = lesson_corpus(lesson)
    corpus = tokenize_corpus(docs, tok, "imdb" if not lesson.smoke else "imdb-smoke")
    rows, word_ids = encoder_rows(corpus, lesson.pick(smoke=32, quick=128, full=128), tok)  # (N, T)
    config = ModelConfig.preset(lesson.pick(smoke="bert-tiny", quick="bert-mini", full="bert-mini"),
                                vocab_size=tok.vocab_size, max_seq_len=rows.shape[1], dropout=0.0,
                                attention_dropout=0.0, position=RECIPE.position)
    data = MaskedLMBatches(rows, word_ids, tok, RECIPE.masking(), batch_size=lesson.pick(smoke=8, quick=32, full=32))
    return docs, tok, config, data


def section_1_number_formats(lesson, config, data) -> None:
    """float32, bf16 and fp16: range, precision, round-off; one batch's loss under bf16 autocast."""
    lesson.section("1. Number formats and mixed precision")
    x = torch.tensor([1.0 + 1 / 3, 70000.0, 1e-8])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        info = torch.finfo(dtype)
        print(f"  {str(dtype):>15}: {info.bits} bits, largest {info.max:.3g}, step after 1.0 {info.eps:.1e}, "
              f"[1.333.., 70000, 1e-8] -> {[float(v) for v in x.to(dtype)]}")
    bf16, fp16 = torch.finfo(torch.bfloat16), torch.finfo(torch.float16)
    lesson.say(f"""
        bf16 keeps float32's 8 exponent bits (the same range, up to {bf16.max:.1e}) and gives up
        precision: a step of {bf16.eps:.1e} after 1.0, about {math.log10(2 / bf16.eps):.0f} significant
        digits. fp16 keeps more precision but overflows at {fp16.max:,.0f} and flushes tiny numbers to
        zero, so small gradients vanish: fp16 training multiplies the loss by a large factor before
        the backward pass and divides the gradients afterwards (loss scaling, `GradScaler`). Mixed
        precision runs the matmuls in 16 bits and keeps the weights, the optimiser and sensitive
        sums (softmax, norms, the loss) in float32; `torch.autocast` picks which op runs in which
        format.""")
    torch.manual_seed(lesson.seed)
    model = MaskedLM(config).eval()
    batch = data.batch(0)
    with torch.no_grad():
        fp32_loss = float(model(**batch).loss)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_loss = float(model(**batch).loss)
    lesson.say(f"""
        The same batch through an untrained {config.n_layers}-layer encoder: loss {fp32_loss:.5f} in
        float32 and {bf16_loss:.5f} under bf16 autocast, a relative difference of
        {abs(bf16_loss - fp32_loss) / fp32_loss:.1e}. On a GPU the trainer uses bf16 by default
        (tensor cores run it faster than float32); on this CPU it stays in float32.""")
    lesson.record("loss fp32 vs bf16 autocast (relative difference)", abs(bf16_loss - fp32_loss) / fp32_loss, "{:.1e}")


def section_2_mfu(lesson, config, data) -> None:
    """Model FLOPs utilisation: FLOPs per token from the shape, tokens/s from the trainer, the ceiling
    measured (CPU) or from the datasheet (GPU)."""
    lesson.section("2. MFU: how much of the machine does training use?")
    steps = lesson.pick(smoke=3, quick=10, full=50)
    masking, seq_len = data.masking, data.input_ids.shape[1]
    trainer = Trainer(MaskedLM(config), TrainConfig(steps=steps, lr=1e-3, warmup_steps=2, log_every=steps,
                                                    progress=False, seed=lesson.seed), data)
    trainer.fit()
    tokens_per_s = trainer.history[-1]["tokens_per_s"]
    # describe() counts the vocabulary projection at every position; a masked LM runs it only at the
    # masked share, so take the rest of its 6·V·d back out.
    flops_per_token = (MaskedLM(config).describe(seq_len)["flops_per_token"]
                       - 6 * config.vocab_size * config.d_model * (1 - masking.mask_prob))
    if "mfu" in trainer.history[-1]:  # a GPU in the trainer's table: MFU against its datasheet peak
        mfu = trainer.history[-1]["mfu"]
        ceiling = tokens_per_s * flops_per_token / mfu
    else:
        ceiling = matmul_flops(lesson.pick(smoke=256, quick=1536, full=2048), repeats=5)
        mfu = tokens_per_s * flops_per_token / ceiling
    against = "the GPU's datasheet peak" if "mfu" in trainer.history[-1] else "one large float32 matmul here"
    lesson.say(f"""
        Training FLOPs per token for this model are about 6 x (parameters that multiply) + the
        attention scores, with the vocabulary projection counted only at the masked {masking.mask_prob:.0%} of
        positions: {flops_per_token / 1e6:.1f} MFLOP (from `model.describe()`). The trainer
        measured {tokens_per_s:,.0f} tokens/s, i.e. {tokens_per_s * flops_per_token / 1e9:.1f} GFLOP/s of
        useful work. The ceiling it is measured against is {ceiling / 1e9:,.1f} GFLOP/s ({against}),
        so training runs at {mfu:.0%} of it (MFU). The rest goes to small ops (norms,
        softmax, GELU, masking), memory traffic and Python. On GPUs MFU is quoted against the
        datasheet peak: the trainer's table has {PEAK_FLOPS['H200'] / 1e12:.0f} TFLOP/s (bf16 dense)
        for an H200, and prints MFU in its progress bar there.""")
    lesson.record("CPU training: tokens/s, MFU vs measured matmul ceiling",
                  f"{tokens_per_s:,.0f} tokens/s, {mfu:.0%} of {ceiling / 1e9:.0f} GFLOP/s")


def section_3_accumulation(lesson, config, data, accumulation: int = 4) -> None:
    """One optimiser step on the whole batch against `accumulation` micro-batches: the same weights."""
    micro = data.batch_size // accumulation
    lesson.section(f"3. Gradient accumulation: {accumulation} x {micro} = {data.batch_size}")
    weights = {}
    for n in (1, accumulation):
        torch.manual_seed(lesson.seed)
        m = MaskedLM(config)
        Trainer(m, TrainConfig(steps=1, lr=1e-3, warmup_steps=1, accumulation=n, precision="fp32",
                               progress=False), data).fit()
        weights[n] = torch.cat([p.detach().flatten().cpu() for p in m.parameters()])
    diff = float((weights[1] - weights[accumulation]).abs().max())
    moved = float((weights[1] - torch.cat([p.detach().flatten() for p in _fresh(config, lesson.seed)])).abs().max())
    lesson.say(f"""
        When a batch does not fit in memory, split it into micro-batches, run forward and
        backward on each, add up the gradients, and step once. The catch: each micro-batch's
        mean loss must be weighted by its share of the labelled tokens of the whole batch
        (masked rows hold different numbers of labels), or the sum is not the big batch's
        gradient. One optimiser step with the batch of {data.batch_size} at once, and with {accumulation}
        micro-batches of {micro}: the weights moved by up to {moved:.1e} and the two
        results differ by at most {diff:.1e} (float32 round-off).""")
    lesson.record(f"accumulation {accumulation} x micro vs 1 x batch (max weight difference)", diff, "{:.1e}")


def section_4_data_parallel(lesson, docs, tok, nproc: int = 2, batch_size: int = 16) -> None:
    """`minilm pretrain` in one process and under torchrun with `nproc` processes: the same losses."""
    lesson.section(f"4. Data parallel with torchrun: {nproc} processes, one model")
    ddp_steps = lesson.pick(smoke=3, quick=8, full=20)
    if lesson.smoke:  # a tiny text file keeps the smoke run to seconds
        data_arg, vocab = str(lesson.out / "tiny.txt"), "300"
        (lesson.out / "tiny.txt").write_text("\n".join(docs[:100]))
    else:
        data_arg, vocab = "imdb", str(tok.vocab_size)
    common = ["-m", "minilm", "pretrain", "--preset", "bert-tiny", "--data", data_arg, "--vocab-size", vocab,
              "--seq-len", "64", "--batch-size", str(batch_size), "--steps", str(ddp_steps), "--warmup", "2",
              "--log-every", "1", "--eval-every", str(ddp_steps), "--save-every", str(ddp_steps), "--eval-rows", "8",
              "--no-progress", "--seed", str(lesson.seed), "--device", "cpu", "--overwrite"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                               "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # one thread per process, so the processes do not fight over cores
    many = f"torchrun, {nproc} processes"
    timings = {}
    for name, launcher in (("one process", [sys.executable]),
                           (many, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   f"--nproc_per_node={nproc}"])):
        out = lesson.out / ("ddp1" if name == "one process" else f"ddp{nproc}")
        t0 = time.perf_counter()
        done = subprocess.run([*launcher, *common, "--out", str(out)], env=env, capture_output=True, text=True)
        timings[name] = time.perf_counter() - t0
        if done.returncode:
            raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
        print(f"  {name}: {' '.join(['python', *launcher[1:], *common[:3]])} ... ({timings[name]:.0f} s)")
    one, two = losses(lesson.out / "ddp1"), losses(lesson.out / f"ddp{nproc}")
    gap = max(abs(a - b) for a, b in zip(one, two))
    faster = timings[many] < timings["one process"]
    lesson.say(f"""
        `torchrun --nproc_per_node={nproc} -m minilm pretrain ...` starts {nproc} processes; each joins a
        process group (gloo on the CPU, NCCL on GPUs), holds a full copy of the model, takes
        its share of every global batch of {batch_size} rows, and DistributedDataParallel averages the
        gradients across processes during the backward pass, so every copy takes the same
        step. Losses per step, one process: {[round(v, 4) for v in one]}; {nproc} processes:
        {[round(v, 4) for v in two]}; largest difference {gap:.1e}. Only rank 0 logs and writes
        checkpoints. On this machine's {os.cpu_count()} CPU cores it took {timings['one process']:.0f} s
        against {timings[many]:.0f} s, start-up included ({"faster" if faster else "no faster"}): the point is
        that the same command spreads over 8 GPUs (`--nproc_per_node=8`) unchanged.""")
    lesson.record(f"torchrun {nproc} processes vs 1 (max loss difference per step)", gap, "{:.1e}", headline=True)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(range(1, len(one) + 1), one, "o-", label=f"1 process, batch {batch_size}")
    ax.plot(range(1, len(two) + 1), two, "x--", ms=9, label=f"torchrun: {nproc} processes x {batch_size // nproc} rows")
    ax.set(xlabel="step", ylabel="training loss", title="Data parallel equals one big batch")
    ax.legend()
    lesson.save_figure(fig, "ddp_losses")


def _fresh(config, seed):
    torch.manual_seed(seed)
    return [p.detach() for p in MaskedLM(config).parameters()]


if __name__ == "__main__":
    main()
