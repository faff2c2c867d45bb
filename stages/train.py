"""Stage `train`: fit the from-scratch network on the prepared training split.

    python -m stages.train

Reads data/prepared/ and params `train.*`; writes models/model.npz (weights,
architecture, class names, input normalization), metrics/train.json,
plots/training.csv (one row per epoch) and plots/loss_curve.png.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from numpynet.model import build_cnn, build_mlp, to_arrays
from numpynet.schedules import SCHEDULES
from numpynet.training import EpochRecord, TrainConfig, TrainingDiverged, fit, rng_streams
from stages import _plots
from stages._io import StageError, load_params, param, run_stage, save_npz, write_json, write_text

DATA = Path("data/prepared")
MODEL = Path("models/model.npz")
METRICS = Path("metrics/train.json")
HISTORY = Path("plots/training.csv")
LOSS_PNG = Path("plots/loss_curve.png")
IMAGE_SHAPE = (3, 32, 32)  # a flat row is 3 channel planes of 32x32


def read_params() -> tuple[dict, TrainConfig]:
    p, s = load_params("train"), "train"
    positive = lambda v: v > 0  # noqa: E731
    hidden = param(p, s, "hidden_sizes", list, lambda v: len(v) > 0 and all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v),
        "a non-empty list of positive integers, e.g. [128, 64]")
    model = param(p, s, "model", str, lambda v: v in ("mlp", "cnn"), "mlp or cnn")
    conv = param(p, s, "conv_channels", list, lambda v: 1 <= len(v) <= 5 and all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in v),
        "a list of 1 to 5 positive integers (one 3x3 conv + 2x2 max-pool block each), e.g. [32, 64, 128]")
    arch = {"model": model, "conv_channels": conv, "hidden_sizes": hidden,
            "dropout": float(param(p, s, "dropout", (int, float), lambda v: 0 <= v < 1, "a number in [0, 1)")),
            "seed": param(p, s, "seed", int, lambda v: v >= 0, "a non-negative integer")}
    config = TrainConfig(
        learning_rate=float(param(p, s, "learning_rate", (int, float), positive, "a positive number, e.g. 0.01")),
        batch_size=param(p, s, "batch_size", int, positive, "a positive integer, e.g. 64"),
        epochs=param(p, s, "epochs", int, positive, "a positive integer, e.g. 50"),
        momentum=float(param(p, s, "momentum", (int, float), lambda v: 0 <= v < 1, "a number in [0, 1)")),
        nesterov=param(p, s, "nesterov", bool, None, "true or false"),
        weight_decay=float(param(p, s, "weight_decay", (int, float), lambda v: v >= 0, "a number >= 0")),
        lr_schedule=param(p, s, "lr_schedule", str, lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
        warmup_epochs=float(param(p, s, "warmup_epochs", (int, float), lambda v: v >= 0, "a number >= 0")),
        lr_step_epochs=param(p, s, "lr_step_epochs", int, positive, "a positive integer"),
        lr_gamma=float(param(p, s, "lr_gamma", (int, float), lambda v: 0 < v <= 1, "a number in (0, 1]")),
        flip=param(p, s, "flip", bool, None, "true or false"),
        crop_padding=param(p, s, "crop_padding", int, lambda v: 0 <= v <= 16, "an integer in [0, 16]"),
        restore_best=param(p, s, "restore_best", bool, None, "true or false"),
        label_smoothing=float(param(p, s, "label_smoothing", (int, float), lambda v: 0 <= v < 1, "a number in [0, 1)")),
        mixup_alpha=float(param(p, s, "mixup_alpha", (int, float), lambda v: 0 <= v < math.inf,
                                "a finite number >= 0, e.g. 0.2")),
    )
    if config.nesterov and config.momentum == 0:
        raise StageError("params.yaml: train.nesterov is true but train.momentum is 0; set a momentum, e.g. 0.9")
    return arch, config


def progress(total: int):
    """A tqdm bar over epochs on a terminal; otherwise a log line every 10th epoch."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="epoch", desc="train")

        def update(r: EpochRecord) -> None:
            bar.set_postfix(loss=f"{r.train_loss:.4f}", val_acc="-" if r.val_accuracy is None else f"{r.val_accuracy:.4f}")
            bar.update()
        return update, bar.close

    def log(r: EpochRecord) -> None:
        if r.epoch == 1 or r.epoch % 10 == 0 or r.epoch == total:
            val = "" if r.val_accuracy is None else f"  val loss {r.val_loss:.4f}  val acc {r.val_accuracy:.4f}"
            print(f"epoch {r.epoch:3d}/{total}  train loss {r.train_loss:.4f}{val}", flush=True)
    return log, lambda: None


def build_and_fit(arch: dict, config: TrainConfig, class_names: list[str], x_train: np.ndarray,
                  y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  rngs: dict[str, np.random.Generator]):
    """Build the network the params describe and train it; returns (network, TrainResult)."""
    if arch["model"] == "cnn":
        network = build_cnn(IMAGE_SHAPE, arch["conv_channels"], arch["hidden_sizes"], len(class_names),
                            rngs["init"], arch["dropout"], rngs["dropout"])
    else:
        network = build_mlp(x_train.shape[1], arch["hidden_sizes"], len(class_names), rngs["init"],
                            arch["dropout"], rngs["dropout"])
    on_epoch, done = progress(config.epochs)
    try:
        return network, fit(network, x_train, y_train, x_val, y_val, config, rngs["shuffle"], rngs["augment"],
                            on_epoch, rngs["mixup"])
    finally:
        done()


def main() -> None:
    arch, config = read_params()
    try:
        info = json.loads((DATA / "dataset.json").read_text())
        x_train, y_train = np.load(DATA / "train_images.npy"), np.load(DATA / "train_labels.npy")
        x_val, y_val = np.load(DATA / "val_images.npy"), np.load(DATA / "val_labels.npy")
    except (OSError, ValueError) as err:
        raise StageError(f"cannot read the prepared data in {DATA}/ ({err}); run `dvc repro filter_normalize` first") from err
    if config.batch_size > len(x_train):
        raise StageError(f"params.yaml: train.batch_size: {config.batch_size} is larger than the "
                         f"training set ({len(x_train)} images); choose at most {len(x_train)}")
    class_names = info["class_names"]

    rngs = rng_streams(arch["seed"])
    try:
        network, result = build_and_fit(arch, config, class_names, x_train, y_train, x_val, y_val, rngs)
    except MemoryError:
        sizes = (f"conv_channels {arch['conv_channels']}, " if arch["model"] == "cnn" else "") + \
            f"hidden_sizes {arch['hidden_sizes']}, batch_size {config.batch_size}"
        raise StageError(f"params.yaml: train: the network ({sizes}) does not fit in memory; "
                         "choose smaller train.hidden_sizes (or conv_channels / batch_size)") from None
    except TrainingDiverged as err:
        raise StageError(str(err)) from err

    meta = {"model": arch["model"], "class_names": class_names, "normalization": info["normalization"],
            "input_shape": list(IMAGE_SHAPE), "input_layout": "CIFAR channel planes: 1024 R, 1024 G, 1024 B, each 32x32 row-major"}
    save_npz(MODEL, to_arrays(network, meta))

    h = result.history
    last = h[-1]
    train_metrics = {"final_train_loss": last.train_loss, "epochs": len(h)}
    if last.val_loss is not None:
        train_metrics.update(final_val_loss=last.val_loss, final_val_accuracy=last.val_accuracy,
                             best_val_accuracy=max(r.val_accuracy for r in h),
                             best_epoch=max(h, key=lambda r: r.val_accuracy).epoch)
    if config.restore_best:
        train_metrics["restored_epoch"] = result.best_epoch if result.restored else len(h)
    write_json(METRICS, train_metrics)

    has_val = last.val_loss is not None
    rows = ["epoch,train_loss,val_loss,val_accuracy,learning_rate"] + [
        f"{r.epoch},{r.train_loss:.6f},{'' if not has_val else f'{r.val_loss:.6f}'},"
        f"{'' if not has_val else f'{r.val_accuracy:.6f}'},{r.learning_rate:.6g}" for r in h]
    write_text(HISTORY, "\n".join(rows) + "\n")
    _plots.loss_curve(LOSS_PNG, [r.epoch for r in h], [r.train_loss for r in h],
                      [r.val_loss for r in h] if has_val else None,
                      [r.val_accuracy for r in h] if has_val else None)
    print(f"train: {len(h)} epochs, final train loss {last.train_loss:.4f}"
          + ("" if not has_val else f", val accuracy {last.val_accuracy:.4f}") + f" -> {MODEL}")


if __name__ == "__main__":
    run_stage("train", main)
