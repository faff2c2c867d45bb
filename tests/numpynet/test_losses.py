"""numpynet.losses: softmax cross-entropy with hard and soft targets (label smoothing, mixup),
its stability, and its gradient against centered finite differences (float64)."""

import numpy as np
import pytest

from numpynet.losses import cross_entropy, log_softmax, soft_targets, softmax, softmax_cross_entropy
from tests.helpers.gradcheck import numerical_gradient, relative_error

TOL = 1e-6


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
