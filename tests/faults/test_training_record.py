"""Damaged and crafted models/training.json (the training record `train` writes and `evaluate`
reports, stages/_history.py) in place of the good one: `evaluate` ends in one line naming the
file and what is wrong, exit 1, no traceback, bounded memory, and its outputs untouched."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.files import assert_clean_failure, evaluate_with

pytestmark = pytest.mark.slow

RECORD = "models/training.json"


def _edit(change: Callable[[dict], object]) -> Callable[[Path, bytes], None]:
    """A writer of the good record after `change` edits it in place (or returns a replacement)."""
    def write(path: Path, good: bytes) -> None:
        record = json.loads(good)
        replaced = change(record)
        path.write_text(json.dumps(record if replaced is None else replaced))
    return write


def _first(key: str, value) -> Callable[[dict], None]:
    return lambda r: r["epochs"][0].update({key: value})


def _drop_first(key: str) -> Callable[[dict], None]:
    def drop(record: dict) -> None:
        del record["epochs"][0][key]
    return drop


def _sparse(path: Path, good: bytes) -> None:
    with open(path, "wb") as f:
        f.truncate(100 << 20)


# name -> (writer(path, good bytes), a fragment of the message)
CASES: dict[str, tuple[Callable[[Path, bytes], None], str]] = {
    "missing": (lambda p, g: None, "does not exist; run `dvc repro train` first"),
    "empty": (lambda p, g: p.write_bytes(b""), "is not valid JSON"),
    "truncated": (lambda p, g: p.write_bytes(g[:len(g) // 2]), "is not valid JSON"),
    "binary": (lambda p, g: p.write_bytes(b"\xff\xfe\x00garbage"), "is not valid JSON"),
    "nested-100000-deep": (lambda p, g: p.write_text("[" * 100_000 + "]" * 100_000), "is not valid JSON"),
    "nan-literal": (lambda p, g: p.write_text(g.decode().replace('"train_loss": ', '"train_loss": NaN, "x": ', 1)),
                    "NaN is not a number JSON allows"),
    "100-MiB": (_sparse, "is larger than 64 MiB"),
    "folder": (lambda p, g: p.mkdir(), "is not a regular file"),
    "fifo": (lambda p, g: os.mkfifo(p), "is not a regular file"),
    "a-list": (_edit(lambda r: [1, 2]), "is not a training record"),
    "no-epochs": (_edit(lambda r: r.update(epochs=[])), "is not a training record"),
    "extra-key": (_edit(lambda r: r.update(extra=1)), "is not a training record"),
    "epoch-a-number": (_edit(lambda r: r.update(epochs=[5])), "epoch entry 1 is 5; expected an object"),
    "epoch-missing-a-field": (_edit(_drop_first("learning_rate")), "expected an object with"),
    "epoch-numbered-2": (_edit(_first("epoch", 2)), "epoch entry 1 has epoch 2; expected 1"),
    "epoch-a-float": (_edit(_first("epoch", 1.0)), "epoch entry 1 has epoch 1.0; expected 1"),
    "train_loss-a-string": (_edit(_first("train_loss", "0.5")), "has train_loss '0.5'; expected a finite number"),
    "train_loss-negative": (_edit(_first("train_loss", -1.0)), "has train_loss -1.0"),
    "learning_rate-huge-int": (_edit(_first("learning_rate", 10 ** 400)), "has learning_rate"),
    "val_loss-missing-later": (_edit(lambda r: r["epochs"][-1].update(val_loss=None)), "has val_loss None"),
    "val_accuracy-above-1": (_edit(_first("val_accuracy", 1.5)), "val_accuracy 1.5, above 1"),
    "restored_epoch-0": (_edit(lambda r: r.update(restored_epoch=0)), "has restored_epoch 0"),
    "restored_epoch-past-the-end": (_edit(lambda r: r.update(restored_epoch=10 ** 9)), "has restored_epoch 1000000000"),
    "restored_epoch-a-string": (_edit(lambda r: r.update(restored_epoch="3")), "has restored_epoch '3'"),
    "restored_epoch-true": (_edit(lambda r: r.update(restored_epoch=True)), "has restored_epoch True"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_evaluate_refuses_the_training_record_and_keeps_its_outputs(trained_repo, tmp_path, name):
    proc, before, after = evaluate_with(trained_repo, RECORD, lambda path, good: CASES[name][0](path, good.read_bytes()),
                                        tmp_path)
    line = assert_clean_failure(proc, "evaluate", RECORD, CASES[name][1])
    assert proc.stderr.strip() == line
    assert after == before


def test_the_good_record_passes_and_evaluate_reproduces_the_training_report(trained_repo):
    """Guard for the cases above, and the report is a function of the record alone: rerun, the
    three files come out byte-identical."""
    files = ("metrics/train.json", "plots/training.csv", "plots/loss_curve.png")
    before = {f: (trained_repo.path / f).read_bytes() for f in files}
    trained_repo.stage("evaluate", check=True)
    assert {f: (trained_repo.path / f).read_bytes() for f in files} == before
    summary = json.loads(before["metrics/train.json"])
    record = json.loads((trained_repo.path / RECORD).read_text())
    assert summary["epochs"] == len(record["epochs"])
    assert summary["final_train_loss"] == record["epochs"][-1]["train_loss"]
