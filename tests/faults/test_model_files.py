"""Crafted, damaged and foreign model files, given to `predict --model` and put in place of
models/model.npz for `evaluate`: each ends in one line naming the file and what is wrong, exit 1,
no traceback, bounded memory, and evaluate's outputs untouched.

The loader (stages/_model_file.py) is shared, so both commands get the same answer; the cases
cover the file (empty, truncated, not a zip, a folder, a pipe, a zip bomb), the architecture
(wrong JSON shapes, wrong types, impossible sizes, a mismatch with the input), the weights
(missing, wrong shape, non-float, non-finite) and the meta (class names, normalization, input shape).
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stages._io import load_npz, save_npz
from tests.helpers.files import assert_clean_failure, evaluate_with

pytestmark = pytest.mark.slow

Arrays = dict[str, np.ndarray]


def _arch(arrays: Arrays, change: Callable[[list], object]) -> Arrays:
    """`change` edits the layer list in place, or returns a replacement for it."""
    specs = json.loads(str(arrays["architecture"]))
    replaced = change(specs)
    specs = specs if replaced is None else replaced
    return {**arrays, "architecture": np.array(json.dumps(specs))}


def _meta(arrays: Arrays, change: Callable[[dict], object]) -> Arrays:
    """`change` edits the meta object in place."""
    meta = json.loads(str(arrays["meta"]))
    change(meta)
    return {**arrays, "meta": np.array(json.dumps(meta))}


def _first_dense_n_in(specs: list, value) -> None:
    next(s for s in specs if s["kind"] == "dense")["n_in"] = value


def _wide_conv(arrays: Arrays) -> Arrays:
    """A first layer of 16,384 3x3 filters (1.8 MB of weights, within every bound) whose output
    maps take 128 MiB an image: 16 GiB for the 128 images a convolution evaluates at once."""
    specs = [{"kind": "reshape", "shape": [3, 32, 32]},
             {"kind": "conv2d", "in_channels": 3, "out_channels": 16384, "pool": False},
             {"kind": "flatten"}, {"kind": "dense", "n_in": 16384 * 1024, "n_out": 3}]
    out = {k: v for k, v in arrays.items() if not k.startswith("layer")}
    out.update({"architecture": np.array(json.dumps(specs)), "layer1.W": np.zeros((16384, 3, 3, 3), np.float32),
                "layer1.b": np.zeros(16384, np.float32)})
    return out


def _set_weight(arrays: Arrays, name: str, value) -> Arrays:
    w = arrays[name].copy()
    w.flat[0] = value
    return {**arrays, name: w}


# name -> (arrays -> new arrays, a fragment of the message)
ARRAY_CASES: dict[str, tuple[Callable[[Arrays], Arrays], str]] = {
    "no-architecture": (lambda a: {k: v for k, v in a.items() if k != "architecture"}, "no 'architecture' entry"),
    "no-meta": (lambda a: {k: v for k, v in a.items() if k != "meta"}, "no 'meta' entry"),
    "architecture-not-json": (lambda a: {**a, "architecture": np.array("[{kind: dense")}, "'architecture' is not valid JSON"),
    "architecture-a-number-array": (lambda a: {**a, "architecture": np.arange(3)}, "not a JSON string"),
    "architecture-list-of-ints": (lambda a: _arch(a, lambda s: [1, 2, 3]), "layer 0 is 1; expected an object with a 'kind'"),
    "architecture-an-object": (lambda a: _arch(a, lambda s: {"kind": "dense"}), "expected a list of 1 to 256 layers"),
    "architecture-empty": (lambda a: _arch(a, lambda s: []), "expected a list of 1 to 256 layers"),
    "n_in-a-string": (lambda a: _arch(a, lambda s: _first_dense_n_in(s, "3072")), "n_in is '3072'; expected an integer"),
    "n_in-mismatch": (lambda a: _arch(a, lambda s: _first_dense_n_in(s, 3071)),
                      "a dense layer of 3071 inputs receives shape (3072,)"),
    "n_out-a-billion": (lambda a: _arch(a, lambda s: s[-1].update(n_out=10 ** 9)),
                        "n_out is 1000000000; expected an integer in 1..65536"),
    "n_out-bool": (lambda a: _arch(a, lambda s: s[-1].update(n_out=True)), "n_out is True"),
    "unknown-layer": (lambda a: _arch(a, lambda s: s.insert(1, {"kind": "attention"})), "unknown layer kind 'attention'"),
    "dropout-rate-2": (lambda a: _arch(a, lambda s: s.insert(1, {"kind": "dropout", "rate": 2})),
                       "dropout rate 2 is not in [0, 1)"),
    "ends-in-relu": (lambda a: _arch(a, lambda s: s.append({"kind": "relu"})), "the last layer is not dense"),
    "10000-layers": (lambda a: _arch(a, lambda s: s[:1] + [{"kind": "relu"}] * 10000 + s[1:]), "a list of 1 to 256 layers"),
    "weight-missing": (lambda a: {k: v for k, v in a.items() if k != "layer0.W"}, "parameter layer0.W is missing"),
    "weight-wrong-shape": (lambda a: {**a, "layer0.W": a["layer0.W"][:-1]}, "parameter layer0.W is float32 (3071, "),
    "weight-int": (lambda a: {**a, "layer0.b": a["layer0.b"].astype(np.int32)}, "parameter layer0.b is int32"),
    "weight-nan": (lambda a: _set_weight(a, "layer0.W", np.nan), "parameter layer0.W holds NaN, infinite values"),
    "bias-inf": (lambda a: _set_weight(a, "layer0.b", np.inf), "parameter layer0.b holds NaN, infinite values"),
    # finite as float64, infinite as the float32 the network computes in
    "weight-float64-1e39": (lambda a: {**a, "layer0.W": np.full(a["layer0.W"].shape, 1e39)},
                            "parameter layer0.W holds NaN, infinite values or values beyond float32's range"),
    # finite in float32, but a product of such weights overflows: refused before any NaN is written
    "weights-that-overflow": (lambda a: {**a, "layer0.W": np.full(a["layer0.W"].shape, 3e38, np.float32)},
                              "the model's outputs overflow"),
    # every layer within its bounds, yet evaluating a batch would need ~17 GiB: refused from the
    # architecture, before anything is allocated
    "layers-need-gigabytes": (lambda a: _wide_conv(a), "for each image they evaluate; at most 64 MiB"),
    "architecture-100000-deep": (lambda a: {**a, "architecture": np.array("[" * 100_000 + "]" * 100_000)},
                                 "'architecture' is not valid JSON"),
    "meta-a-list": (lambda a: {**a, "meta": np.array("[1, 2]")}, "meta input_shape is None"),
    "input_shape-missing": (lambda a: _meta(a, lambda m: m.pop("input_shape")), "meta input_shape is None"),
    "input_shape-2d": (lambda a: _meta(a, lambda m: m.update(input_shape=[3, 32])), "meta input_shape is [3, 32]"),
    "input_shape-strings": (lambda a: _meta(a, lambda m: m.update(input_shape=["3", 32, 32])), "meta input_shape is"),
    "input_shape-other-size": (lambda a: _meta(a, lambda m: m.update(input_shape=[3, 64, 64])), "receives shape (12288,)"),
    "class_names-missing": (lambda a: _meta(a, lambda m: m.pop("class_names")), "meta class_names is None"),
    "class_names-two-for-three": (lambda a: _meta(a, lambda m: m.update(class_names=m["class_names"][:2])),
                                  "it names 2 classes for 3 outputs"),
    "class_names-repeated": (lambda a: _meta(a, lambda m: m.update(class_names=["cat", "cat", "dog"])),
                             "expected a list of distinct names"),
    "class_names-not-strings": (lambda a: _meta(a, lambda m: m.update(class_names=[1, 2, 3])), "meta class_names is [1, 2, 3]"),
    "normalization-missing": (lambda a: _meta(a, lambda m: m.pop("normalization")), "meta normalization is None"),
    "normalization-std-zero": (lambda a: _meta(a, lambda m: m["normalization"].update(std=[0.0, 1.0, 1.0])),
                               "has a value <= 0"),
    "normalization-mean-nan": (lambda a: _meta(a, lambda m: m["normalization"].update(mean=[float("nan"), 0, 0])),
                               "'meta' is not valid JSON (NaN is not a number JSON allows)"),
    "normalization-two-channels": (lambda a: _meta(a, lambda m: m["normalization"].update(std=[1.0, 1.0])),
                                   "expected 3 finite numbers"),
    "model-kind-unknown": (lambda a: _meta(a, lambda m: m.update(model="resnet")), "meta model is 'resnet'"),
}


def _npz(arrays: Arrays, path: Path) -> None:
    save_npz(path, arrays)


def _zip_bomb(path: Path, good: Path) -> None:
    """The good file with one entry's size in the zip directory raised to 2 GiB."""
    data = bytearray(good.read_bytes())
    at = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, at + 24, 0x7FFF0000)
    path.write_bytes(bytes(data))


def _object_array(path: Path, good: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open("architecture.npy", "w") as f:
        np.lib.format.write_array(f, np.array([{"kind": "dense"}], dtype=object), allow_pickle=True)
    path.write_bytes(buf.getvalue())


def _zip_of_text(path: Path, good: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")


# name -> (writer(path, good model path), fragment)
FILE_CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "empty": (lambda p, g: p.write_bytes(b""), "is not a usable model file"),
    "truncated": (lambda p, g: p.write_bytes(g.read_bytes()[:len(g.read_bytes()) // 2]), "is not a usable model file"),
    "zip-start-only": (lambda p, g: p.write_bytes(b"PK\x03\x04" + b"\0" * 40), "is not a usable model file"),
    "text": (lambda p, g: p.write_text("weights: lots\n"), "is not a usable model file"),
    "a-zip-of-text": (_zip_of_text, "its entry 'readme.txt' is not an array"),
    "zip-bomb": (_zip_bomb, "a model file holds at most 1024 entries, 1024 MiB"),
    "pickled-object-array": (_object_array, "is not a usable model file"),
    "folder": (lambda p, g: p.mkdir(), "not a regular file"),
    "fifo": (lambda p, g: os.mkfifo(p), "not a regular file"),
    "missing": (lambda p, g: None, "does not exist"),
}


@pytest.fixture(scope="module")
def good(trained_repo) -> Path:
    return trained_repo.path / "models/model.npz"


@pytest.fixture(scope="module")
def image(trained_repo, tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "cat.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(path)
    return path


def crafted(name: str, good: Path, folder: Path) -> Path:
    path = folder / f"{name}.npz"
    if name in ARRAY_CASES:
        _npz(ARRAY_CASES[name][0](load_npz(good)), path)
    else:
        FILE_CASES[name][0](path, good)
    return path


def fragment(name: str) -> str:
    return (ARRAY_CASES.get(name) or FILE_CASES[name])[1]


CASES = list(ARRAY_CASES) + list(FILE_CASES)


@pytest.mark.parametrize("name", CASES)
def test_predict_refuses_the_model_in_one_line(trained_repo, good, image, tmp_path, name):
    path = crafted(name, good, tmp_path)
    proc = trained_repo.run("bash", "-c", f"ulimit -v {3 << 20}; exec {sys.executable} -m tools.predict "
                                          f"--model '{path}' '{image}'", check=False, timeout=60)
    line = assert_clean_failure(proc, "predict", str(path), fragment(name))
    assert proc.stderr.strip() == line and not proc.stdout


@pytest.mark.parametrize("name", CASES)
def test_evaluate_refuses_the_model_and_keeps_its_outputs(trained_repo, good, tmp_path, name):
    def put(model: Path, saved: Path) -> None:
        crafted_path = crafted(name, saved, tmp_path)
        if name != "missing":
            os.replace(crafted_path, model)

    proc, before, after = evaluate_with(trained_repo, "models/model.npz", put, tmp_path)
    line = assert_clean_failure(proc, "evaluate", "models/model.npz", fragment(name))
    assert proc.stderr.strip() == line
    assert after == before


def test_the_good_model_passes_both(trained_repo, image):
    """Guard for the cases above: the untouched model loads in predict and evaluate."""
    trained_repo.run(sys.executable, "-m", "tools.predict", str(image))
    trained_repo.stage("evaluate", check=True)
