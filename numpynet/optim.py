"""Mini-batch SGD with optional (Nesterov) momentum and L2 weight decay on weights only."""

from __future__ import annotations

import numpy as np


class SGD:
    """Update params in place from their grads: p -= lr * step.

    With weight decay wd (applied to weight tensors only, never biases) the
    gradient becomes g + wd * p, the gradient of the L2 penalty wd/2 * ||p||^2.
    With momentum mu the step is the velocity v = mu * v + g (PyTorch's form);
    with Nesterov it is g + mu * v, a look-ahead along the new velocity.

    `params` is a list of (name, param, grad); grads are used as scratch space
    (they are recomputed every step), so an update allocates no memory.
    """

    def __init__(self, params: list[tuple[str, np.ndarray, np.ndarray]], momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        self.params = params
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.velocity = [np.zeros_like(p) for _, p, _ in params] if momentum else None
        self.scratch = [np.empty_like(p) for _, p, _ in params] if (momentum or weight_decay) else None

    @staticmethod
    def decays(name: str) -> bool:
        """Weight decay applies to weight tensors ('...W'), not to biases ('...b')."""
        return name.endswith(".W")

    def step(self, lr: float) -> None:
        for i, (name, p, g) in enumerate(self.params):
            if self.weight_decay and self.decays(name):
                g += np.multiply(p, self.weight_decay, out=self.scratch[i])        # g + wd * p
            step = g
            if self.velocity is not None:
                v = self.velocity[i]
                v *= self.momentum
                v += g                                                          # v = mu v + g
                if self.nesterov:
                    g += np.multiply(v, self.momentum, out=self.scratch[i])    # g + mu v
                else:
                    step = np.copyto(self.scratch[i], v) or self.scratch[i]
            step *= p.dtype.type(lr)
            p -= step
