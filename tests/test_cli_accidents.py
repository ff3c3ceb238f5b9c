"""What a user does by accident, through the command line as they meet it: each ends in one line
(`minilm: error: ...`, exit 2, no traceback) or behaves correctly, and nothing is lost."""
import json
import os
import random
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

from minilm.data.tokenizer import Tokenizer
from minilm.nn.config import ModelConfig
from minilm.nn.model import MaskedLM
from minilm.train.checkpoint import save_checkpoint

WORDS = "the a movie film story was is and it this of plot actors scene".split()
POS, NEG = "good great fine lovely".split(), "bad awful poor dull".split()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A text corpus, a sentiment TSV, a small pretrained-shaped MaskedLM with its tokenizer, a data cache."""
    root = tmp_path_factory.mktemp("accidents")
    rng = random.Random(0)
    lines = []
    for i in range(160):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POS if i % 2 else NEG))
        lines.append(" ".join(words) + "\t" + ("positive" if i % 2 else "negative"))
    (root / "sent.tsv").write_text("\n".join(lines) + "\n")
    (root / "corpus.txt").write_text("\n".join(" ".join(rng.choice(WORDS + POS + NEG) for _ in range(40)) + "."
                                               for _ in range(200)) + "\n")
    tok = Tokenizer.train([line.split("\t")[0] for line in lines], 300, lowercase=True)
    cfg = ModelConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                      dropout=0.0, attention_dropout=0.0, norm="pre")
    torch.manual_seed(0)
    save_checkpoint(root / "pre", MaskedLM(cfg), tok)
    return root


def minilm(world, *args, timeout=300, **env):
    """`python -m minilm ARGS` in a fresh process, as a user runs it."""
    environ = {**os.environ, "MINILM_CACHE": str(world / "cache"), **env}
    return subprocess.run([sys.executable, "-m", "minilm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=environ)


def refused(done, *fragments) -> str:
    """The command stopped with one `minilm: error:` line holding every fragment; that line is returned."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("minilm: error: "), done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


def refused_here(capsys, *args, says: str) -> str:
    """`refused`, through the same entry point (`minilm.cli.main`) in this process: for the variants of a
    case a test has already run once as a user runs it (each fresh process costs seconds of imports)."""
    from minilm.cli import main

    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("minilm: error: ") and says in last, err[-2000:]
    return last


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def pretrain_args(world, out, *extra):
    return ["pretrain", "--data", world / "corpus.txt", "--preset", "bert-tiny", "--vocab-size", "300",
            "--seq-len", "32", "--batch-size", "4", "--eval-rows", "8", "--steps", "2", "--warmup", "1",
            "--no-progress", "--out", out, *extra]


def finetune_args(world, out, *extra):
    return ["finetune", "--data", world / "sent.tsv", "--init", world / "pre", "--epochs", "1", "--batch-size", "16",
            "--no-progress", "--out", out, *extra]


# ---- 1. --overwrite removes only what minilm wrote --------------------------------------------


def test_overwrite_never_empties_a_folder_that_is_not_a_run(world, tmp_path):
    project = tmp_path / "myproject"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "thesis.tex").write_text("\\documentclass{article}\n")
    (project / "results.json").write_text('{"mine": true}\n')  # a name minilm also writes
    before = snapshot(project)
    line = refused(minilm(world, *pretrain_args(world, project, "--overwrite")), "holds files but no minilm run",
                   "not deleting it")
    assert "results.json" in line and "thesis.tex" in line
    assert snapshot(project) == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine\n")
    (notes / "summary.json").write_text("{}\n")
    before = snapshot(notes)
    refused(minilm(world, *finetune_args(world, notes, "--overwrite")), "holds files but no minilm run")
    assert snapshot(notes) == before
    # Without --overwrite a run is not written among someone else's files either.
    refused(minilm(world, *pretrain_args(world, notes)), "holds files but no minilm run")
    assert snapshot(notes) == before


def test_overwrite_removes_only_what_minilm_wrote_or_names_what_it_would_not_touch(world, tmp_path):
    run = tmp_path / "run"
    assert minilm(world, *finetune_args(world, run)).returncode == 0
    assert minilm(world, "evaluate", run).returncode == 0  # eval_test.json: minilm's too
    (run / "notes.txt").write_text("my notes on this run\n")
    before = snapshot(run)
    line = refused(minilm(world, *finetune_args(world, run, "--overwrite", "--method", "lora")),
                   "holds files minilm did not write (notes.txt)", "not deleting anything")
    assert "finetune.json" not in line
    assert snapshot(run) == before
    (run / "notes.txt").unlink()
    assert minilm(world, *finetune_args(world, run, "--overwrite", "--method", "lora")).returncode == 0
    assert json.loads((run / "finetune.json").read_text())["method"] == "lora"
    assert not (run / "model").exists() and not (run / "eval_test.json").exists()  # the earlier run's files went


# ---- 3. one run per folder at a time ----------------------------------------------------------


def test_two_runs_started_together_into_one_folder_one_is_refused_in_one_line(world, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "minilm", *map(str, pretrain_args(world, out, "--steps", "30", "--log-every", "1"))]
    env = {**os.environ, "MINILM_CACHE": str(world / "cache")}
    minilm(world, *pretrain_args(world, tmp_path / "warm"))  # the tokenizer cached: both start at the same pace
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    done = [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]
    assert sorted(d.returncode for d in done) == [0, 2], [d.stderr[-2000:] for d in done]
    line = refused(next(d for d in done if d.returncode == 2))
    assert "is in use by another minilm run (pid" in line or "already holds a run" in line
    steps = [r["step"] for r in map(json.loads, open(out / "metrics.jsonl")) if "loss" in r]
    assert steps == list(range(1, 31))  # one run's log, not two interleaved


def test_a_locked_folder_is_refused_naming_the_holder_and_a_dead_holder_frees_it(world, tmp_path):
    from minilm.train import run_folder

    out = tmp_path / "run"
    run_folder.prepare(out)  # this process runs in it
    try:
        line = refused(minilm(world, *pretrain_args(world, out)), f"is in use by another minilm run (pid {os.getpid()}")
        assert str(out) in line
    finally:
        run_folder.release(out)
    assert [p.name for p in out.iterdir()] == [run_folder.MARKER]  # the refused run wrote nothing
    # A run killed outright (no clean-up at all) leaves its marker; the lock went with the process.
    script = (f"import os, signal; from minilm.train import run_folder; run_folder.prepare({str(out)!r}); "
              f"os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == -9
    assert "pid" in (out / run_folder.MARKER).read_text()
    done = minilm(world, *pretrain_args(world, out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "final" / "config.json").is_file()


# ---- 2. `minilm evaluate --out` writes only its own files ---------------------------------------


@pytest.fixture(scope="module")
def finetuned(world):
    """A fully fine-tuned run folder (the test copies it before touching it)."""
    done = minilm(world, *finetune_args(world, world / "finetuned"))
    assert done.returncode == 0, done.stderr[-3000:]
    return world / "finetuned"


def test_evaluate_out_never_writes_over_a_file_it_did_not_create(world, finetuned, tmp_path, capsys):
    from minilm.cli import main

    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    other = tmp_path / "other"
    shutil.copytree(finetuned, other)
    (tmp_path / "notes.txt").write_text("mine\n")
    before = {folder: snapshot(folder) for folder in (run, other)}
    # As a user meets it, once; the other targets through the same entry point in this process (seconds each saved).
    refused(minilm(world, "evaluate", run, "--out", run / "finetune.json"), "minilm evaluate did not write it")
    for target, says in [(run / "model" / "model.safetensors", "minilm evaluate did not write it"),
                         (other / "model" / "model.safetensors", "minilm evaluate did not write it"),
                         (tmp_path / "notes.txt", "minilm evaluate did not write it"),
                         (run / "scores.json", "is inside the run folder"),
                         (run / "model" / "eval_test.json", "is inside the run folder"),
                         (run, "is a folder")]:
        assert main(["evaluate", str(run), "--out", str(target)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("minilm: error: ") and says in last, last
    assert {folder: snapshot(folder) for folder in (run, other)} == before
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
    # Its own files: the default one in the run, and a file of the user's choosing outside, again and again.
    for out in ([], ["--out", str(tmp_path / "scores.json")]):
        for _ in range(2):
            assert main(["evaluate", str(run), *out]) == 0
    assert json.loads((tmp_path / "scores.json").read_text())["split"] == "test"
    assert json.loads((run / "eval_test.json").read_text())["written_by"] == "minilm evaluate"


def test_a_written_over_finetune_json_is_named_in_one_line(world, finetuned, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    (run / "finetune.json").write_text(json.dumps({"task": "classify", "split": "test", "accuracy": 0.5}))
    refused(minilm(world, "evaluate", run), "finetune.json lacks data, method, label_names, max_len",
            "not what minilm finetune wrote")


# ---- 4. a diverging run stops like a non-finite one ----------------------------------------------


def test_a_diverging_pretraining_stops_in_one_line_and_saves_nothing(world, tmp_path):
    out = tmp_path / "run"
    line = refused(minilm(world, *pretrain_args(world, out, "--lr", "30", "--steps", "30", "--log-every", "2",
                                                "--eval-every", "3", "--save-every", "3")),
                   "the loss diverged", "where the untrained model's was", "Lower --lr")
    assert "step" in line
    assert not (out / "final").exists() and not (out / "best").exists() and not (out / "checkpoints").exists()
    assert not (out / "summary.json").exists()


def test_a_diverging_finetuning_stops_in_one_line_and_writes_no_results(world, tmp_path):
    out = tmp_path / "run"
    refused(minilm(world, *finetune_args(world, out, "--lr", "30", "--epochs", "3")), "the loss diverged")
    assert not (out / "results.json").exists() and not (out / "finetune.json").exists()
    assert not (out / "model").exists()


# ---- 5. --seq-len beyond the preset's positions is said -------------------------------------------


def test_a_seq_len_beyond_the_presets_positions_is_said_in_one_line(world, tmp_path):
    out = tmp_path / "run"
    args = pretrain_args(world, out, "--steps", "1")
    args[args.index("--seq-len") + 1] = "600"  # bert-tiny has 512 positions
    done = minilm(world, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    said = [line for line in done.stderr.splitlines() if "--seq-len 600" in line]
    assert said == ["minilm: --seq-len 600 is longer than bert-tiny's max_seq_len 512: the model is widened to 600 "
                    "positions (saved so)"]
    assert json.loads((out / "final" / "config.json").read_text())["model_config"]["max_seq_len"] == 600
    quiet = minilm(world, *pretrain_args(world, tmp_path / "quiet", "--steps", "1"))
    assert "max_seq_len" not in quiet.stderr


# ---- 7. an edited adapter.json is caught ----------------------------------------------------------


def test_an_edited_adapter_json_is_refused_in_one_line(world, tmp_path):
    run = tmp_path / "run"
    assert minilm(world, *finetune_args(world, run, "--method", "lora")).returncode == 0
    spec = json.loads((run / "adapter.json").read_text())
    assert spec["settings"]["alpha"] == 16
    spec["settings"]["alpha"] = 1600
    (run / "adapter.json").write_text(json.dumps(spec))
    refused(minilm(world, "evaluate", run), "adapter.json is corrupt or changed", "fine-tune again")


# ---- 8. fill-mask never drops a [MASK] silently --------------------------------------------------


def test_fill_mask_with_the_mask_truncated_away_says_so(world):
    long = " ".join(["the movie was good"] * 30)  # about 120 tokens; the model reads 64
    line = refused(minilm(world, "fill-mask", world / "pre", f"{long} and [MASK]."),
                   "but the model reads 64 (max_seq_len): 1 of its 1 [MASK] would be truncated away")
    assert "shorten the text" in line
    done = minilm(world, "fill-mask", world / "pre", "the movie was [MASK].")
    assert done.returncode == 0 and "[MASK] #1:" in done.stdout


# ---- 13. many labels: results first, a bounded picture ------------------------------------------


@pytest.fixture(scope="module")
def many_labels(world):
    """A classification folder with 120 labels (integers: never typos of each other)."""
    rng = random.Random(1)
    folder = world / "many"
    folder.mkdir()
    for split, per in (("train", 3), ("validation", 1), ("test", 1)):
        rows = [f"{' '.join(rng.choice(WORDS) for _ in range(5))} {label}\t{label}" for label in range(120)
                for _ in range(per)]
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_many_labels_write_results_and_a_bounded_confusion_picture(world, many_labels, tmp_path):
    out = tmp_path / "run"
    done = minilm(world, "finetune", "--data", many_labels, "--init", world / "pre", "--epochs", "1",
                  "--batch-size", "32", "--no-progress", "--out", out, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["test_size"] == 120
    png = (out / "confusion_test.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width <= 2500 and height <= 2500, (width, height)


def test_results_are_written_before_any_picture(world, tmp_path, monkeypatch):
    from minilm.downstream import finetuning, metrics

    def broken(*args, **kwargs):
        raise RuntimeError("the picture could not be drawn")

    monkeypatch.setattr(metrics, "plot_confusion_matrix", broken)
    cfg = finetuning.FinetuneConfig(data=str(world / "sent.tsv"), init=str(world / "pre"), epochs=1, batch_size=16,
                                    out=str(tmp_path / "run"), progress=False)
    with pytest.raises(RuntimeError, match="could not be drawn"):
        finetuning.run_finetune(cfg)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["method"] == "full"
    assert (tmp_path / "run" / "finetune.json").is_file()


# ---- 14. a full disk while writing a checkpoint ----------------------------------------------------

FULL_DISK = {  # what each writer raises when the disk fills up (torch's message as seen at 10 MB free)
    "model.safetensors": ("minilm.train.checkpoint", "save_file", "safetensors.SafetensorError",
                          "Error while serializing: I/O error: No space left on device (os error 28)"),
    "trainer_state.pt": ("torch", "save", "RuntimeError",
                         "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                         "data/3: file write failed; unexpected pos 1792 vs 1664"),
}


@pytest.mark.parametrize("file", sorted(FULL_DISK))
def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_the_last_one_is_intact(world, tmp_path, file):
    module, name, error, message = FULL_DISK[file]
    out = tmp_path / "run"
    args = [str(a) for a in pretrain_args(world, out, "--steps", "6", "--save-every", "2", "--eval-every", "100")]
    script = f"""
import importlib, sys, safetensors, torch
module = importlib.import_module({module!r})
real, calls = getattr(module, {name!r}), []
def full(*args, **kwargs):  # the second checkpoint finds the disk full
    calls.append(1)
    if len(calls) == 2:
        raise {error}({message!r})
    return real(*args, **kwargs)
setattr(module, {name!r}, full)
from minilm.cli import main
sys.exit(main({args!r}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MINILM_CACHE": str(world / "cache")})
    refused(done, f"could not write {out / 'checkpoints' / 'step_0000004' / file}", "is the disk full?",
            "nothing was saved", "are intact")
    from minilm.train.checkpoint import load_model, load_trainer_state

    last = out / "checkpoints" / "step_0000002"
    assert [p.name for p in (out / "checkpoints").iterdir()] == [last.name]  # no half checkpoint left behind
    load_model(last)  # every file's sha256 checked
    assert load_trainer_state(last)["step"] == 2


def _mount_tmpfs(folder, size: str) -> bool:
    folder.mkdir()
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def test_a_really_full_disk_while_writing_a_checkpoint(world, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "6m"):  # a 6 MB disk holds one bert-tiny checkpoint with its optimiser state
        pytest.skip("needs to mount a small tmpfs (root); the injected failures above run everywhere")
    try:
        out = disk / "run"
        line = refused(minilm(world, *pretrain_args(world, out, "--steps", "6", "--save-every", "2",
                                                    "--eval-every", "100")),
                       "No space left on device", "is the disk full?", "are intact")
        assert str(out / "checkpoints" / "step_0000004") in line
        from minilm.train.checkpoint import load_model

        load_model(out / "checkpoints" / "step_0000002")
    finally:
        subprocess.run(["umount", str(disk)])


# ---- 15. a hand-edited checkpoint config.json ------------------------------------------------------


HAND_EDITS = [
    ({"model_class": "Block"}, "model_class='Block' is not one of minilm's model classes"),
    ({"model_class": "ModelConfig"}, "model_class='ModelConfig' is not one of minilm's model classes"),
    ({"model_kwargs": {"num_labels": 2}}, "model_kwargs ['num_labels'] are not arguments of MaskedLM (it takes none"),
    ({"model_kwargs": ["x"]}, "model_kwargs ['x'] are not arguments of MaskedLM"),
    ({"model_config": None}, "model_config is null, not the model's settings"),
    ({"model_config": {"d_model": 32, "colour": "red"}},
     "model_config is invalid: unknown ModelConfig field(s) ['colour']"),
]


def test_a_hand_edited_checkpoint_config_is_one_line(world, tmp_path, capsys):
    for i, (edit, says) in enumerate(HAND_EDITS):
        checkpoint = tmp_path / f"pre{i}"
        shutil.copytree(world / "pre", checkpoint)
        meta = json.loads((checkpoint / "config.json").read_text())
        (checkpoint / "config.json").write_text(json.dumps({**meta, **edit}))
        args = ("fill-mask", checkpoint, "the movie was [MASK].")
        line = refused(minilm(world, *args), says) if i == 0 else refused_here(capsys, *args, says=says)
        assert str(checkpoint / "config.json") in line or "model_class" in line


# ---- 16. sampling and top-k values that cannot work ---------------------------------------------------


IMPOSSIBLE_SAMPLING = [
    (["--temperature", "nan"], "--temperature=nan is invalid: expected a finite number >= 0"),
    (["--temperature", "inf"], "--temperature=inf is invalid"),
    (["--temperature", "-1"], "--temperature=-1.0 is invalid"),
    (["--top-p", "nan"], "--top-p=nan is invalid"),
    (["--top-k", "0"], "--top-k=0 is invalid"),
]


def test_generate_refuses_impossible_sampling_before_loading_anything(world, capsys):
    # The checkpoint does not even exist: the settings are checked first, before any work.
    for i, (flags, says) in enumerate(IMPOSSIBLE_SAMPLING):
        args = ("generate", world / "no-such-checkpoint", "--prompt", "the", *flags)
        refused(minilm(world, *args), says) if i == 0 else refused_here(capsys, *args, says=says)


def test_fill_mask_refuses_a_top_k_beyond_the_vocabulary(world):
    refused(minilm(world, "fill-mask", world / "pre", "the movie was [MASK].", "--top-k", "100000"),
            "--top-k=100000 is more than the model's vocabulary of 300 tokens")
    done = minilm(world, "fill-mask", world / "pre", "the movie was [MASK].", "--top-k", "300")
    assert done.returncode == 0 and done.stdout.startswith("[MASK] #1:")  # the whole vocabulary is fine


# ---- 17. a crafted pickle is refused in minilm's words ---------------------------------------------


class _RunsCode:
    """What a crafted pickle holds: an object whose unpickling would call a function of its choosing."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo ran > {self.marker}",))


def _one_line_without_torchs_advice(done):
    line = refused(done, "refused:", "holds Python objects besides", "could run code when loaded")
    assert "weights_only" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    return line


def test_a_crafted_pytorch_model_bin_is_refused_in_one_line(world, tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(7, 32), "x": _RunsCode(tmp_path / "ran")},
               folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": 7, "hidden_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nmovie\n")
    line = _one_line_without_torchs_advice(minilm(world, "fill-mask", folder, "the [MASK]"))
    assert str(folder / "pytorch_model.bin") in line
    assert not (tmp_path / "ran").exists()


def test_a_crafted_trainer_state_is_refused_in_one_line(world, tmp_path):
    from minilm.store.fetch import sha256_file

    out = tmp_path / "run"
    assert minilm(world, *pretrain_args(world, out, "--steps", "2", "--save-every", "1")).returncode == 0
    last = out / "checkpoints" / "step_0000002"
    torch.save({"step": 2, "x": _RunsCode(tmp_path / "ran")}, last / "trainer_state.pt")
    meta = json.loads((last / "config.json").read_text())  # config.json cannot hash itself: edited to match
    meta["files"]["trainer_state.pt"] = sha256_file(last / "trainer_state.pt")
    (last / "config.json").write_text(json.dumps(meta))
    line = _one_line_without_torchs_advice(minilm(world, *pretrain_args(world, out, "--steps", "4", "--resume")))
    assert "trainer_state.pt" in line and not (tmp_path / "ran").exists()


# ---- 18. a read-only --out, finetune's refusal, paths with spaces ----------------------------------------


@pytest.fixture
def read_only_folder(tmp_path):
    """An empty folder this process cannot write in (chmod, or a read-only tmpfs for root, who ignores chmod)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("root cannot be kept from writing here without mounting a read-only tmpfs")
    yield folder
    subprocess.run(["umount", str(folder)])


def test_a_read_only_out_is_found_before_any_data_is_loaded(world, read_only_folder):
    missing = world / "no-such-corpus.txt"  # were the data read first, this would be the error
    for command in (pretrain_args, finetune_args):
        args = command(world, read_only_folder)  # it exists: creating it does not fail, writing in it does
        args[args.index("--data") + 1] = missing
        refused(minilm(world, *args), f"--out {read_only_folder} is not writable", "choose another --out")
    args = pretrain_args(world, read_only_folder / "run")
    args[args.index("--data") + 1] = missing
    refused(minilm(world, *args), f"--out {read_only_folder / 'run'} is not writable")


def test_finetunes_refusal_of_an_existing_run_does_not_suggest_resume(world, finetuned):
    line = refused(minilm(world, *finetune_args(world, finetuned)), "already holds a run: replace it with --overwrite")
    assert "--resume" not in line


def test_printed_paths_with_spaces_are_quoted(world, tmp_path):
    out = tmp_path / "my run"
    done = minilm(world, *pretrain_args(world, out))
    assert done.returncode == 0, done.stderr[-2000:]
    final = shlex.quote(str(out / "final"))
    assert f"saved {final} (" in done.stdout
    suggested = done.stdout.split("`")[-2]  # the command it suggests, to be copied as it is
    assert shlex.split(suggested) == ["minilm", "finetune", "--init", str(out / "final")]
    refused(minilm(world, *pretrain_args(world, out)), f"--out {shlex.quote(str(out))} already holds a run")
