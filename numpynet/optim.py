"""SGD on batches, with optional (Nesterov) momentum and L2 weight decay on weights only."""

from __future__ import annotations

import numpy as np

from numpynet.layers import Parameter


class SGD:
    """Update params in place from their grads: p -= lr * step.

    With weight decay wd (applied to the parameters marked `decay`: weights, never biases) the
    gradient becomes g + wd * p, the gradient of the L2 penalty wd/2 * ||p||^2.
    With momentum mu the step is the velocity v = mu * v + g (PyTorch's form);
    with Nesterov it is g + mu * v, a look-ahead along the new velocity.

    `params` is a list of `Parameter`s; grads are used as scratch space
    (they are recomputed every step), so an update allocates no memory.
    """

    def __init__(self, params: list[Parameter], momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        self.params = params
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.velocity = [np.zeros_like(p.value) for p in params] if momentum else None
        self.scratch = [np.empty_like(p.value) for p in params] if (momentum or weight_decay) else None

    def step(self, lr: float) -> None:
        for i, (_, p, g, decay) in enumerate(self.params):
            if self.weight_decay and decay:
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
