"""The README's results table, measured: test accuracy of each configuration over several seeds,
each a `dvc exp run` of the committed HEAD on the real data.

    make results                                    # every configuration, seeds 0 1 2, 2 at a time
    .venv/bin/python -m benchmarks.results [--configs reference cnn] [--seeds 0 1 2 3 4] [--jobs 2]
    .venv/bin/python -m benchmarks.results --list   # each configuration as the command that runs it

1. `git clone` HEAD of the repository (--repo) into a temporary folder: what is measured is the
   committed code and params, never the work in progress; the work tree is not touched.
2. Queue one experiment per configuration and seed (`dvc exp run --queue -S ... -S train.seed=N`)
   and run the queue with `dvc queue start -j JOBS`, each worker's BLAS on cores / JOBS threads
   (results do not depend on the thread count, docs/reproducibility.md).
3. Read each experiment's test accuracy from `dvc exp show --json` (metrics/metrics.json
   `test.accuracy`) and write the table into the README's `<!-- generated:results -->` block.

The archive is CIFAR10_ARCHIVE, else ../shared/cifar10/cifar-10-python.tar.gz beside the
repository; without either it stops in one line (it never downloads: a results run should not
depend on the network). --set KEY=VALUE adds `-S KEY=VALUE` to every experiment (the test runs a
tiny version this way); the stamp's command shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
MIRROR = ROOT.parent / "shared" / "cifar10" / "cifar-10-python.tar.gz"
TEN_CLASSES = "filter_normalize.classes=[airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck]"


@dataclass(frozen=True)
class Config:
    label: str              # the table's first column
    sets: tuple[str, ...]   # the -S values on top of the committed params.yaml


# The reference project's recipe: its network and plain SGD, pixels / 255, no options.
REFERENCE = ("filter_normalize.normalize=scale", "train.model=mlp", "train.hidden_sizes=[128,64]",
             "train.learning_rate=0.01", "train.batch_size=64", "train.epochs=50", "train.momentum=0.0",
             "train.nesterov=false", "train.weight_decay=0.0", "train.lr_schedule=constant",
             "train.warmup_epochs=0", "train.dropout=0.0", "train.flip=false", "train.crop_padding=0",
             "train.restore_best=false", "train.label_smoothing=0.0", "train.mixup_alpha=0.0",
             "evaluate.flip_tta=false")
CNN = ("train.model=cnn", "train.conv_channels=[32,64,128]", "train.hidden_sizes=[128]",
       "filter_normalize.normalize=standardize", "train.momentum=0.9", "train.nesterov=true",
       "train.learning_rate=0.03", "train.lr_schedule=cosine", "train.warmup_epochs=1",
       "train.weight_decay=0.0005", "train.flip=true", "train.crop_padding=4", "train.epochs=10",
       "train.restore_best=true")
BEST_MLP = ("train.hidden_sizes=[1024,512,256]", "train.momentum=0.9", "train.nesterov=true",
            "train.learning_rate=0.02", "train.warmup_epochs=2", "train.batch_size=256", "train.epochs=120",
            "train.crop_padding=4", "train.mixup_alpha=0.2", "evaluate.flip_tta=true")

CONFIGS = {
    "reference": Config("the reference: MLP 3072-128-64, plain SGD, pixels / 255, 3 classes", REFERENCE),
    "default": Config("default `params.yaml`, 3 classes", ()),
    "cnn": Config("CNN recipe, 3 classes", CNN),
    "default-10": Config("default `params.yaml`, all 10 classes", (TEN_CLASSES,)),
    "cnn-10": Config("CNN recipe, all 10 classes", (*CNN, TEN_CLASSES)),
    "best-mlp": Config("best MLP 3072-1024-512-256, 3 classes", BEST_MLP),
}
DEFAULT_CONFIGS = ("reference", "default", "cnn", "default-10", "cnn-10")   # best-mlp: 7 minutes a seed


def command(name: str) -> str:
    """The `dvc exp run` that runs configuration `name` (as docs/params.md shows it)."""
    sets = [f"-S {shlex.quote(s)}" for s in CONFIGS[name].sets]
    lines, line = [], "dvc exp run"
    for s in sets:
        if len(line) + 1 + len(s) > 96:
            lines.append(line + " \\")
            line = " " + s
        else:
            line += " " + s
    return "\n ".join([*lines, line])


def fail(message: str, prog: str = "results") -> None:
    raise SystemExit(f"{prog}: error: {message}")


def archive_path(prog: str = "results") -> Path:
    """CIFAR10_ARCHIVE, else the mirror beside the repository; SystemExit in one line when absent."""
    given = os.environ.get("CIFAR10_ARCHIVE")
    path = Path(given) if given else MIRROR
    if not path.is_file():
        what = "CIFAR10_ARCHIVE" if given else "CIFAR10_ARCHIVE is unset, and the mirror"
        fail(f"no CIFAR-10 archive at {path} ({what}); set CIFAR10_ARCHIVE=/path/to/cifar-10-python.tar.gz", prog)
    return path.resolve()


def dvc(repo: Path, *args: str, env: dict, timeout: float | None = None) -> str:
    done = subprocess.run([DVC, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if done.returncode:
        fail(f"dvc {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def test_accuracy(metrics: dict) -> float:
    """metrics/metrics.json's test accuracy, `test.accuracy`."""
    return float(metrics["test"]["accuracy"])


def accuracies(shown: list) -> dict[str, float]:
    """{experiment name: test accuracy} from `dvc exp show --json`."""
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            data = exp["revs"][0].get("data") or {}
            metrics = (data.get("metrics") or {}).get("metrics/metrics.json", {}).get("data")
            if exp.get("name") and metrics:
                found[exp["name"]] = test_accuracy(metrics)
    return found


def queue_status(repo: Path, env: dict, tries: int = 10) -> str:
    """`dvc queue status`, asked again when it fails: DVC sometimes reads a task's info file while
    a worker writes it ("Expecting value: line 1 column 1")."""
    for _ in range(tries - 1):
        done = subprocess.run([DVC, "queue", "status"], cwd=repo, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if done.returncode == 0:
            return done.stdout
        time.sleep(1)
    return dvc(repo, "queue", "status", env=env)


def run_queue(repo: Path, env: dict, jobs: int, timeout: float) -> None:
    """`dvc queue start -j jobs` and wait until nothing is queued or running; fail naming the failed."""
    with open(repo.parent / "queue.log", "w") as log:   # the workers keep a pipe open: a file, not a pipe
        subprocess.run([DVC, "queue", "start", "-j", str(jobs)], cwd=repo, env=env, stdout=log, stderr=log,
                       check=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(2)
        status = queue_status(repo, env)
        rows = [line.split() for line in status.splitlines()[1:] if line.strip()]
        if not any(w in ("Queued", "Running") for row in rows for w in row):
            break
        if time.monotonic() > deadline:
            dvc(repo, "queue", "kill", *[r[1] for r in rows if "Running" in r and len(r) > 1], env=env)
            fail(f"the experiments did not finish within {timeout:.0f} s:\n{status}")
    failed = [row[1] for row in rows if "Failed" in row and len(row) > 1]
    if failed:
        logs = "".join(subprocess.run([DVC, "queue", "logs", name], cwd=repo, env=env, capture_output=True,
                                      text=True).stdout[-2000:] for name in failed)
        fail(f"{len(failed)} experiment(s) failed: {', '.join(failed)}\n{logs}")


def stop_workers(repo: Path, env: dict, wait: float = 60) -> None:
    """`dvc queue stop`, then wait until no worker is left (before the clone is deleted)."""
    dvc(repo, "queue", "stop", env=env)
    deadline = time.monotonic() + wait
    while "Worker status: 0 active, 0 idle" not in queue_status(repo, env):
        if time.monotonic() > deadline:
            break
        time.sleep(1)


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes"


def measure(names: list[str], seeds: list[int], extra: list[str], jobs: int, source: Path,
            archive: Path, timeout: float) -> tuple[dict[str, dict[int, float]], str, float]:
    """({config: {seed: test accuracy}}, the measured commit, wall seconds of the queue)."""
    with tempfile.TemporaryDirectory(prefix="results-") as tmp:
        repo = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(source), str(repo)], check=True, capture_output=True)
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, check=True, capture_output=True,
                             text=True).stdout.strip()
        cpus = os.cpu_count() or 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DVC_"))}
        env.update(CIFAR10_ARCHIVE=str(archive), CIFAR10_CACHE_DIR=str(Path(tmp) / "download-cache"),
                   DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
        env.setdefault("OPENBLAS_NUM_THREADS", str(max(1, cpus // jobs)))
        # the data once, so that every experiment restores it from the run-cache
        dvc(repo, "repro", "fetch", env=env)
        for name in names:
            for seed in seeds:
                sets = [*CONFIGS[name].sets, *extra, f"train.seed={seed}"]
                dvc(repo, "exp", "run", "--queue", *[a for s in sets for a in ("-S", s)], "-n", f"{name}-s{seed}",
                    env=env)
        start = time.perf_counter()
        run_queue(repo, env, jobs, timeout)
        seconds = time.perf_counter() - start
        found = accuracies(json.loads(dvc(repo, "exp", "show", "--json", env=env)))
        stop_workers(repo, env)
    missing = [f"{n}-s{s}" for n in names for s in seeds if f"{n}-s{s}" not in found]
    if missing:
        fail(f"no test accuracy in `dvc exp show` for {', '.join(missing)}")
    return {n: {s: found[f"{n}-s{s}"] for s in seeds} for n in names}, sha, seconds


def table(results: dict[str, dict[int, float]], seeds: list[int]) -> str:
    rows = [[CONFIGS[name].label, ", ".join(f"{acc[s]:.4f}" for s in seeds), f"{statistics.median(acc.values()):.4f}"]
            for name, acc in results.items()]
    return report.markdown_table(["configuration", f"test accuracy, seeds {', '.join(map(str, seeds))}", "median"],
                                 rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(DEFAULT_CONFIGS), metavar="NAME",
                        help=f"from {', '.join(CONFIGS)} (default: {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="experiments at a time (default: %(default)s)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="one more -S for every experiment (repeatable)")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository whose HEAD is measured")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds for the whole queue")
    parser.add_argument("--list", action="store_true", help="print each configuration's command and stop")
    report.add_arguments(parser, ROOT / "README.md")
    args = parser.parse_args(argv)
    if args.list:
        for name in CONFIGS:
            print(f"# {name}: {CONFIGS[name].label}\n{command(name)}\n")
        return
    if args.jobs < 1:
        fail(f"--jobs {args.jobs}: give at least 1")
    archive = archive_path()
    if not args.no_write:
        report.check_block(args.page, "results")
    if report.commit(args.repo).endswith("+dirty"):
        print("results: note: the work tree has uncommitted changes; this measures the committed HEAD",
              file=sys.stderr)
    n = len(args.configs) * len(args.seeds)
    print(f"results: {n} experiments ({' '.join(args.configs)}; seeds {' '.join(map(str, args.seeds))}), "
          f"{args.jobs} at a time, on {archive}", flush=True)
    results, sha, seconds = measure(args.configs, args.seeds, args.extra, args.jobs, args.repo, archive, args.timeout)
    markdown = table(results, args.seeds) + (
        f"\n\nTest accuracy (`test.accuracy` of `metrics/metrics.json`) of {n} `dvc exp run`s, "
        f"`dvc queue start -j {args.jobs}`: {duration(seconds)} in all.")
    print(markdown)
    if not args.no_write:
        report.write_block(args.page, "results", markdown, report.command_line("benchmarks.results", argv),
                           at_commit=sha)


if __name__ == "__main__":
    main()
