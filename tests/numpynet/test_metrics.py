"""Our metrics against scikit-learn (a test-only reference)."""

import numpy as np
import pytest

from numpynet.metrics import accuracy, classification_report, confusion_matrix, precision_recall_f1

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the test-only reference for the metrics")


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    k = 4
    y_true = rng.integers(0, k, 200)
    y_pred = rng.integers(0, k - 1, 200)  # class k-1 is never predicted
    labels = list(range(k))
    cm = confusion_matrix(y_true, y_pred, k)
    assert np.array_equal(cm, sk.confusion_matrix(y_true, y_pred, labels=labels))
    prf = precision_recall_f1(cm)
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert np.allclose(prf["precision"], p) and np.allclose(prf["recall"], r) and np.allclose(prf["f1"], f)
    assert np.array_equal(prf["support"], s)
    assert prf["precision"][k - 1] == 0.0
    assert accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, y_pred))
    report = classification_report(y_true, y_pred, ["a", "b", "c", "d"])
    for avg in ("precision", "recall", "f1"):
        ref = getattr(sk, f"{avg}_score" if avg != "f1" else "f1_score")(y_true, y_pred, average="macro", zero_division=0)
        assert report["macro_avg"][avg] == pytest.approx(ref)


def test_report_is_keyed_by_class_name():
    report = classification_report(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), ["cat", "dog", "frog"])
    assert report["per_class"]["dog"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report["confusion_matrix"]["dog"] == {"cat": 0, "dog": 1, "frog": 1}
    assert report["accuracy"] == 0.75


def test_most_confident_errors_picks_wrong_predictions_by_confidence():
    from numpynet.metrics import most_confident_errors

    y = np.array([0, 1, 2, 0, 1])
    proba = np.array([[0.9, 0.05, 0.05],   # right
                      [0.7, 0.2, 0.1],     # wrong, 0.7
                      [0.1, 0.85, 0.05],   # wrong, 0.85
                      [0.2, 0.2, 0.6],     # wrong, 0.6
                      [0.1, 0.8, 0.1]])    # right
    assert most_confident_errors(y, proba, 2).tolist() == [2, 1]
    assert most_confident_errors(y, proba, 10).tolist() == [2, 1, 3]
