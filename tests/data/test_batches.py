"""Batches are a pure function of (seed, step, rank, micro_step); eval windows cover every token once."""

import numpy as np
import pytest
import torch

from lmforge.data.batches import BatchSampler, Pool, eval_windows
from lmforge.errors import UserError


def make_pools():
    a = np.arange(0, 1000, dtype=np.uint16)
    b = np.arange(1000, 1500, dtype=np.uint16)
    return [Pool("a", [a, b], 1.0)]


def test_same_step_same_batch_and_targets_shifted():
    s1 = BatchSampler(make_pools(), batch_size=4, seq_len=8, seed=3)
    s2 = BatchSampler(make_pools(), batch_size=4, seq_len=8, seed=3)
    x1, y1 = s1.batch(5, 1)
    x2, y2 = s2.batch(5, 1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (4, 8) and x1.dtype == torch.int64
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    assert torch.equal(y1, x1 + 1)  # consecutive ids: windows are contiguous slices


def test_steps_ranks_and_micro_steps_differ():
    s = BatchSampler(make_pools(), batch_size=4, seq_len=8, seed=3)
    r1 = BatchSampler(make_pools(), batch_size=4, seq_len=8, seed=3, rank=1)
    assert not torch.equal(s.batch(0)[0], s.batch(1)[0])
    assert not torch.equal(s.batch(0, 0)[0], s.batch(0, 1)[0])
    assert not torch.equal(s.batch(0)[0], r1.batch(0)[0])


def test_mixture_weights_pick_pools():
    a = np.zeros(100, dtype=np.uint16)
    b = np.ones(100, dtype=np.uint16)
    s = BatchSampler([Pool("a", [a], 1.0), Pool("b", [b], 3.0)], batch_size=64, seq_len=4, seed=0)
    share_b = np.mean([float(s.batch(step)[0].float().mean()) for step in range(40)])
    assert 0.68 < share_b < 0.82
    only_a = BatchSampler([Pool("a", [a], 1.0), Pool("b", [b], 0.0)], batch_size=16, seq_len=4, seed=0)
    assert int(only_a.batch(0)[0].sum()) == 0


def test_too_short_data_is_a_user_error():
    with pytest.raises(UserError, match="seq_len"):
        BatchSampler([Pool("a", [np.arange(5, dtype=np.uint16)], 1.0)], batch_size=2, seq_len=8, seed=0)


def test_eval_windows_cover_every_target_once():
    tokens = np.arange(103, dtype=np.uint16)
    ys = [y for _, y in eval_windows(tokens, seq_len=10, batch_size=3)]
    flat = torch.cat([y.reshape(-1) for y in ys])
    assert torch.equal(flat, torch.arange(1, 103))
    limited = torch.cat([y.reshape(-1) for _, y in eval_windows(tokens, 10, max_tokens=25)])
    assert torch.equal(limited, torch.arange(1, 26))


def test_two_ranks_see_the_rows_of_two_micro_steps():
    # One process accumulating 2 micro-steps == two processes with one each: same rows, same order.
    single = BatchSampler(make_pools(), batch_size=3, seq_len=8, seed=9)
    rank0 = BatchSampler(make_pools(), batch_size=3, seq_len=8, seed=9, rank=0, world_size=2)
    rank1 = BatchSampler(make_pools(), batch_size=3, seq_len=8, seed=9, rank=1, world_size=2)
    for step in (0, 7):
        assert torch.equal(single.batch(step, 0)[0], rank0.batch(step, 0)[0])
        assert torch.equal(single.batch(step, 1)[0], rank1.batch(step, 0)[0])


def _per_row_batch(pools, batch_size, seq_len, seed, step, micro_step=0, rank=0, world_size=1):
    """The sampler's definition, written row by row as it first was: the vectorised draw must match."""
    window = seq_len + 1
    rng = np.random.Generator(np.random.PCG64([seed, step, micro_step * world_size + rank]))
    weights = np.array([p.weight for p in pools], dtype=np.float64)
    pool_idx = rng.choice(len(pools), size=batch_size, p=weights / weights.sum())
    rows = []
    for p in pool_idx:
        sizes = np.array([len(s) - window + 1 for s in pools[p].shards], dtype=np.int64)
        shard = int(rng.choice(len(sizes), p=sizes / sizes.sum())) if len(sizes) > 1 else 0
        start = int(rng.integers(0, sizes[shard]))
        rows.append(np.asarray(pools[p].shards[shard][start : start + window], dtype=np.int64))
    return torch.from_numpy(np.stack(rows))


@pytest.mark.parametrize(
    "lengths",
    [[[1_115_394]], [[300], [5_000]], [[1000, 500]], [[700, 40], [90]]],
    ids=["one-file", "two-pools", "two-shards", "mixed"],
)
def test_batches_equal_the_per_row_definition(lengths):
    base = 0
    pools = []
    for i, shard_lengths in enumerate(lengths):
        shards = []
        for n in shard_lengths:
            shards.append((np.arange(n, dtype=np.int64) + base).astype(np.uint32))
            base += n
        pools.append(Pool(f"p{i}", shards, 1.0 + i))
    sampler = BatchSampler(pools, batch_size=12, seq_len=16, seed=1337, rank=1, world_size=2)
    for step in (0, 1, 7, 123456):
        for micro_step in (0, 3):
            x, y = sampler.batch(step, micro_step)
            want = _per_row_batch(pools, 12, 16, 1337, step, micro_step, rank=1, world_size=2)
            assert torch.equal(x, want[:, :-1]) and torch.equal(y, want[:, 1:])
