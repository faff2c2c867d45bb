"""`predict` classifies an image exactly as `evaluate` scored it: same model loader, same
normalization, same test-time augmentation (params.yaml `evaluate.flip_tta`, on and off).

Each case runs the real `evaluate` stage on a trained model, saves the test images that
evaluate listed in plots/misclassified.csv as PNG files, runs `python -m tools.predict` on them
and compares class and probability with the recorded ones. On the synthetic archive always; on
the real data too when the workspace holds the pipeline's outputs (the mirror was run).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers.repo import ROOT, PipelineRepo

pytestmark = pytest.mark.slow


def evaluate_in(workdir: Path, source: Path, flip_tta: bool) -> list[dict]:
    """Run the evaluate stage in `workdir` on `source`'s model and prepared test split; its
    misclassified.csv rows."""
    shutil.copytree(source / "models", workdir / "models")
    for rel in ("data/prepared/test_images.npy", "data/prepared/test_labels.npy"):
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / rel, workdir / rel)
    params = yaml.safe_load((source / "params.yaml").read_text())
    params["evaluate"]["flip_tta"] = flip_tta
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(workdir, "-m", "stages.evaluate")
    with open(workdir / "plots/misclassified.csv") as f:
        return list(csv.DictReader(f))


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def save_pngs(workdir: Path, indices: list[int]) -> list[Path]:
    """The prepared test images at `indices` as PNG files, pixels recovered from the normalized rows."""
    from PIL import Image

    from cifar10.layout import rows_to_pixels
    from numpynet.data import denormalize
    from numpynet.model_file import from_arrays
    from stages._io import load_npz

    _, meta = from_arrays(load_npz(workdir / "models/model.npz"))
    x = np.load(workdir / "data/prepared/test_images.npy")
    pixels = rows_to_pixels(denormalize(x[indices], meta["normalization"]), meta["input_shape"])
    paths = []
    for i, image in zip(indices, pixels):
        paths.append(workdir / f"test-{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def assert_predict_matches(workdir: Path, source: Path, flip_tta: bool) -> None:
    rows = evaluate_in(workdir, source, flip_tta)
    assert rows, "evaluate listed no misclassified images to compare"
    paths = save_pngs(workdir, [int(r["index"]) for r in rows])
    # no --flip-tta flag: predict follows params.yaml as evaluate did
    out = json.loads(run(workdir, "-m", "tools.predict", "--json", "--top", "1", *map(str, paths)).stdout)
    assert out["classes"] == yaml.safe_load((source / "params.yaml").read_text())["filter_normalize"]["classes"]
    assert len(out["images"]) == len(rows)
    for row, result in zip(rows, out["images"]):
        best = result["predictions"][0]
        assert best["class"] == row["predicted"], (row, result)
        assert best["probability"] == pytest.approx(float(row["probability"]), abs=1e-4), (row, result)


@pytest.fixture(scope="module")
def trained(synthetic_archive, tmp_path_factory) -> Path:
    repo = PipelineRepo.create(tmp_path_factory.mktemp("predict") / "repo", *synthetic_archive,
                               train={"flip": True})
    repo.dvc("repro", "train")
    return repo.path


@pytest.mark.parametrize("flip_tta", [False, True], ids=["flip_tta-off", "flip_tta-on"])
def test_predict_gives_the_probability_evaluate_recorded(trained, tmp_path, flip_tta):
    assert_predict_matches(tmp_path, trained, flip_tta)


def test_flip_tta_changes_the_probabilities_so_the_cases_differ(trained, tmp_path):
    """Guard: the two settings give other numbers, so each case above tests its own setting."""
    off = evaluate_in(tmp_path / "off", trained, False)
    on = evaluate_in(tmp_path / "on", trained, True)
    assert [r["probability"] for r in off] != [r["probability"] for r in on]


@pytest.mark.realdata
@pytest.mark.parametrize("flip_tta", [False, True], ids=["flip_tta-off", "flip_tta-on"])
def test_on_the_real_data(tmp_path, flip_tta):
    needed = [ROOT / "models/model.npz", ROOT / "models/training/metrics.json", ROOT / "data/prepared/test_images.npy"]
    if not all(p.exists() for p in needed):
        pytest.skip("the workspace holds no real-data outputs: run `make repro` with CIFAR10_ARCHIVE set first")
    assert_predict_matches(tmp_path, ROOT, flip_tta)
