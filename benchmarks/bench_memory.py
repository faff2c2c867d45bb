"""Peak resident memory of every stage, on 3 classes (the default params) and on all 10.

    make bench-memory                            # with CIFAR10_ARCHIVE set; a few minutes
    python -m benchmarks.bench_memory [--no-write]

Each stage runs in its own process in a scratch copy of the repository, with the default
params.yaml and then with `filter_normalize.classes` set to all ten; its peak RSS (from wait4)
is printed beside the largest arrays the stage must hold (its biggest input or output .npy)
and their ratio, and the 10-class run's test accuracy. Prints numbers and writes the
`bench-memory` block of docs/performance.md (benchmarks/report.py); it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks import report
from benchmarks.bench_train import run_measured, scratch_copy
from benchmarks.results import test_accuracy
from cifar10.layout import CLASS_NAMES

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "bench-memory"

STAGES = ("fetch", "filter_normalize", "train", "evaluate")
# the arrays each stage must hold at once, by the files they come from or go to
HOLDS = {"fetch": ["data/raw/train_images.npy"],
         "filter_normalize": ["data/raw/train_images.npy"],
         "train": ["data/prepared/train_images.npy", "data/prepared/val_images.npy"],
         "evaluate": ["data/prepared/test_images.npy"]}


def run(work: Path, env: dict, classes: list[str]) -> dict:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["filter_normalize"]["classes"] = classes
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = {}
    for stage in STAGES:
        seconds, rss = run_measured([sys.executable, "-m", f"stages.{stage}"], work, env)
        held = sum((work / f).stat().st_size for f in HOLDS[stage]) / 2 ** 20
        out[stage] = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss, 1), "holds_mib": round(held, 1),
                      "ratio": round(rss / held, 2)}
        print(f"  {stage:<18} {seconds:7.1f} s  peak {rss:7.1f} MiB  holds {held:6.1f} MiB  ratio {rss / held:5.2f}",
              flush=True)
    out["test_accuracy"] = test_accuracy(json.loads((work / "metrics/metrics.json").read_text()))
    print(f"  test accuracy {out['test_accuracy']:.4f}")
    return out


def markdown(results: dict) -> str:
    names = list(results)
    rows = [[f"`{stage}`", *(f"{results[n][stage]['peak_rss_mib']:.0f} / {results[n][stage]['holds_mib']:.0f} MiB, "
                             f"{results[n][stage]['seconds']:.1f} s" for n in names)] for stage in STAGES]
    return report.markdown_table(["stage", *(f"{n}: peak / holds, time" for n in names)], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    report.add_arguments(parser, ROOT / "docs/performance.md")
    args = parser.parse_args()
    if not args.no_write:
        report.check_block(args.page, BLOCK)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    results = {}
    default = yaml.safe_load((ROOT / "params.yaml").read_text())["filter_normalize"]["classes"]
    for name, classes in ((f"{len(default)} classes", default), ("10 classes", list(CLASS_NAMES))):
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            scratch_copy(Path(tmp))
            print(f"{name} ({', '.join(classes)}):")
            results[name] = run(Path(tmp), env, classes)
    print(json.dumps(results))
    if not args.no_write:
        report.write_block(args.page, BLOCK, markdown(results), report.command_line("benchmarks.bench_memory", sys.argv[1:]))


if __name__ == "__main__":
    main()
