"""The small harness every lesson uses: its mode, its run folder, its pictures and key figures.

Design choices:
- A lesson is a plain script with a `main(argv=None)`. `start(__file__, argv)` parses
  `--quick` (the default), `--full` (real scale, for a GPU) and `--smoke` (seconds, for the
  tests), plus `--seed` and `--out`, seeds python/numpy/torch, and returns a `Lesson`.
- One line per size: `lesson.pick(smoke=…, quick=…, full=…)` returns the value for the
  mode, so a lesson's scale reads at a glance instead of hiding in branches.
- Everything a lesson produces lives in `runs/lessons/NN_name/`: PNG pictures and
  `results.json` (title, mode, key figures, pictures). `results.json` is rewritten on every
  `record`/`save_figure`, so a lesson that crashes half way still reports what it measured.
  `minilm course` reads only that file.
- `lesson_corpus()` gives the pretraining text and tokenizer (tiny in smoke mode), and
  `pretrained_checkpoint()` is the one place lessons 05–09 get the shared pretrained
  encoder: the checkpoint committed under `minilm/assets/pretrained/` when present,
  otherwise a CPU pretraining made once by `minilm pretrain` and cached.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch

from minilm.course.catalog import unfinished_assignment
from minilm.data.load import cache_dir, load_corpus
from minilm.data.tokenizer import Tokenizer
from minilm.nn.config import PRETRAINED_DIR, ModelConfig
from minilm.nn.model import MaskedLM
from minilm.train import model_source
from minilm.train.checkpoint import save_checkpoint
from minilm.train.pretraining import PretrainRecipe, pretrain

matplotlib.use("Agg")  # lessons run headless (CI, ssh, `minilm course`)

MODES = ("smoke", "quick", "full")
RESULTS_FILE = "results.json"


def lesson_title(path: str | Path) -> str:
    """The first line of a lesson file's docstring, read without running the file."""
    doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else Path(path).stem


@dataclass
class Lesson:
    """One run of one lesson. `out` is its folder; `figures` its recorded key figures."""

    name: str  # the file's stem, e.g. "01_neural_networks"
    title: str
    mode: str  # "smoke" | "quick" | "full"
    seed: int
    out: Path
    figures: dict = field(default_factory=dict)
    headlines: list = field(default_factory=list)  # keys of `figures` the course report puts up front
    tables: dict = field(default_factory=dict)  # title -> Markdown table
    pictures: list = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None  # wall time, set by finish(); None means it did not finish

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    @property
    def full(self) -> bool:
        return self.mode == "full"

    def pick(self, *, smoke, quick, full):
        """The value for this run's mode: `steps = lesson.pick(smoke=5, quick=300, full=5000)`."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.mode]

    def section(self, heading: str) -> None:
        """Print a numbered part of the lesson as a visible heading."""
        print(f"\n== {heading} " + "=" * max(0, 72 - len(heading)), flush=True)

    def say(self, text: str) -> None:
        """Print a paragraph of explanation, dedented and wrapped to 88 columns."""
        paragraphs = textwrap.dedent(text).strip().split("\n\n")
        for p in paragraphs:
            print("\n" + textwrap.fill(" ".join(p.split()), width=88), flush=True)

    def record(self, key: str, value, fmt: str = "{}", headline: bool = False) -> None:
        """Keep a key figure for the course report, e.g. `record("test accuracy", 0.81, "{:.1%}")`.
        `headline=True` also lists it in the report's opening summary."""
        self.figures[key] = fmt.format(value) if isinstance(value, (int, float)) else str(value)
        if headline and key not in self.headlines:
            self.headlines.append(key)
        self._write()

    def table(self, title: str, markdown: str) -> None:
        """Keep a Markdown table for the course report (and save it as `out/<title>.md`)."""
        self.tables[title] = markdown.strip()
        (self.out / f"{title.replace(' ', '_')}.md").write_text(markdown.strip() + "\n")
        self._write()

    def save_data(self, name: str, data) -> Path:
        """Keep raw measurements as `out/name.json` (JSON-serialisable), for scripts that read the run
        afterwards (lessons/measurements/targets.py checks the course's targets from them)."""
        path = self.out / f"{name}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as `out/name.png`, close it, and list it in the report."""
        # Lazy: pyplot takes ~0.5 s to import, which only a run that draws should pay.
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        if path.name not in self.pictures:
            self.pictures.append(path.name)
        self._write()
        print(f"[picture] {path}")
        return path

    def finish(self) -> None:
        """Write the final results.json with the lesson's wall time."""
        self.seconds = round(time.perf_counter() - self.started, 1)
        self._write()
        print(f"\nDone in {self.seconds} s; results in {self.out}/")

    def _write(self) -> None:
        data = dict(name=self.name, title=self.title, mode=self.mode, seed=self.seed,
                    seconds=self.seconds, figures=self.figures, headlines=self.headlines, tables=self.tables,
                    pictures=self.pictures)
        tmp = self.out / (RESULTS_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.out / RESULTS_FILE)


def start(file: str, argv: list[str] | None = None) -> Lesson:
    """Parse the lesson's command line, seed every generator, make its run folder, print its title."""
    path = Path(file)
    title = lesson_title(path)
    parser = argparse.ArgumentParser(prog=path.name, description=title)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", dest="mode", action="store_const", const="quick",
                       help="a few minutes on a laptop CPU (default)")
    modes.add_argument("--full", dest="mode", action="store_const", const="full",
                       help="the real-scale run (meant for a GPU)")
    modes.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                       help="seconds; checks that the lesson runs (tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"run folder (default: runs/lessons/{path.stem})")
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    out = args.out or Path("runs") / "lessons" / path.stem
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    sys.excepthook = _stop_on_unfinished_assignment
    lesson = Lesson(name=path.stem, title=title, mode=mode, seed=args.seed, out=out)
    lesson._write()
    print(f"# {title}\n(mode: {mode}; seed {args.seed}; results in {out}/)")
    return lesson


def _stop_on_unfinished_assignment(kind, error, traceback) -> None:
    """In a handout, a lesson that meets a hollowed function stops with one line naming the assignment."""
    name = unfinished_assignment(error)
    if name is None:
        return sys.__excepthook__(kind, error, traceback)
    print(f"this lesson needs assignment {name}, which is not done yet: finish it first (see HANDOUT.md)",
          file=sys.stderr)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so a lesson prints the same numbers on every run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lesson_corpus(lesson: Lesson):
    """The pretraining text and tokenizer of lessons 04, 05 and 12, as `(docs, tokenizer)`.

    IMDB with the course tokenizer (`Tokenizer.for_corpus("imdb", 8192)`, trained once and
    cached); smoke runs take 300 reviews and a 600-token BPE trained on them in a second.
    """
    docs = load_corpus("imdb")
    if lesson.smoke:
        docs = docs[:300]
        return docs, Tokenizer.train(docs, 600, lowercase=True)
    return docs, Tokenizer.for_corpus("imdb", 8192, lowercase=True)


def pretrained_checkpoint(lesson: Lesson) -> tuple[Path, str]:
    """The shared pretrained encoder of lessons 05–09: `(checkpoint folder, what it is)`.

    The checkpoint committed under `minilm/assets/pretrained/` when present. Without it, a
    CPU pretraining with `minilm pretrain`'s recipe (bert-mini, masked LM on IMDB, 1,000 steps
    of 16 x 128 tokens), made once and cached under `cache_dir()/lessons/`. Smoke runs get
    an untrained bert-tiny with the smoke tokenizer, saved once, so tests take seconds.
    The folder is what `minilm finetune --init` and `load_model` read.
    """
    if lesson.smoke:
        directory = cache_dir() / "lessons" / "smoke-bert-tiny"
        if not (directory / "READY").exists():
            _, tokenizer = lesson_corpus(lesson)
            config = ModelConfig.preset("bert-tiny", vocab_size=tokenizer.vocab_size, max_seq_len=128,
                                        dropout=0.0, attention_dropout=0.0)
            save_checkpoint(directory, MaskedLM(config), tokenizer)
            (directory / "READY").write_text("untrained bert-tiny for smoke runs\n")
        return directory, "an untrained bert-tiny (smoke run: checks the code path only)"
    if (PRETRAINED_DIR / "config.json").exists():
        return PRETRAINED_DIR, ("the committed checkpoint minilm/assets/pretrained "
                                "(made by minilm pretrain; the command is in its config.json)")
    directory = cache_dir() / "lessons" / "pretrained-bert-mini"
    command = "minilm pretrain " + as_flags(FALLBACK_PRETRAIN)
    if not (directory / "READY").exists():
        print(f"No committed pretrained checkpoint: pretraining one on this CPU, once, into {directory}.\n"
              f"  {command} --out {directory}", flush=True)
        # --overwrite: a folder without READY holds an unfinished run.
        recipe = PretrainRecipe(**FALLBACK_PRETRAIN, out=str(directory), overwrite=True)
        if pretrain(recipe, command=command)["interrupted"]:
            raise KeyboardInterrupt
        (directory / "READY").write_text(command + "\n")  # only a finished run is reused
    path = model_source.resolve(directory, accept=("checkpoint",)).path
    return path, f"a CPU pretraining cached in {directory} ({command})"


def pretrained_mlm(lesson: Lesson):
    """The shared pretrained encoder loaded: `(MaskedLM in eval mode, Tokenizer, what it is)`."""
    path, where = pretrained_checkpoint(lesson)
    model, tokenizer = model_source.load(model_source.resolve(path), MaskedLM)
    return model.eval(), tokenizer, where


# The CPU fallback for the shared encoder: `minilm pretrain`'s recipe with a fixed number of steps.
# Not its time budget: on a busy machine a budget buys few steps, and the weak result would be
# cached for good (lessons/measurements/design_choices.md).
FALLBACK_PRETRAIN = dict(preset="bert-mini", objective="mlm", data="imdb", vocab_size=8192, steps=1000)


def as_flags(settings: dict) -> str:
    """`minilm pretrain` flags for PretrainRecipe settings: {"vocab_size": 8192, "progress": False} ->
    "--vocab-size 8192 --no-progress"."""
    flags = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return " ".join(flags)
