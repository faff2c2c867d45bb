"""The training loop: shuffled mini-batches, optional augmentation, schedule, validation.

Pure: takes arrays and a `TrainConfig`, returns the per-epoch history. Randomness
comes from named streams spawned from one seed, so turning one option on (say
dropout) does not change the draws of another (the shuffle order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from numpynet import augment
from numpynet.losses import cross_entropy, soft_targets, softmax_cross_entropy
from numpynet.model import Network
from numpynet.optim import SGD
from numpynet.schedules import learning_rate


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


@dataclass(frozen=True)
class EpochRecord:
    epoch: int                   # 1-based
    train_loss: float            # mean over the epoch's mini-batches, against the training targets
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


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators for init, shuffle, dropout, augmentation and mixup, all from `seed`."""
    names = ("init", "shuffle", "dropout", "augment", "mixup")  # append only: earlier streams stay as they were
    return dict(zip(names, (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(names)))))


def evaluate_loss_accuracy(network: Network, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `network` on x (N, ...), y (N,)."""
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = network.forward(x[i:i + batch_size])
        total_loss += cross_entropy(logits, y[i:i + batch_size]) * len(logits)
        correct += int(np.sum(logits.argmax(axis=1) == y[i:i + batch_size]))
    return total_loss / len(x), correct / len(x)


def fit(network: Network, x_train: np.ndarray, y_train: np.ndarray,
        x_val: np.ndarray | None, y_val: np.ndarray | None, config: TrainConfig,
        shuffle_rng: np.random.Generator, augment_rng: np.random.Generator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        mixup_rng: np.random.Generator | None = None) -> TrainResult:
    """Train `network` in place with mini-batch SGD.

    x_train (N, D) float32, y_train (N,) int; x_val/y_val likewise or None.
    The training set is reshuffled at the start of every epoch; the last batch
    of an epoch may be smaller. Raises TrainingDiverged on a non-finite loss.
    """
    n = len(x_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    optimizer = SGD(list(network.parameters()), config.momentum, config.nesterov, config.weight_decay)
    has_val = x_val is not None and len(x_val) > 0
    history: list[EpochRecord] = []
    best_acc, best_epoch, best_weights = -1.0, None, None
    step = 0
    # A diverging run overflows before its loss turns non-finite; that is reported once, as
    # TrainingDiverged, instead of as a stream of floating-point warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(1, config.epochs + 1):
            record = _run_epoch(network, x_train, y_train, x_val, y_val, config, optimizer, epoch,
                                step, steps_per_epoch, shuffle_rng, augment_rng, mixup_rng)
            step += steps_per_epoch
            history.append(record)
            if has_val and config.restore_best and record.val_accuracy > best_acc:
                best_acc, best_epoch = record.val_accuracy, epoch
                best_weights = [p.copy() for _, p, _ in network.parameters()]
            if on_epoch is not None:
                on_epoch(record)
    restored = False
    if config.restore_best and best_weights is not None:
        for (_, p, _), saved in zip(network.parameters(), best_weights):
            p[...] = saved
        restored = True
    return TrainResult(history, best_epoch, restored)


def _run_epoch(network: Network, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
               y_val: np.ndarray | None, config: TrainConfig, optimizer: SGD, epoch: int, step: int,
               steps_per_epoch: int, shuffle_rng: np.random.Generator,
               augment_rng: np.random.Generator | None, mixup_rng: np.random.Generator | None) -> EpochRecord:
    """One pass over the reshuffled training set, then the validation scores."""
    n, n_classes = len(x_train), network.n_outputs
    order = shuffle_rng.permutation(n)
    loss_sum = 0.0
    for start in range(0, n, config.batch_size):
        idx = order[start:start + config.batch_size]
        xb, yb = x_train[idx], y_train[idx]
        if config.flip:
            xb = augment.random_flip(xb, augment_rng)
        if config.crop_padding:
            xb = augment.random_crop(xb, config.crop_padding, augment_rng)
        targets = yb
        if config.label_smoothing or config.mixup_alpha:
            targets = soft_targets(yb, n_classes, config.label_smoothing, xb.dtype)
        if config.mixup_alpha:
            xb, targets = augment.mixup(xb, targets, config.mixup_alpha, mixup_rng)
        lr = learning_rate(step, steps_per_epoch, config.learning_rate, config.epochs,
                           config.lr_schedule, config.warmup_epochs, config.lr_step_epochs, config.lr_gamma)
        logits = network.forward(xb, training=True)
        loss, grad = softmax_cross_entropy(logits, targets)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss became {loss} at epoch {epoch}, step {step + 1} "
                f"(learning rate {lr:g}); try a smaller learning_rate")
        network.backward(grad)
        optimizer.step(lr)
        loss_sum += loss
        step += 1
    val_loss = val_acc = None
    if x_val is not None and len(x_val) > 0:
        val_loss, val_acc = evaluate_loss_accuracy(network, x_val, y_val)
    return EpochRecord(epoch, loss_sum / steps_per_epoch, val_loss, val_acc, lr)
