"""Mini-batch SGD with optional (Nesterov) momentum and decoupled-from-bias L2 weight decay."""

from __future__ import annotations

import numpy as np


class SGD:
    """Update params in place from their grads: p -= lr * step.

    With weight decay wd (applied to weight matrices only, never biases) the
    gradient becomes g + wd * p, the gradient of the L2 penalty wd/2 * ||p||^2.
    With momentum mu the step is the velocity v = mu * v + g (PyTorch's form);
    with Nesterov it is g + mu * v, a look-ahead along the new velocity.
    """

    def __init__(self, params: list[tuple[str, np.ndarray, np.ndarray]], momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        self.params = params
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.velocity = [np.zeros_like(p) for _, p, _ in params] if momentum else None

    @staticmethod
    def decays(name: str) -> bool:
        """Weight decay applies to weight tensors ('...W'), not to biases ('...b')."""
        return name.endswith(".W")

    def step(self, lr: float) -> None:
        for i, (name, p, g) in enumerate(self.params):
            if self.weight_decay and self.decays(name):
                g += self.weight_decay * p
            if self.velocity is not None:
                v = self.velocity[i]
                v *= self.momentum
                v += g
                if self.nesterov:
                    g += self.momentum * v
                    update = g
                else:
                    update = v
            else:
                update = g
            p -= p.dtype.type(lr) * update
