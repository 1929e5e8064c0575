"""The guard against bad numbers, and the rollback it triggers.

A step whose loss or gradient norm is not finite, or whose loss spikes far above the recent average,
has its update skipped: weights and optimizer state stay untouched. ROLLBACK_AFTER such steps in a
row roll the run back to its last good checkpoint with half the learning rate (the recovery of the
PaLM and OPT logbooks, automated), at most MAX_ROLLBACKS times before the run stops with an error.
Every counter involved lives in TrainState, so a resumed run judges and rolls back exactly as the
uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from lmforge import runs
from lmforge.errors import UserError
from lmforge.train.state import TrainState

SPIKE_WINDOW = 20  # good steps of history before a loss spike is judged
ROLLBACK_AFTER = 3  # bad steps in a row that trigger a rollback
MAX_ROLLBACKS = 3  # rollbacks before the run stops with an error


def bad_step(loss: float, grad_norm: float, recent: Sequence[float]) -> str | None:
    """Why this step's update must be skipped, or None when it is fine.

    A spike is a loss above 4x the recent average plus 2 nats: far outside the step-to-step noise of
    a healthy run (so a clean run never trips it), yet well below what a blow-up looks like.
    """
    if not math.isfinite(loss):
        return "non-finite loss"
    if not math.isfinite(grad_norm):
        return "non-finite gradient norm"
    if len(recent) >= SPIKE_WINDOW and loss > 4 * (sum(recent) / len(recent)) + 2:
        return "loss spike"
    return None


def judge(state: TrainState, loss: float, grad_norm: float, base_lr: float) -> str | None:
    """Count this step as good or bad in `state`; the reason when its update must be skipped.

    Raises when bad steps have become the run's norm (over 5% of the horizon): no rollback helps then.
    """
    bad = bad_step(loss, grad_norm, state.recent_losses)
    if bad is None:
        state.recent_losses.append(loss)
        state.bad_in_a_row = 0
        return None
    state.skipped_steps += 1
    state.bad_in_a_row += 1
    if state.skipped_steps > max(10, state.max_steps // 20):
        raise UserError(
            f"training diverged: {state.skipped_steps} bad steps; lower optim.lr (now "
            f"{base_lr * state.lr_scale:g}) and start a new run"
        )
    return bad


def needs_rollback(state: TrainState) -> bool:
    return state.bad_in_a_row >= ROLLBACK_AFTER


def roll_back(state: TrainState, run_dir: Path, engine, base_lr: float) -> tuple[TrainState, str]:
    """Load the last good checkpoint into `model` and `optimizers` (and the RNG); the state to go on
    from -- the checkpoint's, with the guard's counters carried over and the learning rate halved --
    and the checkpoint's name."""
    good = runs.find_latest_good(run_dir, quiet=not engine.dinfo.is_main)
    if good is None or state.rollbacks >= MAX_ROLLBACKS:
        where = f"after {state.rollbacks} rollbacks" if good else "before the first checkpoint"
        raise UserError(
            f"training diverged: {state.bad_in_a_row} bad steps in a row at step {state.step} {where}; "
            f"lower optim.lr (now {base_lr * state.lr_scale:g}) and start a new run"
        )
    if engine.sharded:
        raise UserError(
            f"training diverged: {state.bad_in_a_row} bad steps in a row at step {state.step}; rollback "
            "is not supported under train.parallel=fsdp: lower optim.lr and resume with --resume"
        )
    runs.load_model_weights(engine.model, good.path)
    runs.load_training_state(good.path, engine.model, engine.optimizers)  # optimizer and RNG state
    back = TrainState.from_meta(good.meta)
    # What the bad stretch taught is kept: the counts, the lower rate, the horizon and the best so far.
    back.wall_seconds, back.max_steps = state.wall_seconds, state.max_steps
    back.skipped_steps, back.rollbacks = state.skipped_steps, state.rollbacks + 1
    back.lr_scale, back.bad_in_a_row = state.lr_scale * 0.5, 0
    back.best_val, back.best_step = state.best_val, state.best_step
    back.budget_reserve = state.budget_reserve
    return back, good.path.name
