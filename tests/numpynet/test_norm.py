"""numpynet.norm.BatchNorm2D: forward against the formula written out per channel, the running
statistics' arithmetic, evaluation mode, memory layouts, and backward (through the batch
statistics) against centered finite differences in float64."""

import numpy as np
import pytest

from numpynet.norm import BatchNorm2D
from tests.helpers.gradcheck import check_layer_gradients
from tests.helpers.layouts import channels_last


def float64_norm(channels: int, scale: bool, seed: int = 0, **kwargs) -> BatchNorm2D:
    """A float64 batch norm with parameters and running statistics moved off their init."""
    rng = np.random.default_rng(seed)
    layer = BatchNorm2D(channels, scale=scale, dtype=np.float64, **kwargs)
    for value in layer.params.values():
        value[...] = rng.standard_normal(channels)
    layer.buffers["running_mean"][...] = rng.standard_normal(channels)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, channels)
    return layer


def test_training_forward_normalizes_each_channel_over_batch_height_and_width():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 5, 2)) * [[[[1.0]], [[3.0]], [[0.2]]]] + 7.0
    layer = float64_norm(3, scale=True, eps=1e-3)
    for given in (x, channels_last(x)):
        y = layer.forward(given, training=True)
        for c in range(3):
            values = x[:, c]
            xhat = (values - values.mean()) / np.sqrt(values.var() + 1e-3)
            expected = layer.params["gamma"][c] * xhat + layer.params["beta"][c]
            np.testing.assert_allclose(y[:, c], expected, rtol=0, atol=1e-12)
    # with gamma = 1 and beta = 0 the output has mean 0 and variance var / (var + eps) per channel
    plain = BatchNorm2D(3, scale=False, eps=1e-3, dtype=np.float64).forward(x, training=True)
    np.testing.assert_allclose(plain.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(plain.var(axis=(0, 2, 3)), var / (var + 1e-3), rtol=1e-12)


def test_running_statistics_follow_pytorch_momentum_and_evaluation_uses_them():
    rng = np.random.default_rng(2)
    layer = BatchNorm2D(2, momentum=0.4, eps=1e-5, scale=False, dtype=np.float64)
    mean, var = np.zeros(2), np.ones(2)
    for step in range(3):
        x = rng.standard_normal((3, 2, 2, 2)) * (step + 1) + step
        layer.forward(x, training=True)
        m = 3 * 2 * 2
        mean = 0.6 * mean + 0.4 * x.mean(axis=(0, 2, 3))
        var = 0.6 * var + 0.4 * x.var(axis=(0, 2, 3)) * m / (m - 1)   # unbiased variance
        np.testing.assert_allclose(layer.buffers["running_mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(layer.buffers["running_var"], var, rtol=1e-12)
    x = rng.standard_normal((5, 2, 3, 3))
    before = {k: v.copy() for k, v in layer.buffers.items()}
    y = layer.forward(x, training=False)
    expected = (x - mean.reshape(1, 2, 1, 1)) / np.sqrt(var.reshape(1, 2, 1, 1) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)
    for key, value in layer.buffers.items():   # evaluation leaves the running statistics alone
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("layout", [lambda x: x, channels_last], ids=["nchw", "channels_last"])
def test_training_gradients_through_the_batch_statistics(scale, layout):
    x = layout(np.random.default_rng(3).standard_normal((3, 4, 3, 2)) * 2.0 + 1.0)
    layer = float64_norm(4, scale, seed=4)
    check_layer_gradients(layer, x, seed=5)
    assert set(layer.params) == ({"beta", "gamma"} if scale else {"beta"})


@pytest.mark.parametrize("scale", [True, False])
def test_evaluation_gradients_treat_the_running_statistics_as_constants(scale):
    x = channels_last(np.random.default_rng(6).standard_normal((2, 3, 2, 3)))
    check_layer_gradients(float64_norm(3, scale, seed=7), x, seed=8, training=False)


def test_output_and_input_gradient_keep_the_memory_layout_and_dtype():
    x = channels_last(np.random.default_rng(9).standard_normal((2, 5, 4, 4), dtype=np.float32))
    layer = BatchNorm2D(5)
    for training in (True, False):
        y = layer.forward(x, training)
        assert y.dtype == np.float32 and y.transpose(0, 2, 3, 1).flags.c_contiguous
        dx = layer.backward(np.ones_like(y))
        assert dx.dtype == np.float32 and dx.transpose(0, 2, 3, 1).flags.c_contiguous
    assert layer.buffers["running_var"].dtype == np.float32
    assert layer.backward(np.ones_like(y), need_input_grad=False) is None


def test_spec_and_refusals():
    assert BatchNorm2D(8, momentum=0.4, eps=1e-12, scale=False).spec() == {
        "kind": "batchnorm2d", "channels": 8, "momentum": 0.4, "eps": 1e-12, "scale": False}
    assert BatchNorm2D(3).weights == ()   # no weight decay on beta or gamma
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm2D(2).forward(np.zeros((1, 2, 1, 1), np.float32), training=True)
    with pytest.raises(ValueError, match=r"expects \(N, 2, H, W\) input"):
        BatchNorm2D(2).forward(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="momentum must be in"):
        BatchNorm2D(2, momentum=1.5)
    with pytest.raises(ValueError, match="eps must be positive"):
        BatchNorm2D(2, eps=0.0)
