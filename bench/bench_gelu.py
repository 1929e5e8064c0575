"""GPT-2's tanh-GELU: lmforge's hand-written training path against ATen's kernels, forward and backward.

`models/layers.py` `GELUTanh` computes x * sigmoid(K (x + 0.044715 x³)) with its own backward when
gradients are needed; `nn.GELU(approximate="tanh")` is ATen's. Both run on the same (rows, cols)
tensor in the given dtype on `--threads` threads; the figures are medians (min-max) of `--repeats`
timed calls after two warm-up calls, forward and backward timed separately, the two contenders
interleaved so that the machine's load hits both alike.

    python bench/bench_gelu.py [--shape 4096,1536] [--dtype bfloat16] [--threads 1] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from lmforge.hardware import cpu_description
from lmforge.models.layers import GELUTanh


def fwd_bwd_ms(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[float, float]:
    xi = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    y = module(xi)
    t1 = time.perf_counter()
    y.backward(grad)
    t2 = time.perf_counter()
    return 1e3 * (t1 - t0), 1e3 * (t2 - t1)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="4096,1536", help="rows,cols (default: nanoGPT's 10.7 M shape's MLP)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, cols = (int(v) for v in args.shape.split(","))
    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    x = torch.randn(rows, cols, generator=gen).to(dtype)
    grad = torch.randn(rows, cols, generator=gen).to(dtype)
    contenders = {"lmforge GELUTanh": GELUTanh(), "ATen nn.GELU(tanh)": nn.GELU(approximate="tanh")}
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in contenders}
    load = os.getloadavg()[0]
    for i in range(args.repeats + 2):
        for name, module in contenders.items():
            f, b = fwd_bwd_ms(module, x, grad)
            if i >= 2:
                times[name][0].append(f)
                times[name][1].append(b)
    print(f"CPU: {cpu_description()}; torch {torch.__version__}; {args.threads} thread(s)")
    print(f"1-minute load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"tanh-GELU on a ({rows}, {cols}) {args.dtype} tensor, ms, median (min-max) of {args.repeats}\n")
    print("| implementation | forward ms | backward ms | forward + backward |")
    print("|---|---|---|---|")
    for name, (f, b) in times.items():
        total = statistics.median(f) + statistics.median(b)
        print(f"| {name} | {fmt(f)} | {fmt(b)} | {total:.1f} |")


if __name__ == "__main__":
    main()
