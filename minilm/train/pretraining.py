"""Self-supervised pretraining: the recipe, its batch sources, and `pretrain(recipe)` behind `minilm pretrain`.

    minilm pretrain                                   # 10 CPU-minutes of bert-mini MLM on IMDB -> runs/pretrain/final
    minilm pretrain --device cuda --precision bf16 --batch-size 256 --lr 1e-3 --warmup 300 \
        --time-budget 4 --out runs/bert-mini-gpu       # a few GPU minutes
    minilm pretrain --init HF_BERT_FOLDER --data rt-polarity:train-text  # task-adaptive, from a real BERT
    torchrun --nproc_per_node=2 -m minilm pretrain …  # data parallel, same global batch
    MINILM_CACHE=/path/to/cache minilm pretrain …     # offline: fetched IMDB, tokenizer and tokenized corpus

Design choices (the figures behind them: lessons/measurements/design_choices.md):
- The default is a recipe that *learns* on a small budget (in the spirit of Geiping &
  Goldstein's "Cramming"): no dropout while pretraining, exact-count masking at a higher rate
  than BERT's 15% (more supervised positions per step), loss and logits only at masked
  positions (the model's sparse prediction), short rows (128), a short warmup, and small
  batches (16 rows) at lr 1e-3. BERT's original masking stays flags away (`--dropout 0.1
  --mask-prob 0.15 --mask-count bernoulli`).
- Held-out accuracy is scored with every predicted token hidden (`eval_batches`): scored
  BERT's way, copying the visible tenth of the answers inflates the score and hides a model
  stuck at the unigram plateau.
- Rotary positions (RoFormer) by default: angles fixed by position let attention find a
  blank's neighbours from the first step, where a learned table starts as noise and kept
  bert-mini on the plateau for the whole CPU budget. `--position learned` keeps BERT's
  table, for Hugging Face export.
- The blocks are the preset's: post-norm for the BERT presets. Not Cramming's pre-norm: with
  unnormalised embeddings and a tied decoder, a pre-norm masked LM could not memorise one batch.
- Batches follow the library's one rule (`minilm.data.sampler`): the rows of a step come from
  a seeded permutation of the epoch, the masks from a generator seeded by (seed, step); each
  rank masks the global batch and keeps its slice, so resume needs no data state and any
  number of ranks trains like one.
- Rows live on the training device and are masked there, batched: on a GPU, data and masking
  cost no host round trip.
- Two causal-LM batch sources: `CausalLMBatches` serves the packed rows of `decoder_rows`,
  each token a target once per epoch; `CausalLMWindows` cuts each row at a random offset of
  one long token stream (nanoGPT's get_batch), so rows overlap and start mid-sentence
  anywhere. Both are pure functions of (seed, step) and shard the same global batch.
- The tokenizer is `Tokenizer.for_corpus(data, vocab, lowercase=True)`, cached under
  $MINILM_CACHE with the tokenized corpus, so a copied cache folder lets an offline machine
  start training at once, and fine-tuning on lower-cased rt-polarity sees the same pieces.
- `--init` takes any model source (`minilm.train.model_source`): a checkpoint or run folder
  continues with its tokenizer and shape, a Hugging Face BERT folder with its WordPiece (a
  fresh masked-LM head when it has none), always with a fresh optimiser and warmup.
- Every setting of `minilm pretrain` lives in one dataclass, `PretrainRecipe`, which builds
  its own `TrainConfig`; `pretrain(recipe)` claims the run folder before reading any data.
- `--objective electra` (minilm/nn/electra.py) trains a generator and a discriminator on the
  same masked batches, every chosen token shown as [MASK]. It is not the default: at the
  course's CPU budget its encoder fine-tuned at chance (`minilm bench objectives`).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minilm.data.collate import clm_batch, mlm_batch, special_ids
from minilm.data.corpus import decoder_rows, encoder_rows, tokenize_corpus
from minilm.data.load import load_corpus
from minilm.data.masking import COUNTS, DEFAULT_MASK_PROB, MaskingConfig
from minilm.data.sampler import EVAL_MASKS, MASKS, WINDOWS, RowSampler, mix, shard
from minilm.data.tokenizer import Tokenizer
from minilm.nn.config import POSITIONS, PRESETS, ModelConfig
from minilm.nn.electra import ELECTRA, held_out_metrics
from minilm.nn.model import CausalLM, MaskedLM
from minilm.store.atomic import atomic_write_text
from minilm.train import model_source
from minilm.train.model_source import ModelSource
from minilm.train.optim import SCHEDULES
from minilm.train.run_folder import RunFolder
from minilm.train.trainer import PRECISIONS, TrainConfig, Trainer, resolve_device, resolve_precision, setup_distributed


OBJECTIVES = {"mlm": "token", "whole_word": "whole_word", "span": "span", "sequence": "sequence", "clm": None,
              "electra": "token"}  # objective -> masking strategy (None: causal LM, no masking)
ELECTRA_MASK_PROB = 0.15  # the paper's rate: the generator fills 15% of the tokens, the discriminator reads all

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
        self.generator.manual_seed(seed)
        return mlm_batch(self.input_ids[rows], self.word_ids[rows], self.tokenizer, masking or self.masking,
                         self.generator)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        return shard(self._mask(self.sampler.indices(step), mix(self.seed, MASKS, step)), rank, world_size)

    def eval_batches(self):
        """Held-out batches in which every chosen token is replaced by [MASK].

        Training keeps some chosen tokens unchanged (BERT's 80/10/10); scoring those would reward
        copying the visible input, which a model learns long before it learns to use context
        (it alone is worth about 9 points of accuracy). Evaluation hides every token it scores.
        """
        if self._eval is None:
            hidden = dataclasses.replace(self.masking, mask_frac=1.0, random_frac=0.0, keep_frac=0.0)
            rows = torch.arange(len(self.input_ids), device=self.device)
            self._eval = [self._mask(r, mix(self.seed, EVAL_MASKS, i), hidden)
                          for i, r in enumerate(rows.split(self.batch_size))]
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
        return shard(clm_batch(self.rows[self.sampler.indices(step)], self.tokenizer), rank, world_size)

    def eval_batches(self):
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
        g = torch.Generator(device="cpu").manual_seed(mix(self.seed, WINDOWS, step))
        return torch.randint(0, len(self.stream) - self.seq_len, (self.batch_size,), generator=g).to(self.device)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        rows = self.stream[self.starts(step)[:, None] + self.window]  # (B, T + 1)
        return shard(clm_batch(rows, self.tokenizer), rank, world_size)

    def eval_batches(self):
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
    # How the run is carried out and kept (they do not change what is learned):
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on cuda, fp32 on cpu
    compile: bool = False
    log_every: int = 10
    eval_every: int = 0  # 0: ~8 evaluations per run; 250 steps with a time budget
    save_every: int = 0  # 0: ~4 resumable checkpoints per run; 1000 steps with a time budget
    out: str = "runs/pretrain"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    DEFAULT_MINUTES = 10.0
    RECIPE_MASK_PROB = 0.3

    def __post_init__(self):
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
        need(self.mask_count in COUNTS, "mask_count", f"one of {COUNTS}")
        need(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")
        need(self.position in (None, *POSITIONS), "position", f"one of {POSITIONS}")
        need(self.eval_rows >= 1, "eval_rows", "a positive integer")
        need(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        for field in ("log_every", "eval_every", "save_every"):
            need(getattr(self, field) >= (1 if field == "log_every" else 0), field,
                 "an integer >= 1" if field == "log_every" else "an integer >= 0 (0: the recipe's)")
        if self.steps is None and self.time_budget is None:
            self.time_budget = self.DEFAULT_MINUTES
        if self.init is None:
            self.preset = self.preset or "bert-mini"
            self.vocab_size = self.vocab_size or 8192
            self.position = self.position or "rope"

    def masking(self) -> MaskingConfig:
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

    def train_config(self) -> TrainConfig:
        """The Trainer's settings for this recipe (the one place they are derived)."""
        budget = 60 * self.time_budget if self.time_budget else 0.0
        steps = self.steps
        return TrainConfig(
            steps=steps, lr=self.lr, warmup_steps=min(self.warmup, steps) if steps else self.warmup,
            schedule=self.schedule, weight_decay=self.weight_decay, accumulation=self.accumulation,
            device=self.device, precision=self.precision, compile=self.compile, log_every=self.log_every,
            eval_every=self.eval_every or (250 if budget else max(1, steps // 8)),
            save_every=self.save_every or (1000 if budget else max(1, steps // 4)),
            seed=self.seed, resume=self.resume, overwrite=self.overwrite, progress=self.progress,
            time_budget_s=budget)


RECIPE = PretrainRecipe()


MODEL_CLASSES = {"clm": CausalLM, "electra": ELECTRA}  # objective -> model class (the rest: MaskedLM)


def _check_init(recipe: PretrainRecipe, source: ModelSource, config: ModelConfig) -> None:
    """Refuse flags that contradict the --init model's shape (it comes from the checkpoint)."""
    clashes = []
    if recipe.preset is not None:
        shape = ModelConfig.preset(recipe.preset)
        clashes += [f"--preset {recipe.preset} has {k}={getattr(shape, k)}, the checkpoint {getattr(config, k)}"
                    for k in ("d_model", "n_layers", "n_heads", "d_ff") if getattr(shape, k) != getattr(config, k)]
    if recipe.vocab_size is not None and recipe.vocab_size != config.vocab_size:
        clashes.append(f"--vocab-size {recipe.vocab_size}, the checkpoint's tokenizer {config.vocab_size}")
    if recipe.position is not None and recipe.position != config.position:
        clashes.append(f"--position {recipe.position}, the checkpoint {config.position}")
    if recipe.seq_len > config.max_seq_len:
        clashes.append(f"--seq-len {recipe.seq_len} is longer than the checkpoint's max_seq_len {config.max_seq_len}")
    if clashes:
        raise ValueError(f"--init {source}: " + "; ".join(clashes) + " (the shape and tokenizer come from the "
                         "checkpoint: leave these flags out)")


def init_model(recipe: PretrainRecipe, verbose: bool = True):
    """The model and tokenizer the recipe starts from -> (model, tokenizer, the --init source or None).

    Without --init (or with a preset): a new model of the preset's shape, the tokenizer trained
    for the corpus. With any other source (`model_source`): its weights, tokenizer and shape,
    dropout set to the recipe's.
    """
    want = MODEL_CLASSES.get(recipe.objective, MaskedLM)
    source = model_source.resolve(recipe.init, arch=recipe.preset) if recipe.init is not None else None
    if source is not None and source.kind != "scratch":
        _check_init(recipe, source, model_source.config_of(source))
        model, tokenizer = model_source.load(source, want, dropout=recipe.dropout, fresh_head=True,
                                             hint=f" (--objective {recipe.objective} continues a {want.__name__})")
        return model, tokenizer, source
    preset = source.preset if source is not None and source.preset else recipe.preset or "bert-mini"
    if source is not None and recipe.preset not in (None, preset):
        raise ValueError(f"--init {recipe.init} and --preset {recipe.preset} name two shapes: give one")
    tokenizer = Tokenizer.for_corpus(recipe.data, recipe.vocab_size or 8192, lowercase=True)
    shape = ModelConfig.preset(preset)
    if recipe.seq_len > shape.max_seq_len and verbose:
        print(f"minilm: --seq-len {recipe.seq_len} is longer than {preset}'s max_seq_len {shape.max_seq_len}: the "
              f"model is widened to {recipe.seq_len} positions (saved so)", file=sys.stderr, flush=True)
    scratch = model_source.resolve(preset)
    extra = {"special_ids": special_ids(tokenizer)} if recipe.objective == "electra" else {}
    model, tokenizer = model_source.load(
        scratch, want, tokenizer=tokenizer, dropout=recipe.dropout, **extra,
        config=dict(max_seq_len=max(recipe.seq_len, min(shape.max_seq_len, 512)), position=recipe.position or "rope"))
    return model, tokenizer, None


def build(recipe: PretrainRecipe, device: torch.device, verbose: bool = True):
    """Tokenizer, model, train and eval batch sources for `recipe` -> (tokenizer, model, train, eval)."""
    causal = recipe.objective == "clm"
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    model, tokenizer, base = init_model(recipe, verbose=verbose)
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
              f"[{time.perf_counter() - t0:.1f}s]" + (f"; weights from {base}" if base else ""), flush=True)
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


def pretrain(recipe: PretrainRecipe, *, command: str = "minilm pretrain") -> dict:
    """Run `recipe` into its run folder `recipe.out` -> the summary (also written to summary.json).

    Every check that needs no data runs before any is loaded, and the folder is claimed (or
    refused) before the corpus is read. `command` is recorded in every checkpoint.
    """
    rank, _, device = setup_distributed(resolve_device(recipe.device))  # under torchrun: this rank's GPU
    config = recipe.train_config()
    resolve_precision(config.precision, device)
    sink = RunFolder(recipe.out, keep_last=config.keep_last, resume=recipe.resume, overwrite=recipe.overwrite,
                     main=rank == 0, metadata={"command": command, "objective": recipe.objective,
                                               "data": str(recipe.data), "seq_len": recipe.seq_len,
                                               "settings": recipe.settings()})
    tokenizer, model, train, held = build(recipe, device, verbose=rank == 0)
    sink.tokenizer = tokenizer  # known once the corpus's tokenizer is trained (or the --init one loaded)
    def electra_scores(t: Trainer) -> dict:  # both sides' scores; the trainer's default knows only token accuracy
        return held_out_metrics(t.model, held.eval_batches(), t.device, t.autocast, recipe.seed)

    evaluate = electra_scores if recipe.objective == "electra" else None
    trainer = Trainer(model, config, train, held, evaluate=evaluate, sink=sink)
    baseline = held.constant_guess_accuracy()
    if trainer.is_main:
        c, info = model.config, model.describe()
        print(f"model: {c.d_model}-wide x {c.n_layers} layers ({c.norm}-norm, {c.position} positions, dropout "
              f"{recipe.dropout}), {info['params']:,} parameters; {recipe.objective} on {recipe.data}; "
              f"{recipe.steps or '?'} steps x {recipe.batch_size} x {recipe.seq_len} tokens on {trainer.device} "
              f"({trainer.precision}); world size {trainer.world_size}"
              + (f"; time budget {recipe.time_budget:g} min" if recipe.time_budget else ""), flush=True)
        print(f"best constant guess on the held-out set: {100 * baseline:.2f}% token accuracy", flush=True)
    t0 = time.perf_counter()
    summary = trainer.fit()
    summary.update(constant_guess_accuracy=baseline, wall_s=time.perf_counter() - t0,
                   tokens_seen=trainer.step * recipe.batch_size * recipe.seq_len)
    if trainer.is_main:
        _report(summary, baseline)
        atomic_write_text(Path(recipe.out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def _report(summary: dict, baseline: float) -> None:
    """The held-out scores against the constant guess, in a line or two."""
    if "eval_accuracy" in summary:
        print(f"held-out token accuracy {100 * summary['eval_accuracy']:.2f}% vs constant guess "
              f"{100 * baseline:.2f}% ({100 * (summary['eval_accuracy'] - baseline):+.2f} points)"
              + ("" if "eval_perplexity" not in summary else
                 f"; eval loss {summary['eval_loss']:.3f}, perplexity {summary['eval_perplexity']:.1f}"))
    if "eval_discriminator_accuracy" in summary:
        print(f"(that is the generator's; the discriminator: {100 * summary['eval_discriminator_accuracy']:.2f}% "
              f"of held-out tokens right, {100 * summary['eval_replaced_recall']:.1f}% of the replaced ones found "
              f"at {100 * summary['eval_replaced_precision']:.1f}% precision; "
              f"{100 * summary['eval_replaced_fraction']:.1f}% of tokens were replaced)")
