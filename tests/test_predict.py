"""Reading new images for `stages.predict`: layout, modes, resizing, errors."""

import numpy as np
import pytest
from PIL import Image

from stages._io import StageError
from stages.predict import load_image


def test_pixel_layout_is_cifar_channel_planes(tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    img[5, 7] = (10, 20, 30)
    Image.fromarray(img).save(tmp_path / "a.png")
    row = load_image(tmp_path / "a.png")
    assert row.shape == (3072,) and row.dtype == np.uint8
    planes = row.reshape(3, 32, 32)
    assert planes[:, 5, 7].tolist() == [10, 20, 30] and planes.sum() == 60


def test_rgba_is_flattened_onto_white_and_greyscale_repeated(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 200          # red, fully transparent everywhere ...
    rgba[:20, :, 3] = 255       # ... except the top half, opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    planes = load_image(tmp_path / "t.png").reshape(3, 32, 32)
    assert planes[:, 2, 16].tolist() == [200, 0, 0]          # opaque red
    assert planes[:, 30, 16].tolist() == [255, 255, 255]     # transparent -> white
    Image.fromarray(np.full((50, 50), 77, np.uint8), "L").save(tmp_path / "g.jpg", quality=95)
    grey = load_image(tmp_path / "g.jpg").reshape(3, 32, 32)
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    assert abs(int(grey[0, 16, 16]) - 77) <= 2


def test_any_size_is_center_cropped_and_resized(tmp_path):
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 100:200] = (0, 255, 0)   # the centered square is green, the sides black
    Image.fromarray(wide).save(tmp_path / "w.png")
    planes = load_image(tmp_path / "w.png").reshape(3, 32, 32).astype(int)
    assert planes[1, 4:28, 4:28].min() >= 250 and planes[0].max() <= 5


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n truncated"])
def test_unreadable_files_give_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(StageError, match="cannot read .*bad.png as an image"):
        load_image(bad)
    with pytest.raises(StageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_a_truncated_model_file_ends_in_one_line(tmp_path):
    import subprocess
    import sys

    from tests.pipeline_repo import ROOT

    model = tmp_path / "model.npz"
    model.write_bytes(b"PK\x03\x04" + b"\0" * 40)   # the start of a zip, cut short
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "stages.predict", "--model", str(model), str(image)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"predict: error: cannot load the model {model}"), done.stderr

