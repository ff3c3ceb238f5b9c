"""Fine-tuning tasks: what a labelled task loads, how it batches, predicts and scores.

    task = TASKS["classify"]("rt-polarity")           # or NERTask("conll2003"), or a local TSV / CoNLL path
    train = task.source("train", tokenizer, batch_size=32, max_len=128, seed=0)
    scored = task.score(model, task.source("test", tokenizer, batch_size=32, max_len=128))

Design choices:
- Two tasks, one interface. `ClassifyTask` (sentence -> label, `SequenceClassifier`, accuracy
  and macro-F1) and `NERTask` (words -> IOB2 tags, `TokenClassifier`, entity-level F1 in the
  conlleval convention) differ only in how they load, collate and score; `finetune.py`
  trains and selects the same way for both.
- Batch sources (`SentenceSource`, `TaggedSource`) draw their rows by pretraining's rule
  (`minilm.data.sampler`): the global batch of a step is a pure function of (seed, step),
  and each rank keeps its contiguous share, so runs are reproducible and shard across ranks.
- NER scores *words*: each word's tag is predicted at its first sub-token (the collator labels
  only those); words cut off by `max_len` are predicted "O", so truncation costs recall
  instead of vanishing from the score. Gold tags are the data's own strings.
- Labels the model could not learn (in validation/test but not in train) are refused unless
  `allow_unseen`; labels that look like typos are refused by the data loader unless
  `allow_rare` (see `data.suspect_labels`).
"""
from __future__ import annotations

import abc
import copy
import dataclasses
import random
import sys
from pathlib import Path

import torch

from minilm.data.collate import classification_batch, token_classification_batch, word_predictions
from minilm.data.load import load_classification, load_ner
from minilm.data.sampler import RowSampler
from minilm.downstream import metrics
from minilm.nn.model import SequenceClassifier, TokenClassifier


class _Source(abc.ABC):
    """A batch source over n examples: `RowSampler`'s seeded epochs for training, sorted eval batches."""

    def __init__(self, n: int, batch_size: int, seed: int, eval_batch_size: int = 128):
        if n < 1:
            raise ValueError("the split is empty: nothing to train or score on")
        self.n, self.batch_size, self.seed, self.eval_batch_size = n, batch_size, seed, eval_batch_size
        self.sampler = RowSampler(n, batch_size, seed)
        self.steps_per_epoch = max(1, n // batch_size)  # an "epoch" of steps; the rows left over open the next

    @abc.abstractmethod
    def length(self, i: int) -> int:
        """How long example i is (for sorting evaluation batches)."""

    @abc.abstractmethod
    def collate(self, idx: list[int]) -> dict:
        """The model kwargs for examples `idx`."""

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> dict:
        """This rank's share of the global batch of `step` (a pure function of seed and step)."""
        return self.collate(self.sampler.indices(step, rank, world_size).tolist())

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

    def __init__(self, data: str, label_names: list[str] | None = None, allow_unseen: bool = False,
                 allow_rare: bool = False):
        self.data = load_classification(data, allow_rare_labels=allow_rare)
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
        # Mean pooling, not [CLS]: masked-LM pretraining never trains the [CLS] output, so mean
        # pooling is the fairer baseline and the better model (lessons/measurements/design_choices.md).
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

    def __init__(self, data: str, label_names: list[str] | None = None, allow_unseen: bool = False,
                 allow_rare: bool = False):
        self.data = load_ner(data, allow_rare_labels=allow_rare)
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
        return TokenClassifier(config, num_labels=self.num_labels)

    def source(self, split: str, tokenizer, *, batch_size: int, max_len: int, seed: int = 0) -> TaggedSource:
        s = getattr(self.data, split)
        return TaggedSource(s.words, s.tags, tokenizer, self.tag_to_id, batch_size=batch_size, max_len=max_len,
                            seed=seed)

    def score(self, model, source: TaggedSource) -> dict:
        """Entity P/R/F1 over words: each word's tag is the prediction at its first sub-token
        (`collate.word_predictions`); words cut off by max_len are predicted "O"."""
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
