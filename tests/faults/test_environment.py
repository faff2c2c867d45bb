"""Environment variables the stages read, set to what they cannot use: each ends `fetch` in one line
naming the variable and its value (shortened when long) and what to do; exit 1, no traceback, no
data/raw/ written. (Thread-count variables: tests/stages/test_blas_pin.py; a mirror that is not
CIFAR-10: tests/faults/test_archives.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.archives import fetch_env, write_source
from tests.helpers.files import assert_clean_failure

pytestmark = pytest.mark.slow


def fetch(workdir, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def workdir(synthetic_archive, tmp_path):
    write_source(tmp_path, synthetic_archive.fingerprints)
    return tmp_path


def _archive_is(kind: str):
    def prepare(workdir) -> str:
        path = workdir / f"archive-{kind}"
        if kind == "folder":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        return str(path)
    return prepare


CASES = {
    "archive-a-folder": ({"CIFAR10_ARCHIVE": _archive_is("folder")}, "CIFAR10_ARCHIVE=", "no such file"),
    "archive-a-fifo": ({"CIFAR10_ARCHIVE": _archive_is("fifo")}, "CIFAR10_ARCHIVE=", "no such file"),
    "archive-missing": ({"CIFAR10_ARCHIVE": _archive_is("missing")}, "CIFAR10_ARCHIVE=", "no such file"),
    "archive-a-long-name": ({"CIFAR10_ARCHIVE": lambda w: "/nowhere/" + "x" * 5000}, "chars)", "no such file"),
    "timeout-a-word": ({"CIFAR10_DOWNLOAD_TIMEOUT": lambda w: "soon"}, "CIFAR10_DOWNLOAD_TIMEOUT='soon'", "unset it"),
    "timeout-infinite": ({"CIFAR10_DOWNLOAD_TIMEOUT": lambda w: "inf"}, "not a number of seconds in [0.01, 3600]"),
    "timeout-long-text": ({"CIFAR10_DOWNLOAD_TIMEOUT": lambda w: "9" * 5000}, "chars)", "fix or unset it"),
    "retries-50000": ({"CIFAR10_RETRY_DELAYS": lambda w: ",".join(["0"] * 50_000)},
                      "asks for 50000 retries; give at most 10"),
    "retry-negative": ({"CIFAR10_RETRY_DELAYS": lambda w: "1,-2"}, "CIFAR10_RETRY_DELAYS='1,-2'"),
    "cache-a-file": ({"CIFAR10_CACHE_DIR": lambda w: str(w / "cifar10" / "source.yaml")}, "download cache", "CIFAR10_CACHE_DIR"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fetch_refuses_the_environment_in_one_line(workdir, name):
    settings, *fragments = CASES[name]
    env = fetch_env(cache_dir=workdir / "cache")
    env["CIFAR10_DOWNLOAD_TIMEOUT"], env["CIFAR10_RETRY_DELAYS"] = "0.5", "0"
    env["https_proxy"] = env["http_proxy"] = "http://127.0.0.1:9"   # a download attempt fails at once
    env.update({key: make(workdir) for key, make in settings.items()})
    proc = fetch(workdir, env)
    line = assert_clean_failure(proc, "fetch", *fragments)
    assert len(line) < 800
    assert not (workdir / "data" / "raw").exists()
