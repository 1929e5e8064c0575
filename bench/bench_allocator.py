"""What reusing freed memory (`train.allocator=reuse`, the default) buys over glibc's defaults.

glibc's malloc serves each large block with its own mmap() and hands it back to the kernel on free,
so a training step that allocates the same big tensors every time faults every page of them in again,
every step (src/lmforge/hardware.py, `reuse_freed_memory`). Each contender is a whole `lmforge train`
process; the two settings alternate round by round so that machine noise hits both alike:

  demo      the demo preset on the built-in corpus (BPE: its logits are the largest tensors)
  speedrun  the shakespeare-char-speedrun preset (65 characters: small tensors throughout)

Reported per setting: the run's own training tokens/s (median and min-max over the rounds), the
process's minor page faults, its system CPU seconds and its peak resident memory.

    python bench/bench_allocator.py [--rounds 3] [--workloads demo,speedrun] [--steps demo=40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "bench"))

from bench_speedrun import run_lmforge  # noqa: E402
from lmforge.hardware import cpu_description  # noqa: E402

WORK = ROOT / "bench" / ".work"
TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SETTINGS = ("reuse", "system")
WORKLOADS = {  # name -> (data folder, prepare arguments, preset, default steps)
    "demo": ("shk", ["--source", "shakespeare"], "demo", 40),
    "speedrun": (
        "tsc",
        ["--source", str(TEXT), "--tokenizer", "char", "--split", "tail", "--doc-split", "file"],
        "shakespeare-char-speedrun",
        450,
    ),
}


def prepare(folder: str, prepare_args: list[str]) -> Path:
    data = WORK / folder
    if not (data / "shards" / "manifest.json").is_file():
        run_lmforge(["data", "prepare", *prepare_args, "--out", str(data), "--json"])
    return data


def one_run(data: Path, preset: str, steps: int, setting: str) -> dict:
    run_dir = WORK / "allocator-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    _, out, usage = run_lmforge(
        ["train", "--data", str(data), "--out", str(run_dir), "--config", preset, "--no-progress", "--json",
         f"train.max_steps={steps}", "train.eval_every=100000", "train.ckpt_every=100000",
         f"train.allocator={setting}"]
    )  # fmt: skip
    shutil.rmtree(run_dir, ignore_errors=True)
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "tok_s": result["tokens_per_second"],
        "faults": usage.ru_minflt,
        "sys_s": usage.ru_stime,
        "rss_mb": usage.ru_maxrss // 1024,
    }


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workloads", default="demo,speedrun")
    ap.add_argument("--steps", default="", help="steps per process, e.g. demo=40,speedrun=450")
    args = ap.parse_args()
    steps = {k: int(v) for k, v in (p.split("=") for p in filter(None, args.steps.split(",")))}
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_description()}; load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name in args.workloads.split(","):
        folder, prepare_args, preset, default_steps = WORKLOADS[name]
        data = prepare(folder, prepare_args)
        n = steps.get(name, default_steps)
        results: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for _ in range(args.rounds):
            for setting in SETTINGS:
                r = one_run(data, preset, n, setting)
                results[setting].append(r)
                print(f"  {name} {setting}: {r} (load {os.getloadavg()[0]:.2f})", flush=True)
        for setting in SETTINGS:
            rs = results[setting]
            rows.append(
                f"| {name} ({n} steps) | {setting} | {spread([r['tok_s'] for r in rs], ',.0f')} | "
                f"{spread([r['faults'] for r in rs], ',.0f')} | {spread([r['sys_s'] for r in rs], '.1f')} | "
                f"{max(r['rss_mb'] for r in rs)} |"
            )
        ratio = statistics.median(r["tok_s"] for r in results["reuse"]) / statistics.median(
            r["tok_s"] for r in results["system"]
        )
        print(f"{name}: reuse / system tokens/s = {ratio:.2f}x", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}\n")
    print(
        "| workload | train.allocator | train tok/s, median (min-max) | minor page faults | system CPU s "
        "| peak RSS MB |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
