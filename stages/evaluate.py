"""Stage `evaluate`: score the trained model on the test split.

    python -m stages.evaluate

Reads models/model.npz and data/prepared/test_*.npy; writes metrics/metrics.json
(accuracy, per-class precision / recall / F1 / support keyed by class name,
macro averages, confusion matrix), plots/confusion.csv (one row per test image,
`actual,predicted` as class names), plots/confusion_matrix.png, plots/per_class.csv
(precision / recall / F1 per class, for a bar chart), and a gallery of the most
confidently misclassified test images (plots/misclassified.png, with its rows in
plots/misclassified.csv), and prints a report. It also reports the training run from
models/training.json: metrics/train.json, plots/training.csv and plots/loss_curve.png.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cifar10.layout import rows_to_pixels
from numpynet.data import denormalize
from numpynet.inference import class_probabilities
from numpynet.metrics import classification_report, confusion_matrix, most_confident_errors
from numpynet.training import EpochRecord
from stages import _history, _model_file, _plots, _prepared
from stages._io import StageError, run_stage, write_json, write_text
from stages.params import Boolean, Param, Section, load

MODEL = Path("models/model.npz")
METRICS = Path("metrics/metrics.json")
CONFUSION_CSV = Path("plots/confusion.csv")
CONFUSION_PNG = Path("plots/confusion_matrix.png")
PER_CLASS_CSV = Path("plots/per_class.csv")
ERRORS_CSV = Path("plots/misclassified.csv")
ERRORS_PNG = Path("plots/misclassified.png")
TRAIN_METRICS = Path("metrics/train.json")
TRAINING_CSV = Path("plots/training.csv")
LOSS_PNG = Path("plots/loss_curve.png")

PARAMS = Section("evaluate", (
    Param("flip_tta", Boolean(), "test-time augmentation: average the predictions for each image and its mirror"),
))
GALLERY_SIZE = 16


def format_report(report: dict) -> str:
    """The report as a fixed-width table, like the reference project's printout."""
    names = list(report["per_class"])
    width = max(12, *(len(n) for n in names))
    lines = [f"Test accuracy: {report['accuracy']:.4f}", "",
             f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
    for name, m in report["per_class"].items():
        lines.append(f"{name:<{width}} {m['precision']:>9.4f} {m['recall']:>9.4f} {m['f1']:>9.4f} {m['support']:>9d}")
    macro = report["macro_avg"]
    total = sum(m["support"] for m in report["per_class"].values())
    lines.append(f"{'macro avg':<{width}} {macro['precision']:>9.4f} {macro['recall']:>9.4f} {macro['f1']:>9.4f} {total:>9d}")
    lines += ["", "Confusion matrix (rows: true, columns: predicted)",
              " " * width + "".join(f" {n[:9]:>9}" for n in names)]
    for name, row in report["confusion_matrix"].items():
        lines.append(f"{name:<{width}}" + "".join(f" {row[n]:>9d}" for n in names))
    return "\n".join(lines)


def write_error_gallery(x_test: np.ndarray, y_test: np.ndarray, proba: np.ndarray, model: _model_file.Model) -> None:
    names = model.class_names
    idx = most_confident_errors(y_test, proba, GALLERY_SIZE)
    pred = proba[idx].argmax(axis=1)
    conf = proba[idx, pred]
    write_text(ERRORS_CSV, "index,actual,predicted,probability\n" + "".join(
        f"{i},{names[y_test[i]]},{names[p]},{c:.4f}\n" for i, p, c in zip(idx, pred, conf)))
    captions = [f"true: {names[y_test[i]]}\npred: {names[p]} ({c:.2f})" for i, p, c in zip(idx, pred, conf)]
    pixels = rows_to_pixels(denormalize(x_test[idx], model.normalization), model.input_shape)
    _plots.image_gallery(ERRORS_PNG, pixels, captions, title="Most confidently misclassified test images")


def write_training_report(history: list[EpochRecord], restored_epoch: int | None) -> None:
    write_json(TRAIN_METRICS, _history.summary(history, restored_epoch))
    write_text(TRAINING_CSV, _history.csv_rows(history))
    has_val = history[-1].val_loss is not None
    _plots.loss_curve(LOSS_PNG, [r.epoch for r in history], [r.train_loss for r in history],
                      [r.val_loss for r in history] if has_val else None,
                      [r.val_accuracy for r in history] if has_val else None)


def main() -> None:
    flip_tta = load(PARAMS)["flip_tta"]
    model = _model_file.load(MODEL)
    history, restored_epoch = _history.read()
    names = model.class_names
    x_test, y_test = _prepared.read_split("test", len(names), classes_of=str(MODEL))
    if x_test.shape[1] != math.prod(model.input_shape):
        raise StageError(f"the test data in {_prepared.DATA}/ has rows of {x_test.shape[1]} values, the model takes "
                         f"{math.prod(model.input_shape)}; rerun `dvc repro`")

    proba = class_probabilities(model.network, x_test, model.input_shape, flip_tta)
    y_pred = proba.argmax(axis=1)
    report = classification_report(y_test, y_pred, names)
    write_json(METRICS, report)
    write_text(CONFUSION_CSV, "actual,predicted\n" + "".join(f"{names[a]},{names[p]}\n" for a, p in zip(y_test, y_pred)))
    _plots.confusion_matrix(CONFUSION_PNG, confusion_matrix(y_test, y_pred, len(names)), names)
    write_text(PER_CLASS_CSV, "class_metric,value\n" + "".join(
        f"{name} {metric},{m[metric]:.6f}\n"
        for name, m in report["per_class"].items() for metric in ("precision", "recall", "f1")))
    write_error_gallery(x_test, y_test, proba, model)
    write_training_report(history, restored_epoch)
    print(format_report(report))


if __name__ == "__main__":
    run_stage("evaluate", main)
