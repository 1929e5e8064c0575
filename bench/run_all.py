"""`make bench`: every benchmark, one after another (never in parallel on a small machine).

Each script prints its own table and writes its JSON under bench/.work/; BENCHMARKS.md quotes them.
Last, bench/targets.py prints every target of issue 15 with the figure measured here.
Pass --quick for one round each (a smoke run, not figures to publish).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    quick = "--quick" in sys.argv
    rounds = ["--rounds", "1"] if quick else []
    scripts = [
        ["bench_data.py", *(["--reps", "1", "--encode-reps", "1", "--no-write"] if quick else [])],
        ["bench_fastpaths.py", *(rounds if quick else ["--write"])],
        ["bench_train.py", *rounds],
        ["bench_e2e.py", *rounds],
        ["bench_loop_overhead.py"],
        ["bench_allocator.py", *rounds],
        ["bench_exit.py", *rounds],
        ["bench_muon.py", "--threads", "2", "--blocks", "3"],
        ["profile_step.py"],
        ["bench_precision.py", *(["--repeats", "1"] if quick else [])],
        [
            "step_time.py",
            "shakespeare-char-speedrun",
            "b32=train.batch_size=32 train.dtype=float32",
            "b48=train.batch_size=48 train.dtype=float32",
            "b48-bf16=train.batch_size=48 train.dtype=bfloat16",
            *(["--rounds", "2"] if quick else []),
        ],
        ["bench_generate.py", "--shapes", "demo,large", *(rounds if quick else ["--write"])],
        ["bench_speedrun.py", *rounds],
    ]
    for script, *args in scripts:
        print(f"\n===== {script} {' '.join(args)} =====", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script), *args])
        if code:
            sys.exit(f"{script} failed with exit {code}")
    print("\n===== targets.py =====", flush=True)
    sys.exit(subprocess.call([sys.executable, str(HERE / "targets.py")]))


if __name__ == "__main__":
    main()
