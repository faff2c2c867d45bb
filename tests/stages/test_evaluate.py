"""stages.evaluate's report and summary, in-process (the stage itself runs end to end in
tests/pipeline/test_e2e.py)."""

from __future__ import annotations

import numpy as np

from numpynet.metrics import classification_report
from stages.evaluate import format_report


def test_the_terminal_report_shows_whole_class_names_in_aligned_columns():
    names = ["airplane", "automobile", "bird"]
    y_true, y_pred = np.array([0, 1, 2, 1, 1]), np.array([0, 1, 1, 1, 2])
    lines = format_report(classification_report(y_true, y_pred, names)).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Confusion matrix"))
    heads, rows = lines[header + 1], lines[header + 2:header + 5]
    assert heads.split() == names                      # "automobile", not "automobil"
    assert all(len(row) == len(heads) for row in rows)  # columns line up under whole names
    for name, row in zip(names, rows):
        assert row.split()[0] == name
    assert [int(v) for v in rows[1].split()[1:]] == [0, 2, 1]   # true automobile: 2 right, 1 taken for a bird
    for name in names:
        end = heads.index(name) + len(name)
        assert all(row[end - 1] != " " for row in rows), "a count is not right-aligned under its class"
