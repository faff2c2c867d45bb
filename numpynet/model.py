"""A network as an ordered list of layers, and its builders.

`build` makes the network a `ModelSpec` describes; `numpynet.model_file` turns a network into
the arrays of a model file and back.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from numpynet.conv import KERNEL, Conv2D, Flatten, GlobalMaxPool
from numpynet.layers import GELU, Dense, Dropout, Layer, Parameter, ReLU, Reshape, Scale, uniform_fan_in
from numpynet.losses import softmax
from numpynet.norm import BatchNorm2D
from numpynet.whitening import whitening_weights


class Network:
    """A feed-forward stack of layers mapping inputs (N, ...) to logits (N, K)."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad_logits: np.ndarray) -> None:
        """Backpropagate dL/dlogits (N, K), filling every layer's `grads`.

        No gradient flows below the first layer with parameters (the layers under it have none to
        train), so that layer's input gradient is not computed, nor the backward of those below.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params), 0)
        grad = grad_logits
        for i in range(len(self.layers) - 1, first - 1, -1):
            grad = self.layers[i].backward(grad, need_input_grad=i > first)

    def parameters(self) -> Iterator[Parameter]:
        """Every trainable array with its gradient, e.g. Parameter('layer0.W', W, dW, decay=True);
        the frozen ones (`Layer.frozen`) are left out, so no optimizer moves them."""
        for i, layer in enumerate(self.layers):
            for key, value in layer.params.items():
                if key not in layer.frozen:
                    yield Parameter(f"layer{i}.{key}", value, layer.grads[key], key in layer.weights,
                                    layer.lr_scales.get(key, 1.0))

    def state(self) -> dict[str, np.ndarray]:
        """Every array that defines the network, by model-file name: each layer's parameters,
        trainable or frozen ('layer1.W'), then its buffers ('layer3.running_var'). The arrays
        themselves, not copies: what a model file saves and loads, what Lookahead averages."""
        arrays = {}
        for i, layer in enumerate(self.layers):
            for key, value in (*layer.params.items(), *layer.buffers.items()):
                arrays[f"layer{i}.{key}"] = value
        return arrays

    @property
    def eval_batch(self) -> int:
        """Images per batch when evaluating: the smallest any layer asks for (Layer.eval_batch)."""
        return min(layer.eval_batch for layer in self.layers)

    def evaluate(self, x: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        """Logits of inputs x (N, ...) in batches of `eval_batch`: (rows, logits (rows, K)) pairs."""
        for i in range(0, len(x), self.eval_batch):
            rows = slice(i, min(i + self.eval_batch, len(x)))
            yield rows, self.forward(x[rows])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) for inputs x (N, ...), evaluated in batches."""
        out = [softmax(logits) for _, logits in self.evaluate(x)]
        return np.concatenate(out) if out else np.zeros((0, self.n_outputs), np.float32)

    @property
    def n_outputs(self) -> int:
        return next(layer.n_out for layer in reversed(self.layers) if isinstance(layer, Dense))

    def architecture(self) -> list[dict[str, Any]]:
        return [layer.spec() for layer in self.layers]


MODEL_KINDS = ("mlp", "cnn", "frontier")
WHITENING_IMAGES = 5000   # training images whose 3x3 patches set the frontier network's whitening (airbench94's count)
BATCHNORM_BIAS_LR_SCALE = 64.0   # the frontier's batch-norm biases train this much faster (airbench94's bias_scaler)
LOGIT_SCALE = 1 / 9              # the frontier's logits are scaled by this (airbench94's scaling_factor)


@dataclass(frozen=True)
class ModelSpec:
    """What to build: the architecture part of the `train` params."""

    model: str = "mlp"                               # mlp | cnn | frontier
    conv_channels: tuple[int, ...] = (32, 64, 128)   # cnn: a 3x3 conv, 2x2 max pooling and ReLU each;
                                                     # frontier: the widths of its conv groups
    hidden_sizes: tuple[int, ...] = (128, 64)        # ReLU hidden layers (the dense head, for cnn)
    dropout: float = 0.0                             # inverted dropout after each hidden layer


def build(spec: ModelSpec, image_shape: tuple[int, int, int], n_classes: int, rng: np.random.Generator,
          dropout_rng: np.random.Generator | None = None, train_images: np.ndarray | None = None) -> Network:
    """The network `spec` describes, for images `image_shape` (C, H, W) given as flat rows.
    frontier whitens with the patch statistics of the first `WHITENING_IMAGES` of `train_images`
    (rows (N, C*H*W)), which it needs."""
    if spec.model == "frontier":
        if train_images is None or len(train_images) == 0:
            raise ValueError("the frontier network needs training images to set its whitening layer")
        whitening = train_images[:WHITENING_IMAGES].reshape(-1, *image_shape)
        return build_frontier(image_shape, tuple(spec.conv_channels), n_classes, rng, whitening)
    if spec.model == "cnn":
        return build_cnn(image_shape, list(spec.conv_channels), list(spec.hidden_sizes), n_classes, rng,
                         spec.dropout, dropout_rng)
    if spec.model == "mlp":
        return build_mlp(math.prod(image_shape), list(spec.hidden_sizes), n_classes, rng, spec.dropout,
                         dropout_rng)
    raise ValueError(f"unknown model {spec.model!r}; choose from {', '.join(MODEL_KINDS)}")


def build_mlp(n_inputs: int, hidden_sizes: list[int], n_classes: int, rng: np.random.Generator,
              dropout: float = 0.0, dropout_rng: np.random.Generator | None = None,
              dtype: np.dtype = np.float32) -> Network:
    """MLP n_inputs -> hidden_sizes... -> n_classes with ReLU (and optional dropout) between.

    Weights are He-normal from `rng`, drawn layer by layer; biases start at zero.
    """
    layers: list[Layer] = []
    sizes = [n_inputs, *hidden_sizes]
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [Dense(n_in, n_out, rng, dtype), ReLU()]
        if dropout > 0:
            layers.append(Dropout(dropout, dropout_rng))
    layers.append(Dense(sizes[-1], n_classes, rng, dtype))
    return Network(layers)


def build_cnn(image_shape: tuple[int, int, int], conv_channels: list[int], hidden_sizes: list[int],
              n_classes: int, rng: np.random.Generator, dropout: float = 0.0,
              dropout_rng: np.random.Generator | None = None, dtype: np.dtype = np.float32) -> Network:
    """CNN on flat rows (N, C*H*W): [3x3 conv -> 2x2 max pooling -> ReLU] per entry of
    `conv_channels`, then flatten and the dense head `hidden_sizes` -> n_classes.

    Each pooling runs inside its convolution (Conv2D(pool=True)). Pooling before the ReLU
    computes the same numbers as the usual conv -> ReLU -> pool (max and max(., 0) commute,
    and both orders send each gradient to the same element), with the ReLU on a quarter of
    the values."""
    c, h, w = image_shape
    layers: list[Layer] = [Reshape((c, h, w))]
    for out_c in conv_channels:
        layers += [Conv2D(c, out_c, rng, dtype, pool=True), ReLU()]
        c, h, w = out_c, h // 2, w // 2
    layers.append(Flatten())
    head = build_mlp(c * h * w, hidden_sizes, n_classes, rng, dropout, dropout_rng, dtype)
    return Network(layers + head.layers)


def build_frontier(image_shape: tuple[int, int, int], conv_channels: tuple[int, ...], n_classes: int,
                   rng: np.random.Generator, whitening_images: np.ndarray | None = None,
                   batchnorm_momentum: float = 0.4, batchnorm_eps: float = 1e-12,
                   dtype: np.dtype = np.float32) -> Network:
    """airbench94's network on flat rows (N, C*H*W), H and W divisible by 8:

        reshape -> whitening Conv2D(C, 2*9C, frozen) -> GELU
        -> 3 groups of [Conv2D(pool=True) -> BatchNorm2D -> GELU -> Conv2D -> BatchNorm2D -> GELU],
           of `conv_channels` channels (airbench: 64, 256, 256); each group halves H and W
        -> GlobalMaxPool -> Scale(1/9) -> Dense(conv_channels[-1], n_classes)

    As airbench builds it: the whitening conv's W comes from `whitening_images` (N, C, H, W) when
    given (`numpynet.whitening.whitening_weights`; else it keeps a random init until the caller
    sets it); every other W starts as PyTorch's default (`uniform_fan_in`), and the first C_in
    filters of each group's convs as the identity (torch.nn.init.dirac_: filter i passes input
    channel i through); batch norms have no scale (gamma fixed at 1), momentum 0.4 (its 0.6 in
    PyTorch's other convention), eps 1e-12, and biases that train at 64 times the learning rate
    (`Layer.lr_scales`); the logits are scaled by 1/9. Differences from airbench: 3x3
    zero-padded whitening patches (its are 2x2, unpadded), conv and dense biases (its have none;
    a bias before a batch norm gets a zero gradient), GELU in its tanh approximation."""
    c, h, w = image_shape
    whiten = Conv2D(c, 2 * KERNEL * KERNEL * c, rng, dtype, frozen=True)
    if whitening_images is not None:
        whiten.params["W"][...] = whitening_weights(whitening_images, dtype=dtype)
    layers: list[Layer] = [Reshape((c, h, w)), whiten, GELU()]
    c = whiten.out_channels
    for width in conv_channels:
        convs = [Conv2D(c, width, rng, dtype, pool=True), Conv2D(width, width, rng, dtype)]
        norms = [BatchNorm2D(width, batchnorm_momentum, batchnorm_eps, scale=False, dtype=dtype) for _ in convs]
        for conv, norm in zip(convs, norms):
            W = conv.params["W"]
            W[...] = uniform_fan_in(rng, math.prod(W.shape[1:]), W.shape, dtype)
            dirac(W)
            norm.lr_scales = {"beta": BATCHNORM_BIAS_LR_SCALE}
            layers += [conv, norm, GELU()]
        c = width
    head = Dense(c, n_classes, rng, dtype)
    head.params["W"][...] = uniform_fan_in(rng, c, head.params["W"].shape, dtype)
    layers += [GlobalMaxPool(), Scale(LOGIT_SCALE), head]
    return Network(layers)


def dirac(W: np.ndarray) -> None:
    """Make the first min(F, C) filters of W (F, C, k, k) identities, in place (torch's dirac_):
    filter i is 1 at input channel i's centre tap and 0 elsewhere, so it copies channel i."""
    n = min(W.shape[0], W.shape[1])
    W[:n] = 0
    W[np.arange(n), np.arange(n), W.shape[2] // 2, W.shape[3] // 2] = 1
