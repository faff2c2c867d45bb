"""Run a stack of layers once, for tests that compare two computations byte for byte."""

from __future__ import annotations

import numpy as np


def run_stack(layers: list, x: np.ndarray, g: np.ndarray) -> list[bytes]:
    """The bytes of the output, dL/dx and every parameter gradient of one training forward of
    x through `layers` and one backward of the output gradient g."""
    out = x
    for layer in layers:
        out = layer.forward(out, training=True)
    grad = g
    for layer in reversed(layers):
        grad = layer.backward(grad)
    return [out.tobytes(), grad.tobytes()] + [v.tobytes() for layer in layers for v in layer.grads.values()]
