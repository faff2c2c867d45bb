"""Centered finite differences, the independent reference for every backward pass."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """dF/dx by (f(x + eps) - f(x - eps)) / (2 eps), one entry at a time; x is perturbed in place and restored."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        f_plus = f()
        x[i] = old - eps
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a| + |b|), the usual gradient-check measure (0 when both are 0)."""
    denom = np.max(np.abs(a) + np.abs(b))
    return 0.0 if denom == 0 else float(np.max(np.abs(a - b)) / denom)


def check_layer_gradients(layer, x: np.ndarray, seed: int = 1, training: bool = True, tol: float = 1e-6) -> None:
    """Gradcheck every parameter and the input of `layer` on loss = sum(forward(x) * G), G a
    fixed random array: relative error below `tol` (float64 x and parameters)."""
    g = np.random.default_rng(seed).standard_normal(layer.forward(x, training=training).shape)

    def loss() -> float:
        return float(np.sum(layer.forward(x, training=training) * g))

    layer.forward(x, training=training)
    dx = layer.backward(g)
    analytic = {k: v.copy() for k, v in layer.grads.items()}
    for key, p in layer.params.items():
        err = relative_error(analytic[key], numerical_gradient(loss, p))
        assert err < tol, f"{type(layer).__name__} d{key}: relative error {err:.2e}"
    err = relative_error(dx, numerical_gradient(loss, x))
    assert err < tol, f"{type(layer).__name__} dx: relative error {err:.2e}"
