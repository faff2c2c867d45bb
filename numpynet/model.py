"""A network as an ordered list of layers, its builders, and its file format.

A model file is a plain `.npz` of arrays (no pickle): one entry per parameter
(`layer3.W`), plus `architecture` (a JSON list of layer specs) and `meta` (JSON:
class names, input normalization, model kind). `to_arrays`/`from_arrays` convert
between a `Network` and that dict, so `evaluate`, `predict` and any user rebuild
the model without repeating params.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import numpy as np

from numpynet.layers import Dense, Dropout, Layer, ReLU, Reshape


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

    def parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """Yield (name, param, grad) for every trainable array, e.g. ('layer0.W', W, dW)."""
        for i, layer in enumerate(self.layers):
            for key, value in layer.params.items():
                yield f"layer{i}.{key}", value, layer.grads[key]

    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities (N, K) for inputs x (N, ...), evaluated in batches."""
        from numpynet.losses import softmax

        out = [softmax(self.forward(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.n_outputs), np.float32)

    @property
    def n_outputs(self) -> int:
        return next(layer.n_out for layer in reversed(self.layers) if isinstance(layer, Dense))

    def architecture(self) -> list[dict[str, Any]]:
        return [layer.spec() for layer in self.layers]


def build_mlp(n_inputs: int, hidden_sizes: list[int], n_classes: int, rng: np.random.Generator,
              dropout: float = 0.0, dropout_rng: np.random.Generator | None = None,
              dtype: np.dtype = np.float32) -> Network:
    """MLP n_inputs -> hidden_sizes... -> n_classes with ReLU (and optional dropout) between.

    Weights are He-normal from `rng`, drawn layer by layer; biases start at zero.
    """
    layers: list[Layer] = []
    sizes = [n_inputs, *hidden_sizes]
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [Dense(n_in, n_out, rng, dtype), ReLU()]
        if dropout > 0:
            layers.append(Dropout(dropout, dropout_rng))
    layers.append(Dense(sizes[-1], n_classes, rng, dtype))
    return Network(layers)


def build_cnn(image_shape: tuple[int, int, int], conv_channels: list[int], hidden_sizes: list[int],
              n_classes: int, rng: np.random.Generator, dropout: float = 0.0,
              dropout_rng: np.random.Generator | None = None, dtype: np.dtype = np.float32) -> Network:
    """CNN on flat rows (N, C*H*W): [conv3x3 -> ReLU -> maxpool2x2] per entry of
    `conv_channels`, then flatten and an MLP head `hidden_sizes` -> n_classes."""
    from numpynet.conv import Conv2D, Flatten, MaxPool2D

    c, h, w = image_shape
    layers: list[Layer] = [Reshape((c, h, w))]
    for out_c in conv_channels:
        layers += [Conv2D(c, out_c, rng, dtype), ReLU(), MaxPool2D()]
        c, h, w = out_c, h // 2, w // 2
    layers.append(Flatten())
    head = build_mlp(c * h * w, hidden_sizes, n_classes, rng, dropout, dropout_rng, dtype)
    return Network(layers + head.layers)


def layer_from_spec(spec: dict[str, Any]) -> Layer:
    """Rebuild a layer (with placeholder weights) from its `spec()`."""
    kind = spec["kind"]
    if kind == "dense":
        return Dense(spec["n_in"], spec["n_out"])
    if kind == "relu":
        return ReLU()
    if kind == "dropout":
        return Dropout(spec["rate"])
    if kind == "reshape":
        return Reshape(tuple(spec["shape"]))
    from numpynet import conv

    if kind == "conv2d":
        return conv.Conv2D(spec["in_channels"], spec["out_channels"])
    if kind == "maxpool2d":
        return conv.MaxPool2D()
    if kind == "flatten":
        return conv.Flatten()
    raise ValueError(f"unknown layer kind {kind!r} in model file")


def to_arrays(network: Network, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Everything needed to rebuild `network` as a dict of plain arrays (for np.savez)."""
    arrays = {name: param for name, param, _ in network.parameters()}
    arrays["architecture"] = np.array(json.dumps(network.architecture()))
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return arrays


def from_arrays(arrays: dict[str, np.ndarray]) -> tuple[Network, dict[str, Any]]:
    """Inverse of `to_arrays`: (network with the saved weights, meta)."""
    for key in ("architecture", "meta"):
        if key not in arrays:
            raise ValueError(f"not a model file: no '{key}' entry")
    network = Network([layer_from_spec(s) for s in json.loads(str(arrays["architecture"]))])
    for name, param, _ in network.parameters():
        saved = arrays.get(name)
        if saved is None or saved.shape != param.shape:
            raise ValueError(f"model file: parameter {name} missing or of shape "
                             f"{None if saved is None else saved.shape}, expected {param.shape}")
        param[...] = saved
    return network, json.loads(str(arrays["meta"]))
