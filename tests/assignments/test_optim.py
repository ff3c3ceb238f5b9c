"""Assignment optim: AdamW's update against torch.optim.AdamW, and the schedule's contract, over random settings.

`optim` is the student's module (minilm.course.boundary); torch's AdamW is the grader's.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course.boundary import each, student
from minilm.train.optim import SCHEDULES  # the schedules' names: the grader's constant

optim = student("minilm.train.optim")


@settings(max_examples=40, deadline=None)
@given(lr=st.floats(1e-4, 0.5), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999),
       eps=st.sampled_from([1e-8, 1e-6, 1e-3]), weight_decay=st.floats(0.0, 0.5), steps=st.integers(1, 6),
       shape=st.sampled_from([(1,), (3,), (2, 5)]), seed=st.integers(0, 2**16))
def test_adamw_update_matches_torch_on_any_settings(lr, beta1, beta2, eps, weight_decay, steps, shape, seed):
    g = torch.Generator().manual_seed(seed)
    ours = torch.randn(shape, generator=g, dtype=torch.float64)
    theirs = ours.clone().requires_grad_()
    opt = torch.optim.AdamW([theirs], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    m, v = torch.zeros_like(ours), torch.zeros_like(ours)
    for step in range(1, steps + 1):
        grad = torch.randn(shape, generator=g, dtype=torch.float64) * 10 ** float(torch.randint(-3, 3, (), generator=g))
        optim.adamw_update(ours, grad, m, v, step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
        theirs.grad = grad.clone()
        opt.step()
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-9, atol=1e-12,
                                   msg=f"after step {step} the weights differ from torch.optim.AdamW's "
                                       "(bias correction? decay applied to the weights, not the gradient?)")
        torch.testing.assert_close(m, opt.state[theirs]["exp_avg"], msg="exp_avg is the running first moment")
        torch.testing.assert_close(v, opt.state[theirs]["exp_avg_sq"], msg="exp_avg_sq is the running second moment")


@settings(max_examples=150, deadline=None)
@given(peak=st.floats(1e-5, 1.0), warmup=st.integers(0, 20), extra=st.integers(2, 200),  # >= 2 steps of decay
       schedule=st.sampled_from(SCHEDULES), ratio=st.floats(0.0, 1.0))
def test_learning_rate_follows_its_contract(peak, warmup, extra, schedule, ratio):
    total = warmup + extra
    kw = dict(peak=peak, warmup_steps=warmup, total_steps=total, schedule=schedule, min_lr_ratio=ratio)
    lrs = each(optim.learning_rate, range(total + 5), **kw)  # five steps past the end too
    for s in range(warmup):
        assert lrs[s] == pytest.approx(peak * (s + 1) / warmup), f"warmup step {s} should be peak * {s + 1}/{warmup}"
    assert all(0.0 <= lr <= peak * (1 + 1e-12) for lr in lrs), "the rate must stay within [0, peak]"
    after = lrs[warmup:]
    assert after[0] == pytest.approx(peak), "the first step after warmup runs at the peak"
    assert all(a >= b - 1e-15 for a, b in zip(after, after[1:])), "after warmup the rate never rises"
    floor = peak if schedule == "constant" else peak * ratio
    assert lrs[total - 1] == pytest.approx(floor), f"the last step ({total - 1}) should be at {floor:g}"
    assert lrs[total:] == pytest.approx([floor] * 5), "past the last step the rate is held"
    if schedule == "cosine" and extra >= 3:
        mid = warmup + (extra - 1) / 2
        if mid == int(mid):  # half way through the decay, cosine is exactly half way between peak and floor
            assert lrs[int(mid)] == pytest.approx((peak + floor) / 2, rel=1e-9, abs=1e-15)
    assert not math.isnan(sum(lrs))
