"""Batch normalization of image batches, its backward rule beside its forward one.

Pure NumPy, no autograd. Statistics are per channel, over the N*H*W values of a batch; the
layer takes logical (N, C, H, W) arrays in any memory layout (a convolution hands over views of
channels-last memory) and returns its output, and dL/dx, in the layout it was given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numpynet.layers import Layer

AXES = (0, 2, 3)   # the axes a channel's statistics run over: batch, height, width


def _per_channel(v: np.ndarray) -> np.ndarray:
    """(C,) -> (1, C, 1, 1), to broadcast against (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


class BatchNorm2D(Layer):
    """Batch normalization, per channel c over the m = N*H*W values of the batch:

        mu_c  = mean x[:, c]          var_c = mean (x[:, c] - mu_c)^2       (biased)
        xhat  = (x - mu_c) / sqrt(var_c + eps)
        y     = gamma_c xhat + beta_c                (gamma = 1, not a parameter, when scale=False)

    Training normalizes with the batch's mu and var and updates the running statistics, with
    PyTorch's convention (momentum is the weight of the new batch; the running variance is
    the unbiased one):

        running_mean = (1 - momentum) running_mean + momentum mu
        running_var  = (1 - momentum) running_var  + momentum var m / (m - 1)

    Evaluation normalizes with running_mean and running_var instead (then y is affine in x).
    airbench's BatchNorm(momentum=0.6, eps=1e-12, weight=False) is momentum=0.4, eps=1e-12,
    scale=False here.

    Backward (training): xhat depends on x directly and through mu and var; with
    g = gamma dy (the gradient reaching xhat) and means over the channel's m values,

        dbeta  = sum dy        dgamma = sum dy xhat
        dx     = (g - mean g - xhat mean(g xhat)) / sqrt(var + eps)

    After an evaluation forward the statistics are constants: dx = gamma dy / sqrt(running_var + eps).

    params: beta (C,) zeros, and gamma (C,) ones when scale=True; no weight decay on either.
    buffers: running_mean (C,) zeros, running_var (C,) ones: saved in the model file, never trained.
    """

    kind = "batchnorm2d"

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5, scale: bool = True,
                 dtype: np.dtype = np.float32) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"BatchNorm2D needs a positive channel count, got {channels!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm2D momentum must be in [0, 1], got {momentum!r}")
        if not eps > 0.0:
            raise ValueError(f"BatchNorm2D eps must be positive, got {eps!r}")
        self.channels, self.momentum, self.eps, self.scale = channels, momentum, eps, scale
        self.params = {"beta": np.zeros(channels, dtype)}
        if scale:
            self.params["gamma"] = np.ones(channels, dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(channels, dtype), "running_var": np.ones(channels, dtype)}

    def _gamma(self) -> np.ndarray:
        return self.params["gamma"] if self.scale else np.ones(self.channels, self.params["beta"].dtype)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"BatchNorm2D expects (N, {self.channels}, H, W) input, got shape {x.shape}")
        dtype = self.params["beta"].dtype
        self._training = training
        if training:
            m = x.shape[0] * x.shape[2] * x.shape[3]
            if m < 2:
                raise ValueError(f"BatchNorm2D needs more than one value per channel to train, got input "
                                 f"of shape {x.shape}")
            mu = x.mean(axis=AXES, dtype=dtype)
            centred = x - _per_channel(mu)                       # keeps x's memory layout
            var = np.mean(centred * centred, axis=AXES)
            running = self.buffers
            running["running_mean"] *= 1 - self.momentum
            running["running_mean"] += self.momentum * mu
            running["running_var"] *= 1 - self.momentum
            running["running_var"] += self.momentum * var * (m / (m - 1))
        else:
            mu, var = self.buffers["running_mean"], self.buffers["running_var"]
            centred = x - _per_channel(mu)
        self._inv_std = 1.0 / np.sqrt(var + dtype.type(self.eps))   # (C,)
        self._xhat = centred * _per_channel(self._inv_std)
        return self._xhat * _per_channel(self._gamma()) + _per_channel(self.params["beta"])

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """grad_out (N, C, H, W) -> fills grads (beta, gamma) (C,), returns dx (N, C, H, W)."""
        xhat = self._xhat
        np.sum(grad_out, axis=AXES, out=self.grads["beta"])               # dbeta = sum dy
        if self.scale:
            np.sum(grad_out * xhat, axis=AXES, out=self.grads["gamma"])   # dgamma = sum dy xhat
        if not need_input_grad:
            return None
        g = grad_out * _per_channel(self._gamma() * self._inv_std)       # gamma dy / sqrt(var + eps)
        if not self._training:
            return g
        # the two terms through the batch mean and the batch variance
        g -= _per_channel(g.mean(axis=AXES))
        g -= xhat * _per_channel(np.mean(grad_out * xhat, axis=AXES) * self._gamma() * self._inv_std)
        return g

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "momentum": self.momentum, "eps": self.eps,
                "scale": self.scale}
