"""The real fetch stage downloading from a local HTTP server that misbehaves.

Each case starts from a folder where data/raw/ was already fetched (from the local archive),
points cifar10/source.yaml's url at a FaultServer on 127.0.0.1 (its md5 = the fixture archive's
md5, its sha256 = the fixture's fingerprints), gives the stage an empty download cache
(CIFAR10_CACHE_DIR) and short timeouts / no retry pauses (CIFAR10_DOWNLOAD_TIMEOUT,
CIFAR10_RETRY_DELAYS), and runs `python -m stages.fetch`. A failure must exit 1 with one
`fetch: error:` line naming the URL and the cause and pointing at CIFAR10_ARCHIVE, no traceback,
data/ exactly as before, and no file under the archive's final name in the cache (a `.part`
file may stay: it is what the next run resumes, never trusted as the archive).
A recovery must end with the archive's exact bytes in the cache and data/raw/ equal to the
arrays the fixture wrote.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.archives import make_arrays, run_fetch, write_source
from tests.helpers.files import assert_clean_failure, listing, md5, snapshot
from tests.helpers.http import NAME, FaultServer, fetch_process

pytestmark = pytest.mark.slow

LOCAL_HINT = "to use a local copy instead, set CIFAR10_ARCHIVE="


@pytest.fixture(scope="module")
def fetched(synthetic_archive, tmp_path_factory) -> Path:
    """A folder whose data/raw/ holds the fixture's arrays (fetched from the local archive)."""
    base = tmp_path_factory.mktemp("faults-network") / "fetched"
    base.mkdir()
    write_source(base, synthetic_archive.fingerprints)
    assert run_fetch(base, archive=synthetic_archive.path).returncode == 0
    return base


@pytest.fixture
def servers():
    started: list[FaultServer] = []
    yield started
    for server in started:
        server.close()


@pytest.fixture
def setup(fetched, synthetic_archive, servers, tmp_path):
    """setup(*plan, md5=...) -> (workdir with data/raw/ and params for the server, server, cache)."""
    body = synthetic_archive.path.read_bytes()

    def make(*plan: str, digest: str | None = None, url: str | None = None):
        server = FaultServer(body, list(plan))
        servers.append(server)
        run = tmp_path / "run"
        shutil.copytree(fetched, run, symlinks=True)
        write_source(run, synthetic_archive.fingerprints,
                           url=url or server.url(), md5=digest or md5(body))
        return run, server, tmp_path / "cache"
    return make


def assert_data_is_the_fixture(run: Path) -> None:
    want = make_arrays()
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(np.load(run / "data/raw" / f"{key}.npy"), want[key], err_msg=key)
    assert sorted(p.name for p in (run / "data").iterdir()) == ["raw"]  # no temporary folder left


# ---------------------------------------------------------------- failures


def test_http_404_stops_at_once_naming_the_url(setup):
    run, server, cache = setup("404")
    before = snapshot(run, ("data",))
    proc = fetch_process(run, cache)
    assert_clean_failure(proc, "fetch", f"download of {server.url()} failed: HTTP 404", LOCAL_HINT)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # no retry notice before it
    assert len(server.requests) == 1  # a 404 is not retried
    assert snapshot(run, ("data",)) == before and listing(cache) == []


def test_http_500_on_every_try_gives_up_after_four(setup):
    run, server, cache = setup("500", "500", "500", "500", "ok")
    before = snapshot(run, ("data",))
    proc = fetch_process(run, cache)
    assert_clean_failure(proc, "fetch", f"download of {server.url()} failed after 4 tries: HTTP 500", LOCAL_HINT)
    assert len(server.requests) == 4 and proc.stderr.count("retrying in 0 s") == 3
    assert snapshot(run, ("data",)) == before and NAME not in listing(cache)


def test_stalled_server_times_out_with_a_clear_error(setup):
    run, server, cache = setup("stall", "stall", "stall", "stall")
    before = snapshot(run, ("data",))
    start = time.monotonic()
    proc = fetch_process(run, cache, env={"CIFAR10_DOWNLOAD_TIMEOUT": "0.5", "CIFAR10_RETRY_DELAYS": "0"})
    elapsed = time.monotonic() - start
    assert_clean_failure(proc, "fetch", f"download of {server.url()} failed after 2 tries: timed out",
                         "no data for 0.5 s", LOCAL_HINT)
    assert len(server.requests) == 2 and elapsed < 30  # the server would stall for 120 s
    assert snapshot(run, ("data",)) == before and NAME not in listing(cache)


def test_wrong_md5_is_refused_and_the_file_is_not_kept(setup, synthetic_archive):
    wrong = md5(b"not the archive")
    run, server, cache = setup(digest=wrong)
    before = snapshot(run, ("data",))
    proc = fetch_process(run, cache)
    actual = md5(synthetic_archive.path.read_bytes())
    assert_clean_failure(proc, "fetch", f"download of {server.url()} gave a file with md5 {actual}, expected {wrong}",
                         "cifar10/source.yaml md5", "the file was deleted", LOCAL_HINT)
    assert listing(cache) == []  # neither under its final name nor as .part
    assert snapshot(run, ("data",)) == before
    # and the next run with the same params does not trust anything left behind
    proc = fetch_process(run, cache)
    assert proc.returncode == 1 and len(server.requests) == 2


def test_connection_refused_names_the_url(setup):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{NAME}"
    run, _, cache = setup(url=url)
    before = snapshot(run, ("data",))
    proc = fetch_process(run, cache, env={"CIFAR10_RETRY_DELAYS": "0"})
    assert_clean_failure(proc, "fetch", f"download of {url} failed after 2 tries: Connection refused", LOCAL_HINT)
    assert snapshot(run, ("data",)) == before


def test_a_bad_timeout_setting_is_named(setup):
    run, server, cache = setup()
    proc = fetch_process(run, cache, env={"CIFAR10_DOWNLOAD_TIMEOUT": "soon"})
    assert_clean_failure(proc, "fetch", "CIFAR10_DOWNLOAD_TIMEOUT='soon' is not a number of seconds", "unset it")
    assert server.requests == []


# ---------------------------------------------------------------- recoveries


def test_http_500_then_success_is_retried(setup, synthetic_archive):
    run, server, cache = setup("500", "503", "ok")
    proc = fetch_process(run, cache)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "HTTP 500" in proc.stderr and "try 2 of 4" in proc.stderr and "HTTP 503" in proc.stderr
    assert [r["range"] for r in server.requests] == [None, None, None]
    assert listing(cache) == [NAME] and (cache / NAME).read_bytes() == synthetic_archive.path.read_bytes()
    assert_data_is_the_fixture(run)


def test_connection_dropped_mid_file_resumes_where_it_stopped(setup, synthetic_archive):
    body = synthetic_archive.path.read_bytes()
    half = len(body) // 2
    run, server, cache = setup("drop-half", "ok")
    proc = fetch_process(run, cache)
    assert proc.returncode == 0, proc.stderr
    assert f"connection closed after {half} of {len(body)} bytes" in proc.stderr
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]
    assert server.requests[1]["sent"] == len(body) - half  # only the missing part came again
    assert listing(cache) == [NAME] and md5((cache / NAME).read_bytes()) == md5(body)
    assert_data_is_the_fixture(run)
