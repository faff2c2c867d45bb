"""tools.predict run as a user runs it (`python -m tools.predict`): how it fails. Reading the
image files is tested in tests/cifar10/test_images.py; that predict classifies as evaluate scored,
in tests/pipeline/test_predict_vs_evaluate.py."""

import json
import subprocess
import sys

from tests.helpers.repo import ROOT


def test_a_truncated_model_file_ends_in_one_line(tmp_path):
    model = tmp_path / "model.npz"
    model.write_bytes(b"PK\x03\x04" + b"\0" * 40)   # the start of a zip, cut short
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "tools.predict", "--model", str(model), str(image)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"predict: error: {model} is not a usable model file"), done.stderr



def tiny_model(path, class_names):
    """A small untrained MLP for `class_names`, saved as train saves one."""
    import numpy as np

    from cifar10.layout import IMAGE_SHAPE
    from numpynet.model import ModelSpec, build
    from stages import _model_file

    network = build(ModelSpec(hidden_sizes=(4,)), IMAGE_SHAPE, len(class_names), np.random.default_rng(0))
    _model_file.save(path, network, "mlp", class_names, {"method": "scale", "mean": [0.0] * 3, "std": [255.0] * 3},
                     IMAGE_SHAPE)


def test_predict_says_it_picks_among_the_trained_classes_and_names_them(tmp_path):
    """A flower gets one of the trained classes (there is no 'none of these'): the text output says
    so and names them, whole (no 'automobil'); --json carries the class list."""
    from PIL import Image

    names = ["automobile", "bird", "horse"]
    tiny_model(tmp_path / "model.npz", names)
    Image.new("RGB", (40, 30), (200, 40, 160)).save(tmp_path / "flower.png")
    cmd = [sys.executable, "-m", "tools.predict", "--model", str(tmp_path / "model.npz"), "--no-flip-tta",
           "--top", "2", str(tmp_path / "flower.png")]
    text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert text[0] == ("The model picks among the 3 classes it was trained on (automobile, bird, horse); "
                       "it cannot answer 'none of these'.")
    assert text[1].startswith(f"{tmp_path / 'flower.png'}: ") and len(text) == 2
    shown = [part.rsplit(" ", 1)[0] for part in text[1].split(": ", 1)[1].split(", ")]
    assert len(shown) == 2 and set(shown) <= set(names)
    out = json.loads(subprocess.run(cmd + ["--json"], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    assert out["classes"] == names and out["flip_tta"] is False
    assert [p["class"] for p in out["images"][0]["predictions"]] == shown
    assert sum(p["probability"] for p in out["images"][0]["predictions"]) <= 1 + 1e-6
