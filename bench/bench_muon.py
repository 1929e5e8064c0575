"""Muon's step on the CPU: lmforge's `Muon` (Newton-Schulz in float32, same-shaped matrices batched)
against the same one matrix at a time and against `torch.optim.Muon` (bf16 iteration).

The matrices are a model's block matrices (default: the shakespeare-char-speedrun preset's block,
width 64: qkv 192 x 64, out 64 x 64, MLP 256 x 64 and 64 x 256), --blocks times over (the quality
preset has 3), each with a random gradient; a step of each optimizer is timed alone (no forward or
backward), the contenders interleaved so that the machine's load hits them alike. Median (min-max)
over --repeats steps after 5 warm-up steps.

    python bench/bench_muon.py [--shapes 192x64,64x64,256x64,64x256] [--blocks 1] [--threads 1]
                               [--repeats 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lmforge.hardware import cpu_description
from lmforge.train.optim import Muon, _newton_schulz


class OneByOne(Muon):
    """lmforge's Muon with every matrix through Newton-Schulz on its own (as before batching)."""

    def _orthogonalised(self, updates, coefficients, steps, eps):
        return [_newton_schulz(u, coefficients, steps, eps, torch.float32) for u in updates]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="192x64,64x64,256x64,64x256")
    ap.add_argument("--blocks", type=int, default=1, help="the block's matrices, this many times")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] * args.blocks
    gen = torch.Generator().manual_seed(0)
    kw = {"lr": 0.015, "momentum": 0.95, "adjust_lr_fn": "original"}
    contenders = {}
    for name, cls in (
        ("lmforge Muon (float32 iteration, same shapes batched)", Muon),
        ("lmforge Muon, one matrix at a time", OneByOne),
        ("torch.optim.Muon (bf16 iteration)", torch.optim.Muon),
    ):
        params = [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        contenders[name] = cls([{"params": params, "weight_decay": 0.1}], **kw)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    load = os.getloadavg()[0]
    for i in range(args.repeats + 5):
        for name, opt in contenders.items():
            start = time.perf_counter()
            opt.step()
            if i >= 5:
                times[name].append(1e3 * (time.perf_counter() - start))
    print(f"CPU: {cpu_description()}; torch {torch.__version__}; {args.threads} thread(s)")
    after = os.getloadavg()[0]
    print(f"1-minute load average {load:.2f} -> {after:.2f}; matrices {args.shapes} x {args.blocks}\n")
    print("| optimizer | ms per step, median (min-max) |")
    print("|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) |")


if __name__ == "__main__":
    main()
