"""`minilm bench masking`: what masking costs next to a training step, and against transformers' collator.

How it measures:
- One batch of `--batch-size` x `--seq-len` packed encoder rows ("[CLS] ... [SEP]", a
  document break ([SEP]) about every 300 tokens, words of 1-4 tokens with 1.3 tokens per word
  on average, as a BPE gives on English), ids laid out like minilm's Tokenizer (special tokens
  at the top of a `--vocab-size` vocabulary). Synthetic, so the benchmark runs offline
  anywhere; masking cost depends on shapes and word structure, not on which words they are.
- Masking time is `minilm.data.collate.mlm_batch` (maskable positions, the strategy, the 80/10/10
  replacement, labels): everything the trainer calls per step. Each strategy and count mode is
  timed about `--repeats` times after a warm-up; the figure is the median.
- A training step is bert-mini's MaskedLM forward + loss + backward + AdamW step + zero_grad on
  that batch (token masking, 15%), the median of `--steps` steps after two warm-up steps (bf16
  autocast on CUDA, as the trainer runs there). Steps and masking calls alternate, so both are
  timed under the same machine load. The fraction is masking median / step median.
- Against transformers' DataCollatorForLanguageModeling (token masking, 15%, 80/10/10) on the
  same rows, on the CPU, calls interleaved (A B B A ...) so drift hits both alike, medians:
  (1) the whole collate from lists of ids (transformers pads through its tokenizer, given the
  special-token masks precomputed, its fastest path; minilm pads in `mlm_batch`), and
  (2) masking alone on a ready tensor (`torch_mask_tokens` on a copy, given the special-token
  mask, vs `mask_tokens` given `maskable`). Throughput ratio = transformers time / minilm time.
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch
from tqdm.auto import tqdm

from minilm.data.collate import maskable_positions, mlm_batch, replacement_ids
from minilm.nn.config import ModelConfig
from minilm.data.masking import COUNTS, STRATEGIES, MaskingConfig, mask_tokens
from minilm.nn.model import MaskedLM

SPECIALS = ("<|endoftext|>", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")  # minilm's Tokenizer order


class Vocabulary:
    """The ids of minilm's Tokenizer layout (special tokens after the ordinary ones), without BPE."""

    def __init__(self, vocab_size: int):
        first = vocab_size - len(SPECIALS)
        self.vocab_size = vocab_size
        self.eot_id, self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id = range(first, vocab_size)
        self.special_ids = list(range(first, vocab_size))


def synthetic_rows(batch_size: int, seq_len: int, vocab: Vocabulary, seed: int = 0):
    """(input_ids, word_ids), both (B, T): packed rows with document breaks and multi-token words."""
    g = torch.Generator().manual_seed(seed)
    B, T = batch_size, seq_len
    ids = torch.randint(0, vocab.vocab_size - len(SPECIALS), (B, T), generator=g)  # (B, T)
    # Word starts: a token starts a new word with probability 1/1.3, and words stop at 4 tokens.
    starts = torch.rand(B, T, generator=g) < 1 / 1.3  # (B, T)
    for k in range(3, T):  # after three continuation tokens in a row, a new word starts
        starts[:, k] |= ~starts[:, k - 3: k].any(1)
    breaks = torch.rand(B, T, generator=g) < 1 / 300  # (B, T) document ends
    ids = ids.masked_fill(breaks, vocab.sep_id)
    ids[:, 0], ids[:, -1] = vocab.cls_id, vocab.sep_id
    special = ids >= vocab.vocab_size - len(SPECIALS)  # (B, T)
    word_ids = (starts | special).long().cumsum(1).masked_fill(special, -1)  # (B, T)
    return ids, word_ids


def timed(fn, sync) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call of fn, waiting for the device."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def training_step(config: ModelConfig, batch: dict, device: torch.device):
    """A closure doing one MaskedLM training step (forward, loss, backward, AdamW, zero_grad) on `batch`."""
    torch.manual_seed(0)
    model = MaskedLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def hf_collator(vocab: Vocabulary):
    """transformers' DataCollatorForLanguageModeling over a word-level tokenizer with the same ids."""
    # Lazy: the reference library is a test-only dependency and slow to import; only a run of this benchmark needs it.
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab.vocab_size - len(SPECIALS))}
    words.update({s: vocab.vocab_size - len(SPECIALS) + i for i, s in enumerate(SPECIALS)})
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=HFTokenizer(WordLevel(words, unk_token="[UNK]")), eos_token="<|endoftext|>",
        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]")
    assert tokenizer.mask_token_id == vocab.mask_id and len(tokenizer) == vocab.vocab_size
    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)


def configure(parser):
    parser.add_argument("--preset", default="bert-mini", help="model of the training step (default bert-mini)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=50,
                        help="timed masking calls per figure; the median is reported")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps; the median is reported")
    parser.add_argument("--device", default="cpu", help="where masking and the step run (cpu, cuda); "
                        "the transformers comparison always runs on the CPU")


def run(args):
    # Lazy: the reference library is a test-only dependency and slow to import; only a run of this benchmark needs it.
    import transformers

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    vocab = Vocabulary(args.vocab_size)
    ids, word_ids = synthetic_rows(args.batch_size, args.seq_len, vocab)  # (B, T), (B, T)
    ids_dev, words_dev = ids.to(device), word_ids.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    config = ModelConfig.preset(args.preset, vocab_size=args.vocab_size, max_seq_len=max(args.seq_len, 512))
    B, T = ids.shape
    n_words = int(((word_ids >= 0) & (word_ids != torch.nn.functional.pad(word_ids[:, :-1], (1, 0), value=-1))).sum())

    print(f"minilm bench masking: masking a {B} x {T} batch vs one {args.preset} training step; "
          "token masking vs transformers' DataCollatorForLanguageModeling")
    print(f"  machine: {platform.machine()} {platform.processor() or ''}, device {device}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print(f"  rows: synthetic packed encoder rows, vocabulary {args.vocab_size}, "
          f"{int((word_ids >= 0).sum()) / n_words:.2f} "
          f"tokens per word, {int((ids == vocab.sep_id).sum()) - B} document breaks in the batch")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start")
    print("  masking: minilm.data.collate.mlm_batch; step: forward, loss, backward, AdamW"
          + (" (bf16 autocast)" if device.type == "cuda" else "") + "; both after a warm-up")

    step = training_step(config, mlm_batch(ids_dev, words_dev, vocab, MaskingConfig(), generator), device)
    calls = {}
    for strategy in STRATEGIES:
        for count in COUNTS:
            masking = MaskingConfig(strategy=strategy, count=count)
            calls[strategy, count] = lambda masking=masking: mlm_batch(ids_dev, words_dev, vocab, masking, generator)
    for fn in [step, step, *calls.values()]:  # warm-up
        fn()
    sync()
    # Steps and masking calls alternate, so that both are timed under the same machine load.
    step_times, masking_times = [], {key: [] for key in calls}
    per_step = -(-args.repeats // args.steps)
    for _ in tqdm(range(args.steps), desc="timing", unit="step", disable=None, leave=False):
        step_times.append(timed(step, sync))
        for key, fn in calls.items():
            masking_times[key] += [timed(fn, sync) for _ in range(per_step)]
    def median_ms(times, which):  # which: 0 = wall time, 1 = CPU time
        return 1000 * statistics.median(t[which] for t in times)

    step_ms, step_cpu = median_ms(step_times, 0), median_ms(step_times, 1)
    print(f"  training step: {step_ms:.1f} ms (median of {args.steps}; CPU time {step_cpu:.1f} ms); masking: "
          f"median of {per_step * args.steps} calls per row, alternating with the steps")
    # CPU time is a cross-check on a shared machine, where other processes inflate wall time.
    cpu_note = "" if device.type == "cuda" else f" {'CPU time':>9}"
    print(f"{'strategy':<11} {'count':<10} {'labelled':>8} {'masking ms':>11} {'of a step':>10}{cpu_note}")
    for (strategy, count), fn in calls.items():
        masked = float((fn()["labels"] != -100).float().mean())
        ms = median_ms(masking_times[strategy, count], 0)
        cpu = "" if device.type == "cuda" else f" {median_ms(masking_times[strategy, count], 1) / step_cpu:>9.3%}"
        print(f"{strategy:<11} {count:<10} {masked:>8.1%} {ms:>11.3f} {ms / step_ms:>10.3%}{cpu}")

    # Against transformers, on the CPU, the same rows.
    collator = hf_collator(vocab)
    token = MaskingConfig()
    cpu_generator = torch.Generator().manual_seed(0)
    rows = ids.tolist()
    special = ~maskable_positions(ids, vocab)  # (B, T)
    examples = [{"input_ids": r, "special_tokens_mask": s} for r, s in zip(rows, special.long().tolist())]
    maskable, allowed = ~special, replacement_ids(vocab)
    pairs = {
        "collate from lists": (lambda: mlm_batch(rows, None, vocab, token, cpu_generator), lambda: collator(examples)),
        "mask a ready tensor": (
            lambda: mask_tokens(ids, token, mask_id=vocab.mask_id, maskable=maskable, replacement_ids=allowed,
                                generator=cpu_generator),
            lambda: collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)),
    }
    print(f"token masking on the CPU vs transformers {transformers.__version__} DataCollatorForLanguageModeling "
          f"(same rows, 15%, 80/10/10; interleaved, median of {args.repeats}):")
    print(f"{'':<20} {'minilm ms':>10} {'transformers ms':>16} {'throughput':>11} {'(CPU time)':>11}")
    for name, (ours, theirs) in pairs.items():
        ours(), theirs()  # warm-up
        times = {ours: [], theirs: []}
        for r in range(args.repeats):
            for fn in ((ours, theirs) if r % 2 == 0 else (theirs, ours)):
                times[fn].append(timed(fn, lambda: None))
        a, b = median_ms(times[ours], 0), median_ms(times[theirs], 0)
        cpu_ratio = median_ms(times[theirs], 1) / max(median_ms(times[ours], 1), 1e-6)
        print(f"{name:<20} {a:>10.3f} {b:>16.3f} {b / a:>10.1f}x {cpu_ratio:>10.1f}x")
    return 0
