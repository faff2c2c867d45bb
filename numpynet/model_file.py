"""A network as a dict of plain arrays, and back: the model file's contents, checked.

A model file is a plain `.npz` of arrays (no pickle): one entry per array of
`Network.state()` (each parameter, trainable or frozen: `layer3.W`; each buffer, the
non-trainable state a layer updates itself: `layer5.running_var`), plus `architecture` (a
JSON list of layer specs; a frozen conv's says `"frozen": true`) and `meta` (a JSON object:
`input_shape` [C, H, W] of the images the network takes as rows, and whatever else the
caller stores: class names, input normalization). `to_arrays` / `from_arrays` convert
between a `Network` and that dict, so `evaluate`, `predict` and any user rebuild the model
without repeating params. No file I/O here: `stages/_model_file.py` reads and writes the file.

`from_arrays` treats the dict as untrusted: it checks every spec, every shape along the
stack and every parameter and buffer before building anything, and raises `ModelFormatError` saying what
is wrong. It accepts the layer specs `build` writes (`Layer.spec`), nothing else.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from numpynet.conv import KERNEL, Conv2D, Flatten, GlobalMaxPool, MaxPool2D
from numpynet.layers import GELU, Dense, Dropout, Layer, ReLU, Reshape, Scale
from numpynet.model import Network
from numpynet.norm import BatchNorm2D

MAX_UNITS = 1 << 16       # widths and channel counts a model file may declare
MAX_LAYERS = 256
MAX_IMAGE_BYTES = 64 << 20  # what a model's layers may hold per image evaluated: more than the largest CNN
                            # the train params allow holds


class ModelFormatError(ValueError):
    """The arrays are not a model this library wrote, or describe a meaningless one."""


def to_arrays(network: Network, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Everything needed to rebuild `network` as a dict of plain arrays (for np.savez)."""
    arrays = dict(network.state())
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
    if kind in ("relu", "gelu"):
        return shape
    if kind == "dropout":
        rate = spec.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ModelFormatError(f"{where}: dropout rate {_short(rate)} is not in [0, 1)")
        return shape
    if kind == "scale":
        factor = spec.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < 1e6:
            raise ModelFormatError(f"{where}: scale factor {_short(factor)} is not in (0, 1e6)")
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
        pool = spec.get("pool")
        if not isinstance(pool, bool):
            raise ModelFormatError(f"{where}: conv2d pool is {_short(pool)}; expected true or false")
        if not isinstance(spec.get("frozen", False), bool):   # written only when true
            raise ModelFormatError(f"{where}: conv2d frozen is {_short(spec['frozen'])}; expected true or false")
        if len(shape) != 3 or shape[0] != c_in:
            raise ModelFormatError(f"{where}: a conv2d layer of {c_in} input channels receives shape {shape}")
        if pool and (shape[1] % 2 or shape[2] % 2):
            raise ModelFormatError(f"{where}: a pooled conv2d needs images of even height and width, receives {shape}")
        return (c_out, shape[1] // 2, shape[2] // 2) if pool else (c_out, *shape[1:])
    if kind == "batchnorm2d":
        channels = _count(spec, "channels", where)
        momentum, eps, scale = spec.get("momentum"), spec.get("eps"), spec.get("scale")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ModelFormatError(f"{where}: batchnorm2d momentum {_short(momentum)} is not in [0, 1]")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ModelFormatError(f"{where}: batchnorm2d eps {_short(eps)} is not in (0, 1)")
        if not isinstance(scale, bool):
            raise ModelFormatError(f"{where}: batchnorm2d scale is {_short(scale)}; expected true or false")
        if len(shape) != 3 or shape[0] != channels:
            raise ModelFormatError(f"{where}: a batchnorm2d layer of {channels} channels receives shape {shape}")
        return shape
    if kind == "maxpool2d":
        if len(shape) != 3 or shape[1] % 2 or shape[2] % 2:
            raise ModelFormatError(f"{where}: maxpool2d needs images of even height and width, receives {shape}")
        return (shape[0], shape[1] // 2, shape[2] // 2)
    if kind in ("flatten", "global_maxpool"):
        if len(shape) != 3:
            raise ModelFormatError(f"{where}: {kind} needs (C, H, W) images, receives {shape}")
        return (math.prod(shape),) if kind == "flatten" else shape[:1]
    raise ModelFormatError(f"{where}: unknown layer kind {_short(kind)}")


def _param_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shapes of a checked layer spec's parameters (nothing allocated)."""
    if spec["kind"] == "dense":
        return {"W": (spec["n_in"], spec["n_out"]), "b": (spec["n_out"],)}
    if spec["kind"] == "conv2d":
        return {"W": (spec["out_channels"], spec["in_channels"], KERNEL, KERNEL), "b": (spec["out_channels"],)}
    if spec["kind"] == "batchnorm2d":
        return {"beta": (spec["channels"],)} | ({"gamma": (spec["channels"],)} if spec["scale"] else {})
    return {}


def _buffer_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shapes of a checked layer spec's buffers (`Layer.buffers`: saved, not trained)."""
    if spec["kind"] == "batchnorm2d":
        return {"running_mean": (spec["channels"],), "running_var": (spec["channels"],)}
    return {}


def _check_array(arrays: dict[str, np.ndarray], name: str, expected: tuple[int, ...], what: str) -> None:
    """arrays[name] is present, float, of shape `expected`, finite in float32."""
    saved = arrays.get(name)
    if saved is None or saved.shape != expected or saved.dtype.kind != "f":
        got = "missing" if saved is None else f"{saved.dtype} {saved.shape}"
        raise ModelFormatError(f"{what} {name} is {got}; expected float {expected}")
    with np.errstate(over="ignore"):   # a float64 beyond float32's range becomes inf: checked as loaded
        if not np.all(np.isfinite(saved.astype(np.float32))):
            raise ModelFormatError(f"{what} {name} holds NaN, infinite values or values beyond float32's range")


def _make_layer(spec: dict[str, Any]) -> Layer:
    """The layer of a checked spec, with placeholder weights."""
    kind = spec["kind"]
    if kind == "dense":
        return Dense(spec["n_in"], spec["n_out"])
    if kind == "conv2d":
        return Conv2D(spec["in_channels"], spec["out_channels"], pool=spec["pool"], frozen=spec.get("frozen", False))
    if kind == "batchnorm2d":
        return BatchNorm2D(spec["channels"], spec["momentum"], spec["eps"], spec["scale"])
    if kind == "dropout":
        return Dropout(spec["rate"])
    if kind == "scale":
        return Scale(float(spec["factor"]))
    if kind == "reshape":
        return Reshape(tuple(spec["shape"]))
    return {"relu": ReLU, "gelu": GELU, "maxpool2d": MaxPool2D, "flatten": Flatten,
            "global_maxpool": GlobalMaxPool}[kind]()


def from_arrays(arrays: dict[str, np.ndarray]) -> tuple[Network, dict[str, Any]]:
    """Inverse of `to_arrays`: (network, meta), meta["input_shape"] a tuple (C, H, W).

    The dict is untrusted: every layer spec, the shapes along the stack, and every parameter
    and buffer (present, float, of the declared shape, finite; a running variance positive) are
    checked before anything is built, so a crafted file cannot make this allocate much more
    than the arrays it holds."""
    specs = _json_entry(arrays, "architecture")
    meta = _json_entry(arrays, "meta")
    shape = meta.get("input_shape") if isinstance(meta, dict) else None
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_UNITS for d in shape)):
        raise ModelFormatError(f"meta input_shape is {_short(shape)}; expected [channels, height, width]")
    input_shape = meta["input_shape"] = tuple(shape)
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_LAYERS:
        raise ModelFormatError(f"'architecture' is {_short(specs)}; expected a list of 1 to {MAX_LAYERS} layers")
    shape = (math.prod(input_shape),)
    per_image = math.prod(input_shape)   # float32 values the layers hold to evaluate one image
    for i, spec in enumerate(specs):
        before, shape = shape, _check_layer(spec, shape, f"layer {i}")
        per_image += math.prod(shape)
        if spec["kind"] == "conv2d":   # its column matrix (KERNEL x KERNEL patches) and its output before pooling
            per_image += KERNEL ** 2 * math.prod(before) + spec["out_channels"] * math.prod(before[1:])
        if 4 * per_image > MAX_IMAGE_BYTES:   # from the architecture, before anything is allocated
            raise ModelFormatError(f"its layers would hold over {4 * per_image / 2**20:.0f} MiB for each image they "
                                   f"evaluate; at most {MAX_IMAGE_BYTES >> 20} MiB")
        for key, expected in _param_shapes(spec).items():
            _check_array(arrays, f"layer{i}.{key}", expected, "parameter")
        for key, expected in _buffer_shapes(spec).items():
            _check_array(arrays, f"layer{i}.{key}", expected, "buffer")
        if spec["kind"] == "batchnorm2d" and not np.all(arrays[f"layer{i}.running_var"].astype(np.float32) > 0):
            raise ModelFormatError(f"buffer layer{i}.running_var holds values <= 0; a variance is positive")
    if specs[-1]["kind"] != "dense":
        raise ModelFormatError("the last layer is not dense; a model ends in a dense layer of logits")
    network = Network([_make_layer(spec) for spec in specs])
    for name, value in network.state().items():
        value[...] = arrays[name]
    return network, meta
