"""tools.rerun_check's verdicts: the tolerance of each kind of metric, in-process. The check run
end to end (a clone, `dvc repro --force`, the report and exit status) is
tests/pipeline/test_rerun_check.py."""

from __future__ import annotations

import pytest

from tools import rerun_check


@pytest.mark.parametrize("key, old, new, fits", [
    ("test.accuracy", 0.85, 0.859, True), ("test.accuracy", 0.85, 0.8611, False),
    ("test.f1", 0.8, 0.795, True), ("val.accuracy", 0.8, 0.789, False),
    ("model.train_loss", 0.40, 0.419, True), ("model.val_loss", 0.40, 0.43, False), ("train.loss", 0.4, 0.3, False),
    ("model.epoch", 40, 50, True), ("model.epoch", 40, 29, False), ("step", 25, 30, True),
    ("something.else", 100, 100.9, True), ("something.else", 100, 101.1, False),
])
def test_tolerances_by_kind_of_metric(key, old, new, fits):
    rows = rerun_check.judge({"m.json": {key: {"old": old, "new": new}}}, exact=False)
    assert rows[0].ok is fits
    assert rerun_check.judge({"m.json": {key: {"old": old, "new": old}}}, exact=True)[0].ok
    assert not rerun_check.judge({"m.json": {key: {"old": old, "new": new}}}, exact=True)[0].ok
