"""Memory layouts of image batches, for tests that check a layer whatever the layout it is given."""

from __future__ import annotations

import numpy as np


def channels_last(x: np.ndarray) -> np.ndarray:
    """The same logical (N, C, H, W) array, stored as (N, H, W, C) memory."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
