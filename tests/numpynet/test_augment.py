"""Augmentation geometry on CIFAR's channel-plane layout, checked on tiny images by hand."""

import numpy as np

from numpynet.augment import mixup, random_crop, random_flip

SHAPE = (3, 32, 32)


class AlwaysFlip:
    """A stand-in generator whose draws make every image flip (random() < 0.5)."""

    def random(self, n):
        return np.zeros(n)


def coded_images(n=2):
    """Value = 1 + 4096*image + 1024*channel + 32*row + col: never 0, and it says where it came from."""
    i, c, r, col = np.meshgrid(np.arange(n), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return (1 + 4096 * i + 1024 * c + 32 * r + col).astype(np.float32).reshape(n, 3072)


def test_flip_maps_pixel_r_c_to_r_31_minus_c_in_every_channel():
    x = coded_images()
    out = random_flip(x, SHAPE, AlwaysFlip()).reshape(2, 3, 32, 32)
    src = x.reshape(2, 3, 32, 32)
    for ch in range(3):
        for r, c in [(0, 0), (5, 3), (31, 31), (17, 30)]:
            assert out[1, ch, r, 31 - c] == src[1, ch, r, c]
    assert np.array_equal(x, coded_images()), "input was modified"


def test_flip_leaves_unchosen_images_alone():
    x = coded_images(400)
    out = random_flip(x, SHAPE, np.random.default_rng(0))
    same = np.all(out == x, axis=1)
    mirrored = np.all(out.reshape(-1, 3, 32, 32) == x.reshape(-1, 3, 32, 32)[..., ::-1], axis=1).all(axis=(1, 2))
    assert np.all(same ^ mirrored)
    assert 150 < same.sum() < 250


def test_crop_shifts_content_not_channels():
    n, pad = 200, 4
    out = random_crop(coded_images(n), SHAPE, pad, np.random.default_rng(1)).reshape(n, 3, 32, 32)
    pos_c, pos_r, pos_col = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    shifts = set()
    for i in range(n):
        img = out[i]
        real = img != 0                                   # zeros are padding
        code = img[real].astype(np.int64) - 1 - 4096 * i
        src_c, rest = np.divmod(code, 1024)
        src_r, src_col = np.divmod(rest, 32)
        assert np.array_equal(src_c, pos_c[real]), "content moved across channels"
        dy, dx = np.unique(src_r - pos_r[real]), np.unique(src_col - pos_col[real])
        assert len(dy) == 1 and len(dx) == 1, "not one rigid shift"
        assert abs(dy[0]) <= pad and abs(dx[0]) <= pad
        assert real.sum() == 3 * (32 - abs(dy[0])) * (32 - abs(dx[0])), "padding is not zero or content lost"
        shifts.add((int(dy[0]), int(dx[0])))
    assert len(shifts) > 20, "crops should vary"


def test_crop_pads_with_zeros_at_the_border():
    x = np.ones((1, 3072), np.float32)

    class Corner:
        def integers(self, lo, hi, size):
            return np.zeros(size, int)  # window at the top-left: content shifted down-right by pad

    out = random_crop(x, SHAPE, 2, Corner()).reshape(3, 32, 32)
    assert np.all(out[:, :2, :] == 0) and np.all(out[:, :, :2] == 0)
    assert np.all(out[:, 2:, 2:] == 1)


def test_flip_horizontal_mirrors_every_image_and_is_its_own_inverse():
    from numpynet.augment import flip_horizontal

    x = coded_images(3)
    out = flip_horizontal(x, SHAPE)
    assert np.array_equal(out.reshape(3, 3, 32, 32), x.reshape(3, 3, 32, 32)[..., ::-1])
    assert np.array_equal(flip_horizontal(out, SHAPE), x)


class FixedMix:
    """A stand-in generator: mixing weight 0.25, partner of image i is image n-1-i."""

    def beta(self, a, b):
        return 0.25

    def permutation(self, n):
        return np.arange(n)[::-1]


def test_mixup_blends_images_and_targets_with_the_same_weight():
    x = coded_images(3)
    t = np.eye(3, dtype=np.float32)
    mixed, mixed_t = mixup(x, t, 0.2, FixedMix())
    assert np.allclose(mixed[0], 0.25 * x[0] + 0.75 * x[2])
    assert np.allclose(mixed[1], x[1])
    assert np.allclose(mixed_t, [[0.25, 0, 0.75], [0, 1, 0], [0.75, 0, 0.25]])
    assert np.array_equal(x, coded_images(3)) and np.array_equal(t, np.eye(3)), "inputs were modified"
    assert mixed.dtype == np.float32 and mixed_t.dtype == np.float32


def test_mixup_targets_stay_distributions():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 3072)).astype(np.float32), rng.integers(0, 3, 64)
    _, t = mixup(x, np.eye(3, dtype=np.float32)[y], 0.4, rng)
    assert np.allclose(t.sum(axis=1), 1.0) and t.min() >= 0


def fancy_index_crop(images, pad, rng):
    """The first implementation of random_crop (one 4-D fancy index), kept as its reference."""
    n = len(images)
    padded = np.zeros((n, 3, 32 + 2 * pad, 32 + 2 * pad), images.dtype)
    padded[:, :, pad:pad + 32, pad:pad + 32] = images.reshape(n, 3, 32, 32)
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    rows, cols = dy[:, None] + np.arange(32), dx[:, None] + np.arange(32)
    return padded[np.arange(n)[:, None, None, None], np.arange(3)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]].reshape(n, -1)


def test_crop_equals_its_reference_draw_for_draw():
    """Same generator state, same windows: the speed-up changed no result."""
    x = coded_images(50)
    for pad in (1, 4, 16):
        assert np.array_equal(random_crop(x, SHAPE, pad, np.random.default_rng(pad)),
                              fancy_index_crop(x, pad, np.random.default_rng(pad)))
