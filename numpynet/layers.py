"""Layers of a feed-forward network, each with its backward rule beside its forward one.

A layer caches in `forward` what its `backward` needs. Trainable arrays live in
`layer.params` (updated in place by the optimizer) and their gradients, same keys
and shapes, in `layer.grads`. Two kinds of arrays are saved with the model but never
trained: the keys of `params` a layer lists in `frozen` (a fixed kernel, such as a
whitening convolution's), and `layer.buffers`, state that `forward` itself updates
(a batch norm's running statistics). Arrays are float32 unless a test passes float64
(the gradient check does); a layer keeps the dtype it is given.

Shapes: N = batch size. Dense layers take (N, D); image layers take (N, C, H, W).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from numpynet.parallel import elementwise, matmul


class Parameter(NamedTuple):
    """One trainable array as the optimizer sees it."""

    name: str            # e.g. 'layer0.W'
    value: np.ndarray    # updated in place
    grad: np.ndarray     # same shape, filled by `backward`
    decay: bool          # a multiplicative weight (weight decay applies), not an additive bias
    lr_scale: float = 1.0  # this array's learning rate is the run's times this (`Layer.lr_scales`)


class Layer:
    """Base class: no parameters, identity spec.

    `weights` names the keys of `params` that multiply the input (kernels, matrices): weight
    decay applies to them and not to the additive ones (biases). `frozen` names the keys of
    `params` that are saved but not trained (`Network.parameters` leaves them out). `buffers`
    holds the non-trainable state `forward` updates (running statistics), saved with the model.
    `lr_scales` multiplies the learning rate of some keys of `params` (a training choice of the
    network's builder, not saved: airbench trains batch-norm biases 64 times faster)."""

    kind = "layer"
    weights: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    eval_batch = 1000  # images per batch when a network evaluates: large products, bounded buffers

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.lr_scales: dict[str, float] = {}

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Given dL/d(output), fill `self.grads` and return dL/d(input) (None if not needed)."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """JSON-able description from which `numpynet.model_file.from_arrays` rebuilds the layer."""
        return {"kind": self.kind}


def he_normal(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...],
              dtype: np.dtype = np.float32) -> np.ndarray:
    """He-normal init: N(0, 2 / fan_in), the right scale for ReLU layers."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def uniform_fan_in(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...],
                   dtype: np.dtype = np.float32) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default init of its Linear and Conv2d weights
    (kaiming_uniform with a = sqrt(5)), which airbench's hyperparameters were tuned with."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype)


class Dense(Layer):
    """Fully connected: y = x @ W + b.  x (N, in), W (in, out), b (out,), y (N, out)."""

    kind = "dense"
    weights = ("W",)

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator | None = None,
                 dtype: np.dtype = np.float32) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        rng = rng if rng is not None else np.random.default_rng(0)
        self.params = {"W": he_normal(rng, n_in, (n_in, n_out), dtype), "b": np.zeros(n_out, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x = x
        y = matmul(x, self.params["W"])
        y += self.params["b"]
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        # dW = x^T dY ; db = sum_n dY ; dx = dY W^T
        matmul(self._x.T, grad_out, out=self.grads["W"])
        np.sum(grad_out, axis=0, out=self.grads["b"])
        return matmul(grad_out, self.params["W"].T) if need_input_grad else None

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_in": self.n_in, "n_out": self.n_out}


class ReLU(Layer):
    """y = max(x, 0), elementwise; any shape."""

    kind = "relu"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        # the derivative is 1 where the input was positive, 0 elsewhere (0 at exactly 0)
        return grad_out * self._mask


class GELU(Layer):
    """GELU, y = x * Phi(x) (Phi the standard normal CDF), elementwise; any shape, keeps dtype
    and memory layout.

    NumPy has no vectorized erf, so this is the tanh approximation (PyTorch's
    `GELU(approximate='tanh')`; it differs from the exact GELU by less than 1e-3):

        y = 0.5 x (1 + tanh u),   u = sqrt(2/pi) (x + 0.044715 x^3)

    Backward, the exact derivative of that formula (d tanh u = (1 - tanh^2 u) du):

        dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    """

    kind = "gelu"
    C = math.sqrt(2.0 / math.pi)
    A = 0.044715

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x = x
        y, self._tanh = elementwise(self.formula, x)   # in cache-sized chunks on the worker threads
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return elementwise(self.derivative, grad_out, self._x, self._tanh)

    @classmethod
    def formula(cls, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """y and tanh u (kept for the backward pass), any shape."""
        t = np.tanh(cls.C * (x + cls.A * (x * x * x)))   # not x ** 3: NumPy's float power is slow
        return 0.5 * x * (1.0 + t), t

    @classmethod
    def derivative(cls, grad_out: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """dL/dx = dL/dy * dy/dx, from x and t = tanh u, any shape."""
        du_dx = cls.C * (1.0 + 3.0 * cls.A * x * x)
        return grad_out * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)


class Scale(Layer):
    """y = s x, elementwise, for a fixed s; any shape. Backward: dx = s dy.

    airbench multiplies its logits by 1/9; before a Dense layer, as here, that is the same product
    (s x) W = s (x W), so W sees the same gradient s x^T dY."""

    kind = "scale"

    def __init__(self, factor: float) -> None:
        super().__init__()
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"Scale factor must be positive and finite, got {factor!r}")
        self.factor = factor

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return x * x.dtype.type(self.factor)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad_out * grad_out.dtype.type(self.factor) if need_input_grad else None

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "factor": self.factor}


class Dropout(Layer):
    """Inverted dropout: at training, zero each unit with probability `rate` and scale the
    survivors by 1 / (1 - rate), so evaluation is the identity. Any shape.
    """

    kind = "dropout"

    def __init__(self, rate: float, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = rate
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._scale_mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self._scale_mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.rate
        self._scale_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self._scale_mask

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad_out if self._scale_mask is None else grad_out * self._scale_mask

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate": self.rate}


class Reshape(Layer):
    """(N, D) -> (N, *shape), e.g. flat CIFAR rows (N, 3072) into images (N, 3, 32, 32)."""

    kind = "reshape"

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._in_shape = x.shape
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad_out.reshape(self._in_shape) if need_input_grad else None

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape)}
