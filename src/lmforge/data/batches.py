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

    def offsets(self, step: int, micro_step: int = 0) -> list[tuple[int, int, int]]:
        """(pool, shard, start) for this rank's rows of one micro-step; pure in (seed, step, rank, micro)."""
        block = micro_step * self.world_size + self.rank
        rng = np.random.Generator(np.random.PCG64([self.seed, step, block]))
        pool_idx = rng.choice(len(self.pools), size=self.batch_size, p=self.pool_probs)
        rows = []
        for p in pool_idx:
            sizes = self.shard_starts[p]
            shard = int(rng.choice(len(sizes), p=sizes / sizes.sum())) if len(sizes) > 1 else 0
            start = int(rng.integers(0, sizes[shard]))
            rows.append((int(p), shard, start))
        return rows

    def batch(self, step: int, micro_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.seq_len + 1
        out = np.empty((self.batch_size, window), dtype=np.int64)
        rows = self.offsets(step, micro_step)
        by_shard: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for row, (p, s, start) in enumerate(rows):
            by_shard.setdefault((p, s), []).append((row, start))
        span = np.arange(window, dtype=np.int64)
        for (p, s), items in by_shard.items():
            idx = np.array([row for row, _ in items])
            starts = np.array([start for _, start in items], dtype=np.int64)
            out[idx] = self.pools[p].shards[s][starts[:, None] + span]  # (n, seq_len + 1)
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
