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

Speed: a convolution runs as jobs of a few images each on `numpynet.parallel`'s worker
threads (single-threaded BLAS, jobs cut by shape alone, so bit-identical for any thread count).
A job does its images' copies and products back to back, so the im2col columns it writes are
still in cache when its matmul reads them (and dcols when its col2im does); the copies run
along long contiguous runs.  benchmarks/bench_conv.py profiles a small CNN layer by layer;
benchmarks/bench_cnn.py compares the train stage with PyTorch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from numpynet import parallel
from numpynet.layers import Layer, he_normal
from numpynet.parallel import matmul, run

KERNEL = 3         # kernel side; padding 1 and stride 1 keep H x W ("same" convolution)
EVAL_CHUNK = 128   # images per im2col buffer when not training, so evaluating 10,000 images at
                   # once needs a ~40 MB im2col buffer, not ~3 GB


def _image_blocks(n: int, c: int, h: int, w: int) -> list[slice]:
    """The jobs of a convolution over n images of (C, H, W): runs of images of about
    JOB_ELEMENTS im2col elements, so that a job's columns are still in cache when its matmul
    (forward) or its col2im (backward) reads them."""
    return parallel.batch_slices(n, KERNEL * KERNEL * c * h * w)


def _im2col(x_pad: np.ndarray, cols: np.ndarray) -> None:
    """Fill `cols` (N, H, W, 3, 3C) from the zero-padded channels-last input x_pad
    (N, H+2, W+2, C): cols[n, y, x, ky, kx*C + c] = x_pad[n, y + ky, x + kx, c].

    For a fixed (n, y, x, ky) the three kernel columns kx are 3C consecutive numbers of
    x_pad, so the whole matrix is one strided view of x_pad copied once with runs of 3C."""
    n, hp, wp, c = x_pad.shape
    rows = x_pad.reshape(n, hp, wp * c)
    windows = sliding_window_view(rows, (KERNEL, KERNEL * c), axis=(1, 2))[:, :, ::c]
    np.copyto(cols, windows)  # windows: (N, H, W, 3, 3C) view, no copy until here


def _col2im(taps: np.ndarray, dx: np.ndarray) -> None:
    """Adjoint of `_im2col` without the padding: dx[n, y + ky - 1, x + kx - 1, c] =
    sum over taps of taps[n, y, x, ky, kx, c]; contributions that land in the padding are
    dropped.  taps (N, H, W, 3, 3, C) -> dx (N, H, W, C), overwritten.

    Both are logical shapes: any memory layout works, and NumPy runs each of the 9 slice-adds
    along whichever axis is contiguous in memory (C for channels-last dcols, W for the
    K-major ones of `_input_grad`)."""
    h, w = dx.shape[1:3]
    # the centre tap covers every pixel exactly once: assign it, then add the other eight
    dx[...] = taps[:, :, :, 1, 1, :]
    for ky in range(KERNEL):
        for kx in range(KERNEL):
            if ky == kx == 1:
                continue
            # tap (ky, kx) of output pixel (y, x) reads input pixel (y + ky - 1, x + kx - 1);
            # keep the output rows/cols whose input pixel is inside the image
            oy = slice(max(0, 1 - ky), h - max(0, ky - 1))
            ox = slice(max(0, 1 - kx), w - max(0, kx - 1))
            iy = slice(max(0, ky - 1), h - max(0, 1 - ky))
            ix = slice(max(0, kx - 1), w - max(0, 1 - kx))
            dx[:, iy, ix, :] += taps[:, oy, ox, ky, kx, :]


def _backward(cols: np.ndarray, dy: np.ndarray, w_mat: np.ndarray, shape: tuple[int, int, int, int],
              need_input_grad: bool, fill_dy: Callable[[slice], None] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of y = cols @ w_mat + b, the convolution as one matmul: cols (M, 9C) im2col
    rows (M = N*H*W), dy (M, F) = dL/dy, w_mat (9C, F), shape = (N, C, H, W) of the input
    -> dW_mat (9C, F), db (F,), and dL/dx (N, C, H, W) (None unless need_input_grad).

    dW = cols^T dY, summed over the image blocks of `_image_blocks`: one partial product per
    block, added in block order (the summation order is part of the results, and a function
    of the shape only). dx: dcols = dY W^T, then col2im. The 9 slice-adds of col2im run along
    the contiguous axis of dcols, so its layout is chosen for the longer run: channels-last
    (runs of C) when C >= W, computed in the same jobs as the partial dW while the block is in
    cache; else "K-major" dcols^T = W dY^T, (3, 3, C, N, H, W) in memory, runs of W (a
    3-channel input layer, where runs of 3 would make col2im ~5x slower).

    `fill_dy(images)`, when given, first writes those images' rows of dy (a pooled
    convolution's pooling backward), in the same job, so that they are in cache for the rest."""
    n, c, h, w = shape
    k, f = w_mat.shape
    blocks = _image_blocks(n, c, h, w)
    partial_dw = np.empty((len(blocks), k, f), dy.dtype)
    channels_last = need_input_grad and c >= w
    if channels_last:
        dx = np.empty((n, h, w, c), dy.dtype)
        dcols = np.empty((n * h * w, k), dy.dtype)

    def job(i: int, images: slice) -> None:
        rows = slice(images.start * h * w, images.stop * h * w)
        if fill_dy is not None:
            fill_dy(images)
        np.matmul(cols[rows].T, dy[rows], out=partial_dw[i])
        if channels_last:
            np.matmul(dy[rows], w_mat.T, out=dcols[rows])
            _col2im(dcols[rows].reshape(-1, h, w, KERNEL, KERNEL, c), dx[images])

    run([functools.partial(job, i, images) for i, images in enumerate(blocks)])
    dw_mat = partial_dw.sum(axis=0)
    db = np.ones(len(dy), dy.dtype) @ dy      # db = sum of dY over every pixel (a matvec: fast)
    if channels_last:
        return dw_mat, db, dx.transpose(0, 3, 1, 2)
    if not need_input_grad:
        return dw_mat, db, None
    dcols_t = matmul(w_mat, dy.T)                                # (9C, M)
    dx_cnhw = np.empty((c, n, h, w), dy.dtype)
    taps = dcols_t.reshape(KERNEL, KERNEL, c, n, h, w).transpose(3, 4, 5, 0, 1, 2)
    _col2im(taps, dx_cnhw.transpose(1, 2, 3, 0))
    return dw_mat, db, dx_cnhw.transpose(1, 0, 2, 3)


class Conv2D(Layer):
    """3x3 convolution, padding 1, stride 1 (cross-correlation, as in every DL library).

    y[n, f, i, j] = b[f] + sum_{c, ky, kx} W[f, c, ky, kx] * x[n, c, i + ky - 1, j + kx - 1]
    with x zero outside the image.

    x (N, C, H, W) any float dtype and memory layout -> y (N, F, H, W) in the parameters'
    dtype, a view of channels-last (N, H, W, F) memory (see the module docstring).
    W (F, C, 3, 3) He-normal with fan_in = 9C; b (F,) zeros.

    pool=True: followed by 2x2 max pooling, y (N, F, H/2, W/2), exactly what MaxPool2D would
    compute from the unpooled output, but inside the convolution's own jobs, while each block
    of images is in cache (forward and backward); H and W must be even.

    Forward: copy x into a zero-bordered channels-last buffer, unfold it into an im2col matrix
    (N*H*W, 9C) with one strided copy, and multiply by the (9C, F) weight matrix. Backward
    reuses that matrix for dW and scatters dY W^T back with 9 shifted slice-adds (col2im).
    Both passes run as jobs of a few images each (`_image_blocks`) on the worker threads.
    """

    kind = "conv2d"
    weights = ("W",)
    eval_batch = EVAL_CHUNK  # feature maps of 128 images stay in cache far better than of 1,000:
                             # a 1,500-image validation pass took 0.45 s so, 0.8-1.9 s in 1,000s

    def __init__(self, in_channels: int, out_channels: int, rng: np.random.Generator | None = None,
                 dtype: np.dtype = np.float32, pool: bool = False) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"Conv2D needs positive channel counts, got in_channels={in_channels!r}, "
                             f"out_channels={out_channels!r}")
        self.in_channels, self.out_channels, self.pool = in_channels, out_channels, pool
        rng = rng if rng is not None else np.random.default_rng(0)
        fan_in = in_channels * KERNEL * KERNEL
        self.params = {"W": he_normal(rng, fan_in, (out_channels, in_channels, KERNEL, KERNEL), dtype),
                       "b": np.zeros(out_channels, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._buffers: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._cache: tuple | None = None  # (cols, w_mat, x shape, pool masks) of the last forward

    def _work_buffers(self, n: int, h: int, w: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Reused (padded input (N, H+2, W+2, C), im2col (N, H, W, 3, 3C)) pair; the padded
        buffer's border is zeroed once, at allocation, and never written afterwards."""
        key = (n, h, w, np.dtype(dtype))
        if key not in self._buffers:
            if len(self._buffers) >= 4:  # e.g. batch size changed: drop stale shapes
                self._buffers.clear()
            c = self.in_channels
            self._buffers[key] = (np.zeros((n, h + 2, w + 2, c), dtype),
                                  np.empty((n, h, w, KERNEL, KERNEL * c), dtype))
        return self._buffers[key]

    def _forward_block(self, x: np.ndarray, w_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        """(output, the im2col matrix (n*H*W, 9C) it came from, the pooling masks or ()) for x
        (n, C, H, W). The output is (n, H, W, F) memory, or (n, H/2, W/2, F) when pooled."""
        n, c, h, w = x.shape
        f = w_mat.shape[1]
        x_pad, cols = self._work_buffers(n, h, w, w_mat.dtype)
        x_nhwc = x.transpose(0, 2, 3, 1)
        bias = self.params["b"]
        if self.pool:
            conv_out = np.empty((n, h, w, f), w_mat.dtype)  # per job, in cache; never read after
            out = np.empty((n, h // 2, w // 2, f), w_mat.dtype)
            masks = _pool_masks(out.transpose(0, 3, 1, 2))
        else:
            conv_out = out = np.empty((n, h, w, f), w_mat.dtype)
            masks = ()

        def job(images: slice) -> None:  # pad, unfold, multiply (and pool) these images, in cache
            x_pad[images, 1:-1, 1:-1, :] = x_nhwc[images]
            _im2col(x_pad[images], cols[images])
            block = conv_out[images].reshape(-1, f)
            np.matmul(cols[images].reshape(-1, KERNEL * KERNEL * c), w_mat, out=block)
            block += bias
            if self.pool:
                _pool_forward(conv_out[images].transpose(0, 3, 1, 2), out[images].transpose(0, 3, 1, 2),
                              *(m[images] for m in masks))

        run([functools.partial(job, images) for images in _image_blocks(n, c, h, w)])
        return out, cols.reshape(n * h * w, KERNEL * KERNEL * c), masks

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"Conv2D expects {self.in_channels} input channels, got input of shape "
                             f"{x.shape}; check the previous layer's out_channels")
        if self.pool and (h % 2 or w % 2):
            raise ValueError(f"a pooled Conv2D needs even height and width, got input of shape {x.shape}")
        f = self.out_channels
        # rows of w_mat ordered (ky, kx, c), matching the columns of the im2col matrix
        w_mat = self.params["W"].transpose(2, 3, 1, 0).reshape(KERNEL * KERNEL * c, f)
        if training or n <= EVAL_CHUNK:
            y, cols, masks = self._forward_block(x, w_mat)
            self._cache = (cols, w_mat, x.shape, masks)
        else:  # a large evaluation batch, a block of images at a time; nothing to backpropagate
            self._cache = None
            s = 2 if self.pool else 1
            y = np.empty((n, h // s, w // s, f), w_mat.dtype)
            for i in range(0, n, EVAL_CHUNK):
                y[i:i + EVAL_CHUNK] = self._forward_block(x[i:i + EVAL_CHUNK], w_mat)[0]
        return y.transpose(0, 3, 1, 2)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """grad_out (N, F, H, W) = dL/dy of the last forward ((N, F, H/2, W/2) when pooled);
        fills grads["W"] (F, C, 3, 3) and grads["b"] (F,); returns dL/dx (N, C, H, W), or None
        when need_input_grad is False (the first layer: the dY W^T matmul and col2im are skipped)."""
        if self._cache is None:
            raise RuntimeError("Conv2D.backward needs a preceding forward with training=True or at "
                               f"most EVAL_CHUNK={EVAL_CHUNK} images; larger evaluation batches keep no cache")
        cols, w_mat, (n, c, h, w), masks = self._cache
        f = self.out_channels
        fill_dy = None
        if self.pool:  # dL/d(conv output), routed through the pooling by each job for its images
            dy_nhwc = np.empty((n, h, w, f), cols.dtype)
            dy_nchw = dy_nhwc.transpose(0, 3, 1, 2)

            def fill_dy(images: slice) -> None:
                _pool_backward(grad_out[images], *(m[images] for m in masks), dy_nchw[images])
            dy = dy_nhwc.reshape(n * h * w, f)
        else:
            # (N*H*W, F) rows: a free view when grad_out is channels-last, as ReLU/MaxPool2D keep
            # it; cast so a float64 gradient cannot silently turn every matmul into float64
            dy = grad_out.transpose(0, 2, 3, 1).reshape(n * h * w, f).astype(cols.dtype, copy=False)
        dw_mat, db, dx = _backward(cols, dy, w_mat, (n, c, h, w), need_input_grad, fill_dy)
        self.grads["W"][...] = dw_mat.reshape(KERNEL, KERNEL, c, f).transpose(3, 2, 0, 1)
        self.grads["b"][...] = db
        return dx

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "pool": self.pool}


def _pool_forward(x: np.ndarray, y: np.ndarray, first_row: np.ndarray, left_top: np.ndarray,
                  left_bottom: np.ndarray) -> None:
    """2x2 max pooling of x (N, C, H, W) into y (N, C, H/2, W/2), with the masks `_pool_backward`
    routes the gradient by (bool, (N, C, H/2, W/2)), all written in place."""
    tl, tr = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]
    bl, br = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    top, bottom = np.maximum(tl, tr), np.maximum(bl, br)  # in the layout of x's quarters
    # '>=' keeps the first element on ties, which gives the row-major tie rule
    np.greater_equal(tl, tr, out=left_top)
    np.greater_equal(bl, br, out=left_bottom)
    np.greater_equal(top, bottom, out=first_row)
    np.maximum(top, bottom, out=y)


def _pool_masks(like: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first_row, left_top, left_bottom) bool arrays of the shape and memory layout of `like`."""
    return tuple(np.empty_like(like, dtype=bool) for _ in range(3))


def _pool_backward(grad_out: np.ndarray, first_row: np.ndarray, left_top: np.ndarray,
                   left_bottom: np.ndarray, dx: np.ndarray) -> None:
    """Route dL/dy (N, C, H/2, W/2) to the winner of each 2x2 window of dx (N, C, H, W).

    The winner is the FIRST element equal to the window max in row-major order
    (top-left, top-right, bottom-left, bottom-right); every other element gets 0.
    first_row: the winner is in the top row; left_top / left_bottom: within the top /
    bottom pair, the left element wins.  All three are bool (N, C, H/2, W/2).
    """
    # split dL/dy between the two rows, then each row's share between its two elements; the
    # second part is a difference (g - g*mask is exactly g or 0), so no mask is ever negated.
    # The arithmetic runs on contiguous (N, C, H/2, W/2) arrays; only the four copies into dx
    # are strided (ufuncs writing through strided outputs are ~2x slower than plain copies).
    top = grad_out * first_row
    bottom = grad_out - top
    for row, share, left in ((0, top, left_top), (1, bottom, left_bottom)):
        part = share * left
        dx[:, :, row::2, 0::2] = part
        np.subtract(share, part, out=part)
        dx[:, :, row::2, 1::2] = part


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
        h, w = x.shape[2:]
        if h % 2 or w % 2:
            raise ValueError(f"MaxPool2D needs even height and width, got input of shape {x.shape}")
        y = np.empty_like(x[:, :, 0::2, 0::2])  # in the layout of x's quarters
        self._masks = _pool_masks(y)
        _pool_forward(x, y, *self._masks)
        self._x_like = x
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        dx = np.empty_like(self._x_like)  # same memory layout as x
        _pool_backward(grad_out, *self._masks, dx)
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
