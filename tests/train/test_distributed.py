"""Training on 2 CPU processes (torchrun + gloo): same losses as one process, resume across counts.

The global batch of a step is the same rows whatever the process count (see data/batches.py), so a
2-process DDP run and a 1-process run accumulating 2 micro-steps must agree up to float summation
order, and a checkpoint made by one resumes on the other.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY
from lmforge import runs

pytestmark = pytest.mark.slow

# Global batch: 2 micro-batches of 4 sequences x 32 tokens, whatever the process count.
COMMON = [
    *TINY,
    "schedule.name=constant",
    "train.batch_tokens=256",
    "train.log_every=1",
    "train.eval_every=100",
    "train.ckpt_every=3",
    "train.keep_last=5",
]


def lmforge(args: list[str], nproc: int = 1, env_extra: dict | None = None, timeout: float = 240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "lmforge", *args, "--no-progress"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in runs.read_metrics(run_dir) if "train/loss" in r}


def train_args(data, out, steps):
    return ["train", "--data", str(data), "--out", str(out), "--max-steps", str(steps), *COMMON]


@pytest.fixture(scope="module")
def single_run(char_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "single"
    result = lmforge(train_args(char_data, out, 12))
    assert result.returncode == 0, result.stderr
    return out


def test_ddp_matches_single_process(char_data, single_run, tmp_path):
    out = tmp_path / "ddp"
    result = lmforge(train_args(char_data, out, 12), nproc=2)
    assert result.returncode == 0, result.stderr + result.stdout
    a, b = losses(single_run), losses(out)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), step
    wa = runs.load_run(single_run).model.state_dict()
    wb = runs.load_run(out).model.state_dict()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-4)


def test_resume_two_to_one_and_one_to_two(char_data, single_run, tmp_path):
    two_then_one = tmp_path / "2to1"
    assert lmforge(train_args(char_data, two_then_one, 6), nproc=2).returncode == 0
    result = lmforge([*train_args(char_data, two_then_one, 12), "--resume"])
    assert result.returncode == 0, result.stderr
    one_then_two = tmp_path / "1to2"
    assert lmforge(train_args(char_data, one_then_two, 6)).returncode == 0
    result = lmforge([*train_args(char_data, one_then_two, 12), "--resume"], nproc=2)
    assert result.returncode == 0, result.stderr + result.stdout
    reference = losses(single_run)
    for run_dir in (two_then_one, one_then_two):
        got = losses(run_dir)
        for step in range(1, 13):
            assert got[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-5), (run_dir.name, step)


def test_one_rank_crashing_ends_the_run_with_a_message(char_data, tmp_path):
    out = tmp_path / "crash"
    result = lmforge(
        train_args(char_data, out, 12), nproc=2, env_extra={"LMFORGE_FAULT": "step:3@1"}, timeout=120
    )
    assert result.returncode != 0
    assert "error:" in result.stderr and "rank" in result.stderr


def test_nproc_larger_than_the_machine(char_data, tmp_path, capsys):
    from lmforge.cli import main

    assert main([*train_args(char_data, tmp_path / "x", 2), "--nproc", "999"]) == 2
    assert "--nproc 999" in capsys.readouterr().err


def test_fsdp2_matches_ddp_and_resumes_on_one_process(char_data, single_run, tmp_path):
    # FSDP2 shards parameters and optimizer state over the 2 ranks; the losses are DDP's (and so the
    # single process's), and its gathered checkpoint resumes on a single process.
    out = tmp_path / "fsdp"
    result = lmforge([*train_args(char_data, out, 6), "train.parallel=fsdp"], nproc=2)
    assert result.returncode == 0, result.stderr + result.stdout
    result = lmforge([*train_args(char_data, out, 9), "--resume"])
    assert result.returncode == 0, result.stderr
    # ... and on FSDP again (the gathered state is sharded back onto the ranks)
    result = lmforge([*train_args(char_data, out, 12), "train.parallel=fsdp", "--resume"], nproc=2)
    assert result.returncode == 0, result.stderr + result.stdout
    reference, got = losses(single_run), losses(out)
    for step in range(1, 13):
        assert got[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-5), step
