"""Stage `filter_normalize`: choose classes, split off validation, normalize.

    python -m stages.filter_normalize

Reads data/raw/ (from `fetch`) and params `filter_normalize.*`; writes
data/prepared/{train,val,test}_{images,labels}.npy (float32 (N, 3072) in CIFAR's
channel-plane order; int64 labels 0..k-1 in the order of `classes`) and
data/prepared/dataset.json (class names, split counts, normalization statistics).
"""

from __future__ import annotations

import json

import numpy as np

from cifar10.layout import CLASS_NAMES, IMAGE_SHAPE, ROW_LENGTH
from numpynet.data import NORMALIZATIONS, class_rows, normalization_stats, normalize, stratified_split
from stages._io import StageError, atomic_dir, load_npy, map_npy, run_stage, save_npy, save_npy_chunks, write_json
from stages.params import Choice, Integer, Names, Param, Real, Section, load
from stages.paths import DATASET_INFO, PREPARED, RAW, RAW_CLASS_NAMES, prepared_arrays, raw_arrays

CHUNK_ROWS = 4096   # images normalized at a time: 48 MiB of float32

PARAMS = Section("filter_normalize", (
    Param("classes", Names(CLASS_NAMES, 2), "the classes to keep, labelled 0..k-1 in this order"),
    Param("normalize", Choice(NORMALIZATIONS), "scale: pixels / 255; standardize: per-channel mean and std of train"),
    Param("val_fraction", Real(0, 0.5), "stratified validation split carved from train"),
    Param("seed", Integer(0, 2 ** 63 - 1), "seed of the validation split"),
))


def load_raw(split: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """data/raw/{split}_images.npy uint8 (N, 3072) and {split}_labels.npy int (N,) in 0..n_classes-1."""
    images_path, labels_path = raw_arrays(split)
    try:
        images = map_npy(images_path)   # header and size checked
        labels = load_npy(labels_path)
    except (OSError, ValueError, EOFError) as err:
        raise StageError(f"cannot read {RAW}/{split}_*.npy ({err}); run `dvc repro fetch` "
                         f"(or `dvc checkout {RAW}`) first") from None
    if (images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != ROW_LENGTH or labels.shape != images.shape[:1]
            or labels.dtype.kind not in "iu" or (labels.size and not 0 <= labels.min() <= labels.max() < n_classes)):
        raise StageError(f"{RAW}/{split}_*.npy are not what fetch writes (images {images.dtype} {images.shape}, "
                         f"labels {labels.dtype} {labels.shape}); run `dvc repro -f fetch` to rebuild {RAW}/")
    return images, labels


def main() -> None:
    values = load(PARAMS)
    try:
        all_names = json.loads(RAW_CLASS_NAMES.read_text())
    except (OSError, ValueError) as err:
        raise StageError(f"cannot read {RAW_CLASS_NAMES} ({err}); run `dvc repro fetch` first") from err
    if all_names != list(CLASS_NAMES):
        raise StageError(f"{RAW_CLASS_NAMES} does not hold the CIFAR-10 names; run `dvc repro -f fetch`")
    classes = list(values["classes"])
    ids = [all_names.index(c) for c in classes]

    # Images stay memory-mapped; the splits are row numbers into them until they are written,
    # normalized a chunk of rows at a time.
    raw_train, raw_train_labels = load_raw("train", len(all_names))
    raw_test, raw_test_labels = load_raw("test", len(all_names))
    rows, train_labels = class_rows(raw_train_labels, ids)
    test_rows, test_labels = class_rows(raw_test_labels, ids)
    train_idx, val_idx = stratified_split(train_labels, values["val_fraction"], np.random.default_rng(values["seed"]))
    if len(train_idx) == 0:
        raise StageError(f"no training images left for classes {classes}")
    stats = normalization_stats(raw_train, values["normalize"], IMAGE_SHAPE[0], rows[train_idx])  # train split only

    splits = {  # split -> (images, their rows, labels)
        "train": (raw_train, rows[train_idx], train_labels[train_idx]),
        "val": (raw_train, rows[val_idx], train_labels[val_idx]),
        "test": (raw_test, test_rows, test_labels),
    }
    with atomic_dir(PREPARED) as tmp:
        for split, (images, split_rows, labels) in splits.items():
            images_path, labels_path = prepared_arrays(split)
            chunks = (normalize(images[split_rows[i:i + CHUNK_ROWS]], stats) for i in range(0, len(split_rows), CHUNK_ROWS))
            save_npy_chunks(tmp / images_path.name, (len(split_rows), ROW_LENGTH), np.float32, chunks)
            save_npy(tmp / labels_path.name, labels.astype(np.int64))
        write_json(tmp / DATASET_INFO.name, {
            "class_names": classes,
            "counts": {s: {"total": len(y), **{c: int(np.sum(y == i)) for i, c in enumerate(classes)}}
                       for s, (_, _, y) in splits.items()},
            "normalization": {"method": values["normalize"], **stats},
        })
    counts = ", ".join(f"{s} {len(y)}" for s, (_, _, y) in splits.items())
    print(f"filter_normalize: {', '.join(classes)} -> {counts} ({values['normalize']})")


if __name__ == "__main__":
    run_stage("filter_normalize", main)
