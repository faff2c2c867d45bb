"""Images `predict` cannot or must not read: each ends in one line naming the file and the problem,
exit 1, no traceback, nothing on stdout, within a memory limit far below what the image claims.
The conversions of the images it does read are tested in tests/cifar10/test_images.py."""

from __future__ import annotations

import os
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.files import assert_clean_failure

pytestmark = pytest.mark.slow


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, rows: int = 1) -> bytes:
    """A PNG declaring width x height greyscale pixels, with the data of only `rows` rows: what a
    decompression bomb looks like from its header (the real one compresses to under 1 MB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * ((width + 1) * rows))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _save(mode: str, fmt: str, array: np.ndarray | None = None) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from PIL import Image

        img = Image.fromarray(array, mode) if array is not None else Image.new(mode, (8, 8))
        img.save(path, fmt)
    return write


def _truncated_png(path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, "PNG")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _truncated_jpeg(path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _sparse_huge(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(200 << 20)   # 200 MB that take no disk space


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "bomb-30000x30000": (lambda p: p.write_bytes(png_header_only(30000, 30000)),
                         "declares 30000x30000 pixels, over the limit"),
    "bomb-wide": (lambda p: p.write_bytes(png_header_only(2 ** 30, 1, rows=0)), "pixels, over the limit"),
    "empty": (lambda p: p.write_bytes(b""), "not readable as an image"),
    "text": (lambda p: p.write_text("not an image\n"), "not readable as an image"),
    "png-signature-only": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "not readable as an image"),
    "png-truncated": (_truncated_png, "not readable as an image"),
    "jpeg-truncated": (_truncated_jpeg, "not readable as an image"),
    "png-bad-crc": (lambda p: p.write_bytes(png_header_only(4, 4, 4)[:-20] + b"\0" * 20), "not readable as an image"),
    "float-tiff": (_save("F", "TIFF", np.ones((8, 8), np.float32)), "a floating-point image (mode F)"),
    "int32-tiff-out-of-range": (_save("I", "TIFF", np.full((8, 8), 70000, np.int32)), "values outside 0..65535"),
    "over-100-MB": (_sparse_huge, "over the 100 MiB limit"),
    "folder": (lambda p: p.mkdir(), "not a regular file"),
    "fifo": (lambda p: os.mkfifo(p), "not a regular file"),
    "missing": (lambda p: None, "no such file"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_predict_refuses_the_image_in_one_line(trained_repo, tmp_path, name):
    write, fragment = CASES[name]
    path = tmp_path / f"{name}.png"
    write(path)
    proc = trained_repo.run("bash", "-c", f"ulimit -v {2 << 20}; exec {sys.executable} -m tools.predict '{path}'",
                            check=False, timeout=60)
    line = assert_clean_failure(proc, "predict", str(path), fragment)
    assert proc.stderr.strip() == line and not proc.stdout


def test_one_bad_image_among_good_ones_stops_before_any_output(trained_repo, tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), (9, 99, 199)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(png_header_only(30000, 30000))
    proc = trained_repo.run(sys.executable, "-m", "tools.predict", str(good), str(bad), check=False)
    assert_clean_failure(proc, "predict", str(bad))
    assert not proc.stdout


def test_a_file_name_with_a_newline_stays_on_one_line(trained_repo, tmp_path):
    path = tmp_path / "two\nlines.png"
    path.write_bytes(b"")
    proc = trained_repo.run(sys.executable, "-m", "tools.predict", str(path), check=False)
    line = assert_clean_failure(proc, "predict", "two\\nlines.png")
    assert proc.stderr.strip() == line
