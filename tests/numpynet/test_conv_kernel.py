"""numpynet._conv_kernel computes the bits of the plain maths in numpynet.conv: the layers' forward
output and every gradient against `conv2d_forward` / `conv2d_backward` / `maxpool2d_forward` /
`maxpool2d_backward` on the same random float32 inputs, over several jobs, eval batches and
worker counts. (test_conv.py checks the maths itself: naive loops and finite differences.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from numpynet import parallel
from numpynet.conv import Conv2D, MaxPool2D, conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward
from tests.helpers.layouts import channels_last
from tests.helpers.repo import ROOT

# (N, C, H, W, F): C < W takes the kernel's K-major col2im, C >= W its channels-last one
SHAPES = [(5, 3, 8, 8, 4), (4, 8, 4, 4, 6), (3, 5, 6, 10, 7), (2, 1, 2, 2, 1)]
JOB_IMAGES = 2   # images per job here, so every shape but the last runs several jobs


def assert_same_bits(fast: np.ndarray, plain: np.ndarray, what: str) -> None:
    """Equal values (np.array_equal), and the same dtype, shape and bytes of the logical array."""
    assert fast.dtype == plain.dtype and fast.shape == plain.shape, what
    assert np.array_equal(fast, plain), what
    assert np.ascontiguousarray(fast).tobytes() == np.ascontiguousarray(plain).tobytes(), what


@pytest.fixture(params=[1, 2], ids=["1 worker", "2 workers"])
def workers(request):
    parallel.set_workers(request.param)
    yield request.param
    parallel.set_workers(1)


def plain_conv(x: np.ndarray, layer: Conv2D, g: np.ndarray) -> tuple[np.ndarray, ...]:
    """y, dW, db, dx of `layer` (pooled or not) by the plain maths of numpynet.conv."""
    weight, b = layer.params["W"], layer.params["b"]
    y, x_col = conv2d_forward(x, weight, b)
    dy = g
    if layer.pool:
        y, dy = maxpool2d_forward(y), maxpool2d_backward(g, y)
    return (y, *conv2d_backward(dy, x_col, weight))


@pytest.mark.parametrize("pool", [False, True], ids=["conv", "pooled conv"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_conv_kernel_gives_the_bits_of_the_plain_maths_in_training(shape, pool, workers, monkeypatch):
    n, c, h, w, f = shape
    monkeypatch.setattr(parallel, "JOB_ELEMENTS", 9 * c * h * w * JOB_IMAGES)
    rng = np.random.default_rng(sum(shape))
    layer = Conv2D(c, f, rng, pool=pool)
    layer.params["b"][...] = rng.standard_normal(f)  # init is zero; a zero bias would hide bias bugs
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    s = 2 if pool else 1
    g = rng.standard_normal((n, f, h // s, w // s), dtype=np.float32)
    y, dw, db, dx = plain_conv(x, layer, g)
    for given_x, given_g in ((x, g), (channels_last(x), channels_last(g))):  # either memory layout
        assert_same_bits(layer.forward(given_x, training=True), y, "y")
        assert_same_bits(layer.backward(given_g), dx, "dx")
        assert_same_bits(layer.grads["W"], dw, "dW")
        assert_same_bits(layer.grads["b"], db, "db")
        layer.grads["W"][...] = layer.grads["b"][...] = 0.0
        layer.forward(given_x, training=True)
        assert layer.backward(given_g, need_input_grad=False) is None   # the first layer's backward
        assert_same_bits(layer.grads["W"], dw, "dW without dx")
        assert_same_bits(layer.grads["b"], db, "db without dx")


@pytest.mark.parametrize("pool", [False, True], ids=["conv", "pooled conv"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_conv_kernel_gives_the_bits_of_the_plain_maths_in_evaluation(shape, pool, workers, monkeypatch):
    n, c, h, w, f = shape
    monkeypatch.setattr(parallel, "JOB_ELEMENTS", 9 * c * h * w * JOB_IMAGES)
    rng = np.random.default_rng(sum(shape) + 1)
    layer = Conv2D(c, f, rng, pool=pool)
    layer.params["b"][...] = rng.standard_normal(f)
    x = rng.standard_normal((2 * n + 1, c, h, w), dtype=np.float32)
    y = conv2d_forward(x, layer.params["W"], layer.params["b"])[0]
    if pool:
        y = maxpool2d_forward(y)
    assert_same_bits(layer.forward(x), y, "y in one eval batch")
    layer.eval_batch = n  # eval batches of n, n, 1 images
    assert_same_bits(layer.forward(x), y, "y in eval batches")


@pytest.mark.parametrize("ties", [False, True], ids=["distinct values", "ties"])
@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (3, 4, 2, 2)], ids=str)
def test_maxpool_kernel_gives_the_plain_maths_values(shape, ties):
    """Forward bit for bit; the gradient equal as values (np.array_equal), and bit for bit once
    zeros are made positive: the kernel writes some of the non-winners' zeros as -0.0."""
    rng = np.random.default_rng(len(shape) + ties)
    x = rng.integers(-2, 3, shape).astype(np.float32) if ties else rng.standard_normal(shape, dtype=np.float32)
    g = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2), dtype=np.float32)
    for given_x, given_g in ((x, g), (channels_last(x), channels_last(g))):
        pool = MaxPool2D()
        assert_same_bits(pool.forward(given_x, training=True), maxpool2d_forward(x), "y")
        dx = pool.backward(given_g)
        plain = maxpool2d_backward(g, x)
        assert np.array_equal(dx, plain)
        assert_same_bits(dx + np.float32(0.0), plain, "dx (zeros made positive)")  # -0.0 + 0.0 = +0.0


# Under the BLAS the stages load (stages/__init__.py: Haswell kernels, one BLAS thread), which this
# test process cannot (it loaded NumPy first), with the pipeline's own sizes: a product of other
# blocks rounds differently there, which small shapes and another BLAS do not show.
PIPELINE_PROBE = """
import stages, json
import numpy as np
from numpynet import parallel
from numpynet.conv import Conv2D, conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward
parallel.set_workers(stages.threads())
rng = np.random.default_rng(0)
differ = []
for n, c, h, w, f in [(8, 3, 32, 32, 32), (8, 32, 16, 16, 64), (4, 64, 16, 16, 256), (8, 256, 8, 8, 256),
                      (4, 3, 32, 32, 54)]:
    for pool in (False, True):
        layer = Conv2D(c, f, rng, pool=pool)
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        y = layer.forward(x, training=True)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        dx = layer.backward(g)
        y_plain, x_col = conv2d_forward(x, layer.params["W"], layer.params["b"])
        dy = g
        if pool:
            y_plain, dy = maxpool2d_forward(y_plain), maxpool2d_backward(g, y_plain)
        dw, db, dx_plain = conv2d_backward(dy, x_col, layer.params["W"])
        for name, fast, plain in (("y", y, y_plain), ("dW", layer.grads["W"], dw), ("db", layer.grads["b"], db),
                                  ("dx", dx, dx_plain)):
            if not np.array_equal(fast, plain):
                differ.append(f"{name} of {(n, c, h, w, f)} pool={pool}")
print(json.dumps({"threads": parallel.workers(), "differ": differ}))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_and_plain_maths_agree_under_the_stages_blas_at_the_pipelines_sizes(threads):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", PIPELINE_PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"threads": threads, "differ": []}
