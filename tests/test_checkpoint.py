"""Checkpoints: round trip, tied weights, and refusing truncated, corrupt or mismatched folders."""
import json

import pytest
import torch

from minilm.train.checkpoint import (CheckpointError, load_model, load_trainer_state, load_weights, read_config,
                               save_checkpoint)
from minilm.nn.config import ModelConfig
from minilm.nn.model import MaskedLM, SequenceClassifier

TEXTS = ["the movie was great and the actors were great", "a terrible film, the plot made no sense",
         "I loved it; would watch again", "not my kind of movie at all"] * 5


def cfg(**kw):
    return ModelConfig.preset("bert-tiny", vocab_size=300, max_seq_len=32, **kw)


@pytest.fixture(scope="module")
def tokenizer():
    from minilm.data.tokenizer import Tokenizer

    return Tokenizer.train(TEXTS, 300, lowercase=True)


def test_round_trip_model_tokenizer_and_outputs(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = MaskedLM(cfg()).eval()
    save_checkpoint(tmp_path / "ck", model, tokenizer, step=7)
    meta = read_config(tmp_path / "ck")
    assert meta["model_class"] == "MaskedLM" and meta["extra"] == {"step": 7}
    assert sorted(meta["files"]) == ["model.safetensors", "tokenizer.json"]
    loaded, tok = load_model(tmp_path / "ck")
    ids = torch.randint(5, 300, (2, 16))
    torch.testing.assert_close(loaded.eval()(ids).logits, model(ids).logits, rtol=0, atol=0)
    # Tied weights are stored once and are still tied after loading.
    assert loaded.head.decoder.weight is loaded.body.embeddings.tok.weight
    assert tok.encode("the movie was great") == tokenizer.encode("the movie was great")


def test_constructor_kwargs_are_restored(tmp_path):
    save_checkpoint(tmp_path / "clf", SequenceClassifier(cfg(), num_labels=3))
    model, tok = load_model(tmp_path / "clf")
    assert isinstance(model, SequenceClassifier) and model.num_labels == 3 and tok is None


def test_truncated_weights_are_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", MaskedLM(cfg()))
    f = tmp_path / "ck" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors is corrupt or truncated"):
        load_model(tmp_path / "ck")


def test_truncated_weights_without_manifest_still_refused(tmp_path):
    # Even if config.json is rewritten to agree, safetensors' own header check catches the cut.
    save_checkpoint(tmp_path / "ck", MaskedLM(cfg()))
    f = tmp_path / "ck" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    meta["files"] = {}
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "ck")


def test_truncated_config_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", MaskedLM(cfg()))
    c = tmp_path / "ck" / "config.json"
    c.write_text(c.read_text()[:50])
    with pytest.raises(CheckpointError, match=r"config.json is corrupt or truncated"):
        load_model(tmp_path / "ck")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(tmp_path)


def test_mismatched_config_names_the_field(tmp_path):
    save_checkpoint(tmp_path / "ck", MaskedLM(cfg()))
    with pytest.raises(CheckpointError, match=r"d_model: checkpoint 128 vs model 64"):
        load_weights(tmp_path / "ck", MaskedLM(cfg(d_model=64, n_heads=1, d_ff=256)))
    # Dropout may differ: pretraining without it, fine-tuning with it.
    load_weights(tmp_path / "ck", MaskedLM(cfg(dropout=0.3)))


def test_mismatched_class_lists_the_weights(tmp_path):
    save_checkpoint(tmp_path / "ck", SequenceClassifier(cfg(), num_labels=2))
    with pytest.raises(CheckpointError, match=r"missing \['head\..*unexpected \['classifier.bias"):
        load_weights(tmp_path / "ck", MaskedLM(cfg()))


def test_write_is_atomic(tmp_path, tokenizer):
    torch.manual_seed(0)
    first = MaskedLM(cfg())
    save_checkpoint(tmp_path / "ck", first)

    class Broken:
        def save(self, path):
            raise OSError("disk full")

    with pytest.raises(CheckpointError, match=r"could not write .*ck/tokenizer.json \(OSError: disk full; is the disk"):
        save_checkpoint(tmp_path / "ck", MaskedLM(cfg()), Broken())
    model, _ = load_model(tmp_path / "ck")  # the previous checkpoint is intact
    assert torch.equal(model.body.embeddings.tok.weight, first.body.embeddings.tok.weight)
    save_checkpoint(tmp_path / "ck", MaskedLM(cfg()), tokenizer)  # and a later save still works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary folder left behind


def test_trainer_state_is_separate(tmp_path):
    model = MaskedLM(cfg())
    save_checkpoint(tmp_path / "w", model)
    with pytest.raises(CheckpointError, match="holds weights only"):
        load_trainer_state(tmp_path / "w")
    state = {"step": 3, "rng_cpu": torch.get_rng_state()}
    save_checkpoint(tmp_path / "r", model, trainer_state=state)
    loaded = load_trainer_state(tmp_path / "r")
    assert loaded["step"] == 3 and torch.equal(loaded["rng_cpu"], state["rng_cpu"])
