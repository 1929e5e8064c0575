"""The lever tables of BENCHMARKS.md "Time to quality": each row a fixed-step `lmforge train` run.

A row is a preset plus `KEY=VALUE` overrides, trained for a fixed number of steps with the time
budget off, so its full-validation loss does not depend on how busy the machine is: on one CPU with
one thread count it repeats to the last digit (the thread count changes the order of the sums, and
with it the loss, by up to ~0.01 -- which is why the presets keep a margin). Tokens/s and the
training seconds are the run's own and do move with the load; compare them only within one
invocation. Rows run one at a time, in the order listed.

    python bench/bench_levers.py --group speedrun [--rows muon,muon-lr] [--threads 1] [--data DIR]
    python bench/bench_levers.py --group speedrun-fp32 --threads 2   # the float32 preset's table

Prints the CPU, the load and a Markdown table; adds its rows to bench/.work/levers.json (a row run
again replaces its old figure), so the groups can be run in pieces and printed together with
--table-only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
OUT = WORK / "levers.json"

SPEEDRUN = "shakespeare-char-speedrun"
QUALITY = "shakespeare-char-quality"
QUALITY_STEPS = ["train.time_budget=0", "train.max_steps=1500"]


def muon(rate: float, adamw: float, *more: str) -> list[str]:
    """Muon at `rate` on the block matrices, AdamW at `adamw` on embeddings, head and vectors."""
    return ["optim.name=muon", f"optim.muon_lr={rate}", f"optim.lr={adamw}", *more]


# group -> (row name, what it changes, preset, overrides); every row spells out the optimizer and its
# rates, so that a row means the same after the preset changes.
GROUPS: dict[str, list[tuple[str, str, str, list[str]]]] = {
    "speedrun": [
        (
            "adamw",
            "AdamW 5e-3 on everything (the preset before Muon)",
            SPEEDRUN,
            ["optim.name=adamw", "optim.lr=5e-3"],
        ),
        ("muon-0.02", "Muon 0.02 (its usual rate), AdamW 5e-3", SPEEDRUN, muon(0.02, 5e-3)),
        ("muon-0.005", "Muon 0.005, AdamW 5e-3", SPEEDRUN, muon(0.005, 5e-3)),
        ("muon-0.01", "Muon 0.01, AdamW 5e-3", SPEEDRUN, muon(0.01, 5e-3)),
        ("muon-0.015", "Muon 0.015, AdamW 5e-3", SPEEDRUN, muon(0.015, 5e-3)),
        ("muon-0.01-a3e-3", "Muon 0.01, AdamW 3e-3", SPEEDRUN, muon(0.01, 3e-3)),
        ("muon-0.01-a8e-3", "Muon 0.01, AdamW 8e-3", SPEEDRUN, muon(0.01, 8e-3)),
        (
            "muon-0.01-a8e-3-450",
            "Muon 0.01, AdamW 8e-3, 450 steps",
            SPEEDRUN,
            muon(0.01, 8e-3, "train.max_steps=450"),
        ),
        (
            "muon-0.01-a5e-3-400",
            "Muon 0.01, AdamW 5e-3, 400 steps",
            SPEEDRUN,
            muon(0.01, 5e-3, "train.max_steps=400"),
        ),
        ("muon-0.015-a8e-3", "Muon 0.015, AdamW 8e-3", SPEEDRUN, muon(0.015, 8e-3)),
        (
            "muon-0.015-a8e-3-450",
            "Muon 0.015, AdamW 8e-3, 450 steps",
            SPEEDRUN,
            muon(0.015, 8e-3, "train.max_steps=450"),
        ),
        ("preset", "the preset as shipped", SPEEDRUN, []),
    ],
    # The float32 preset (420 steps) and what was tried around it to reach 1/10 of the recipe's time.
    "speedrun-fp32": [
        (f"fp32-{n}", f"{n} steps", SPEEDRUN, [f"train.max_steps={n}"]) for n in (450, 420, 400)
    ]
    + [
        (f"fp32-400-{name}", what, SPEEDRUN, ["train.max_steps=400", *more])
        for name, what, more in (
            ("muon-0.02", "400 steps, Muon 0.02", ["optim.muon_lr=0.02"]),
            ("muon-0.012", "400 steps, Muon 0.012", ["optim.muon_lr=0.012"]),
            ("adamw-0.01", "400 steps, AdamW part 1e-2", ["optim.lr=0.01"]),
            ("warmup-10", "400 steps, 10 warm-up steps", ["schedule.warmup_steps=10"]),
            ("warmdown-0.7", "400 steps, warm-down 70%", ["schedule.warmdown_frac=0.7"]),
            ("no-decay", "400 steps, no weight decay", ["optim.weight_decay=0"]),
        )
    ]
    + [
        ("fp32-b48-300", "batch 48, 300 steps", SPEEDRUN, ["train.batch_size=48", "train.max_steps=300"]),
        ("fp32-b24-500", "batch 24, 500 steps", SPEEDRUN, ["train.batch_size=24", "train.max_steps=500"]),
        ("fp32-1-head", "one head, 450 steps", SPEEDRUN, ["model.n_head=1", "train.max_steps=450"]),
        (
            "fp32-no-qk-norm",
            "no QK-norm, 450 steps",
            SPEEDRUN,
            ["model.qk_norm=false", "train.max_steps=450"],
        ),
        ("fp32-420-1-thread", "the preset on 1 thread", SPEEDRUN, ["train.threads=1"]),
        ("fp32-420-plain-aten", "the preset, fast paths off", SPEEDRUN, ["train.fast_paths=off"]),
        (
            "bf16-450",
            "bf16 autocast, 450 steps (the preset before)",
            SPEEDRUN,
            ["train.dtype=bfloat16", "train.max_steps=450"],
        ),
    ],
    # Bigger batches, fewer steps: a 1 x 64 step is overhead-bound, so a larger batch costs little more
    # time per step (the fp32-b48-300 row above ran at 96k tok/s against the preset's 75k).
    "speedrun-batch": [
        (
            f"b{b}-{n}{tag}",
            f"batch {b}, {n} steps{what}",
            SPEEDRUN,
            [f"train.batch_size={b}", f"train.max_steps={n}", *more],
        )
        for b, n, tag, what, more in (
            (48, 300, "", "", []),
            (48, 280, "", "", []),
            (48, 260, "", "", []),
            (64, 240, "", "", []),
            (64, 220, "", "", []),
            (64, 200, "", "", []),
            (48, 280, "-muon-0.02", ", Muon 0.02", ["optim.muon_lr=0.02"]),
            (64, 220, "-muon-0.02", ", Muon 0.02", ["optim.muon_lr=0.02"]),
            (64, 220, "-adamw-0.01", ", AdamW part 1e-2", ["optim.lr=0.01"]),
            (96, 160, "", "", []),
            (40, 350, "", "", []),
            (40, 330, "", "", []),
            (56, 260, "", "", []),
            (48, 300, "-muon-0.012", ", Muon 0.012", ["optim.muon_lr=0.012"]),
            (48, 300, "-warmup-10", ", 10 warm-up steps", ["schedule.warmup_steps=10"]),
            (48, 300, "-warmdown-0.6", ", warm-down 60%", ["schedule.warmdown_frac=0.6"]),
        )
    ]
    + [
        (
            f"b{b}-{n}-warmup-{w}",
            f"batch {b}, {n} steps, {w} warm-up steps",
            SPEEDRUN,
            [f"train.batch_size={b}", f"train.max_steps={n}", f"schedule.warmup_steps={w}"],
        )
        for b, n, w in (
            (48, 280, 10),
            (48, 260, 10),
            (64, 240, 10),
            (64, 220, 10),
            (56, 250, 10),
            (48, 280, 5),
        )
    ]
    + [
        (
            f"b48-{n}-warmup-10-1-thread",
            f"batch 48, {n} steps, 10 warm-up steps, 1 thread",
            SPEEDRUN,
            ["train.batch_size=48", f"train.max_steps={n}", "schedule.warmup_steps=10", "train.threads=1"],
        )
        for n in (280, 300)
    ]
    + [
        (
            f"b48-{n}-warmup-10-bf16",
            f"batch 48, {n} steps, 10 warm-up steps, bf16 autocast",
            SPEEDRUN,
            [
                "train.batch_size=48",
                f"train.max_steps={n}",
                "schedule.warmup_steps=10",
                "train.dtype=bfloat16",
            ],
        )
        for n in (260, 280)
    ],
    # The README's figure for the shakespeare-char preset (nanoGPT's recipe on the modern block); the
    # GPT-2-block recipe itself is bench_speedrun.py's nanogpt-recipe contender.
    "presets": [
        (
            "shakespeare-char",
            "the shakespeare-char preset: 4 x 128 modern block, 2,000 steps",
            "shakespeare-char",
            [],
        )
    ],
    "quality": [
        (
            "q-adamw",
            "AdamW 5e-3 on everything (the preset before Muon)",
            QUALITY,
            ["optim.name=adamw", "optim.lr=5e-3", *QUALITY_STEPS],
        ),
        ("q-muon-0.01", "Muon 0.01, AdamW 5e-3", QUALITY, muon(0.01, 5e-3, *QUALITY_STEPS)),
        ("q-muon-0.015", "Muon 0.015, AdamW 5e-3", QUALITY, muon(0.015, 5e-3, *QUALITY_STEPS)),
        ("q-muon-0.02", "Muon 0.02, AdamW 5e-3", QUALITY, muon(0.02, 5e-3, *QUALITY_STEPS)),
        ("q-preset", "the preset as shipped", QUALITY, QUALITY_STEPS),
    ],
}


def run_row(data: Path, preset: str, overrides: list[str], threads: int) -> dict:
    run_dir = WORK / "lever-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = ["train", "--data", str(data), "--out", str(run_dir), "--no-progress", "--json", "--config", preset]
    # --threads first, so that a row can pin its own thread count
    cmd += [f"train.threads={threads}", *overrides, "train.eval_tokens=1000000"]  # the whole split
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lmforge", *cmd], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"lmforge {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "loss": summary["val_loss"],
        "steps": summary["steps"],
        "tokens_per_second": summary["tokens_per_second"],
        "wall": wall,
        "load": os.getloadavg()[0],
    }


def table(rows: dict[str, dict]) -> list[str]:
    out = [
        "| row | lever | overrides | steps | full val loss | tok/s | wall s | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        overrides = " ".join(r["overrides"]) or "-"
        out.append(
            f"| {name} | {r['what']} | `{overrides}` | {r['steps']} | {r['loss']:.4f} | "
            f"{r['tokens_per_second']:,.0f} | {r['wall']:.1f} | {r['load']:.1f} |"
        )
    return out


def main() -> None:
    from lmforge.hardware import cpu_description

    ap = argparse.ArgumentParser()
    ap.add_argument("--group", choices=sorted(GROUPS), default="speedrun")
    ap.add_argument("--rows", default="", help="comma-separated row names (default: the whole group)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (the loss depends on it)")
    ap.add_argument("--data", default=str(WORK / "tsc"), help="Tiny Shakespeare characters, --split tail")
    ap.add_argument("--table-only", action="store_true", help="print the rows saved so far")
    args = ap.parse_args()
    saved = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if not args.table_only:
        want = set(filter(None, args.rows.split(",")))
        print(
            f"CPU: {cpu_description()}; {args.threads} thread(s); load {os.getloadavg()[0]:.2f}", flush=True
        )
        for name, what, preset, overrides in GROUPS[args.group]:
            if want and name not in want:
                continue
            r = run_row(Path(args.data), preset, overrides, args.threads)
            saved[name] = {
                "what": what,
                "preset": preset,
                "overrides": overrides,
                "threads": args.threads,
                **r,
            }
            print(
                f"{name}: {r['loss']:.4f} after {r['steps']} steps, {r['wall']:.1f} s, load {r['load']:.1f}",
                flush=True,
            )
            WORK.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(saved, indent=2))
    print("\n".join(["", *table(saved)]))


if __name__ == "__main__":
    main()
