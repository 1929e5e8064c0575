"""The time budget holds when the machine's speed changes mid-run: the schedule follows the clock, so
the warm-down still happens and the run ends near the budget (a slowdown is injected through the
loop's fault seam, train/faults.py)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import TINY
from lmforge import runs
from lmforge.cli import main
from lmforge.cli import train as cli_train
from lmforge.config import ScheduleConfig
from lmforge.train.budget import TimeBudget
from lmforge.train.faults import Faults
from lmforge.train.schedule import lr_factor_by_time


def test_lr_by_time_warms_up_by_steps_and_decays_by_the_clock():
    wsd = ScheduleConfig(name="wsd", warmup_steps=4, warmdown_frac=0.2, min_lr_frac=0.1)
    assert lr_factor_by_time(0, 0.0, wsd) == 0.25 and lr_factor_by_time(3, 0.1, wsd) == 1.0
    assert lr_factor_by_time(100, 0.8, wsd) == 1.0
    assert lr_factor_by_time(100, 0.9, wsd) == pytest.approx(0.55)
    assert lr_factor_by_time(100, 1.0, wsd) == pytest.approx(0.1) == lr_factor_by_time(100, 1.5, wsd)
    assert lr_factor_by_time(1, 1.0, wsd) == pytest.approx(0.1)  # the warm-down wins over warm-up
    cos = ScheduleConfig(name="cosine", warmup_steps=0, min_lr_frac=0.0)
    assert lr_factor_by_time(5, 0.5, cos) == pytest.approx(0.5) and lr_factor_by_time(5, 1.0, cos) == 0.0
    assert lr_factor_by_time(5, 0.99, ScheduleConfig(name="constant", warmup_steps=0)) == 1.0


def test_budget_keeps_the_final_evaluation_and_save_in_reserve():
    budget = TimeBudget(seconds=10.0, step_seconds=0.1, reserve=1.0)
    assert budget.deadline == 9.0 and budget.fraction(4.5) == 0.5
    assert not budget.spent(8.9) and budget.spent(8.96)  # stop when the next step would end later
    assert budget.horizon(10, 4.0) == 10 + 50
    budget.observe_eval(0.5)
    assert budget.reserve == 1.0  # one measurement is not yet the whole tail
    budget.observe_save(0.25)
    assert budget.reserve == 0.75 and budget.deadline == 9.25
    # an evaluation due now is the final one when, after it, under half a step would be left to train
    assert not budget.ends_with(8.0)  # 8.0 + 0.75 leaves 0.5 s (5 steps) before the deadline
    assert budget.ends_with(8.46) and budget.ends_with(9.0)  # 8.46 + 0.75 + 0.05 >= 9.25
    for _ in range(30):
        budget.observe_step(0.2)  # the machine got twice as slow: the estimate follows within steps
    assert budget.step_seconds == pytest.approx(0.2, rel=1e-2)


def test_one_slow_checkpoint_does_not_move_the_deadline_by_its_whole_duration():
    """The reserve is the median of the recent evaluations and saves: a single save that took a second
    (a disk flush) would otherwise end a two-second run a second early."""
    budget = TimeBudget(seconds=2.0, step_seconds=0.004, reserve=0.1)
    for save in (0.02, 0.02, 1.0):
        budget.observe_eval(0.01)
        budget.observe_save(save)
    assert budget.reserve == pytest.approx(0.03) and budget.deadline == pytest.approx(1.97)
    for _ in range(3):  # saves that stay slow are the new normal within a few
        budget.observe_save(1.0)
    assert budget.reserve == pytest.approx(1.01)


@pytest.mark.slow
def test_a_run_slowed_down_mid_way_still_warms_down_and_ends_on_budget(
    char_data, tmp_path, monkeypatch, capsys
):
    budget = 4.0

    class SlowLate(Faults):
        """The machine gets busy late in the run, when a plan made from the early pace has already
        committed to its warm-down: each step takes 120 ms longer, several times its own time."""

        start = None

        def at(self, point, step):
            self.start = self.start or time.perf_counter()
            if point == "step" and time.perf_counter() - self.start > 0.75 * budget:
                time.sleep(0.12)

    monkeypatch.setattr(cli_train, "faults_from_env", SlowLate)
    out = tmp_path / "run"
    args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", "--json", *TINY,
            "train.log_every=1", "train.threads=1", "train.eval_every=100000", "train.ckpt_every=100000",
            "schedule.name=wsd", "schedule.warmdown_frac=0.3", "schedule.min_lr_frac=0.1",
            "--time-budget", str(budget)]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["stopped_by"] == "time_budget" and "max_steps" not in captured.err
    assert abs(summary["wall_seconds"] - budget) <= 0.05 * budget + 0.1, summary
    lr = [r["lr_factor"] for r in runs.read_metrics(out) if "lr_factor" in r]
    assert len(lr) > 40
    assert lr[-1] <= 0.25  # the warm-down reached (about) its end, min_lr_frac 0.1
    assert all(b <= a + 1e-9 for a, b in zip(lr[5:], lr[6:], strict=False))  # it never went back up


def test_a_step_time_measured_before_the_run_spares_the_budget_s_own_probe(
    char_data, tmp_path, monkeypatch, capsys
):
    """--auto has timed the chosen shape already (train.step_seconds): the loop plans from that figure
    instead of timing steps of its own, and still ends on budget."""
    from lmforge.train import loop

    def no_probe(*args, **kwargs):
        raise AssertionError("the loop timed steps it was given")

    monkeypatch.setattr(loop, "probe_step_seconds", no_probe)
    out = tmp_path / "run"
    args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", "--json", *TINY,
            "train.threads=1", "train.step_seconds=0.004", "--time-budget", "2"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stopped_by"] == "time_budget" and abs(summary["wall_seconds"] - 2) <= 0.3, summary
    assert main([*args[:4], str(tmp_path / "bad"), *args[5:], "train.step_seconds=-1"]) != 0
    assert "train.step_seconds (-1.0) must be in [0, 3600]" in capsys.readouterr().err


def test_max_tokens_that_end_a_time_budget_run_sooner_warm_it_down(char_data, tmp_path, capsys):
    """--auto gives a small text's choice both a budget and train.max_tokens: the schedule follows
    whichever ends the run first, so a run stopped by its tokens still ends at the bottom of its warm-down
    (by the clock alone it would stop at full learning rate, a 30-step run in a 60-second budget)."""
    out = tmp_path / "run"
    args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", "--json", *TINY,
            "train.threads=1", "train.log_every=1", "schedule.name=wsd", "schedule.warmup_steps=2",
            "schedule.warmdown_frac=0.5", "schedule.min_lr_frac=0.0", "train.max_tokens=3840",
            "--time-budget", "60"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stopped_by"] == "max_tokens" and summary["wall_seconds"] < 30, summary
    factors = [r["lr_factor"] for r in runs.read_metrics(out) if "lr_factor" in r]
    assert len(factors) >= 25 and max(factors) == 1.0
    assert factors[-1] < 0.1 and factors == sorted(factors[:2]) + sorted(factors[2:], reverse=True)
