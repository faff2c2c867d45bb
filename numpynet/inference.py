"""Class probabilities as `evaluate` and `predict` both compute them: one place for test-time augmentation."""

from __future__ import annotations

import numpy as np

from numpynet.augment import flip_horizontal
from numpynet.model import Network


def class_probabilities(network: Network, x: np.ndarray, image_shape: tuple[int, int, int],
                        flip_tta: bool) -> np.ndarray:
    """Probabilities (N, K) for rows x (N, C*H*W) of `image_shape` images; with flip_tta, the
    mean of the probabilities of each image and of its mirror image."""
    proba = network.predict_proba(x)
    if flip_tta:
        proba = (proba + network.predict_proba(flip_horizontal(x, image_shape))) / 2
    return proba
