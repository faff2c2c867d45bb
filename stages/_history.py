"""models/training.json: what `train` records of its run, for `evaluate` to report.

    {"epochs": [{"epoch": 1, "train_loss": 0.86, "val_loss": 0.70 | null,
                 "val_accuracy": 0.72 | null, "learning_rate": 0.00999}, ...],
     "restored_epoch": 42 | null}       # the epoch whose weights were kept; null: restore_best off

Why a file of its own: `train` keeps only outputs that DVC caches (this file and
models/model.npz), and that is what lets DVC's run-cache restore a training run computed in
another clone. DVC saves no run-cache entry for a stage with a `cache: false` output, and
`dvc push --run-cache` uploads cached outputs only. `evaluate` writes what git tracks from it:
metrics/train.json (`summary`), plots/training.csv and plots/loss_curve.png.

`read` checks the file like every other input: anything wrong ends in one StageError.
"""

from __future__ import annotations

import dataclasses
import json
import math
import stat
from pathlib import Path
from typing import Any

from numpynet.training import EpochRecord
from stages._io import StageError, quote, write_json

PATH = Path("models/training.json")
MAX_BYTES = 64 << 20        # 100,000 epochs (the params' limit) take about 16 MB
MAX_EPOCHS = 100_000
REBUILD = "run `dvc repro -f train` to rebuild it"
FIELDS = tuple(f.name for f in dataclasses.fields(EpochRecord))


def write(path: Path, history: list[EpochRecord], restored_epoch: int | None) -> None:
    write_json(path, {"epochs": [dataclasses.asdict(r) for r in history], "restored_epoch": restored_epoch})


def _number(value: Any) -> bool:
    """A finite JSON number (an int within float range, so that no arithmetic on it overflows)."""
    return (type(value) is float and math.isfinite(value)) or (type(value) is int and abs(value) < 2 ** 53)


def _check_epoch(i: int, entry: Any, has_val: bool) -> EpochRecord:
    where = f"{PATH}: epoch entry {i + 1}"
    if not isinstance(entry, dict) or set(entry) != set(FIELDS):
        raise StageError(f"{where} is {quote(entry)}; expected an object with {', '.join(FIELDS)}; {REBUILD}")
    if type(entry["epoch"]) is not int or entry["epoch"] != i + 1:
        raise StageError(f"{where} has epoch {quote(entry['epoch'])}; expected {i + 1}; {REBUILD}")
    for key in ("train_loss", "learning_rate") + (("val_loss", "val_accuracy") if has_val else ()):
        if not _number(entry[key]) or entry[key] < 0:
            raise StageError(f"{where} has {key} {quote(entry[key])}; expected a finite number >= 0; {REBUILD}")
    if not has_val and (entry["val_loss"] is not None or entry["val_accuracy"] is not None):
        raise StageError(f"{where} has validation numbers, the first entry has none; {REBUILD}")
    if has_val and entry["val_accuracy"] > 1:
        raise StageError(f"{where} has val_accuracy {entry['val_accuracy']}, above 1; {REBUILD}")
    return EpochRecord(**entry)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def read(path: Path = PATH) -> tuple[list[EpochRecord], int | None]:
    """(history, restored_epoch) from the file, checked; StageError (one line) otherwise."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise StageError(f"{path} is not a regular file (a folder, device or pipe?); {REBUILD}")
        if info.st_size > MAX_BYTES:
            raise StageError(f"{path} is larger than {MAX_BYTES >> 20} MiB; {REBUILD}")
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise StageError(f"{path} does not exist; run `dvc repro train` first") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise StageError(f"{path} is not valid JSON ({quote(str(err), 100, bare=True)}); {REBUILD}") from None
    epochs = data.get("epochs") if isinstance(data, dict) else None
    if not (isinstance(epochs, list) and 1 <= len(epochs) <= MAX_EPOCHS) or set(data) != {"epochs", "restored_epoch"}:
        raise StageError(f"{path} is not a training record (an object of 'epochs', a list of 1 to {MAX_EPOCHS} "
                         f"entries, and 'restored_epoch'); {REBUILD}")
    has_val = isinstance(epochs[0], dict) and epochs[0].get("val_loss") is not None
    history = [_check_epoch(i, entry, has_val) for i, entry in enumerate(epochs)]
    restored = data["restored_epoch"]
    if restored is not None and (type(restored) is not int or not 1 <= restored <= len(history)):
        raise StageError(f"{path} has restored_epoch {quote(restored)}; expected null or an epoch in "
                         f"1..{len(history)}; {REBUILD}")
    return history, restored


def summary(history: list[EpochRecord], restored_epoch: int | None) -> dict[str, Any]:
    """metrics/train.json: the final losses, the best validation accuracy and its epoch, and
    the epoch whose weights the model holds (when restore_best was on)."""
    last = history[-1]
    out: dict[str, Any] = {"final_train_loss": last.train_loss, "epochs": len(history)}
    if last.val_loss is not None:
        out.update(final_val_loss=last.val_loss, final_val_accuracy=last.val_accuracy,
                   best_val_accuracy=max(r.val_accuracy for r in history),
                   best_epoch=max(history, key=lambda r: r.val_accuracy).epoch)
    if restored_epoch is not None:
        out["restored_epoch"] = restored_epoch
    return out


def csv_rows(history: list[EpochRecord]) -> str:
    """plots/training.csv: one row per epoch."""
    has_val = history[-1].val_loss is not None
    rows = ["epoch,train_loss,val_loss,val_accuracy,learning_rate"] + [
        f"{r.epoch},{r.train_loss:.6f},{'' if not has_val else f'{r.val_loss:.6f}'},"
        f"{'' if not has_val else f'{r.val_accuracy:.6f}'},{r.learning_rate:.6g}" for r in history]
    return "\n".join(rows) + "\n"
