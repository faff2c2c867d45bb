"""Stage `evaluate`: score the trained model on the test split.

    python -m stages.evaluate

Reads models/model.npz and data/prepared/test_*.npy; writes metrics/metrics.json
(accuracy, per-class precision / recall / F1 / support keyed by class name,
macro averages, confusion matrix), plots/confusion.csv (one row per test image,
`actual,predicted` as class names), plots/confusion_matrix.png, plots/per_class.csv
(precision / recall / F1 per class, for a bar chart), and a gallery of the most
confidently misclassified test images (plots/misclassified.png, with its rows in
plots/misclassified.csv), and prints a report.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from numpynet.augment import flip_horizontal
from numpynet.metrics import classification_report, confusion_matrix, most_confident_errors
from numpynet.model import from_arrays
from stages import _plots
from stages._io import StageError, load_params, param, load_npz, run_stage, write_json, write_text

DATA = Path("data/prepared")
MODEL = Path("models/model.npz")
METRICS = Path("metrics/metrics.json")
CONFUSION_CSV = Path("plots/confusion.csv")
CONFUSION_PNG = Path("plots/confusion_matrix.png")
PER_CLASS_CSV = Path("plots/per_class.csv")
ERRORS_CSV = Path("plots/misclassified.csv")
ERRORS_PNG = Path("plots/misclassified.png")
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


def to_rgb(rows: np.ndarray, normalization: dict) -> np.ndarray:
    """Undo the input normalization: normalized rows (M, 3072) -> uint8 images (M, 32, 32, 3)."""
    mean = np.asarray(normalization["mean"], np.float64)[:, None, None]
    std = np.asarray(normalization["std"], np.float64)[:, None, None]
    pixels = rows.reshape(-1, 3, 32, 32) * std + mean
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def write_error_gallery(x_test: np.ndarray, y_test: np.ndarray, proba: np.ndarray, meta: dict) -> None:
    names = meta["class_names"]
    idx = most_confident_errors(y_test, proba, GALLERY_SIZE)
    pred = proba[idx].argmax(axis=1)
    conf = proba[idx, pred]
    write_text(ERRORS_CSV, "index,actual,predicted,probability\n" + "".join(
        f"{i},{names[y_test[i]]},{names[p]},{c:.4f}\n" for i, p, c in zip(idx, pred, conf)))
    captions = [f"true: {names[y_test[i]]}\npred: {names[p]} ({c:.2f})" for i, p, c in zip(idx, pred, conf)]
    _plots.image_gallery(ERRORS_PNG, to_rgb(x_test[idx], meta["normalization"]), captions,
                         title="Most confidently misclassified test images")


def predict(network, x: np.ndarray, flip_tta: bool) -> np.ndarray:
    """Class probabilities (N, K); with flip_tta, the mean over each image and its mirror image."""
    proba = network.predict_proba(x)
    if flip_tta:
        proba = (proba + network.predict_proba(flip_horizontal(x))) / 2
    return proba


def main() -> None:
    flip_tta = param(load_params("evaluate"), "evaluate", "flip_tta", bool, None, "true or false")
    try:
        network, meta = from_arrays(load_npz(MODEL))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        # a truncated or foreign file fails in zipfile or np.load, a malformed one in from_arrays
        raise StageError(f"cannot load {MODEL}: it is missing or not a complete model file "
                         f"({type(err).__name__}: {err}); run `dvc repro train` to rebuild it") from None
    try:
        x_test, y_test = np.load(DATA / "test_images.npy"), np.load(DATA / "test_labels.npy")
    except (OSError, ValueError, EOFError) as err:
        raise StageError(f"cannot read the test data in {DATA}/ ({err}); "
                         "run `dvc repro filter_normalize` first") from None
    names = meta["class_names"]
    if x_test.shape[1:] != (3072,) or (len(y_test) and y_test.max() >= len(names)):
        raise StageError(f"test data in {DATA}/ does not match the model ({len(names)} classes: {', '.join(names)}); "
                         "rerun `dvc repro`")

    proba = predict(network, x_test, flip_tta)
    y_pred = proba.argmax(axis=1)
    report = classification_report(y_test, y_pred, names)
    write_json(METRICS, report)
    write_text(CONFUSION_CSV, "actual,predicted\n" + "".join(f"{names[a]},{names[p]}\n" for a, p in zip(y_test, y_pred)))
    _plots.confusion_matrix(CONFUSION_PNG, confusion_matrix(y_test, y_pred, len(names)), names)
    write_text(PER_CLASS_CSV, "class_metric,value\n" + "".join(
        f"{name} {metric},{m[metric]:.6f}\n" for name, m in report["per_class"].items() for metric in ("precision", "recall", "f1")))
    write_error_gallery(x_test, y_test, proba, meta)
    print(format_report(report))


if __name__ == "__main__":
    run_stage("evaluate", main)
