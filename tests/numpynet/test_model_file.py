"""numpynet.model_file: a network to arrays and back gives the same network (the frontier network
with its frozen whitening weights and batch-norm running statistics too); layer specs that
`build` does not write or that do not fit, and missing or impossible buffers, are refused. The refusals of
damaged, crafted and foreign files, through the stages that load them, are in
tests/faults/test_model_files.py."""

import json
import re

import numpy as np
import pytest

from numpynet.conv import Conv2D, Flatten, MaxPool2D
from numpynet.layers import Dense, ReLU, Reshape
from numpynet.model import Network, build_cnn, build_frontier
from numpynet.model_file import ModelFormatError, from_arrays, to_arrays

SHAPE = (3, 8, 8)


@pytest.fixture
def cnn_arrays():
    net = build_cnn(SHAPE, [4, 6], [5], 3, np.random.default_rng(24), dropout=0.25)
    return net, to_arrays(net, {"input_shape": list(SHAPE), "class_names": ["a", "b", "c"]})


def test_a_network_with_a_separate_pooling_layer_comes_back_computing_the_same_bytes():
    rng = np.random.default_rng(26)
    net = Network([Reshape(SHAPE), Conv2D(3, 4, rng), ReLU(), MaxPool2D(), Flatten(), Dense(4 * 4 * 4, 3, rng)])
    loaded, _ = from_arrays(to_arrays(net, {"input_shape": list(SHAPE)}))
    assert loaded.architecture() == net.architecture()
    x = rng.standard_normal((5, np.prod(SHAPE)), dtype=np.float32)
    assert loaded.forward(x).tobytes() == net.forward(x).tobytes()


def test_a_cnn_comes_back_computing_the_same_bytes(cnn_arrays):
    net, arrays = cnn_arrays
    loaded, meta = from_arrays(arrays)
    assert meta == {"input_shape": SHAPE, "class_names": ["a", "b", "c"]}
    assert loaded.architecture() == net.architecture()
    x = np.random.default_rng(25).standard_normal((7, np.prod(SHAPE)), dtype=np.float32)
    assert loaded.forward(x).tobytes() == net.forward(x).tobytes()


# name -> (an edit of the layer specs, a fragment of the message)
REFUSED = {
    "conv2d-without-pool": (lambda specs: specs[1].pop("pool"), "layer 1: conv2d pool is None; expected true or false"),
    "conv2d-pool-a-string": (lambda specs: specs[1].update(pool="yes"), "conv2d pool is 'yes'; expected true or false"),
    # a pooling layer must find even images: after the first pooled conv they are 4x4, then 2x2, 1x1
    "maxpool2d-on-odd-images": (lambda specs: [specs.insert(2, {"kind": "maxpool2d"}) for _ in range(3)],
                                "layer 4: maxpool2d needs images of even height and width"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_specs_build_does_not_write_are_refused(cnn_arrays, name):
    change, fragment = REFUSED[name]
    _, arrays = cnn_arrays
    specs = json.loads(str(arrays["architecture"]))
    change(specs)
    with pytest.raises(ModelFormatError, match=re.escape(fragment)):
        from_arrays({**arrays, "architecture": np.array(json.dumps(specs))})


@pytest.fixture
def frontier_arrays():
    shape = (3, 16, 16)
    rng = np.random.default_rng(26)
    images = rng.standard_normal((4, *shape), dtype=np.float32)
    net = build_frontier(shape, (4, 8, 8), 3, np.random.default_rng(27), whitening_images=images)
    net.forward(images.reshape(4, -1), training=True)   # running statistics off their init
    return net, to_arrays(net, {"input_shape": list(shape)}), images.reshape(4, -1)


def test_the_frontier_network_comes_back_with_frozen_weights_and_running_statistics(frontier_arrays):
    net, arrays, x = frontier_arrays
    assert "layer4.running_mean" in arrays and "layer4.running_var" in arrays and "layer1.W" in arrays
    assert json.loads(str(arrays["architecture"]))[1]["frozen"] is True
    loaded, _ = from_arrays(arrays)
    assert loaded.architecture() == net.architecture()
    assert loaded.layers[1].frozen == ("W",) and loaded.layers[-2].factor == net.layers[-2].factor
    assert [p.name for p in loaded.parameters()] == [p.name for p in net.parameters()]
    for name, value in net.state().items():
        assert loaded.state()[name].tobytes() == value.tobytes(), name
    assert loaded.forward(x).tobytes() == net.forward(x).tobytes()


def _set(arrays, name, value):
    return {**arrays, name: np.full_like(arrays[name], value)}


def _spec_edit(arrays, i, **changes):
    specs = json.loads(str(arrays["architecture"]))
    specs[i].update(changes)
    return {**arrays, "architecture": np.array(json.dumps(specs))}


# name -> (an edit of the frontier's arrays, a fragment of the message)
FRONTIER_REFUSED = {
    "running-var-missing": (lambda a: {k: v for k, v in a.items() if k != "layer4.running_var"},
                            "buffer layer4.running_var is missing; expected float (4,)"),
    "running-mean-nan": (lambda a: _set(a, "layer4.running_mean", np.nan), "buffer layer4.running_mean holds NaN"),
    "running-var-zero": (lambda a: _set(a, "layer4.running_var", 0.0), "running_var holds values <= 0"),
    "running-var-wrong-shape": (lambda a: {**a, "layer4.running_var": np.ones(5, np.float32)},
                                "buffer layer4.running_var is float32 (5,); expected float (4,)"),
    "frozen-a-string": (lambda a: _spec_edit(a, 1, frozen="yes"), "conv2d frozen is 'yes'; expected true or false"),
    "eps-zero": (lambda a: _spec_edit(a, 4, eps=0), "batchnorm2d eps 0 is not in (0, 1)"),
    "momentum-above-one": (lambda a: _spec_edit(a, 4, momentum=2), "batchnorm2d momentum 2 is not in [0, 1]"),
    "channels-mismatch": (lambda a: _spec_edit(a, 4, channels=5), "a batchnorm2d layer of 5 channels receives"),
    "scale-without-gamma": (lambda a: _spec_edit(a, 4, scale=True), "parameter layer4.gamma is missing"),
    "logit-scale-zero": (lambda a: _spec_edit(a, -2, factor=0), "scale factor 0 is not in (0, 1e6)"),
    "logit-scale-a-string": (lambda a: _spec_edit(a, -2, factor="1/9"), "scale factor '1/9' is not in (0, 1e6)"),
    "logit-scale-huge": (lambda a: _spec_edit(a, -2, factor=1e300), "scale factor 1e+300 is not in (0, 1e6)"),
}


@pytest.mark.parametrize("name", FRONTIER_REFUSED)
def test_missing_or_impossible_buffers_and_new_specs_are_refused(frontier_arrays, name):
    change, fragment = FRONTIER_REFUSED[name]
    _, arrays, _ = frontier_arrays
    with pytest.raises(ModelFormatError, match=re.escape(fragment)):
        from_arrays(change(arrays))
