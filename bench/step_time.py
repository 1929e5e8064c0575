"""Milliseconds per optimizer step of a preset, in one process, for several settings side by side.

Each contender is the preset with its own key=value overrides; one engine each (train/engine.py, the
loop's own step: batch, forward, backward, clip, optimizer), the fast paths its probe would choose and
freed memory reused, as `lmforge train` runs. After a warm-up the contenders take turns, --rounds
times --steps steps each, so all see the same machine; prints the median and min-max of the rounds'
ms per step and microseconds per token. What it leaves out of a whole run: start-up, evaluation and
checkpoints (bench_speedrun.py and bench_levers.py time those).

    python bench/step_time.py shakespeare-char-speedrun "b32=train.batch_size=32" "b48=train.batch_size=48"
    python bench/step_time.py gpt2-shakespeare "bf16=train.dtype=bfloat16 train.batch_size=12" --profile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "bench"))

from bench_precision import data_for  # noqa: E402
from lmforge import hardware  # noqa: E402
from lmforge.config import load_config  # noqa: E402
from lmforge.dist import DistInfo  # noqa: E402
from lmforge.models import fastpaths, layers  # noqa: E402
from lmforge.presets import path as preset_path  # noqa: E402
from lmforge.train.data import open_data  # noqa: E402
from lmforge.train.engine import apply_update, build_engine, train_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset")
    ap.add_argument(
        "contenders", nargs="+", help='NAME=key=value[ key=value ...], e.g. "b48=train.batch_size=48"'
    )
    ap.add_argument("--data", default="", help="a data folder (default: the preset's, made if missing)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    ap.add_argument("--profile", action="store_true", help="then each contender's ops under torch.profiler")
    args = ap.parse_args()

    hardware.setup_threads(args.threads)
    hardware.reuse_freed_memory()
    data = open_data(Path(args.data) if args.data else data_for(args.preset), {})
    print(f"CPU: {hardware.cpu_description()}; {torch.get_num_threads()} threads; torch {torch.__version__}")
    runs = []
    for spec in args.contenders:
        name, _, rest = spec.partition("=")
        config = load_config(preset_path(args.preset), rest.split(), data.tokenizer.vocab_size)
        if config.train.dtype == "auto":
            raise SystemExit(f"{name}: name the dtype (train.dtype=float32 or bfloat16)")
        paths = fastpaths.setup(config.model, config.train, torch.device("cpu"), write=False)
        engine = build_engine(config, data, torch.device("cpu"), DistInfo(), None, None)
        runs.append({"name": name, "engine": engine, "paths": paths.fast_paths(), "ms": [], "step": 0})
        print(f"  {name}: {rest or '(the preset)'}; {paths.line()}")

    def run(c: dict, steps: int) -> float:
        layers.use_fast_paths(c["paths"])
        start = time.perf_counter()
        for _ in range(steps):
            train_step(c["engine"], c["step"])
            apply_update(c["engine"], skip=False)
            c["step"] += 1
        return (time.perf_counter() - start) / steps * 1e3

    for c in runs:
        run(c, 5)  # warm-up
    for _ in range(args.rounds):
        for c in runs:
            c["ms"].append(run(c, args.steps))
    print(f"\n{args.rounds} rounds of {args.steps} steps, interleaved\n")
    print("| contender | tokens/step | ms/step median (min-max) | us/token |")
    print("|---|---|---|---|")
    for c in runs:
        tokens, ms = c["engine"].tokens_per_step, c["ms"]
        med = statistics.median(ms)
        spread = f"{min(ms):.2f}-{max(ms):.2f}"
        print(f"| {c['name']} | {tokens:,} | {med:.2f} ({spread}) | {med / tokens * 1e3:.2f} |")

    if args.profile:
        for c in runs:
            profile(c, lambda c=c: run(c, args.steps), args.steps)


def profile(c: dict, steps, count: int) -> None:
    """The contender's ATen ops by self CPU time over `count` steps (the profiler adds its own cost)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        steps()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\n{c['name']} under the profiler: {total / 1e3 / count:.1f} ms of self CPU per step")
    print("| op | ms per step | share |")
    print("|---|---|---|")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:20]:
        own = e.self_cpu_time_total
        print(f"| {e.key} | {own / 1e3 / count:.2f} | {own / total:.1%} |")


if __name__ == "__main__":
    main()
