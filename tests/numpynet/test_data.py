"""Class selection, the stratified split and normalization (pure core)."""

import numpy as np
import pytest

from numpynet.data import channel_stats, class_rows, normalization_stats, normalize, stratified_split


def test_class_rows_relabels_in_the_given_order():
    labels = np.array([0, 5, 2, 5, 9, 2])
    rows, new = class_rows(labels, [5, 2])
    assert rows.tolist() == [1, 2, 3, 5]
    assert new.tolist() == [0, 1, 0, 1]
    assert rows.dtype == new.dtype == np.int64


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5])
def test_stratified_split_partitions_and_balances(fraction):
    labels = np.repeat([0, 1, 2], [100, 60, 40])
    tr, va = stratified_split(labels, fraction, np.random.default_rng(0))
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(200))
    for c, count in zip(range(3), (100, 60, 40)):
        assert np.sum(labels[va] == c) == round(fraction * count)


def test_stratified_split_is_seeded():
    labels = np.repeat([0, 1], 50)
    a = stratified_split(labels, 0.2, np.random.default_rng(3))[1]
    b = stratified_split(labels, 0.2, np.random.default_rng(3))[1]
    c = stratified_split(labels, 0.2, np.random.default_rng(4))[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_scale_maps_pixels_into_unit_interval():
    x = np.array([[0, 255] * 1536], np.uint8)
    out = normalize(x, normalization_stats(x, "scale", 3))
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0


def test_standardize_uses_per_channel_planes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 50, (20, 1024)), rng.integers(100, 200, (20, 1024)),
                        rng.integers(200, 256, (20, 1024))], axis=1).astype(np.uint8)
    mean, std = channel_stats(x, 3)
    for c in range(3):
        plane = x[:, c * 1024:(c + 1) * 1024].astype(np.float64)
        assert mean[c] == pytest.approx(plane.mean()) and std[c] == pytest.approx(plane.std())
    out = normalize(x, normalization_stats(x, "standardize", 3)).reshape(20, 3, 1024)
    assert np.allclose(out.mean(axis=(0, 2)), 0, atol=1e-4) and np.allclose(out.std(axis=(0, 2)), 1, atol=1e-4)


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="standardize"):
        normalization_stats(np.zeros((1, 3072), np.uint8), "minmax", 3)


def test_channel_stats_equal_numpy_s_mean_and_std_bit_for_bit():
    """The in-place variance is numpy's own operations in numpy's order, so dataset.json (and every
    output after it) keeps its bytes."""
    x = np.random.default_rng(3).integers(0, 256, (257, 3 * 1024), dtype=np.uint8)
    rows = np.array([0, 5, 6, 100, 256])
    mean, std = channel_stats(x, 3, rows)
    planes = x[rows].reshape(len(rows), 3, -1)
    for c in range(3):
        plane = planes[:, c].astype(np.float64)
        assert mean[c] == plane.mean() and std[c] == plane.std()
    full_mean, full_std = channel_stats(x, 3)
    assert full_mean[1] == x.reshape(257, 3, -1)[:, 1].astype(np.float64).mean()
    assert full_std[2] == x.reshape(257, 3, -1)[:, 2].astype(np.float64).std()
