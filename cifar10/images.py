"""Image files (PNG, JPEG, anything Pillow reads) as rows the model takes.

Each image is turned upright by its EXIF orientation, flattened onto white if it has
transparency (RGBA, LA, palette), converted to RGB (greyscale is repeated into three
channels), center-cropped to a square and resized to the model's height x width with Pillow's
antialiasing LANCZOS filter. CIFAR-10's own images come out unchanged.
"""

from __future__ import annotations

import os

import numpy as np

from cifar10.layout import IMAGE_SHAPE, pixels_to_row


class ImageError(ValueError):
    """The file is not an image this module can read; the message says why."""


def read_image(path: str | os.PathLike, shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Read an image file as one row (C*H*W,) uint8 in channel-plane order, for `shape` (C, H, W)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    channels, height, width = shape
    if channels != 3:
        raise ImageError(f"the model takes {channels}-channel images; this reader makes RGB (3 channels)")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageError(f"not readable as an image ({err}); give a PNG or JPEG file") from None
    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    return pixels_to_row(np.asarray(img, dtype=np.uint8))
