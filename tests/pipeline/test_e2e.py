"""End to end: all four stages through the real `dvc repro`, on the synthetic archive."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from cifar10.layout import CLASS_NAMES
from numpynet.model_file import from_arrays
from stages._io import load_npz
from tests.helpers.archives import fixture_fingerprints, make_archive
from tests.helpers.files import digests
from tests.helpers.repo import FIXTURE_TRAIN_PARAMS, PipelineRepo

pytestmark = pytest.mark.slow
CLASSES = ["airplane", "automobile", "bird"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e-archive") / "cifar-10-python.tar.gz"
    make_archive(path, train_per_class=40, test_per_class=20, seed=1)
    return path, fixture_fingerprints(path)


@pytest.fixture(scope="module")
def repo(archive, tmp_path_factory):
    repo = PipelineRepo.create(tmp_path_factory.mktemp("e2e") / "repo", *archive)
    repo.dvc("repro")
    return repo


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def confusion_counts(repo) -> dict[str, dict[str, int]]:
    """{true: {predicted: count}} from plots/confusion.csv (one row per test image)."""
    with open(repo.path / "plots/confusion.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {t: {p: sum(r["actual"] == t and r["predicted"] == p for r in rows) for p in CLASSES} for t in CLASSES}


def per_class_from(counts) -> dict[str, dict[str, float]]:
    out = {}
    for c in CLASSES:
        tp, predicted, support = counts[c][c], sum(counts[t][c] for t in CLASSES), sum(counts[c].values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[c] = {"precision": precision, "recall": recall, "f1": f1}
    return out


def series(repo, name: str) -> list[float]:
    """A DVCLive TSV of the training record: its values, checked to be numbered 1..N."""
    lines = (repo.path / "models/training/plots/metrics" / f"{name}.tsv").read_text().splitlines()
    assert lines[0] == f"step\t{name.split('/')[1]}"
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(step) for step, _ in rows] == list(range(1, len(rows) + 1))
    return [float(v) for _, v in rows]


def test_repro_runs_all_stages_and_writes_well_formed_results(repo):
    lock = (repo.path / "dvc.lock").read_text()
    for stage in ("fetch", "filter_normalize", "train", "evaluate"):
        assert f"  {stage}:" in lock

    n_test = 3 * 20
    counts = confusion_counts(repo)
    assert sum(sum(r.values()) for r in counts.values()) == n_test
    assert all(sum(counts[c].values()) == 20 for c in CLASSES)
    metrics = json.loads((repo.path / "metrics/metrics.json").read_text())
    assert set(metrics) == {"test", "model"}
    correct = sum(counts[c][c] for c in CLASSES)
    per_class = per_class_from(counts)
    assert metrics["test"] == {"accuracy": pytest.approx(correct / n_test), **{
        m: pytest.approx(np.mean([per_class[c][m] for c in CLASSES])) for m in ("precision", "recall", "f1")}}

    # the training record (DVCLive): one row per epoch; the model holds the best validation epoch
    epochs = FIXTURE_TRAIN_PARAMS["epochs"]
    train_loss, val_loss, val_acc = series(repo, "train/loss"), series(repo, "val/loss"), series(repo, "val/accuracy")
    assert len(train_loss) == len(val_loss) == len(val_acc) == epochs
    assert all(v > 0 for v in train_loss + val_loss) and all(0 <= a <= 1 for a in val_acc)
    assert repo.params()["train"]["restore_best"] is True
    best = val_acc.index(max(val_acc))      # the first of equal best epochs
    assert metrics["model"] == {"epoch": best + 1, "train_loss": train_loss[best], "val_loss": val_loss[best],
                                "val_accuracy": val_acc[best]}
    summary = json.loads((repo.path / "models/training/metrics.json").read_text())
    assert summary == {"step": best + 1, "train": {"loss": train_loss[best]},
                       "val": {"loss": val_loss[best], "accuracy": val_acc[best]}}

    for png in ("plots/loss_curve.png", "plots/confusion_matrix.png", "plots/per_class.png"):
        w, h = png_size(repo.path / png)
        assert w > 200 and h > 200


def test_metrics_keys_do_not_grow_with_the_number_of_classes(repo, archive, tmp_path):
    """What `dvc exp show` shows is the same few numbers on 3 classes and on 10."""
    ten = PipelineRepo.create(tmp_path / "repo", *archive, filter_normalize={"classes": list(CLASS_NAMES)})
    ten.dvc("repro")
    flat = lambda d, p="": [k for key, v in d.items() for k in (flat(v, f"{p}{key}.") if isinstance(v, dict) else [p + key])]
    three = json.loads((repo.path / "metrics/metrics.json").read_text())
    metrics = json.loads((ten.path / "metrics/metrics.json").read_text())
    assert flat(metrics) == ["test.accuracy", "test.precision", "test.recall", "test.f1", "model.epoch",
                             "model.train_loss", "model.val_loss", "model.val_accuracy"]
    assert flat(three) == flat(metrics)
    with open(ten.path / "plots/per_class.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3 * 10   # the per-class detail is in plots/


def test_model_file_is_self_describing(repo):
    network, meta = from_arrays(load_npz(repo.path / "models/model.npz"))
    assert meta["class_names"] == CLASSES
    assert meta["normalization"]["method"] == repo.params()["filter_normalize"]["normalize"]
    x = np.load(repo.path / "data/prepared/test_images.npy")
    assert network.predict_proba(x).shape == (len(x), 3)
    sizes = [s["n_out"] for s in network.architecture() if s["kind"] == "dense"]
    assert sizes == FIXTURE_TRAIN_PARAMS["hidden_sizes"] + [3]


def test_same_params_and_data_give_byte_identical_outputs(repo):
    outs = ("models/model.npz", "models/training/metrics.json", "models/training/plots/metrics/train/loss.tsv",
            "models/training/plots/metrics/val/accuracy.tsv", "metrics/metrics.json", "plots/confusion.csv",
            "plots/loss_curve.png", "plots/confusion_matrix.png", "plots/per_class.csv", "plots/per_class.png")
    before = digests(repo.path, outs)
    repo.dvc("repro", "--force", "train", "evaluate")
    assert digests(repo.path, outs) == before


def test_a_different_seed_gives_a_different_model(repo, archive, tmp_path):
    other = PipelineRepo.create(tmp_path / "repo", *archive, train={"seed": 1})
    other.dvc("repro")
    a = load_npz(repo.path / "models/model.npz")["layer0.W"]
    b = load_npz(other.path / "models/model.npz")["layer0.W"]
    assert not np.array_equal(a, b)


def test_per_class_bars_and_error_gallery(repo):
    per_class = per_class_from(confusion_counts(repo))
    with open(repo.path / "plots/per_class.csv") as f:
        bars = {r["class_metric"]: float(r["value"]) for r in csv.DictReader(f)}
    assert bars == {f"{c} {m}": pytest.approx(per_class[c][m], abs=1e-6)
                    for c in CLASSES for m in ("precision", "recall", "f1")}
    with open(repo.path / "plots/confusion.csv") as f:
        rows = list(csv.DictReader(f))
    with open(repo.path / "plots/misclassified.csv") as f:
        errors = list(csv.DictReader(f))
    n_wrong = sum(r["actual"] != r["predicted"] for r in rows)
    assert len(errors) == min(16, n_wrong) > 0
    for e in errors:  # misclassified images only, and the same verdict evaluate gave
        assert e["actual"] != e["predicted"]
        assert rows[int(e["index"])] == {"actual": e["actual"], "predicted": e["predicted"]}
    probs = [float(e["probability"]) for e in errors]
    assert probs == sorted(probs, reverse=True)
    png_size(repo.path / "plots/misclassified.png")


def test_cnn_model_trains_and_evaluates_without_param_changes_in_evaluate(archive, tmp_path):
    repo = PipelineRepo.create(tmp_path / "repo", *archive,
                               train={"model": "cnn", "conv_channels": [4, 8], "hidden_sizes": [8], "epochs": 2})
    repo.dvc("repro")
    network, meta = from_arrays(load_npz(repo.path / "models/model.npz"))
    kinds = [s["kind"] for s in network.architecture()]
    pooled = [s for s in network.architecture() if s["kind"] == "conv2d" and s["pool"]]
    assert meta["model"] == "cnn" and kinds.count("conv2d") == 2 and len(pooled) == 2
    assert sum(sum(r.values()) for r in confusion_counts(repo).values()) == 60


def test_frontier_model_trains_with_lookahead_and_evaluates_with_translate_tta(archive, tmp_path):
    """The frontier network through the real stages: its whitening from the training split, its
    BatchNorm statistics and frozen weights in the model file, airbench's six-view test-time
    augmentation in evaluate and predict."""
    repo = PipelineRepo.create(tmp_path / "repo", *archive,
                               train={"model": "frontier", "conv_channels": [4, 8], "epochs": 2, "lookahead": True},
                               evaluate={"flip_tta": True, "translate_tta": True})
    repo.dvc("repro")
    network, meta = from_arrays(load_npz(repo.path / "models/model.npz"))
    kinds = [s["kind"] for s in network.architecture()]
    assert meta["model"] == "frontier" and kinds.count("batchnorm2d") == 4 and "global_maxpool" in kinds
    assert network.architecture()[1] == {"kind": "conv2d", "in_channels": 3, "out_channels": 54, "pool": False,
                                         "frozen": True}
    running = [v for k, v in network.state().items() if k.endswith("running_var")]
    assert running and all(np.all(v > 0) and not np.all(v == 1) for v in running)   # trained statistics
    assert sum(sum(r.values()) for r in confusion_counts(repo).values()) == 60
