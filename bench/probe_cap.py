"""How much of a micro-step the fast-path probe must time: its verdict at several input caps.

models/fastpaths.py times each hand-written kernel against ATen on a slice of the run's micro-step
(MAX_ELEMENTS for elementwise ops, MAX_TOKENS for attention). A slice that fits in a cache can
favour a kernel that loses on the whole step, once the tensors spill to memory. This runs the real
probe (`fastpaths.probe_op`, freed memory reused as in training) --repeats times at each cap for
bench_train.py's large shape (16 x 256 tokens, width 384, MLP 1536, 6 heads) and prints the verdicts
with ours / ATen (fwd + bwd of the best round; below 1: ours faster) and the seconds each probe took.

    python bench/probe_cap.py [--op gelu] [--caps 1M,2M,4M,8M] [--repeats 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge.hardware import cpu_description, physical_cores, reuse_freed_memory  # noqa: E402
from lmforge.models import fastpaths  # noqa: E402


def parse_cap(text: str) -> int:
    scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1].upper(), 1)
    return int(text.rstrip("KMkm")) * scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--op", default="gelu", choices=["gelu", "relu2", "rms_norm", "attention"])
    ap.add_argument("--caps", default="", help="elements (attention: tokens), e.g. 1M,2M,4M,8M or 512,4096")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0 = physical cores (as training)")
    args = ap.parse_args()
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    reuse_freed_memory()
    attention = args.op == "attention"
    caps = [parse_cap(c) for c in (args.caps or ("512,4096" if attention else "1M,2M,4M,8M")).split(",")]
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {threads} threads; op {args.op}")
    for dtype in ("float32", "bfloat16"):
        shape = fastpaths.ProbeShape(16, 256, 384, 1536, 6, 6, dtype, threads)
        for cap in caps:
            setattr(fastpaths, "MAX_TOKENS" if attention else "MAX_ELEMENTS", cap)
            verdicts, start = [], time.perf_counter()
            for _ in range(args.repeats):
                v = fastpaths.probe_op(args.op, shape, fastpaths.make_runner)
                verdicts.append(f"{v.path} {sum(v.ours_ms) / sum(v.plain_ms):.2f}")
            each = (time.perf_counter() - start) / args.repeats
            print(f"{dtype:9s} cap {cap:>9,}: {', '.join(verdicts)}  ({each:.2f} s per probe)", flush=True)


if __name__ == "__main__":
    main()
