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

    A parameter's `lr_scale` multiplies lr for it alone (airbench's faster batch-norm biases).
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
        for i, (_, p, g, decay, lr_scale) in enumerate(self.params):
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
            step *= p.dtype.type(lr * lr_scale)
            p -= step


class Lookahead:
    """Lookahead on the weights (airbench's `LookaheadState`): a slow copy, the EMA, that every
    `every` steps moves part of the way towards the fast weights, which then restart from it:

        ema = ema + (1 - decay) (w - ema)        (torch's ema.lerp_(w, 1 - decay))
        w   = ema

    decay 0 leaves w as it is; decay 1 sets w back to the EMA. airbench lerps every 5 steps with
    decay = 0.95^5 (step / total_steps)^3 (`airbench_decay`), then once more with decay 1 at the
    end. `arrays` are updated in place: pass `network.state().values()` to average every array
    airbench does (its state_dict: weights and running statistics; frozen ones never move).
    """

    def __init__(self, arrays: list[np.ndarray], every: int = 5) -> None:
        if every < 1:
            raise ValueError(f"Lookahead every must be >= 1, got {every!r}")
        self.arrays = list(arrays)
        self.ema = [a.copy() for a in self.arrays]
        self.every = every
        self.steps = 0

    def step(self, decay: float) -> None:
        """Call after each optimizer step: every `every`-th call, `update(decay)`."""
        self.steps += 1
        if self.steps % self.every == 0:
            self.update(decay)

    def update(self, decay: float) -> None:
        """ema += (1 - decay) (w - ema); w = ema."""
        for ema, w in zip(self.ema, self.arrays):
            ema += ema.dtype.type(1.0 - decay) * (w - ema)
            w[...] = ema


def airbench_decay(step: int, total_steps: int) -> float:
    """airbench94's Lookahead decay at `step` of `total_steps`: 0.95^5 (step / total_steps)^3,
    from 0 (the EMA jumps to the weights) towards 0.77 at the end of training."""
    return 0.95 ** 5 * (step / total_steps) ** 3
