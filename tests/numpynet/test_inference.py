"""numpynet.inference: class probabilities as evaluate and predict compute them, with and without
test-time flip averaging, and with airbench's flip + translate views."""

import numpy as np

from numpynet.augment import flip_horizontal
from numpynet.inference import class_probabilities
from numpynet.model import build_cnn, build_mlp

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


def reflect(i: int, n: int) -> int:
    """Index i of a row of n pixels reflected at the border (torch's 'reflect': -1 -> 1, n -> n - 2)."""
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def test_flip_and_translate_tta_are_airbench_six_weighted_views():
    shape = (2, 4, 6)
    c, h, w = shape
    net = build_cnn(shape, [3], [4], 3, np.random.default_rng(4))
    x = np.random.default_rng(5).standard_normal((3, c * h * w), dtype=np.float32)
    images = x.reshape(3, c, h, w)

    def view(shift: int, mirror: bool) -> np.ndarray:
        """Each pixel (y, x) from pixel (y - shift, x - shift) of the (mirrored) image, reflected."""
        out = np.empty_like(images)
        for y in range(h):
            for xx in range(w):
                source = images[:, :, reflect(y - shift, h), reflect(xx - shift, w)]
                out[:, :, y, w - 1 - xx if mirror else xx] = source
        return out.reshape(3, -1)

    p = {(shift, mirror): net.predict_proba(view(shift, mirror)) for shift in (0, 1, -1) for mirror in (False, True)}
    expected = 0.25 * (p[0, False] + p[0, True]) + 0.125 * (p[1, False] + p[1, True] + p[-1, False] + p[-1, True])
    np.testing.assert_allclose(class_probabilities(net, x, shape, flip_tta=True, translate_tta=True), expected,
                               rtol=1e-6, atol=1e-7)
    no_flip = 0.5 * p[0, False] + 0.25 * (p[1, False] + p[-1, False])
    np.testing.assert_allclose(class_probabilities(net, x, shape, flip_tta=False, translate_tta=True), no_flip,
                               rtol=1e-6, atol=1e-7)
    assert np.array_equal(p[0, True], net.predict_proba(flip_horizontal(x, shape)))
    assert not np.allclose(p[1, False], p[0, False])   # the translations are views of their own
