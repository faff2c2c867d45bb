"""Learning-rate schedules: built once per run, then a pure function of the optimizer step."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "step", "cosine", "airbench")
AIRBENCH_WARMUP = 0.23   # airbench94: the fraction of the run its learning rate rises for


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every optimizer step (0-based) of one run; `schedule(step)`.

    1. warm-up: during the first `warmup_steps`, rise linearly to base_lr
       (step k of W warm-up steps uses base_lr * (k + 1) / W, so none is zero);
    2. constant: base_lr;
    3. step: base_lr * gamma ** (step // decay_every);
    4. cosine: half a cosine from base_lr at the end of warm-up down to 0 at the last step;
    5. airbench (airbench94's own, no separate warm-up): with W = int(0.23 T) of the T steps,
       base_lr (0.2 + 0.8 k / W) for steps k < W, then linearly from base_lr down to 0.07 base_lr
       at step T.
    """

    kind: str
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    decay_every: int = 1      # step schedule: steps between decays
    gamma: float = 0.1        # step schedule: factor of each decay

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose from {', '.join(SCHEDULES)}")

    @classmethod
    def per_epoch(cls, kind: str, base_lr: float, epochs: int, steps_per_epoch: int,
                  warmup_epochs: float = 0.0, step_epochs: int = 10, gamma: float = 0.1) -> Schedule:
        """The schedule with its warm-up and decay period given in epochs."""
        return cls(kind, base_lr, epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch),
                   steps_per_epoch * step_epochs, gamma)

    def __call__(self, step: int) -> float:
        if self.kind == "airbench":
            rise = int(self.total_steps * AIRBENCH_WARMUP)
            if step < rise:
                return self.base_lr * (0.2 + 0.8 * step / rise)
            frac = (step - rise) / max(self.total_steps - rise, 1)
            return self.base_lr * (1.0 - 0.93 * frac)
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            return self.base_lr * self.gamma ** (step // self.decay_every)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return 0.5 * self.base_lr * (1.0 + math.cos(math.pi * min(progress, 1.0)))
