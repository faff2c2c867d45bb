"""stages.predict run as a user runs it (`python -m stages.predict`): how it fails. Reading the
image files is tested in tests/cifar10/test_images.py; that predict classifies as evaluate scored,
in tests/pipeline/test_predict_vs_evaluate.py."""

import subprocess
import sys

from tests.helpers.repo import ROOT


def test_a_truncated_model_file_ends_in_one_line(tmp_path):
    model = tmp_path / "model.npz"
    model.write_bytes(b"PK\x03\x04" + b"\0" * 40)   # the start of a zip, cut short
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "stages.predict", "--model", str(model), str(image)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"predict: error: {model} is not a usable model file"), done.stderr

