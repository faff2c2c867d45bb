"""Patch whitening: the weights of a frozen first convolution that decorrelates 3x3 patches.

As airbench's `init_whitening_conv` (there with 2x2 patches, no padding; here the 3x3 patches,
zero-padded at the border, that `Conv2D` sees, i.e. the rows of `numpynet.conv.im2col`):

    Sigma = X_col^T X_col / (N H W)             (9C, 9C) second moment of the patches (not centred)
    Sigma = V diag(lambda) V^T                  np.linalg.eigh, float64; lambda sorted largest first
    W_col = [V / sqrt(lambda + eps), -V / sqrt(lambda + eps)]     (9C, 2 * 9C)

so the first 9C output channels of X_col @ W_col have second moment
diag(lambda / (lambda + eps)), the identity up to eps; the other 9C are their negatives (after
a GELU, the two halves keep both signs of each whitened direction). eps bounds the gain of
directions the images hardly use (lambda near 0).
"""

from __future__ import annotations

import numpy as np

from numpynet.conv import KERNEL, im2col

EPS = 5e-4              # airbench's init_whitening_conv default
CHUNK_IMAGES = 256      # images per im2col in `patch_covariance` (256 x H*W x 9C float64 columns at a time)


def patch_covariance(images: np.ndarray) -> np.ndarray:
    """images (N, C, H, W) -> Sigma (9C, 9C) float64: the mean of x x^T over every 3x3 patch x
    (N*H*W of them, one per pixel, zero outside the image), in im2col's (ky, kx, c) order."""
    n, c, h, w = images.shape
    sigma = np.zeros((KERNEL * KERNEL * c,) * 2)
    for start in range(0, n, CHUNK_IMAGES):
        cols = im2col(images[start:start + CHUNK_IMAGES].astype(np.float64))
        sigma += cols.T @ cols
    return sigma / (n * h * w)


def whitening_weights(images: np.ndarray, eps: float = EPS, dtype: np.dtype = np.float32) -> np.ndarray:
    """images (N, C, H, W) -> W (2*9C, C, 3, 3) in `dtype`, the weights of a Conv2D(C, 2*9C)
    that whitens the images' 3x3 patches (module docstring): filter i < 9C is eigenvector V_i
    (eigenvalues largest first) divided by sqrt(lambda_i + eps), filter 9C + i its negative."""
    c = images.shape[1]
    eigenvalues, eigenvectors = np.linalg.eigh(patch_covariance(images))   # ascending
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    # eigh returns tiny negative eigenvalues for a singular Sigma (e.g. a constant channel): clip them
    scaled = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)     # (9C, 9C), column i = V_i
    w_col = np.concatenate([scaled, -scaled], axis=1)                      # (9C, 2*9C)
    # the inverse of numpynet.conv.weight_matrix: rows (ky, kx, c) -> W[f, c, ky, kx]
    return w_col.reshape(KERNEL, KERNEL, c, -1).transpose(3, 2, 0, 1).astype(dtype)
