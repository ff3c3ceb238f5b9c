"""`minilm bench model`: one masked-LM training step, minilm's MaskedLM vs transformers' BertForMaskedLM.

How it measures:
- The same shape on both sides (bert-mini: 4 layers, width 256, 4 heads; vocabulary 8,192;
  batch 32 x 128; 15% of positions carry a label), the same weights (copied through
  `to_hf`, and checked to give the same loss in eval mode), training mode (dropout on),
  the same optimiser for both: `torch.optim.AdamW(fused=True)`, transformers' Trainer
  default and the fastest of fused / foreach / for-loop here (a few ms of a multi-second step).
- A step is forward + loss + backward + optimiser step + zero_grad, on fixed pre-made batches.
- Shared machines are noisy, so the two are timed in the same run, interleaved (A B B A …),
  `--repeats` times `--steps` steps each after a warm-up; the figure is the median of the
  repeats, and the ratio is of the medians.
- Where minilm's advantage comes from: transformers multiplies every position by the
  8,192-word vocabulary and then ignores 85% of the result in the loss; minilm gathers the
  labelled positions first, so its head costs ~1/6 of transformers'. The encoder body is
  the same computation on both sides and, on a 2-core CPU, most of the step (~80% of
  minilm's): its many memory-bound element-wise passes (dropout, layer norm, GELU, softmax,
  bias gradients) dominate, so the measured ratio falls short of the FLOP ratio (printed).
  minilm's body trims a little: one fused q|k|v matmul, its own attention under dropout
  (torch's sdpa falls back to an unfused path then), no mask when nothing is padded, no
  segment-embedding lookup when there are no segment ids.
"""
from __future__ import annotations

import platform
import statistics
import time

import torch

from minilm.nn.config import ModelConfig
from minilm.nn.model import MaskedLM


def configure(parser):
    parser.add_argument("--preset", default="bert-mini", help="ModelConfig preset for both models (default bert-mini)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--mask-prob", type=float, default=0.15)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")


def make_batches(n: int, batch_size: int, seq_len: int, vocab_size: int, mask_prob: float, seed: int = 0):
    """Random token rows with BERT-style 15% masking (the masked inputs become token 0, '[MASK]' here)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)  # (B, T)
        chosen = torch.rand(batch_size, seq_len, generator=g) < mask_prob  # (B, T)
        batches.append(dict(input_ids=ids.masked_fill(chosen, 0), attention_mask=torch.ones_like(ids),
                            labels=ids.masked_fill(~chosen, -100)))
    return batches


def time_steps(model, optimizer, batches) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for one training step on each batch, all together."""
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_flops(model: MaskedLM, batch_size: int, seq_len: int, n_labelled: int) -> tuple[float, float]:
    """Training matmul FLOPs of one step (6 per weight per row, plus attention): (minilm, transformers).

    transformers runs the head (transform + vocabulary decoder) on every position, minilm on the labelled ones.
    """
    c = model.config
    tokens = batch_size * seq_len
    body = sum(m.weight.numel() for m in model.body.modules() if isinstance(m, torch.nn.Linear))
    body_flops = tokens * (6 * body + 12 * c.n_layers * c.d_model * seq_len)
    head = 6 * (c.d_model * c.d_model + c.vocab_size * c.d_model)
    return body_flops + n_labelled * head, body_flops + tokens * head


def hf_twin(ours: MaskedLM):
    """transformers' BertForMaskedLM of the same shape, holding the same weights."""
    # Lazy: the reference library is a test-only dependency and slow to import; only a run of this benchmark needs it.
    import transformers

    c = ours.config
    hf_config = transformers.BertConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        intermediate_size=c.d_ff, hidden_act=c.activation if c.activation == "gelu" else "gelu_pytorch_tanh",
        hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.attention_dropout,
        max_position_embeddings=c.max_seq_len, type_vocab_size=c.type_vocab_size, layer_norm_eps=c.norm_eps)
    hf = transformers.BertForMaskedLM(hf_config)
    hf.load_state_dict(ours.to_hf())
    return hf


def run(args):
    # Lazy: the reference library is a test-only dependency and slow to import; only a run of this benchmark needs it.
    import transformers

    torch.manual_seed(0)
    config = ModelConfig.preset(args.preset, vocab_size=args.vocab_size, max_seq_len=max(args.seq_len, 512))
    ours = MaskedLM(config)
    hf = hf_twin(ours)
    batches = make_batches(args.steps, args.batch_size, args.seq_len, args.vocab_size, args.mask_prob)
    check = {k: v[:4] for k, v in batches[0].items()}
    with torch.no_grad():
        a, b = ours.eval()(**check).loss.item(), hf.eval()(**check).loss.item()
    if abs(a - b) > 1e-4 * max(1.0, abs(b)):
        raise RuntimeError(f"the two models disagree before timing: loss {a:.6f} (minilm) vs {b:.6f} (transformers)")
    models = {"minilm": ours.train(), "transformers": hf.train()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for name, m in models.items()}
    tokens = args.steps * args.batch_size * args.seq_len
    print(f"minilm bench model: {args.preset} masked-LM training step (forward, backward, AdamW)")
    print(f"  shape: batch {args.batch_size} x {args.seq_len}, vocabulary {args.vocab_size}, "
          f"{args.mask_prob:.0%} masked; {sum(p.numel() for p in ours.parameters()):,} parameters")
    print(f"  machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print(f"  same weights (loss {a:.4f} vs {b:.4f} in eval mode); dropout on while timing; AdamW(fused=True) "
          f"for both; {args.repeats} interleaved repeats of {args.steps} steps after {args.warmup} warm-up steps")
    labelled = sum(int((b["labels"] != -100).sum()) for b in batches) / len(batches)
    ours_flops, hf_flops = matmul_flops(ours, args.batch_size, args.seq_len, round(labelled))
    print(f"  matmul work per step: minilm {ours_flops / 1e9:.0f} GFLOP, transformers {hf_flops / 1e9:.0f} GFLOP "
          f"({hf_flops / ours_flops:.2f}x: the ratio if a step were all matmuls)")
    for name, model in models.items():
        time_steps(model, optimizers[name], (batches * args.warmup)[: args.warmup])
    rates = {name: [] for name in models}
    cpu_rates = {name: [] for name in models}
    for r in range(args.repeats):
        order = list(models) if r % 2 == 0 else list(models)[::-1]  # A B, B A, ...: drift hits both alike
        for name in order:
            wall, cpu = time_steps(models[name], optimizers[name], batches)
            rates[name].append(tokens / wall)
            cpu_rates[name].append(tokens / cpu)
        print(f"  repeat {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:,.0f} tok/s" for n in models))
    median = {name: statistics.median(values) for name, values in rates.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu_rates.items()}
    # CPU time is a cross-check: other processes on a shared machine inflate wall time more than CPU time.
    print(f"  per CPU-second (cross-check): minilm {cpu_median['minilm']:,.0f}, transformers "
          f"{cpu_median['transformers']:,.0f}; ratio {cpu_median['minilm'] / cpu_median['transformers']:.2f}x")
    print(f"median tokens/s: minilm {median['minilm']:,.0f}, transformers {median['transformers']:,.0f}; "
          f"ratio {median['minilm'] / median['transformers']:.2f}x")
    return 0
