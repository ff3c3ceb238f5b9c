"""Run folders and checkpoint safety: no clobbering, crash-safe replacement, no code run from a file."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilm.train import checkpoint
from minilm.train import run_folder
from minilm.train.checkpoint import CheckpointError, load_model, save_checkpoint
from minilm.nn.config import ModelConfig
from minilm.nn.model import MaskedLM


def tiny(seed=0):
    torch.manual_seed(seed)
    return MaskedLM(ModelConfig.preset("bert-tiny", vocab_size=64, max_seq_len=16))


def weights_equal(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_prepare_refuses_a_run_and_overwrite_clears_it(tmp_path):
    run = tmp_path / "run"
    run_folder.prepare(run)
    run_folder.release(run)
    save_checkpoint(run / "final", tiny())
    with pytest.raises(run_folder.RunFolderError, match="already holds a run: continue it with --resume"):
        run_folder.prepare(run)
    assert (run / "final" / "config.json").is_file()
    with pytest.raises(run_folder.RunFolderError, match="no checkpoint under checkpoints/"):
        run_folder.prepare(run, resume=True)
    run_folder.prepare(run, overwrite=True)
    run_folder.release(run)
    assert [p.name for p in run.iterdir()] == [run_folder.MARKER]
    (tmp_path / "home" / "notes.txt").parent.mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    with pytest.raises(run_folder.RunFolderError, match=r"holds files but no minilm run \(notes.txt\); not deleting"):
        run_folder.prepare(tmp_path / "home", overwrite=True)
    assert (tmp_path / "home" / "notes.txt").read_text() == "mine"


def test_a_run_from_before_markers_is_still_a_run_but_only_with_nothing_else_in_it(tmp_path):
    run = tmp_path / "old"
    save_checkpoint(run / "final", tiny())
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 3.2}\n')
    assert run_folder.is_run(run) and not (run / run_folder.MARKER).exists()
    (run / "notes.txt").write_text("mine")
    assert not run_folder.is_run(run)  # a file minilm never writes: not minilm's folder
    with pytest.raises(run_folder.RunFolderError, match=r"holds files but no minilm run"):
        run_folder.prepare(run, overwrite=True)
    (run / "notes.txt").unlink()
    run_folder.prepare(run, overwrite=True)
    run_folder.release(run)
    assert [p.name for p in run.iterdir()] == [run_folder.MARKER]


OWN_NAMES = ["metrics.jsonl", "final", "checkpoints", "results.json", "summary.json", "finetune.json", "eval_test.json",
             "confusion_validation.png", ".final.tmp-12"]
FOREIGN_NAMES = ["notes.txt", "src", "thesis.tex", "results.json.bak", "final.txt", "eval.json"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.sets(st.sampled_from(OWN_NAMES + FOREIGN_NAMES), max_size=6), marked=st.booleans())
def test_a_folder_is_a_run_only_by_its_marker_and_overwrite_touches_only_minilms_files(tmp_path_factory, names,
                                                                                       marked):
    folder = tmp_path_factory.mktemp("out")
    for name in names:
        (folder / name).mkdir() if "." not in name.lstrip(".") else (folder / name).write_text(name)
    if marked:
        (folder / run_folder.MARKER).touch()
    before = sorted(p.name for p in folder.iterdir())
    foreign = names & set(FOREIGN_NAMES)
    try:
        run_folder.prepare(folder, overwrite=True)
    except run_folder.RunFolderError as e:
        assert sorted(p.name for p in folder.iterdir()) == before  # refused: nothing touched
        assert names and (not marked or foreign)
        assert all(name in str(e) for name in (foreign or names))  # it names what it would not delete
    else:
        run_folder.release(folder)
        assert not names or (marked and not foreign)
        assert [p.name for p in folder.iterdir()] == [run_folder.MARKER]


def test_resolve_says_when_it_falls_back_from_final(tmp_path, capsys):
    run = tmp_path / "run"
    save_checkpoint(run / "best", tiny())
    save_checkpoint(run / "checkpoints" / "step_0000010", tiny())
    assert run_folder.resolve(run) == run / "best"
    assert "has no final/ (the run was interrupted?): using" in capsys.readouterr().err
    save_checkpoint(run / "final", tiny())
    assert run_folder.resolve(run) == run / "final" and capsys.readouterr().err == ""
    with pytest.raises(run_folder.RunFolderError, match="--init .*: no such folder"):
        run_folder.resolve(tmp_path / "missing")


def test_a_checkpoint_never_makes_minilm_import_a_module(tmp_path):
    save_checkpoint(tmp_path / "ck", tiny())
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    meta["model_class"] = "evilmod.Foo"
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    (tmp_path / "evilmod.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\nFoo = object\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from minilm.train.checkpoint import CheckpointError, load_model
        try:
            load_model({str(tmp_path / 'ck')!r})
        except CheckpointError as e:
            print("refused:", e)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "refused: config.json model_class='evilmod.Foo' is not one of minilm's model classes" in out.stdout, out
    assert not (tmp_path / "ran").exists()
    with pytest.raises(CheckpointError, match="does not match the class passed in"):
        load_model(tmp_path / "ck", model_class=MaskedLM)


@pytest.mark.parametrize("kill_at", [1, 2])
def test_a_kill_at_any_rename_leaves_the_old_or_the_new_final(tmp_path, kill_at):
    """Fault injection: the process dies at the N-th rename of replacing final/; a reader finds a whole one."""
    run = tmp_path / "run"
    save_checkpoint(run / "final", tiny(seed=0))
    script = textwrap.dedent(f"""
        import os, torch
        from minilm.store import atomic
        from minilm.train import checkpoint
        from minilm.nn.config import ModelConfig
        from minilm.nn.model import MaskedLM
        calls = []
        def die(label):
            calls.append(label)
            if len(calls) == {kill_at}:
                os._exit(9)
        atomic.FAULT_HOOK = die
        torch.manual_seed(1)
        checkpoint.save_checkpoint({str(run / 'final')!r},
                                   MaskedLM(ModelConfig.preset("bert-tiny", vocab_size=64, max_seq_len=16)))
    """)
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 9
    if kill_at == 2:
        assert not (run / "final").exists()  # killed between the two renames: no final/ under its name
    found = run_folder.resolve(run)  # a reader recovers: the new folder if it was complete, else the old
    assert found == run / "final"
    model, _ = load_model(found)
    # Killed before the old folder moved aside: the old one. Between the renames: the new one, complete.
    assert weights_equal(model, tiny(seed=0 if kill_at == 1 else 1))
    assert [p for p in run.iterdir() if p.name.startswith(".")]  # the crash left a temp folder behind
    checkpoint.recover(run / "final", cleanup=True)  # what the next run preparing this folder does
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_recover_puts_back_the_old_folder_when_the_new_one_is_incomplete(tmp_path):
    final = tmp_path / "final"
    save_checkpoint(final, tiny(seed=0))
    old = tmp_path / ".final.old-123"
    final.rename(old)
    (tmp_path / ".final.tmp-123").mkdir()  # a temp folder whose writing never finished
    checkpoint.recover(final)
    model, _ = load_model(final)
    assert weights_equal(model, tiny(seed=0))


def _start(folder, ready, tried, results, die):
    """A run starting in another process: all start together; the winner holds the folder until all tried."""
    ready.wait()
    try:
        run_folder.prepare(folder)
        results.put(("ok", os.getpid()))
    except Exception as e:
        results.put(("refused", f"{type(e).__name__}: {e}"))
    tried.wait()
    if die:  # a crash: no release, no clean-up
        os.kill(os.getpid(), signal.SIGKILL)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 4), crash=st.booleans())
def test_of_runs_started_together_exactly_one_gets_the_folder(tmp_path_factory, n, crash):
    folder = tmp_path_factory.mktemp("out") / "run"
    ctx = multiprocessing.get_context("fork")
    ready, tried, results = ctx.Barrier(n), ctx.Barrier(n), ctx.SimpleQueue()  # put: written at once
    procs = [ctx.Process(target=_start, args=(folder, ready, tried, results, crash)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get() for _ in procs]
    for p in procs:
        p.join(timeout=60)
    winners = [who for what, who in outcomes if what == "ok"]
    assert len(winners) == 1
    for what, message in outcomes:
        if what == "refused":
            assert f"is in use by another minilm run (pid {winners[0]} on" in message
    run_folder.prepare(folder)  # the holder is gone (ended or killed): the folder is free again
    run_folder.release(folder)
