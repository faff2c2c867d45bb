"""numpynet.layers (Dense, ReLU, GELU, Dropout, Reshape) and the MLP built from them: hand-written backward
passes against centered finite differences (float64). The loss is in test_losses.py, the conv
layers in test_conv.py."""

import math

import numpy as np
import pytest

from numpynet.layers import GELU, Dense, Dropout, ReLU, Reshape, Scale, uniform_fan_in
from numpynet.losses import cross_entropy, softmax_cross_entropy
from numpynet.model import Network, build_mlp
from tests.helpers.gradcheck import check_layer_gradients, numerical_gradient, relative_error
from tests.helpers.layouts import channels_last

TOL = 1e-6


def make_batch(n=5, d=7, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def jitter(net: Network, seed: int = 2) -> None:
    """Move every parameter off its init (biases are 0 there), so no ReLU input sits exactly on its kink."""
    rng = np.random.default_rng(seed)
    for p in net.parameters():
        p.value[...] += 0.1 * rng.standard_normal(p.value.shape)


def check_network(net: Network, x: np.ndarray, y: np.ndarray, training: bool = False) -> None:
    def loss() -> float:
        return cross_entropy(net.forward(x, training), y)

    _, grad = softmax_cross_entropy(net.forward(x, training), y)
    net.backward(grad)
    analytic = {p.name: p.grad.copy() for p in net.parameters()}
    assert analytic, "network has no parameters"
    for name, p in ((q.name, q.value) for q in net.parameters()):
        err = relative_error(analytic[name], numerical_gradient(loss, p))
        assert err < TOL, f"{name}: relative error {err:.2e}"


def test_mlp_every_weight_and_bias():
    x, y = make_batch()
    net = build_mlp(7, [6, 5], 3, np.random.default_rng(1), dtype=np.float64)
    jitter(net)
    check_network(net, x, y)


def test_input_gradient_of_dense_relu_stack():
    x, y = make_batch()
    net = Network([Dense(7, 4, np.random.default_rng(3), np.float64), ReLU(), Dense(4, 3, np.random.default_rng(4), np.float64)])

    def loss() -> float:
        return cross_entropy(net.forward(x), y)

    _, grad = softmax_cross_entropy(net.forward(x), y)
    g = grad
    for layer in reversed(net.layers):
        g = layer.backward(g, need_input_grad=True)
    assert relative_error(g, numerical_gradient(loss, x)) < TOL


class SameDraws:
    """Stands in for a Dropout layer's generator: every call draws what a fresh generator of
    `seed` draws, so every forward pass of the gradient check drops the same units."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def random(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.random.default_rng(self.seed).random(shape, dtype=dtype)


def test_dropout_with_the_same_mask_on_every_pass():
    x, y = make_batch(n=6)
    net = build_mlp(7, [8, 6], 3, np.random.default_rng(5), dropout=0.5, dtype=np.float64)
    drops = [layer for layer in net.layers if isinstance(layer, Dropout)]
    assert len(drops) == 2
    for seed, layer in enumerate(drops, start=6):
        layer.rng = SameDraws(seed)
    jitter(net)
    dropped = [(layer.forward(np.ones((6, n)), training=True) == 0).mean() for layer, n in zip(drops, (8, 6))]
    assert all(0 < share < 1 for share in dropped)
    check_network(net, x, y, training=True)


def test_dropout_is_identity_at_evaluation_and_scales_at_training():
    layer = Dropout(0.25, np.random.default_rng(0))
    x = np.ones((2000, 50), np.float32)
    assert np.array_equal(layer.forward(x, training=False), x)
    out = layer.forward(x, training=True)
    kept = out != 0
    assert np.allclose(out[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.01


def test_reshape_round_trip_gradient():
    layer = Reshape((3, 2, 2))
    x = np.arange(24, dtype=np.float64).reshape(2, 12)
    out = layer.forward(x)
    assert out.shape == (2, 3, 2, 2) and out[1, 2, 1, 0] == x[1, 10]
    assert np.array_equal(layer.backward(out * 2), x * 2)


def test_scale_multiplies_forward_and_backward_and_refuses_a_bad_factor():
    x = channels_last(np.random.default_rng(4).standard_normal((2, 3, 4, 2)))
    layer = Scale(1 / 9)
    np.testing.assert_array_equal(layer.forward(x), x * (1 / 9))
    check_layer_gradients(layer, x)
    assert layer.spec() == {"kind": "scale", "factor": 1 / 9}
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="Scale factor"):
            Scale(bad)


def test_uniform_fan_in_is_pytorchs_default_bound():
    w = uniform_fan_in(np.random.default_rng(0), 64, (20_000,))
    assert w.dtype == np.float32 and np.max(np.abs(w)) <= 1 / 8
    assert np.std(w) == pytest.approx(1 / 8 / math.sqrt(3), rel=0.02)   # U(-b, b) has std b / sqrt(3)


def test_gelu_is_the_tanh_approximation_close_to_x_phi_x():
    x = np.linspace(-6, 6, 241)
    y = GELU().forward(x)
    tanh_form = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))) for v in x]
    np.testing.assert_allclose(y, tanh_form, rtol=1e-13, atol=1e-15)
    exact = [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x]   # x Phi(x)
    assert np.max(np.abs(y - exact)) < 1e-3
    assert GELU().spec() == {"kind": "gelu"}


def test_gelu_gradient_and_layout():
    x = channels_last(np.random.default_rng(3).standard_normal((2, 3, 4, 2)) * 3)
    check_layer_gradients(GELU(), x)
    x32 = x.astype(np.float32)   # astype keeps the memory layout
    layer = GELU()
    y = layer.forward(x32, training=True)
    dx = layer.backward(np.ones_like(y))
    for out in (y, dx):
        assert out.dtype == np.float32 and out.transpose(0, 2, 3, 1).flags.c_contiguous
