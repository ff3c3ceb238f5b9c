"""`minilm bench pretrain`: end-to-end masked-LM pretraining throughput, minilm vs transformers.

How it measures:
- The same data on both sides: IMDB rows of `--seq-len` tokens from minilm's corpus tokenizer
  (the rows `minilm pretrain` trains on), the same rows per step (minilm's seeded sampler).
- minilm: `minilm pretrain`'s own path. Rows are held on the device, each step gathers its
  rows, masks them there (`MaskedLMBatches`, exact-count token masking) and runs
  `Trainer.train_step` (forward, loss at masked positions only, backward, clipping, AdamW).
- transformers: what a user would write with it. The rows as Python lists (a dataset), batched
  by `DataCollatorForLanguageModeling` (on the CPU, as a DataLoader would), moved to the device,
  `BertForMaskedLM` forward/backward, clipping, AdamW. The collator needs an HF tokenizer: a
  word-level one with exactly minilm's ids and special tokens.
- Same shapes and the same recipe choices on both sides, so the figure is about the
  implementation: bert-mini widths, the same masking rate (80/10/10), no dropout, bf16 autocast
  and fused AdamW on CUDA, fp32 and foreach AdamW on the CPU, post-norm blocks on both sides.
- Shared machines are noisy, so the two are timed in the same run, interleaved (A B, B A, …)
  `--repeats` times `--steps` steps after warm-up; the figure is the median, and the ratio is
  of the medians. On CUDA each timed block ends with a synchronize.
"""
from __future__ import annotations

import platform
import statistics
import time

import torch

from minilm.data.corpus import encoder_rows, tokenize_corpus
from minilm.data.load import load_corpus
from minilm.data.masking import MaskingConfig
from minilm.data.tokenizer import Tokenizer
from minilm.nn.config import ModelConfig
from minilm.nn.model import MaskedLM
from minilm.train.optim import parameter_groups
from minilm.train.pretraining import RECIPE, MaskedLMBatches
from minilm.train.trainer import TrainConfig, Trainer


def configure(parser):
    parser.add_argument("--preset", default="bert-mini", help="ModelConfig preset for both models")
    parser.add_argument("--data", default="imdb", help="corpus (default imdb)")
    parser.add_argument("--vocab-size", type=int, default=RECIPE.vocab_size)
    parser.add_argument("--batch-size", type=int, default=None, help="rows per step (default 32 on cpu, 256 on cuda)")
    parser.add_argument("--seq-len", type=int, default=RECIPE.seq_len)
    parser.add_argument("--mask-prob", type=float, default=0.15,
                        help="masking rate for both (default 0.15, the collator's; minilm pretrain uses 0.3)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 3 cpu, 30 cuda)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3 cpu, 5 cuda)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile minilm's model too")


def hf_collator(tokenizer, mask_prob: float):
    """transformers' DataCollatorForLanguageModeling over a word-level HF tokenizer with minilm's ids."""
    # Lazy: the reference library is a test-only dependency and slow to import; only a run of this benchmark needs it.
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    names = {tokenizer.pad_id: "[PAD]", tokenizer.cls_id: "[CLS]", tokenizer.sep_id: "[SEP]",
             tokenizer.mask_id: "[MASK]", tokenizer.unk_id: "[UNK]", tokenizer.eot_id: "<|endoftext|>"}
    words = {names.get(i, f"t{i}"): i for i in range(tokenizer.vocab_size)}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=HFTokenizer(WordLevel(words, unk_token="[UNK]")), pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]", eos_token="<|endoftext|>")
    assert hf_tok.mask_token_id == tokenizer.mask_id and len(hf_tok) == tokenizer.vocab_size
    return DataCollatorForLanguageModeling(hf_tok, mlm_probability=mask_prob, seed=0)


def hf_model(config):
    # Lazy: the reference library is a test-only dependency and slow to import; only a run of this benchmark needs it.
    import transformers

    c = config
    return transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        intermediate_size=c.d_ff, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=c.max_seq_len, type_vocab_size=c.type_vocab_size, layer_norm_eps=c.norm_eps))


def run(args):
    # Lazy: the reference library is a test-only dependency and slow to import; only a run of this benchmark needs it.
    import transformers

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch_size = args.batch_size or (256 if cuda else 32)
    steps, repeats = args.steps or (30 if cuda else 3), args.repeats or (5 if cuda else 3)
    precision = args.precision if args.precision != "auto" else ("bf16" if cuda else "fp32")
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)

    tokenizer = Tokenizer.for_corpus(args.data, args.vocab_size, lowercase=True)
    corpus = tokenize_corpus(load_corpus(args.data), tokenizer, str(args.data))
    rows, word_ids = encoder_rows(corpus, args.seq_len, tokenizer)  # (N, T), (N, T)
    config = ModelConfig.preset(args.preset, vocab_size=tokenizer.vocab_size, max_seq_len=max(args.seq_len, 512),
                                dropout=0.0, attention_dropout=0.0)

    # minilm: rows on the device, masked there, the trainer's step.
    torch.manual_seed(0)
    masking = MaskingConfig(strategy="token", mask_prob=args.mask_prob, count="exact")
    source = MaskedLMBatches(rows, word_ids, tokenizer, masking, batch_size, seed=0, device=device)
    trainer = Trainer(MaskedLM(config), TrainConfig(steps=10**9, lr=1e-4, warmup_steps=0, device=str(device),
                                                    precision=precision, compile=args.compile, progress=False), source)

    # transformers: Python-list rows, collated on the CPU, then moved to the device.
    torch.manual_seed(0)
    hf = hf_model(config).to(device).train()
    hf_opt = torch.optim.AdamW(parameter_groups(hf, 0.01), lr=1e-4, **({"fused": True} if cuda else {"foreach": True}))
    collator = hf_collator(tokenizer, args.mask_prob)
    dataset = rows.tolist()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else None

    def hf_step(step: int):
        idx = source.sampler.indices(step).tolist()
        batch = collator([{"input_ids": dataset[i]} for i in idx])
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if autocast is not None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = hf(**batch).loss
        else:
            loss = hf(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    runners = {"minilm": trainer.train_step, "transformers": hf_step}
    counter = {"step": 0}

    def timed(name: str, n: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(n):
            runners[name](counter["step"])
            counter["step"] += 1
        sync()
        return time.perf_counter() - start

    print(f"minilm bench pretrain: end-to-end {args.preset} masked-LM pretraining (rows -> masking -> step)")
    print(f"  data: {args.data}, {len(rows):,} rows of {args.seq_len} tokens, vocabulary {tokenizer.vocab_size:,}; "
          f"batch {batch_size} x {args.seq_len}, {args.mask_prob:.0%} masked (80/10/10), no dropout")
    name = torch.cuda.get_device_name(device) if cuda else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"  device: {name}; {precision}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"  minilm: rows on the device, exact-count masking there, sparse MLM head"
          f"{', torch.compile' if args.compile else ''}; transformers: BertForMaskedLM (sdpa) + "
          f"DataCollatorForLanguageModeling on the CPU")
    print(f"  {repeats} interleaved repeats of {steps} steps after warm-up; median tokens/s")
    warm = 3 if cuda else 1
    for n in runners:
        timed(n, warm + (10 if args.compile and n == "minilm" else 0))
    tokens = steps * batch_size * args.seq_len
    rates = {n: [] for n in runners}
    for r in range(repeats):
        for n in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
            rates[n].append(tokens / timed(n, steps))
        print(f"  repeat {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:,.0f} tok/s" for n in runners), flush=True)
    median = {n: statistics.median(v) for n, v in rates.items()}
    print(f"median tokens/s: minilm {median['minilm']:,.0f}, transformers {median['transformers']:,.0f}; "
          f"ratio {median['minilm'] / median['transformers']:.2f}x")
    return 0
