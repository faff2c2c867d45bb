"""Softmax and cross-entropy, computed stably, with their combined gradient."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax.  logits (N, K) -> probabilities (N, K), rows summing to 1.

    Subtracting each row's max first keeps exp() from overflowing; the result is
    mathematically unchanged.
    """
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax by log-sum-exp.  (N, K) -> (N, K); never log(0)."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of softmax(logits) against integer labels.

    logits (N, K) float, labels (N,) int in [0, K). Returns a Python float.
    """
    logp = log_softmax(logits)
    return float(-logp[np.arange(len(labels)), labels].mean())


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss and its gradient with respect to the logits, in one pass.

    logits (N, K), labels (N,) -> (mean loss, dL/dlogits (N, K)).
    For softmax followed by cross-entropy the chain rule collapses to
    dL/dz = (softmax(z) - onehot(y)) / N.
    """
    n = len(labels)
    rows = np.arange(n)
    z = logits - logits.max(axis=1, keepdims=True)
    exp_z = np.exp(z)
    sum_exp = exp_z.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(sum_exp[:, 0]) - z[rows, labels]))
    grad = exp_z
    grad /= sum_exp
    grad[rows, labels] -= 1.0
    grad *= grad.dtype.type(1.0 / n)
    return loss, grad
