"""Shared tools of the reliability tests (no tests here): tiny runs, subprocesses, comparisons.

Every reliability test uses the same tiny, deterministic recipe -- 2 layers, width 32, fp32, one
thread, a loss and a batch fingerprint logged at every step -- so any run can be compared with one
uninterrupted reference run, step by step (exact floats) and weight by weight (`torch.equal`).
The reference keeps all its checkpoints, so "a run that stopped at step k" is a copy of it with the
newer checkpoints deleted: most tests need no extra training to get one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import TINY
from lmforge import runs
from lmforge.cli import main

STEPS = 30  # optimizer steps of every run (the schedule's horizon)
BASE = [*TINY, "train.log_every=1", "train.threads=1", "train.ckpt_every=5", "train.eval_every=5"]

_cache: dict[str, Path] = {}


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--no-progress", *BASE,
            "--max-steps", str(STEPS), *extra]  # fmt: skip


def reference_run(char_data: Path, tmp_path_factory, *extra: str) -> Path:
    """An uninterrupted run (in-process), made once per session and set of extra overrides."""
    key = " ".join(extra)
    if key not in _cache:
        out = tmp_path_factory.mktemp("reference") / "run"
        assert main(train_args(char_data, out, "train.keep_last=100", *extra)) == 0
        _cache[key] = out
    return _cache[key]


def copy_until(run: Path, dest: Path, step: int) -> Path:
    """A copy of `run` as it was when killed right after checkpoint `step` (newer checkpoints gone)."""
    shutil.copytree(run, dest)
    for s, path in runs.list_checkpoints(dest):
        if s > step:
            shutil.rmtree(path)
    return dest


def cli(args: list[str], fault: str | None = None, env: dict | None = None, **kwargs):
    """`python -m lmforge ARGS` in a subprocess, one thread, with LMFORGE_FAULT=fault."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    full_env.pop("LMFORGE_FAULT", None)
    if fault:
        full_env["LMFORGE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args],
        env=full_env, capture_output=True, text=True, timeout=300, **kwargs,
    )  # fmt: skip


def cli_many(jobs: list[tuple[list[str], str]]) -> list[tuple[int, str, str]]:
    """Several `cli(args, fault)` at once (each one thread); [(returncode, stdout, stderr)]."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    for args, fault in jobs:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "lmforge", *args], env={**env, "LMFORGE_FAULT": fault},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        out.append((proc.returncode, stdout, stderr))
    return out


def losses(run: Path) -> list[tuple[int, float, int]]:
    """(step, train/loss, batch fingerprint) of every logged step, in log order."""
    return [(r["step"], r["train/loss"], r["batch_crc"]) for r in runs.read_metrics(run) if "train/loss" in r]


def last_logged_step(run: Path) -> int:
    return losses(run)[-1][0]


def weights(run: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    return load_file(str(run / "ckpt" / runs.ckpt_name(step) / "model.safetensors"))


def assert_same_run(run: Path, reference: Path, step: int = STEPS) -> None:
    """Bit-exact: the same loss and batches at every step (each step once) and the same weights."""
    got, want = losses(run), losses(reference)
    assert [s for s, _, _ in got] == list(range(1, STEPS + 1)), "a step is missing or repeated"
    assert got == want  # exact floats, exact batch fingerprints
    a, b = weights(run, step), weights(reference, step)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def meta(run: Path, step: int | None = None) -> dict:
    step = step if step is not None else runs.list_checkpoints(run)[0][0]
    return json.loads((run / "ckpt" / runs.ckpt_name(step) / "meta.json").read_text())


def fix_manifest(ckpt: Path) -> None:
    """Rewrite a checkpoint's manifest to match its files: only deeper checks can then object."""
    files = {p.name: runs.sha256_file(p) for p in sorted(ckpt.iterdir()) if p.name != "manifest.json"}
    (ckpt / "manifest.json").write_text(json.dumps({"files": files}))


def all_checkpoints_verify(run: Path) -> bool:
    ckpt = run / "ckpt"
    leftovers = [p.name for p in ckpt.iterdir() if p.name.startswith(".tmp-")]
    return not leftovers and all(runs.verify_checkpoint(p) is None for _, p in runs.list_checkpoints(run))
