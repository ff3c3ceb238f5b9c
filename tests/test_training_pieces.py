"""Pieces of a modern training recipe: clipping by the global norm (against torch's), the schedule's
convention at step 0, and the causal-LM batch source of random windows (nanoGPT's get_batch)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.train.optim import clip_grad_norm, learning_rate
from minilm.train.pretraining import CausalLMWindows


@settings(max_examples=50, deadline=None)
@given(shapes=st.lists(st.sampled_from([(3,), (4, 5), (2, 3, 4), (1,)]), min_size=1, max_size=5),
       scale=st.sampled_from([1e-4, 1.0, 1e3]), max_norm=st.floats(1e-3, 10.0), missing=st.booleans(),
       seed=st.integers(0, 2**16))
def test_clip_grad_norm_matches_torch(shapes, scale, max_norm, missing, seed):
    g = torch.Generator().manual_seed(seed)
    ours, theirs = [], []
    for i, shape in enumerate(shapes):
        for group in (ours, theirs):
            group.append(torch.nn.Parameter(torch.zeros(shape)))
        if missing and i == 0:
            continue  # a parameter without a gradient (frozen, or unused this step) is skipped
        grad = torch.randn(shape, generator=g) * scale
        ours[-1].grad, theirs[-1].grad = grad.clone(), grad.clone()
    norm = clip_grad_norm(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    torch.testing.assert_close(norm, expected)
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad)
    after = math.sqrt(sum(float(p.grad.square().sum()) for p in ours if p.grad is not None))
    assert after <= max_norm * (1 + 1e-5) or after == pytest.approx(float(norm))  # clipped, or left alone


def test_clip_grad_norm_keeps_the_direction_and_handles_no_gradients():
    p = torch.nn.Parameter(torch.zeros(2))
    assert float(clip_grad_norm([p], 1.0)) == 0.0  # nothing to clip
    p.grad = torch.tensor([3.0, 4.0])
    assert float(clip_grad_norm(p, 1.0)) == 5.0
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]), atol=1e-6, rtol=0)


def test_schedule_convention_at_step_zero():
    """Step 0 trains at peak / warmup (not 0), step warmup - 1 is the first at the peak, the last at the floor;
    Hugging Face's warmup is the same ramp one step later (its step 0 has rate 0)."""
    rates = [learning_rate(s, peak=1.0, warmup_steps=4, total_steps=10, min_lr_ratio=0.1) for s in range(12)]
    assert rates[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert rates[9] == pytest.approx(0.1) and rates[10:] == [rates[9]] * 2
    transformers = pytest.importorskip("transformers")
    hf = transformers.get_cosine_schedule_with_warmup(torch.optim.SGD([torch.zeros(1)], lr=1.0), 4, 10).lr_lambdas[0]
    assert hf(0) == 0.0 and [hf(s + 1) for s in range(4)] == rates[:4]
    assert learning_rate(0, peak=3e-4, warmup_steps=0, total_steps=100) == pytest.approx(3e-4)  # no warmup: the peak


class Specials:  # what clm_batch reads of a tokenizer
    pad_id, eot_id = 0, 0


def test_windows_are_seeded_rank_aware_and_next_token_shifted():
    stream = torch.arange(1, 1001)  # token i + 1 at position i: a window's content says where it starts
    source = CausalLMWindows(stream, Specials(), batch_size=8, seq_len=16, seed=3)
    batch = source.batch(5)
    starts = batch["input_ids"][:, 0] - 1
    assert torch.equal(batch["input_ids"], starts[:, None] + 1 + torch.arange(16))  # 16 consecutive tokens
    assert torch.equal(batch["labels"], batch["input_ids"] + 1)  # already shifted: the next tokens
    assert batch["attention_mask"].all()
    assert torch.equal(source.batch(5)["input_ids"], batch["input_ids"])  # a pure function of (seed, step)
    assert not torch.equal(source.batch(6)["input_ids"], batch["input_ids"])
    other = CausalLMWindows(stream, Specials(), batch_size=8, seq_len=16, seed=4)
    assert not torch.equal(other.batch(5)["input_ids"], batch["input_ids"])
    halves = [source.batch(5, rank=r, world_size=2) for r in range(2)]  # ranks split the same global batch
    assert torch.equal(torch.cat([h["input_ids"] for h in halves]), batch["input_ids"])


def test_window_starts_cover_the_stream_uniformly():
    source = CausalLMWindows(torch.arange(40), Specials(), batch_size=500, seq_len=9, seed=0)
    starts = torch.cat([source.starts(step) for step in range(40)])  # 20,000 draws over 31 offsets
    counts = torch.bincount(starts, minlength=31)
    assert starts.min() == 0 and starts.max() == 40 - 9 - 1 and len(counts) == 31  # the last full window too
    expected = len(starts) / 31
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 70  # 30 degrees of freedom: p < 1e-4 above 70


def test_held_out_windows_score_every_token_once():
    source = CausalLMWindows(torch.arange(1, 103), Specials(), batch_size=4, seq_len=10, seed=0)
    labels = torch.cat([b["labels"].flatten() for b in source.eval_batches()])
    assert torch.equal(labels, torch.arange(2, 102))  # 10 windows of 10 targets; the ragged tail is dropped
    assert source.eval_batches()[0]["input_ids"].shape == (4, 10)
    with pytest.raises(ValueError, match="at least seq_len \\+ 1 = 11 tokens"):
        CausalLMWindows(torch.arange(10), Specials(), batch_size=4, seq_len=10)
