"""Whole training processes, end to end: `lmforge train` with its default options vs a plain loop.

bench_train.py times the model's step alone; this times what a user gets. Every contender is a
separate process on Tiny Shakespeare characters at bench_train.py's shapes, run back to back and
interleaved round by round so machine noise hits them alike:

  lmforge <dtype> [attn]   `lmforge train --config gpt2-shakespeare` at the shape, every train option
                           at its default (data sampling, the guard, metrics.jsonl every 10 steps, the
                           progress bar, evaluation and checkpoints on their default schedule); the
                           row named "defaults" changes nothing but the shape; "compiled" adds
                           train.compile=true (its compile is in the warm-up intervals, not counted).
  plain <dtype> <attn>     bench/plain_loop.py: nanoGPT's train.py loop around the same GPT-2, at
                           every dtype x attention so the reference is at its best.

Steady state: each process's tokens/s per 10-step interval (lmforge's own metrics.jsonl `tok_per_s`,
which leaves evaluation out; the plain loop's timer), the first two intervals dropped as warm-up,
median over the rest; then median and min-max of that over the rounds.

    python bench/bench_e2e.py [--shapes small,large] [--rounds 2] [--only lmforge,plain]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_train import SHAPES  # noqa: E402
from lmforge.hardware import cpu_description  # noqa: E402

# ../shared/ beside the checkout (a git worktree sits one folder deeper, under wt/)
DATA_FILE = next(
    (p / "shared" / "data" / "tinyshakespeare.txt" for p in (ROOT.parent, ROOT.parents[1])
     if (p / "shared" / "data" / "tinyshakespeare.txt").is_file()),
    ROOT.parent / "shared" / "data" / "tinyshakespeare.txt",
)  # fmt: skip
WORK = ROOT / "bench" / ".work"
STEPS = {"small": 300, "large": 40}  # long enough for ~25 steady intervals / a few at the large shape
WARMUP_INTERVALS = 2

# name -> (kind, dtype, attention, lmforge overrides); lmforge's defaults: float32, attention and
# kernels chosen by the fast-path probe, freed memory reused (train.allocator=reuse)
CONTENDERS = {
    "lmforge defaults": ("lmforge", "fp32", None, []),
    "lmforge system malloc": ("lmforge", "fp32", None, ["train.allocator=system"]),
    "lmforge bf16": ("lmforge", "bf16", None, []),
    "lmforge bf16 math": ("lmforge", "bf16", "math", []),
    "lmforge compiled": ("lmforge", "fp32", None, ["train.compile=true"]),  # the defaults + torch.compile
    "plain fp32 sdpa": ("plain", "fp32", "sdpa", []),
    "plain fp32 math": ("plain", "fp32", "math", []),
    "plain bf16 sdpa": ("plain", "bf16", "sdpa", []),
    "plain bf16 math": ("plain", "bf16", "math", []),
}


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def prepare_data() -> Path:
    data = WORK / "tsc"
    if not (data / "shards" / "manifest.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "lmforge", "data", "prepare", "--source", str(DATA_FILE), "--out",
             str(data), "--tokenizer", "char", "--split", "tail", "--doc-split", "file", "--json"],
            check=True, capture_output=True, env=env(),
        )  # fmt: skip
    return data


def steady(rates: list[float]) -> float:
    kept = rates[WARMUP_INTERVALS:] or rates
    return statistics.median(kept)


def run_lmforge(
    data: Path, shape: str, dtype: str, attn: str | None, steps: int, threads: int, extra: list[str]
) -> float:
    s = SHAPES[shape]
    run_dir = WORK / f"e2e-{shape}"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"model.n_layer={s['n_layer']}",
        f"model.n_head={s['n_head']}",
        f"model.n_embd={s['n_embd']}",
        f"model.seq_len={s['seq_len']}",
        f"train.batch_size={s['batch']}",
        f"train.max_steps={steps}",
    ]
    if dtype == "bf16":
        overrides.append("train.dtype=bfloat16")
    if attn:
        overrides.append(f"model.attn_impl={attn}")
    if threads:
        overrides.append(f"train.threads={threads}")
    cmd = [sys.executable, "-m", "lmforge", "train", "--data", str(data), "--out", str(run_dir),
           "--config", "gpt2-shakespeare", *overrides, *extra]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rates = [r["tok_per_s"] for r in map(json.loads, lines) if "tok_per_s" in r]
    shutil.rmtree(run_dir)
    return steady(rates)


def run_plain(data: Path, shape: str, dtype: str, attn: str, steps: int, threads: int) -> float:
    cmd = [sys.executable, str(ROOT / "bench" / "plain_loop.py"), "--data", str(data), "--shape", shape,
           "--dtype", dtype, "--attn", attn, "--steps", str(steps), "--threads", str(threads)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env()).stdout
    return steady(json.loads(out.strip().splitlines()[-1])["rates"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="small,large")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated name prefixes of contenders to run")
    ap.add_argument("--steps", default="", help="steps per process, e.g. small=300,large=40")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads for every contender; 0 = lmforge's default"
    )
    ap.add_argument("--lmforge-extra", default="", help="space-separated key=value for every lmforge run")
    ap.add_argument("--json", default=str(WORK / "e2e.json"), help="results file")
    args = ap.parse_args()
    steps = {**STEPS, **{k: int(v) for k, v in (p.split("=") for p in filter(None, args.steps.split(",")))}}
    only = tuple(filter(None, args.only.split(",")))
    contenders = {n: c for n, c in CONTENDERS.items() if not only or n.startswith(only)}
    extra = args.lmforge_extra.split()
    WORK.mkdir(parents=True, exist_ok=True)
    data = prepare_data()
    threads = args.threads or "default"
    print(f"machine: {cpu_description()}; threads {threads}; load {os.getloadavg()[0]:.2f}", flush=True)
    results: dict = {"cpu": cpu_description()}  # bench/targets.py reads only results of this CPU
    for shape in args.shapes.split(","):
        rates: dict[str, list[float]] = {n: [] for n in contenders}
        for _ in range(args.rounds):
            for name, (kind, dtype, attn, overrides) in contenders.items():
                if kind == "lmforge":
                    extra_args = extra + overrides
                    rate = run_lmforge(data, shape, dtype, attn, steps[shape], args.threads, extra_args)
                else:
                    rate = run_plain(data, shape, dtype, attn, steps[shape], args.threads)
                rates[name].append(rate)
                print(f"  {shape} {name}: {rate:,.0f} tok/s (load {os.getloadavg()[0]:.2f})", flush=True)
        print(f"\nshape {shape}: {SHAPES[shape]}, {steps[shape]} steps per process, {args.rounds} rounds")
        print(f"{'contender':<22}{'tok/s median':>14}{'spread':>20}")
        for name, values in rates.items():
            med = statistics.median(values)
            results[f"{shape}/{name}"] = {"median": med, "min": min(values), "max": max(values)}
            print(f"{name:<22}{med:>14,.0f}{f'{min(values):,.0f}-{max(values):,.0f}':>20}")
        medians = {n: statistics.median(v) for n, v in rates.items()}
        plain = max((v for n, v in medians.items() if n.startswith("plain")), default=0.0)
        if plain and "lmforge defaults" in medians:
            best_lm = max(v for n, v in medians.items() if n.startswith("lmforge"))
            ratio_default = medians["lmforge defaults"] / plain
            print(
                f"lmforge defaults / best plain loop = {ratio_default:.2f}x; best lmforge setting / "
                f"best plain loop = {best_lm / plain:.2f}x (target 1.3x with the defaults)"
            )
            results[f"{shape}/ratio_defaults"] = ratio_default
            results[f"{shape}/ratio_best"] = best_lm / plain
    print(f"load after: {os.getloadavg()[0]:.2f}")
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
