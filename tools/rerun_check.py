"""Rerun check: recompute the whole pipeline from the data and compare its metrics with HEAD's.

    python -m tools.rerun_check [--mode auto|exact|tolerance] [--report PATH]   (or `make rerun-check`)

1. `git clone` the repository's committed HEAD into a temporary folder and `dvc repro --force`
   there, so every stage runs (a plain `dvc repro` would reuse outputs that match dvc.lock) and
   the work tree here is never touched.
2. `dvc metrics diff --all --json HEAD` in the clone: DVC's own diff of the rerun's metrics
   against the committed ones, key by key, for the metrics files git tracks (metrics/).
3. Each metric gets a verdict from TOLERANCES. In exact mode (the default where the stages' BLAS
   pin applies: x86-64 with AVX2 + FMA) every value must be equal; in tolerance mode (elsewhere,
   or `--mode tolerance`) within its kind's tolerance.
4. A markdown report (metrics, and the dvc.lock outputs whose hashes changed) is printed,
   written to --report and appended to $GITHUB_STEP_SUMMARY when that is set.

Exit status 0 when every metric agrees, 1 when one does not (each named on stderr with both
values), 2 when the rerun itself fails. CIFAR10_ARCHIVE and the download cache are used as by
`dvc repro`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stages import NEEDED_CPU_FLAGS, cpu_flags
from stages._io import StageError
from stages._read import read_yaml
from stages.paths import LOCK, RERUN_REPORT

MAX_LOCK_BYTES = 16 << 20   # dvc.lock: a few lines per dependency and output


@dataclass(frozen=True)
class Tolerance:
    kind: str
    pattern: str      # regular expression on the metric's key, e.g. "per_class.bird.f1"
    abs_tol: float
    rel_tol: float
    why: str


# The first matching row decides. Another BLAS (ARM, another library) changes float32 rounding,
# and over a training run that moves a model as another seed does: compare the seed-to-seed
# spread in the README's results table, which `make results` measures.
TOLERANCES = (
    Tolerance("rate", r"(accuracy|precision|recall|f1)$", 0.01, 0,
              "accuracy, precision, recall, F1: 0.01 absolute, above seed-to-seed noise"),
    Tolerance("loss", r"loss$", 0, 0.05, "cross-entropy: 5% of the committed value"),
    Tolerance("epoch index", r"(epoch|step)$", 10, 0, "the saved (best validation) epoch: 10 epochs either way"),
)
FALLBACK = Tolerance("other", r"", 0, 0.01, "any other metric: 1% of the committed value")


def tolerance_for(key: str) -> Tolerance:
    return next((t for t in TOLERANCES if re.search(t.pattern, key)), FALLBACK)


def within(old: float, new: float, tol: Tolerance) -> bool:
    return math.isclose(old, new, rel_tol=tol.rel_tol, abs_tol=tol.abs_tol)


def exact_mode_applies() -> bool:
    """True where the stages pin OpenBLAS's kernels (stages/__init__.py): x86-64 with AVX2 + FMA."""
    return platform.machine().lower() in ("x86_64", "amd64") and cpu_flags() >= NEEDED_CPU_FLAGS


@dataclass(frozen=True)
class Row:
    path: str
    key: str
    old: float | None
    new: float | None
    ok: bool
    rule: str


def judge(diff: dict, exact: bool) -> list[Row]:
    """Rows of the report from `dvc metrics diff --all --json` output ({path: {key: {old, new}}})."""
    rows = []
    for path in sorted(diff):
        for key in sorted(diff[path]):
            entry = diff[path][key]
            old, new = entry.get("old"), entry.get("new")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new)):
                rows.append(Row(path, key, old, new, old == new, "present in both"))
                continue
            tol = tolerance_for(key)
            ok = old == new if exact else within(old, new, tol)
            rule = "exact" if exact else (f"+-{tol.abs_tol:g}" if tol.abs_tol else f"+-{tol.rel_tol:.0%}")
            rows.append(Row(path, key, old, new, ok, rule))
    return rows


def changed_outputs(old_lock: dict, new_lock: dict) -> list[tuple[str, str, str]]:
    """(path, committed md5, rerun md5) of every dvc.lock output whose hash changed."""
    def outs(lock: dict) -> dict[str, str]:
        return {o["path"]: o.get("md5", "") for stage in lock.get("stages", {}).values()
                for o in stage.get("outs", [])}
    old, new = outs(old_lock), outs(new_lock)
    return [(p, old.get(p, "-"), new.get(p, "-")) for p in sorted(set(old) | set(new)) if old.get(p) != new.get(p)]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "-" if v is None else str(v)


def report(rows: list[Row], outputs: list[tuple[str, str, str]], exact: bool, commit: str) -> str:
    bad = [r for r in rows if not r.ok] + (outputs if exact else [])
    mode = "exact (the BLAS pin applies on this machine)" if exact else "tolerance"
    lines = [f"## Rerun check: {'PASSED' if not bad else 'FAILED'}", "",
             f"Commit `{commit}`, every stage recomputed from the data; mode: {mode}; "
             f"{sum(r.ok for r in rows)} of {len(rows)} metrics agree"
             + (", every output byte-identical." if exact and not outputs else "."), "",
             "| metric | committed | rerun | change | allowed | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        change = _fmt(r.new - r.old) if isinstance(r.old, (int, float)) and isinstance(r.new, (int, float)) else "-"
        lines.append(f"| {r.path}: {r.key} | {_fmt(r.old)} | {_fmt(r.new)} | {change} | {r.rule} | "
                     f"{'ok' if r.ok else '**differs**'} |")
    lines += ["", f"{LOCK} outputs whose hashes changed: " + ("none" if not outputs else "")]
    if outputs:
        lines += ["", "| output | committed md5 | rerun md5 |", "| --- | --- | --- |"]
        lines += [f"| {p} | {a} | {b} |" for p, a, b in outputs]
    return "\n".join(lines) + "\n"


def run(cmd: list[str], cwd: Path, timeout: float = 7200) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


class CheckError(Exception):
    """The rerun could not be made (exit 2)."""


def read_lock(path: Path, commit: str) -> dict:
    """dvc.lock through the checked YAML reader ({} when there is none); CheckError if it is broken
    (say, merge-conflict markers committed by mistake)."""
    try:
        lock = read_yaml(path, MAX_LOCK_BYTES, f"resolve it (a merge conflict?) and commit it; commit {commit}")
    except FileNotFoundError:
        return {}
    except StageError as err:
        raise CheckError(str(err)) from None
    return lock if isinstance(lock, dict) else {}


def rerun_metrics(root: Path, workdir: Path) -> tuple[dict, dict, dict, str]:
    """Clone HEAD of `root` into `workdir`, recompute every stage; returns
    (dvc metrics diff, committed dvc.lock, rerun dvc.lock, commit)."""
    clone = workdir / "clone"
    done = run(["git", "clone", "-q", "--no-hardlinks", str(root), str(clone)], workdir)
    if done.returncode:
        raise CheckError(f"git clone of {root} failed: {done.stderr.strip()}")
    commit = run(["git", "rev-parse", "--short", "HEAD"], clone).stdout.strip()
    committed_lock = read_lock(clone / LOCK, commit)
    dvc = str(Path(sys.executable).parent / "dvc")
    dvc = dvc if Path(dvc).exists() else "dvc"
    print(f"rerun-check: dvc repro --force of {commit} in {clone} ...", flush=True)
    done = run([dvc, "repro", "--force"], clone)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise CheckError(f"`dvc repro --force` failed in the clone:\n{tail}")
    done = run([dvc, "metrics", "diff", "--all", "--json", "HEAD"], clone)
    if done.returncode:
        raise CheckError(f"`dvc metrics diff` failed: {done.stderr.strip()}")
    # the metrics files git tracks: DVCLive's summary (models/training/metrics.json) is in the DVC
    # cache, where HEAD's copy exists only if the rerun made the same bytes; its numbers are in
    # metrics/metrics.json `model` too
    tracked = set(run(["git", "ls-files"], clone).stdout.splitlines())
    diff = {path: keys for path, keys in json.loads(done.stdout or "{}").items() if path in tracked}
    return diff, committed_lock, read_lock(clone / LOCK, commit), commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rerun_check", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("auto", "exact", "tolerance"), default="auto",
                        help="auto: exact where the BLAS pin applies, else tolerance")
    parser.add_argument("--report", type=Path, default=RERUN_REPORT, help=f"markdown report (default {RERUN_REPORT})")
    args = parser.parse_args(argv)
    exact = exact_mode_applies() if args.mode == "auto" else args.mode == "exact"
    root = Path(run(["git", "rev-parse", "--show-toplevel"], Path.cwd()).stdout.strip() or ".")
    workdir = Path(tempfile.mkdtemp(prefix="rerun-check-"))
    try:
        diff, old_lock, new_lock, commit = rerun_metrics(root, workdir)
    except (CheckError, subprocess.TimeoutExpired, OSError, ValueError) as err:
        print(f"rerun-check: error: {err}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not diff:
        print("rerun-check: error: no metrics to compare (dvc metrics diff printed nothing)", file=sys.stderr)
        return 2
    rows = judge(diff, exact)
    outputs = changed_outputs(old_lock, new_lock)
    text = report(rows, outputs, exact, commit)
    print(text)
    try:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as summary:
                summary.write(text)
    except OSError as err:
        print(f"rerun-check: error: cannot write the report ({err})", file=sys.stderr)
        return 2
    bad = [r for r in rows if not r.ok]
    for r in bad:
        print(f"rerun-check: error: {r.path}: {r.key}: committed {_fmt(r.old)}, rerun {_fmt(r.new)} "
              f"(allowed: {r.rule})", file=sys.stderr)
    moved = outputs if exact else []
    for path, old, new in moved:
        print(f"rerun-check: error: {path}: committed md5 {old}, rerun {new} (exact mode: outputs must be "
              "byte-identical)", file=sys.stderr)
    return 1 if bad or moved else 0


if __name__ == "__main__":
    sys.exit(main())
