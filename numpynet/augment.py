"""Per-batch data augmentation on flat image rows.

A row holds one image in channel-plane order: `row.reshape(image_shape)[c, y, x]` is channel c
of pixel (y, x) for images of shape `image_shape` (C, H, W), which every function here takes as
an argument. The flips and the crop take and return (N, C*H*W) arrays (any float dtype);
mixup blends any rows (N, D) and their targets (N, K). None of them modifies its input.
"""

from __future__ import annotations

import numpy as np

Shape = tuple[int, int, int]


def random_flip(images: np.ndarray, image_shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image left-right with probability 1/2: pixel (y, x) -> (y, W - 1 - x), every channel.

    images (N, C*H*W) -> (N, C*H*W).
    """
    n = len(images)
    out = images.reshape(n, *image_shape).copy()
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, :, ::-1]
    return out.reshape(n, -1)


def random_crop(images: np.ndarray, image_shape: Shape, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad each image by `pad` pixels on every side, then cut a random H x W window.

    The content shifts by up to `pad` pixels in each direction; channels never mix.
    images (N, C*H*W) -> (N, C*H*W).
    """
    n = len(images)
    if pad == 0:
        return images.copy()
    c, h, w = image_shape
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), images.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = images.reshape(n, *image_shape)
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    out = np.empty((n, c, h, w), images.dtype)
    for i in range(n):  # one slice copy per image: faster than a 4-D fancy index
        out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out.reshape(n, -1)


def flip_horizontal(images: np.ndarray, image_shape: Shape) -> np.ndarray:
    """Mirror every image left-right (pixel (y, x) -> (y, W - 1 - x), every channel).

    images (N, C*H*W) -> (N, C*H*W); used for test-time augmentation.
    """
    n = len(images)
    return np.ascontiguousarray(images.reshape(n, *image_shape)[..., ::-1]).reshape(n, -1)


def translate_reflect(images: np.ndarray, image_shape: Shape, shift: int) -> np.ndarray:
    """Move every image's content by `shift` pixels down and right (up and left when negative),
    filling the uncovered border by reflection (torch's 'reflect' padding: the edge pixel is the
    mirror axis, not repeated): the window [p - shift, p - shift + H) of the image reflect-padded
    by p = |shift|, as airbench's test-time translations (shift 1 is its padded[0:32, 0:32]).

    images (N, C*H*W) -> (N, C*H*W); used for test-time augmentation.
    """
    n = len(images)
    c, h, w = image_shape
    p = abs(shift)
    padded = np.pad(images.reshape(n, c, h, w), ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    return np.ascontiguousarray(padded[:, :, p - shift:p - shift + h, p - shift:p - shift + w]).reshape(n, -1)


def mixup(images: np.ndarray, targets: np.ndarray, alpha: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mixup (Zhang et al., 2018): blend the batch with a shuffled copy of itself.

    One weight lam ~ Beta(alpha, alpha) per batch; image i becomes
    lam * x_i + (1 - lam) * x_perm(i), and its target distribution likewise.
    images (N, D), targets (N, K) -> new arrays of the same shapes.
    """
    lam = images.dtype.type(rng.beta(alpha, alpha))
    perm = rng.permutation(len(images))
    mixed = images * lam
    mixed += images[perm] * (1 - lam)
    mixed_targets = targets * lam
    mixed_targets += targets[perm] * (1 - lam)
    return mixed, mixed_targets
