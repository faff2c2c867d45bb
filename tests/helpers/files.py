"""Hashes and listings of files, and the check that a stage failed cleanly.

    md5(data), sha256(data)               hex digests of bytes
    file_sha256(path)                     sha256 of a file's bytes
    digests(root, ["models/model.npz"])   {relative path: sha256} of the named files under root
    glob_digests(root, "plots/*")         {relative path: sha256} of the files the globs match
                                          (dotfiles such as .gitignore left out)
    snapshot(root)                        {relative path: sha256, or "dir"} of everything under
                                          OUTPUTS (hidden files too): compare before/after a run
    listing(folder)                       sorted names in a folder, [] if it does not exist
    assert_clean_failure(proc, "fetch", "fragment", ...)
                                          exit 1, no traceback, one final `fetch: error:` line
                                          holding every fragment, peak memory (where measured)
                                          at most MAX_PEAK_RSS; returns that line
    evaluate_with(repo, "models/model.npz", put, tmp)
                                          evaluate run (memory-capped) with that input replaced
                                          by `put`; (process, snapshot before, snapshot after)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

# The most resident memory a stage may use on a bad input (the bar); the real data's
# largest stage, train on ten classes, peaks at about 0.7 GiB.
MAX_PEAK_RSS = 3 << 29   # 1.5 GiB

# What a failed stage must leave as it was: every DVC output folder and dvc.lock.
OUTPUTS = ("data", "models", "metrics", "plots", "dvc.lock")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    return sha256(Path(path).read_bytes())


def digests(root: Path, paths: Iterable[str]) -> dict[str, str]:
    """{path: sha256 of root/path} for each relative `path` (each must be a file)."""
    return {p: file_sha256(root / p) for p in paths}


def glob_digests(root: Path, *patterns: str) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` matching one of the glob `patterns`,
    dotfiles (such as .gitignore) aside."""
    files = sorted({p for pattern in patterns for p in root.glob(pattern)
                    if p.is_file() and not p.name.startswith(".")})
    return {str(p.relative_to(root)): file_sha256(p) for p in files}


def snapshot(root: Path, paths: tuple[str, ...] = OUTPUTS) -> dict[str, str]:
    """{relative path: sha256} of every file (hidden ones too) under `paths`; folders as 'dir'."""
    out: dict[str, str] = {}
    for rel in paths:
        p = root / rel
        if p.is_file():
            out[rel] = file_sha256(p)
        elif p.is_dir():
            out[rel] = "dir"
            for f in sorted(p.rglob("*")):
                out[str(f.relative_to(root))] = file_sha256(f) if f.is_file() else "dir"
    return out


def listing(folder: Path) -> list[str]:
    """Sorted names of the entries of `folder`; [] when it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_clean_failure(proc: subprocess.CompletedProcess, stage: str, *fragments: str) -> str:
    """Exit 1, no traceback, and a last stderr line `<stage>: error: ...` holding every fragment;
    where the run's peak memory was measured (`peak_rss`, PipelineRepo.stage), at most MAX_PEAK_RSS.

    Earlier stderr lines are allowed only as notices (e.g. fetch's retry lines). Returns the line.
    """
    out = f"\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    peak = getattr(proc, "peak_rss", None)
    assert peak is None or peak <= MAX_PEAK_RSS, f"peak resident memory {peak / 2**20:.0f} MiB{out}"
    assert proc.returncode == 1, f"exit {proc.returncode}{out}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, out
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"{stage}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one final '{stage}: error:' line{out}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in the message{out}"
    return errors[0]


def evaluate_with(repo, rel: str, put: Callable[[Path, Path], None],
                  tmp: Path) -> tuple[subprocess.CompletedProcess, dict[str, str], dict[str, str]]:
    """Run the evaluate stage of `repo` (a PipelineRepo) under a 3 GiB address-space limit with
    its input `rel` replaced: the good file is moved aside to tmp, `put(path, good)` writes the
    replacement at `path` (or nothing, for a missing input), and the good file is put back
    afterwards. Returns (the process, snapshot of the outputs before, after)."""
    target, saved = repo.path / rel, tmp / f"saved-{Path(rel).name}"
    kept = ("metrics", "plots", "data", "dvc.lock")
    os.replace(target, saved)
    try:
        before = snapshot(repo.path, kept)
        put(target, saved)
        peak_file = tmp / "peak-rss"
        proc = repo.run("bash", "-c", f"ulimit -v {3 << 20}; PEAK_RSS_FILE={peak_file} exec {sys.executable} "
                        f"{Path(__file__).with_name('peak_rss.py')} -m stages.evaluate", check=False, timeout=60)
        proc.peak_rss = int(peak_file.read_text()) if peak_file.exists() and peak_file.read_text() else None
        after = snapshot(repo.path, kept)
    finally:
        if target.is_dir():
            target.rmdir()
        else:
            target.unlink(missing_ok=True)
        os.replace(saved, target)
    return proc, before, after
