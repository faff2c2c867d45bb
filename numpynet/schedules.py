"""Learning-rate schedules as a pure function of the optimizer step."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "step", "cosine")


def learning_rate(step: int, steps_per_epoch: int, base_lr: float, total_epochs: int,
                  schedule: str = "constant", warmup_epochs: float = 0.0,
                  step_epochs: int = 10, gamma: float = 0.1) -> float:
    """Learning rate for optimizer step `step` (0-based) of a run of `total_epochs` epochs.

    1. warm-up: during the first warmup_epochs, rise linearly to base_lr
       (step k of W warm-up steps uses base_lr * (k + 1) / W, so none is zero);
    2. constant: base_lr;
    3. step: base_lr * gamma ** (epoch // step_epochs), epoch = step // steps_per_epoch;
    4. cosine: half a cosine from base_lr at the end of warm-up down to 0 at the last step.
    """
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * gamma ** (step // (steps_per_epoch * step_epochs))
    if schedule == "cosine":
        total_steps = total_epochs * steps_per_epoch
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
