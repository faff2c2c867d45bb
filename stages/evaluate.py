"""Stage `evaluate`: score the trained model on the test split and report its training run.

    python -m stages.evaluate

Reads models/ (model.npz and the training record, stages/_training_log.py) and
data/prepared/test_*.npy. Writes what git tracks, so that any clone can read it:

- metrics/metrics.json, what a person compares (`dvc exp show`, `dvc metrics diff`), the same
  keys whatever the number of classes: `test` (accuracy and macro-averaged precision, recall and
  F1 on the test split) and `model` (the epoch whose weights the model holds, with that epoch's
  training loss, validation loss and validation accuracy);
- plots/confusion.csv (one row per test image, `actual,predicted` as class names) and
  plots/confusion_matrix.png; plots/per_class.csv (precision / recall / F1 per class) and
  plots/per_class.png; plots/misclassified.csv and .png (the most confidently misclassified test
  images); plots/loss_curve.png (the training run, the saved epoch marked);

and prints a report with every class.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cifar10.layout import rows_to_pixels
from numpynet.data import denormalize
from numpynet.metrics import classification_report, confusion_matrix, most_confident_errors
from stages import _model_file, _plots, _prepared, _training_log
from stages._io import StageError, csv_text, json_text, run_stage, write_all
from stages.params import Boolean, Param, Section, load
from stages.paths import (
    CONFUSION_CSV,
    CONFUSION_PNG,
    ERRORS_CSV,
    ERRORS_PNG,
    LOSS_PNG,
    METRICS,
    MODEL,
    PER_CLASS_CSV,
    PER_CLASS_PNG,
    PREPARED,
)

PARAMS = Section("evaluate", (
    Param("flip_tta", Boolean(), "test-time augmentation: average the predictions for each image and its mirror"),
    Param("translate_tta", Boolean(), "test-time augmentation: and of its copies moved one pixel down-right and "
          "up-left (airbench94's; with flip_tta, six views)"),
))
GALLERY_SIZE = 16


def format_report(report: dict) -> str:
    """The report as a fixed-width table, like the reference project's printout."""
    names = list(report["per_class"])
    width = max(12, *(len(n) for n in names))
    cell = max(9, *(len(n) for n in names))   # whole class names as column heads
    lines = [f"Test accuracy: {report['accuracy']:.4f}", "",
             f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
    for name, m in report["per_class"].items():
        lines.append(f"{name:<{width}} {m['precision']:>9.4f} {m['recall']:>9.4f} {m['f1']:>9.4f} {m['support']:>9d}")
    macro = report["macro_avg"]
    total = sum(m["support"] for m in report["per_class"].values())
    lines.append(f"{'macro avg':<{width}} {macro['precision']:>9.4f} {macro['recall']:>9.4f} {macro['f1']:>9.4f} {total:>9d}")
    lines += ["", "Confusion matrix (rows: true, columns: predicted)",
              " " * width + "".join(f" {n:>{cell}}" for n in names)]
    for name, row in report["confusion_matrix"].items():
        lines.append(f"{name:<{width}}" + "".join(f" {row[n]:>{cell}d}" for n in names))
    return "\n".join(lines)


def error_gallery(x_test: np.ndarray, y_test: np.ndarray, proba: np.ndarray,
                  model: _model_file.Model) -> dict[Path, bytes | str]:
    """plots/misclassified.csv and .png: the most confidently misclassified test images."""
    names = model.class_names
    idx = most_confident_errors(y_test, proba, GALLERY_SIZE)
    pred = proba[idx].argmax(axis=1)
    conf = proba[idx, pred]
    captions = [f"true: {names[y_test[i]]}\npred: {names[p]} ({c:.2f})" for i, p, c in zip(idx, pred, conf)]
    pixels = rows_to_pixels(denormalize(x_test[idx], model.normalization), model.input_shape)
    return {ERRORS_CSV: csv_text(["index", "actual", "predicted", "probability"],
                                 [[i, names[y_test[i]], names[p], f"{c:.4f}"] for i, p, c in zip(idx, pred, conf)]),
            ERRORS_PNG: _plots.image_gallery(pixels, captions, title="Most confidently misclassified test images")}


def summary(report: dict, record: _training_log.TrainingRecord) -> dict:
    """metrics/metrics.json: a handful of numbers, whatever the number of classes."""
    return {"test": {"accuracy": report["accuracy"], **report["macro_avg"]}, "model": record.saved()}


def main() -> None:
    values = load(PARAMS)
    model = _model_file.load(MODEL)
    record = _training_log.read()
    names = model.class_names
    x_test, y_test = _prepared.read_split("test", len(names), classes_of=str(MODEL))
    if x_test.shape[1] != math.prod(model.input_shape):
        raise StageError(f"the test data in {PREPARED}/ has rows of {x_test.shape[1]} values, the model takes "
                         f"{math.prod(model.input_shape)}; rerun `dvc repro`")

    proba = model.probabilities(x_test, values["flip_tta"], values["translate_tta"])
    y_pred = proba.argmax(axis=1)
    report = classification_report(y_test, y_pred, names)
    metrics = ("precision", "recall", "f1")
    per_class = {name: [m[metric] for metric in metrics] for name, m in report["per_class"].items()}
    # every output made first, then written as one set: an error on the way replaces none of them
    write_all({
        METRICS: json_text(summary(report, record)),
        CONFUSION_CSV: csv_text(["actual", "predicted"], [[names[a], names[p]] for a, p in zip(y_test, y_pred)]),
        CONFUSION_PNG: _plots.confusion_matrix(confusion_matrix(y_test, y_pred, len(names)), names),
        PER_CLASS_CSV: csv_text(["class_metric", "value"],
                                [[f"{name} {metric}", f"{v:.6f}"] for name, vs in per_class.items()
                                 for metric, v in zip(metrics, vs)]),
        PER_CLASS_PNG: _plots.per_class(per_class, metrics),
        **error_gallery(x_test, y_test, proba, model),
        LOSS_PNG: _plots.loss_curve(record.epochs, record.train_loss, record.val_loss, record.val_accuracy,
                                    record.saved_epoch),
    })
    print(format_report(report))


if __name__ == "__main__":
    run_stage("evaluate", main)
