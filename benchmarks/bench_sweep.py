"""Throughput of a queued sweep: `dvc queue start -j 1` (each experiment on every core) against
`-j 2` with OPENBLAS_NUM_THREADS=1 (one experiment per core), and proof that both give the same
metrics, experiment for experiment.

    CIFAR10_ARCHIVE=../shared/cifar10/cifar-10-python.tar.gz make bench-sweep
    ... python -m benchmarks.bench_sweep [--seeds 5] [--no-write]

Works in a `git clone` of HEAD in a temporary folder (the work tree here is untouched). Each
round queues the default params with train.seed = 0..N-1 (`dvc exp run --queue -f`, so every
stage really runs, nothing is restored from DVC's run-cache), starts the workers and times until
the queue is empty. Prints experiments per hour for each round and each experiment's accuracy, and writes the
`bench-sweep` block of docs/performance.md (benchmarks/report.py). Run it on a quiet machine: it
is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.results import queue_status, test_accuracy

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "bench-sweep"
DVC = str(Path(sys.executable).parent / "dvc")


def base_env() -> dict:
    """This environment with this venv first on PATH: the stages' `python` is this one."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def dvc(repo: Path, *args: str, env: dict | None = None, timeout: float = 3600) -> str:
    done = subprocess.run([DVC, *args], cwd=repo, env=env or base_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode:
        sys.exit(f"bench_sweep: error: dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def accuracies(repo: Path, prefix: str) -> dict[str, float]:
    rows = json.loads(dvc(repo, "exp", "show", "--json"))
    found = {}
    for row in rows:
        for exp in row.get("experiments") or []:
            if exp["name"] and exp["name"].startswith(prefix):
                data = exp["revs"][0]["data"]
                found[exp["name"][len(prefix):]] = test_accuracy(data["metrics"]["metrics/metrics.json"]["data"])
    return found


def sweep_round(repo: Path, jobs: int, threads: str | None, seeds: int, prefix: str) -> tuple[float, dict]:
    env = base_env()
    env.pop("OPENBLAS_NUM_THREADS", None)
    if threads:
        env["OPENBLAS_NUM_THREADS"] = threads
    for seed in range(seeds):
        dvc(repo, "exp", "run", "--queue", "-f", "-S", f"train.seed={seed}", "-n", f"{prefix}seed{seed}", env=env)
    start = time.perf_counter()
    with open(repo.parent / f"queue-{prefix}.log", "w") as log:
        subprocess.run([DVC, "queue", "start", "-j", str(jobs)], cwd=repo, env=env, stdout=log, stderr=log, check=True)
    while True:
        time.sleep(2)
        out = queue_status(repo, env)
        if "Queued" not in out and "Running" not in out:
            break
    seconds = time.perf_counter() - start
    if "Failed" in out:
        sys.exit(f"bench_sweep: error: an experiment failed:\n{out}")
    return seconds, accuracies(repo, prefix)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    report.add_arguments(parser, ROOT / "docs/performance.md")
    args = parser.parse_args()
    if not args.no_write:
        report.check_block(args.page, BLOCK)
    if not os.environ.get("CIFAR10_ARCHIVE"):
        print("bench_sweep: CIFAR10_ARCHIVE unset: fetch downloads the archive", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    repo = work / "repo"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, check=True, capture_output=True,
                             text=True).stdout.strip()
        dvc(repo, "repro")  # the baseline, so the queue's copies start from a filled cache
        rounds = [("-j 1, BLAS threads unset (every core per experiment)", 1, None, "j1-"),
                  ("-j 2, OPENBLAS_NUM_THREADS=1 (one core per experiment)", 2, "1", "j2-")]
        results = []
        for label, jobs, threads, prefix in rounds:
            seconds, acc = sweep_round(repo, jobs, threads, args.seeds, prefix)
            results.append((label, seconds, acc))
            print(f"{label}: {args.seeds} experiments in {seconds:.0f} s = "
                  f"{args.seeds * 3600 / seconds:.1f} experiments/hour", flush=True)
        dvc(repo, "queue", "stop", "--kill")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| sweep of {args.seeds} default-config experiments | wall time | experiments / hour |")
    print("| --- | --- | --- |")
    for label, seconds, _ in results:
        print(f"| {label} | {seconds:.0f} s | {args.seeds * 3600 / seconds:.1f} |")
    print("\n| seed | " + " | ".join(label.split(",")[0] for label, _, _ in results) + " |")
    print("| --- | " + " | ".join("---" for _ in results) + " |")
    for seed in range(args.seeds):
        print(f"| {seed} | " + " | ".join(f"{acc.get(f'seed{seed}', float('nan')):.4f}" for _, _, acc in results) + " |")
    same = all(results[0][2] == r[2] for r in results[1:])
    print(f"\nidentical metrics in every round: {same}")
    if not args.no_write:
        base = results[0][1]
        rows = [[f"`dvc queue start {label.split(',')[0]}`,{label.split(',', 1)[1]}", f"{seconds:.0f} s",
                 f"{args.seeds * 3600 / seconds:.1f} ({base / seconds:.2f}x)",
                 ", ".join(f"{acc.get(f'seed{seed}', float('nan')):.4f}" for seed in range(args.seeds))]
                for label, seconds, acc in results]
        table = report.markdown_table([f"{args.seeds} default-config experiments, every stage run", "wall time",
                                       "experiments / hour", f"test accuracy, seeds 0..{args.seeds - 1}"], rows)
        verdict = "the same in every round, digit for digit" if same else "NOT the same in every round"
        report.write_block(args.page, BLOCK, f"{table}\n\nTest accuracies: {verdict}.",
                           report.command_line("benchmarks.bench_sweep", sys.argv[1:]), at_commit=sha)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
