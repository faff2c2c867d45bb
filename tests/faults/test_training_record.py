"""Damaged and crafted files of the training record (models/training/, which `train` writes with
DVCLive and `evaluate` reports, stages/_training_log.py) in place of the good ones: `evaluate` ends
in one line naming the file and what is wrong, exit 1, no traceback, bounded memory, and its
outputs untouched."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.files import MAX_PEAK_RSS, assert_clean_failure, evaluate_with

pytestmark = pytest.mark.slow

SUMMARY = "models/training/metrics.json"
TRAIN_LOSS = "models/training/plots/metrics/train/loss.tsv"
VAL_ACCURACY = "models/training/plots/metrics/val/accuracy.tsv"


def _summary(change: Callable[[dict], object]) -> Callable[[Path, bytes], None]:
    """A writer of the good summary after `change` edits it in place (or returns a replacement)."""
    def write(path: Path, good: bytes) -> None:
        summary = json.loads(good)
        replaced = change(summary)
        path.write_text(json.dumps(summary if replaced is None else replaced))
    return write


def _rows(change: Callable[[list[str]], list[str]]) -> Callable[[Path, bytes], None]:
    """A writer of the good TSV with its lines (header first) changed."""
    return lambda path, good: path.write_text("\n".join(change(good.decode().splitlines())) + "\n")


def _sparse(path: Path, good: bytes) -> None:
    with open(path, "wb") as f:
        f.truncate(100 << 20)


def _set_row(i: int, value: str) -> Callable[[list[str]], list[str]]:
    return lambda lines: lines[:i] + [f"{lines[i].split(chr(9))[0]}\t{value}"] + lines[i + 1:]


# name -> (file, writer(path, good bytes), a fragment of the message)
CASES: dict[str, tuple[str, Callable[[Path, bytes], None], str]] = {
    "summary-missing": (SUMMARY, lambda p, g: None, "does not exist; run `dvc repro train` first"),
    "summary-empty": (SUMMARY, lambda p, g: p.write_bytes(b""), "is not valid JSON"),
    "summary-truncated": (SUMMARY, lambda p, g: p.write_bytes(g[:len(g) // 2]), "is not valid JSON"),
    "summary-binary": (SUMMARY, lambda p, g: p.write_bytes(b"\xff\xfe\x00garbage"), "is not valid JSON"),
    "summary-nested-100000-deep": (SUMMARY, lambda p, g: p.write_text("[" * 100_000 + "]" * 100_000),
                                   "is not valid JSON"),
    "summary-nan-literal": (SUMMARY, lambda p, g: p.write_text(g.decode().replace('"loss": ', '"loss": NaN, "x": ', 1)),
                            "NaN is not a number JSON allows"),
    "summary-100-MiB": (SUMMARY, _sparse, "is larger than 64 MiB"),
    "summary-folder": (SUMMARY, lambda p, g: p.mkdir(), "is not a regular file"),
    "summary-fifo": (SUMMARY, lambda p, g: os.mkfifo(p), "is not a regular file"),
    "summary-a-list": (SUMMARY, _summary(lambda s: [1, 2]), "has step None"),
    "summary-step-0": (SUMMARY, _summary(lambda s: s.update(step=0)), "has step 0"),
    "summary-step-past-the-end": (SUMMARY, _summary(lambda s: s.update(step=10 ** 9)), "has step 1000000000"),
    "summary-step-a-string": (SUMMARY, _summary(lambda s: s.update(step="2")), "has step '2'"),
    "summary-step-true": (SUMMARY, _summary(lambda s: s.update(step=True)), "has step True"),
    "summary-another-epochs-numbers": (SUMMARY, _summary(lambda s: s["val"].update(accuracy=0.123456)),
                                       "does not hold epoch"),
    "summary-extra-key": (SUMMARY, _summary(lambda s: s.update(extra=1)), "does not hold epoch"),
    "series-missing": (TRAIN_LOSS, lambda p, g: None, "does not exist; run `dvc repro train` first"),
    "series-folder": (TRAIN_LOSS, lambda p, g: p.mkdir(), "is not a regular file"),
    "series-fifo": (TRAIN_LOSS, lambda p, g: os.mkfifo(p), "is not a regular file"),
    "series-100-MiB": (TRAIN_LOSS, _sparse, "is larger than 64 MiB"),
    "series-binary": (TRAIN_LOSS, lambda p, g: p.write_bytes(b"\xff\xfe\x00garbage"), "is not UTF-8 text"),
    "series-no-header": (TRAIN_LOSS, _rows(lambda lines: lines[1:]), "does not start with the header"),
    "series-no-rows": (TRAIN_LOSS, _rows(lambda lines: lines[:1]), "holds 0 epochs"),
    "series-step-skipped": (TRAIN_LOSS, _rows(lambda lines: lines[:1] + lines[2:]), "row 1 is 2\\t"),
    "series-three-fields": (TRAIN_LOSS, _rows(lambda lines: [lines[0], lines[1] + "\t7"] + lines[2:]),
                            "expected step 1, a tab and a number"),
    "series-nan": (TRAIN_LOSS, _rows(_set_row(1, "nan")), "step 1 holds nan; expected a finite number >= 0"),
    "series-inf": (TRAIN_LOSS, _rows(_set_row(1, "inf")), "step 1 holds inf"),
    "series-negative": (TRAIN_LOSS, _rows(_set_row(1, "-0.5")), "step 1 holds -0.5"),
    "series-a-word": (TRAIN_LOSS, _rows(_set_row(1, "low")), "step 1 holds low"),
    "series-underscored": (TRAIN_LOSS, _rows(_set_row(1, "1_0")), "step 1 holds 1_0"),
    "series-huge": (TRAIN_LOSS, _rows(_set_row(1, "1e400")), "step 1 holds 1e400"),
    "accuracy-above-1": (VAL_ACCURACY, _rows(_set_row(1, "1.5")), "step 1 holds 1.5; expected a finite number in [0, 1]"),
    "accuracy-one-epoch-short": (VAL_ACCURACY, _rows(lambda lines: lines[:-1]), "holds 2 epochs"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_evaluate_refuses_the_training_record_and_keeps_its_outputs(trained_repo, tmp_path, name):
    rel, writer, fragment = CASES[name]
    proc, before, after = evaluate_with(trained_repo, rel, lambda path, good: writer(path, good.read_bytes()), tmp_path)
    line = assert_clean_failure(proc, "evaluate", rel, fragment)
    assert proc.stderr.strip() == line
    assert after == before


def test_the_good_record_passes_and_evaluate_reproduces_the_training_report(trained_repo):
    """Guard for the cases above, and the report is a function of the record alone: rerun, the
    files come out byte-identical, and metrics.json's `model` is the summary's epoch."""
    files = ("metrics/metrics.json", "plots/loss_curve.png")
    before = {f: (trained_repo.path / f).read_bytes() for f in files}
    proc = trained_repo.stage("evaluate", check=True)
    assert 20 << 20 < proc.peak_rss < MAX_PEAK_RSS, "the fault cases' memory measurement measures nothing"
    assert {f: (trained_repo.path / f).read_bytes() for f in files} == before
    model = json.loads(before["metrics/metrics.json"])["model"]
    summary = json.loads((trained_repo.path / SUMMARY).read_text())
    assert model == {"epoch": summary["step"], "train_loss": summary["train"]["loss"],
                     "val_loss": summary["val"]["loss"], "val_accuracy": summary["val"]["accuracy"]}
