"""Time to quality on Tiny Shakespeare characters, and the demo's peak memory (issue 4, targets 1 and 5).

Every contender is a real `lmforge train` process timed from its start (imports, data checks and
the final evaluation on the *whole* validation split included) to its exit, run back to back in this
one invocation:

  nanogpt-recipe  nanoGPT's CPU recipe reproduced in lmforge: GPT-2 block, 4 x 4 x 128, context 64,
                  batch 12, AdamW 1e-3 (beta2 0.99), 100 warm-up steps, cosine to 1e-4, 2,000 steps,
                  evaluating 15,360 tokens every 250 steps as nanoGPT does
  speedrun        the shakespeare-char-speedrun preset
  quality         the shakespeare-char-quality preset (what fits in nanoGPT's 98 s)
  demo-memory     the demo preset on the built-in corpus for 30 s: peak resident memory

    python bench/bench_speedrun.py [--rounds 3] [--skip nanogpt-recipe,quality]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_FILE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
WORK = ROOT / "bench" / ".work"
TARGET = 1.886  # nanoGPT's final validation loss with this recipe (issue 4)

CONTENDERS = {
    "nanogpt-recipe": [
        "--config",
        "shakespeare-char",
        "model.style=gpt2",
        "model.mlp=gelu",
        "model.qk_norm=false",
        "model.bias=true",
        "train.eval_every=250",
        "train.eval_tokens=15360",
        "train.ckpt_every=100000",
    ],
    "speedrun": ["--config", "shakespeare-char-speedrun"],
    "quality": ["--config", "shakespeare-char-quality"],
}


def lmforge(args: list[str]) -> tuple[float, int, str]:
    """Run `python -m lmforge ARGS`; (wall seconds, peak RSS in MB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"lmforge {' '.join(args)} failed with exit {proc.returncode}")
    return wall, usage.ru_maxrss // 1024, out


def full_val_loss(run_dir: Path) -> float:
    _, _, out = lmforge(["eval", str(run_dir), "--json"])
    return json.loads(out)["val_loss"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated contenders to leave out")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / "tsc"
    if not (data / "shards" / "manifest.json").is_file():
        lmforge(
            [
                "data",
                "prepare",
                "--source",
                str(DATA_FILE),
                "--out",
                str(data),
                "--tokenizer",
                "char",
                "--split",
                "tail",
                "--doc-split",
                "file",  # nanoGPT's recipe: the whole file, no document breaks in the token stream
                "--json",
            ]
        )
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, dict] = {}
    for name, extra in CONTENDERS.items():
        if name in skip:
            continue
        rounds = 1 if name != "speedrun" else args.rounds
        walls, losses, rss = [], [], []
        for i in range(rounds):
            run_dir = WORK / f"{name}-{i}"
            wall, peak, out = lmforge(
                ["train", "--data", str(data), "--out", str(run_dir), "--no-progress", "--json", *extra]
            )
            summary = json.loads(out.strip().splitlines()[-1])
            loss = full_val_loss(run_dir)
            walls.append(wall)
            losses.append(loss)
            rss.append(peak)
            print(
                f"{name} round {i + 1}: {wall:.1f} s wall, {summary['steps']} steps, "
                f"{summary['tokens_per_second']:,.0f} tok/s, full val loss {loss:.4f}, peak RSS {peak} MB",
                flush=True,
            )
            shutil.rmtree(run_dir)
        results[name] = {
            "wall_median": statistics.median(walls),
            "wall_min": min(walls),
            "wall_max": max(walls),
            "loss_median": statistics.median(losses),
            "loss_min": min(losses),
            "loss_max": max(losses),
            "peak_rss_mb": max(rss),
            "rounds": rounds,
        }
    if "demo-memory" not in skip:
        shk = WORK / "shk"
        if not (shk / "shards" / "manifest.json").is_file():
            lmforge(["data", "prepare", "--source", "shakespeare", "--out", str(shk), "--json"])
        run_dir = WORK / "demo-memory"
        wall, peak, _ = lmforge(
            [
                "train",
                "--data",
                str(shk),
                "--out",
                str(run_dir),
                "--config",
                "demo",
                "--time-budget",
                "30",
                "--no-progress",
                "--json",
            ]
        )
        shutil.rmtree(run_dir)
        results["demo-memory"] = {"peak_rss_mb": peak, "wall": wall}
        print(f"demo preset, 30 s of training: peak RSS {peak} MB", flush=True)

    print("\n| contender | wall s (median, min-max) | full val loss (median, min-max) | peak RSS MB |")
    print("|---|---|---|---|")
    for name, r in results.items():
        if "wall_median" in r:
            print(
                f"| {name} | {r['wall_median']:.1f} ({r['wall_min']:.1f}-{r['wall_max']:.1f}) | "
                f"{r['loss_median']:.4f} ({r['loss_min']:.4f}-{r['loss_max']:.4f}) | {r['peak_rss_mb']} |"
            )
    if "speedrun" in results and "nanogpt-recipe" in results:
        ratio = results["nanogpt-recipe"]["wall_median"] / results["speedrun"]["wall_median"]
        print(
            f"\nspeedrun reaches {results['speedrun']['loss_median']:.4f} (target <= {TARGET}) "
            f"{ratio:.1f}x faster than the nanoGPT recipe run here"
        )
    (WORK / "speedrun.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
