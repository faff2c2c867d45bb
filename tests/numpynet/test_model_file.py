"""numpynet.model_file: a network to arrays and back gives the same network; layer specs that
`build` does not write are refused. The refusals of damaged, crafted and foreign files, through
the stages that load them, are in tests/faults/test_model_files.py."""

import json

import numpy as np
import pytest

from numpynet.model import build_cnn
from numpynet.model_file import ModelFormatError, from_arrays, to_arrays

SHAPE = (3, 8, 8)


@pytest.fixture
def cnn_arrays():
    net = build_cnn(SHAPE, [4, 6], [5], 3, np.random.default_rng(24), dropout=0.25)
    return net, to_arrays(net, {"input_shape": list(SHAPE), "class_names": ["a", "b", "c"]})


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
    # build_cnn pools inside each convolution: a model file never lists a separate pooling layer
    "maxpool2d-layer": (lambda specs: specs.insert(2, {"kind": "maxpool2d"}), "layer 2: unknown layer kind 'maxpool2d'"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_specs_build_does_not_write_are_refused(cnn_arrays, name):
    change, fragment = REFUSED[name]
    _, arrays = cnn_arrays
    specs = json.loads(str(arrays["architecture"]))
    change(specs)
    with pytest.raises(ModelFormatError, match=fragment):
        from_arrays({**arrays, "architecture": np.array(json.dumps(specs))})
