"""Temporary folders a killed `finetune` / `export` left beside --out (kill -9 runs no cleanup) are
removed at the next start of the verb on the same --out -- only those whose process is gone, never
one a live process is still writing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import write_conversations
from lmforge.cli import main


@pytest.fixture
def pids():
    """(a PID that has ended, a PID that is alive for the test's length)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield ended.pid, alive.pid
    alive.kill()
    alive.wait()


def _leftovers(out, pids) -> tuple:
    ended, alive = pids
    dead = out.parent / f".{out.name}.tmp-{ended}-abcd1234"
    live = out.parent / f".{out.name}.tmp-{alive}-efgh5678"
    for folder in (dead, live):
        (folder / "init").mkdir(parents=True)
        (folder / "init" / "model.safetensors").write_bytes(b"\0" * 1000)
    return dead, live


def test_finetune_removes_a_killed_runs_scratch_folder(tiny_run, tmp_path, pids):
    train = write_conversations(tmp_path / "chat.jsonl")
    out = tmp_path / "sft"
    dead, live = _leftovers(out, pids)
    args = ["finetune", str(tiny_run), "--task", "sft", "--train", str(train), "--out", str(out),
            "--no-progress", "--max-steps", "2"]  # fmt: skip
    assert main(args) == 0
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [live.name]


def test_export_removes_a_killed_exports_temporary_folder(tiny_run, tmp_path, pids):
    pytest.importorskip("transformers")
    out = tmp_path / "hf"
    dead, live = _leftovers(out, pids)
    assert main(["export", str(tiny_run), "--out", str(out), "--no-verify"]) == 0
    assert not dead.exists() and live.exists()
