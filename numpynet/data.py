"""Choosing classes, a stratified validation split, and per-channel input normalization.

Images arrive as rows (N, C*P) in channel-plane order: the P values of channel 0, then
those of channel 1, and so on (CIFAR-10: C = 3 planes of P = 32x32); labels as int (N,).
The number of channels is an argument or the length of the statistics, never assumed.
"""

from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("scale", "standardize")


def class_rows(labels: np.ndarray, class_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The rows holding the given original class ids, and their labels 0..k-1 in the given order.

    labels (N,) -> rows (M,) int64 ascending, new labels (M,) int64."""
    relabel = np.full(max(int(labels.max(initial=0)), max(class_ids)) + 1, -1, np.int64)
    relabel[np.asarray(class_ids)] = np.arange(len(class_ids))
    new = relabel[labels]
    rows = np.flatnonzero(new >= 0)
    return rows, new[rows]


def stratified_split(labels: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with round(val_fraction * count) of every class in val.

    labels (N,) -> two sorted int64 index arrays that partition range(N).
    """
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = round(val_fraction * len(idx))
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_mask = np.ones(len(labels), bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx.astype(np.int64)


def channel_stats(images: np.ndarray, channels: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std, in pixel units (0..255), over all pixels of the images `rows`
    (all by default).

    images (N, C*P) uint8 (a memory map will do) -> mean (C,), std (C,) float64. One channel at a
    time is copied to float64, and its std is computed in that copy: the same operations, in
    the same order, as `plane.mean()` and `plane.std()`, with one float64 copy instead of two.
    """
    planes = images.reshape(len(images), channels, -1)
    mean = np.empty(channels)
    std = np.empty(channels)
    for c in range(channels):
        plane = (planes[:, c] if rows is None else planes[rows, c]).astype(np.float64)
        mean[c] = np.add.reduce(plane, axis=None) / plane.size       # = plane.mean()
        plane -= mean[c]
        np.multiply(plane, plane, out=plane)
        std[c] = np.sqrt(np.add.reduce(plane, axis=None) / plane.size)  # = plane.std()
        del plane  # before the next channel's copy is made
    return mean, std


def normalization_stats(images: np.ndarray, method: str, channels: int,
                        rows: np.ndarray | None = None) -> dict[str, list[float]]:
    """The affine map x -> (x - mean) / std per channel, in pixel units, for `method`.

    scale: mean 0, std 255 for every channel (pixels / 255 into [0, 1]);
    standardize: the per-channel mean and std of `images` (the training split).
    """
    if method == "scale":
        return {"mean": [0.0] * channels, "std": [255.0] * channels}
    if method == "standardize":
        mean, std = channel_stats(images, channels, rows)
        return {"mean": mean.tolist(), "std": np.maximum(std, 1e-6).tolist()}  # 1e-6: a constant channel would divide by 0
    raise ValueError(f"unknown normalization {method!r}; choose from {', '.join(NORMALIZATIONS)}")


def normalize(images: np.ndarray, stats: dict[str, list[float]]) -> np.ndarray:
    """Apply (x - mean) / std per channel, C = len(stats["mean"]).

    images (N, C*P) uint8 -> (N, C*P) float32."""
    pixels = images.shape[1] // len(stats["mean"])
    mean = np.repeat(np.asarray(stats["mean"], np.float32), pixels)
    inv_std = np.repeat(1.0 / np.asarray(stats["std"], np.float32), pixels).astype(np.float32)
    out = images.astype(np.float32)
    out -= mean
    out *= inv_std
    return out


def denormalize(x: np.ndarray, stats: dict[str, list[float]]) -> np.ndarray:
    """Inverse of `normalize`, in float64 pixel units: x (N, C*P) -> x * std + mean per channel."""
    mean = np.asarray(stats["mean"], np.float64)[:, None]
    std = np.asarray(stats["std"], np.float64)[:, None]
    return (x.reshape(len(x), len(mean), -1) * std + mean).reshape(len(x), -1)
