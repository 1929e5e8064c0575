"""The time budget (`train.time_budget`): a run that ends on time, with its warm-down, on any machine.

The schedule of a time-budget run follows the clock (`schedule.lr_factor_by_time`): the learning rate
at any moment depends on the share of the budget spent, not on a step count planned from the first
few steps. A machine that gets busier mid-run (other jobs, thermal limits) or freer therefore moves
the warm-down with it: the run still decays to its floor and still stops within about one step of
the deadline. A step count is still estimated (`horizon`) for the progress bar and the guard's
limits, and recomputed from the measured pace as the run goes.

What the budget covers is the whole run: the last evaluation and checkpoint are part of it, so their
measured duration is kept in reserve (`reserve`) and training stops that much before the deadline.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch


class Clock:
    """The run's wall time in seconds, earlier processes of a resumed run included."""

    def __init__(self, before: float) -> None:
        self.before, self.start = before, time.perf_counter()

    def __call__(self) -> float:
        return self.before + time.perf_counter() - self.start


@dataclass
class TimeBudget:
    seconds: float  # the whole run's wall-clock budget
    step_seconds: float  # a training step's measured duration (a running average)
    reserve: float  # seconds kept for the final evaluation and checkpoint
    eval_seconds: float = 0.0  # a typical evaluation's duration (0: none measured yet)
    save_seconds: float = 0.0  # a typical checkpoint's duration (0: none measured yet)
    # the last few of each: their median is the estimate, so one slow save (a disk flush, another
    # process) does not end a short run early by its whole duration
    eval_history: list[float] = field(default_factory=list)
    save_history: list[float] = field(default_factory=list)

    @property
    def deadline(self) -> float:
        """When training stops (run seconds): the budget less the final evaluation and save."""
        return max(1e-3, self.seconds - self.reserve)

    def fraction(self, elapsed: float) -> float:
        """The share of the training time spent (drives the learning-rate schedule)."""
        return min(1.0, elapsed / self.deadline)

    def spent(self, elapsed: float) -> bool:
        """Would another step end nearer the deadline than stopping now does?"""
        return elapsed + 0.5 * self.step_seconds >= self.deadline

    def ends_with(self, elapsed: float) -> bool:
        """Should an evaluation (and checkpoint) due now be the final one? Yes when, once it is done,
        the deadline would leave under half a step of training before the final pair: without this a
        run evaluated and saved twice in a row at its end (a 60 s --auto run lost 0.57 s so)."""
        return self.spent(elapsed + self.eval_seconds + self.save_seconds)

    def horizon(self, step: int, elapsed: float) -> int:
        """The steps the run will have done at the deadline at today's pace (an estimate)."""
        left = max(0.0, self.deadline - elapsed)
        return step + max(1, int(left / max(self.step_seconds, 1e-9)))

    def observe_step(self, seconds: float) -> None:
        """A training step's duration; recent steps weigh most, so a change of pace shows in a few."""
        self.step_seconds = 0.8 * self.step_seconds + 0.2 * seconds

    def observe_eval(self, seconds: float) -> None:
        """An evaluation's duration: the final one will cost about as much as the recent ones."""
        self.eval_seconds = _recent_median(self.eval_history, seconds)
        self._update_reserve()

    def observe_save(self, seconds: float) -> None:
        """A checkpoint's duration: the final one will cost about as much as the recent ones."""
        self.save_seconds = _recent_median(self.save_history, seconds)
        self._update_reserve()

    def _update_reserve(self) -> None:
        if self.eval_seconds and self.save_seconds:  # both measured: the estimate gives way
            self.reserve = self.eval_seconds + self.save_seconds


def _recent_median(history: list[float], seconds: float, keep: int = 5) -> float:
    history.append(seconds)
    del history[:-keep]
    return statistics.median(history)


def probe_step_seconds(forward, sampler, amp, accum: int, device: torch.device) -> float:
    """A step's duration from a few real micro-steps, before the run starts.

    Gradients from the probe are discarded and the RNG restored, so the run itself is unchanged.
    """
    rng = torch.get_rng_state()
    timings = []
    for i in range(4):
        x, y = sampler.batch(0, 0)
        start = time.perf_counter()
        with amp:
            loss = forward(x.to(device), y.to(device))
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # the first call pays for allocation / compilation
            timings.append(time.perf_counter() - start)
    for p in forward.parameters():
        p.grad = None
    torch.set_rng_state(rng)
    return sorted(timings)[len(timings) // 2] * accum * 1.08  # + optimizer and bookkeeping


def first_reserve(step_seconds: float, accum: int, eval_tokens: int, batch_size: int, seq_len: int) -> float:
    """The final evaluation's cost before one has been measured: forward passes at about a third of
    a training micro-step each, plus one step's time for the checkpoint."""
    passes = eval_tokens / max(1, batch_size * seq_len)
    return passes * step_seconds / accum / 3 + step_seconds
