"""Trainer: schedule, parameter groups, accumulation, resume, NaN stop, Ctrl-C, metrics and plots.

The model here is a tiny stand-in that returns (loss, logits, labels) like minilm's heads, so
the trainer is tested without depending on the real model's insides.
"""
import json
import math
import os
import signal
import time
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from minilm.course.boundary import each, student, wire_in
from minilm.train import checkpoint
from minilm.nn.config import ModelConfig
from minilm.train.optim import AdamW, parameter_groups
from minilm.train.run_folder import RunFolderError
from minilm.train.trainer import NonFiniteLoss, TrainConfig, Trainer

V, T = 50, 12
theirs = student("minilm.train.optim")  # assignment optim's functions, as the student wrote them (graded tests)
STUDENT_OPTIM = ("adamw_update", "learning_rate", "micro_batches", "micro_batch_weights")


@dataclass
class Out:
    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


class TinyLM(nn.Module):
    """Embedding -> dropout -> linear -> norm -> tied output, loss at labelled positions only."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.lin = nn.Linear(config.d_model, config.d_model)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, input_ids, attention_mask=None, labels=None):
        h = self.norm(torch.tanh(self.lin(self.drop(self.emb(input_ids)))))  # (B, T, D)
        keep = labels != -100  # (B, T)
        logits = h[keep] @ self.emb.weight.T  # (N, V)
        return Out(nn.functional.cross_entropy(logits, labels[keep]), logits, labels[keep])


def tiny_model(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    return TinyLM(ModelConfig(vocab_size=V, max_seq_len=T, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                              dropout=dropout, attention_dropout=0.0))


class ToyData:
    """A batch source: random ids, ~30% labelled, a pure function of (seed, step)."""

    def __init__(self, batch_size=32, seed=0, nan_at=None):
        self.batch_size, self.seed, self.nan_at = batch_size, seed, nan_at

    def _make(self, key):
        g = torch.Generator().manual_seed(key)
        ids = torch.randint(V, (self.batch_size, T), generator=g)
        labels = torch.where(torch.rand(self.batch_size, T, generator=g) < 0.3, ids, -100)
        labels[:, 0] = ids[:, 0]  # never an empty row
        return {"input_ids": ids, "labels": labels}

    def batch(self, step, rank=0, world_size=1):
        b = self._make(self.seed * 100_003 + step)
        if step == self.nan_at:
            b["input_ids"] = b["input_ids"].clone()
            b["input_ids"][0, 0] = -1  # poisoned below
        per = self.batch_size // world_size
        return {k: v[rank * per:(rank + 1) * per] for k, v in b.items()}

    def eval_batches(self):
        return [self._make(10**9 + i) for i in range(2)]


class NaNModel(TinyLM):
    def forward(self, input_ids, attention_mask=None, labels=None):
        poisoned = (input_ids < 0).any()
        out = super().forward(input_ids.clamp_min(0), attention_mask, labels)
        return Out(torch.where(poisoned, torch.tensor(float("nan")), out.loss), out.logits, out.labels)


def config(**kw):
    base = dict(steps=8, lr=1e-2, warmup_steps=2, log_every=2, device="cpu", progress=False)
    return TrainConfig(**{**base, **kw})


def losses(out_dir):
    return [r["loss"] for r in map(json.loads, open(out_dir / "metrics.jsonl")) if "loss" in r]


def stop_after(trainer, steps):
    """Make `trainer` stop after `steps` steps the way Ctrl-C does: the flag is raised during a step."""
    original = trainer.train_step

    def step_then_stop(step):
        out = original(step)
        if step == steps - 1:
            trainer._stop_requested = True
        return out

    trainer.train_step = step_then_stop
    return trainer


def load_model(path):
    return checkpoint.load_model(path, model_class=TinyLM)


def test_schedule_warmup_then_decay_to_floor():
    lrs = each(theirs.learning_rate, range(100), peak=1.0, warmup_steps=10, total_steps=100, min_lr_ratio=0.1)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone decay after warmup
    assert lrs[-1] == pytest.approx(0.1)
    lin = dict(peak=1.0, warmup_steps=0, total_steps=100, min_lr_ratio=0.0, schedule="linear")
    assert theirs.learning_rate(0, **lin) == pytest.approx(1.0) and theirs.learning_rate(99, **lin) == pytest.approx(0.0)
    assert theirs.learning_rate(50, peak=0.5, warmup_steps=0, total_steps=100, schedule="constant") == 0.5
    # One step after warmup: it is the last step, so it is at the floor (the contract), not at the peak.
    assert theirs.learning_rate(2, peak=1.0, warmup_steps=2, total_steps=3, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_adamw_update_equals_torch_adamw(monkeypatch):
    wire_in(monkeypatch, "minilm.train.optim", STUDENT_OPTIM)  # AdamW steps with the student's adamw_update
    torch.manual_seed(0)
    ours, theirs = tiny_model(dropout=0.0), tiny_model(dropout=0.0)
    kw = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    opt_ours = AdamW(parameter_groups(ours, 0.1), **kw)
    opt_theirs = torch.optim.AdamW(parameter_groups(theirs, 0.1), **kw)
    data = ToyData(8)
    for step in range(5):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            model(**data.batch(step)).loss.backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=f"{name} differs from torch.optim.AdamW")


def test_adamw_update_first_step_moves_by_lr_times_sign():
    # With bias correction, step 1 moves every weight by lr (times the sign of its gradient), whatever the scale.
    p, g = torch.zeros(4), torch.tensor([1e-3, -5.0, 2.0, -1e-6])
    theirs.adamw_update(p, g, torch.zeros(4), torch.zeros(4), 1, lr=0.1, eps=1e-12)
    torch.testing.assert_close(p, -0.1 * torch.sign(g))


def test_micro_batch_weights_give_the_global_mean():
    losses_per_token = [torch.rand(n) for n in (3, 7, 1, 5)]
    counts = torch.tensor([float(len(x)) for x in losses_per_token])
    weights = theirs.micro_batch_weights(counts, counts.sum())
    weighted = sum(w * x.mean() for w, x in zip(weights, losses_per_token))
    torch.testing.assert_close(weighted, torch.cat(losses_per_token).mean())
    parts = theirs.micro_batches({"a": torch.arange(8)}, 4)
    assert [p["a"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match="accumulation=3 does not divide"):
        theirs.micro_batches({"a": torch.arange(8)}, 3)


def test_config_errors_name_field_and_value():
    with pytest.raises(ValueError, match=r"TrainConfig.lr=-1.*positive"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match=r"TrainConfig.schedule='step'.*cosine"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match=r"TrainConfig.precision='fp8'"):
        TrainConfig(precision="fp8")


def test_no_decay_on_biases_norms_embeddings():
    model = tiny_model()
    decay, plain = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.lin.weight)}
    assert {id(p) for p in plain["params"]} == {id(model.emb.weight), id(model.lin.bias), id(model.norm.weight),
                                                 id(model.norm.bias)}


def _grads_after_one_step(accumulation, batch_size=32):
    model = tiny_model(dropout=0.0)
    trainer = Trainer(model, config(steps=1, accumulation=accumulation, grad_clip=0.0), ToyData(batch_size))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = trainer.train_step(0).loss
    return loss, {k: model.state_dict()[k] - before[k] for k in before}


def test_accumulation_4x8_equals_1x32(monkeypatch):
    wire_in(monkeypatch, "minilm.train.optim", STUDENT_OPTIM)  # the trainer splits and weighs with the student's
    loss1, delta1 = _grads_after_one_step(1)
    loss4, delta4 = _grads_after_one_step(4)
    assert loss4.item() == pytest.approx(loss1.item(), abs=1e-6)
    for k in delta1:
        torch.testing.assert_close(delta4[k], delta1[k], atol=1e-7, rtol=1e-5)
    # Averaging the micro-losses instead (wrong when micro-batches hold different label counts) differs:
    data = ToyData(32)
    b = data.batch(0)
    counts = [(b["labels"][i * 8:(i + 1) * 8] != -100).sum().item() for i in range(4)]
    assert len(set(counts)) > 1, "toy batch should have uneven label counts for this test to bite"


def test_resume_is_bit_exact(tmp_path):
    full = tmp_path / "full"
    Trainer(tiny_model(), config(), ToyData(), ToyData(), full).fit()
    part = tmp_path / "part"
    # Interrupt after step 4 the way Ctrl-C does: the stop flag is raised during a step.
    t = stop_after(Trainer(tiny_model(), config(save_every=4), ToyData(), ToyData(), part), 4)
    summary = t.fit()
    assert summary["interrupted"] and summary["step"] == 4
    assert not (part / "final").exists()
    Trainer(tiny_model(seed=123), config(resume=True), ToyData(), ToyData(), part).fit()
    assert losses(part) == losses(full)  # bit for bit, dropout included
    a, _ = load_model(full / "final")
    b, _ = load_model(part / "final")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = NaNModel(tiny_model().config)
    trainer = Trainer(model, config(steps=20, save_every=4, keep_last=5), ToyData(nan_at=9), None, tmp_path)
    with pytest.raises(NonFiniteLoss, match="step 9"):
        trainer.fit()
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["step_0000004", "step_0000008"]
    good, _ = checkpoint.load_model(tmp_path / "checkpoints" / "step_0000008", model_class=NaNModel)
    assert all(torch.isfinite(v).all() for v in good.state_dict().values())


def test_sigint_saves_and_exits_cleanly(tmp_path):
    t = Trainer(tiny_model(), config(steps=50), ToyData(), None, tmp_path)
    original = t.train_step

    def step(s):
        if s == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return original(s)

    t.train_step = step
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup / a background job
    summary = t.fit()
    assert summary["interrupted"] and summary["step"] == 6
    assert (tmp_path / "checkpoints" / "step_0000006" / "trainer_state.pt").is_file()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_metrics_eval_best_and_plot(tmp_path):
    summary = Trainer(tiny_model(), config(steps=40, lr=3e-2, eval_every=20), ToyData(), ToyData(), tmp_path).fit()
    records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [20, 40]
    assert all(0.0 <= r["eval_accuracy"] <= 1.0 and r["eval_perplexity"] == pytest.approx(math.exp(r["eval_loss"]))
               for r in evals)
    assert all(r["tokens_per_s"] > 0 and "mfu" not in r for r in records if "loss" in r)  # no MFU on CPU
    assert summary["eval_loss"] == evals[-1]["eval_loss"]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    for name in ("best", "final"):
        model, _ = load_model(tmp_path / name)
        assert isinstance(model, TinyLM)
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1  # keep_last=2, one save at the end


def test_time_budget_fixes_steps_after_warmup(tmp_path):
    t = Trainer(tiny_model(), config(steps=None, warmup_steps=10, time_budget_s=3.0, log_every=5), ToyData(8),
                None, tmp_path)
    start = time.perf_counter()
    summary = t.fit()
    assert 10 < summary["step"] == t.steps and t.config.steps is None  # fixed once the warmup was timed
    assert time.perf_counter() - start < 30
    with pytest.raises(ValueError, match=r"warmup_steps.*>= 10 with a time budget"):
        TrainConfig(steps=None, time_budget_s=60, warmup_steps=2)
    with pytest.raises(ValueError, match=r"TrainConfig.steps=1000.*None with a time budget"):
        TrainConfig(time_budget_s=60)


def test_precision_and_device_checked_early():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"precision='fp16' needs a CUDA device"):
            Trainer(tiny_model(), config(precision="fp16"), ToyData())
        with pytest.raises(ValueError, match=r"device='cuda' but no CUDA device"):
            Trainer(tiny_model(), config(device="cuda"), ToyData())
    with pytest.raises(ValueError, match=r"TrainConfig.device='tpu'"):
        TrainConfig(device="tpu")


def test_a_folder_holding_a_run_is_never_overwritten(tmp_path):
    Trainer(tiny_model(), config(save_every=4), ToyData(), ToyData(), tmp_path).fit()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RunFolderError, match=r"already holds a run: continue it with --resume.*--overwrite"):
        Trainer(tiny_model(), config(steps=2), ToyData(), ToyData(), tmp_path).fit()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


def test_rotation_orders_checkpoints_by_step(tmp_path):
    from minilm.train import run_folder

    for name in ("step_900", "step_0000004", "step_0000008", "step_0000012"):  # step_900 sorts last by name
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    run_folder.rotate(tmp_path, 2)
    assert [p.name for p in run_folder.step_checkpoints(tmp_path)] == ["step_0000012", "step_900"]


def test_resume_refuses_other_settings_and_a_total_below_the_step(tmp_path):
    stop_after(Trainer(tiny_model(), config(save_every=4), ToyData(), None, tmp_path,
                       metadata={"settings": {"seq_len": 12}}), 6).fit()
    with pytest.raises(ValueError, match=r"other settings \(lr: checkpoint 0.01, now 0.02.*seq_len: checkpoint 12, now 64"):
        Trainer(tiny_model(), config(lr=2e-2, resume=True), ToyData(), None, tmp_path,
                metadata={"settings": {"seq_len": 64}}).fit()
    with pytest.raises(ValueError, match=r"steps: checkpoint 8, now 4"):
        Trainer(tiny_model(), config(steps=4, resume=True), ToyData(), None, tmp_path,
                metadata={"settings": {"seq_len": 12}}).fit()
    assert not (tmp_path / "final").exists()  # nothing was written by the refused resumes
