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


def test_networks_evaluate_in_the_batches_their_layers_ask_for():
    from numpynet import conv
    from numpynet.losses import softmax
    from numpynet.model import build_cnn
    from numpynet.training import evaluate_loss_accuracy

    mlp = build_mlp(3072, [8], 3, np.random.default_rng(0))
    cnn = build_cnn((3, 8, 8), [4], [5], 3, np.random.default_rng(0))
    assert mlp.eval_batch == 1000 and cnn.eval_batch == conv.Conv2D.eval_batch
    x = np.random.default_rng(2).standard_normal((300, 3 * 8 * 8), dtype=np.float32)
    y = np.random.default_rng(3).integers(0, 3, 300)
    batches = list(cnn.evaluate(x))
    assert [(r.start, r.stop) for r, _ in batches] == [(0, 128), (128, 256), (256, 300)]
    whole = np.concatenate([cnn.forward(x[r]) for r, _ in batches])
    assert np.array_equal(np.concatenate([logits for _, logits in batches]), whole)
    assert np.array_equal(cnn.predict_proba(x), softmax(whole))
    expected_acc = float(np.mean(whole.argmax(axis=1) == y))
    loss, acc = evaluate_loss_accuracy(cnn, x, y)
    assert acc == expected_acc
    p = softmax(whole.astype(np.float64))
    assert abs(loss - float(-np.mean(np.log(p[np.arange(300), y])))) < 1e-5
