"""atomic.py: a write either lands whole or leaves the old file as it was, with no temp left behind."""
import stat

import numpy as np
import pytest
import torch

from minilm.store import atomic
from minilm.store.atomic import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text


def test_write_and_overwrite(tmp_path):
    target = tmp_path / "sub" / "a.json"  # the folder is created
    assert atomic_write_text(target, "first\n") == target
    assert target.read_text() == "first\n"
    atomic_write_bytes(target, b"\x00second")
    assert target.read_bytes() == b"\x00second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_error_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_open(target, "w") as f:
            f.write("half of the new")
            f.flush()
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # the temp file is gone


def test_no_file_until_the_block_ends(tmp_path):
    target = tmp_path / "a.bin"
    with atomic_open(target, "wb") as f:
        f.write(b"abc")
        assert not target.exists()
        (tmp,) = tmp_path.iterdir()
        assert tmp.name.startswith(".a.bin.") and tmp.parent == target.parent  # same folder: rename is atomic
    assert target.read_bytes() == b"abc"


def test_atomic_path_keeps_the_suffix_for_path_writers(tmp_path):
    target = tmp_path / "ids.npy"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npy"  # np.save would append .npy to any other name
        np.save(tmp, np.arange(5))
    assert np.load(target).tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["ids.npy"]


def test_permissions_follow_the_umask_not_mkstemp(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")  # what open(path, "w") gives under this process's umask
    atomic_write_text(tmp_path / "atomic", "x")
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_refuses_append_mode(tmp_path):
    with pytest.raises(ValueError, match="mode='a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


@pytest.mark.parametrize("stop_at", ["move the old folder aside", "move the new folder in"])
def test_a_hugging_face_export_replaced_by_a_run_killed_mid_swap_is_recovered(tmp_path, monkeypatch, stop_at):
    """save_hf swaps folders with atomic_folder: stopped at either rename, the old or the new export comes back."""
    from minilm.nn import hf
    from minilm.nn.config import ModelConfig
    from minilm.nn.model import MaskedLM

    def model(seed):
        torch.manual_seed(seed)
        return MaskedLM(ModelConfig.preset("bert-tiny", vocab_size=64, max_seq_len=16, position="learned"))

    folder = tmp_path / "export"
    hf.save_hf(model(0), None, folder)

    class Killed(BaseException):
        pass

    def die(label):
        if label == stop_at:
            raise Killed(label)

    monkeypatch.setattr(atomic, "FAULT_HOOK", die)
    with pytest.raises(Killed):
        hf.save_hf(model(1), None, folder)
    monkeypatch.setattr(atomic, "FAULT_HOOK", None)
    atomic.recover_folder(folder, complete=hf.is_hf_folder, cleanup=True)
    loaded = MaskedLM.from_hf(folder)
    expected = model(0 if stop_at == "move the old folder aside" else 1)
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # the temporary folders are gone
