"""`minilm finetune`: adapt a pretrained encoder (or the same one from scratch) to a labelled task.

    minilm finetune --task classify --data rt-polarity --init runs/pretrain --method lora
    minilm finetune --task ner --data conll2003 --init scratch --method full --seed 1
    minilm finetune --task classify --data my.tsv --init minilm/assets/pretrained --train-size 512

Design choices:
- Two tasks, one path. `ClassifyTask` (sentence -> label, `SequenceClassifier`, accuracy
  and macro-F1) and `NERTask` (words -> IOB2 tags, `TokenClassifier`, entity-level F1 in
  the conlleval convention) differ only in how they load, collate and score; everything
  else (init, method, training, selection, the results table) is shared.
- The Trainer trains. Batch sources (`SentenceSource`, `TaggedSource`) give the global
  batch of a step as a pure function of (seed, step), like pretraining, so runs are
  reproducible and shard across ranks. `FinetuneTrainer` only replaces the trainer's
  evaluation by the task's score and keeps the best epoch's trainable weights in memory.
- Select on validation, test once: after every epoch the validation score is computed;
  the best epoch's weights are restored and the test split is scored exactly once.
- NER scores *words*: each word's tag is predicted at its first sub-token (the collator
  labels only those); words cut off by `--max-len` are predicted "O", so truncation costs
  recall instead of vanishing from the score. Gold tags are the data's own strings.
- `--init scratch` builds the same architecture with random weights and the same
  tokenizer (taken from `--arch`, by default the committed pretrained checkpoint), so
  pretrained versus scratch differs in the weights only.
- What is saved is what was trained: `full` writes a checkpoint `model/` that `load_model`
  reads; the other methods write `adapter.safetensors` (method weights and head, small)
  that names its base checkpoint and that base's sha256, so a reloaded model scores exactly
  what it scored. A random base (from scratch) cannot be fetched again: it is saved in `base/`.
- Misconfiguration fails before training: labels in validation/test that training never
  saw, a tokenizer whose vocabulary or special ids do not fit the checkpoint, a train size
  larger than the data, a max length beyond the model's positions.
"""
from __future__ import annotations

import abc
import argparse
import copy
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minilm import metrics, peft
from minilm.trainer import Trainer

PRETRAINED_DIR = Path(__file__).resolve().parent / "assets" / "pretrained"
RUN_INFO = "finetune.json"  # what `minilm evaluate` needs to rebuild the model
ADAPTER = "adapter.safetensors"
MODEL_DIR = "model"
BASE_DIR = "base"

# Peak learning rates that work for BERT-mini-sized encoders: the body moves slowly, new
# parameters (head, low-rank factors, adapters, prefixes) need ~10x more.
DEFAULT_LR = {"full": 2e-4, "probe": 2e-3, "lora": 1e-3, "adapter": 1e-3, "prefix": 5e-3}


# ---------------------------------------------------------------- batch sources


class _Source(abc.ABC):
    """A batch source over n examples: seeded epoch permutations for training, sorted eval batches."""

    def __init__(self, n: int, batch_size: int, seed: int, eval_batch_size: int = 128):
        if n < 1:
            raise ValueError("the split is empty: nothing to train or score on")
        self.n, self.batch_size, self.seed, self.eval_batch_size = n, batch_size, seed, eval_batch_size
        self.steps_per_epoch = max(1, n // batch_size)  # the last partial batch is dropped, as is usual

    @abc.abstractmethod
    def length(self, i: int) -> int:
        """How long example i is (for sorting evaluation batches)."""

    @abc.abstractmethod
    def collate(self, idx: list[int]) -> dict:
        """The model kwargs for examples `idx`."""

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        """This rank's share of the global batch of `step` (a pure function of seed and step)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)  # (n,)
        rows = perm[i * self.batch_size:(i + 1) * self.batch_size]
        if len(rows) < self.batch_size:  # fewer examples than one batch: wrap around
            rows = perm.repeat(math.ceil(self.batch_size / self.n))[:self.batch_size]
        return self.collate(rows[rank::world_size].tolist())

    def eval_chunks(self) -> list[list[int]]:
        """Evaluation batches as example indices: sorted by length, so they carry little padding."""
        order = sorted(range(self.n), key=self.length)
        return [order[i:i + self.eval_batch_size] for i in range(0, self.n, self.eval_batch_size)]

    def eval_batches(self):
        for idx in self.eval_chunks():
            yield self.collate(idx)


class SentenceSource(_Source):
    """Sentence classification batches through `collate.classification_batch`."""

    def __init__(self, texts: list[str], labels: list[int], tokenizer, *, batch_size: int, max_len: int,
                 seed: int = 0):
        super().__init__(len(texts), batch_size, seed)
        self.texts, self.labels, self.tokenizer, self.max_len = texts, labels, tokenizer, max_len

    def length(self, i: int) -> int:
        return len(self.texts[i])

    def collate(self, idx: list[int]) -> dict:
        from minilm.collate import classification_batch

        return classification_batch([self.texts[i] for i in idx], [self.labels[i] for i in idx], self.tokenizer,
                                    self.max_len)


class TaggedSource(_Source):
    """Token classification batches through `collate.token_classification_batch` (first sub-token labelled)."""

    def __init__(self, words: list[list[str]], tags: list[list[str]], tokenizer, tag_to_id: dict[str, int], *,
                 batch_size: int, max_len: int, seed: int = 0):
        super().__init__(len(words), batch_size, seed)
        self.words, self.tags, self.tokenizer, self.tag_to_id, self.max_len = words, tags, tokenizer, tag_to_id, max_len

    def length(self, i: int) -> int:
        return len(self.words[i])

    def collate(self, idx: list[int]) -> dict:
        from minilm.collate import token_classification_batch

        # A gold tag the model cannot know (NERTask allow_unseen) is "O" for the loss; scoring keeps it.
        tags = [[t if t in self.tag_to_id else "O" for t in self.tags[i]] for i in idx]
        return token_classification_batch([self.words[i] for i in idx], tags, self.tokenizer, self.tag_to_id,
                                          self.max_len)


# ---------------------------------------------------------------- prediction


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def predict_batches(model: torch.nn.Module, source: _Source):
    """Yield (example indices, batch, output) for every eval batch: fp32, eval mode, no gradients."""
    was_training = model.training
    model.eval()
    device = _model_device(model)
    try:
        for idx in source.eval_chunks():
            batch = {k: v.to(device) for k, v in source.collate(idx).items()}
            with torch.no_grad():
                out = model(**batch)
            yield idx, batch, out
    finally:
        model.train(was_training)


# ---------------------------------------------------------------- tasks


class ClassifyTask:
    """Sentence classification: `SequenceClassifier`, scored by accuracy (and macro-F1).

    `label_names` (from a saved model) must equal the data's: ids are positions in that list.
    """

    name, metric = "classify", "accuracy"

    def __init__(self, data: str, label_names: list[str] | None = None, allow_unseen: bool = False):
        from minilm.data import load_classification

        self.data = load_classification(data)
        self.label_names = list(self.data.label_names)
        if label_names is not None and list(label_names) != self.label_names:
            raise ValueError(f"--data {data} has labels {self.label_names} but the model was trained on "
                             f"{list(label_names)}: it cannot score labels it never saw")
        splits = ("train", "validation", "test")
        for split in splits:
            bad = [y for y in getattr(self.data, split).labels if not 0 <= y < len(self.label_names)]
            if bad:
                raise ValueError(f"--data {data}: {split} label id {bad[0]} is outside label_names {self.label_names}")
        self.unseen: dict[str, dict[str, int]] = {}
        if label_names is None:  # training: every label scored should be learnable
            seen = set(self.data.train.labels)
            for split in splits[1:]:
                labels = getattr(self.data, split).labels
                counts = {self.label_names[y]: labels.count(y) for y in sorted(set(labels) - seen)}
                if counts and not allow_unseen:
                    raise ValueError(f"--data {data}: the {split} split has labels {sorted(counts)} that never occur "
                                     f"in train; a model cannot learn them. Fix the split, or pass "
                                     f"--allow-unseen-labels to score them as misses")
                if counts:
                    self.unseen[split] = counts

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split_size(self, split: str) -> int:
        return len(getattr(self.data, split).texts)

    def model(self, config):
        from minilm.model import SequenceClassifier

        # Mean pooling, not [CLS]: masked-LM pretraining never trains the [CLS] output, and with
        # rt-polarity at 512 labels mean pooling scored 60.0% vs 53.5% (pretrained) and 58.3% vs
        # 49.0% (scratch), seed 0: a fairer baseline and a better model.
        return SequenceClassifier(config, num_labels=self.num_labels, pooling="mean")

    def source(self, split: str, tokenizer, *, batch_size: int, max_len: int, seed: int = 0) -> SentenceSource:
        s = getattr(self.data, split)
        return SentenceSource(s.texts, s.labels, tokenizer, batch_size=batch_size, max_len=max_len, seed=seed)

    def score(self, model, source: SentenceSource) -> dict:
        """{"accuracy", "macro_f1", "loss", "predictions"}, predictions in the data's order."""
        pred, loss_sum = [0] * source.n, 0.0
        for idx, _, out in predict_batches(model, source):
            for i, p in zip(idx, out.logits.argmax(-1).tolist()):
                pred[i] = p
            loss_sum += float(out.loss) * len(idx)
        return {"accuracy": metrics.accuracy(source.labels, pred), "macro_f1": metrics.macro_f1(source.labels, pred),
                "loss": loss_sum / source.n, "predictions": pred}

    def report(self, source: SentenceSource, scored: dict, picture: Path | None = None) -> str:
        """The per-class table; with `picture`, also the confusion matrix as a PNG."""
        if picture is not None:
            m = metrics.confusion_matrix(source.labels, scored["predictions"], self.num_labels)
            metrics.plot_confusion_matrix(m, self.label_names, picture, title=picture.stem)
        return metrics.label_report(source.labels, scored["predictions"], self.label_names)


class NERTask:
    """Named entities: `TokenClassifier` over words, scored by entity-level F1 (conlleval, IOB2).

    The tag set is what training can teach (train's tags, in the data's order), or the saved
    model's `label_names`. A validation/test tag outside it is an error, unless
    `allow_unseen`: then it stays in the gold tags (a miss the model cannot avoid, as ATIS's
    test set needs) and counts as "O" only in the loss; the run records which tags they were.
    """

    name, metric = "ner", "f1"

    def __init__(self, data: str, label_names: list[str] | None = None, allow_unseen: bool = False):
        from minilm.data import load_ner

        self.data = load_ner(data)
        if label_names is None:
            seen = {t for sent in self.data.train.tags for t in sent}
            label_names = [t for t in self.data.tag_names if t in seen] + sorted(seen - set(self.data.tag_names))
        self.label_names = list(label_names)
        for t in self.label_names:
            metrics._split_tag(t, f"--data {data}")  # a non-IOB2 tag set fails here, not at scoring time
        self.tag_to_id = {t: i for i, t in enumerate(self.label_names)}
        self.unseen: dict[str, dict[str, int]] = {}
        for split in ("train", "validation", "test"):
            counts: dict[str, int] = {}
            for sent in getattr(self.data, split).tags:
                for t in sent:
                    if t not in self.tag_to_id:
                        counts[t] = counts.get(t, 0) + 1
            if counts and (split == "train" or not allow_unseen):
                raise ValueError(f"--data {data}: the {split} split has tags {sorted(counts)} ({sum(counts.values())} "
                                 f"words) that the model never saw in training (it knows {self.label_names}); fix "
                                 f"the data, or pass --allow-unseen-labels to score them as misses")
            if counts:
                self.unseen[split] = counts
                print(f"warning: {split} has {sum(counts.values())} words tagged {sorted(counts)}, never seen in "
                      f"training: scored as misses", file=sys.stderr)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split_size(self, split: str) -> int:
        return len(getattr(self.data, split).words)

    def model(self, config):
        from minilm.model import TokenClassifier

        return TokenClassifier(config, num_labels=self.num_labels)

    def source(self, split: str, tokenizer, *, batch_size: int, max_len: int, seed: int = 0) -> TaggedSource:
        s = getattr(self.data, split)
        return TaggedSource(s.words, s.tags, tokenizer, self.tag_to_id, batch_size=batch_size, max_len=max_len,
                            seed=seed)

    def score(self, model, source: TaggedSource) -> dict:
        """Entity P/R/F1 over words: each word's tag is the prediction at its first sub-token
        (`collate.word_predictions`); words cut off by max_len are predicted "O"."""
        from minilm.collate import word_predictions

        pred: list[list[str]] = [[] for _ in range(source.n)]
        loss_sum, n_labels = 0.0, 0
        for idx, batch, out in predict_batches(model, source):
            words = [source.words[i] for i in idx]
            for i, tags in zip(idx, word_predictions(out.logits, words, source.tokenizer, source.max_len,
                                                     self.label_names)):
                pred[i] = tags
            n = int((batch["labels"] != -100).sum())
            loss_sum += float(out.loss) * n
            n_labels += n
        s = metrics.entity_scores(source.tags, pred)
        return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"],
                "loss": loss_sum / max(n_labels, 1), "per_type": s["per_type"], "predictions": pred}

    def report(self, source: TaggedSource, scored: dict, picture: Path | None = None) -> str:
        """The seqeval-style per-type table."""
        return metrics.classification_report(source.tags, scored["predictions"])


TASKS = {"classify": ClassifyTask, "ner": NERTask}


def with_subset(task, split: str, n: int, seed: int):
    """A copy of `task` whose `split` is a seeded random subset of n examples (order kept)."""
    records = getattr(task.data, split)
    available = task.split_size(split)
    if not 1 <= n <= available:
        flag = "--train-size" if split == "train" else "--eval-size"
        raise ValueError(f"{flag}={n} is invalid: the {split} split has {available} examples")
    idx = sorted(random.Random(seed).sample(range(available), n))
    picked = {f.name: [getattr(records, f.name)[i] for i in idx] for f in dataclasses.fields(records)}
    clone = copy.copy(task)
    clone.data = dataclasses.replace(task.data, **{split: type(records)(**picked)})
    return clone


# ---------------------------------------------------------------- model and tokenizer


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint or a run folder (final/, then best/, then the last step)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    for name in ("final", "best"):
        if (path / name / "config.json").is_file():
            return path / name
    steps = sorted((path / "checkpoints").glob("step_*")) if (path / "checkpoints").is_dir() else []
    if steps:
        return steps[-1]
    raise FileNotFoundError(f"--init {path}: not a checkpoint folder (no config.json) and not a run folder with "
                            f"final/, best/ or checkpoints/step_*; pass a checkpoint, a run folder or 'scratch'")


def check_tokenizer(tokenizer, config, where: str) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding table."""
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{where}: the tokenizer has vocab_size={tokenizer.vocab_size} but the model was built for "
                         f"vocab_size={config.vocab_size}; use the tokenizer saved with the checkpoint")
    specials = {"pad_id": tokenizer.pad_id, "cls_id": tokenizer.cls_id, "sep_id": tokenizer.sep_id,
                "mask_id": tokenizer.mask_id, "unk_id": tokenizer.unk_id}
    bad = {k: v for k, v in specials.items() if not 0 <= v < config.vocab_size}
    if bad:
        raise ValueError(f"{where}: tokenizer special ids {bad} are outside the model's vocabulary "
                         f"(0..{config.vocab_size - 1}); this tokenizer does not belong to this model")


def load_tokenizer(path: str | Path):
    """A tokenizer from a tokenizer file or from a checkpoint folder's tokenizer.json."""
    from minilm.tokenizer import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {path} not found: pass a tokenizer.json or a checkpoint folder holding one")
    return Tokenizer.load(path)


def _with_dropout(config_dict: dict, dropout: float | None):
    from minilm.config import ModelConfig

    if dropout is not None:
        config_dict = {**config_dict, "dropout": dropout, "attention_dropout": dropout}
    return ModelConfig.from_dict(config_dict)


def build_model(task, init: str, *, arch: str | None = None, tokenizer_path: str | None = None,
                dropout: float | None = 0.1, seed: int = 0):
    """-> (task model, tokenizer, base checkpoint Path or None for scratch).

    `init` is a checkpoint or run folder (the body is copied from it) or "scratch" (same
    architecture and tokenizer as `arch`, random weights). `arch` is a checkpoint folder or a
    preset name; by default the committed pretrained checkpoint, else "bert-mini".
    """
    from minilm.checkpoint import load_model, read_config
    from minilm.config import PRESETS, ModelConfig

    torch.manual_seed(seed)  # the head's (and, from scratch, the body's) initialisation
    if init != "scratch":
        base = resolve_checkpoint(init)
        meta = read_config(base)
        pretrained, tokenizer = load_model(base)
        if tokenizer_path is not None:
            own, tokenizer = tokenizer, load_tokenizer(tokenizer_path)
            if own is not None and own.fingerprint() != tokenizer.fingerprint():
                raise ValueError(f"--tokenizer {tokenizer_path} is not the tokenizer saved with {base} (their merges "
                                 f"or settings differ): the pretrained embeddings only fit their own tokenizer")
        if tokenizer is None:
            raise ValueError(f"--init {init}: the checkpoint has no tokenizer.json; pass --tokenizer")
        config = _with_dropout(meta["model_config"], dropout)
        check_tokenizer(tokenizer, config, f"--init {init}")
        model = task.model(config)
        if not hasattr(pretrained, "body"):
            raise ValueError(f"--init {init}: {type(pretrained).__name__} has no .body to fine-tune")
        model.body.load_state_dict(pretrained.body.state_dict())
        return model, tokenizer, base
    arch = arch or (str(PRETRAINED_DIR) if (PRETRAINED_DIR / "config.json").is_file() else "bert-mini")
    if arch in PRESETS:
        from minilm.tokenizer import Tokenizer

        tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else Tokenizer.for_corpus("imdb", 8192)
        config = ModelConfig.preset(arch, vocab_size=tokenizer.vocab_size)
        config = _with_dropout(config.to_dict(), dropout)
    else:
        arch_dir = resolve_checkpoint(arch)
        config = _with_dropout(read_config(arch_dir)["model_config"], dropout)
        tokenizer = load_tokenizer(tokenizer_path or arch_dir)
    check_tokenizer(tokenizer, config, f"--arch {arch}")
    return task.model(config), tokenizer, None


# ---------------------------------------------------------------- training


class FinetuneTrainer(Trainer):
    """The Trainer with the task's validation score as its evaluation; keeps the best epoch in memory."""

    def __init__(self, model, config, train_source, task, val_source, out_dir=None):
        super().__init__(model, config, train_source, eval_data=val_source, out_dir=out_dir)
        self.task = task
        self.best = (-math.inf, 0, None)  # (validation score, step, trainable weights)

    def evaluate(self) -> dict:
        scored = self.task.score(self.model, self.eval_data)
        value = scored[self.task.metric]
        if value > self.best[0]:
            self.best = (value, self.step, peft.trainable_state_dict(self.model))
        return {"eval_loss": scored["loss"], f"eval_{self.task.metric}": value}

    def save(self, name=None, *, resumable=True):
        return None  # fine-tuning writes the selected weights itself (run_finetune), not every checkpoint


@dataclass
class FinetuneConfig:
    task: str = "classify"
    data: str | None = None  # default per task: rt-polarity / conll2003
    init: str = "scratch"
    method: str = "full"
    arch: str | None = None  # for --init scratch: checkpoint or preset whose shape and tokenizer to use
    tokenizer: str | None = None  # override the checkpoint's tokenizer (checked against the model)
    train_size: int | None = None  # subsample the training split (seeded)
    eval_size: int | None = None  # score a fixed subset of validation and test (quick lessons); None = all
    allow_unseen_labels: bool = False  # score validation/test labels absent from train as misses (ATIS needs it)
    seed: int = 0
    epochs: int = 4
    batch_size: int = 32
    lr: float | None = None  # default per method: DEFAULT_LR
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    dropout: float | None = 0.1  # None = keep the checkpoint's
    max_len: int | None = None  # None: min(128, the model's max_seq_len); pretraining rows are 128 long
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: tuple = ("q", "k", "v", "o", "up", "down")  # all linears: rank-8 on q,v alone lags full FT
    rslora: bool = False
    bottleneck: int = 64
    n_prefix: int = 16
    device: str = "auto"
    out: str | None = None
    progress: bool = True

    def __post_init__(self):
        def need(ok: bool, field: str, accepted: str):
            if not ok:
                flag = "--" + field.replace("_", "-")
                raise ValueError(f"{flag}={getattr(self, field)!r} is invalid: expected {accepted}")

        need(self.task in TASKS, "task", f"one of {sorted(TASKS)}")
        need(self.method in peft.METHODS, "method", f"one of {sorted(peft.METHODS)}")
        need(self.epochs >= 1, "epochs", "an integer >= 1")
        need(self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(self.train_size is None or self.train_size >= 1, "train_size", "an integer >= 1")
        need(self.eval_size is None or self.eval_size >= 1, "eval_size", "an integer >= 1")
        need(self.lr is None or self.lr > 0, "lr", "a positive float")
        need(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "a float in [0, 1)")
        need(self.max_len is None or self.max_len >= 3, "max_len", "an integer >= 3 ([CLS] x [SEP])")
        if self.data is None:
            self.data = {"classify": "rt-polarity", "ner": "conll2003"}[self.task]
        self.lora_targets = tuple(self.lora_targets)

    def method_settings(self) -> dict:
        """Keyword settings of the chosen peft.apply_* function."""
        return {"lora": dict(rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout,
                             targets=list(self.lora_targets), rslora=self.rslora),
                "adapter": dict(bottleneck=self.bottleneck), "prefix": dict(n_prefix=self.n_prefix)
                }.get(self.method, {})

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


def run_finetune(cfg: FinetuneConfig, task=None) -> dict:
    """Fine-tune, select the best epoch on validation, score test once; write the run folder.

    Returns the results row (also written to results.json / results.md under cfg.out):
    method, init, trainable/total parameters, validation and test scores, best epoch, seconds.
    `task` may be passed in to reuse loaded data across runs (it is not modified unless
    cfg.train_size is set).
    """
    from minilm.checkpoint import save_checkpoint
    from minilm.trainer import TrainConfig

    t0 = time.perf_counter()
    task = task or TASKS[cfg.task](cfg.data, allow_unseen=cfg.allow_unseen_labels)
    if cfg.train_size is not None:
        task = with_subset(task, "train", cfg.train_size, cfg.seed)
    for split in ("validation", "test") if cfg.eval_size is not None else ():
        # One fixed subset (seed 0) for every run, so runs stay comparable with each other.
        task = with_subset(task, split, min(cfg.eval_size, task.split_size(split)), 0)
    model, tokenizer, base = build_model(task, cfg.init, arch=cfg.arch, tokenizer_path=cfg.tokenizer,
                                         dropout=cfg.dropout, seed=cfg.seed)
    max_len = cfg.max_len or min(128, model.config.max_seq_len)
    if max_len > model.config.max_seq_len:
        raise ValueError(f"--max-len={max_len} exceeds the model's max_seq_len={model.config.max_seq_len}")
    # Under torchrun every rank trains; only rank 0 writes (the trainer follows the same rule).
    out = Path(cfg.out) if cfg.out and int(os.environ.get("RANK", "0")) == 0 else None
    if out is not None and base is None and cfg.method != "full":
        # A random base cannot be fetched again: keep it, so the adapter file can be reloaded.
        save_checkpoint(out / BASE_DIR, model, tokenizer)
        base = out / BASE_DIR
    settings = cfg.method_settings()
    peft.apply_method(model, cfg.method, **settings)
    trainable, total = peft.count_parameters(model)

    train = task.source("train", tokenizer, batch_size=cfg.batch_size, max_len=max_len, seed=cfg.seed)
    val = task.source("validation", tokenizer, batch_size=cfg.batch_size, max_len=max_len)
    steps = cfg.epochs * train.steps_per_epoch
    tc = TrainConfig(steps=steps, lr=cfg.peak_lr, warmup_steps=int(cfg.warmup_ratio * steps), schedule="linear",
                     min_lr_ratio=0.0, weight_decay=cfg.weight_decay, beta2=0.999, eps=1e-8, device=cfg.device,
                     precision="auto", eval_every=train.steps_per_epoch, log_every=max(1, min(50, steps // 20)),
                     seed=cfg.seed, progress=cfg.progress)
    trainer = FinetuneTrainer(model, tc, train, task, val, out)
    trainer.fit()
    if trainer.best[2] is None:  # stopped (Ctrl-C) before the first evaluation: score what there is
        trainer.evaluate()
    best_score, best_step, best_state = trainer.best
    model = trainer.model
    with torch.no_grad():  # restore the selected epoch
        params = dict(model.named_parameters())
        for name, t in best_state.items():
            params[name].copy_(t)
    val_scored = task.score(model, val)
    test = task.source("test", tokenizer, batch_size=cfg.batch_size, max_len=max_len)
    test_scored = task.score(model, test)  # the one look at test
    seconds = time.perf_counter() - t0

    row = {
        "task": cfg.task, "data": cfg.data, "init": "scratch" if cfg.init == "scratch" else str(cfg.init),
        "method": cfg.method, "seed": cfg.seed, "train_size": task.split_size("train"),
        "validation_size": task.split_size("validation"), "test_size": task.split_size("test"),
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total,
        "metric": task.metric, "validation": _public(val_scored), "test": _public(test_scored),
        "best_epoch": best_step // train.steps_per_epoch, "epochs": cfg.epochs, "lr": cfg.peak_lr,
        "time_s": seconds, "settings": settings,
    }
    if task.unseen:
        row["unseen_labels"] = task.unseen
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _save_finetuned(out, cfg, task, model, tokenizer, base, settings, row, max_len)
        report = task.report(test, test_scored, out / "confusion_test.png")
        (out / "report_test.txt").write_text(report)
        (out / "results.json").write_text(json.dumps(row, indent=2) + "\n")
        (out / "results.md").write_text(results_table([row]))
        print(report)
    print(results_table([row]))
    return row


def _public(scored: dict) -> dict:
    return {k: v for k, v in scored.items() if k != "predictions"}


def _save_finetuned(out: Path, cfg: FinetuneConfig, task, model, tokenizer, base, settings, row, max_len) -> None:
    from minilm.checkpoint import constructor_kwargs, read_config, save_checkpoint

    info = {"task": cfg.task, "data": cfg.data, "method": cfg.method, "settings": settings,
            "label_names": task.label_names, "max_len": max_len,
            "allow_unseen_labels": cfg.allow_unseen_labels, "results": row}
    if cfg.method == "full":
        save_checkpoint(out / MODEL_DIR, model, tokenizer)
        info["model"] = MODEL_DIR
    else:
        peft.save_adapter(out / ADAPTER, model, cfg.method, settings)
        base = Path(base).resolve()
        # A base inside the run folder (from scratch) is named relative to it, so the folder can move.
        where = str(base.relative_to(out.resolve())) if base.is_relative_to(out.resolve()) else str(base)
        info.update(adapter=ADAPTER, base=where, base_sha256=read_config(base)["files"]["model.safetensors"],
                    model_class=type(model).__name__, model_config=model.config.to_dict(),
                    model_kwargs=constructor_kwargs(model))  # num_labels, pooling
        tokenizer.save(out / "tokenizer.json")
    (out / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")


def load_finetuned(run_dir: str | Path):
    """Rebuild a fine-tuned model from its run folder -> (model, tokenizer, info)."""
    from minilm.checkpoint import load_model, read_config
    from minilm.config import ModelConfig

    run_dir = Path(run_dir)
    path = run_dir / RUN_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a fine-tuning run folder: {RUN_INFO} is missing")
    info = json.loads(path.read_text())
    if "model" in info:
        model, tokenizer = load_model(run_dir / info["model"])
        return model.eval(), tokenizer, info
    base = run_dir / info["base"]  # an absolute path stays absolute
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: the adapter's base checkpoint {base} is missing")
    if read_config(base)["files"]["model.safetensors"] != info["base_sha256"]:  # read_config checks integrity
        raise ValueError(f"{run_dir}: the base checkpoint {base} changed since fine-tuning (its weights' sha256 "
                         f"differs); the adapter only fits the weights it was trained on")
    pretrained, _ = load_model(base)
    import minilm.model as model_module

    config = ModelConfig.from_dict(info["model_config"])
    kwargs = info.get("model_kwargs", {"num_labels": len(info["label_names"])})
    model = getattr(model_module, info["model_class"])(config, **kwargs)
    model.body.load_state_dict(pretrained.body.state_dict())
    peft.load_adapter(run_dir / info["adapter"], model)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    check_tokenizer(tokenizer, config, str(run_dir))
    return model.eval(), tokenizer, info


# ---------------------------------------------------------------- tables


def results_table(rows: list[dict]) -> str:
    """A Markdown table: one row per run."""
    lines = ["| task | data | init | method | train size | seed | trainable params | validation | test | best epoch "
             "| time |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        init = "scratch" if r["init"] == "scratch" else "pretrained"
        lines.append(f"| {r['task']} | {r['data']} | {init} | {r['method']} | {r['train_size']} | {r['seed']} "
                     f"| {r['trainable_params']:,} ({r['trainable_pct']:.2f}%) "
                     f"| {100 * r['validation'][r['metric']]:.2f} | {100 * r['test'][r['metric']]:.2f} "
                     f"| {r['best_epoch']} | {r['time_s']:.0f} s |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CLI


def configure(parser: argparse.ArgumentParser) -> None:
    d = FinetuneConfig()
    a = parser.add_argument
    a("--task", choices=sorted(TASKS), default=d.task)
    a("--data", default=None, help="a named data set (rt-polarity, conll2003, atis) or a TSV / CoNLL path")
    a("--init", default=d.init, help="checkpoint or run folder of a pretrained model, or 'scratch'")
    a("--method", choices=sorted(peft.METHODS), default=d.method)
    a("--arch", default=None, help="with --init scratch: checkpoint or preset to copy shape and tokenizer from")
    a("--tokenizer", default=None, help="tokenizer.json (or checkpoint folder) overriding the checkpoint's")
    a("--train-size", type=int, default=None, help="use a seeded random subset of N training examples")
    a("--eval-size", type=int, default=None,
      help="score a fixed random subset of N validation and N test examples (quick runs); default: all")
    a("--allow-unseen-labels", action="store_true",
      help="score validation/test labels that train lacks as misses instead of refusing (ATIS's test set has some)")
    a("--seed", type=int, default=d.seed)
    a("--epochs", type=int, default=d.epochs)
    a("--batch-size", type=int, default=d.batch_size)
    a("--lr", type=float, default=None, help=f"peak learning rate (default per method: {DEFAULT_LR})")
    a("--warmup-ratio", type=float, default=d.warmup_ratio)
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--dropout", type=float, default=d.dropout)
    a("--max-len", type=int, default=None,
      help="sub-tokens per example, [CLS] and [SEP] included (default: min(128, the model's max_seq_len))")
    a("--lora-rank", type=int, default=d.lora_rank)
    a("--lora-alpha", type=float, default=d.lora_alpha)
    a("--lora-dropout", type=float, default=d.lora_dropout)
    a("--lora-targets", default=",".join(d.lora_targets), help=f"comma list of {peft.LINEAR_NAMES}")
    a("--rslora", action="store_true", help="scale LoRA by alpha/sqrt(rank) instead of alpha/rank")
    a("--bottleneck", type=int, default=d.bottleneck, help="adapter width")
    a("--n-prefix", type=int, default=d.n_prefix, help="prefix length per layer")
    a("--device", default=d.device)
    a("--out", default=None, help="run folder (default runs/finetune-TASK-METHOD-INIT-sSEED)")
    a("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["lora_targets"] = tuple(t for t in args.lora_targets.split(",") if t)
    cfg = FinetuneConfig(**values)
    if cfg.out is None:
        init = "scratch" if cfg.init == "scratch" else "pretrained"
        cfg.out = f"runs/finetune-{cfg.task}-{cfg.method}-{init}-s{cfg.seed}"
    run_finetune(cfg)
    print(f"wrote {cfg.out}/results.md, results.json, {RUN_INFO}", file=sys.stderr)
    return 0
