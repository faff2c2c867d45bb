"""The training loop's options, on tiny problems whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from numpynet import training
from numpynet.model import build_mlp
from numpynet.optim import SGD, Lookahead, airbench_decay
from numpynet.training import RandomStreams, TrainConfig, fit


def separable(n=60, d=6, seed=0):
    """Two classes split by the sign of the first feature, with a wide margin."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    x[:, 0] += np.where(y == 1, 2.0, -2.0)
    return x, y


def shifted_validation(n=40, d=6, seed=5):
    """Validation data from another boundary (x0 + x1 > 0), so validation accuracy wanders."""
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def train(config: TrainConfig, seed: int = 0):
    x, y = separable()
    x_val, y_val = shifted_validation()
    streams = RandomStreams.from_seed(seed)
    net = build_mlp(x.shape[1], [8], 2, streams.init)
    result = fit(net, (x, y), (x_val, y_val), config, streams, (1, 1, x.shape[1]))
    return net, result, x, y


def test_label_smoothing_makes_the_model_aim_at_the_smoothed_targets():
    """With eps = 0.5 and K = 2 the targets are 0.75 / 0.25: a model trained to convergence on
    separable data predicts about 0.75 for the true class instead of about 1."""
    config = dict(learning_rate=0.1, batch_size=20, epochs=300, momentum=0.9)
    sharp, _, x, y = train(TrainConfig(**config))
    smooth, _, _, _ = train(TrainConfig(**config, label_smoothing=0.5))
    p_true = lambda net: net.predict_proba(x)[np.arange(len(y)), y]
    assert p_true(sharp).mean() > 0.97
    assert p_true(smooth).mean() == pytest.approx(0.75, abs=0.02)


def test_mixup_hands_the_loss_blended_target_distributions(monkeypatch):
    seen = []

    def spy(logits, targets):
        seen.append(targets.copy())
        return real(logits, targets)
    real = training.softmax_cross_entropy
    monkeypatch.setattr(training, "softmax_cross_entropy", spy)
    train(TrainConfig(learning_rate=0.1, batch_size=20, epochs=1, mixup_alpha=0.4))
    assert len(seen) == 3
    for t in seen:
        assert t.shape == (20, 2) and np.allclose(t.sum(axis=1), 1.0)
        assert np.any((t > 0.01) & (t < 0.99)), "targets are one-hot: the batch was not mixed"


def test_mixup_trains_on_blended_batches_and_is_reproducible():
    config = TrainConfig(learning_rate=0.1, batch_size=20, epochs=30, mixup_alpha=0.4)
    net_a, res_a, x, y = train(config)
    _net_b, res_b, _, _ = train(config)
    _, res_plain, _, _ = train(TrainConfig(learning_rate=0.1, batch_size=20, epochs=30))
    assert [r.train_loss for r in res_a.history] == [r.train_loss for r in res_b.history]
    # blended targets keep the training loss well above that of one-hot training, while the
    # model still separates the data
    assert res_a.history[-1].train_loss > 2 * res_plain.history[-1].train_loss
    assert (net_a.predict_proba(x).argmax(axis=1) == y).mean() == 1.0


def test_restore_best_keeps_the_best_validation_epoch():
    """Constant learning rate, so the first k epochs of a longer run are a run of k epochs."""
    config = dict(learning_rate=0.05, batch_size=10, epochs=12)
    net, result, _x, _y = train(TrainConfig(**config, restore_best=True))
    accs = [r.val_accuracy for r in result.history]
    assert result.restored and result.best_epoch == 1 + int(np.argmax(accs))
    assert 1 < result.best_epoch < len(accs) and accs[-1] < max(accs), "the case needs a best epoch inside the run"
    short, _, _, _ = train(TrainConfig(**{**config, "epochs": result.best_epoch}))
    for p, q in zip(net.parameters(), short.parameters()):
        assert np.array_equal(p.value, q.value)


def test_restore_best_restores_the_running_statistics_too():
    """A batch norm's running statistics are part of the best epoch's network (Network.state)."""
    from numpynet.layers import Dense, Reshape
    from numpynet.model import Network
    from numpynet.norm import BatchNorm2D

    def bn_net(config: TrainConfig):
        x, y = separable()
        streams = RandomStreams.from_seed(0)
        net = Network([Reshape((6, 1, 1)), BatchNorm2D(6, momentum=0.5), Reshape((6,)), Dense(6, 2, streams.init)])
        return net, fit(net, (x, y), shifted_validation(), config, streams, (1, 1, 6))

    config = dict(learning_rate=0.05, batch_size=10, epochs=12)
    net, result = bn_net(TrainConfig(**config, restore_best=True))
    assert result.restored and 1 < result.best_epoch < 12, "the case needs a best epoch inside the run"
    short, _ = bn_net(TrainConfig(**{**config, "epochs": result.best_epoch}))
    assert list(net.state()) == ["layer1.beta", "layer1.gamma", "layer1.running_mean", "layer1.running_var",
                                 "layer3.W", "layer3.b"]
    for name, value in net.state().items():
        assert np.array_equal(value, short.state()[name]), name


def test_lookahead_follows_every_sgd_step_and_the_run_ends_on_the_average():
    """fit with lookahead is exactly: SGD step, then Lookahead.step with airbench's decay, and a
    last update with decay 1 (the weights become the average)."""
    config = TrainConfig(batch_size=6, epochs=2, learning_rate=0.1, lookahead=True)
    net, _, x, y = train(config)
    plain, _, _, _ = train(TrainConfig(batch_size=6, epochs=2, learning_rate=0.1))

    streams = RandomStreams.from_seed(0)                  # the same run, written out
    by_hand = build_mlp(x.shape[1], [8], 2, streams.init)
    optimizer = SGD(list(by_hand.parameters()))
    lookahead = Lookahead(list(by_hand.state().values()))
    step, total = 0, 2 * 10
    for epoch in (1, 2):
        for xb, yb in training.batches(x, y, 6, streams.shuffle):
            training.train_step(by_hand, optimizer, xb, yb, 0.1, epoch, step)
            step += 1
            lookahead.step(airbench_decay(step, total))
    lookahead.update(1.0)
    for name, value in net.state().items():
        np.testing.assert_array_equal(value, by_hand.state()[name], err_msg=name)
    assert any(not np.array_equal(value, plain.state()[name]) for name, value in net.state().items())
