"""numpynet.inference: class probabilities as evaluate and predict compute them, with and without
test-time flip averaging."""

import numpy as np

from numpynet.augment import flip_horizontal
from numpynet.inference import class_probabilities
from numpynet.model import build_mlp

SHAPE = (3, 32, 32)


def test_flip_tta_averages_the_two_views():
    net = build_mlp(3072, [8], 3, np.random.default_rng(0))
    x = np.random.default_rng(1).random((5, 3072), dtype=np.float32)
    both = class_probabilities(net, x, SHAPE, flip_tta=True)
    assert np.allclose(both, (net.predict_proba(x) + net.predict_proba(flip_horizontal(x, SHAPE))) / 2)
    assert np.array_equal(class_probabilities(net, x, SHAPE, flip_tta=False), net.predict_proba(x))
    assert not np.allclose(both, net.predict_proba(x))
