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


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy of softmax(logits) against integer labels or target distributions.

    logits (N, K) float; targets (N,) int in [0, K) or (N, K) rows summing to 1.
    Returns a Python float.
    """
    logp = log_softmax(logits)
    if targets.ndim == 2:
        return float(-np.sum(targets * logp, axis=1).mean())
    return float(-logp[np.arange(len(targets)), targets].mean())


def soft_targets(labels: np.ndarray, n_classes: int, smoothing: float = 0.0,
                 dtype: np.dtype = np.float32) -> np.ndarray:
    """Target distributions (N, K) for integer labels (N,): one-hot, or with label smoothing
    eps, 1 - eps + eps/K on the true class and eps/K on each of the others."""
    targets = np.full((len(labels), n_classes), smoothing / n_classes, dtype)
    targets[np.arange(len(labels)), labels] += 1.0 - smoothing
    return targets


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss and its gradient with respect to the logits, in one pass.

    logits (N, K); targets either integer labels (N,) or target distributions (N, K)
    (label smoothing, mixup; each row must sum to 1, which the shortcut below relies on)
    -> (mean loss, dL/dlogits (N, K)).
    The loss is -sum_k t_k log softmax(z)_k = log sum_k exp(z_k) - sum_k t_k z_k per row;
    for softmax followed by cross-entropy the chain rule collapses to dL/dz = (softmax(z) - t) / N.
    """
    if targets.shape not in (logits.shape[:1], logits.shape):
        raise ValueError(f"targets of shape {targets.shape} must be labels {logits.shape[:1]} or "
                         f"distributions {logits.shape} for logits of shape {logits.shape}")
    n = len(targets)
    z = logits - logits.max(axis=1, keepdims=True)
    exp_z = np.exp(z)
    sum_exp = exp_z.sum(axis=1, keepdims=True)
    grad = exp_z
    grad /= sum_exp
    if targets.ndim == 1:
        rows = np.arange(n)
        loss = float(np.mean(np.log(sum_exp[:, 0]) - z[rows, targets]))
        grad[rows, targets] -= 1.0
    else:
        loss = float(np.mean(np.log(sum_exp[:, 0]) - np.sum(targets * z, axis=1)))
        grad -= targets
    grad *= grad.dtype.type(1.0 / n)
    return loss, grad
