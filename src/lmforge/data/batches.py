"""Training windows drawn from token shards as a pure function of (seed, step, rank, micro_step).

Why a pure function rather than a stateful loader: a run that is killed and resumed at step k must
see exactly the batches the uninterrupted run would have seen, with nothing replayed or skipped, and
a run on N processes must give each rank its own windows. If the windows of a step depend only on
(seed, step, rank, micro_step), resuming needs no loader state at all -- the step number is enough.

Sampling: each row of a batch first picks a source pool by its mixture weight (the data
composition a user tunes), then a shard of that pool in proportion to its size, then a uniformly
random window start. Rows are gathered with one vectorised fancy index per shard into the memmap.

One global batch per step: the rows of optimizer step `step` come in blocks of batch_size, block
b drawn from rng(seed, step, b), and micro-step m of rank r takes block m * world_size + r. So one
process with 2 accumulation steps and two processes with one each see exactly the same rows, and a
run can resume with another number of processes without changing its data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmforge.errors import UserError


@dataclass
class Pool:
    """One source's token shards and its mixture weight."""

    name: str
    shards: list[np.ndarray]  # 1-D token arrays (np.memmap), each longer than one window
    weight: float


class BatchSampler:
    """`sampler.batch(step, micro_step)` -> (x, y) LongTensors of shape (batch_size, seq_len)."""

    def __init__(
        self,
        pools: list[Pool],
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        window = seq_len + 1
        kept: list[Pool] = []
        for pool in pools:
            shards = [s for s in pool.shards if len(s) > window]
            if shards and pool.weight > 0:
                kept.append(Pool(pool.name, shards, pool.weight))
        if not kept:
            raise UserError(
                f"no training shard holds more than {window} tokens (seq_len + 1); prepare more data "
                "or lower model.seq_len"
            )
        self.pools = kept
        weights = np.array([p.weight for p in kept], dtype=np.float64)
        self.pool_probs = weights / weights.sum()
        # Window starts per shard: 0 .. len - window (inclusive).
        self.shard_starts = [np.array([len(s) - window + 1 for s in p.shards], dtype=np.int64) for p in kept]
        # each pool's window count when every pool is one shard (the vectorised draw), else None
        single = all(len(sizes) == 1 for sizes in self.shard_starts)
        self._single_shard = np.array([sizes[0] for sizes in self.shard_starts]) if single else None

    def offsets(self, step: int, micro_step: int = 0) -> list[tuple[int, int, int]]:
        """(pool, shard, start) for this rank's rows of one micro-step; pure in (seed, step, rank, micro)."""
        pools, shards, starts = self._draw(step, micro_step)
        return [(int(p), int(s), int(t)) for p, s, t in zip(pools, shards, starts, strict=True)]

    def _draw(self, step: int, micro_step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pool, shard, start) arrays of the rows. Per row: a pool by weight, a shard by size (only
        when the pool has several), a uniform start. When no pool has several shards -- one file of
        characters, the common case -- the per-row starts are one vectorised draw: numpy's bounded
        integers consume the generator exactly as the per-row calls do (tests/data/test_batches.py
        holds the two paths equal), so the batches are the same as ever, at a fraction of the
        Python overhead per step (BENCHMARKS.md, "Training throughput", whole processes)."""
        block = micro_step * self.world_size + self.rank
        rng = np.random.Generator(np.random.PCG64([self.seed, step, block]))
        pool_idx = rng.choice(len(self.pools), size=self.batch_size, p=self.pool_probs)
        if self._single_shard is not None:
            starts = rng.integers(0, self._single_shard[pool_idx])
            return pool_idx, np.zeros_like(pool_idx), starts
        shards, starts = np.zeros_like(pool_idx), np.empty_like(pool_idx)
        for row, p in enumerate(pool_idx):
            sizes = self.shard_starts[p]
            shard = int(rng.choice(len(sizes), p=sizes / sizes.sum())) if len(sizes) > 1 else 0
            shards[row], starts[row] = shard, rng.integers(0, sizes[shard])
        return pool_idx, shards, starts

    def batch(self, step: int, micro_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.seq_len + 1
        pools, shards, starts = self._draw(step, micro_step)
        span = np.arange(window, dtype=np.int64)
        if self._single_shard is not None and len(self.pools) == 1:  # one array: one gather
            out = self.pools[0].shards[0][starts[:, None] + span].astype(np.int64)  # (B, seq_len + 1)
        else:
            out = np.empty((self.batch_size, window), dtype=np.int64)
            for p, s in {(int(p), int(s)) for p, s in zip(pools, shards, strict=True)}:
                rows = np.flatnonzero((pools == p) & (shards == s))
                out[rows] = self.pools[p].shards[s][starts[rows, None] + span]  # (n, seq_len + 1)
        tokens = torch.from_numpy(out)
        return tokens[:, :-1], tokens[:, 1:]


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int | None = None, batch_size: int = 32):
    """Non-overlapping (x, y) windows covering `tokens` from the start: a fixed, repeatable slice.

    Yields LongTensor pairs of shape (n, seq_len), n <= batch_size; a final partial window comes last
    as its own (1, rest) pair, so evaluating the whole split counts every target token exactly once.
    """
    n_targets = len(tokens) - 1 if max_tokens is None else min(len(tokens) - 1, max_tokens)
    n_full = n_targets // seq_len
    for first in range(0, n_full, batch_size):
        count = min(batch_size, n_full - first)
        begin, end = first * seq_len, (first + count) * seq_len
        flat = np.asarray(tokens[begin : end + 1], dtype=np.int64)
        x = torch.from_numpy(flat[:-1].reshape(count, seq_len))  # (count, seq_len)
        y = torch.from_numpy(flat[1:].reshape(count, seq_len))
        yield x, y
    rest = n_targets - n_full * seq_len
    if rest > 0:
        flat = torch.from_numpy(np.asarray(tokens[n_full * seq_len : n_targets + 1], dtype=np.int64))
        yield flat[None, :-1], flat[None, 1:]
