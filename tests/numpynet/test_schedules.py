"""numpynet.schedules: the learning rate of every step, at known points of each schedule."""

import math

import pytest

from numpynet.schedules import Schedule


def lr(step, spe, base, epochs, kind="constant", warmup_epochs=0.0, step_epochs=10, gamma=0.1):
    return Schedule.per_epoch(kind, base, epochs, spe, warmup_epochs, step_epochs, gamma)(step)


def test_schedules():
    spe, base = 10, 0.1
    assert lr(57, spe, base, 20) == base
    assert lr(0, spe, base, 20, "step", step_epochs=5, gamma=0.5) == base
    assert lr(49, spe, base, 20, "step", step_epochs=5, gamma=0.5) == base
    assert lr(50, spe, base, 20, "step", step_epochs=5, gamma=0.5) == pytest.approx(base / 2)
    assert lr(0, spe, base, 20, "cosine") == pytest.approx(base)
    assert lr(100, spe, base, 20, "cosine") == pytest.approx(base / 2)
    assert lr(199, spe, base, 20, "cosine") == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 199 / 200)))
    # warm-up: linear over 2 epochs = 20 steps, none of them zero, then the schedule from its start
    assert lr(0, spe, base, 20, "cosine", warmup_epochs=2) == pytest.approx(base / 20)
    assert lr(9, spe, base, 20, "cosine", warmup_epochs=2) == pytest.approx(base / 2)
    assert lr(20, spe, base, 20, "cosine", warmup_epochs=2) == pytest.approx(base)
    with pytest.raises(ValueError, match="cosine"):
        lr(0, spe, base, 20, "exp")


def test_airbench_rises_from_a_fifth_over_23_percent_then_falls_linearly_to_7_percent():
    spe, base, epochs = 10, 1.5, 10          # 100 steps; the rise is int(0.23 * 100) = 23 steps
    assert lr(0, spe, base, epochs, "airbench") == pytest.approx(0.2 * base)
    assert lr(11, spe, base, epochs, "airbench") == pytest.approx(base * (0.2 + 0.8 * 11 / 23))
    assert lr(23, spe, base, epochs, "airbench") == pytest.approx(base)
    assert lr(23 + 77 // 2, spe, base, epochs, "airbench") == pytest.approx(base * (1 - 0.93 * 38 / 77))
    assert lr(100, spe, base, epochs, "airbench") == pytest.approx(0.07 * base)
    steps = [lr(k, spe, base, epochs, "airbench") for k in range(100)]
    assert max(steps) == pytest.approx(base) and steps.index(max(steps)) == 23
