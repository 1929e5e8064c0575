"""What the console script's quick exit saves: `lmforge.cli.entry` against a plain `sys.exit(main())`.

After a verb returns, a plain interpreter exit tears torch's modules and C++ state down; `entry`
runs the atexit handlers, flushes stdout/stderr and ends the process there (src/lmforge/cli). Both
run the same verb -- `lmforge eval RUN --json` on a small trained run, a whole process with torch
loaded -- alternating round by round; wall seconds from start to exit, median (min-max).

    python bench/bench_exit.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_allocator import WORKLOADS, prepare  # noqa: E402
from bench_speedrun import run_lmforge  # noqa: E402
from lmforge.hardware import cpu_description  # noqa: E402

WAYS = {
    "entry (quick exit)": "from lmforge.cli import entry; entry()",
    "sys.exit(main())": "import sys; from lmforge.cli import main; sys.exit(main())",
}


def timed(code: str, args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    folder, prepare_args, preset, _ = WORKLOADS["speedrun"]
    data = prepare(folder, prepare_args)
    run_dir = ROOT / "bench" / ".work" / "exit-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_lmforge(["train", "--data", str(data), "--out", str(run_dir), "--config", preset, "--no-progress",
                 "train.max_steps=5"])  # fmt: skip
    verb = ["eval", str(run_dir), "--json"]
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for way, code in WAYS.items():
            times[way].append(timed(code, verb))
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"machine: {cpu_description()}; load {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"`lmforge {' '.join(verb[:1])} RUN --json`, {args.rounds} rounds\n")
    print("| exit | wall s, median (min-max) |")
    print("|---|---|")
    for way, t in times.items():
        print(f"| {way} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) |")
    saved = statistics.median(times["sys.exit(main())"]) - statistics.median(times["entry (quick exit)"])
    print(f"\nthe quick exit saves {saved:.2f} s per command")


if __name__ == "__main__":
    main()
