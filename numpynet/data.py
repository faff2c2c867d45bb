"""Choosing classes, a stratified validation split, and input normalization.

Images arrive as uint8 rows (N, 3072) in CIFAR's channel-plane order (1024 red,
1024 green, 1024 blue values); labels as int (N,).
"""

from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("scale", "standardize")
CHANNELS, PIXELS = 3, 1024


def select_classes(images: np.ndarray, labels: np.ndarray, class_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the images of the given original class ids, relabelled 0..k-1 in the given order.

    images (N, D), labels (N,) -> (M, D), (M,) int64, original order of the rows kept.
    """
    relabel = np.full(max(int(labels.max(initial=0)), max(class_ids)) + 1, -1, np.int64)
    relabel[np.asarray(class_ids)] = np.arange(len(class_ids))
    new = relabel[labels]
    keep = new >= 0
    return images[keep], new[keep]


def stratified_split(labels: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with round(val_fraction * count) of every class in val.

    labels (N,) -> two sorted int64 index arrays that partition range(N).
    """
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(val_fraction * len(idx)))
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_mask = np.ones(len(labels), bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx.astype(np.int64)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std, in pixel units (0..255), over all images and pixels.

    images (N, 3072) uint8 -> mean (3,), std (3,) float64. Accumulated in float64.
    """
    planes = images.reshape(len(images), CHANNELS, PIXELS)
    mean = np.empty(CHANNELS)
    std = np.empty(CHANNELS)
    for c in range(CHANNELS):  # one channel at a time keeps the float64 copy small
        plane = planes[:, c].astype(np.float64)
        mean[c] = plane.mean()
        std[c] = plane.std()
    return mean, std


def normalization_stats(images: np.ndarray, method: str) -> dict[str, list[float]]:
    """The affine map x -> (x - mean) / std per channel, in pixel units, for `method`.

    scale: mean 0, std 255 for every channel (pixels / 255 into [0, 1]);
    standardize: the per-channel mean and std of `images` (the training split).
    """
    if method == "scale":
        return {"mean": [0.0] * CHANNELS, "std": [255.0] * CHANNELS}
    if method == "standardize":
        mean, std = channel_stats(images)
        return {"mean": mean.tolist(), "std": np.maximum(std, 1e-6).tolist()}  # 1e-6: a constant channel would divide by 0
    raise ValueError(f"unknown normalization {method!r}; choose from {', '.join(NORMALIZATIONS)}")


def normalize(images: np.ndarray, stats: dict[str, list[float]]) -> np.ndarray:
    """Apply (x - mean) / std per channel.  images (N, 3072) uint8 -> (N, 3072) float32."""
    mean = np.repeat(np.asarray(stats["mean"], np.float32), PIXELS)
    inv_std = np.repeat(1.0 / np.asarray(stats["std"], np.float32), PIXELS).astype(np.float32)
    out = images.astype(np.float32)
    out -= mean
    out *= inv_std
    return out
