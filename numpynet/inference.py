"""Class probabilities as `evaluate` and `predict` both compute them: one place for test-time augmentation."""

from __future__ import annotations

import numpy as np

from numpynet.augment import flip_horizontal, translate_reflect
from numpynet.model import Network


def class_probabilities(network: Network, x: np.ndarray, image_shape: tuple[int, int, int],
                        flip_tta: bool, translate_tta: bool = False) -> np.ndarray:
    """Probabilities (N, K) for rows x (N, C*H*W) of `image_shape` images; a weighted mean of
    the probabilities of several views of each image:

        flip_tta           each view and its mirror image, 1/2 each
        translate_tta      the image 1/2, and its copies moved one pixel down-right and one pixel
                           up-left (`translate_reflect`, shifts +1 and -1) 1/4 each

    Both together are airbench's tta_level 2: six views, the image and its mirror 1/4 each, the
    four translated ones 1/8 each. airbench weighs the logits; this module, as for the flip
    alone, averages probabilities."""

    def mirrored(view: np.ndarray) -> np.ndarray:
        proba = network.predict_proba(view)
        if flip_tta:
            proba = (proba + network.predict_proba(flip_horizontal(view, image_shape))) / 2
        return proba

    if not translate_tta:
        return mirrored(x)
    down_right, up_left = (mirrored(translate_reflect(x, image_shape, shift)) for shift in (1, -1))
    return 0.5 * mirrored(x) + 0.25 * down_right + 0.25 * up_left
