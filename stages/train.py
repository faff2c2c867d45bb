"""Stage `train`: fit the from-scratch network on the prepared training split.

    python -m stages.train

Reads data/prepared/ and params `train.*`; writes models/, which DVC caches: model.npz (weights,
architecture, class names, input normalization) and training/, the loss and accuracy of every
epoch logged with DVCLive as it trains (stages/_training_log.py), which `evaluate` reports in
metrics/metrics.json and plots/loss_curve.png.
"""

from __future__ import annotations

import sys

from cifar10.layout import IMAGE_SHAPE
from numpynet.model import MODEL_KINDS, ModelSpec, build
from numpynet.schedules import SCHEDULES
from numpynet.training import EpochRecord, RandomStreams, TrainConfig, TrainingDiverged, fit
from stages import _model_file, _prepared, _training_log
from stages._io import StageError, run_stage
from stages.params import Boolean, Check, Choice, Integer, IntegerList, Param, Real, Section, load, make_config
from stages.paths import MODEL, PARAMS_FILE, prepared_arrays

PARAMS = Section("train", (
    Param("model", Choice(MODEL_KINDS), "the network"),
    Param("conv_channels", IntegerList(1, 5, 1, 1024),
          "cnn: one 3x3 conv + ReLU + 2x2 max-pool block per entry; frontier: the widths of its conv groups"),
    Param("hidden_sizes", IntegerList(1, 8, 1, 16384), "widths of the ReLU hidden layers"),
    Param("learning_rate", Real(0, 10, "right"), "base learning rate"),
    Param("batch_size", Integer(1, 65536), "images per SGD step"),
    Param("epochs", Integer(1, 100_000), "passes over the training split"),
    Param("seed", Integer(0, 2 ** 63 - 1), "weight init, shuffling, dropout and augmentation draws"),
    Param("momentum", Real(0, 1, "left"), "SGD momentum, 0 = plain SGD"),
    Param("nesterov", Boolean(), "Nesterov look-ahead (needs momentum > 0)"),
    Param("weight_decay", Real(0, 1, "left"), "L2 penalty on weights, never biases; 0 = off"),
    Param("lr_schedule", Choice(SCHEDULES), "how the learning rate changes over the run"),
    Param("warmup_epochs", Real(0, 100_000), "linear warm-up to learning_rate over this many epochs"),
    Param("lr_step_epochs", Integer(1, 100_000), "step schedule: multiply by lr_gamma every this many epochs"),
    Param("lr_gamma", Real(0, 1, "right"), "step schedule: the factor"),
    Param("dropout", Real(0, 1, "left"), "inverted dropout on hidden layers, 0 = off"),
    Param("flip", Boolean(), "augmentation: random horizontal flip"),
    Param("crop_padding", Integer(0, 16), "augmentation: random crop after zero-padding this many pixels"),
    Param("restore_best", Boolean(), "keep the weights of the best-validation-accuracy epoch"),
    Param("label_smoothing", Real(0, 1, "left"), "targets 1 - eps + eps/K and eps/K instead of one-hot"),
    Param("mixup_alpha", Real(0, 1000), "mixup with weight ~ Beta(alpha, alpha), 0 = off"),
    Param("lookahead", Boolean(), "airbench94's Lookahead: every 5 steps the weights move to their running average"),
), checks=(
    Check(lambda v: not v["nesterov"] or v["momentum"] > 0,
          "nesterov is true but momentum is 0; set a momentum, e.g. 0.9, or nesterov: false"),
    Check(lambda v: v["lr_schedule"] != "airbench" or v["warmup_epochs"] == 0,
          "lr_schedule airbench has its own warm-up but warmup_epochs is not 0; set warmup_epochs: 0"),
    Check(lambda v: v["warmup_epochs"] <= v["epochs"],
          "warmup_epochs is longer than the run (epochs); choose at most epochs"),
))


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


def main() -> None:
    values = load(PARAMS)
    spec, config = make_config(ModelSpec, values), make_config(TrainConfig, values)
    info = _prepared.read_info()
    class_names = info["class_names"]
    train, val = _prepared.read_split("train", len(class_names)), _prepared.read_split("val", len(class_names))
    if len(train[0]) == 0:
        raise StageError(f"{prepared_arrays('train')[0]} holds no images; {_prepared.REBUILD}")
    if config.batch_size > len(train[0]):
        raise StageError(f"{PARAMS_FILE}: train.batch_size: {config.batch_size} is larger than the "
                         f"training set ({len(train[0])} images); choose at most {len(train[0])}")

    streams = RandomStreams.from_seed(values["seed"])
    show, done = progress(config.epochs)
    recorder = None

    def on_epoch(record: EpochRecord) -> None:
        recorder.epoch(record)
        show(record)

    try:
        try:
            network = build(spec, IMAGE_SHAPE, len(class_names), streams.init, streams.dropout, train[0])
            recorder = _training_log.Recorder()
            result = fit(network, train, val, config, streams, IMAGE_SHAPE, on_epoch)
        finally:
            done()
        saved = result.history[(result.best_epoch if result.restored else len(result.history)) - 1]
        recorder.finish(saved)
        _model_file.save(MODEL, network, spec.model, class_names, info["normalization"], IMAGE_SHAPE)
        recorder.keep()
    except BaseException as err:
        if recorder is not None:
            recorder.discard()   # the earlier record back, as the earlier model stays
        if isinstance(err, MemoryError):
            sizes = ", ".join(([f"conv_channels {list(spec.conv_channels)}"] if spec.model != "mlp" else [])
                              + ([f"hidden_sizes {list(spec.hidden_sizes)}"] if spec.model != "frontier" else [])
                              + [f"batch_size {config.batch_size}"])
            smaller = "conv_channels (or batch_size)" if spec.model == "frontier" else \
                "hidden_sizes (or conv_channels / batch_size)"
            raise StageError(f"{PARAMS_FILE}: train: the network ({sizes}) does not fit in memory; "
                             f"choose smaller train.{smaller}") from None
        if isinstance(err, TrainingDiverged):
            raise StageError(str(err)) from err
        raise

    which = "the best validation epoch" if result.restored else "the last epoch"
    score = "" if saved.val_accuracy is None else f", validation accuracy {saved.val_accuracy:.4f}"
    print(f"train: {len(result.history)} epochs; saved the weights of epoch {saved.epoch} ({which}{score}) "
          f"-> {MODEL}")


if __name__ == "__main__":
    run_stage("train", main)
