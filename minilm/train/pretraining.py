"""`minilm pretrain`: self-supervised pretraining on unlabelled text, and its batch sources.

    minilm pretrain                                   # 10 CPU-minutes of bert-mini MLM on IMDB -> runs/pretrain/final
    minilm pretrain --device cuda --precision bf16 --batch-size 256 --lr 1e-3 --warmup 300 \
        --time-budget 4 --out runs/bert-mini-gpu       # a few GPU minutes
    torchrun --nproc_per_node=2 -m minilm pretrain …  # data parallel, same global batch
    MINILM_CACHE=/path/to/cache minilm pretrain …     # offline: fetched IMDB, tokenizer and tokenized corpus

Design choices:
- The default is a recipe that *learns* on a small budget (in the spirit of Geiping &
  Goldstein's "Cramming"): no dropout while pretraining, exact-count masking at a higher rate
  than BERT's 15% (more supervised positions per step), loss and logits only at masked
  positions (the model's sparse prediction), short rows (128), a short warmup, and small
  batches (16 rows) at lr 1e-3. BERT's original masking stays flags away (`--dropout 0.1
  --mask-prob 0.15 --mask-count bernoulli`).
- Held-out accuracy is scored with every predicted token hidden (`eval_batches`). Scored
  BERT's way, the 10% of predicted tokens left visible are answered by copying the input,
  which models learn within a few hundred steps: on IMDB that alone reads as ~12% against a
  3.9% constant guess, and it hid the fact that the learned-position runs never left the
  unigram plateau (30 CPU-minutes of bert-mini, 1,535 steps: 3.8% vs 3.9%, loss 6.79
  against the unigram's 6.85; neither 100% [MASK] training nor lr 3e-4 changed that).
- Rotary positions (RoFormer) are what got the model off the plateau on the CPU: with the
  same recipe, bert-mini reached 6.7% after 150 steps and 11.9% after 250 (one thread, then
  two; honest scoring). Angles fixed by position let attention find a blank's neighbours
  from the first step, where a learned position table starts as noise (on a synthetic task
  whose blanks are copies of their neighbours, learned positions stayed at chance for 300
  steps at every lr tried). `--position learned` keeps BERT's table, for Hugging Face export.
- The blocks are the preset's: post-norm for the BERT presets. Not Cramming's pre-norm: a
  pre-norm masked LM whose embeddings are not normalised (GPT-2's layout) could not even
  memorise one batch (loss stuck at the batch's unigram entropy, 5.08, after 150 steps,
  where post-norm and transformers' BERT reached 0.02), most likely because the tied
  decoder's gradient drags every token embedding, and with them the unnormalised residual
  stream, the same way (with the embeddings normalised, or the decoder untied, the same
  model memorised the batch).
- Batches are a pure function of (seed, step): the rows of a step come from a seeded
  permutation of the epoch, the masks from a generator seeded by (seed, step). Resume needs no
  data state, and the *global* batch is the same for any number of ranks: each rank masks
  the global batch and keeps its slice.
- Rows live on the training device and are masked there, batched: on a GPU, data and masking
  cost no host round trip.
- Two causal-LM batch sources: `CausalLMBatches` serves the packed rows of `decoder_rows`,
  each token a target once per epoch; `CausalLMWindows` cuts each row at a random offset of
  one long token stream (nanoGPT's get_batch), so rows overlap and start mid-sentence
  anywhere. Both are pure functions of (seed, step) and shard the same global batch.
- The tokenizer is `Tokenizer.for_corpus(data, vocab, lowercase=True)`, cached under
  $MINILM_CACHE with the tokenized corpus, so a copied cache folder lets an offline machine
  start training at once, and fine-tuning on lower-cased rt-polarity sees the same pieces.
- The run folder's `final/` (and `best/`) is a checkpoint `minilm finetune --init` reads, and
  `minilm pretrain --init` continues (fresh optimiser and warmup, same tokenizer and shape).
- The recipe's settings and defaults live in one dataclass, `PretrainRecipe`.
- `--objective electra` (minilm/nn/electra.py) trains a generator and a discriminator on the
  same masked batches, every chosen token shown as [MASK]. It is not the default: at 10
  CPU-minutes its encoder fine-tuned at chance where the masked LM's gained 2 points over
  scratch (`minilm bench objectives`; the figures are in the README).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch


OBJECTIVES = {"mlm": "token", "whole_word": "whole_word", "span": "span", "sequence": "sequence", "clm": None,
              "electra": "token"}  # objective -> masking strategy (None: causal LM, no masking)
ELECTRA_MASK_PROB = 0.15  # the paper's rate: the generator fills 15% of the tokens, the discriminator reads all

def _mix(seed: int, *values: int) -> int:
    """A 63-bit seed from a tuple of integers (splitmix-style), so (seed, step) streams never collide."""
    x = seed & 0xFFFFFFFFFFFFFFFF
    for v in values:
        x = (x ^ (v + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class RowSampler:
    """Which rows make the global batch of a step: epoch after epoch of seeded permutations."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, device: torch.device):
        if n_rows < 1:
            raise ValueError("the corpus gave no training rows: use a larger corpus or a smaller --seq-len")
        self.n_rows, self.batch_size, self.seed, self.device = n_rows, batch_size, seed, device
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator(device="cpu").manual_seed(_mix(self.seed, 1, epoch))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n_rows, generator=g).to(self.device)  # (N,)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """Row indices of the global batch of `step` (B,), on the device."""
        start = step * self.batch_size
        first, last = start // self.n_rows, (start + self.batch_size - 1) // self.n_rows
        parts = []
        for epoch in range(first, last + 1):
            lo = max(start, epoch * self.n_rows) - epoch * self.n_rows
            hi = min(start + self.batch_size, (epoch + 1) * self.n_rows) - epoch * self.n_rows
            parts.append(self._perm(epoch)[lo:hi])
        return torch.cat(parts)  # (B,)


def _shard(batch: dict, rank: int, world_size: int) -> dict:
    size = next(iter(batch.values())).shape[0]
    if size % world_size:
        raise ValueError(f"--batch-size {size} is not divisible by the world size {world_size}")
    per = size // world_size
    return {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}


class MaskedLMBatches:
    """Masked-LM batches from packed rows held on `device`.

    `batch(step, rank, world_size)` -> this rank's slice of the global batch of `step`;
    `eval_batches()` -> the whole set in order, masked once with a fixed seed (the same every call).
    """

    def __init__(self, input_ids: torch.Tensor, word_ids: torch.Tensor, tokenizer, masking, batch_size: int,
                 seed: int = 0, device="cpu"):
        self.device = torch.device(device)
        self.input_ids = input_ids.to(self.device)  # (N, T)
        self.word_ids = word_ids.to(self.device)  # (N, T)
        self.tokenizer, self.masking, self.batch_size, self.seed = tokenizer, masking, batch_size, seed
        self.sampler = RowSampler(len(self.input_ids), batch_size, seed, self.device)
        self.generator = torch.Generator(device=self.device)
        self._eval: list[dict] | None = None

    def _mask(self, rows: torch.Tensor, seed: int, masking=None) -> dict:
        from minilm.data.collate import mlm_batch

        self.generator.manual_seed(seed)
        return mlm_batch(self.input_ids[rows], self.word_ids[rows], self.tokenizer, masking or self.masking,
                         self.generator)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        return _shard(self._mask(self.sampler.indices(step), _mix(self.seed, 2, step)), rank, world_size)

    def eval_batches(self):
        """Held-out batches in which every chosen token is replaced by [MASK].

        Training keeps some chosen tokens unchanged (BERT's 80/10/10); scoring those would reward
        copying the visible input, which a model learns long before it learns to use context
        (it alone is worth about 9 points of accuracy). Evaluation hides every token it scores.
        """
        if self._eval is None:
            hidden = dataclasses.replace(self.masking, mask_frac=1.0, random_frac=0.0, keep_frac=0.0)
            rows = torch.arange(len(self.input_ids), device=self.device)
            self._eval = [self._mask(r, _mix(self.seed, 3, i), hidden) for i, r in enumerate(rows.split(self.batch_size))]
        return self._eval

    def constant_guess_accuracy(self) -> float:
        """Accuracy of always predicting the most frequent masked token of the eval set."""
        labels = torch.cat([b["labels"][b["labels"] != -100] for b in self.eval_batches()])
        return (torch.bincount(labels).max() / max(1, labels.numel())).item()


class CausalLMBatches:
    """Next-token batches from contiguous rows (N, T+1) held on `device`; same contract as MaskedLMBatches."""

    def __init__(self, rows: torch.Tensor, tokenizer, batch_size: int, seed: int = 0, device="cpu"):
        self.device = torch.device(device)
        self.rows = rows.to(self.device)  # (N, T+1)
        self.tokenizer, self.batch_size, self.seed = tokenizer, batch_size, seed
        self.sampler = RowSampler(len(self.rows), batch_size, seed, self.device)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        from minilm.data.collate import clm_batch

        return _shard(clm_batch(self.rows[self.sampler.indices(step)], self.tokenizer), rank, world_size)

    def eval_batches(self):
        from minilm.data.collate import clm_batch

        return [clm_batch(r, self.tokenizer) for r in self.rows.split(self.batch_size)]

    def constant_guess_accuracy(self) -> float:
        labels = torch.cat([b["labels"][b["labels"] != -100] for b in self.eval_batches()])
        return (torch.bincount(labels).max() / max(1, labels.numel())).item()


class CausalLMWindows:
    """Next-token batches of random windows of one long token stream (S,) held on `device`.

    `batch(step, rank, world_size)`: the global batch of `step` is `batch_size` windows of
    seq_len + 1 consecutive tokens starting at offsets drawn uniformly from [0, S - seq_len - 1]
    by a generator seeded with (seed, step), nanoGPT's get_batch made reproducible; each rank
    keeps its slice. `eval_batches()`: the stream cut into consecutive windows (as
    `decoder_rows` cuts it), so held-out loss scores every token once, the same every call.
    """

    def __init__(self, stream: torch.Tensor, tokenizer, batch_size: int, seq_len: int, seed: int = 0, device="cpu"):
        if stream.dim() != 1 or len(stream) < seq_len + 1:
            raise ValueError(f"CausalLMWindows needs a 1-D token stream of at least seq_len + 1 = {seq_len + 1} "
                             f"tokens; got shape {tuple(stream.shape)}")
        self.device = torch.device(device)
        self.stream = stream.long().to(self.device)  # (S,)
        self.tokenizer, self.batch_size, self.seq_len, self.seed = tokenizer, batch_size, seq_len, seed
        self.window = torch.arange(seq_len + 1, device=self.device)  # (T + 1,)

    def starts(self, step: int) -> torch.Tensor:
        """Where the windows of `step` begin, (B,) on the device."""
        g = torch.Generator(device="cpu").manual_seed(_mix(self.seed, 4, step))
        return torch.randint(0, len(self.stream) - self.seq_len, (self.batch_size,), generator=g).to(self.device)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        from minilm.data.collate import clm_batch

        rows = self.stream[self.starts(step)[:, None] + self.window]  # (B, T + 1)
        return _shard(clm_batch(rows, self.tokenizer), rank, world_size)

    def eval_batches(self):
        from minilm.data.collate import clm_batch

        n = (len(self.stream) - 1) // self.seq_len
        rows = self.stream[torch.arange(n, device=self.device)[:, None] * self.seq_len + self.window]  # (N, T + 1)
        return [clm_batch(r, self.tokenizer) for r in rows.split(self.batch_size)]

    def constant_guess_accuracy(self) -> float:
        labels = torch.cat([b["labels"][b["labels"] != -100] for b in self.eval_batches()])
        return (torch.bincount(labels).max() / max(1, labels.numel())).item()


@dataclass
class PretrainRecipe:
    """Every setting of `minilm pretrain` and its default: the one home of the recipe.

    The command line, its validation and the lessons read it. `None` means "decided later":
    preset, vocab_size and position come from the `init` checkpoint when there is one (else
    bert-mini, 8,192, rope); mask_prob is the recipe's 30%, or half the row for `sequence`
    (MASS); with neither steps nor time_budget the run lasts 10 minutes.
    """
    preset: str | None = None
    objective: str = "mlm"
    data: str = "imdb"
    init: str | None = None  # a checkpoint or run folder to continue from (its weights, tokenizer and shape)
    vocab_size: int | None = None
    seq_len: int = 128
    batch_size: int = 16
    accumulation: int = 1
    steps: int | None = None
    time_budget: float | None = None  # minutes
    lr: float = 1e-3
    warmup: int = 50
    schedule: str = "cosine"
    weight_decay: float = 0.01
    mask_prob: float | None = None
    mask_count: str = "exact"
    dropout: float = 0.0
    position: str | None = None
    eval_rows: int = 256
    seed: int = 0

    DEFAULT_MINUTES = 10.0
    RECIPE_MASK_PROB = 0.3

    def __post_init__(self):
        from minilm.nn.config import PRESETS
        from minilm.train.optim import SCHEDULES

        def need(ok: bool, field: str, accepted: str):
            if not ok:
                raise ValueError(f"--{field.replace('_', '-')}={getattr(self, field)!r} is invalid: expected {accepted}")

        need(self.preset is None or self.preset in PRESETS, "preset", f"one of {sorted(PRESETS)}")
        need(self.objective in OBJECTIVES, "objective", f"one of {sorted(OBJECTIVES)}")
        need(self.vocab_size is None or self.vocab_size >= 300, "vocab_size",
             "an integer >= 300 (256 bytes + specials + merges)")
        need(self.seq_len >= 8, "seq_len", "an integer >= 8")
        need(self.batch_size >= 1, "batch_size", "a positive integer")
        need(self.accumulation >= 1 and self.batch_size % self.accumulation == 0, "accumulation",
             f"a positive integer that divides --batch-size {self.batch_size}")
        need(self.steps is None or self.steps >= 1, "steps", "a positive integer")
        need(self.time_budget is None or self.time_budget > 0, "time_budget", "minutes > 0")
        need(self.steps is None or self.time_budget is None, "time_budget", "either --steps or --time-budget, not both")
        need(self.lr > 0, "lr", "a positive float")
        need(self.warmup >= (10 if self.steps is None else 0), "warmup",
             "at least 10 steps with a time budget (they are timed to fix the number of steps)")
        need(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}")
        need(self.mask_prob is None or 0.0 < self.mask_prob < 1.0, "mask_prob", "a fraction in (0, 1)")
        need(self.mask_count in ("exact", "bernoulli"), "mask_count", "'exact' or 'bernoulli'")
        need(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")
        need(self.position in (None, "rope", "learned"), "position", "'rope' or 'learned'")
        need(self.eval_rows >= 1, "eval_rows", "a positive integer")
        if self.steps is None and self.time_budget is None:
            self.time_budget = self.DEFAULT_MINUTES
        if self.init is None:
            self.preset = self.preset or "bert-mini"
            self.vocab_size = self.vocab_size or 8192
            self.position = self.position or "rope"

    def masking(self):
        from minilm.data.masking import DEFAULT_MASK_PROB, MaskingConfig

        default = {"sequence": DEFAULT_MASK_PROB["sequence"], "electra": ELECTRA_MASK_PROB}
        prob = self.mask_prob or default.get(self.objective, self.RECIPE_MASK_PROB)
        # ELECTRA's generator sees [MASK] at every chosen position: the replacements are its samples.
        split = dict(mask_frac=1.0, random_frac=0.0, keep_frac=0.0) if self.objective == "electra" else {}
        return MaskingConfig(strategy=OBJECTIVES[self.objective], mask_prob=prob, count=self.mask_count, **split)

    def settings(self) -> dict:
        """What shapes the data and the model: a resume must keep all of these."""
        keep = ("preset", "objective", "data", "init", "vocab_size", "seq_len", "batch_size", "mask_prob", "mask_count",
                "dropout", "position", "eval_rows")
        return {k: getattr(self, k) for k in keep}


RECIPE = PretrainRecipe()


def _model_class(objective: str) -> type:
    from minilm.nn.electra import ELECTRA
    from minilm.nn.model import CausalLM, MaskedLM

    return {"clm": CausalLM, "electra": ELECTRA}.get(objective, MaskedLM)


def _from_checkpoint(recipe: PretrainRecipe):
    """The --init model and tokenizer, after checking that the flags given agree with it."""
    from minilm.train.checkpoint import constructor_kwargs, load_model
    from minilm.nn.config import ModelConfig
    from minilm.train.run_folder import resolve

    base = resolve(recipe.init, flag="--init")
    model, tokenizer = load_model(base)
    want = _model_class(recipe.objective)
    if not isinstance(model, want) or tokenizer is None:
        raise ValueError(f"--init {recipe.init}: the checkpoint holds {type(model).__name__}"
                         f"{'' if tokenizer is not None else ' without a tokenizer'}; --objective {recipe.objective} "
                         f"continues {want.__name__} saved with its tokenizer")
    config = model.config
    clashes = []
    if recipe.preset is not None:
        shape = ModelConfig.preset(recipe.preset)
        clashes += [f"--preset {recipe.preset} has {k}={getattr(shape, k)}, the checkpoint {getattr(config, k)}"
                    for k in ("d_model", "n_layers", "n_heads", "d_ff") if getattr(shape, k) != getattr(config, k)]
    if recipe.vocab_size is not None and recipe.vocab_size != tokenizer.vocab_size:
        clashes.append(f"--vocab-size {recipe.vocab_size}, the checkpoint's tokenizer {tokenizer.vocab_size}")
    if recipe.position is not None and recipe.position != config.position:
        clashes.append(f"--position {recipe.position}, the checkpoint {config.position}")
    if recipe.seq_len > config.max_seq_len:
        clashes.append(f"--seq-len {recipe.seq_len} is longer than the checkpoint's max_seq_len {config.max_seq_len}")
    if clashes:
        raise ValueError(f"--init {base}: " + "; ".join(clashes) + " (the shape and tokenizer come from the "
                         "checkpoint: leave these flags out)")
    fresh = type(model)(dataclasses.replace(config, dropout=recipe.dropout, attention_dropout=recipe.dropout),
                        **constructor_kwargs(model))
    fresh.load_state_dict(model.state_dict())
    return fresh, tokenizer, base


def build(recipe: PretrainRecipe, device: torch.device, verbose: bool = True):
    """Tokenizer, model, train and eval batch sources for `recipe` -> (tokenizer, model, train, eval)."""
    from minilm.data.collate import special_ids
    from minilm.nn.config import ModelConfig
    from minilm.data.corpus import decoder_rows, encoder_rows, tokenize_corpus
    from minilm.data.load import load_corpus
    from minilm.data.tokenizer import Tokenizer

    causal = recipe.objective == "clm"
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    if recipe.init is not None:
        model, tokenizer, base = _from_checkpoint(recipe)
    else:
        tokenizer = Tokenizer.for_corpus(recipe.data, recipe.vocab_size, lowercase=True)
        preset = ModelConfig.preset(recipe.preset)
        config = ModelConfig.preset(recipe.preset, vocab_size=tokenizer.vocab_size,
                                    max_seq_len=max(recipe.seq_len, min(preset.max_seq_len, 512)),
                                    dropout=recipe.dropout, attention_dropout=recipe.dropout, position=recipe.position)
        extra = {"special_ids": special_ids(tokenizer)} if recipe.objective == "electra" else {}
        model = _model_class(recipe.objective)(config, **extra)
    docs = load_corpus(recipe.data)
    corpus = tokenize_corpus(docs, tokenizer, str(recipe.data))
    if causal:
        rows = decoder_rows(corpus, recipe.seq_len, tokenizer)  # (N, T+1)
    else:
        rows, word_ids = encoder_rows(corpus, recipe.seq_len, tokenizer)  # (N, T), (N, T)
    n_eval = min(recipe.eval_rows, len(rows) // 10)
    if n_eval < 1:
        raise ValueError(f"--data {recipe.data} gave only {len(rows)} rows of {recipe.seq_len} tokens: too few to "
                         f"hold out an eval set")
    if verbose:
        print(f"data: {len(docs):,} documents -> {len(rows):,} rows of {recipe.seq_len} tokens "
              f"({len(rows) - n_eval:,} train, {n_eval:,} held out), tokenizer vocab {tokenizer.vocab_size:,} "
              f"[{time.perf_counter() - t0:.1f}s]" + (f"; weights from {base}" if recipe.init else ""), flush=True)
    if causal:
        train = CausalLMBatches(rows[:-n_eval], tokenizer, recipe.batch_size, recipe.seed, device)
        held = CausalLMBatches(rows[-n_eval:], tokenizer, recipe.batch_size, recipe.seed, device)
    else:
        masking = recipe.masking()
        train = MaskedLMBatches(rows[:-n_eval], word_ids[:-n_eval], tokenizer, masking, recipe.batch_size,
                                recipe.seed, device)
        held = MaskedLMBatches(rows[-n_eval:], word_ids[-n_eval:], tokenizer, masking, recipe.batch_size,
                               recipe.seed, device)
    return tokenizer, model, train, held
