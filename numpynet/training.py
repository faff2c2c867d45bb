"""The training loop: shuffled batches, optional augmentation, schedule, validation.

Pure: takes arrays, a `TrainConfig` and `RandomStreams`, returns the per-epoch history.
`fit` is the loop; `batches`, `prepare_batch` and `train_step` are its three parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import numpy as np

from numpynet import augment
from numpynet.losses import cross_entropy, soft_targets, softmax_cross_entropy
from numpynet.model import Network
from numpynet.optim import SGD, Lookahead, airbench_decay
from numpynet.schedules import Schedule


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 0.01
    batch_size: int = 64
    epochs: int = 50
    momentum: float = 0.0        # 0 = plain SGD
    nesterov: bool = False
    weight_decay: float = 0.0    # L2 on weights, not biases
    lr_schedule: str = "constant"  # constant | step | cosine
    warmup_epochs: float = 0.0
    lr_step_epochs: int = 10     # step schedule: decay every this many epochs
    lr_gamma: float = 0.1        # step schedule: by this factor
    flip: bool = False           # random horizontal flip
    crop_padding: int = 0        # random crop after zero-padding this many pixels (0 = off)
    restore_best: bool = False   # keep the weights of the best-validation-accuracy epoch
    label_smoothing: float = 0.0  # targets 1 - eps + eps/K and eps/K instead of one-hot (0 = off)
    mixup_alpha: float = 0.0     # mixup of each batch with weight ~ Beta(alpha, alpha) (0 = off)
    lookahead: bool = False      # airbench94's Lookahead on every array of the network (optim.Lookahead)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int                   # 1-based
    train_loss: float            # mean over the epoch's batches, against the training targets
                                 # (smoothed or mixed ones when those options are on)
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float         # at the epoch's last step


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    history: list[EpochRecord]
    best_epoch: int | None       # epoch whose weights were kept, when restore_best
    restored: bool


@dataclass(frozen=True)
class RandomStreams:
    """Independent generators for each kind of draw, all from one seed, so that turning one
    option on (say dropout) does not change the draws of another (the shuffle order)."""

    init: np.random.Generator      # weight init
    shuffle: np.random.Generator   # epoch order
    dropout: np.random.Generator
    augment: np.random.Generator   # flips and crops
    mixup: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> RandomStreams:
        # spawned in field order: append new streams at the end, so earlier ones stay as they were
        names = [f.name for f in fields(cls)]
        return cls(*(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(names))))


def evaluate_loss_accuracy(network: Network, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `network` on x (N, ...), y (N,)."""
    total_loss, correct = 0.0, 0
    for rows, logits in network.evaluate(x):
        total_loss += cross_entropy(logits, y[rows]) * len(logits)
        correct += int(np.sum(logits.argmax(axis=1) == y[rows]))
    return total_loss / len(x), correct / len(x)


def fit(network: Network, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None,
        config: TrainConfig, streams: RandomStreams, image_shape: tuple[int, int, int],
        on_epoch: Callable[[EpochRecord], None] | None = None) -> TrainResult:
    """Train `network` in place with SGD.

    train = (x (N, D) float32 rows of `image_shape` images, y (N,) int); val likewise, or None.
    The training set is reshuffled at the start of every epoch; the last batch of an epoch may
    be smaller. Raises TrainingDiverged on a non-finite loss.
    """
    x_train, y_train = train
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    schedule = Schedule.per_epoch(config.lr_schedule, config.learning_rate, config.epochs, steps_per_epoch,
                                  config.warmup_epochs, config.lr_step_epochs, config.lr_gamma)
    optimizer = SGD(list(network.parameters()), config.momentum, config.nesterov, config.weight_decay)
    lookahead = Lookahead(list(network.state().values())) if config.lookahead else None
    total_steps = config.epochs * steps_per_epoch
    has_val = val is not None and len(val[0]) > 0
    n_classes = network.n_outputs
    history: list[EpochRecord] = []
    best_acc, best_epoch, best_weights = -1.0, None, None
    step = 0
    # A diverging run overflows before its loss turns non-finite; that is reported once, as
    # TrainingDiverged, instead of as a stream of floating-point warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(1, config.epochs + 1):
            loss_sum, lr = 0.0, 0.0
            for xb, yb in batches(x_train, y_train, config.batch_size, streams.shuffle):
                xb, targets = prepare_batch(xb, yb, config, image_shape, n_classes, streams)
                lr = schedule(step)
                loss_sum += train_step(network, optimizer, xb, targets, lr, epoch, step)
                step += 1
                if lookahead is not None:
                    lookahead.step(airbench_decay(step, total_steps))
            if lookahead is not None and epoch == config.epochs:
                lookahead.update(1.0)   # the last weights are the average's, as airbench ends
            val_loss, val_acc = evaluate_loss_accuracy(network, *val) if has_val else (None, None)
            record = EpochRecord(epoch, loss_sum / steps_per_epoch, val_loss, val_acc, lr)
            history.append(record)
            if has_val and config.restore_best and record.val_accuracy > best_acc:
                best_acc, best_epoch = record.val_accuracy, epoch
                best_weights = [a.copy() for a in network.state().values()]   # running statistics too
            if on_epoch is not None:
                on_epoch(record)
    restored = False
    if config.restore_best and best_weights is not None:
        for value, saved in zip(network.state().values(), best_weights):
            value[...] = saved
        restored = True
    return TrainResult(history, best_epoch, restored)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int,
            rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of batches (copies) in a fresh random order; the last may be smaller."""
    order = rng.permutation(len(x))
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def prepare_batch(xb: np.ndarray, yb: np.ndarray, config: TrainConfig, image_shape: tuple[int, int, int],
                  n_classes: int, streams: RandomStreams) -> tuple[np.ndarray, np.ndarray]:
    """Augment a batch as `config` asks: (inputs (B, D), targets: labels (B,) or distributions (B, K))."""
    if config.flip:
        xb = augment.random_flip(xb, image_shape, streams.augment)
    if config.crop_padding:
        xb = augment.random_crop(xb, image_shape, config.crop_padding, streams.augment)
    targets = yb
    if config.label_smoothing or config.mixup_alpha:
        targets = soft_targets(yb, n_classes, config.label_smoothing, xb.dtype)
    if config.mixup_alpha:
        xb, targets = augment.mixup(xb, targets, config.mixup_alpha, streams.mixup)
    return xb, targets


def train_step(network: Network, optimizer: SGD, xb: np.ndarray, targets: np.ndarray, lr: float,
               epoch: int, step: int) -> float:
    """Forward, loss, backward and update on one batch; returns the batch's loss."""
    logits = network.forward(xb, training=True)
    loss, grad = softmax_cross_entropy(logits, targets)
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the training loss became {loss} at epoch {epoch}, step {step + 1} "
            f"(learning rate {lr:g}); try a smaller learning_rate")
    network.backward(grad)
    optimizer.step(lr)
    return loss
