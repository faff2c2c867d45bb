"""How CIFAR-10 lays out an image, defined once for the whole project.

An image is a flat row of ROW_LENGTH = 3072 uint8 values: the 32x32 red plane, then the green
plane, then the blue plane, each row-major. So `row.reshape(IMAGE_SHAPE)[c, y, x]` is channel c
of pixel (y, x). Every array of images in the pipeline (data/raw, data/prepared, the network's
input) is (N, 3072) rows in this order; the network library takes IMAGE_SHAPE as an argument
and never assumes it.
"""

from __future__ import annotations

import math

import numpy as np

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
N_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (3, 32, 32)             # (channels, height, width) of a row reshaped
ROW_LENGTH = math.prod(IMAGE_SHAPE)   # values per image
LAYOUT = "CIFAR channel planes: 1024 R, 1024 G, 1024 B, each 32x32 row-major"  # as the model file states it


def rows_to_pixels(rows: np.ndarray, shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Pixel values in channel-plane rows (M, C*H*W) -> uint8 images (M, H, W, C), for display.

    Values are rounded to the nearest integer and clipped to 0..255."""
    pixels = np.clip(np.rint(rows), 0, 255).astype(np.uint8)
    return pixels.reshape(-1, *shape).transpose(0, 2, 3, 1)


def pixels_to_row(pixels: np.ndarray) -> np.ndarray:
    """One uint8 image (H, W, C), as Pillow and matplotlib hold it -> a row (C*H*W,) of planes."""
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)).reshape(-1)
