"""numpynet.optim: SGD variants against their textbook update rules, weight decay against the
gradient of the L2 penalty (finite differences, float64), and Lookahead's arithmetic by hand."""

import numpy as np
import pytest

from numpynet.layers import Parameter
from numpynet.losses import cross_entropy, softmax_cross_entropy
from numpynet.model import build_mlp
from numpynet.optim import SGD, Lookahead, airbench_decay
from tests.helpers.gradcheck import numerical_gradient, relative_error

TOL = 1e-6


def one_param(value=1.0, grad=0.5):
    return [Parameter("layer0.W", np.array([value]), np.array([grad]), True)]


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


def test_lr_scale_multiplies_one_parameters_step_and_not_its_weight_decay_rate():
    """A parameter of lr_scale s takes the step of lr * s, the rest the step of lr (momentum,
    Nesterov and weight decay as usual)."""
    scaled = [Parameter("layer0.beta", np.array([1.0]), np.array([0.5]), True, lr_scale=64.0)]
    plain = one_param()
    for params, lr in ((scaled, 0.1), (plain, 0.1 * 64.0)):
        opt = SGD(params, momentum=0.9, nesterov=True, weight_decay=0.01)
        opt.step(lr)
        params[0].grad[0] = 0.25
        opt.step(lr)
    assert scaled[0].value[0] == plain[0].value[0]
    assert scaled[0].value[0] != 1.0


def test_weight_decay_gradient_is_that_of_the_l2_penalty_on_weights_only():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 7)), rng.integers(0, 3, 5)
    net = build_mlp(7, [5], 3, np.random.default_rng(7), dtype=np.float64)
    wd = 0.3
    params = list(net.parameters())

    def penalized() -> float:
        weights = [p.value for p in params if p.decay]
        return cross_entropy(net.forward(x), y) + 0.5 * wd * sum(float(np.sum(w * w)) for w in weights)

    _, grad = softmax_cross_entropy(net.forward(x), y)
    net.backward(grad)
    numeric = {p.name: numerical_gradient(penalized, p.value) for p in params}
    raw_bias_grads = {p.name: p.grad.copy() for p in params if not p.decay}
    before = {p.name: p.value.copy() for p in params}
    SGD(params, weight_decay=wd).step(lr=1.0)  # with lr 1 the step taken is the gradient used
    for name, p in ((q.name, q.value) for q in params):
        assert relative_error(before[name] - p, numeric[name]) < TOL, name
        if name.endswith(".b"):  # biases are not decayed: their step is the plain loss gradient
            assert np.allclose(before[name] - p, raw_bias_grads[name], rtol=1e-12, atol=1e-15)


def test_weight_decay_is_chosen_by_role_not_by_name():
    """Dense and Conv2D kernels decay, their biases do not, whatever the parameter is called."""
    from numpynet.model import build_cnn

    net = build_cnn((3, 8, 8), [4], [5], 2, np.random.default_rng(0))
    roles = {p.name: p.decay for p in net.parameters()}
    # layers: reshape, conv2d (pooled), relu, flatten, dense, relu, dense
    assert roles == {"layer1.W": True, "layer1.b": False, "layer4.W": True, "layer4.b": False,
                     "layer6.W": True, "layer6.b": False}


def test_lookahead_lerps_every_k_steps_and_resets_the_weights_to_the_ema():
    w = np.array([1.0, -2.0])
    la = Lookahead([w], every=2)                 # ema = [1, -2]
    w[...] = [3.0, 0.0]
    la.step(decay=0.75)                          # step 1 of 2: nothing happens
    assert w.tolist() == [3.0, 0.0] and la.ema[0].tolist() == [1.0, -2.0]
    la.step(decay=0.75)                          # ema += 0.25 (w - ema) = [1.5, -1.5]; w = ema
    assert w.tolist() == [1.5, -1.5] and la.ema[0].tolist() == [1.5, -1.5]
    w[...] = [2.5, 0.5]
    la.step(0.5)
    la.step(0.5)                                 # ema += 0.5 ([2.5, 0.5] - [1.5, -1.5]) = [2, -0.5]
    assert w.tolist() == [2.0, -0.5]
    w[...] = [9.0, 9.0]
    la.update(decay=1.0)                         # decay 1: back to the EMA, which stays put
    assert w.tolist() == [2.0, -0.5]
    w[...] = [9.0, 9.0]
    la.update(decay=0.0)                         # decay 0: the EMA jumps to the weights
    assert w.tolist() == [9.0, 9.0] and la.ema[0].tolist() == [9.0, 9.0]


def test_lookahead_keeps_float32_and_airbench_decay_schedule():
    w = np.ones(3, np.float32)
    la = Lookahead([w], every=1)
    w += 1
    la.step(0.3)
    assert w.dtype == la.ema[0].dtype == np.float32
    np.testing.assert_allclose(w, 1 + 0.7, rtol=1e-7)
    assert airbench_decay(0, 100) == 0.0
    assert airbench_decay(50, 100) == pytest.approx(0.95 ** 5 / 8)
    assert airbench_decay(100, 100) == pytest.approx(0.95 ** 5)
    with pytest.raises(ValueError, match="every must be >= 1"):
        Lookahead([w], every=0)
