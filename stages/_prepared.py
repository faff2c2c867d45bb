"""data/prepared/ as `train` and `evaluate` read it, checked: what filter_normalize writes, or a
StageError saying what is wrong and to rebuild it.

    dataset.json                 {"class_names": [K names], "normalization": {...}, "counts": {...}}
    <split>_images.npy           float32 (N, ROW_LENGTH) normalized rows, split in train / val / test
    <split>_labels.npy           int64 (N,) in 0..K-1
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cifar10.layout import ROW_LENGTH
from stages._io import StageError, load_npy, quote
from stages._read import read_json
from stages.paths import DATASET_INFO, PREPARED, prepared_arrays

REBUILD = "run `dvc repro -f filter_normalize` to rebuild it"
MAX_INFO_BYTES = 1 << 20   # dataset.json holds a few numbers per class and channel


def read_info() -> dict[str, Any]:
    """dataset.json, with its class names checked."""
    info = read_json(DATASET_INFO, MAX_INFO_BYTES, REBUILD, "run `dvc repro filter_normalize` first")
    names = info.get("class_names") if isinstance(info, dict) else None
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)
            and len(set(names)) == len(names)):
        raise StageError(f"{DATASET_INFO} has no list of distinct class_names (found {quote(names)}); {REBUILD}")
    norm = info.get("normalization")
    if not (isinstance(norm, dict) and isinstance(norm.get("mean"), list) and isinstance(norm.get("std"), list)):
        raise StageError(f"{DATASET_INFO} has no normalization mean and std; {REBUILD}")
    return info


def read_split(split: str, n_classes: int, classes_of: str = str(DATASET_INFO)) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, ROW_LENGTH), labels int (N,) in 0..n_classes-1) of one split; `classes_of`
    names where n_classes comes from, for the message."""
    images_path, labels_path = prepared_arrays(split)
    try:
        images, labels = load_npy(images_path), load_npy(labels_path)
    except FileNotFoundError as err:
        raise StageError(f"{err.filename} does not exist; run `dvc repro filter_normalize` first") from None
    except (ValueError, EOFError, OSError) as err:
        raise StageError(f"cannot read {split} data in {PREPARED}/ ({quote(str(err), 120, bare=True)}); {REBUILD}") from None
    if images.dtype != np.float32 or images.ndim != 2 or images.shape[1] != ROW_LENGTH:
        raise StageError(f"{images_path} holds {images.dtype} {images.shape}, not float32 (N, {ROW_LENGTH}) "
                         f"rows; {REBUILD}")
    if labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
        raise StageError(f"{labels_path} holds {labels.dtype} {labels.shape}, not {len(images)} integer labels; {REBUILD}")
    if labels.size and not 0 <= labels.min() <= labels.max() < n_classes:
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise StageError(f"{labels_path} holds the label {bad}, outside 0..{n_classes - 1} for the "
                         f"{n_classes} classes of {classes_of}; {REBUILD}")
    if not np.isfinite(images).all():
        raise StageError(f"{images_path} holds NaN or infinite values; {REBUILD}")
    return images, labels
