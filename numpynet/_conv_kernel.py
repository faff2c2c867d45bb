"""The fast kernel behind `numpynet.conv`: what `Conv2D` and `MaxPool2D` compute, faster.

`numpynet.conv` holds the maths as a reader wants it (`conv2d_forward`, `conv2d_backward`,
`maxpool2d_forward`, `maxpool2d_backward`: a few lines each over im2col and col2im). This module
computes the same numbers, bit for bit (tests/numpynet/test_conv_kernel.py holds them equal), with
the machinery that speed needs:

- Memory layout. The convolution works channels-last: it returns its output as an (N, F, H, W)
  *view* of (N, H, W, F) memory, and ReLU (elementwise, layout-preserving), max pooling and the
  next convolution keep that layout, so a conv -> relu -> pool -> conv stack never transposes a
  feature map.
- Jobs. A convolution runs as jobs of a few images each on `numpynet.parallel`'s worker threads
  (`parallel.batch_jobs`: cut by shape alone, so bit-identical for any number of workers). A job
  does its images' copies and products back to back, so the im2col columns it writes are still
  in cache when its matmul reads them (and the columns' gradient when its col2im does). The
  weights' gradient is the exception: one large product over the whole batch (`_backward`).
- Fused pooling. `pool=True` runs the 2x2 max pooling inside the convolution's jobs, forward
  and backward, while each job's images are in cache.
- Buffer reuse. The zero-bordered input and the im2col matrix are allocated once per shape and
  reused; the border is zeroed once, at allocation.
- Evaluation in batches. Outside training, a batch larger than `eval_batch` images is computed
  `eval_batch` images at a time, so the im2col buffer stays small; nothing is kept for backward.

benchmarks/bench_conv.py profiles a small CNN layer by layer; benchmarks/bench_cnn.py compares
the train stage with PyTorch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from numpynet import parallel
from numpynet.parallel import matmul, run

KERNEL = 3   # kernel side; padding 1 and stride 1 keep H x W ("same" convolution); numpynet.conv exports it
MAX_BUFFER_SHAPES = 4  # work-buffer shapes a convolution keeps (a new batch size adds one)


def conv_jobs(n: int, c: int, h: int, w: int) -> list[slice]:
    """The jobs of a convolution over n images of (C, H, W), as slices of the batch: runs of
    images of about JOB_ELEMENTS im2col elements, so that a job's columns are still in cache
    when its matmul (forward) or its col2im (backward) reads them."""
    return parallel.batch_jobs(n, KERNEL * KERNEL * c * h * w)


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
    along whichever axis is contiguous in memory (C for channels-last columns, W for the
    K-major ones of `_backward`). The order of the additions is `numpynet.conv.col2im`'s."""
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

    dW = cols^T dY, one `parallel.matmul` over every row once dy is complete (one partial
    product per job, a run of images, made products only a few hundred rows deep and gigabytes
    of partial results to add). dx: dcols = dY W^T, then col2im. The 9 slice-adds of col2im run
    along the contiguous axis of dcols, so its layout is chosen for the longer run:
    channels-last (runs of C) when C >= W, computed job by job while the job's rows are in
    cache; else "K-major" dcols^T = W dY^T, (3, 3, C, N, H, W) in memory, runs of W (a 3-channel
    input layer, where runs of 3 would make col2im several times slower).

    `fill_dy(images)`, when given, first writes those images' rows of dy (a pooled
    convolution's pooling backward), in the same job, so that they are in cache for the rest."""
    n, c, h, w = shape
    k = w_mat.shape[0]
    channels_last = need_input_grad and c >= w
    if channels_last:
        dx = np.empty((n, h, w, c), dy.dtype)
        dcols = np.empty((n * h * w, k), dy.dtype)

    def job(images: slice) -> None:
        rows = slice(images.start * h * w, images.stop * h * w)
        if fill_dy is not None:
            fill_dy(images)
        if channels_last:
            np.matmul(dy[rows], w_mat.T, out=dcols[rows])
            _col2im(dcols[rows].reshape(-1, h, w, KERNEL, KERNEL, c), dx[images])

    if fill_dy is not None or channels_last:
        run([functools.partial(job, images) for images in conv_jobs(n, c, h, w)])
    dw_mat = matmul(cols.T, dy)
    db = np.ones(len(dy), dy.dtype) @ dy      # db = sum of dY over every pixel, as a matvec
    if channels_last:
        return dw_mat, db, dx.transpose(0, 3, 1, 2)
    if not need_input_grad:
        return dw_mat, db, None
    dcols_t = matmul(w_mat, dy.T)                                # (9C, M)
    dx_cnhw = np.empty((c, n, h, w), dy.dtype)
    taps = dcols_t.reshape(KERNEL, KERNEL, c, n, h, w).transpose(3, 4, 5, 0, 1, 2)
    _col2im(taps, dx_cnhw.transpose(1, 2, 3, 0))
    return dw_mat, db, dx_cnhw.transpose(1, 0, 2, 3)


class ConvKernel:
    """The fast forward and backward of one Conv2D: its reusable work buffers and what its
    backward needs from the last forward."""

    def __init__(self, in_channels: int) -> None:
        self.in_channels = in_channels
        self._buffers: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._cache: tuple | None = None  # (cols, w_mat, x shape, pool masks or ()) of the last forward

    def _work_buffers(self, n: int, h: int, w: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Reused (padded input (N, H+2, W+2, C), im2col (N, H, W, 3, 3C)) pair; the padded
        buffer's border is zeroed once, at allocation, and never written afterwards."""
        key = (n, h, w, np.dtype(dtype))
        if key not in self._buffers:
            if len(self._buffers) >= MAX_BUFFER_SHAPES:  # e.g. batch size changed: drop stale shapes
                self._buffers.clear()
            c = self.in_channels
            self._buffers[key] = (np.zeros((n, h + 2, w + 2, c), dtype),
                                  np.empty((n, h, w, KERNEL, KERNEL * c), dtype))
        return self._buffers[key]

    def _forward_batch(self, x: np.ndarray, w_mat: np.ndarray, b: np.ndarray, pool: bool
                       ) -> tuple[np.ndarray, np.ndarray, tuple]:
        """(output, the im2col matrix (n*H*W, 9C) it came from, the pooling masks or ()) for x
        (n, C, H, W). The output is (n, H, W, F) memory, or (n, H/2, W/2, F) when pooled."""
        n, c, h, w = x.shape
        f = w_mat.shape[1]
        x_pad, cols = self._work_buffers(n, h, w, w_mat.dtype)
        x_nhwc = x.transpose(0, 2, 3, 1)
        if pool:
            conv_out = np.empty((n, h, w, f), w_mat.dtype)  # per job, in cache; never read after
            out = np.empty((n, h // 2, w // 2, f), w_mat.dtype)
            masks = pool_masks(out.transpose(0, 3, 1, 2))
        else:
            conv_out = out = np.empty((n, h, w, f), w_mat.dtype)
            masks = ()

        def job(images: slice) -> None:  # pad, unfold, multiply (and pool) these images, in cache
            x_pad[images, 1:-1, 1:-1, :] = x_nhwc[images]
            _im2col(x_pad[images], cols[images])
            rows = conv_out[images].reshape(-1, f)
            np.matmul(cols[images].reshape(-1, KERNEL * KERNEL * c), w_mat, out=rows)
            rows += b
            if pool:
                pool_forward(conv_out[images].transpose(0, 3, 1, 2), out[images].transpose(0, 3, 1, 2),
                             *(m[images] for m in masks))

        run([functools.partial(job, images) for images in conv_jobs(n, c, h, w)])
        return out, cols.reshape(n * h * w, KERNEL * KERNEL * c), masks

    def forward(self, x: np.ndarray, weight: np.ndarray, b: np.ndarray, pool: bool, training: bool,
                eval_batch: int) -> np.ndarray:
        """x (N, C, H, W) any float dtype and layout, weight (F, C, 3, 3), b (F,) -> y (N, F, H, W),
        or (N, F, H/2, W/2) when pooled, in weight's dtype, a view of channels-last memory.

        Keeps what `backward` needs when training or when N <= eval_batch; a larger evaluation
        batch is computed eval_batch images at a time and keeps nothing."""
        n, c, h, w = x.shape
        f = weight.shape[0]
        # rows of w_mat ordered (ky, kx, c), matching the columns of the im2col matrix
        w_mat = weight.transpose(2, 3, 1, 0).reshape(KERNEL * KERNEL * c, f)
        if training or n <= eval_batch:
            y, cols, masks = self._forward_batch(x, w_mat, b, pool)
            self._cache = (cols, w_mat, x.shape, masks)
        else:
            self._cache = None
            s = 2 if pool else 1
            y = np.empty((n, h // s, w // s, f), w_mat.dtype)
            for i in range(0, n, eval_batch):
                y[i:i + eval_batch] = self._forward_batch(x[i:i + eval_batch], w_mat, b, pool)[0]
        return y.transpose(0, 3, 1, 2)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """grad_out (N, F, H, W) = dL/dy of the last forward ((N, F, H/2, W/2) when pooled)
        -> dW (F, C, 3, 3), db (F,), dL/dx (N, C, H, W) (None unless need_input_grad)."""
        if self._cache is None:
            raise RuntimeError("Conv2D.backward needs a preceding forward with training=True or at most "
                               "eval_batch images; larger evaluation batches keep no cache")
        cols, w_mat, (n, c, h, w), masks = self._cache
        f = w_mat.shape[1]
        fill_dy = None
        if masks:  # dL/d(conv output), routed through the pooling by each job for its images
            dy_nhwc = np.empty((n, h, w, f), cols.dtype)
            dy_nchw = dy_nhwc.transpose(0, 3, 1, 2)

            def fill_dy(images: slice) -> None:
                pool_backward(grad_out[images], *(m[images] for m in masks), dy_nchw[images])
            dy = dy_nhwc.reshape(n * h * w, f)
        else:
            # (N*H*W, F) rows: a free view when grad_out is channels-last, as ReLU/MaxPool2D keep
            # it; cast so a float64 gradient cannot silently turn every matmul into float64
            dy = grad_out.transpose(0, 2, 3, 1).reshape(n * h * w, f).astype(cols.dtype, copy=False)
        dw_mat, db, dx = _backward(cols, dy, w_mat, (n, c, h, w), need_input_grad, fill_dy)
        return dw_mat.reshape(KERNEL, KERNEL, c, f).transpose(3, 2, 0, 1), db, dx


def pool_forward(x: np.ndarray, y: np.ndarray, first_row: np.ndarray, left_top: np.ndarray,
                 left_bottom: np.ndarray) -> None:
    """2x2 max pooling of x (N, C, H, W) into y (N, C, H/2, W/2), with the masks `pool_backward`
    routes the gradient by (bool, (N, C, H/2, W/2)), all written in place."""
    tl, tr = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]
    bl, br = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    top, bottom = np.maximum(tl, tr), np.maximum(bl, br)  # in the layout of x's quarters
    # '>=' keeps the first element on ties, which gives the row-major tie rule
    np.greater_equal(tl, tr, out=left_top)
    np.greater_equal(bl, br, out=left_bottom)
    np.greater_equal(top, bottom, out=first_row)
    np.maximum(top, bottom, out=y)


def pool_masks(like: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first_row, left_top, left_bottom) bool arrays of the shape and memory layout of `like`."""
    return tuple(np.empty_like(like, dtype=bool) for _ in range(3))


def pool_backward(grad_out: np.ndarray, first_row: np.ndarray, left_top: np.ndarray,
                  left_bottom: np.ndarray, dx: np.ndarray) -> None:
    """Route dL/dy (N, C, H/2, W/2) to the winner of each 2x2 window of dx (N, C, H, W).

    The winner is the FIRST element equal to the window max in row-major order
    (top-left, top-right, bottom-left, bottom-right); every other element gets 0 (of either
    sign: -0.0 where the plain `numpynet.conv.maxpool2d_backward` writes +0.0).
    first_row: the winner is in the top row; left_top / left_bottom: within the top /
    bottom pair, the left element wins.  All three are bool (N, C, H/2, W/2).
    """
    # split dL/dy between the two rows, then each row's share between its two elements; the
    # second part is a difference (g - g*mask is exactly g or 0), so no mask is ever negated.
    # The arithmetic runs on contiguous (N, C, H/2, W/2) arrays; only the four copies into dx
    # are strided (ufuncs writing through strided outputs are slower than plain copies).
    top = grad_out * first_row
    bottom = grad_out - top
    for row, share, left in ((0, top, left_top), (1, bottom, left_bottom)):
        part = share * left
        dx[:, :, row::2, 0::2] = part
        np.subtract(share, part, out=part)
        dx[:, :, row::2, 1::2] = part


class PoolKernel:
    """The fast forward and backward of one MaxPool2D: the masks its backward routes by."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, H, W), H and W even -> y (N, C, H/2, W/2), in the layout of x's quarters."""
        y = np.empty_like(x[:, :, 0::2, 0::2])
        self._masks = pool_masks(y)
        pool_forward(x, y, *self._masks)
        self._x_like = x
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out (N, C, H/2, W/2) -> dx (N, C, H, W), in the memory layout of the forward's x."""
        dx = np.empty_like(self._x_like)
        pool_backward(grad_out, *self._masks, dx)
        return dx
