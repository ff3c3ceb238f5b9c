"""Fine-tuning end to end at toy scale: batch sources, selection, saving and exact reloading, bad input."""
import json
import random
import shutil

import pytest
import torch

from minilm.nn import peft
from minilm.train.checkpoint import save_checkpoint
from minilm.cli import main as cli
from minilm.nn.config import ModelConfig
from minilm.train.checkpoint import CheckpointError
from minilm.downstream.finetuning import (FinetuneConfig, build_model, evaluate_run, load_finetuned, results_table,
                                         run_finetune)
from minilm.downstream.tasks import ClassifyTask, NERTask
from minilm.nn.model import MaskedLM
from minilm.data.tokenizer import Tokenizer

FILLER = "the a movie film story was is and it this of plot actors scene".split()
POS, NEG = "good great fine lovely".split(), "bad awful poor dull".split()
NAMES, PLACES = "john mary alice bob".split(), "paris london rome berlin".split()


def _sentiment(rng, n):
    lines = []
    for i in range(n):
        y = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POS if y else NEG))
        lines.append(" ".join(words) + "\t" + ("positive" if y else "negative"))
    return lines


def _tagged(rng):
    words, tags = [], []
    for _ in range(rng.randint(2, 6)):
        r = rng.random()
        if r < 0.2:
            words += [rng.choice(NAMES).title(), "Smith"]
            tags += ["B-PER", "I-PER"]
        elif r < 0.4:
            words.append(rng.choice(PLACES).title())
            tags.append("B-LOC")
        else:
            words.append(rng.choice(FILLER))
            tags.append("O")
    return words, tags


def _conll(sentences):
    lines = ["-DOCSTART- -X- -X- O", ""]
    for words, tags in sentences:
        lines += [f"{w} NN O {t}" for w, t in zip(words, tags)] + [""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A toy sentiment TSV, a toy CoNLL folder, and a small 'pretrained' MaskedLM with its tokenizer."""
    root = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    lines = _sentiment(rng, 240)
    (root / "sent.tsv").write_text("\n".join(lines) + "\n")
    (root / "ner").mkdir()
    for split, n in (("train", 160), ("valid", 30), ("test", 30)):
        (root / "ner" / f"{split}.txt").write_text(_conll([_tagged(rng) for _ in range(n)]))
    texts = [line.split("\t")[0] for line in lines] + [" ".join(NAMES + PLACES + FILLER)] * 5
    tok = Tokenizer.train(texts, 300, lowercase=True)
    cfg = ModelConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                      dropout=0.0, attention_dropout=0.0, norm="pre")
    torch.manual_seed(0)
    save_checkpoint(root / "pre", MaskedLM(cfg), tok)
    other = Tokenizer.train(texts, 280, lowercase=True)
    other.save(root / "other_tokenizer.json")
    return root


def test_batch_source_is_a_pure_function_of_step_and_shards_exactly(world):
    task = ClassifyTask(str(world / "sent.tsv"))
    tok = Tokenizer.load(world / "pre" / "tokenizer.json")
    src = task.source("train", tok, batch_size=8, max_len=32, seed=3)
    a, b = src.batch(5), src.batch(5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    shards = [src.batch(5, rank=r, world_size=2)["labels"] for r in range(2)]
    assert torch.equal(torch.cat(shards), a["labels"])  # rank r holds the r-th half, as in pretraining
    # One epoch visits every example at most once; the next epoch is another order.
    n, spe = src.n, src.steps_per_epoch
    seen = [tuple(src.batch(s)["input_ids"][0].tolist()) for s in range(spe)]
    assert spe == n // 8 and src.batch(0)["labels"].shape == (8,)
    assert seen != [tuple(src.batch(spe + s)["input_ids"][0].tolist()) for s in range(spe)]
    # Evaluation covers every example exactly once.
    assert sorted(i for chunk in src.eval_chunks() for i in chunk) == list(range(n))


def test_classify_lora_cli_round_trip_is_exact(world, tmp_path):
    out = tmp_path / "run"
    assert cli(["finetune", "--task", "classify", "--data", str(world / "sent.tsv"), "--init", str(world / "pre"),
                "--method", "lora", "--lora-rank", "4", "--epochs", "2", "--batch-size", "16", "--out", str(out),
                "--no-progress"]) == 0
    row = json.loads((out / "results.json").read_text())
    assert row["method"] == "lora" and row["metric"] == "accuracy" and 1 <= row["best_epoch"] <= 2
    assert 0 < row["trainable_params"] < row["total_params"]
    md = (out / "results.md").read_text()
    assert "| lora |" in md and f"{100 * row['test']['accuracy']:.2f}" in md
    assert (out / "confusion_test.png").is_file() and (out / "curves.png").is_file()
    # The adapter file holds the trained tensors only; the base is referenced by path and sha256.
    assert (out / "adapter.safetensors").stat().st_size < 0.5 * (world / "pre" / "model.safetensors").stat().st_size
    for split in ("validation", "test"):
        again = evaluate_run(out, split)
        assert again["accuracy"] == row[split]["accuracy"] and again["loss"] == row[split]["loss"]
    merged = evaluate_run(out, "test", merge_lora=True)  # same predictions, up to float rounding in the loss
    assert merged["accuracy"] == row["test"]["accuracy"] and merged["loss"] == pytest.approx(row["test"]["loss"], 1e-5)
    assert cli(["evaluate", str(out), "--split", "test"]) == 0
    assert json.loads((out / "eval_test.json").read_text())["accuracy"] == row["test"]["accuracy"]
    # The run is never overwritten by accident; --overwrite replaces it, stale files and all.
    before = (out / "results.json").read_bytes()
    again = ["finetune", "--task", "classify", "--data", str(world / "sent.tsv"), "--init", str(world / "pre"),
             "--method", "full", "--epochs", "1", "--batch-size", "16", "--out", str(out), "--no-progress"]
    assert cli(again) == 2 and (out / "results.json").read_bytes() == before
    # A flipped byte in the adapter file is caught by its sha256, not scored as a model.
    adapter = bytearray((out / "adapter.safetensors").read_bytes())
    adapter[-3] ^= 0xFF
    (out / "adapter.safetensors").write_bytes(bytes(adapter))
    with pytest.raises(CheckpointError, match=r"adapter.safetensors is corrupt or changed"):
        load_finetuned(out)
    assert cli([*again, "--overwrite"]) == 0
    assert not (out / "adapter.safetensors").exists() and (out / "model" / "config.json").is_file()


@pytest.mark.slow
def test_ner_from_scratch_learns_and_reloads_exactly(world, tmp_path):
    cfg = FinetuneConfig(task="ner", data=str(world / "ner"), init="scratch", arch=str(world / "pre"), method="full",
                         epochs=6, batch_size=16, lr=3e-3, out=str(tmp_path / "ner"), progress=False)
    row = run_finetune(cfg)
    assert row["metric"] == "f1" and row["test"]["f1"] > 0.5  # toy entities are learnable from 160 sentences
    assert set(row["test"]["per_type"]) <= {"PER", "LOC"}
    assert (tmp_path / "ner" / "model" / "config.json").is_file()  # full fine-tuning saves a checkpoint
    again = evaluate_run(tmp_path / "ner", "test")
    assert again["f1"] == row["test"]["f1"] and again["per_type"] == row["test"]["per_type"]
    assert "micro avg" in (tmp_path / "ner" / "report_test.txt").read_text()


def test_scratch_with_prefix_keeps_its_random_base(world, tmp_path):
    base = tmp_path / "pre"
    shutil.copytree(world / "pre", base)
    cfg = FinetuneConfig(task="ner", data=str(world / "ner"), init="scratch", arch=str(base), method="prefix",
                         n_prefix=2, epochs=1, batch_size=32, out=str(tmp_path / "run"), progress=False)
    row = run_finetune(cfg)
    assert (tmp_path / "run" / "base" / "config.json").is_file()
    model, _, info = load_finetuned(tmp_path / "run")
    assert info["method"] == "prefix" and peft.count_parameters(model)[0] == row["trainable_params"]
    assert evaluate_run(tmp_path / "run", "test")["f1"] == row["test"]["f1"]
    # The run folder can move; an adapter only fits the weights it was trained on: another base is refused.
    shutil.move(tmp_path / "run", tmp_path / "moved")
    assert evaluate_run(tmp_path / "moved", "test")["f1"] == row["test"]["f1"]
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "moved" / "base", model.__class__(model.config, num_labels=model.num_labels))
    with pytest.raises(ValueError, match="changed since fine-tuning"):
        load_finetuned(tmp_path / "moved")


def test_bad_input_fails_early_and_clearly(world, tmp_path):
    # A tokenizer that does not belong to the checkpoint.
    task = ClassifyTask(str(world / "sent.tsv"))
    with pytest.raises(ValueError, match="not the tokenizer saved with"):
        build_model(task, str(world / "pre"), tokenizer_path=str(world / "other_tokenizer.json"))
    with pytest.raises(ValueError, match="vocab_size=280"):
        build_model(task, "scratch", arch=str(world / "pre"), tokenizer_path=str(world / "other_tokenizer.json"))
    # Tags in test that training never saw: refused by name, or counted as misses when allowed.
    folder = tmp_path / "unseen"
    shutil.copytree(world / "ner", folder)
    (folder / "test.txt").write_text((folder / "test.txt").read_text() + "\nZurich NN O B-MISC\n")
    with pytest.raises(ValueError, match="B-MISC"):
        NERTask(str(folder))
    assert NERTask(str(folder), allow_unseen=True).unseen == {"test": {"B-MISC": 1}}
    # A broken CoNLL line names the file and the line.
    broken = tmp_path / "broken"
    shutil.copytree(world / "ner", broken)
    (broken / "train.txt").write_text("John NN O B-PER\nSmith\n")
    with pytest.raises(ValueError, match=r"train.txt:2"):
        NERTask(str(broken))
    with pytest.raises(ValueError, match="--train-size=10000"):
        run_finetune(FinetuneConfig(task="classify", data=str(world / "sent.tsv"), init=str(world / "pre"),
                                    train_size=10_000, progress=False))
    with pytest.raises(ValueError, match="--method='bitfit'"):
        FinetuneConfig(method="bitfit")
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        build_model(task, str(tmp_path))


def test_results_table_rows():
    row = {"task": "classify", "data": "rt-polarity", "init": "runs/x", "method": "lora", "train_size": 512,
           "seed": 1, "trainable_params": 12345, "trainable_pct": 1.5, "metric": "accuracy",
           "validation": {"accuracy": 0.8}, "test": {"accuracy": 0.75}, "best_epoch": 3, "time_s": 12.3}
    table = results_table([row])
    assert ("| classify | rt-polarity | pretrained | lora | 512 | 1 | 12,345 (1.50%) | 80.00 | 75.00 | 3 | 12 s |"
            in table)


def test_comparison_grid_runs_resumes_and_summarizes(world, tmp_path):
    from minilm.downstream.compare import Arm, run_comparison

    data = str(world / "sent.tsv")
    arms = [Arm("classify", data, 64, init, method, 1)
            for init, method in (("pretrained", "full"), ("scratch", "full"), ("pretrained", "lora"))]
    summary = run_comparison(world / "pre", tmp_path / "grid", arms=arms, seeds=(0, 1), batch_size=32, eval_size=16)
    rows = [json.loads(line) for line in (tmp_path / "grid" / "runs.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["seed"] for r in rows} == {0, 1}
    assert all(r["train_size"] == 64 and r["validation_size"] == r["test_size"] == 16 for r in rows)
    # Paired seeds: the pretrained and scratch arms of a seed train on the same subset.
    assert "Pretrained versus scratch" in summary and "LoRA versus full" in summary and "±" in summary
    assert (tmp_path / "grid" / "summary.md").read_text() == summary
    again = run_comparison(world / "pre", tmp_path / "grid", arms=arms, seeds=(0, 1), batch_size=32, eval_size=16)
    assert again == summary  # everything was already done: nothing re-ran
    assert len((tmp_path / "grid" / "runs.jsonl").read_text().splitlines()) == 6


def test_a_hugging_face_folder_fine_tunes_and_reloads(world, tmp_path):
    """`--init` takes a Hugging Face BERT folder: its body and WordPiece tokenizer; the run reloads exactly."""
    from minilm.nn import hf
    from minilm.nn.model import Transformer
    from minilm.data.wordpiece import WordPiece

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(FILLER + POS + NEG + NAMES + PLACES + ["smith"]))
    tok = WordPiece(vocab, lowercase=True)
    torch.manual_seed(0)
    body = Transformer(ModelConfig(vocab_size=len(vocab), max_seq_len=64, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                                   norm="post", position="learned"), causal=False)
    hf.save_hf(body, tok, tmp_path / "bert")
    assert hf.is_hf_folder(tmp_path / "bert")
    for method in ("full", "lora"):
        out = tmp_path / method
        row = run_finetune(FinetuneConfig(task="classify", data=str(world / "sent.tsv"), init=str(tmp_path / "bert"),
                                          method=method, epochs=1, batch_size=16, out=str(out), progress=False))
        assert evaluate_run(out, "test")["accuracy"] == row["test"]["accuracy"]
    model, tokenizer, info = load_finetuned(tmp_path / "lora")
    assert isinstance(tokenizer, WordPiece) and info["base"] == str((tmp_path / "bert").resolve())
