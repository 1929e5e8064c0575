"""Learning-rate schedules as pure functions of the optimizer step.

Pure, so a resumed run computes the very same learning rate as the uninterrupted one, and so each
schedule can be tested with numbers. All three start with a linear warm-up from 0 (Adam's second
moment is a poor estimate for the first few steps; large early updates can wreck a fresh model).

- constant: warm-up, then the peak rate.
- cosine: warm-up, then half a cosine from the peak down to `min_lr_frac` of it at the last step.
- wsd (warm-up, stable, decay): warm-up, the peak rate, then a linear warm-down over the last
  `warmdown_frac` of the steps. It lets a run be cut short or extended without replanning, and on
  short runs it tends to beat cosine (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training
  Beyond Fixed Training Durations").
"""

from __future__ import annotations

import math

from lmforge.config import ScheduleConfig


def lr_factor(step: int, max_steps: int, cfg: ScheduleConfig) -> float:
    """Multiplier in [0, 1] of the peak learning rate at optimizer step `step` (0-based)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.name == "constant":
        return 1.0
    floor = cfg.min_lr_frac
    if cfg.name == "cosine":
        span = max(1, max_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    # wsd
    warmdown = int(round(cfg.warmdown_frac * max_steps))
    decay_start = max_steps - warmdown
    if warmdown <= 0 or step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / warmdown)
    return 1.0 - (1.0 - floor) * progress


def lr_factor_by_time(step: int, fraction: float, cfg: ScheduleConfig) -> float:
    """The multiplier of a time-budget run: the schedule's decay follows the share of the budget spent.

    `fraction` (0 at the start, 1 when the budget is spent) stands where step/max_steps stands in
    `lr_factor`, so a machine that slows down or speeds up mid-run moves the warm-down with the clock
    instead of leaving it planned for steps that will never run. Warm-up still counts steps (it is
    about the optimizer's first updates, not about time); the lower of the two factors applies, so
    the warm-down happens even when warm-up has not ended.
    """
    warm = (step + 1) / cfg.warmup_steps if cfg.warmup_steps > 0 and step < cfg.warmup_steps else 1.0
    fraction = min(1.0, max(0.0, fraction))
    floor = cfg.min_lr_frac
    if cfg.name == "constant":
        decay = 1.0
    elif cfg.name == "cosine":
        decay = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction))
    else:  # wsd
        start = 1.0 - cfg.warmdown_frac
        progress = (fraction - start) / cfg.warmdown_frac if cfg.warmdown_frac > 0 else 0.0
        decay = 1.0 - (1.0 - floor) * min(1.0, max(0.0, progress))
    return min(warm, decay)
