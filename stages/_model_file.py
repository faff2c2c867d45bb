"""models/model.npz as the stages use it: `save` after training, `load` for evaluate and predict.

The file is `numpynet.model_file.to_arrays` written with `_io.save_npz`; its meta holds what a user of
the model needs besides the weights: the class names (in output order), the input normalization
and the image shape. `load` is the one loader of the project: whatever is wrong with the file
(missing, truncated, foreign, crafted), it ends in one StageError naming the file and the
problem, and it refuses models that would load but give meaningless answers.
"""

from __future__ import annotations

import math
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifar10.layout import LAYOUT
from numpynet.inference import class_probabilities
from numpynet.model import MODEL_KINDS, Network
from numpynet.model_file import ModelFormatError, from_arrays, to_arrays
from stages._io import StageError, load_npz, quote, save_npz
from stages.paths import MODEL

MAX_MODEL_BYTES = 1 << 30   # decompressed: a model file's arrays and meta, all told
MAX_ENTRIES = 1024


@dataclass(frozen=True)
class Model:
    network: Network
    kind: str                          # mlp | cnn | frontier
    class_names: list[str]             # output k is class_names[k]
    normalization: dict[str, Any]      # {"method", "mean": [C], "std": [C]} in pixel units
    input_shape: tuple[int, int, int]  # (C, H, W) of the images, given to the network as rows
    path: Path | None = None

    def probabilities(self, x: np.ndarray, flip_tta: bool, translate_tta: bool = False) -> np.ndarray:
        """Class probabilities (N, K) for normalized rows x (N, C*H*W), as evaluate and predict give
        them; StageError if the model's outputs are not finite (weights within float32's range
        can still overflow on the way), so no NaN becomes a metric or a prediction."""
        with np.errstate(over="ignore", invalid="ignore"):
            proba = class_probabilities(self.network, x, self.input_shape, flip_tta, translate_tta)
        if not np.isfinite(proba).all():
            raise StageError(f"{self.path}: the model's outputs overflow (its weights are too large for float32 "
                             "arithmetic); it is not a model train writes: rebuild it with `dvc repro train`")
        return proba


def save(path: Path, network: Network, kind: str, class_names: list[str], normalization: dict[str, Any],
         input_shape: tuple[int, int, int]) -> None:
    meta = {"model": kind, "class_names": list(class_names), "normalization": normalization,
            "input_shape": list(input_shape), "input_layout": LAYOUT}
    save_npz(path, to_arrays(network, meta))


MAX_DIRECTORY_BYTES = 1 << 20   # the zip's central directory: 1,024 entries of a few dozen bytes each


def _check_directory_size(path: Path) -> None:
    """Refuse a zip whose central directory declares more entries or bytes than a model file has,
    from its end record, before `zipfile` reads the directory (which it holds in memory whole:
    a crafted 1 GiB file can declare twenty million entries)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")   # the end-of-central-directory record
    if at < 0 or len(tail) - at < 22:
        raise ModelFormatError("it is not a zip file (no end of central directory)")
    entries, directory_bytes = struct.unpack("<HI", tail[at + 10:at + 16])
    if entries == 0xFFFF or directory_bytes == 0xFFFFFFFF:   # ZIP64: the real counts are in the ZIP64 record
        z64 = tail.rfind(b"PK\x06\x06", 0, at)
        if z64 < 0 or len(tail) - z64 < 56:
            raise ModelFormatError("its ZIP64 end record is missing or cut short")
        entries, directory_bytes = struct.unpack("<QQ", tail[z64 + 32:z64 + 48])
    if entries > MAX_ENTRIES or directory_bytes > MAX_DIRECTORY_BYTES:
        raise ModelFormatError(f"its zip directory declares {entries} entries in {directory_bytes} bytes; a model file "
                               f"holds at most {MAX_ENTRIES} entries")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The entries of an .npz, after checking from the zip directory that they are few and small."""
    _check_directory_size(path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES or sum(i.file_size for i in infos) > MAX_MODEL_BYTES:
            raise ModelFormatError(f"it declares {len(infos)} entries of {sum(i.file_size for i in infos)} "
                                   f"bytes in all; a model file holds at most {MAX_ENTRIES} entries, "
                                   f"{MAX_MODEL_BYTES >> 20} MiB")
        foreign = [i.filename for i in infos if not i.filename.endswith(".npy")]
        if foreign:
            raise ModelFormatError(f"its entry {quote(foreign[0])} is not an array (.npy)")
    return load_npz(path)


def _check_meta(meta: dict[str, Any], n_outputs: int) -> None:
    kind, names, norm = meta.get("model"), meta.get("class_names"), meta.get("normalization")
    if kind not in MODEL_KINDS:
        raise ModelFormatError(f"meta model is {quote(kind)}; expected one of {', '.join(MODEL_KINDS)}")
    if not (isinstance(names, list) and all(isinstance(n, str) and 0 < len(n) <= 100 for n in names)
            and len(set(names)) == len(names)):
        raise ModelFormatError(f"meta class_names is {quote(names)}; expected a list of distinct names")
    if len(names) != n_outputs:
        raise ModelFormatError(f"it names {len(names)} classes for {n_outputs} outputs")
    channels = meta["input_shape"][0]
    if not isinstance(norm, dict):
        raise ModelFormatError(f"meta normalization is {quote(norm)}; expected mean and std per channel")
    for key in ("mean", "std"):
        values = norm.get(key)
        if not (isinstance(values, list) and len(values) == channels
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            raise ModelFormatError(f"meta normalization {key} is {quote(values)}; expected {channels} finite numbers")
    if not all(v > 0 for v in norm["std"]):
        raise ModelFormatError(f"meta normalization std {quote(norm['std'])} has a value <= 0")


def load(path: Path) -> Model:
    """The model in `path`, checked; StageError (one line) for anything wrong with the file."""
    hint = "run `dvc repro train` to rebuild it" if path == MODEL else \
        "give a model file written by the train stage"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ModelFormatError("it is not a regular file (a folder, device or pipe?)")
        if info.st_size > MAX_MODEL_BYTES:
            raise ModelFormatError(f"it is larger than {MAX_MODEL_BYTES >> 20} MiB")
        network, meta = from_arrays(_read_arrays(path))
        _check_meta(meta, network.n_outputs)
    except FileNotFoundError:
        raise StageError(f"model file {quote(path, 200, bare=True)} does not exist; {hint}") from None
    except PermissionError as err:
        raise StageError(f"cannot read the model file {path} ({err.strerror}); fix its permissions") from None
    except (ModelFormatError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, MemoryError) as err:
        # truncated or foreign files fail in zipfile or np.load, crafted ones in from_arrays
        problem = str(err) or type(err).__name__
        raise StageError(f"{quote(path, 200, bare=True)} is not a usable model file: {quote(problem, 200, bare=True)}; "
                         f"{hint}") from None
    return Model(network, meta["model"], meta["class_names"], meta["normalization"], meta["input_shape"], path)
