"""End to end: all four stages through the real `dvc repro`, on the synthetic archive."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from numpynet.model import from_arrays
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


def test_repro_runs_all_stages_and_writes_well_formed_results(repo):
    lock = (repo.path / "dvc.lock").read_text()
    for stage in ("fetch", "filter_normalize", "train", "evaluate"):
        assert f"  {stage}:" in lock

    metrics = json.loads((repo.path / "metrics/metrics.json").read_text())
    assert list(metrics["per_class"]) == CLASSES
    n_test = 3 * 20
    assert sum(m["support"] for m in metrics["per_class"].values()) == n_test
    counts = metrics["confusion_matrix"]
    assert list(counts) == CLASSES and sum(sum(r.values()) for r in counts.values()) == n_test
    correct = sum(counts[c][c] for c in CLASSES)
    assert metrics["accuracy"] == pytest.approx(correct / n_test)
    for c in CLASSES:
        m = metrics["per_class"][c]
        predicted = sum(counts[t][c] for t in CLASSES)
        assert m["recall"] == pytest.approx(counts[c][c] / 20)
        assert m["precision"] == pytest.approx(counts[c][c] / predicted if predicted else 0.0)

    with open(repo.path / "plots/confusion.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_test and {r["actual"] for r in rows} == set(CLASSES)
    assert all(r["predicted"] in CLASSES for r in rows)
    assert sum(r["actual"] == r["predicted"] for r in rows) == correct

    with open(repo.path / "plots/training.csv") as f:
        history = list(csv.DictReader(f))
    epochs = FIXTURE_TRAIN_PARAMS["epochs"]
    assert [int(r["epoch"]) for r in history] == list(range(1, epochs + 1))
    assert all(float(r["train_loss"]) > 0 and 0 <= float(r["val_accuracy"]) <= 1 for r in history)
    train = json.loads((repo.path / "metrics/train.json").read_text())
    assert train["epochs"] == epochs and train["final_train_loss"] == pytest.approx(float(history[-1]["train_loss"]), abs=1e-6)

    for png in ("plots/loss_curve.png", "plots/confusion_matrix.png"):
        w, h = png_size(repo.path / png)
        assert w > 200 and h > 200


def test_model_file_is_self_describing(repo):
    network, meta = from_arrays(load_npz(repo.path / "models/model.npz"))
    assert meta["class_names"] == CLASSES
    assert meta["normalization"]["method"] == repo.params()["filter_normalize"]["normalize"]
    x = np.load(repo.path / "data/prepared/test_images.npy")
    assert network.predict_proba(x).shape == (len(x), 3)
    sizes = [s["n_out"] for s in network.architecture() if s["kind"] == "dense"]
    assert sizes == FIXTURE_TRAIN_PARAMS["hidden_sizes"] + [3]


def test_same_params_and_data_give_byte_identical_outputs(repo):
    outs = ("models/model.npz", "metrics/metrics.json", "metrics/train.json", "plots/training.csv",
            "plots/confusion.csv", "plots/loss_curve.png", "plots/confusion_matrix.png")
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
    metrics = json.loads((repo.path / "metrics/metrics.json").read_text())
    with open(repo.path / "plots/per_class.csv") as f:
        bars = {r["class_metric"]: float(r["value"]) for r in csv.DictReader(f)}
    assert bars == {f"{c} {m}": pytest.approx(metrics["per_class"][c][m], abs=1e-6)
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
    metrics = json.loads((repo.path / "metrics/metrics.json").read_text())
    assert sum(m["support"] for m in metrics["per_class"].values()) == 60
