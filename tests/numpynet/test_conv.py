"""Conv2D, MaxPool2D, GlobalMaxPool and Flatten: forward against naive loops, backward against centered finite
differences in float64 (relative error < 1e-6), including MaxPool2D's tie rule."""

import numpy as np
import pytest

from numpynet import parallel
from numpynet.conv import Conv2D, Flatten, GlobalMaxPool, MaxPool2D
from numpynet.layers import Dense, ReLU
from tests.helpers.gradcheck import check_layer_gradients, numerical_gradient, relative_error
from tests.helpers.layouts import channels_last
from tests.helpers.stacks import run_stack

TOL = 1e-6


def naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3, pad 1, stride 1 cross-correlation by explicit loops; x (N, C, H, W), w (F, C, 3, 3)."""
    n, c, h, wd = x.shape
    f = w.shape[0]
    y = np.zeros((n, f, h, wd))
    for i in range(n):
        for o in range(f):
            for r in range(h):
                for s in range(wd):
                    total = b[o]
                    for ch in range(c):
                        for ky in range(3):
                            for kx in range(3):
                                rr, ss = r + ky - 1, s + kx - 1
                                if 0 <= rr < h and 0 <= ss < wd:  # outside: zero padding
                                    total += w[o, ch, ky, kx] * x[i, ch, rr, ss]
                    y[i, o, r, s] = total
    return y


def naive_maxpool(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    y = np.empty((n, c, h // 2, w // 2), x.dtype)
    for i in range(n):
        for ch in range(c):
            for r in range(h // 2):
                for s in range(w // 2):
                    y[i, ch, r, s] = max(x[i, ch, 2 * r + dr, 2 * s + ds] for dr in (0, 1) for ds in (0, 1))
    return y


def float64_conv(c: int, f: int, seed: int = 0) -> Conv2D:
    rng = np.random.default_rng(seed)
    layer = Conv2D(c, f, rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(f)  # init is zero; a zero bias would hide bias bugs
    return layer


# ---------------------------------------------------------------- Conv2D


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 1, 1, 1), (3, 2, 2, 7)])
def test_conv_forward_matches_naive_loops_including_border(shape):
    rng = np.random.default_rng(0)
    layer = float64_conv(shape[1], 4)
    x = rng.standard_normal(shape)
    expected = naive_conv(x, layer.params["W"], layer.params["b"])
    for training in (True, False):
        np.testing.assert_allclose(layer.forward(x, training), expected, rtol=0, atol=1e-10)
    # the border pixels alone (where the padding enters) must also be exact
    y = layer.forward(x)
    np.testing.assert_allclose(y[:, :, [0, -1], :], expected[:, :, [0, -1], :], rtol=0, atol=1e-10)
    np.testing.assert_allclose(y[:, :, :, [0, -1]], expected[:, :, :, [0, -1]], rtol=0, atol=1e-10)


def test_conv_forward_independent_of_memory_layout_and_eval_batch():
    rng = np.random.default_rng(3)
    layer = float64_conv(3, 5)
    x = rng.standard_normal((5, 3, 4, 4))
    expected = naive_conv(x, layer.params["W"], layer.params["b"])
    np.testing.assert_allclose(layer.forward(channels_last(x), training=True), expected, atol=1e-10)
    layer.eval_batch = 2  # 5 images -> eval batches of 2, 2, 1
    np.testing.assert_allclose(layer.forward(x, training=False), expected, atol=1e-10)
    with pytest.raises(RuntimeError, match="eval_batch"):  # an evaluation in eval batches keeps no cache
        layer.backward(np.ones_like(expected))


@pytest.mark.parametrize("shape, job_elements", [
    ((2, 3, 5, 6), 1 << 18),          # C < W: K-major col2im; one job
    ((2, 3, 5, 6), 1),                # one image per job: dW summed from 2 partial products
    ((3, 6, 4, 3), 1 << 18),          # C >= W: channels-last col2im, one job
    ((3, 6, 4, 3), 6 * 9 * 4 * 3 * 2),  # channels-last in jobs of 2 images (2 + 1)
])
def test_conv_gradients_weights_bias_and_input(shape, job_elements, monkeypatch):
    monkeypatch.setattr(parallel, "JOB_ELEMENTS", job_elements)
    x = np.random.default_rng(2).standard_normal(shape)
    check_layer_gradients(float64_conv(shape[1], 4), x)


@pytest.mark.parametrize("shape, job_elements", [
    ((2, 3, 4, 6), 1 << 18),             # C < W: K-major col2im; one job
    ((3, 6, 4, 2), 6 * 9 * 4 * 2 * 2),   # C >= W: channels-last col2im, jobs of 2 images (2 + 1)
])
def test_pooled_conv_gradients_weights_bias_and_input(shape, job_elements, monkeypatch):
    monkeypatch.setattr(parallel, "JOB_ELEMENTS", job_elements)
    x = np.random.default_rng(20).standard_normal(shape)
    layer = float64_conv(shape[1], 4)
    layer.pool = True
    check_layer_gradients(layer, x)


def test_pooled_conv_gives_the_bytes_of_conv_then_maxpool(monkeypatch):
    """Conv2D(pool=True) pools inside its jobs; that must be exactly Conv2D then MaxPool2D, ties
    included (small integers make them), forward, weight gradients and dL/dx, over several jobs."""
    monkeypatch.setattr(parallel, "JOB_ELEMENTS", 9 * 3 * 8 * 8 * 2)  # jobs of 2 images: 2, 2, 1
    x = np.random.default_rng(21).integers(-2, 3, (5, 3, 8, 8)).astype(np.float32)
    g = np.random.default_rng(22).standard_normal((5, 6, 4, 4)).astype(np.float32)
    results = []
    for pooled in (False, True):
        layer = Conv2D(3, 6, pool=pooled)
        layer.params["W"][...] = np.random.default_rng(23).integers(-1, 2, layer.params["W"].shape)
        layer.params["b"][...] = [-1, 0, 1, 0, 2, 0]
        results.append(run_stack([layer] if pooled else [layer, MaxPool2D()], x, g))
    assert results[0] == results[1]


def test_conv_gradients_with_channels_last_input_and_upstream_gradient():
    layer = float64_conv(2, 3, seed=4)
    x = channels_last(np.random.default_rng(5).standard_normal((2, 2, 4, 4)))
    check_layer_gradients(layer, x)


def test_conv_skips_input_gradient_but_still_fills_grads():
    rng = np.random.default_rng(6)
    layer = float64_conv(3, 4)
    x = rng.standard_normal((2, 3, 4, 4))
    g = rng.standard_normal((2, 4, 4, 4))
    layer.forward(x, training=True)
    full = layer.backward(g)
    expected = {k: v.copy() for k, v in layer.grads.items()}
    layer.grads["W"][...] = layer.grads["b"][...] = 0.0
    layer.forward(x, training=True)
    assert layer.backward(g, need_input_grad=False) is None
    assert full.shape == x.shape
    for key in expected:
        np.testing.assert_array_equal(layer.grads[key], expected[key])


def test_conv_keeps_float32_and_reports_spec():
    rng = np.random.default_rng(7)
    layer = Conv2D(3, 8, rng)
    assert layer.params["W"].shape == (8, 3, 3, 3) and layer.params["W"].dtype == np.float32
    assert np.all(layer.params["b"] == 0)
    # He-normal with fan_in = 3 * 9
    big = Conv2D(64, 128, rng)
    assert abs(big.params["W"].std() - np.sqrt(2 / (64 * 9))) < 0.01 * np.sqrt(2 / (64 * 9)) * 10
    y = layer.forward(rng.standard_normal((2, 3, 6, 6), dtype=np.float32), training=True)
    assert y.shape == (2, 8, 6, 6) and y.dtype == np.float32
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == np.float32 and layer.grads["W"].dtype == np.float32
    assert layer.backward(np.ones(y.shape)).dtype == np.float32  # a float64 gradient is not promoted
    assert layer.spec() == {"kind": "conv2d", "in_channels": 3, "out_channels": 8, "pool": False}
    pooled = Conv2D(3, 8, rng, pool=True)
    y = pooled.forward(rng.standard_normal((2, 3, 6, 6), dtype=np.float32), training=True)
    assert y.shape == (2, 8, 3, 3) and y.dtype == np.float32 and pooled.spec()["pool"] is True
    assert pooled.backward(np.ones(y.shape)).dtype == np.float32
    with pytest.raises(ValueError, match="even height and width"):
        pooled.forward(np.zeros((1, 3, 5, 6), np.float32))


def test_conv_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="expects 3 input channels"):
        Conv2D(3, 4).forward(np.zeros((1, 2, 4, 4), np.float32))


# ---------------------------------------------------------------- MaxPool2D


def test_maxpool_forward_matches_naive_loop():
    x = np.random.default_rng(8).standard_normal((2, 3, 6, 4))
    np.testing.assert_array_equal(MaxPool2D().forward(x), naive_maxpool(x))
    np.testing.assert_array_equal(MaxPool2D().forward(channels_last(x)), naive_maxpool(x))


def test_maxpool_gradient_distinct_values():
    # a shuffled grid 0.01 apart: no two values within eps, so the max is never ambiguous
    rng = np.random.default_rng(9)
    x = (rng.permutation(2 * 3 * 4 * 6) * 0.01).reshape(2, 3, 4, 6)
    check_layer_gradients(MaxPool2D(), x)
    check_layer_gradients(MaxPool2D(), channels_last(x))


# one (1, 1, 2, 2) window per case: the element that must receive the gradient, row-major
TIE_CASES = [
    ([[1.0, 1.0], [1.0, 1.0]], (0, 0)),   # all equal -> first
    ([[0.0, 2.0], [2.0, 0.0]], (0, 1)),   # top-right before bottom-left (row-major, not column-major)
    ([[0.0, 0.0], [3.0, 3.0]], (1, 0)),   # tie in the bottom row
    ([[5.0, 0.0], [0.0, 5.0]], (0, 0)),   # diagonal tie
    ([[-1.0, -2.0], [-2.0, -1.0]], (0, 0)),
    ([[0.0, 1.0], [0.5, 1.0]], (0, 1)),
]


def test_maxpool_ties_route_gradient_to_the_first_max_in_row_major_order():
    windows = np.array([case for case, _ in TIE_CASES])            # (K, 2, 2)
    image = np.concatenate([windows, windows + 10.0], axis=1)        # (K, 4, 2): each case twice, stacked
    x = np.stack([image, image[::-1]])                               # (2, K, 4, 2): second image, cases reversed
    pool = MaxPool2D()
    g = np.random.default_rng(10).uniform(1.0, 2.0, pool.forward(x, training=True).shape)
    dx = pool.backward(g)

    # exactly one element per window receives the whole output gradient
    per_window = dx.reshape(2, len(TIE_CASES), 2, 2, 2)             # (N, K, window row, 2, 2)
    assert np.all(np.count_nonzero(per_window, axis=(3, 4)) == 1)
    for n, order in enumerate([TIE_CASES, TIE_CASES[::-1]]):
        for k, (_, (r, s)) in enumerate(order):
            for wy in (0, 1):
                assert dx[n, k, 2 * wy + r, s] == g[n, k, wy, 0], (n, k, wy)

    # and it is the gradient finite differences see once that first element is nudged up by 1e-4
    winner = dx != 0
    x_broken = x + 1e-4 * winner

    def loss() -> float:
        return float(np.sum(MaxPool2D().forward(x_broken) * g))

    numeric = numerical_gradient(loss, x_broken, eps=1e-6)
    assert relative_error(dx, numeric) < TOL


def test_maxpool_rejects_odd_sizes_and_reports_spec():
    with pytest.raises(ValueError, match="even height and width"):
        MaxPool2D().forward(np.zeros((1, 1, 3, 4)))
    assert MaxPool2D().spec() == {"kind": "maxpool2d"}
    assert MaxPool2D().forward(np.zeros((1, 2, 4, 4), np.float32)).dtype == np.float32


# ---------------------------------------------------------------- GlobalMaxPool


def test_global_maxpool_forward_matches_naive_loop_in_any_layout():
    x = np.random.default_rng(30).standard_normal((2, 3, 4, 5))
    expected = [[max(x[n, c].ravel()) for c in range(3)] for n in range(2)]
    for given in (x, channels_last(x)):
        np.testing.assert_array_equal(GlobalMaxPool().forward(given), expected)
    assert GlobalMaxPool().spec() == {"kind": "global_maxpool"}


def test_global_maxpool_gradient_distinct_values_and_layout():
    rng = np.random.default_rng(31)
    x = (rng.permutation(2 * 3 * 4 * 4) * 0.01).reshape(2, 3, 4, 4)   # no two values within eps
    check_layer_gradients(GlobalMaxPool(), x)
    check_layer_gradients(GlobalMaxPool(), channels_last(x))
    layer = GlobalMaxPool()
    layer.forward(channels_last(x.astype(np.float32)), training=True)
    dx = layer.backward(np.ones((2, 3), np.float32))
    assert dx.dtype == np.float32 and dx.transpose(0, 2, 3, 1).flags.c_contiguous


def test_global_maxpool_ties_route_gradient_to_the_first_max_in_row_major_order():
    x = np.array([[[[0.0, 2.0], [2.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [3.0, 3.0]]]])  # (1, 3, 2, 2)
    layer = GlobalMaxPool()
    layer.forward(channels_last(x), training=True)
    dx = layer.backward(np.array([[5.0, 6.0, 7.0]]))
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1], expected[0, 1, 0, 0], expected[0, 2, 1, 0] = 5.0, 6.0, 7.0
    np.testing.assert_array_equal(dx, expected)


# ---------------------------------------------------------------- Flatten


def test_flatten_order_shape_and_gradient():
    x = np.random.default_rng(11).standard_normal((2, 3, 4, 2))
    flat = Flatten()
    for given in (x, channels_last(x)):
        y = flat.forward(given, training=True)
        assert y.shape == (2, 24)
        np.testing.assert_array_equal(y, x.reshape(2, 24))  # (C, H, W) row-major, whatever the memory
    check_layer_gradients(Flatten(), channels_last(x))
    assert Flatten().spec() == {"kind": "flatten"}


# ---------------------------------------------------------------- a whole small CNN


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and dL/dlogits = (softmax - onehot) / N, written here so the check
    does not depend on numpynet.losses."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.log(p[np.arange(n), labels]).mean())
    grad = p.copy()
    grad[np.arange(n), labels] -= 1.0
    return loss, grad / n


@pytest.mark.parametrize("training", [True, False])  # backward must also follow an eval-mode forward
def test_small_cnn_stack_gradients(training):
    rng = np.random.default_rng(12)
    layers = [float64_conv(2, 3, seed=13), MaxPool2D(), ReLU(), Flatten(), Dense(3 * 2 * 2, 3, rng, np.float64)]
    layers[-1].params["b"][:] = rng.standard_normal(3)
    x = rng.standard_normal((3, 2, 4, 4))
    labels = np.array([0, 2, 1])

    def forward() -> np.ndarray:
        out = x
        for layer in layers:
            out = layer.forward(out, training)
        return out

    def loss() -> float:
        return softmax_cross_entropy(forward(), labels)[0]

    grad = softmax_cross_entropy(forward(), labels)[1]
    for layer in reversed(layers):
        grad = layer.backward(grad)
    dx = grad
    analytic = [{k: v.copy() for k, v in layer.grads.items()} for layer in layers]
    checked = 0
    for layer, grads in zip(layers, analytic):
        for key, p in layer.params.items():
            err = relative_error(grads[key], numerical_gradient(loss, p))
            assert err < TOL, f"{layer.kind}.{key}: relative error {err:.2e}"
            checked += 1
    assert checked == 4
    assert relative_error(dx, numerical_gradient(loss, x)) < TOL


def test_feature_maps_stay_channels_last_through_the_stack():
    """The layout contract the speed relies on (see numpynet._conv_kernel): conv output, pool output and
    every gradient on the way back are (N, H, W, C) memory, so no layer pays for a transpose."""
    rng = np.random.default_rng(14)
    layers = [Conv2D(3, 4, rng, pool=True), ReLU(), Conv2D(4, 6, rng), ReLU(), MaxPool2D(), Flatten()]
    out = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    for layer in layers[:-1]:
        out = layer.forward(out, training=True)
        assert out.transpose(0, 2, 3, 1).flags.c_contiguous, layer.kind
    grad = np.ones_like(layers[-1].forward(out, training=True))
    for layer in reversed(layers[1:]):
        grad = layer.backward(grad)
        assert grad.transpose(0, 2, 3, 1).flags.c_contiguous, layer.kind


def test_pool_then_relu_gives_the_bytes_of_relu_then_pool():
    """build_cnn pools before the ReLU (a quarter of the ReLU work); that must compute exactly
    the usual conv -> ReLU -> pool, ties included: small integer inputs and weights make exact
    ties, among positive, zero and negative window values."""
    rng = np.random.default_rng(15)
    x = rng.integers(-2, 3, (4, 3, 8, 8)).astype(np.float32)
    results = []
    for order in ((ReLU, MaxPool2D), (MaxPool2D, ReLU)):
        conv_layer = Conv2D(3, 5, rng)
        conv_layer.params["W"][...] = np.random.default_rng(16).integers(-1, 2, conv_layer.params["W"].shape)
        conv_layer.params["b"][...] = [-1, 0, 1, 0, 2]
        g = np.random.default_rng(17).standard_normal((4, 5, 4, 4)).astype(np.float32)
        results.append(run_stack([conv_layer, order[0](), order[1]()], x, g))
    assert results[0] == results[1]


def test_conv_jobs_give_the_same_bytes_on_any_worker_count(monkeypatch):
    monkeypatch.setattr(parallel, "JOB_ELEMENTS", 9 * 16 * 8 * 8 * 3)  # jobs of 3 images: 3, 3, 3, 1
    rng = np.random.default_rng(18)
    x = channels_last(rng.standard_normal((10, 16, 8, 8), dtype=np.float32))
    g = channels_last(rng.standard_normal((10, 8, 8, 8), dtype=np.float32))
    results = []
    try:
        for workers in (1, 2, 3):
            parallel.set_workers(workers)
            results.append(run_stack([Conv2D(16, 8, np.random.default_rng(19))], x, g))
    finally:
        parallel.set_workers(1)
    assert results[0] == results[1] == results[2]
