"""cifar10.images: image files read into rows for `tools.predict`: layout, modes, resizing, errors."""

import numpy as np
import pytest
from PIL import Image

from cifar10.images import ImageError
from cifar10.images import read_image as load_image


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
    with pytest.raises(ImageError, match="not readable as an image"):
        load_image(bad)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def _one_pixel_colour(tmp_path, img, fmt: str) -> list[int]:
    path = tmp_path / f"img.{fmt.lower()}"
    img.save(path, fmt)
    return load_image(path).reshape(3, 32, 32)[:, 16, 16].tolist()


def _palette_image():
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    return img


@pytest.mark.parametrize("make, fmt, rgb", [
    (lambda: Image.new("1", (8, 8), 1), "PNG", [255, 255, 255]),
    (lambda: Image.new("L", (8, 8), 77), "PNG", [77, 77, 77]),
    (lambda: Image.new("LA", (8, 8), (77, 0)), "PNG", [255, 255, 255]),            # transparent -> white
    (lambda: Image.new("LA", (8, 8), (77, 255)), "PNG", [77, 77, 77]),
    (_palette_image, "PNG", [10, 200, 30]),
    (lambda: Image.new("RGB", (8, 8), (1, 2, 3)), "BMP", [1, 2, 3]),
    (lambda: Image.new("RGB", (8, 8), (1, 2, 3)), "TIFF", [1, 2, 3]),
    (lambda: Image.new("RGB", (8, 8), (250, 100, 0)), "GIF", [250, 100, 0]),
    (lambda: Image.new("RGBA", (8, 8), (250, 100, 0, 255)), "WEBP", [250, 100, 0]),         # lossy: within 3
    (lambda: Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "TIFF", [255, 255, 255]),
    (lambda: Image.fromarray(np.full((8, 8), 65535, np.uint16)), "PNG", [255, 255, 255]),  # 16-bit grey
    (lambda: Image.fromarray(np.full((8, 8), 257 * 100, np.uint16)), "PNG", [100, 100, 100]),
    (lambda: Image.fromarray(np.full((8, 8), 257 * 100, np.int32), "I"), "TIFF", [100, 100, 100]),
], ids=["1-bit", "L", "LA-transparent", "LA-opaque", "P", "BMP", "TIFF", "GIF", "WEBP", "CMYK-white",
        "16-bit-white", "16-bit-grey", "32-bit-int-in-16-bit-range"])
def test_every_mode_converts_to_the_right_8_bit_rgb(tmp_path, make, fmt, rgb):
    got = _one_pixel_colour(tmp_path, make(), fmt)
    tolerance = 3 if fmt == "WEBP" else 0
    assert all(abs(g - w) <= tolerance for g, w in zip(got, rgb)), (got, rgb)


def test_a_non_square_model_shape_crops_to_its_aspect_ratio(tmp_path):
    tall = np.zeros((300, 100, 3), np.uint8)
    tall[100:200] = (0, 0, 255)                 # the middle third is blue
    Image.fromarray(tall).save(tmp_path / "t.png")
    planes = load_image(tmp_path / "t.png", (3, 16, 16)).reshape(3, 16, 16).astype(int)
    assert planes[2].min() >= 250 and planes[0].max() <= 5
    wide_target = load_image(tmp_path / "t.png", (3, 8, 16)).reshape(3, 8, 16)
    assert wide_target[2, 4].min() >= 250       # a 1:2 window of the middle: the blue band


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    import cifar10.images

    monkeypatch.setattr(cifar10.images, "MAX_PIXELS", 100)
    Image.new("L", (11, 10)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="declares 11x10 pixels, over the limit of 100"):
        load_image(tmp_path / "big.png")
    Image.new("L", (10, 10)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").shape == (3072,)
