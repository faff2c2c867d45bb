"""How long the README's quick-start commands take: the pipeline of a fresh clone, and the tests.

    make bench-quickstart                         # CIFAR10_ARCHIVE, else ../shared/cifar10/...
    .venv/bin/python -m benchmarks.bench_quickstart [--no-repro] [--no-tests] [--no-write]

1. `dvc repro` in a `git clone` of HEAD in a temporary folder, on the real archive: the pipeline
   part of `make repro` (without creating the venv and installing the pinned packages, which
   depend on the network and pip's cache).
2. `make test-fast` and `make test` here, in the work tree, as a developer runs them.

Each is one run, timed by the wall clock; a failing command stops the benchmark without writing.
The numbers go to the `quickstart` block of docs/performance.md (benchmarks/report.py), which the
README's quick start points to. It runs for as long as the whole test suite: run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.results import archive_path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "quickstart"
BIN = Path(sys.executable).parent


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    print(f"bench_quickstart: {' '.join(cmd)} (in {cwd}) ...", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"bench_quickstart: error: {' '.join(cmd)} exited {done.returncode}:\n"
                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    print(f"  {seconds:.0f} s", flush=True)
    return seconds


README = ROOT / "README.md"


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} minutes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-repro", action="store_true", help="skip the pipeline run")
    parser.add_argument("--no-tests", action="store_true", help="skip make test-fast and make test")
    report.add_arguments(parser, ROOT / "docs/performance.md")
    args = parser.parse_args()
    pages = [args.page, README]   # the README's quick start shows the same table
    if not args.no_write:
        for page in pages:
            report.check_block(page, BLOCK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DVC_"))}
    env.update(DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    rows = []
    if not args.no_repro:
        archive = archive_path("bench_quickstart")
        with tempfile.TemporaryDirectory(prefix="bench-quickstart-") as tmp:
            clone = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
            repro_env = {**env, "CIFAR10_ARCHIVE": str(archive), "CIFAR10_CACHE_DIR": str(Path(tmp) / "cache")}
            rows.append(["`dvc repro` in a fresh clone of HEAD (the pipeline part of `make repro`)",
                         minutes(timed([str(BIN / "dvc"), "repro"], clone, repro_env))])
    if not args.no_tests:
        make_env = {**env, "VENV": str(BIN.parent)}
        for target in ("test-fast", "test"):
            rows.append([f"`make {target}` (the venv already installed)",
                         minutes(timed(["make", target, f"VENV={BIN.parent}"], ROOT, make_env))])
    if not rows:
        parser.error("nothing to time: drop --no-repro or --no-tests")
    table = report.markdown_table(["command", "wall time, one run"], rows)
    print(table)
    if not args.no_write:
        for page in pages:
            report.write_block(page, BLOCK, table, report.command_line("benchmarks.bench_quickstart", sys.argv[1:]))


if __name__ == "__main__":
    main()
