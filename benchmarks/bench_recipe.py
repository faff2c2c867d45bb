"""The full-CIFAR-10 recipe (`make cifar10-full`) measured on this machine: for each seed, the
test accuracy, how long its `train` stage took, and the validation accuracy epoch by epoch against
the time since `train` started.

    .venv/bin/python -m benchmarks.bench_recipe run --seeds 0 1 2   # `make cifar10-full SEED=N`, one after another
    .venv/bin/python -m benchmarks.bench_recipe watch --seed 0      # attach to a `make cifar10-full` already running
                                                                    # (--repo: in another clone)
    .venv/bin/python -m benchmarks.bench_recipe report              # the README's block and the curve's PNG

`run` and `watch` follow an experiment in this workspace (or --repo's) (`dvc exp run` trains in the workspace):
the `train` stage's process (its start time from /proc, its end when it is gone), the DVCLive
summary it replaces after each epoch (models/training/metrics.json: the time of each replacement
and its validation accuracy), then metrics/metrics.json once `evaluate` has ended. Each seed's
record goes to benchmarks/results/recipe-seed<N>.json with the commit and the recipe's params.
`report` turns every record there into the README's `cifar10-full` block (each seed, the median,
airbench94's own numbers on this machine for scale) and docs/cifar10-full.png (validation accuracy
against training time). Run it on a quiet machine: the times are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUMMARY = Path("models/training/metrics.json")
METRICS = Path("metrics/metrics.json")
PARAMS = Path("params.yaml")
BLOCK = "cifar10-full"
PLOT = ROOT / "docs" / "cifar10-full.png"
POLL = 1.0   # seconds between looks at the processes and the summary
# airbench94's own code (PyTorch 2.13, CPU, float32, 2 threads, all 50,000 training images),
# measured on this machine on 2026-12-07 by the session that filed the frontier issue (its text)
AIRBENCH = {"accuracy": 0.9401, "train_minutes": 47.0, "epochs": 9.9}


def stage_pid(module: str, repo: Path) -> int | None:
    """The pid of `python -m <module>` running in `repo`, or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"-m" in argv and module.encode() in argv and Path(os.readlink(entry / "cwd")) == repo:
                return int(entry.name)
        except OSError:   # gone, or not ours to read
            continue
    return None


def started_at(pid: int) -> float:
    """The wall-clock time (seconds since the epoch) at which process `pid` started."""
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def follow(repo: Path, seed: int, runner: subprocess.Popen | None = None, log=print) -> dict:
    """Follow one experiment's train and evaluate stages in `repo` (`runner` the process running
    them, when this started it); its record. Progress goes to `log`, a line at a time."""
    def waiting() -> bool:
        if runner is not None and runner.poll() is not None:
            raise SystemExit(f"bench_recipe: error: the run ended (exit {runner.returncode}) before its train stage "
                             "was seen; see its output above")
        time.sleep(POLL)
        return True

    pid = None
    while pid is None and waiting():
        pid = stage_pid("stages.train", repo)
    start = started_at(pid)
    log(f"bench_recipe: train (pid {pid}) started {time.strftime('%H:%M:%S', time.localtime(start))}")
    summary, seen, epochs = repo / SUMMARY, None, []
    while True:
        running = alive(pid)
        try:
            stamp = summary.stat().st_mtime
        except FileNotFoundError:
            stamp = None
        if stamp is not None and stamp != seen and stamp > start:
            seen = stamp
            live = json.loads(summary.read_text())
            if running:   # after the run, finish() rewrites the summary as the saved epoch: not a new epoch
                add_epoch(epochs, live, stamp - start, log)
        if not running:
            break
        time.sleep(POLL)
    train_seconds = time.time() - start
    last_epoch(summary, start, epochs, log)
    log(f"bench_recipe: train ended after {train_seconds / 60:.1f} min")
    evaluate = None
    while evaluate is None and (runner is None or runner.poll() is None):
        evaluate = stage_pid("stages.evaluate", repo)
        if evaluate is None and (repo / METRICS).exists() and \
                (repo / METRICS).stat().st_mtime > start + train_seconds - POLL:
            break   # already done
        time.sleep(POLL)
    while evaluate is not None and alive(evaluate):
        time.sleep(POLL)
    if runner is not None and runner.wait() != 0:
        raise SystemExit(f"bench_recipe: error: make cifar10-full SEED={seed} failed (exit {runner.returncode})")
    metrics = json.loads((repo / METRICS).read_text())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()   # the experiment's params are in the record, not in HEAD
    return {"seed": seed, "commit": head, "date": time.strftime("%Y-%m-%d"),
            "machine": report.machine(), "train_seconds": round(train_seconds, 1), "epochs": epochs,
            "test_accuracy": metrics["test"]["accuracy"], "params": (repo / PARAMS).read_text()}


def last_epoch(summary: Path, start: float, epochs: list[dict], log=print) -> None:
    """Add the run's last epoch to `epochs` if the poll missed it: the process can write it and
    end within one poll. Once train has ended its summary is the saved epoch's, rewritten moments
    after the last epoch's (so its time is that rewrite's); an earlier epoch (restore_best) is
    already in `epochs`."""
    final = json.loads(summary.read_text())
    if not epochs or final["step"] > epochs[-1]["epoch"]:
        add_epoch(epochs, final, summary.stat().st_mtime - start, log, " (as train ended)")


def add_epoch(epochs: list[dict], summary: dict, seconds: float, log=print, when: str = "") -> None:
    """Append the epoch a DVCLive summary describes, `seconds` after train started, and log it."""
    epochs.append({"epoch": summary["step"], "seconds": round(seconds, 1), "val_accuracy": summary["val"]["accuracy"]})
    log(f"bench_recipe: epoch {summary['step']} at {seconds / 60:.1f} min{when}, "
        f"val accuracy {summary['val']['accuracy']:.4f}")


def save(record: dict, results: Path = RESULTS) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"recipe-seed{record['seed']}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"bench_recipe: test accuracy {record['test_accuracy']:.4f}, train {record['train_seconds'] / 60:.1f} min "
          f"-> {path}", flush=True)
    return path


def records(results: Path = RESULTS) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in results.glob("recipe-seed*.json")), key=lambda r: r["seed"])


def write_report(page: Path, results: Path = RESULTS, png: Path = PLOT) -> None:
    runs = records(results)
    if not runs:
        raise SystemExit(f"bench_recipe: error: no records in {results}; run "
                         "`python -m benchmarks.bench_recipe run` first")
    commits = sorted({r["commit"] for r in runs})
    rows = [[str(r["seed"]), f"{r['test_accuracy']:.4f}", f"{r['train_seconds'] / 60:.1f} min", str(len(r["epochs"])),
             r["date"], r["commit"]] for r in runs]
    accuracy = statistics.median(r["test_accuracy"] for r in runs)
    minutes = statistics.median(r["train_seconds"] / 60 for r in runs)
    rows.append([f"median of {len(runs)}", f"{accuracy:.4f}", f"{minutes:.1f} min", "", "", ""])
    rows.append(["airbench94 (PyTorch, CPU), for scale", f"{AIRBENCH['accuracy']:.4f}",
                 f"{AIRBENCH['train_minutes']:.0f} min", f"{AIRBENCH['epochs']}", "2026-12-07", "its own code"])
    table = report.markdown_table(["seed", "test accuracy", "`train` stage", "epochs", "run on", "commit"], rows)
    # the block first: its stamp's commit is then not "+dirty" for the PNG this writes
    report.write_block(page, BLOCK, table, report.command_line("benchmarks.bench_recipe", ["report"]))
    plot(runs, png)
    print(table)
    if len(commits) > 1:
        print(f"bench_recipe: note: the records come from {len(commits)} commits: {', '.join(commits)}")


def plot(runs: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for r in runs:
        minutes = [e["seconds"] / 60 for e in r["epochs"]]
        accuracy = [e["val_accuracy"] for e in r["epochs"]]
        ax.plot(minutes, accuracy, marker="o", label=f"seed {r['seed']} (test, with TTA: {r['test_accuracy']:.4f})")
    ax.axhline(AIRBENCH["accuracy"], color="grey", linestyle="--", linewidth=1,
               label=f"airbench94 in PyTorch: test {AIRBENCH['accuracy']:.3f} (with TTA) "
                     f"after {AIRBENCH['train_minutes']:.0f} min")
    ax.set_xlabel("minutes since the train stage started (validation included)")
    ax.set_ylabel("validation accuracy (5,000 images)")
    ax.set_title("make cifar10-full: validation accuracy after each epoch")
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run make cifar10-full for each seed and record it")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    watch = sub.add_parser("watch", help="record a make cifar10-full already running in this workspace")
    watch.add_argument("--seed", type=int, required=True)
    sub.add_parser("report", help="write the README block and the plot from the records")
    parser.add_argument("--page", type=Path, default=ROOT / "README.md")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the workspace the experiment runs in")
    args = parser.parse_args()
    report.check_block(args.page, BLOCK)
    if args.command == "run":
        for seed in args.seeds:
            runner = subprocess.Popen(["make", "cifar10-full", f"SEED={seed}"], cwd=args.repo)
            save(follow(args.repo.resolve(), seed, runner))
    elif args.command == "watch":
        save(follow(args.repo.resolve(), args.seed))
    else:
        write_report(args.page)


if __name__ == "__main__":
    sys.exit(main())
