"""Bad numbers never reach a checkpoint: NaN / Inf / spike steps are skipped and counted, repeated ones
roll back to the last good checkpoint at half the learning rate (resumable bit-exactly), or stop the
run with a clear message; a clean run never trips the guard."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from test_reliability_support import (
    STEPS,
    all_checkpoints_verify,
    assert_same_run,
    copy_until,
    losses,
    meta,
    reference_run,
    train_args,
)

from lmforge import runs
from lmforge.cli import main
from lmforge.cli import train as cli_train
from lmforge.train.faults import Faults
from lmforge.train.guard import MAX_ROLLBACKS, ROLLBACK_AFTER, SPIKE_WINDOW, bad_step


def test_bad_step_rules():
    calm = [2.0] * SPIKE_WINDOW
    assert bad_step(2.1, 1.0, calm) is None
    assert bad_step(math.nan, 1.0, calm) == "non-finite loss"
    assert bad_step(math.inf, 1.0, calm) == "non-finite loss"
    assert bad_step(2.0, math.nan, calm) == "non-finite gradient norm"
    assert bad_step(2.0, -math.inf, calm) == "non-finite gradient norm"
    assert bad_step(10.0, 1.0, calm) is None  # 4 x 2 + 2 = 10 is the edge, not yet a spike
    assert bad_step(10.01, 1.0, calm) == "loss spike"
    assert bad_step(100.0, 1.0, calm[:-1]) is None  # too little history to judge a spike


def test_clean_run_never_trips_the_guard(char_data, tmp_path_factory):
    reference = reference_run(char_data, tmp_path_factory)
    info = meta(reference)
    assert info["skipped_steps"] == 0 and info["rollbacks"] == 0 and info["lr_scale"] == 1.0
    assert not any("event" in r for r in runs.read_metrics(reference))
    assert all(math.isfinite(loss) for _, loss, _ in losses(reference))


def test_nan_and_spike_steps_are_skipped_and_counted(char_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMFORGE_FAULT", "nan:12,spike:25")
    out = tmp_path / "run"
    args = train_args(char_data, out, "train.ckpt_every=1", "train.keep_last=100", "--json")
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["skipped_steps"] == 2 and summary["rollbacks"] == 0
    assert meta(out)["skipped_steps"] == 2
    assert "step 12: skipped update, non-finite loss" in captured.err
    assert "step 25: skipped update, loss spike" in captured.err
    # the skipped steps changed neither the weights nor the optimizer state
    for step in (12, 25):
        for name in ("model.safetensors", "optim.safetensors"):
            before = load_file(str(out / "ckpt" / runs.ckpt_name(step) / name))
            after = load_file(str(out / "ckpt" / runs.ckpt_name(step + 1) / name))
            assert all(torch.equal(before[k], after[k]) for k in before), (step, name)
    assert math.isnan(dict((s, v) for s, v, _ in losses(out))[13])


def _poison(steps, once=True):
    """Faults that make the loss NaN at `steps` (each once, or on every visit)."""
    pending = set(steps)

    class Poison(Faults):
        def loss_factor(self, step):
            if step in pending:
                if once:
                    pending.discard(step)
                return math.nan
            return 1.0

    return Poison()


@pytest.fixture
def rolled_back(char_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_train, "faults_from_env", lambda: _poison({12, 13, 14}))
    out = tmp_path / "run"
    assert main(train_args(char_data, out, "train.keep_last=100", "--json")) == 0
    captured = capsys.readouterr()
    monkeypatch.setattr(cli_train, "faults_from_env", lambda: Faults())
    return out, json.loads(captured.out), captured.err


def test_repeated_bad_steps_roll_back_and_halve_the_lr(rolled_back, char_data, tmp_path_factory):
    out, summary, said = rolled_back
    reference = reference_run(char_data, tmp_path_factory)
    assert summary["skipped_steps"] == ROLLBACK_AFTER and summary["rollbacks"] == 1
    assert f"{ROLLBACK_AFTER} bad steps in a row: rolled back to step_000010, learning rate x0.5" in said
    info = meta(out)
    assert info["lr_scale"] == 0.5 and info["rollbacks"] == 1 and info["skipped_steps"] == ROLLBACK_AFTER
    events = [r for r in runs.read_metrics(out) if "event" in r]
    assert events == [{"step": 10, "event": "rollback", "lr_scale": 0.5, "skipped": 3}]
    steps = [s for s, _, _ in losses(out)]
    assert steps == list(range(1, STEPS + 1))  # the bad stretch was redone, each step logged once
    # the same run as the reference up to the checkpoint it came back to, then at half the lr
    lr, ref_lr = ({r["step"]: r["lr_factor"] for r in runs.read_metrics(run) if "lr_factor" in r}
                  for run in (out, reference))  # fmt: skip
    assert losses(out)[:10] == losses(reference)[:10]
    assert all(lr[s] == ref_lr[s] for s in range(1, 11))
    assert all(lr[s] == 0.5 * ref_lr[s] for s in range(11, STEPS + 1))
    assert all_checkpoints_verify(out)


def test_a_run_resumed_after_a_rollback_is_still_bit_exact(rolled_back, char_data, tmp_path):
    out, _, _ = rolled_back
    resumed = copy_until(out, tmp_path / "resumed", 20)  # lr_scale 0.5 comes from step_20's meta
    assert main(train_args(char_data, resumed, "--resume")) == 0
    assert_same_run(resumed, out)


def test_rollbacks_exhausted_stop_with_a_clear_message(char_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_train, "faults_from_env", lambda: _poison(range(12, STEPS), once=False))
    out = tmp_path / "run"
    assert main(train_args(char_data, out, "train.keep_last=100")) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: training diverged") and "lower optim.lr" in err and "\n" not in err
    assert captured.out.count("rolled back to step_000010") == MAX_ROLLBACKS
    # nothing non-finite was ever saved
    assert all_checkpoints_verify(out)
    for _, path in runs.list_checkpoints(out):
        assert all(torch.isfinite(t).all() for t in load_file(str(path / "model.safetensors")).values())
