"""Damaged or foreign data/prepared/ (what filter_normalize writes, what train and evaluate
read): each ends train or evaluate in one line naming the file and saying to rebuild it, exit 1,
no traceback, and no output changed. Files are swapped, never edited in place (they may share
storage with DVC's cache), and put back after each case."""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.files import assert_clean_failure, snapshot

pytestmark = pytest.mark.slow

DATA = Path("data/prepared")


def _npy_with_huge_header(path: Path) -> None:
    """A valid .npy header declaring 10^12 float32 values, followed by 16 bytes."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 16)


def _array(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path, Path], None]:
    def write(src: Path, dest: Path) -> None:
        np.save(dest, transform(np.load(src)), allow_pickle=False)
    return write


def _without(key: str) -> Callable[[Path, Path], None]:
    def write(src: Path, dest: Path) -> None:
        info = json.loads(src.read_text())
        info.pop(key)
        dest.write_text(json.dumps(info))
    return write


# name -> (stage, file, writer(original, new path) or None to delete, fragment)
CASES: dict[str, tuple[str, str, Callable[[Path, Path], None] | None, str]] = {
    "info-no-class_names": ("train", "dataset.json", _without("class_names"), "no list of distinct class_names"),
    "info-a-list": ("train", "dataset.json", lambda s, d: d.write_text("[1, 2]"), "no list of distinct class_names"),
    "info-not-json": ("train", "dataset.json", lambda s, d: d.write_text("{class_names"), "is not valid JSON"),
    "info-not-utf8": ("train", "dataset.json", lambda s, d: d.write_bytes(b'{"a": "\xff"}'), "is not valid JSON"),
    "info-no-normalization": ("train", "dataset.json", _without("normalization"), "no normalization mean and std"),
    "info-missing": ("train", "dataset.json", None, "dataset.json does not exist"),
    # a FIFO would make a plain open() wait forever for a writer
    "info-a-fifo": ("train", "dataset.json", lambda s, d: os.mkfifo(d), "is not a regular file"),
    "info-100000-deep": ("train", "dataset.json", lambda s, d: d.write_text("[" * 100_000 + "]" * 100_000),
                         "nests deeper than 32 levels"),
    "info-key-twice": ("train", "dataset.json", lambda s, d: d.write_text(s.read_text()[:-2] + ', "counts": {}}'),
                       "appears twice"),
    "label-too-large": ("train", "train_labels.npy", _array(lambda y: np.where(np.arange(len(y)) == 3, 3, y)),
                        "holds the label 3, outside 0..2"),
    "label-negative": ("train", "val_labels.npy", _array(lambda y: np.where(np.arange(len(y)) == 0, -1, y)),
                       "holds the label -1, outside 0..2"),
    "labels-float": ("train", "train_labels.npy", _array(lambda y: y.astype(np.float64)), "integer labels"),
    "labels-short": ("train", "train_labels.npy", _array(lambda y: y[:-1]), "integer labels"),
    "images-float64": ("train", "train_images.npy", _array(lambda x: x.astype(np.float64)), "not float32 (N, 3072)"),
    "images-columns": ("train", "val_images.npy", _array(lambda x: x[:, :-1]), "not float32 (N, 3072)"),
    "images-nan": ("train", "train_images.npy", _array(lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5,
                                                                          np.float32("nan"), x)), "NaN or infinite"),
    "images-empty": ("train", "train_images.npy", _array(lambda x: x[:0]), "integer labels"),
    "images-huge-header": ("train", "train_images.npy", lambda s, d: _npy_with_huge_header(d), "cannot read train data"),
    "images-truncated": ("train", "train_images.npy", lambda s, d: d.write_bytes(s.read_bytes()[:1000]),
                         "cannot read train data"),
    "images-pickled": ("train", "train_images.npy", lambda s, d: np.save(d, np.array([{}], dtype=object)),
                       "cannot read train data"),
    "images-missing": ("train", "val_images.npy", None, "val_images.npy does not exist"),
    "test-label-too-large": ("evaluate", "test_labels.npy", _array(lambda y: y + 5), "outside 0..2"),
    "test-images-columns": ("evaluate", "test_images.npy", _array(lambda x: x[:, :100]), "not float32 (N, 3072)"),
    "test-images-huge-header": ("evaluate", "test_images.npy", lambda s, d: _npy_with_huge_header(d),
                                "cannot read test data"),
    "test-missing": ("evaluate", "test_labels.npy", None, "test_labels.npy does not exist"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_stage_refuses_the_prepared_data_in_one_line(trained_repo, tmp_path, name):
    stage, file, write, fragment = CASES[name]
    target = trained_repo.path / DATA / file
    saved = tmp_path / file
    os.replace(target, saved)
    try:
        if write is not None:
            write(saved, tmp_path / f"new-{file}")
            os.replace(tmp_path / f"new-{file}", target)
        before = snapshot(trained_repo.path, ("models", "metrics", "plots", "dvc.lock"))
        proc = trained_repo.run("bash", "-c", f"ulimit -v {3 << 20}; exec {sys.executable} -m stages.{stage}",
                                check=False, timeout=120)
        after = snapshot(trained_repo.path, ("models", "metrics", "plots", "dvc.lock"))
    finally:
        os.replace(saved, target)
    line = assert_clean_failure(proc, stage, "data/prepared", fragment)
    assert proc.stderr.strip() == line
    assert after == before
