"""Image layers for the from-scratch network: 3x3 convolution, 2x2 and global max pooling, flatten.

Pure NumPy, no autograd. The maths is written out here, each backward rule beside its forward
one, as plain functions over im2col / col2im:

    conv2d_forward(x, W, b)       y = X_col @ W_col + b               (X_col = im2col(x))
    conv2d_backward(dy, X_col, W) dW = X_col^T @ dY_col,  db = sum dY,  dx = col2im(dY_col @ W_col^T)
    maxpool2d_forward(x)          y = max of each 2x2 window
    maxpool2d_backward(dy, x)     dy to the first window element equal to the max, 0 to the others

The layers compute exactly these numbers, but through the fast kernel `numpynet._conv_kernel`
(memory layouts, jobs on the worker threads, pooling fused into the convolution, reused buffers,
evaluation in batches of `eval_batch` images). tests/numpynet/test_conv_kernel.py holds the two
bit for bit: read the maths here, change the speed there.

Shapes: N = batch, C = input channels, F = output channels (filters), H x W = image size.
Every layer takes and returns logical (N, C, H, W) arrays, in any memory layout. Flatten always
produces the (C, H, W) row-major order of the logical shape, whatever the memory layout.

Arrays are float32 unless a test passes float64 (the gradient check does); a Conv2D computes
in its parameters' dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from numpynet import parallel
from numpynet._conv_kernel import KERNEL, ConvKernel, PoolKernel
from numpynet.layers import Layer, he_normal

# ---------------------------------------------------------------- the maths


def im2col(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) -> X_col (N*H*W, 9C): row (n, i, j) is the 3x3 window of image n centred
    on pixel (i, j), zero outside the image, its columns in (ky, kx, c) order."""
    n, c, h, w = x.shape
    x_pad = np.zeros((n, h + 2, w + 2, c), x.dtype)
    x_pad[:, 1:-1, 1:-1, :] = x.transpose(0, 2, 3, 1)
    windows = sliding_window_view(x_pad, (KERNEL, KERNEL), axis=(1, 2))   # (N, H, W, C, 3, 3)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * w, KERNEL * KERNEL * c)


def col2im(dx_col: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The adjoint of im2col: dx_col (N*H*W, 9C) -> dx of shape = (N, C, H, W), each entry
    added back to the pixel im2col copied it from (entries of the zero padding are dropped).

    The centre tap is written first and the other eight added in (ky, kx) order: float
    addition is not associative, and this is the kernel's order."""
    n, c, h, w = shape
    taps = dx_col.reshape(n, h, w, KERNEL, KERNEL, c)
    dx_pad = np.zeros((n, h + 2, w + 2, c), dx_col.dtype)
    dx_pad[:, 1:-1, 1:-1] = taps[:, :, :, 1, 1]
    for ky in range(KERNEL):
        for kx in range(KERNEL):
            if (ky, kx) != (1, 1):
                dx_pad[:, ky:ky + h, kx:kx + w] += taps[:, :, :, ky, kx]
    return dx_pad[:, 1:-1, 1:-1].transpose(0, 3, 1, 2)


def weight_matrix(weight: np.ndarray) -> np.ndarray:
    """W (F, C, 3, 3) -> W_col (9C, F), rows in the (ky, kx, c) order of X_col's columns."""
    f, c = weight.shape[:2]
    return weight.transpose(2, 3, 1, 0).reshape(KERNEL * KERNEL * c, f)


def conv2d_forward(x: np.ndarray, weight: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, H, W), W (F, C, 3, 3), b (F,) -> y (N, F, H, W) and X_col (N*H*W, 9C) for the
    backward; computed in W's dtype.

    y[n, f, i, j] = b[f] + sum_{c, ky, kx} W[f, c, ky, kx] * x[n, c, i + ky - 1, j + kx - 1],
    x zero outside the image: one matmul, Y_col = X_col @ W_col + b, computed in the kernel's
    jobs (`_rows`: BLAS may round a product differently by its shape, so the plain maths
    multiplies the same blocks as the kernel and the two agree bit for bit)."""
    n, c, h, w = x.shape
    x_col = im2col(x.astype(weight.dtype, copy=False))
    w_col = weight_matrix(weight)
    y_col = np.concatenate([x_col[r] @ w_col for r in _rows(n, c, h, w)]) + b    # (N*H*W, F)
    return y_col.reshape(n, h, w, -1).transpose(0, 3, 1, 2), x_col


def conv2d_backward(dy: np.ndarray, x_col: np.ndarray, weight: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy (N, F, H, W) = dL/dy, X_col (N*H*W, 9C) of the forward, W (F, C, 3, 3)
    -> dW (F, C, 3, 3), db (F,), dx (N, C, H, W), in W's dtype.

    The products are cut as the kernel cuts them, which makes the two bit for bit equal: dW is
    one `parallel.matmul`, db a matrix-vector product with a vector of ones, and dX_col is
    multiplied job by job (runs of images), or, when C < W (the kernel's "K-major" layout), as
    one `parallel.matmul` of W_col dY_col^T."""
    n, f, h, w = dy.shape
    c = weight.shape[1]
    dy_col = dy.transpose(0, 2, 3, 1).reshape(n * h * w, f).astype(weight.dtype, copy=False)
    w_col = weight_matrix(weight)
    rows = _rows(n, c, h, w)
    dw_col = parallel.matmul(x_col.T, dy_col)                             # dW = X_col^T dY_col
    db = np.ones(n * h * w, dy_col.dtype) @ dy_col                        # db = sum of dY
    if c >= w:                                                            # dX_col = dY_col W_col^T
        dx_col = np.concatenate([dy_col[r] @ w_col.T for r in rows])
    else:
        dx_col = parallel.matmul(w_col, dy_col.T).T
    dw = dw_col.reshape(KERNEL, KERNEL, c, f).transpose(3, 2, 0, 1)
    return dw, db, col2im(dx_col, (n, c, h, w))


def _rows(n: int, c: int, h: int, w: int) -> list[slice]:
    """The rows of X_col (N*H*W, 9C) of each of the kernel's jobs (runs of images)."""
    return [slice(job.start * h * w, job.stop * h * w) for job in parallel.batch_jobs(n, KERNEL * KERNEL * c * h * w)]


def _windows(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) -> its 2x2 windows (N, C, H/2, W/2, 4), each in row-major order
    (top-left, top-right, bottom-left, bottom-right)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)


def maxpool2d_forward(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W), H and W even -> y (N, C, H/2, W/2): the max of each 2x2 window."""
    return _windows(x).max(axis=-1)


def maxpool2d_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dy (N, C, H/2, W/2), x (N, C, H, W) of the forward -> dx (N, C, H, W): each dy goes to
    the first element of its window (row-major) equal to the max, every other element gets 0
    (+0.0 here; the kernel writes some of those zeros as -0.0, equal values)."""
    n, c, h, w = x.shape
    winner = _windows(x).argmax(axis=-1)                      # argmax returns the first max
    dx_windows = np.zeros((n, c, h // 2, w // 2, 4), dy.dtype)
    np.put_along_axis(dx_windows, winner[..., None], dy[..., None], axis=-1)
    return dx_windows.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


# ---------------------------------------------------------------- the layers


class Conv2D(Layer):
    """3x3 convolution, padding 1, stride 1 (cross-correlation, as in every DL library):
    `conv2d_forward` and `conv2d_backward`, computed by `numpynet._conv_kernel`.

    x (N, C, H, W) any float dtype and memory layout -> y (N, F, H, W) in the parameters'
    dtype, a view of channels-last (N, H, W, F) memory (the layout the next layers keep).
    W (F, C, 3, 3) He-normal with fan_in = 9C; b (F,) zeros.

    pool=True: followed by 2x2 max pooling, y (N, F, H/2, W/2), exactly what MaxPool2D would
    compute from the unpooled output, but inside the convolution's jobs; H and W must be even.

    frozen=True: W is fixed (`frozen = ("W",)`: saved, never trained; only b trains), as for the
    patch-whitening first layer whose W comes from `numpynet.whitening.whitening_weights`.
    """

    kind = "conv2d"
    weights = ("W",)
    eval_batch = 128  # images per forward when evaluating: their feature maps stay in cache, the im2col buffer small

    def __init__(self, in_channels: int, out_channels: int, rng: np.random.Generator | None = None,
                 dtype: np.dtype = np.float32, pool: bool = False, frozen: bool = False) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"Conv2D needs positive channel counts, got in_channels={in_channels!r}, "
                             f"out_channels={out_channels!r}")
        self.in_channels, self.out_channels, self.pool = in_channels, out_channels, pool
        self.frozen = ("W",) if frozen else ()
        rng = rng if rng is not None else np.random.default_rng(0)
        fan_in = in_channels * KERNEL * KERNEL
        self.params = {"W": he_normal(rng, fan_in, (out_channels, in_channels, KERNEL, KERNEL), dtype),
                       "b": np.zeros(out_channels, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._kernel = ConvKernel(in_channels)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """y = X_col @ W_col + b (then 2x2 max pooling when pooled). Outside training, a batch of
        more than eval_batch images is computed eval_batch at a time and keeps nothing for backward."""
        c, h, w = x.shape[1:]
        if c != self.in_channels:
            raise ValueError(f"Conv2D expects {self.in_channels} input channels, got input of shape "
                             f"{x.shape}; check the previous layer's out_channels")
        if self.pool and (h % 2 or w % 2):
            raise ValueError(f"a pooled Conv2D needs even height and width, got input of shape {x.shape}")
        return self._kernel.forward(x, self.params["W"], self.params["b"], self.pool, training, self.eval_batch)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """grad_out (N, F, H, W) = dL/dy of the last forward ((N, F, H/2, W/2) when pooled);
        fills grads["W"] = X_col^T dY_col (F, C, 3, 3) and grads["b"] = sum dY (F,); returns
        dL/dx = col2im(dY_col W_col^T) (N, C, H, W), or None when need_input_grad is False
        (the first layer: that product and col2im are skipped)."""
        dw, db, dx = self._kernel.backward(grad_out, need_input_grad)
        self.grads["W"][...] = dw
        self.grads["b"][...] = db
        return dx

    def spec(self) -> dict[str, Any]:
        spec = {"kind": self.kind, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "pool": self.pool}
        if self.frozen:   # written only when set: the specs of trainable convolutions stay as they were
            spec["frozen"] = True
        return spec


class MaxPool2D(Layer):
    """2x2 max pooling, stride 2: (N, C, H, W) -> (N, C, H/2, W/2), H and W even; keeps dtype
    and memory layout. `maxpool2d_forward` and `maxpool2d_backward`, computed by
    `numpynet._conv_kernel`.

    Backward sends each output gradient to exactly one input: the first element of its window,
    in row-major order, equal to the max.  With distinct values that is the argmax, and this is
    the true gradient; with ties it is one valid subgradient, the one a finite-difference check
    agrees with when the tie is broken by a tiny increase of that first element.
    """

    kind = "maxpool2d"

    def __init__(self) -> None:
        super().__init__()
        self._kernel = PoolKernel()

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        h, w = x.shape[2:]
        if h % 2 or w % 2:
            raise ValueError(f"MaxPool2D needs even height and width, got input of shape {x.shape}")
        return self._kernel.forward(x)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return self._kernel.backward(grad_out)


class GlobalMaxPool(Layer):
    """Max over each whole feature map: x (N, C, H, W), any memory layout -> y (N, C), keeps dtype.

        y[n, c] = max_{i, j} x[n, c, i, j]

    Backward, as MaxPool2D's: dy[n, c] goes to the first (row-major) position (i, j) of the map
    equal to the max, every other position gets 0; dx has the memory layout x had.
    (airbench ends with MaxPool2d over its last 4x4 maps, then Flatten: the same numbers.)
    """

    kind = "global_maxpool"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        n, c, h, w = x.shape
        self._x_like = x
        self._winner = x.reshape(n, c, h * w).argmax(axis=-1)     # (N, C), the first max
        return np.take_along_axis(x.reshape(n, c, h * w), self._winner[..., None], axis=-1)[..., 0]

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """grad_out (N, C) -> dx (N, C, H, W)."""
        n, c, _, w = self._x_like.shape
        dx = np.zeros_like(self._x_like, dtype=grad_out.dtype)   # same memory layout as x
        i, j = np.divmod(self._winner, w)
        dx[np.arange(n)[:, None], np.arange(c), i, j] = grad_out
        return dx


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in (C, H, W) row-major order, and back; keeps dtype."""

    kind = "flatten"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x_like = x
        return x.reshape(x.shape[0], -1)  # copies only when x is not C-contiguous

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """grad_out (N, C*H*W) -> (N, C, H, W), stored in the memory layout the forward input
        had (channels-last after a conv), so the layers below see the layout they produced."""
        dx = np.empty_like(self._x_like)
        dx[...] = grad_out.reshape(dx.shape)
        return dx
