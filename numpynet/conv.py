"""Image layers for the from-scratch network: 3x3 convolution, 2x2 max pooling, flatten.

Pure NumPy, no autograd: each layer's backward rule is written out in a short private
function beside its forward one, in the style of `numpynet.layers`.

Shapes: N = batch, C = input channels, F = output channels (filters), H x W = image size.
Every layer takes and returns logical (N, C, H, W) arrays. Internally the convolution works
channels-last: it returns its output as an (N, F, H, W) *view* of (N, H, W, F) memory, and
ReLU (elementwise, layout-preserving), MaxPool2D and the next Conv2D keep that layout, so a
conv -> relu -> pool -> conv stack never transposes a feature map. Flatten always produces the
(C, H, W) row-major order of the logical shape, whatever the memory layout.

Arrays are float32 unless a test passes float64 (the gradient check does); a Conv2D computes
in its parameters' dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numpynet.layers import Layer, he_normal

KERNEL = 3  # kernel side; padding 1 and stride 1 keep H x W ("same" convolution)
TAPS = [(ky, kx) for ky in range(KERNEL) for kx in range(KERNEL)]  # row-major kernel taps


def _tap_slices(ky: int, kx: int, h: int, w: int) -> tuple[slice, slice, slice, slice]:
    """For kernel tap (ky, kx) of a 3x3 / pad-1 convolution on an h x w image: the output rows
    and columns (oy, ox) whose input pixel (oy + ky - 1, ox + kx - 1) lies inside the image, and
    those input rows and columns (iy, ix).  Returns (oy, ox, iy, ix) as slices."""
    dy, dx = ky - 1, kx - 1
    oy = slice(max(0, -dy), h - max(0, dy))
    ox = slice(max(0, -dx), w - max(0, dx))
    iy = slice(max(0, dy), h + min(0, dy))
    ix = slice(max(0, dx), w + min(0, dx))
    return oy, ox, iy, ix


def _im2col(x_nhwc: np.ndarray, cols: np.ndarray) -> None:
    """Fill `cols` (N, H, W, 3, 3, C) with the 3x3 neighbourhood of every pixel of
    `x_nhwc` (N, H, W, C): cols[n, y, x, ky, kx, c] = x[n, y + ky - 1, x + kx - 1, c].

    Entries that fall in the zero padding are never written: `cols` must be zero there
    on entry (Conv2D allocates it with np.zeros and reuses it, so they stay zero)."""
    h, w = x_nhwc.shape[1:3]
    for ky, kx in TAPS:
        oy, ox, iy, ix = _tap_slices(ky, kx, h, w)
        cols[:, oy, ox, ky, kx, :] = x_nhwc[:, iy, ix, :]


def _col2im(dcols: np.ndarray, dx_nhwc: np.ndarray) -> None:
    """Adjoint of `_im2col`: dx[n, y + ky - 1, x + kx - 1, c] += dcols[n, y, x, ky, kx, c],
    summed over taps, padding contributions dropped.  dcols (N, H, W, 3, 3, C) ->
    dx_nhwc (N, H, W, C), overwritten."""
    h, w = dx_nhwc.shape[1:3]
    # the centre tap covers every pixel exactly once: assign it, then add the other eight
    dx_nhwc[...] = dcols[:, :, :, 1, 1, :]
    for ky, kx in TAPS:
        if (ky, kx) == (1, 1):
            continue
        oy, ox, iy, ix = _tap_slices(ky, kx, h, w)
        dx_nhwc[:, iy, ix, :] += dcols[:, oy, ox, ky, kx, :]


def _conv_backward(cols: np.ndarray, w_mat: np.ndarray, dy: np.ndarray,
                   need_input_grad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of y = cols @ w_mat + b.

    cols (M, 9C) im2col rows (M = N*H*W), w_mat (9C, F), dy (M, F) = dL/dy.
    Returns dW_mat (9C, F), db (F,), and dcols (M, 9C) or None.
    """
    dw_mat = cols.T @ dy                               # dW = cols^T dY
    db = dy.sum(axis=0)                                # db = sum over every pixel of dY
    dcols = dy @ w_mat.T if need_input_grad else None  # dcols = dY W^T, then col2im -> dx
    return dw_mat, db, dcols


class Conv2D(Layer):
    """3x3 convolution, padding 1, stride 1 (cross-correlation, as in every DL library).

    y[n, f, i, j] = b[f] + sum_{c, ky, kx} W[f, c, ky, kx] * x[n, c, i + ky - 1, j + kx - 1]
    with x zero outside the image.

    x (N, C, H, W) -> y (N, F, H, W), any float dtype in, the parameters' dtype out
    (y is a view of channels-last memory, see the module docstring).
    W (F, C, 3, 3) He-normal with fan_in = 9C; b (F,) zeros.
    """

    kind = "conv2d"

    def __init__(self, in_channels: int, out_channels: int, rng: np.random.Generator | None = None,
                 dtype: np.dtype = np.float32) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"Conv2D needs positive channel counts, got in_channels={in_channels!r}, "
                             f"out_channels={out_channels!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        rng = rng if rng is not None else np.random.default_rng(0)
        fan_in = in_channels * KERNEL * KERNEL
        self.params = {"W": he_normal(rng, fan_in, (out_channels, in_channels, KERNEL, KERNEL), dtype),
                       "b": np.zeros(out_channels, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cols: np.ndarray | None = None   # (N, H, W, 3, 3, C) im2col buffer, reused across calls
        self._w_mat: np.ndarray | None = None  # (9C, F) weights of the last forward

    def _cols_buffer(self, n: int, h: int, w: int, dtype: np.dtype) -> np.ndarray:
        shape = (n, h, w, KERNEL, KERNEL, self.in_channels)
        if self._cols is None or self._cols.shape != shape or self._cols.dtype != dtype:
            self._cols = np.zeros(shape, dtype)  # zeros: the padding entries are never written
        return self._cols

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"Conv2D expects {self.in_channels} input channels, got input of shape "
                             f"{x.shape}; check the previous layer's out_channels")
        W = self.params["W"]
        f = self.out_channels
        cols = self._cols_buffer(n, h, w, W.dtype)
        _im2col(x.transpose(0, 2, 3, 1), cols)
        # rows of w_mat ordered (ky, kx, c) to match the last three axes of cols
        self._w_mat = W.transpose(2, 3, 1, 0).reshape(KERNEL * KERNEL * c, f)
        y = cols.reshape(n * h * w, -1) @ self._w_mat  # (N*H*W, F): one large matmul
        y += self.params["b"]
        self._x_shape = x.shape
        return y.reshape(n, h, w, f).transpose(0, 3, 1, 2)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        n, c, h, w = self._x_shape
        f = self.out_channels
        dy = grad_out.transpose(0, 2, 3, 1).reshape(n * h * w, f)  # free if grad_out is channels-last
        dw_mat, db, dcols = _conv_backward(self._cols.reshape(n * h * w, -1), self._w_mat, dy,
                                           need_input_grad)
        self.grads["W"][...] = dw_mat.reshape(KERNEL, KERNEL, c, f).transpose(3, 2, 0, 1)
        self.grads["b"][...] = db
        if not need_input_grad:
            return None
        dx = np.empty((n, h, w, c), dcols.dtype)
        _col2im(dcols.reshape(n, h, w, KERNEL, KERNEL, c), dx)
        return dx.transpose(0, 3, 1, 2)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_channels": self.in_channels, "out_channels": self.out_channels}


def _pool_backward(grad_out: np.ndarray, first_row: np.ndarray, left_top: np.ndarray,
                   left_bottom: np.ndarray, dx: np.ndarray) -> None:
    """Route dL/dy (N, C, H/2, W/2) to the winner of each 2x2 window of dx (N, C, H, W).

    The winner is the FIRST element equal to the window max in row-major order
    (top-left, top-right, bottom-left, bottom-right); every other element gets 0.
    first_row: the winner is in the top row; left_top / left_bottom: within the top /
    bottom pair, the left element wins.  All three are bool (N, C, H/2, W/2).
    """
    top, bottom = grad_out * first_row, grad_out * ~first_row
    np.multiply(top, left_top, out=dx[:, :, 0::2, 0::2])
    np.multiply(top, ~left_top, out=dx[:, :, 0::2, 1::2])
    np.multiply(bottom, left_bottom, out=dx[:, :, 1::2, 0::2])
    np.multiply(bottom, ~left_bottom, out=dx[:, :, 1::2, 1::2])


class MaxPool2D(Layer):
    """2x2 max pooling, stride 2: (N, C, H, W) -> (N, C, H/2, W/2), H and W even; keeps dtype
    and memory layout.

    Backward sends each output gradient to exactly one input: the first element of its window,
    in row-major order, equal to the max.  With distinct values that is the argmax, and this is
    the true gradient; with ties it is one valid subgradient, the one a finite-difference check
    agrees with when the tie is broken by a tiny increase of that first element.
    """

    kind = "maxpool2d"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"MaxPool2D needs even height and width, got input of shape {x.shape}")
        tl, tr = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]
        bl, br = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
        top, bottom = np.maximum(tl, tr), np.maximum(bl, br)
        # '>=' keeps the first element on ties, which gives the row-major tie rule
        self._left_top, self._left_bottom = tl >= tr, bl >= br
        self._first_row = top >= bottom
        self._x_like = x
        return np.maximum(top, bottom, out=top)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        dx = np.empty_like(self._x_like)  # same memory layout as x
        _pool_backward(grad_out, self._first_row, self._left_top, self._left_bottom, dx)
        return dx


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in (C, H, W) row-major order, and back; keeps dtype."""

    kind = "flatten"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)  # copies only when x is not C-contiguous

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad_out.reshape(self._x_shape)
