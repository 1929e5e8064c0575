"""Count the fault and misuse suites' cases, so the README's reliability tables quote numbers that
come from the tests, not from memory.

Each suite is one test file; a case is one collected test (each parameter of a table-driven test is
one). `--run` also runs them and counts the cases that held (passed); without it only collects.

    python docs/fault_counts.py [--run]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITES = {  # test file -> what its cases do to lmforge
    "tests/train/test_reliability_resume.py": "kill -9 / SIGTERM / SIGINT mid-run, then resume",
    "tests/train/test_reliability_checkpoints.py": "damaged, partial and leftover checkpoints",
    "tests/train/test_reliability_guard.py": "NaN and loss-spike steps",
    "tests/train/test_reliability_safety.py": "planted pickles, hostile safetensors, corrupt shards",
    "tests/train/test_resume_exactness.py": "resume under changed threads / dtype / settings",
    "tests/train/test_time_budget.py": "time budget under an injected slowdown",
    "tests/train/test_faults_locks.py": "concurrent writers, wrong folder kinds, readers racing pruning",
    "tests/train/test_faults_files.py": "full disk, damaged run files and logs, leftover temporaries",
    "tests/train/test_faults_stop.py": "one SIGTERM on a step that cannot finish",
    "tests/test_config_values.py": "hostile values for every numeric setting, models too big for memory",
    "tests/tune/test_sweep_faults.py": "sweep killed mid-trial, damaged study journals",
    "tests/data/test_data_bad_input.py": "bad input to data prepare",
    "tests/data/test_data_misuse.py": "data prepare under misuse (wrong --out, killed prepare)",
    "tests/data/test_data_record_memory.py": "huge JSONL / CSV records",
    "tests/finetune/test_finetune_out_misuse.py": "finetune into the wrong --out",
    "tests/finetune/test_finetune_leftovers.py": "temporaries left by a killed finetune / export",
}


def _pytest(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def collected() -> Counter:
    """Test file -> number of collected cases."""
    out = _pytest("--collect-only", "-q", *SUITES).stdout
    return Counter(line.split("::")[0] for line in out.splitlines() if "::" in line)


def held() -> Counter:
    """Test file -> number of cases that passed when run now."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        _pytest("-q", f"--junitxml={report}", *SUITES)
        by_module = {Path(path).stem: path for path in SUITES}  # test basenames are unique in tests/
        passed: Counter = Counter()
        for case in ET.parse(report).iter("testcase"):
            module = next((part for part in case.get("classname", "").split(".") if part in by_module), "")
            outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            if outcome == "passed":
                passed[by_module.get(module, module)] += 1
            else:
                print(f"{outcome}: {case.get('classname')}::{case.get('name')}", file=sys.stderr)
        return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="also run the suites and count what held")
    args = parser.parse_args()
    tried = collected()
    passed = held() if args.run else None
    print("| suite | cases tried |" + (" held |" if passed is not None else ""))
    print("|---|---|" + ("---|" if passed is not None else ""))
    for path, what in SUITES.items():
        row = f"| {what} (`{path}`) | {tried[path]} |"
        print(row + (f" {passed[path]} |" if passed is not None else ""))
    total = f"| all | {sum(tried.values())} |"
    print(total + (f" {sum(passed.values())} |" if passed is not None else ""))


if __name__ == "__main__":
    main()
