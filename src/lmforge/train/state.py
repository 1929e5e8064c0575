"""TrainState: everything a run saves in a checkpoint and restores from one, in one place.

A resumed run must continue exactly as the uninterrupted one would have -- the same step, the same
learning rate, the same guard verdicts -- so every number the loop carries from step to step lives
here and nowhere else. `to_meta()` is what a checkpoint's meta.json holds (plus the data fingerprints
and the last validation the loop adds); `from_meta()` reads it back, with the defaults older
checkpoints need for keys they lack. The rollback (train/guard.py) builds its state from the same
function, so "what a checkpoint restores" has one definition.

Model weights, optimizer moments and RNG streams are tensors and live in the checkpoint's safetensors
files (checkpoints.py); this holds the scalars around them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

RECENT_LOSSES = 50  # losses of good steps the guard averages to judge a spike


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # training tokens consumed
    wall_seconds: float = 0.0  # wall time of the whole run so far, earlier processes included
    max_steps: int = 0  # the schedule's horizon (under a time budget: the current estimate)
    lr_scale: float = 1.0  # halved by each rollback
    rollbacks: int = 0  # rollbacks to a good checkpoint so far
    skipped_steps: int = 0  # updates skipped by the guard
    bad_in_a_row: int = 0  # consecutive skipped updates (a rollback at guard.ROLLBACK_AFTER)
    recent_losses: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_LOSSES))
    best_val: float = math.inf  # lowest validation loss seen at a checkpoint
    best_step: int | None = None  # its step (never pruned)
    budget_reserve: float = 0.0  # time-budget runs: seconds kept for the final evaluation + save

    def to_meta(self) -> dict[str, Any]:
        """The scalars of a checkpoint's meta.json (runs.REQUIRED_META among them)."""
        return {
            "step": self.step,
            "tokens": self.tokens,
            "wall_seconds": self.wall_seconds,
            "max_steps": self.max_steps,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "skipped_steps": self.skipped_steps,
            "bad_in_a_row": self.bad_in_a_row,
            "recent_losses": list(self.recent_losses),
            "best_val": self.best_val,
            "best_step": self.best_step,
            "budget_reserve": self.budget_reserve,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TrainState:
        """The state a checkpoint's meta.json describes (keys added later default to a fresh run's)."""
        return cls(
            step=int(meta["step"]),
            tokens=int(meta["tokens"]),
            wall_seconds=float(meta["wall_seconds"]),
            max_steps=int(meta["max_steps"]),
            lr_scale=float(meta.get("lr_scale", 1.0)),
            rollbacks=int(meta.get("rollbacks", 0)),
            skipped_steps=int(meta.get("skipped_steps", 0)),
            bad_in_a_row=int(meta.get("bad_in_a_row", 0)),
            recent_losses=deque(meta.get("recent_losses", []), maxlen=RECENT_LOSSES),
            best_val=float(meta.get("best_val", math.inf)),
            best_step=meta.get("best_step"),
            budget_reserve=float(meta.get("budget_reserve", 0.0)),
        )

    def record_val(self, step: int, val_loss: float) -> None:
        """A validation loss measured at a checkpoint: the best one is kept from pruning."""
        if val_loss < self.best_val:
            self.best_val, self.best_step = val_loss, step
