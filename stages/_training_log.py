"""models/training/: the record of a training run, kept by DVCLive (the DVC ecosystem's logger).

    models/training/metrics.json                   {"train": {"loss": L}, "val": {"loss": L,
                                                    "accuracy": A}, "step": epoch}
    models/training/plots/metrics/train/loss.tsv   step<TAB>loss, one row per epoch (step = epoch, from 1)
    models/training/plots/metrics/val/loss.tsv     step<TAB>loss    (these two only with a validation split)
    models/training/plots/metrics/val/accuracy.tsv step<TAB>accuracy

`train` writes it epoch by epoch (`Recorder`), so a running `dvc exp run` shows its numbers live
in `dvc exp show`, DVC's VS Code extension and Studio. The summary, metrics.json, holds the latest
epoch while training runs and, once it ends, the epoch whose weights models/model.npz holds: the
best validation epoch with `train.restore_best`, else the last (`step` is that epoch).

The record lives inside models/, train's only output, which DVC caches: DVC keeps no run-cache
entry for a stage with an output it does not cache, and `dvc push --run-cache` uploads cached
outputs only, so this is what lets the run-cache restore a training run computed in another
clone. `evaluate` reports it in what git tracks (metrics/metrics.json `model`,
plots/loss_curve.png).

`read` checks the record like every other input: anything wrong ends in one StageError.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpynet.training import EpochRecord
from stages._io import StageError, put_back, quote, set_aside, write_json
from stages._read import read_bytes, read_json
from stages.paths import DVC_YAML, TRAIN_LOSS, TRAINING, TRAINING_SUMMARY, VAL_ACCURACY, VAL_LOSS, training_series

MAX_BYTES = 64 << 20        # 100,000 epochs (the params' limit) take about 3 MB a series
MAX_EPOCHS = 100_000
REBUILD = "run `dvc repro -f train` to rebuild it"
MISSING = "run `dvc repro train` first"


def _live(directory: Path):
    """A DVCLive logger for a pipeline stage. DVC is already running this stage (`dvc repro`,
    `dvc exp run`) and tells it so through the environment, so the logger does not open the DVC
    repository again as DVCLive otherwise does: that takes time, and writes DVC's state
    database, which must not decide whether training can run. What DVCLive takes from the
    repository besides (a Studio token in its config) comes from DVC_STUDIO_TOKEN and the global
    DVC config instead. The summary is replaced whole each epoch, never rewritten in place."""
    from dvclive import Live, env

    class PipelineLive(Live):
        def _init_dvc(self) -> None:
            self._inside_dvc_pipeline = bool(os.getenv(env.DVC_ROOT))
            self._inside_dvc_exp = bool(os.getenv(env.DVC_EXP_BASELINE_REV))
            self._dvc_file = str(DVC_YAML)

        def make_summary(self) -> None:
            """DVCLive's summary, written whole (a temporary file renamed onto it), so whoever
            reads it while training runs (`dvc exp show`) never finds it half-written."""
            if self._step is not None:
                self.summary["step"] = self.step
            write_json(Path(self.metrics_file), self.summary)

    # no dvc.yaml of its own (ours declares the record), no report, no experiment of its own
    # (`dvc exp run` makes that)
    return PipelineLive(str(directory), save_dvc_exp=False, dvcyaml=None, report=None)


class Recorder:
    """Logs each epoch through DVCLive into `directory`; `finish` makes the summary the saved epoch's.

    DVCLive writes in place (that is what makes it live), so a record already there is set aside
    first: `finish` deletes it, `discard` (a failed run) puts it back, so a failed run leaves the
    earlier record as it was. DVCLive is imported here, not at module level: it loads DVC, which a
    stage that stops at a bad param should not pay for."""

    def __init__(self, directory: Path = TRAINING) -> None:
        self.directory = directory
        self.previous = set_aside(directory)
        try:
            self.live = _live(directory)
        except BaseException:
            put_back(directory, self.previous)
            raise

    def _log(self, record: EpochRecord, plot: bool) -> None:
        self.live.log_metric(TRAIN_LOSS, record.train_loss, plot=plot)
        if record.val_loss is not None:
            self.live.log_metric(VAL_LOSS, record.val_loss, plot=plot)
            self.live.log_metric(VAL_ACCURACY, record.val_accuracy, plot=plot)

    def epoch(self, record: EpochRecord) -> None:
        """One row per series, and the summary rewritten: what `dvc exp show` shows live."""
        self.live.step = record.epoch
        self._log(record, plot=True)
        self.live.next_step()

    def finish(self, saved: EpochRecord) -> None:
        """The summary becomes the numbers of the epoch whose weights the model holds."""
        self.live.summary = {}
        self.live.step = saved.epoch
        self._log(saved, plot=False)
        self.live.end()

    def keep(self) -> None:
        """The run is saved (its model too): the earlier record goes."""
        if self.previous is not None:
            shutil.rmtree(self.previous, ignore_errors=True)

    def discard(self) -> None:
        """A failed run leaves no record of its own behind, and the earlier one as it was."""
        put_back(self.directory, self.previous)


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class TrainingRecord:
    train_loss: list[float]                 # one value per epoch, epoch 1 first
    val_loss: list[float] | None            # None: trained without a validation split
    val_accuracy: list[float] | None
    saved_epoch: int                        # the epoch whose weights the model holds

    @property
    def epochs(self) -> list[int]:
        return list(range(1, len(self.train_loss) + 1))

    def saved(self) -> dict[str, Any]:
        """metrics/metrics.json `model`: the saved epoch and its numbers."""
        i = self.saved_epoch - 1
        out: dict[str, Any] = {"epoch": self.saved_epoch, "train_loss": self.train_loss[i]}
        if self.val_loss is not None and self.val_accuracy is not None:
            out.update(val_loss=self.val_loss[i], val_accuracy=self.val_accuracy[i])
        return out


def _value(path: Path, text: str, where: str, high: float = math.inf) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= high) or "_" in text:
        bound = f"in [0, {high:g}]" if math.isfinite(high) else ">= 0"
        raise StageError(f"{path}: {where} holds {quote(text, bare=True)}; expected a finite number {bound}; {REBUILD}")
    return value


def _read_series(path: Path, column: str, high: float = math.inf) -> list[float]:
    """The values of a DVCLive TSV (header `step<TAB>column`, steps 1, 2, ... in order)."""
    try:
        lines = read_bytes(path, MAX_BYTES, REBUILD, MISSING).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise StageError(f"{path} is not UTF-8 text; {REBUILD}") from None
    if not lines or lines[0].split("\t") != ["step", column]:
        raise StageError(f"{path} does not start with the header 'step<TAB>{column}'; {REBUILD}")
    rows = lines[1:]
    if not 1 <= len(rows) <= MAX_EPOCHS:
        raise StageError(f"{path} holds {len(rows)} epochs; expected 1 to {MAX_EPOCHS}; {REBUILD}")
    values = []
    for i, line in enumerate(rows, start=1):
        fields = line.split("\t")
        if len(fields) != 2 or fields[0] != str(i):
            raise StageError(f"{path}: row {i} is {quote(line, bare=True)}; expected step {i}, a tab and a "
                             f"number; {REBUILD}")
        values.append(_value(path, fields[1], f"step {i}", high))
    return values


def read(directory: Path = TRAINING) -> TrainingRecord:
    """The record in `directory`, checked: every series numbered 1..N, the same N for all of
    them, and a summary that is one of its epochs. StageError (one line) otherwise."""
    train_loss = _read_series(training_series(TRAIN_LOSS, directory), "loss")
    has_val = training_series(VAL_LOSS, directory).exists() or training_series(VAL_ACCURACY, directory).exists()
    val_loss = _read_series(training_series(VAL_LOSS, directory), "loss") if has_val else None
    val_accuracy = _read_series(training_series(VAL_ACCURACY, directory), "accuracy", 1.0) if has_val else None
    for name, series in ((VAL_LOSS, val_loss), (VAL_ACCURACY, val_accuracy)):
        if series is not None and len(series) != len(train_loss):
            raise StageError(f"{training_series(name, directory)} holds {len(series)} epochs, "
                             f"{training_series('train/loss', directory)} {len(train_loss)}; {REBUILD}")
    path = directory / TRAINING_SUMMARY.name
    summary = read_json(path, MAX_BYTES, REBUILD, MISSING)
    step = summary.get("step") if isinstance(summary, dict) else None
    if type(step) is not int or not 1 <= step <= len(train_loss):
        raise StageError(f"{path} has step {quote(step)}; expected the saved epoch, 1..{len(train_loss)}; {REBUILD}")
    record = TrainingRecord(train_loss, val_loss, val_accuracy, step)
    expected = {"step": step, "train": {"loss": train_loss[step - 1]}}
    if has_val:
        expected["val"] = {"loss": val_loss[step - 1], "accuracy": val_accuracy[step - 1]}
    if summary != expected:
        raise StageError(f"{path} does not hold epoch {step}'s numbers as the series record them; {REBUILD}")
    return record
