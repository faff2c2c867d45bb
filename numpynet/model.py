"""A network as an ordered list of layers, its builders, and its file format.

A model file is a plain `.npz` of arrays (no pickle): one entry per parameter
(`layer3.W`), plus `architecture` (a JSON list of layer specs) and `meta` (a JSON object:
`input_shape` [C, H, W] of the images the network takes as rows, and whatever else the
caller stores: class names, input normalization). `to_arrays` /
`from_arrays` convert between a `Network` and that dict, so `evaluate`, `predict` and
any user rebuild the model without repeating params. `from_arrays` treats the dict as
untrusted: it checks every spec, every shape along the stack and every weight before
building anything, and raises `ModelFormatError` saying what is wrong.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from numpynet.layers import Dense, Dropout, Layer, Parameter, ReLU, Reshape


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

        The input gradient of the first layer is never needed, so it is not computed.
        """
        grad = grad_logits
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward(grad, need_input_grad=i > 0)

    def parameters(self) -> Iterator[Parameter]:
        """Every trainable array with its gradient, e.g. Parameter('layer0.W', W, dW, decay=True)."""
        for i, layer in enumerate(self.layers):
            for key, value in layer.params.items():
                yield Parameter(f"layer{i}.{key}", value, layer.grads[key], key in layer.weights)

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
        from numpynet.losses import softmax

        out = [softmax(logits) for _, logits in self.evaluate(x)]
        return np.concatenate(out) if out else np.zeros((0, self.n_outputs), np.float32)

    @property
    def n_outputs(self) -> int:
        return next(layer.n_out for layer in reversed(self.layers) if isinstance(layer, Dense))

    def architecture(self) -> list[dict[str, Any]]:
        return [layer.spec() for layer in self.layers]



MODEL_KINDS = ("mlp", "cnn")


@dataclass(frozen=True)
class ModelSpec:
    """What to build: the architecture part of the `train` params."""

    model: str = "mlp"                               # mlp | cnn
    conv_channels: tuple[int, ...] = (32, 64, 128)   # cnn: one 3x3 conv + ReLU + 2x2 max-pool block each
    hidden_sizes: tuple[int, ...] = (128, 64)        # ReLU hidden layers (the dense head, for cnn)
    dropout: float = 0.0                             # inverted dropout after each hidden layer


def build(spec: ModelSpec, input_shape: tuple[int, int, int], n_classes: int, rng: np.random.Generator,
          dropout_rng: np.random.Generator | None = None) -> Network:
    """The network `spec` describes, for images `input_shape` (C, H, W) given as flat rows."""
    if spec.model == "cnn":
        return build_cnn(input_shape, list(spec.conv_channels), list(spec.hidden_sizes), n_classes, rng,
                         spec.dropout, dropout_rng)
    if spec.model == "mlp":
        return build_mlp(math.prod(input_shape), list(spec.hidden_sizes), n_classes, rng, spec.dropout,
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
    """CNN on flat rows (N, C*H*W): [conv3x3 -> maxpool2x2 -> ReLU] per entry of
    `conv_channels`, then flatten and an MLP head `hidden_sizes` -> n_classes.

    Each pooling runs inside its convolution (Conv2D(pool=True)). Pooling before the ReLU
    computes the same numbers as the usual conv -> ReLU -> pool (max and max(., 0) commute,
    and both orders send each gradient to the same element), with the ReLU on a quarter of
    the values."""
    from numpynet.conv import Conv2D, Flatten

    c, h, w = image_shape
    layers: list[Layer] = [Reshape((c, h, w))]
    for out_c in conv_channels:
        layers += [Conv2D(c, out_c, rng, dtype, pool=True), ReLU()]
        c, h, w = out_c, h // 2, w // 2
    layers.append(Flatten())
    head = build_mlp(c * h * w, hidden_sizes, n_classes, rng, dropout, dropout_rng, dtype)
    return Network(layers + head.layers)


# ---------------------------------------------------------------- the model file

MAX_UNITS = 1 << 16       # widths and channel counts a model file may declare
MAX_LAYERS = 256
MAX_IMAGE_BYTES = 64 << 20  # what a model's layers may hold per image evaluated (the README's CNN: 0.9 MiB;
                            # the largest CNN the train params allow, 5 x 1024 channels: 18 MiB)


class ModelFormatError(ValueError):
    """The arrays are not a model this library wrote, or describe a meaningless one."""


def to_arrays(network: Network, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Everything needed to rebuild `network` as a dict of plain arrays (for np.savez)."""
    arrays = {p.name: p.value for p in network.parameters()}
    arrays["architecture"] = np.array(json.dumps(network.architecture()))
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return arrays


def _short(value: Any, limit: int = 60) -> str:
    """repr(value) for a message, shortened to about `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 15]}...({len(text)} chars)"


def _json_entry(arrays: dict[str, np.ndarray], key: str) -> Any:
    entry = arrays.get(key)
    if entry is None:
        raise ModelFormatError(f"no '{key}' entry")
    if entry.shape != () or entry.dtype.kind != "U":
        raise ModelFormatError(f"'{key}' is a {entry.dtype} array of shape {entry.shape}, not a JSON string")
    try:
        return json.loads(str(entry), parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:   # RecursionError: nested too deeply
        raise ModelFormatError(f"'{key}' is not valid JSON ({str(err)[:100] or type(err).__name__})") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _count(spec: dict, key: str, where: str) -> int:
    value = spec.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_UNITS:
        raise ModelFormatError(f"{where}: {key} is {_short(value)}; expected an integer in 1..{MAX_UNITS}")
    return value


def _check_layer(spec: Any, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The output shape (per image) of the layer `spec` describes for input `shape`, after
    checking the spec and that the two fit together. Allocates nothing."""
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise ModelFormatError(f"{where} is {_short(spec)}; expected an object with a 'kind'")
    kind = spec["kind"]
    if kind == "dense":
        n_in, n_out = _count(spec, "n_in", where), _count(spec, "n_out", where)
        if shape != (n_in,):
            raise ModelFormatError(f"{where}: a dense layer of {n_in} inputs receives shape {shape}")
        return (n_out,)
    if kind == "relu":
        return shape
    if kind == "dropout":
        rate = spec.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ModelFormatError(f"{where}: dropout rate {_short(rate)} is not in [0, 1)")
        return shape
    if kind == "reshape":
        target = spec.get("shape")
        if not (isinstance(target, list) and 1 <= len(target) <= 3
                and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_UNITS for d in target)):
            raise ModelFormatError(f"{where}: reshape to {_short(target)}; expected 1 to 3 positive sizes")
        if math.prod(target) != math.prod(shape):
            raise ModelFormatError(f"{where}: cannot reshape {shape} into {tuple(target)}")
        return tuple(target)
    if kind == "conv2d":
        c_in, c_out = _count(spec, "in_channels", where), _count(spec, "out_channels", where)
        pool = spec.get("pool", False)   # files written before pooling moved into Conv2D have none
        if not isinstance(pool, bool):
            raise ModelFormatError(f"{where}: conv2d pool is {_short(pool)}; expected true or false")
        if len(shape) != 3 or shape[0] != c_in:
            raise ModelFormatError(f"{where}: a conv2d layer of {c_in} input channels receives shape {shape}")
        if pool and (shape[1] % 2 or shape[2] % 2):
            raise ModelFormatError(f"{where}: a pooled conv2d needs images of even height and width, receives {shape}")
        return (c_out, shape[1] // 2, shape[2] // 2) if pool else (c_out, *shape[1:])
    if kind == "maxpool2d":
        if len(shape) != 3 or shape[1] % 2 or shape[2] % 2:
            raise ModelFormatError(f"{where}: maxpool2d needs images of even height and width, receives {shape}")
        return (shape[0], shape[1] // 2, shape[2] // 2)
    if kind == "flatten":
        if len(shape) != 3:
            raise ModelFormatError(f"{where}: flatten needs (C, H, W) images, receives {shape}")
        return (math.prod(shape),)
    raise ModelFormatError(f"{where}: unknown layer kind {_short(kind)}")


def _param_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shapes of a checked layer spec's parameters (nothing allocated)."""
    if spec["kind"] == "dense":
        return {"W": (spec["n_in"], spec["n_out"]), "b": (spec["n_out"],)}
    if spec["kind"] == "conv2d":
        from numpynet.conv import KERNEL

        return {"W": (spec["out_channels"], spec["in_channels"], KERNEL, KERNEL), "b": (spec["out_channels"],)}
    return {}


def _make_layer(spec: dict[str, Any]) -> Layer:
    """The layer of a checked spec, with placeholder weights."""
    from numpynet import conv

    kind = spec["kind"]
    if kind == "dense":
        return Dense(spec["n_in"], spec["n_out"])
    if kind == "conv2d":
        return conv.Conv2D(spec["in_channels"], spec["out_channels"], pool=spec.get("pool", False))
    if kind == "dropout":
        return Dropout(spec["rate"])
    if kind == "reshape":
        return Reshape(tuple(spec["shape"]))
    return {"relu": ReLU, "maxpool2d": conv.MaxPool2D, "flatten": conv.Flatten}[kind]()


def from_arrays(arrays: dict[str, np.ndarray]) -> tuple[Network, dict[str, Any]]:
    """Inverse of `to_arrays`: (network, meta), meta["input_shape"] a tuple (C, H, W).

    The dict is untrusted: every layer spec, the shapes along the stack, and every parameter
    (present, float, of the declared shape, finite) are checked before anything is built, so
    a crafted file cannot make this allocate much more than the arrays it holds."""
    specs = _json_entry(arrays, "architecture")
    meta = _json_entry(arrays, "meta")
    shape = meta.get("input_shape") if isinstance(meta, dict) else None
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_UNITS for d in shape)):
        raise ModelFormatError(f"meta input_shape is {_short(shape)}; expected [channels, height, width]")
    input_shape = meta["input_shape"] = tuple(shape)
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_LAYERS:
        raise ModelFormatError(f"'architecture' is {_short(specs)}; expected a list of 1 to {MAX_LAYERS} layers")
    from numpynet.conv import KERNEL

    shape = (math.prod(input_shape),)
    per_image = math.prod(input_shape)   # float32 values the layers hold to evaluate one image
    for i, spec in enumerate(specs):
        before, shape = shape, _check_layer(spec, shape, f"layer {i}")
        per_image += math.prod(shape)
        if spec["kind"] == "conv2d":   # its column matrix (3x3 patches) and its output before pooling
            per_image += KERNEL ** 2 * math.prod(before) + spec["out_channels"] * math.prod(before[1:])
        if 4 * per_image > MAX_IMAGE_BYTES:   # from the architecture, before anything is allocated
            raise ModelFormatError(f"its layers would hold over {4 * per_image / 2**20:.0f} MiB for each image they "
                                   f"evaluate; at most {MAX_IMAGE_BYTES >> 20} MiB")
        for key, expected in _param_shapes(spec).items():
            saved = arrays.get(f"layer{i}.{key}")
            if saved is None or saved.shape != expected or saved.dtype.kind != "f":
                got = "missing" if saved is None else f"{saved.dtype} {saved.shape}"
                raise ModelFormatError(f"parameter layer{i}.{key} is {got}; expected float {expected}")
            with np.errstate(over="ignore"):   # a float64 beyond float32's range becomes inf: checked as loaded
                if not np.all(np.isfinite(saved.astype(np.float32))):
                    raise ModelFormatError(f"parameter layer{i}.{key} holds NaN, infinite values or values "
                                           "beyond float32's range")
    if specs[-1]["kind"] != "dense":
        raise ModelFormatError("the last layer is not dense; a model ends in a dense layer of logits")
    network = Network([_make_layer(spec) for spec in specs])
    for p in network.parameters():
        p.value[...] = arrays[p.name]
    return network, meta
