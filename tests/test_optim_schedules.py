"""SGD variants against their textbook update rules; schedules at known points."""

import math

import numpy as np
import pytest

from numpynet.optim import SGD
from numpynet.schedules import learning_rate


def one_param(value=1.0, grad=0.5):
    return [("layer0.W", np.array([value]), np.array([grad]))]


def test_plain_sgd():
    params = one_param()
    SGD(params).step(0.1)
    assert params[0][1][0] == pytest.approx(1.0 - 0.1 * 0.5)


def test_momentum_accumulates_velocity():
    params = one_param()
    opt = SGD(params, momentum=0.9)
    opt.step(0.1)                   # v = 0.5
    params[0][2][0] = 0.5
    opt.step(0.1)                   # v = 0.9*0.5 + 0.5 = 0.95
    assert params[0][1][0] == pytest.approx(1.0 - 0.1 * 0.5 - 0.1 * 0.95)


def test_nesterov_looks_ahead():
    params = one_param()
    SGD(params, momentum=0.9, nesterov=True).step(0.1)   # v = 0.5; step = g + mu v = 0.95
    assert params[0][1][0] == pytest.approx(1.0 - 0.1 * 0.95)


def test_weight_decay_skips_biases():
    params = [("layer0.W", np.array([2.0]), np.array([0.0])), ("layer0.b", np.array([2.0]), np.array([0.0]))]
    SGD(params, weight_decay=0.1).step(1.0)
    assert params[0][1][0] == pytest.approx(2.0 - 0.2) and params[1][1][0] == 2.0


def test_schedules():
    spe, base = 10, 0.1
    assert learning_rate(57, spe, base, 20) == base
    assert learning_rate(0, spe, base, 20, "step", step_epochs=5, gamma=0.5) == base
    assert learning_rate(49, spe, base, 20, "step", step_epochs=5, gamma=0.5) == base
    assert learning_rate(50, spe, base, 20, "step", step_epochs=5, gamma=0.5) == pytest.approx(base / 2)
    assert learning_rate(0, spe, base, 20, "cosine") == pytest.approx(base)
    assert learning_rate(100, spe, base, 20, "cosine") == pytest.approx(base / 2)
    assert learning_rate(199, spe, base, 20, "cosine") == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 199 / 200)))
    # warm-up: linear over 2 epochs = 20 steps, none of them zero, then the schedule from its start
    assert learning_rate(0, spe, base, 20, "cosine", warmup_epochs=2) == pytest.approx(base / 20)
    assert learning_rate(9, spe, base, 20, "cosine", warmup_epochs=2) == pytest.approx(base / 2)
    assert learning_rate(20, spe, base, 20, "cosine", warmup_epochs=2) == pytest.approx(base)
    with pytest.raises(ValueError, match="cosine"):
        learning_rate(0, spe, base, 20, "exp")
