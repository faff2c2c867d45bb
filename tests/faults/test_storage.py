"""Storage failures while a stage writes: a read-only file system, a full disk, a file size limit,
an output folder that is a file. Each ends the stage in one line naming the file and saying what
to check, exit 1, no traceback, and the earlier outputs intact (nothing half-written).

The read-only and full disks are real: a mount namespace (`unshare -rm`, no root needed where user
namespaces are enabled) mounts the output folder read-only, or a 256 KiB tmpfs over it, for the
stage's process only. Without `unshare` those cases are skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers.files import assert_clean_failure, snapshot

pytestmark = pytest.mark.slow

# stage -> the output folder it writes
STAGES = {"filter_normalize": "data", "train": "models", "evaluate": "plots"}


def _unshare_works() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux) on this machine"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -rm fails here: {probe.stderr.strip()}"


NO_NAMESPACES = _unshare_works()


@pytest.fixture
def repo(trained_repo, tmp_path):
    return trained_repo.fork(tmp_path / "repo")


def run_in_namespace(repo, stage: str, mount: str) -> subprocess.CompletedProcess:
    return repo.run("unshare", "-rm", "sh", "-c", f"{mount} && exec {sys.executable} -m stages.{stage}",
                    check=False, timeout=300)


@pytest.mark.skipif(NO_NAMESPACES is not None, reason=str(NO_NAMESPACES))
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_read_only_file_system(repo, stage):
    folder = STAGES[stage]
    before = snapshot(repo.path)
    proc = run_in_namespace(repo, stage, f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}")
    assert_clean_failure(proc, stage, "cannot read or write", "Read-only file system", "earlier outputs are intact")
    assert snapshot(repo.path) == before


# a small tmpfs where the stage writes; filter_normalize still reads data/raw through a bind mount
FULL_DISK = {
    "filter_normalize": "mkdir -p /tmp/ns-$$ && mount --bind data /tmp/ns-$$ && mount -t tmpfs -o size=256k tmpfs data"
                        " && mkdir data/raw && mount --bind /tmp/ns-$$/raw data/raw",
    "train": "mount -t tmpfs -o size=64k tmpfs models",
    "evaluate": "mount -t tmpfs -o size=16k tmpfs plots",
}
FILE_SIZE_LIMIT_KIB = {"filter_normalize": 64, "train": 64, "evaluate": 8}


@pytest.mark.skipif(NO_NAMESPACES is not None, reason=str(NO_NAMESPACES))
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_full_disk(repo, stage):
    """The tmpfs lives in the stage's namespace only, so the real folders are untouched by design;
    what is tested is the message."""
    proc = run_in_namespace(repo, stage, FULL_DISK[stage])
    assert_clean_failure(proc, stage, "cannot read or write", "No space left on device", "free space")


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_file_size_limit(repo, stage):
    """`ulimit -f`: writes past it fail with EFBIG instead of killing the process."""
    before = snapshot(repo.path)
    limit = FILE_SIZE_LIMIT_KIB[stage]
    proc = repo.run("bash", "-c", f"ulimit -f {limit}; exec {sys.executable} -m stages.{stage}", check=False, timeout=300)
    assert_clean_failure(proc, stage, "cannot read or write", "File too large")
    assert snapshot(repo.path) == before


def test_an_output_folder_that_is_a_file(repo):
    shutil.rmtree(repo.path / "metrics")
    (repo.path / "metrics").write_text("not a folder\n")
    proc = repo.stage("evaluate")
    assert_clean_failure(proc, "evaluate", "metrics", "cannot read or write")
    assert (repo.path / "metrics").read_text() == "not a folder\n"


def test_evaluate_replaces_its_outputs_as_one_set_or_none_of_them(repo):
    """With other params (flip averaging turned around) evaluate's outputs change; a file size
    limit that its larger files exceed must leave every earlier output as it was, the small ones
    (misclassified.csv, with its probabilities) included, not a half-rewritten set."""
    params = repo.params()
    repo.set_param("evaluate", "flip_tta", not params["evaluate"]["flip_tta"])
    before = snapshot(repo.path)
    proc = repo.run("bash", "-c", f"ulimit -f 8; exec {sys.executable} -m stages.evaluate", check=False, timeout=300)
    assert_clean_failure(proc, "evaluate", "cannot read or write", "File too large")
    assert snapshot(repo.path) == before
    assert repo.stage("evaluate").returncode == 0    # without the limit, the same params change them all
    after = snapshot(repo.path)
    assert after["plots/misclassified.csv"] != before["plots/misclassified.csv"]
