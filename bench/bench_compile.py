"""Does `torch.compile` (inductor's CPU backend) pay for training, and what does compiling cost?

At one of bench_train.py's shapes, lmforge's GPT-2-style model takes full optimizer steps (forward,
backward, clip, AdamW) eagerly and compiled, in bf16 autocast, interleaved round by round in one
process, with the kernels the fast-path probe picks here and freed memory kept for reuse, as training
runs; utilisation against the bf16 matmul ceiling measured in the same process. Compile time is
the first compiled step's time beyond a steady step: "cold" in an empty inductor cache, "warm" in a
second process that finds the first one's cache (`TORCHINDUCTOR_CACHE_DIR`), which is what a
persistent cache under ~/.cache/lmforge/ would give every run after the first on a machine.

    python bench/bench_compile.py [--shape large] [--attn math] [--rounds 3] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> None:
    """One process: eager and compiled steps, interleaved; prints a JSON line."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "src"))
    from bench_train import SHAPES, build, make_step
    from lmforge.config import TrainConfig
    from lmforge.hardware import measure_peak_flops, physical_cores, reuse_freed_memory
    from lmforge.models import fastpaths

    torch.set_num_threads(physical_cores())
    reuse_freed_memory()  # as training sets the allocator: without it eager steps page-fault every step
    s = SHAPES[args.shape]
    name = "lmforge-math" if args.attn == "math" else "lmforge"
    torch.manual_seed(0)
    model, loss_fn, fpt = build(name, s)
    train_cfg = TrainConfig(batch_size=s["batch"], dtype="bfloat16", threads=torch.get_num_threads())
    print(fastpaths.setup(model.config, train_cfg, torch.device("cpu")).line(), file=sys.stderr)
    eager = make_step(model, loss_fn, s, "bf16")
    torch.manual_seed(0)
    cmodel, _, _ = build(name, s)
    compiled_model = torch.compile(cmodel, dynamic=False)
    compiled = make_step(cmodel, lambda x, y: compiled_model(x, y), s, "bf16")
    start = time.perf_counter()
    compiled()
    first = time.perf_counter() - start
    eager()
    tokens = s["batch"] * s["seq_len"]
    rates: dict[str, list[float]] = {"eager": [], "compiled": []}
    peaks = []
    for _ in range(args.rounds):
        peaks.append(measure_peak_flops(torch.device("cpu"), "bfloat16", size=2048))
        for key, step in (("eager", eager), ("compiled", compiled)):
            times = []
            for _ in range(args.steps):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            rates[key].append(tokens / statistics.median(times))
    steady = tokens / statistics.median(rates["compiled"])
    peak = statistics.median(peaks)
    out = {"compile_s": max(0.0, first - steady), "peak_bf16": peak}
    for key, values in rates.items():
        med = statistics.median(values)
        out[key] = {"median": med, "min": min(values), "max": max(values), "mfu": fpt * med / peak}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="large")
    ap.add_argument("--attn", choices=("sdpa", "math"), default="math")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT / "src"))
    from lmforge.hardware import cpu_description

    print(f"machine: {cpu_description()}; load {os.getloadavg()[0]:.2f}", flush=True)
    cmd = [sys.executable, __file__, "--child", "--shape", args.shape, "--attn", args.attn,
           "--rounds", str(args.rounds), "--steps", str(args.steps)]  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(ROOT / "src")}
        results = {}
        for label in ("cold", "warm"):
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            results[label] = json.loads(out.strip().splitlines()[-1])
            r = results[label]
            print(
                f"{label} cache: compile {r['compile_s']:.1f} s; eager {r['eager']['median']:,.0f} tok/s "
                f"({r['eager']['min']:,.0f}-{r['eager']['max']:,.0f}, {r['eager']['mfu']:.0%} of bf16 "
                f"{r['peak_bf16'] / 1e9:.0f} GFLOP/s), compiled {r['compiled']['median']:,.0f} tok/s "
                f"({r['compiled']['min']:,.0f}-{r['compiled']['max']:,.0f}, {r['compiled']['mfu']:.0%}); "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    work = ROOT / "bench" / ".work"
    work.mkdir(parents=True, exist_ok=True)
    (work / f"compile-{args.shape}-{args.attn}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
