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
