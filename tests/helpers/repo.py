"""A fresh git + DVC copy of this repository in a temporary folder, for end-to-end runs of the real `dvc` CLI.

`PipelineRepo.create(dest, archive, fingerprints, train=...)` copies the files git
tracks (plus untracked, unignored ones, so a work in progress is tested as it
is), minus results (dvc.lock, metrics/, plots/) so the copy starts as a fresh
clone would before its first run, points cifar10/source.yaml's sha256 at the
fixture archive's fingerprints, shrinks `train` params to fixture size, and commits.
`repo.dvc("repro")` then runs the real `dvc` with CIFAR10_ARCHIVE set.
`repo.fork(dest)` copies such a repo (history, DVC cache, outputs) for a test that changes it;
`PipelineRepo.clone(dest, archive)` is a plain `git clone` of this repository's committed HEAD.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers.archives import write_source

ROOT = Path(__file__).resolve().parents[2]  # the repository (tests/helpers/ is two below)
BIN = Path(sys.executable).parent
RESULTS = ("dvc.lock", "metrics/", "plots/")
OUTPUTS = ("data/", "models/")  # DVC outputs: never copied, the copy makes its own

# Small enough for the fixture archive and a few seconds of training.
FIXTURE_TRAIN_PARAMS = {"hidden_sizes": [16, 8], "batch_size": 8, "epochs": 3}

# Tests about DVC, not about the tuned defaults, pin a plain config (on top of
# FIXTURE_TRAIN_PARAMS) that a retune of params.yaml cannot change: `create(..., **PINNED)`.
PINNED = {"filter_normalize": {"normalize": "scale"},
          "train": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
                    "lr_schedule": "constant", "warmup_epochs": 0, "dropout": 0.0, "flip": False,
                    "crop_padding": 0, "restore_best": False, "label_smoothing": 0.0, "mixup_alpha": 0.0}}


def repo_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and not f.startswith(RESULTS + OUTPUTS) and (ROOT / f).is_file()]


def cli_env(dest: Path, archive: Path) -> dict[str, str]:
    """Environment for git and dvc in a copy at `dest`: this venv first on PATH, CIFAR10_ARCHIVE =
    `archive`, a download cache beside the copy (never the user's), no inherited GIT_* / DVC_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DVC_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", CIFAR10_ARCHIVE=str(archive),
               CIFAR10_CACHE_DIR=str(dest.parent / f"{dest.name}-download-cache"),
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return env


@dataclass
class PipelineRepo:
    path: Path
    env: dict[str, str]

    @classmethod
    def create(cls, dest: Path, archive: Path, fingerprints: dict[str, str], **sections: dict) -> PipelineRepo:
        """Copy the repo to `dest`, set params for the fixture (`sections` override per section), git commit."""
        dest.mkdir(parents=True, exist_ok=True)
        for rel in repo_files():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
        repo = cls(dest, cli_env(dest, archive))
        write_source(dest, fingerprints)
        params = repo.params()
        params["train"].update(FIXTURE_TRAIN_PARAMS)
        for section, values in sections.items():
            params[section].update(values)
        repo.write_params(params)
        repo.git("init", "-q")
        repo.git("add", "-A")
        repo.git("commit", "-qm", "copy")
        return repo

    @classmethod
    def clone(cls, dest: Path, archive: Path) -> PipelineRepo:
        """`git clone` this repository at `dest`: its committed HEAD as is (params, dvc.lock and
        results as committed; no work in progress, no DVC cache or outputs)."""
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, capture_output=True,
                       env=cli_env(dest, archive))
        return cls(dest, cli_env(dest, archive))

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), cwd=self.path, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check, timeout=timeout)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("git", *args, check=check)

    def stage(self, name: str, check: bool = False) -> subprocess.CompletedProcess:
        """Run a stage directly, as dvc would: `python -m stages.<name>`, its peak resident memory
        measured (tests/helpers/peak_rss.py) into the result's `peak_rss` (bytes)."""
        fd, peak_file = tempfile.mkstemp(prefix="peak-rss-")
        os.close(fd)
        try:
            proc = PipelineRepo(self.path, {**self.env, "PEAK_RSS_FILE": peak_file}).run(
                sys.executable, str(Path(__file__).with_name("peak_rss.py")), "-m", f"stages.{name}", check=check)
            text = Path(peak_file).read_text()
            proc.peak_rss = int(text) if text else None
        finally:
            os.unlink(peak_file)
        return proc

    def fork(self, dest: Path) -> PipelineRepo:
        """A full copy of this repo at `dest` (git history, DVC cache, outputs, uncommitted changes),
        so a test can change it without touching this one. DVC's runtime folder `.dvc/tmp` (state
        db, locks, experiment queue) is left out: the copy starts with its own."""
        shutil.copytree(self.path, dest, symlinks=True, ignore=lambda d, names: (
            ["tmp"] if Path(d) == self.path / ".dvc" else []))
        return PipelineRepo(dest, dict(self.env))

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def write_params(self, params: dict) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def set_param(self, section: str, key: str, value) -> None:
        params = self.params()
        params[section][key] = value
        self.write_params(params)
