"""`python -m lmforge` / the console script: main(), then a quick exit that loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import TINY


def _lmforge(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, env=env)


def test_output_and_files_are_complete_after_the_quick_exit(char_data, tmp_path):
    out = tmp_path / "run"
    done = _lmforge("train", "--data", str(char_data), "--out", str(out), "--no-progress", "--json", *TINY,
                    "--max-steps", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)  # a pipe, block-buffered: written only by the flush at exit
    assert answer["steps"] == 3
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3
    assert (out / "ckpt").is_dir() and json.loads((out / "run.json").read_text())


def test_exit_codes_survive_the_quick_exit(tmp_path):
    done = _lmforge("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and done.stderr.startswith("error: data folder")
    assert "Traceback" not in done.stderr


def test_a_reader_that_leaves_early_is_no_error(tiny_run):
    # `lmforge eval RUN --json | head -c 10`: the pipe closes before the answer is written
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "eval", str(tiny_run), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and b"Traceback" not in err
