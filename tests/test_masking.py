"""The masking pipeline's contract, pinned by properties (hypothesis) and statistical bounds.

Batches are synthetic: ids 0..4 are special tokens (PAD=0, CLS=1, SEP=2, MASK=3, UNK=4),
rows are "[CLS] words [SEP] words [SEP] PAD...", and words are runs of 1-4 tokens.
"""
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course.boundary import student
from minilm.data.masking import (
    COUNTS, IGNORE, STRATEGIES, MaskingConfig, choose_spans, mask_tokens, target_count, word_index,
)

# Assignment masking's functions as the student wrote them (minilm.course.boundary): in-process by hand,
# through the grader's worker when graded. The properties below are checked here.
theirs = student("minilm.data.masking")

PAD, CLS, SEP, MASK = 0, 1, 2, 3
N_SPECIAL, VOCAB = 5, 1000
REPLACEMENTS = torch.arange(N_SPECIAL, VOCAB)


def make_batch(B: int, T: int, seed: int, *, max_word: int = 4, pad_rows: bool = True):
    """(input_ids, maskable, word_ids), each (B, T), with specials, padding and multi-token words."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=g)
    lengths = torch.randint(max(3, T // 2), T + 1, (B,), generator=g) if pad_rows else torch.full((B,), T)
    word_len = torch.randint(1, max_word + 1, (B, T), generator=g)
    word_ids = torch.full((B, T), -1)
    for b in range(B):
        n = int(lengths[b])
        ids[b, 0], ids[b, n - 1], ids[b, n:] = CLS, SEP, PAD
        if n > 6:
            ids[b, n // 2] = SEP  # a packed row: two segments
        w, left, t = 0, 0, 1
        while t < n - 1:
            if ids[b, t] == SEP:
                t, left = t + 1, 0
                continue
            if left == 0:
                w, left = w + 1, int(word_len[b, t])
            word_ids[b, t] = w
            left, t = left - 1, t + 1
    maskable = ids >= N_SPECIAL
    return ids, maskable, word_ids


def run(config, ids, maskable, word_ids, seed=0):
    return theirs.mask_tokens(ids, config, mask_id=MASK, maskable=maskable, replacement_ids=REPLACEMENTS,
                       word_ids=word_ids, generator=torch.Generator().manual_seed(seed))


def words_of(word_ids, maskable):
    """{(row, word id): [positions]} for the words of a batch."""
    out = {}
    for b, t in zip(*torch.nonzero(maskable & (word_ids >= 0), as_tuple=True)):
        out.setdefault((int(b), int(word_ids[b, t])), []).append(int(t))
    return out


batches = st.tuples(st.integers(1, 5), st.integers(3, 48), st.integers(0, 10**6))
configs = st.builds(
    MaskingConfig, strategy=st.sampled_from(STRATEGIES), count=st.sampled_from(COUNTS),
    mask_prob=st.floats(0.0, 1.0), mask_frac=st.just(0.8), random_frac=st.just(0.1), keep_frac=st.just(0.1),
)


# --------------------------------------------------------------------------- invariants, every strategy


@settings(max_examples=120, deadline=None)
@given(batch=batches, config=configs, seed=st.integers(0, 2**31))
def test_specials_padding_never_masked_and_labels_exact(batch, config, seed):
    ids, maskable, word_ids = make_batch(*batch)
    masked, labels = run(config, ids, maskable, word_ids, seed)
    selected = labels != IGNORE
    assert masked.shape == labels.shape == ids.shape and labels.dtype == ids.dtype
    assert not (selected & ~maskable).any(), "a special or padding position was masked"
    assert torch.equal(masked[~maskable], ids[~maskable])
    assert torch.equal(labels[selected], ids[selected])  # the original id where predicted
    assert torch.equal(masked[~selected], ids[~selected])  # nothing changes where nothing is predicted
    changed = masked[selected]
    assert ((changed == MASK) | (changed >= N_SPECIAL)).all(), "a random replacement was a special token"
    if config.needs_word_ids:
        assert not (selected & (word_ids < 0)).any()


@settings(max_examples=60, deadline=None)
@given(batch=batches, config=configs, seed=st.integers(0, 2**31))
def test_same_seed_same_batch(batch, config, seed):
    ids, maskable, word_ids = make_batch(*batch)
    a = run(config, ids, maskable, word_ids, seed)
    b = run(config, ids, maskable, word_ids, seed)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_different_seeds_differ():
    ids, maskable, word_ids = make_batch(8, 64, 0)
    for strategy in STRATEGIES:
        config = MaskingConfig(strategy=strategy)
        a = run(config, ids, maskable, word_ids, 1)[1]
        b = run(config, ids, maskable, word_ids, 2)[1]
        assert not torch.equal(a, b), strategy


def test_global_generator_when_none():
    ids, maskable, _ = make_batch(4, 32, 0)
    torch.manual_seed(5)
    a = mask_tokens(ids, MaskingConfig(), mask_id=MASK, maskable=maskable, replacement_ids=REPLACEMENTS)
    torch.manual_seed(5)
    b = mask_tokens(ids, MaskingConfig(), mask_id=MASK, maskable=maskable, replacement_ids=REPLACEMENTS)
    assert torch.equal(a[1], b[1])


# --------------------------------------------------------------------------- exact counts


@settings(max_examples=100, deadline=None)
@given(batch=batches, strategy=st.sampled_from(["token", "sequence"]), p=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**31))
def test_exact_masks_exactly_round_p_n(batch, strategy, p, seed):
    ids, maskable, word_ids = make_batch(*batch)
    _, labels = run(MaskingConfig(strategy=strategy, count="exact", mask_prob=p), ids, maskable, word_ids, seed)
    for b in range(ids.shape[0]):
        n = int(maskable[b].sum())
        assert int((labels[b] != IGNORE).sum()) == math.floor(p * n + 0.5)


@settings(max_examples=100, deadline=None)
@given(batch=batches, p=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_exact_whole_words_within_half_a_word(batch, p, seed):
    ids, maskable, word_ids = make_batch(*batch)
    _, labels = run(MaskingConfig(strategy="whole_word", count="exact", mask_prob=p), ids, maskable, word_ids, seed)
    words = words_of(word_ids, maskable)
    for b in range(ids.shape[0]):
        sizes = [len(pos) for (row, _), pos in words.items() if row == b]
        target = math.floor(p * int(maskable[b].sum()) + 0.5)
        got = int((labels[b] != IGNORE).sum())
        assert abs(got - target) <= max(sizes, default=0) / 2


@settings(max_examples=60, deadline=None)
@given(batch=batches, p=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_exact_spans_within_half_a_span(batch, p, seed):
    ids, maskable, word_ids = make_batch(*batch)
    config = MaskingConfig(strategy="span", count="exact", mask_prob=p)
    selected, span = choose_spans(maskable, word_ids, config, torch.Generator().manual_seed(seed))
    valid = maskable & (word_ids >= 0)
    for b in range(ids.shape[0]):
        sizes = torch.bincount(span[b][valid[b]], minlength=1)
        target = math.floor(p * int(valid[b].sum()) + 0.5)
        assert abs(int(selected[b].sum()) - target) <= int(sizes.max()) / 2


def test_choose_units_takes_the_closest_prefix():
    # Four units of 3 tokens: prefixes hold 0, 3, 6, 9, 12 tokens.
    unit = torch.arange(12).div(3, rounding_mode="floor").repeat(50, 1)  # (50, 12)
    valid = torch.ones(50, 12, dtype=torch.bool)
    for p, expected in [(0.5, 6), (0.3, 3), (0.35, 3), (0.4, 6), (0.0, 0), (1.0, 12), (0.05, 0), (0.13, 3)]:
        # targets: 6, 4 (3 is closer than 6), 4, 5 (6 is closer than 3), 0, 12, 1 (0 is closer), 2 (3 is closer)
        selected = theirs.choose_units(unit, valid, p, "exact", torch.Generator().manual_seed(0))
        assert (selected.sum(1) == expected).all(), (p, selected.sum(1))
        chosen = selected.view(50, 4, 3)
        assert (chosen.all(-1) | ~chosen.any(-1)).all(), "a unit was split"


def test_target_count_rounds_half_up_like_python():
    n = torch.arange(0, 200)
    for p in (0.0, 0.15, 0.25, 0.5, 1 / 3, 0.999, 1.0):
        assert target_count(n, p).tolist() == [math.floor(p * k + 0.5) for k in range(200)]


# --------------------------------------------------------------------------- words and spans are never split


@settings(max_examples=80, deadline=None)
@given(batch=batches, strategy=st.sampled_from(["whole_word", "span"]), count=st.sampled_from(COUNTS),
       p=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_word_strategies_never_split_a_word(batch, strategy, count, p, seed):
    ids, maskable, word_ids = make_batch(*batch)
    _, labels = run(MaskingConfig(strategy=strategy, count=count, mask_prob=p), ids, maskable, word_ids, seed)
    selected = labels != IGNORE
    for (b, _), positions in words_of(word_ids, maskable).items():
        picked = selected[b, positions]
        assert picked.all() or not picked.any(), f"word at {positions} split: {picked.tolist()}"


def test_word_index_numbers_runs_not_ids():
    word_ids = torch.tensor([[-1, 7, 7, 3, 3, 3, -1, 3, 0, -1]])
    maskable = torch.tensor([[False, True, True, True, True, True, False, True, True, False]])
    index, valid = word_index(maskable, word_ids)
    assert valid.tolist() == maskable.tolist()
    assert index[valid].tolist() == [0, 0, 1, 1, 1, 2, 3]  # the second run of id 3 is another word


@settings(max_examples=40, deadline=None)
@given(batch=batches, count=st.sampled_from(COUNTS), seed=st.integers(0, 2**31))
def test_one_replacement_decision_per_span(batch, count, seed):
    ids, maskable, word_ids = make_batch(*batch)
    config = MaskingConfig(strategy="span", count=count, mask_prob=0.5)
    masked, labels = run(config, ids, maskable, word_ids, seed)
    _, span = theirs.choose_spans(maskable, word_ids, config, torch.Generator().manual_seed(seed))
    # choose_spans consumes the generator exactly as mask_tokens does before replacing, so the spans match.
    for b in range(ids.shape[0]):
        for s in span[b][labels[b] != IGNORE].unique().tolist():
            at = (span[b] == s) & (labels[b] != IGNORE)
            is_mask = masked[b][at] == MASK
            assert is_mask.all() or not is_mask.any(), "one span got several replacement decisions"


# --------------------------------------------------------------------------- statistics


def _sigma_bound(p: float, n: float, k: float = 5.0) -> float:
    return k * math.sqrt(max(p * (1 - p), 1e-12) / n)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bernoulli_rate_and_replacement_split(strategy):
    # A non-default split catches a hard-coded 80/10/10.
    config = MaskingConfig(strategy=strategy, mask_prob=0.2, mask_frac=0.6, random_frac=0.3, keep_frac=0.1)
    ids, maskable, word_ids = make_batch(64, 128, 0, max_word=2, pad_rows=False)
    n_maskable = n_selected = n_mask = n_random = n_kept = 0
    for seed in range(12):
        masked, labels = run(config, ids, maskable, word_ids, seed)
        selected = labels != IGNORE
        n_maskable += int(maskable.sum())
        n_selected += int(selected.sum())
        n_mask += int((selected & (masked == MASK)).sum())
        n_random += int((selected & (masked != MASK) & (masked != ids)).sum())
        n_kept += int((selected & (masked == ids)).sum())
    # Masked units are words or spans of several tokens (and one fragment per row for sequence): the
    # effective number of independent draws is smaller than the token count, so divide by the largest unit.
    unit = {"token": 1, "whole_word": 2, "span": 20, "sequence": 128}[strategy]
    rate = n_selected / n_maskable
    assert abs(rate - 0.2) < _sigma_bound(0.2, n_maskable / unit), rate
    draws = n_selected / (20 if strategy == "span" else 1)  # span: one decision per span
    p_hit_original = 1 / len(REPLACEMENTS)  # a random draw may give back the original token
    assert abs(n_mask / n_selected - 0.6) < _sigma_bound(0.6, draws)
    assert abs(n_random / n_selected - 0.3 * (1 - p_hit_original)) < _sigma_bound(0.3, draws)
    assert abs(n_kept / n_selected - (0.1 + 0.3 * p_hit_original)) < _sigma_bound(0.1, draws)


def test_exact_token_masking_is_uniform_over_positions():
    ids, maskable, word_ids = make_batch(1, 20, 0, pad_rows=False)
    counts = torch.zeros(20)
    for seed in range(2000):
        counts += (run(MaskingConfig(count="exact", mask_prob=0.25), ids, maskable, word_ids, seed)[1][0] != IGNORE)
    n = int(maskable.sum())
    expected = 2000 * math.floor(0.25 * n + 0.5) / n
    assert (counts[maskable[0]] - expected).abs().max() < 5 * math.sqrt(expected)
    assert counts[~maskable[0]].sum() == 0


SPAN_MEAN = sum(k * 0.2 * 0.8 ** (k - 1) for k in range(1, 11)) / (1 - 0.8**10)  # 3.797...


def test_span_lengths_follow_the_truncated_geometric_law():
    n = 200_000
    lengths = theirs.span_lengths((n,), 0.2, 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert lengths.min() >= 1 and lengths.max() <= 10
    assert abs(SPAN_MEAN - 3.8) < 0.005  # SpanBERT's reported mean
    freq = torch.bincount(lengths, minlength=11)[1:].double() / n
    law = torch.tensor([0.2 * 0.8 ** (k - 1) / (1 - 0.8**10) for k in range(1, 11)], dtype=torch.float64)
    assert ((freq - law).abs() < 5 * (law * (1 - law) / n).sqrt()).all(), (freq, law)
    assert abs(lengths.double().mean().item() - SPAN_MEAN) < 5 * lengths.double().std().item() / math.sqrt(n)
    ones = theirs.span_lengths((100,), 1.0, 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (ones == 1).all()


def test_chosen_spans_keep_the_length_law():
    # Rows of one-token words, no padding: span lengths in words are span sizes in tokens.
    B, T = 64, 512
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T))
    ids[:, 0], ids[:, -1] = CLS, SEP
    maskable = ids >= N_SPECIAL
    word_ids = torch.arange(T).repeat(B, 1).masked_fill(~maskable, -1)
    config = MaskingConfig(strategy="span", mask_prob=0.15)
    lengths = []
    for seed in range(4):
        selected, span = choose_spans(maskable, word_ids, config, torch.Generator().manual_seed(seed))
        for b in range(B):
            sizes = torch.bincount(span[b][maskable[b]])
            chosen = span[b][selected[b]].unique()
            last = span[b][maskable[b]].max()  # the last span of a row is cut short by the row's end
            lengths += sizes[chosen[chosen != last]].tolist()
    lengths = torch.tensor(lengths, dtype=torch.float64)
    assert abs(lengths.mean().item() - SPAN_MEAN) < 5 * lengths.std().item() / math.sqrt(len(lengths))
    assert lengths.max() <= 10


@settings(max_examples=60, deadline=None)
@given(batch=batches, count=st.sampled_from(COUNTS), p=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_sequence_masks_one_contiguous_fragment(batch, count, p, seed):
    ids, maskable, word_ids = make_batch(*batch)
    _, labels = run(MaskingConfig(strategy="sequence", count=count, mask_prob=p), ids, maskable, word_ids, seed)
    for b in range(ids.shape[0]):
        ranks = torch.nonzero((labels[b] != IGNORE)[maskable[b]]).flatten()  # ranks among maskable positions
        if len(ranks):
            assert ranks.tolist() == list(range(int(ranks[0]), int(ranks[0]) + len(ranks)))


def test_sequence_defaults_to_half_the_row():
    assert MaskingConfig(strategy="sequence").mask_prob == 0.5
    assert MaskingConfig(strategy="token").mask_prob == 0.15
    assert MaskingConfig(strategy="sequence", mask_prob=0.3).mask_prob == 0.3


# --------------------------------------------------------------------------- bad input and edge cases


@pytest.mark.parametrize("kwargs, field", [
    ({"mask_prob": 1.5}, "mask_prob"), ({"mask_prob": -0.1}, "mask_prob"), ({"mask_prob": float("nan")}, "mask_prob"),
    ({"mask_frac": 1.2, "random_frac": -0.1, "keep_frac": -0.1}, "mask_frac"),
    ({"mask_frac": 0.8, "random_frac": 0.1, "keep_frac": 0.2}, "sum to 1"),
    ({"strategy": "words"}, "strategy"), ({"count": "fixed"}, "count"), ({"span_p": 0.0}, "span_p"),
    ({"max_span": 0}, "max_span"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MaskingConfig(**kwargs)


def test_bad_inputs_raise_clear_errors():
    ids, maskable, word_ids = make_batch(2, 16, 0)
    with pytest.raises(ValueError, match="needs word_ids"):
        run(MaskingConfig(strategy="whole_word"), ids, maskable, None)
    with pytest.raises(ValueError, match="needs word_ids"):
        run(MaskingConfig(strategy="span"), ids, maskable, None)
    with pytest.raises(ValueError, match="maskable must be a bool"):
        run(MaskingConfig(), ids, maskable.long(), word_ids)
    with pytest.raises(ValueError, match="input_ids must be a 2-D"):
        run(MaskingConfig(), ids[0], maskable[0], word_ids[0])
    with pytest.raises(ValueError, match="word_ids must be"):
        run(MaskingConfig(strategy="span"), ids, maskable, word_ids[:, :-1])
    with pytest.raises(ValueError, match="replacement id"):
        mask_tokens(ids, MaskingConfig(), mask_id=MASK, maskable=maskable,
                    replacement_ids=torch.tensor([], dtype=torch.long))


def test_batch_without_maskable_token_is_left_alone():
    ids, maskable, word_ids = make_batch(3, 20, 0)
    for strategy in STRATEGIES:
        masked, labels = run(MaskingConfig(strategy=strategy), ids, torch.zeros_like(maskable), word_ids)
        assert torch.equal(masked, ids) and (labels == IGNORE).all()


def test_row_without_maskable_token_is_left_alone():
    ids, maskable, word_ids = make_batch(3, 20, 0)
    maskable[1] = False
    for strategy in STRATEGIES:
        masked, labels = run(MaskingConfig(strategy=strategy, mask_prob=1.0, count="exact"), ids, maskable, word_ids)
        assert torch.equal(masked[1], ids[1]) and (labels[1] == IGNORE).all()
        assert (labels[0] != IGNORE).any()


def test_all_mask_and_no_random_split():
    ids, maskable, word_ids = make_batch(4, 32, 0)
    config = MaskingConfig(mask_prob=1.0, mask_frac=1.0, random_frac=0.0, keep_frac=0.0)
    masked, labels = mask_tokens(ids, config, mask_id=MASK, maskable=maskable,
                                 replacement_ids=torch.tensor([], dtype=torch.long))  # no random draw needed
    assert torch.equal(labels != IGNORE, maskable) and (masked[maskable] == MASK).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_masks_on_the_gpu(strategy):
    ids, maskable, word_ids = (x.cuda() for x in make_batch(32, 128, 0))
    g = torch.Generator(device="cuda").manual_seed(0)
    config = MaskingConfig(strategy=strategy, count="exact")
    replacements = REPLACEMENTS.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # masking must never make the host wait for the GPU
    try:
        masked, labels = mask_tokens(ids, config, mask_id=MASK, maskable=maskable, replacement_ids=replacements,
                                     word_ids=word_ids, generator=g)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert masked.is_cuda and labels.is_cuda
    selected = labels != IGNORE
    assert not (selected & ~maskable).any() and torch.equal(labels[selected], ids[selected])
    g.manual_seed(0)
    again = mask_tokens(ids, config, mask_id=MASK, maskable=maskable, replacement_ids=REPLACEMENTS.cuda(),
                        word_ids=word_ids, generator=g)
    assert torch.equal(again[0], masked)
    # A CPU generator with CUDA inputs also works (draws move to the GPU).
    cpu = mask_tokens(ids, config, mask_id=MASK, maskable=maskable, replacement_ids=REPLACEMENTS,
                      word_ids=word_ids, generator=torch.Generator().manual_seed(0))
    assert cpu[0].is_cuda


@pytest.mark.slow
def test_bench_masking_runs_and_prints_every_figure(capsys):
    import argparse

    from minilm.benchmarks import masking as bench

    parser = argparse.ArgumentParser()
    bench.configure(parser)
    bench.run(parser.parse_args(["--preset", "bert-tiny", "--vocab-size", "512", "--batch-size", "4",
                                 "--seq-len", "32", "--steps", "2", "--repeats", "4"]))
    out = capsys.readouterr().out
    for strategy in STRATEGIES:
        for count in COUNTS:  # labelled share, ms, fraction of a step (wall), fraction of a step (CPU time)
            row = rf"^{strategy} +{count} +[0-9.]+% +[0-9.]+ +[0-9.]+% +[0-9.]+%$"
            assert re.search(row, out, re.M), (strategy, count)
    assert "collate from lists" in out and "mask a ready tensor" in out
    assert len(re.findall(r"[0-9.]+x +[0-9.]+x$", out, re.M)) == 2  # throughput ratios, wall and CPU time


def test_bench_rows_look_like_encoder_rows():
    from minilm.benchmarks.masking import Vocabulary, synthetic_rows

    vocab = Vocabulary(1000)
    ids, word_ids = synthetic_rows(8, 128, vocab)
    special = ids >= 1000 - 6
    assert (ids[:, 0] == vocab.cls_id).all() and (ids[:, -1] == vocab.sep_id).all()
    assert torch.equal(word_ids < 0, special)
    index, valid = word_index(~special, word_ids)
    lengths = torch.cat([torch.bincount(index[b][valid[b]]) for b in range(8)])
    assert lengths.max() <= 4 and 1.15 < lengths.double().mean() < 1.45
