"""Classification metrics in NumPy: accuracy, confusion matrix, precision / recall / F1."""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal entries.  y_true, y_pred (N,) int."""
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (K, K) int64: entry [i, j] = number of samples of true class i predicted as j."""
    flat = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def precision_recall_f1(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (float64, (K,)) and support (int64, (K,)) from a confusion matrix.

    A ratio whose denominator is 0 (a class never predicted, or never present) is
    0, as scikit-learn reports with zero_division=0.
    """
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """All test metrics as a JSON-able dict keyed by class name.

    {"accuracy", "macro_avg": {precision, recall, f1}, "per_class": {name: {...}},
     "confusion_matrix": {true name: {predicted name: count}}}
    """
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    prf = precision_recall_f1(cm)
    per_class = {
        name: {"precision": float(prf["precision"][i]), "recall": float(prf["recall"][i]),
               "f1": float(prf["f1"][i]), "support": int(prf["support"][i])}
        for i, name in enumerate(class_names)
    }
    macro = {m: float(prf[m].mean()) for m in ("precision", "recall", "f1")}
    return {"accuracy": accuracy(y_true, y_pred), "macro_avg": macro, "per_class": per_class,
            "confusion_matrix": {t: {p: int(cm[i, j]) for j, p in enumerate(class_names)}
                                 for i, t in enumerate(class_names)}}


def most_confident_errors(y_true: np.ndarray, proba: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to k misclassified samples, most confident (highest predicted probability) first.

    y_true (N,) int, proba (N, K) -> (<= k,) int64. Ties keep the lower index first.
    """
    y_pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    confidence = proba[wrong, y_pred[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order[:k]].astype(np.int64)
