"""The one seam through which tests inject faults into a training run; production runs pass none.

A fault is tied to an exact point of an exact step, never to timing, so a test that kills a run
mid-checkpoint kills it at the same byte every time. The loop asks `faults` at three places only:
before each step's update (`at("step", step)`), for the step's loss (`loss_factor(step)`), and inside
a checkpoint save (`at("ckpt_data_written" | "ckpt_before_rename", step)`).

`Faults()` does nothing. `parse_faults(spec)` reads the test-only spec that `lmforge train` takes
from the LMFORGE_FAULT environment variable (cli/train.py reads it), "ITEM[,ITEM...]" with ITEM:

    POINT:STEP[:SIG]   at POINT of step STEP send this process SIG (KILL, the default; INT; TERM);
                       POINT is step (before the step's update), ckpt_data_written, ckpt_before_rename
    sigint:STEP / sigterm:STEP   shorthand for step:STEP:INT / step:STEP:TERM
    nan:STEP / spike:STEP        multiply the step's measured loss by NaN / 100 (the guard must catch it)
    slow:STEP:SECONDS            from step STEP on, every step takes SECONDS longer (a machine that
                                 gets busy mid-run; the time budget must still hold)
    STEP@RANK                    (in place of STEP) only on that rank of a distributed run

Each kill / signal / loss item fires once per process.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from lmforge.errors import UserError

_SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
_LOSS_FACTORS = {"nan": float("nan"), "spike": 100.0}


class Faults:
    """No faults: what every real run gets. Tests subclass it or build one with `parse_faults`."""

    def at(self, point: str, step: int) -> None:
        """Called at `point` of `step` (see the module docstring); may kill or signal the process."""

    def loss_factor(self, step: int) -> float:
        """What the measured loss of `step` is multiplied by before the guard judges it."""
        return 1.0


class InjectedFaults(Faults):
    """Faults from a spec: signals at (point, step), loss multipliers, a slowdown from a step on."""

    def __init__(
        self,
        signals: dict[tuple[str, int], signal.Signals],
        losses: dict[int, float],
        slow_from: int | None = None,
        slow_seconds: float = 0.0,
    ) -> None:
        self.signals, self.losses = dict(signals), dict(losses)
        self.slow_from, self.slow_seconds = slow_from, slow_seconds

    def at(self, point: str, step: int) -> None:
        if point == "step" and self.slow_from is not None and step >= self.slow_from:
            time.sleep(self.slow_seconds)
        sig = self.signals.pop((point, step), None)
        if sig is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), sig)  # SIGINT / SIGTERM run their handler before this returns

    def loss_factor(self, step: int) -> float:
        return self.losses.pop(step, 1.0)


def parse_faults(spec: str | None, rank: int = 0) -> Faults:
    """The spec's faults for this rank (see the module docstring); `Faults()` for an empty spec."""
    if not spec:
        return Faults()
    signals: dict[tuple[str, int], signal.Signals] = {}
    losses: dict[int, float] = {}
    slow_from, slow_seconds = None, 0.0
    for item in filter(None, spec.split(",")):
        try:
            point, step_text, *rest = item.strip().split(":")
            step_text, _, only_rank = step_text.partition("@")  # "step:3@1": only on rank 1
            if only_rank and int(only_rank) != rank:
                continue
            step = int(step_text)
            if point in _LOSS_FACTORS:
                losses[step] = _LOSS_FACTORS[point]
            elif point in ("sigint", "sigterm"):
                signals[("step", step)] = _SIGNALS[point[3:].upper()]
            elif point == "slow":
                slow_from, slow_seconds = step, float(rest[0])
            else:
                signals[(point, step)] = _SIGNALS[rest[0] if rest else "KILL"]
        except (KeyError, ValueError, IndexError):
            raise UserError(f"LMFORGE_FAULT item '{item}' is not POINT:STEP[:KILL|INT|TERM]") from None
    return InjectedFaults(signals, losses, slow_from, slow_seconds)
