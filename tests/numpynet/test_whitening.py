"""numpynet.whitening: the patch covariance against patches cut by hand, the whitening conv's
outputs decorrelated (identity covariance up to eps) through Conv2D itself, and a frozen
conv's weights untouched by an optimizer step."""

import numpy as np
import pytest

from numpynet import whitening
from numpynet.conv import Conv2D
from numpynet.layers import Dense, Reshape
from numpynet.losses import softmax_cross_entropy
from numpynet.model import Network
from numpynet.optim import SGD
from numpynet.whitening import patch_covariance, whitening_weights


def correlated_images(n: int, c: int = 3, h: int = 6, w: int = 6, seed: int = 0) -> np.ndarray:
    """Images whose neighbouring pixels and channels are correlated (as in photographs): noise
    smoothed along each axis and mixed across channels, plus an offset."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h + 1, w + 1))
    x = x[:, :, 1:, 1:] + x[:, :, :-1, 1:] + 0.5 * x[:, :, 1:, :-1]
    mix = rng.standard_normal((c, c)) + 2 * np.eye(c)
    return np.einsum("dc,nchw->ndhw", mix, x) + 0.3


def test_patch_covariance_is_the_mean_outer_product_of_zero_padded_patches(monkeypatch):
    monkeypatch.setattr(whitening, "CHUNK_IMAGES", 2)   # 5 images: chunks of 2, 2, 1
    x = correlated_images(5, c=2, h=3, w=4)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = [padded[n, :, i:i + 3, j:j + 3].transpose(1, 2, 0).ravel()   # (ky, kx, c) order
               for n in range(5) for i in range(3) for j in range(4)]
    expected = sum(np.outer(p, p) for p in patches) / len(patches)
    np.testing.assert_allclose(patch_covariance(x), expected, rtol=1e-12, atol=1e-14)


def test_the_whitening_conv_outputs_have_identity_covariance_up_to_eps():
    x = correlated_images(40)
    eps = 1e-3
    weights = whitening_weights(x, eps, dtype=np.float64)
    assert weights.shape == (54, 3, 3, 3)
    np.testing.assert_array_equal(weights[27:], -weights[:27])
    conv = Conv2D(3, 54, dtype=np.float64)
    conv.params["W"][...] = weights
    y = conv.forward(x).transpose(0, 2, 3, 1).reshape(-1, 54)   # one row per patch, as im2col's
    cov = y[:, :27].T @ y[:, :27] / len(y)
    lam = np.linalg.eigvalsh(patch_covariance(x))[::-1]
    np.testing.assert_allclose(cov, np.diag(lam / (lam + eps)), atol=1e-9)   # exactly, up to rounding
    assert np.max(np.abs(cov - np.eye(27))) <= eps / (lam.min() + eps) + 1e-9   # the identity, up to eps
    assert lam.min() > 0.01   # so that bound is a tight one: within 0.1 of the identity
    assert np.all(np.diff(lam) <= 0)   # filters ordered by eigenvalue, largest first


def test_a_frozen_conv_keeps_its_weights_through_an_optimizer_step():
    rng = np.random.default_rng(1)
    conv = Conv2D(3, 54, rng, frozen=True)
    conv.params["W"][...] = whitening_weights(correlated_images(8).astype(np.float32))
    net = Network([Reshape((3, 4, 4)), conv, Reshape((54 * 16,)), Dense(54 * 16, 3, rng)])
    assert [p.name for p in net.parameters()] == ["layer1.b", "layer3.W", "layer3.b"]
    assert list(net.state()) == ["layer1.W", "layer1.b", "layer3.W", "layer3.b"]
    frozen = conv.params["W"].copy()
    trained = {name: value.copy() for name, value in net.state().items()}
    x = rng.standard_normal((4, 48), dtype=np.float32)
    net.backward(softmax_cross_entropy(net.forward(x, training=True), np.array([0, 1, 2, 0]))[1])
    SGD(list(net.parameters()), momentum=0.9, weight_decay=0.1).step(0.5)
    np.testing.assert_array_equal(conv.params["W"], frozen)
    for name in ("layer1.b", "layer3.W", "layer3.b"):
        assert not np.array_equal(net.state()[name], trained[name]), name
    assert conv.spec()["frozen"] is True and "frozen" not in Conv2D(3, 4).spec()


def test_a_singular_covariance_gives_finite_bounded_weights():
    x = correlated_images(6)
    x[:, 2] = 0.0   # a constant channel: a third of the eigenvalues are 0 (or rounded below)
    weights = whitening_weights(x, eps=1e-2, dtype=np.float64)
    assert np.all(np.isfinite(weights))
    assert np.max(np.abs(weights)) <= 1 / np.sqrt(1e-2) + 1e-9   # unit eigenvectors over sqrt(0 + eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whitening_weights_dtype(dtype):
    assert whitening_weights(correlated_images(3, c=1), dtype=dtype).dtype == dtype
