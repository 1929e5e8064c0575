"""What the training loop costs besides the model: its per-step host work, in CPU time per step.

Each piece of `lmforge train`'s per-step bookkeeping is timed alone, with `time.process_time` (CPU
seconds of this process, so other processes on a shared machine disturb it less than wall time),
next to what a plain loop spends on the same job, at bench_train.py's small shape (batch 12 x 64
tokens, where a whole step takes ~25-35 ms on 2 cores):

  batch (vectorised)   the BatchSampler's draw and gather, as it is now
  batch (per row)      the same batches drawn row by row, as the sampler did before
  plain get_batch      nanoGPT's get_batch (torch.randint + a stack of slices)
  progress (redraw)    the progress bar's postfix set with a redraw on every step, as before
  progress (lazy)      Logbook.show_step: postfix without a redraw, update() redraws every 0.5 s
  guard + crc          the guard's verdict and the batch fingerprint written to metrics.jsonl

    python bench/bench_loop_overhead.py [--repeats 2000]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge.data.batches import BatchSampler, Pool  # noqa: E402
from lmforge.hardware import cpu_description  # noqa: E402
from lmforge.train import guard  # noqa: E402
from lmforge.train.logbook import Logbook, Speed  # noqa: E402
from lmforge.train.state import TrainState  # noqa: E402

B, T = 12, 64
TOKENS = 1_003_854  # Tiny Shakespeare's train split in characters


def per_row_batch(sampler: BatchSampler, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's former row-by-row draw and gather (same batches, more Python per row)."""
    window = sampler.seq_len + 1
    rng = np.random.Generator(np.random.PCG64([sampler.seed, step, sampler.rank]))
    pool_idx = rng.choice(len(sampler.pools), size=sampler.batch_size, p=sampler.pool_probs)
    rows = []
    for p in pool_idx:
        sizes = sampler.shard_starts[p]
        shard = int(rng.choice(len(sizes), p=sizes / sizes.sum())) if len(sizes) > 1 else 0
        rows.append((int(p), shard, int(rng.integers(0, sizes[shard]))))
    out = np.empty((sampler.batch_size, window), dtype=np.int64)
    by_shard: dict = {}
    for row, (p, s, start) in enumerate(rows):
        by_shard.setdefault((p, s), []).append((row, start))
    span = np.arange(window, dtype=np.int64)
    for (p, s), items in by_shard.items():
        idx = np.array([row for row, _ in items])
        starts = np.array([start for _, start in items], dtype=np.int64)
        out[idx] = sampler.pools[p].shards[s][starts[:, None] + span]
    tokens = torch.from_numpy(out)
    return tokens[:, :-1], tokens[:, 1:]


def cpu_ms(fn, repeats: int) -> float:
    """Median CPU milliseconds per call over 5 blocks of `repeats` // 5 calls."""
    per_block = max(1, repeats // 5)
    blocks = []
    for _ in range(5):
        start = time.process_time()
        for i in range(per_block):
            fn(i)
        blocks.append((time.process_time() - start) / per_block * 1e3)
    return statistics.median(blocks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = (np.arange(TOKENS) % 65).astype(np.uint16)
    sampler = BatchSampler([Pool("text", [data], 1.0)], B, T, seed=1337)

    def plain_get_batch(_):
        ix = torch.randint(len(data) - T, (B,))
        x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + T].astype(np.int64)) for i in ix])
        return x, y

    sink = io.StringIO()
    from tqdm import tqdm

    def bar():
        return tqdm(total=10**9, file=sink, mininterval=0.5, dynamic_ncols=False, ncols=100)

    redraw_bar = bar()
    book = Logbook.__new__(Logbook)  # only its progress bar: no run folder
    book.bar, book._progress = bar(), True
    speed = Speed(5_000_000, 1e12)
    speed.tokens_per_second, speed.mfu = 30_000.0, 0.4

    def redraw(i):
        redraw_bar.set_postfix_str(f"loss {2.5:.3f} | {30.0:.1f}k tok/s | MFU {0.4:.0%}")
        redraw_bar.update(1)

    state = TrainState(max_steps=10**6)
    x = sampler.batch(0)[0]

    def guard_and_crc(i):
        guard.judge(state, 2.5 + (i % 7) * 0.01, 1.0, 1e-3)
        zlib.crc32(x.cpu().numpy().tobytes())

    pieces = {
        "batch (vectorised)": lambda i: sampler.batch(i),
        "batch (per row)": lambda i: per_row_batch(sampler, i),
        "plain get_batch": plain_get_batch,
        "progress (redraw)": redraw,
        "progress (lazy)": lambda i: book.show_step(2.5, speed),
        "guard + crc": guard_and_crc,
    }
    assert all(torch.equal(sampler.batch(s)[0], per_row_batch(sampler, s)[0]) for s in range(20))
    print(f"machine: {cpu_description()}; load {os.getloadavg()[0]:.2f}; 1 thread, batch {B} x {T}")
    print(f"{'piece':<22}{'CPU ms/step':>12}")
    for name, fn in pieces.items():
        print(f"{name:<22}{cpu_ms(fn, args.repeats):>12.3f}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
