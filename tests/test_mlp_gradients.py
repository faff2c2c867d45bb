"""Hand-written backward passes of the MLP against centered finite differences (float64)."""

import numpy as np
import pytest

from numpynet.layers import Dense, Dropout, ReLU, Reshape
from numpynet.losses import cross_entropy, log_softmax, soft_targets, softmax, softmax_cross_entropy
from numpynet.model import Network, build_mlp
from numpynet.optim import SGD
from tests.gradcheck import numerical_gradient, relative_error

TOL = 1e-6


def make_batch(n=5, d=7, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def jitter(net: Network, seed: int = 2) -> None:
    """Move every parameter off its init (biases are 0 there), so no ReLU input sits exactly on its kink."""
    rng = np.random.default_rng(seed)
    for _, p, _ in net.parameters():
        p += 0.1 * rng.standard_normal(p.shape)


def check_network(net: Network, x: np.ndarray, y: np.ndarray, training: bool = False) -> None:
    def loss() -> float:
        return cross_entropy(net.forward(x, training), y)

    _, grad = softmax_cross_entropy(net.forward(x, training), y)
    net.backward(grad)
    analytic = {name: g.copy() for name, _, g in net.parameters()}
    assert analytic, "network has no parameters"
    for name, p, _ in net.parameters():
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


def test_dropout_with_a_fixed_mask():
    x, y = make_batch(n=6)
    net = build_mlp(7, [8, 6], 3, np.random.default_rng(5), dropout=0.5, dtype=np.float64)
    rng = np.random.default_rng(6)
    drops = [layer for layer in net.layers if isinstance(layer, Dropout)]
    assert len(drops) == 2
    for layer, width in zip(drops, (8, 6)):
        layer.fixed_mask = rng.random((6, width)) >= 0.5
    jitter(net)
    check_network(net, x, y, training=True)


def test_dropout_is_identity_at_evaluation_and_scales_at_training():
    layer = Dropout(0.25, np.random.default_rng(0))
    x = np.ones((2000, 50), np.float32)
    assert np.array_equal(layer.forward(x, training=False), x)
    out = layer.forward(x, training=True)
    kept = out != 0
    assert np.allclose(out[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.01


def test_weight_decay_gradient_is_that_of_the_l2_penalty_on_weights_only():
    x, y = make_batch()
    net = build_mlp(7, [5], 3, np.random.default_rng(7), dtype=np.float64)
    wd = 0.3
    params = list(net.parameters())

    def penalized() -> float:
        weights = [p for name, p, _ in params if name.endswith(".W")]
        return cross_entropy(net.forward(x), y) + 0.5 * wd * sum(float(np.sum(w * w)) for w in weights)

    _, grad = softmax_cross_entropy(net.forward(x), y)
    net.backward(grad)
    numeric = {name: numerical_gradient(penalized, p) for name, p, _ in params}
    raw_bias_grads = {name: g.copy() for name, _, g in params if name.endswith(".b")}
    before = {name: p.copy() for name, p, _ in params}
    SGD(params, weight_decay=wd).step(lr=1.0)  # with lr 1 the step taken is the gradient used
    for name, p, _ in params:
        assert relative_error(before[name] - p, numeric[name]) < TOL, name
        if name.endswith(".b"):  # biases are not decayed: their step is the plain loss gradient
            assert np.allclose(before[name] - p, raw_bias_grads[name], rtol=1e-12, atol=1e-15)


def test_reshape_round_trip_gradient():
    layer = Reshape((3, 2, 2))
    x = np.arange(24, dtype=np.float64).reshape(2, 12)
    out = layer.forward(x)
    assert out.shape == (2, 3, 2, 2) and out[1, 2, 1, 0] == x[1, 10]
    assert np.array_equal(layer.backward(out * 2), x * 2)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], np.float32)
    y = np.array([0, 2])
    loss, grad = softmax_cross_entropy(logits, y)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx((0.0 + 5e4) / 2, rel=1e-6)
    assert np.allclose(softmax(logits).sum(axis=1), 1.0)
    assert np.all(np.isfinite(log_softmax(logits)))


def test_combined_gradient_equals_finite_differences_of_the_loss():
    rng = np.random.default_rng(8)
    logits, y = rng.standard_normal((4, 5)), rng.integers(0, 5, 4)
    _, grad = softmax_cross_entropy(logits.copy(), y)
    assert relative_error(grad, numerical_gradient(lambda: cross_entropy(logits, y), logits)) < TOL


def test_soft_targets_smooth_the_one_hot_rows():
    t = soft_targets(np.array([2, 0]), 4, smoothing=0.2, dtype=np.float64)
    assert np.allclose(t, [[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]])
    assert np.array_equal(soft_targets(np.array([1]), 3), [[0.0, 1.0, 0.0]])


def test_loss_with_one_hot_targets_equals_the_loss_with_labels():
    rng = np.random.default_rng(9)
    logits, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    onehot = soft_targets(y, 4, dtype=np.float64)
    assert cross_entropy(logits, onehot) == pytest.approx(cross_entropy(logits, y), rel=1e-12)
    (l1, g1), (l2, g2) = softmax_cross_entropy(logits, y), softmax_cross_entropy(logits, onehot)
    assert l1 == pytest.approx(l2, rel=1e-12) and np.allclose(g1, g2, rtol=0, atol=1e-15)


@pytest.mark.parametrize("smoothing", [0.1, 0.5])
def test_soft_target_gradient_equals_finite_differences(smoothing):
    """Label smoothing, and mixed rows as mixup makes them: targets with mass on several classes."""
    rng = np.random.default_rng(10)
    logits, y = rng.standard_normal((5, 3)), rng.integers(0, 3, 5)
    targets = 0.7 * soft_targets(y, 3, smoothing, np.float64) + 0.3 * soft_targets(y[::-1], 3, smoothing, np.float64)
    loss, grad = softmax_cross_entropy(logits.copy(), targets)
    assert loss == pytest.approx(cross_entropy(logits, targets), rel=1e-12)
    assert relative_error(grad, numerical_gradient(lambda: cross_entropy(logits, targets), logits)) < TOL


def test_targets_of_the_wrong_shape_are_refused_by_name():
    with pytest.raises(ValueError, match=r"targets of shape \(4, 1\)"):
        softmax_cross_entropy(np.zeros((4, 3)), np.zeros((4, 1)))
