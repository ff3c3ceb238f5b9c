"""The one rule behind every batch source (minilm.data.sampler): rows by (seed, step), shares by rank."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.data.sampler import RowSampler, mix, shard


@settings(max_examples=25, deadline=None)
@given(n_rows=st.integers(1, 50), batch=st.integers(1, 16), seed=st.integers(0, 5))
def test_row_sampler_visits_every_row_once_per_epoch(n_rows, batch, seed):
    s = RowSampler(n_rows, batch, seed, torch.device("cpu"))
    steps = (3 * n_rows + batch - 1) // batch
    seen = torch.cat([s.indices(i) for i in range(steps)])[: 3 * n_rows]
    for epoch in range(3):
        assert sorted(seen[epoch * n_rows:(epoch + 1) * n_rows].tolist()) == list(range(n_rows))
    assert torch.equal(RowSampler(n_rows, batch, seed, torch.device("cpu")).indices(steps - 1), s.indices(steps - 1))


@settings(max_examples=25, deadline=None)
@given(n_rows=st.integers(1, 40), per_rank=st.integers(1, 6), world=st.integers(1, 4), step=st.integers(0, 30),
       seed=st.integers(0, 5))
def test_rank_shares_are_contiguous_and_make_the_global_batch(n_rows, per_rank, world, step, seed):
    s = RowSampler(n_rows, per_rank * world, seed)
    shares = [s.indices(step, rank, world) for rank in range(world)]
    assert torch.equal(torch.cat(shares), s.indices(step))  # the global batch does not depend on the world size
    assert all(len(x) == per_rank for x in shares)


def test_a_batch_size_the_world_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="--batch-size 6 is not divisible by the world size 4"):
        RowSampler(10, 6, 0).indices(0, rank=1, world_size=4)
    with pytest.raises(ValueError, match="--batch-size 6 is not divisible"):
        shard({"x": torch.zeros(6)}, 0, 4)


def test_seed_streams_do_not_collide():
    seeds = {mix(seed, stream, step) for seed in range(4) for stream in (1, 2, 3) for step in range(200)}
    assert len(seeds) == 4 * 3 * 200
    assert all(0 <= x < 2**63 for x in seeds)
