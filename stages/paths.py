"""Every file and folder the pipeline reads or writes, named once; paths relative to the repository
root, where DVC runs the stages. Stages and tools import their paths from here, and
tests/stages/test_paths.py holds dvc.yaml (hand-written, as DVC reads it) to `STAGES`,
`LIVE_METRICS` and `PLOTS` both ways: a path changed here and not there fails it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------- inputs that are not outputs

STAGES_CODE, CIFAR10_CODE, NUMPYNET_CODE = Path("stages"), Path("cifar10"), Path("numpynet")
PARAMS_FILE = Path("params.yaml")         # every stage's knobs, a section per stage
SOURCE_FILE = CIFAR10_CODE / "source.yaml"  # fetch: which CIFAR-10 (URL, md5, sha256), inside cifar10/

# ---------------------------------------------------------------- fetch -> data/raw/

RAW = Path("data/raw")
RAW_CLASS_NAMES = RAW / "class_names.json"


def raw_arrays(split: str) -> tuple[Path, Path]:
    """data/raw/<split>_images.npy and <split>_labels.npy; split is train or test."""
    return RAW / f"{split}_images.npy", RAW / f"{split}_labels.npy"


# ---------------------------------------------------------------- filter_normalize -> data/prepared/

PREPARED = Path("data/prepared")
DATASET_INFO = PREPARED / "dataset.json"


def prepared_arrays(split: str) -> tuple[Path, Path]:
    """data/prepared/<split>_images.npy and <split>_labels.npy; split is train, val or test."""
    return PREPARED / f"{split}_images.npy", PREPARED / f"{split}_labels.npy"


# ---------------------------------------------------------------- train -> models/

MODELS = Path("models")                   # train's one cached output (for DVC's run-cache)
MODEL = MODELS / "model.npz"
TRAINING = MODELS / "training"            # DVCLive's record of each epoch
TRAINING_SUMMARY = TRAINING / "metrics.json"
SERIES = TRAIN_LOSS, VAL_LOSS, VAL_ACCURACY = ("train/loss", "val/loss", "val/accuracy")   # DVCLive's names


def training_series(name: str, directory: Path = TRAINING) -> Path:
    """The TSV in which DVCLive logs one series ("train/loss", ...) under `directory`."""
    return directory / "plots" / "metrics" / f"{name}.tsv"


# ---------------------------------------------------------------- evaluate -> metrics/, plots/ (git-tracked)

METRICS = Path("metrics/metrics.json")
CONFUSION_CSV = Path("plots/confusion.csv")
CONFUSION_PNG = Path("plots/confusion_matrix.png")
PER_CLASS_CSV = Path("plots/per_class.csv")
PER_CLASS_PNG = Path("plots/per_class.png")
ERRORS_CSV = Path("plots/misclassified.csv")
ERRORS_PNG = Path("plots/misclassified.png")
LOSS_PNG = Path("plots/loss_curve.png")

# ---------------------------------------------------------------- the tools'

DVC_YAML = Path("dvc.yaml")
LOCK = Path("dvc.lock")
RERUN_REPORT = Path("rerun-check/report.md")   # tools/rerun_check.py's markdown report

# ---------------------------------------------------------------- dvc.yaml, stage by stage


@dataclass(frozen=True)
class StageFiles:
    """What dvc.yaml declares of one stage: `deps`, `outs` (not cached when git tracks them) and
    `metrics`. Params are whole sections of params.yaml, named like the stage."""

    deps: tuple[Path, ...]
    outs: tuple[Path, ...]
    metrics: tuple[Path, ...] = ()


CODE = (STAGES_CODE, CIFAR10_CODE, NUMPYNET_CODE)   # whole folders: a new module needs no edit of dvc.yaml
STAGES = {
    "fetch": StageFiles(deps=(STAGES_CODE, CIFAR10_CODE), outs=(RAW,)),
    "filter_normalize": StageFiles(deps=(*CODE, RAW), outs=(PREPARED,)),
    "train": StageFiles(deps=(*CODE, PREPARED), outs=(MODELS,)),
    "evaluate": StageFiles(deps=(*CODE, MODELS, PREPARED),
                           outs=(LOSS_PNG, CONFUSION_CSV, CONFUSION_PNG, PER_CLASS_CSV, PER_CLASS_PNG, ERRORS_CSV,
                                 ERRORS_PNG),
                           metrics=(METRICS,)),
}
LIVE_METRICS = (TRAINING_SUMMARY,)   # dvc.yaml's top-level metrics: inside train's output
PLOTS = (*(training_series(name) for name in SERIES), CONFUSION_CSV, PER_CLASS_CSV,
         LOSS_PNG, CONFUSION_PNG, PER_CLASS_PNG, ERRORS_PNG)   # dvc.yaml's top-level plots
