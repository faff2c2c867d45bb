"""numpynet.model.build_frontier (airbench's network): its layers, a training forward and backward
on a few 32x32 images, and the bytes of outputs and gradients of every new layer independent of
the number of worker threads. The model-file round trip is in test_model_file.py."""

import numpy as np
import pytest

from numpynet import parallel
from numpynet.conv import Conv2D, GlobalMaxPool
from numpynet.layers import GELU
from numpynet.losses import softmax_cross_entropy
from numpynet.model import WHITENING_IMAGES, ModelSpec, build, build_frontier
from numpynet.norm import BatchNorm2D
from numpynet.optim import SGD
from numpynet.whitening import whitening_weights
from tests.helpers.layouts import channels_last
from tests.helpers.stacks import run_stack

SHAPE = (3, 32, 32)


def test_frontier_layers_forward_backward_and_a_step():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, *SHAPE), dtype=np.float32)
    net = build_frontier(SHAPE, (8, 16, 16), 10, np.random.default_rng(1), whitening_images=images)
    kinds = [layer.kind for layer in net.layers]
    group = ["conv2d", "batchnorm2d", "gelu", "conv2d", "batchnorm2d", "gelu"]
    assert kinds == ["reshape", "conv2d", "gelu", *group * 3, "global_maxpool", "scale", "dense"]
    assert net.layers[-2].factor == pytest.approx(1 / 9)
    whiten = net.layers[1]
    assert whiten.out_channels == 54 and whiten.frozen == ("W",)
    assert all(layer.scale is False and layer.momentum == 0.4 and layer.eps == 1e-12
               for layer in net.layers if isinstance(layer, BatchNorm2D))
    assert all(layer.lr_scales == {"beta": 64.0} for layer in net.layers if isinstance(layer, BatchNorm2D))
    assert [layer.pool for layer in net.layers if isinstance(layer, Conv2D)] == [False] + [True, False] * 3
    for conv in [layer for layer in net.layers if isinstance(layer, Conv2D)][1:]:
        W = conv.params["W"]   # (F, C, 3, 3): the first min(F, C) filters identities, the rest U(+-1/sqrt(9C))
        f, c = W.shape[:2]
        n = min(f, c)
        identity = np.zeros((n, c, 3, 3), np.float32)
        identity[np.arange(n), np.arange(n), 1, 1] = 1
        np.testing.assert_array_equal(W[:n], identity)
        if f > c:
            assert 0 < np.max(np.abs(W[c:])) <= 1 / np.sqrt(9 * c)
    x = images.reshape(6, -1)
    logits = net.forward(x, training=True)
    assert logits.shape == (6, 10) and logits.dtype == np.float32 and np.all(np.isfinite(logits))
    net.backward(softmax_cross_entropy(logits, np.arange(6))[1])
    params = list(net.parameters())
    assert "layer1.W" not in [p.name for p in params] and "layer4.beta" in [p.name for p in params]
    assert all(np.all(np.isfinite(p.grad)) for p in params)
    assert np.any(net.layers[4].buffers["running_mean"] != 0)   # training moved the running statistics
    frozen = whiten.params["W"].copy()
    SGD(params, momentum=0.9, nesterov=True, weight_decay=5e-4).step(0.01)
    np.testing.assert_array_equal(whiten.params["W"], frozen)
    evaluated = net.forward(x)   # evaluation: the running statistics, in eval batches
    assert evaluated.shape == (6, 10) and np.all(np.isfinite(evaluated))


def test_new_layers_give_the_same_bytes_on_one_and_two_workers(monkeypatch):
    monkeypatch.setattr(parallel, "JOB_ELEMENTS", 9 * 4 * 8 * 8 * 2)   # conv jobs of 2 images: 2, 2, 1
    rng = np.random.default_rng(2)
    x = channels_last(rng.standard_normal((5, 4, 8, 8), dtype=np.float32))
    g = rng.standard_normal((5, 6), dtype=np.float32)
    results = []
    try:
        for workers in (1, 2):
            parallel.set_workers(workers)
            layers = [Conv2D(4, 6, np.random.default_rng(3), pool=True), BatchNorm2D(6, momentum=0.4), GELU(),
                      Conv2D(6, 6, np.random.default_rng(4)), BatchNorm2D(6, scale=True), GELU(), GlobalMaxPool()]
            results.append(run_stack(layers, x, g) + [v.tobytes() for layer in layers for v in layer.buffers.values()])
    finally:
        parallel.set_workers(1)
    assert results[0] == results[1]


def test_build_makes_the_frontier_network_whitened_by_the_first_training_images():
    rng = np.random.default_rng(3)
    images = rng.standard_normal((40, 3 * 8 * 8), dtype=np.float32)
    spec = ModelSpec(model="frontier", conv_channels=(4, 8))
    network = build(spec, (3, 8, 8), 5, np.random.default_rng(0), train_images=images)
    kinds = [layer.kind for layer in network.layers]
    assert kinds.count("conv2d") == 5 and kinds.count("batchnorm2d") == 4 and kinds[-1] == "dense"
    whiten = network.layers[1]
    assert whiten.frozen and whiten.params["W"].shape == (54, 3, 3, 3)
    np.testing.assert_array_equal(whiten.params["W"], whitening_weights(images[:WHITENING_IMAGES].reshape(-1, 3, 8, 8)))
    assert network.forward(images[:2]).shape == (2, 5)
    with pytest.raises(ValueError, match="needs training images"):
        build(spec, (3, 8, 8), 5, np.random.default_rng(0))
