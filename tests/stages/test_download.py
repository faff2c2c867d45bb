"""stages._download and the fetch stage's download path, against a local HTTP server.

`serve(*plan)` starts an `ArchiveServer` (tests/helpers/http.py) for the fixture archive that
follows a per-request plan: "ok" (honours Range), "ignore-range", "drop-half" (announces the
full length, sends half, closes), "stall" (sends 1000 bytes, then nothing), "redirect" (302 to
the same file), or an HTTP status such as "404"; it also answers as an http proxy would. Retry
delays go to a recording `sleep`, so no test waits for them. How the stage reports download
failures, run as dvc runs it, is in tests/faults/test_network.py.
"""

from __future__ import annotations

import base64
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from stages._download import RETRY_DELAYS, DownloadError, cached_download
from stages.fetch import cache_dir
from tests.helpers.archives import make_arrays, run_fetch, write_source
from tests.helpers.files import listing, md5
from tests.helpers.http import NAME, ArchiveServer


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def archive_bytes(synthetic_archive) -> bytes:
    return synthetic_archive.path.read_bytes()


@pytest.fixture
def serve(archive_bytes):
    """serve(plan) -> a running ArchiveServer for the fixture archive; all shut down at teardown."""
    servers: list[ArchiveServer] = []

    def start(*plan: str) -> ArchiveServer:
        servers.append(ArchiveServer(archive_bytes, list(plan)))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def download(url: str, digest: str, cache: Path, **kw) -> tuple[tuple[Path, bool], list[float], list[str]]:
    """cached_download with recorded sleeps and log lines, short timeouts."""
    sleeps: list[float] = []
    logs: list[str] = []
    kw = {"sleep": sleeps.append, "log": logs.append, "connect_timeout": 5.0, "read_timeout": 5.0, **kw}
    return cached_download(url, digest, cache, **kw), sleeps, logs


# ---------------------------------------------------------------- cached_download


def test_downloads_verifies_and_reuses_the_cache(serve, archive_bytes, tmp_path):
    server = serve()
    (path, fresh), sleeps, _ = download(server.url(), md5(archive_bytes), tmp_path / "cache")
    assert fresh and path == tmp_path / "cache" / NAME and path.read_bytes() == archive_bytes
    assert [r["range"] for r in server.requests] == [None] and sleeps == []
    (again, fresh), _, _ = download(server.url(), md5(archive_bytes), tmp_path / "cache")
    assert again == path and not fresh
    assert len(server.requests) == 1  # the verified cache was used
    assert listing(tmp_path / "cache") == [NAME]


def test_resumes_after_a_dropped_connection(serve, archive_bytes, tmp_path):
    server = serve("drop-half", "ok")
    (path, _fresh), sleeps, logs = download(server.url(), md5(archive_bytes), tmp_path / "cache")
    half = len(archive_bytes) // 2
    assert path.read_bytes() == archive_bytes
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]
    assert server.requests[1]["sent"] == len(archive_bytes) - half  # only the missing half again
    assert sleeps == [RETRY_DELAYS[0]] and "connection closed after" in logs[0]
    assert listing(tmp_path / "cache") == [NAME]


def test_a_server_that_ignores_range_restarts_from_zero(serve, archive_bytes, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{NAME}.part").write_bytes(b"stale bytes from some other file")
    server = serve("ignore-range")
    (path, _), _sleeps, logs = download(server.url(), md5(archive_bytes), cache)
    assert path.read_bytes() == archive_bytes  # appending would have kept the stale prefix
    assert server.requests[0]["range"] == "bytes=32-" and len(server.requests) == 1
    assert any("ignored the Range request" in line for line in logs)


def test_a_stale_partial_file_that_fails_md5_is_restarted(serve, archive_bytes, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{NAME}.part").write_bytes(b"x" * 1000)  # resumed honestly, but wrong bytes
    server = serve()
    (path, _), _sleeps, _ = download(server.url(), md5(archive_bytes), cache)
    assert path.read_bytes() == archive_bytes
    assert [r["range"] for r in server.requests] == ["bytes=1000-", None]


def test_md5_mismatch_is_refused_and_not_kept(serve, archive_bytes, tmp_path):
    server = serve()
    wrong = md5(b"something else")
    with pytest.raises(DownloadError) as err:
        download(server.url(), wrong, tmp_path / "cache")
    assert server.url() in str(err.value) and md5(archive_bytes) in str(err.value) and wrong in str(err.value)
    assert listing(tmp_path / "cache") == []  # neither under the final name nor as .part
    assert len(server.requests) == 1  # a fresh download with the wrong md5 is not retried


def test_a_cached_file_with_the_wrong_md5_is_replaced(serve, archive_bytes, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / NAME).write_bytes(b"corrupted cache entry")
    server = serve()
    (path, fresh), _, logs = download(server.url(), md5(archive_bytes), cache)
    assert fresh and path.read_bytes() == archive_bytes and len(server.requests) == 1
    assert "does not match md5" in logs[0]


def test_http_404_fails_at_once_naming_the_url(serve, archive_bytes, tmp_path):
    server = serve("404")
    with pytest.raises(DownloadError) as err:
        download(server.url(), md5(archive_bytes), tmp_path / "cache")
    assert server.url() in str(err.value) and "HTTP 404" in str(err.value)
    assert len(server.requests) == 1


def test_redirects_are_followed_keeping_the_range(serve, archive_bytes, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{NAME}.part").write_bytes(archive_bytes[:1000])
    server = serve("redirect", "ok")
    (path, _), sleeps, _ = download(server.url(), md5(archive_bytes), cache)
    assert path.read_bytes() == archive_bytes and sleeps == []
    assert [r["range"] for r in server.requests] == ["bytes=1000-", "bytes=1000-"]
    assert server.requests[1]["sent"] == len(archive_bytes) - 1000


def test_a_redirect_loop_fails_at_once(serve, archive_bytes, tmp_path):
    server = serve(*["redirect"] * 20)
    with pytest.raises(DownloadError) as err:
        download(server.url(), md5(archive_bytes), tmp_path / "cache")
    assert f"download of {server.url()} failed: more than 10 redirects" in str(err.value)
    assert len(server.requests) == 11  # the request and 10 redirects, not tried again
    assert listing(tmp_path / "cache") == []


def test_http_500_is_retried_with_backoff(serve, archive_bytes, tmp_path):
    server = serve("500", "503", "ok")
    (path, _), sleeps, logs = download(server.url(), md5(archive_bytes), tmp_path / "cache")
    assert path.read_bytes() == archive_bytes
    assert sleeps == [1.0, 2.0] and len(server.requests) == 3
    assert "HTTP 500" in logs[0] and "try 2 of 4" in logs[0]


def test_persistent_http_500_gives_up_after_all_tries(serve, archive_bytes, tmp_path):
    server = serve("500", "500", "500", "500", "ok")
    sleeps: list[float] = []
    with pytest.raises(DownloadError) as err:
        download(server.url(), md5(archive_bytes), tmp_path / "cache", sleep=sleeps.append)
    assert sleeps == [1.0, 2.0, 4.0] and len(server.requests) == 4
    assert "after 4 tries" in str(err.value) and "HTTP 500" in str(err.value) and server.url() in str(err.value)


def test_a_stalled_server_times_out(serve, archive_bytes, tmp_path):
    server = serve("stall", "stall")
    with pytest.raises(DownloadError) as err:
        download(server.url(), md5(archive_bytes), tmp_path / "cache", read_timeout=0.3, retry_delays=(0.0,))
    assert "timed out" in str(err.value) and "0.3 s" in str(err.value) and "after 2 tries" in str(err.value)
    assert NAME not in listing(tmp_path / "cache")


def test_connection_refused_names_the_url(archive_bytes, tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{NAME}"
    with pytest.raises(DownloadError) as err:
        download(url, md5(archive_bytes), tmp_path / "cache", retry_delays=(0.0,))
    assert url in str(err.value) and "refused" in str(err.value).lower()


def test_http_proxy_from_the_environment_is_used(serve, archive_bytes, tmp_path, monkeypatch):
    proxy = serve()  # answers `GET http://<host>/NAME` as a forwarding proxy would
    monkeypatch.setenv("http_proxy", f"http://user:p%40ss@{proxy.url().split('/')[2]}")
    url = f"http://archive.invalid/{NAME}"  # not in no_proxy; resolvable by nobody
    (path, _), _, _ = download(url, md5(archive_bytes), tmp_path / "cache")
    assert path.read_bytes() == archive_bytes and [r["path"] for r in proxy.requests] == [url]
    assert proxy.requests[0]["proxy_authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()


def test_no_proxy_hosts_are_fetched_directly(serve, archive_bytes, tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    server = serve()  # on 127.0.0.1, which no_proxy lists (autouse fixture)
    (path, _), sleeps, _ = download(server.url(), md5(archive_bytes), tmp_path / "cache")
    assert path.read_bytes() == archive_bytes and sleeps == [] and len(server.requests) == 1


@pytest.mark.parametrize("proxy", ["socks5://127.0.0.1:1080", "http://host:port", "http://[::1"])
def test_an_unusable_proxy_setting_is_named(archive_bytes, tmp_path, monkeypatch, proxy):
    monkeypatch.setenv("http_proxy", proxy)
    url = f"http://archive.invalid/{NAME}"
    with pytest.raises(DownloadError) as err:
        download(url, md5(archive_bytes), tmp_path / "cache")
    assert f"download of {url} failed: http_proxy" in str(err.value) and "unset it" in str(err.value)


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/x", "http://127.0.0.1:99999/x", "http://[::1/x"])
def test_a_redirect_to_an_unusable_url_fails_in_one_line(serve, archive_bytes, tmp_path, location):
    server = serve(f"redirect:{location}")
    with pytest.raises(DownloadError) as err:
        download(server.url(), md5(archive_bytes), tmp_path / "cache")
    assert f"download of {server.url()} failed: it was sent to a URL that cannot be used" in str(err.value)
    assert "\n" not in str(err.value) and len(server.requests) == 1


def test_progress_bar_only_on_a_terminal(serve, archive_bytes, tmp_path, capsys, monkeypatch):
    server = serve()
    download(server.url(), md5(archive_bytes), tmp_path / "a")
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    download(server.url(), md5(archive_bytes), tmp_path / "b")
    assert "100%" in capsys.readouterr().err


def test_cache_dir_resolution(tmp_path):
    assert cache_dir({"CIFAR10_CACHE_DIR": "/x/y", "XDG_CACHE_HOME": "/c"}) == Path("/x/y")
    assert cache_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/cifar10-numpy")
    assert cache_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "cifar10-numpy"
    assert cache_dir({}) == Path.home() / ".cache" / "cifar10-numpy"


# ---------------------------------------------------------------- the stage, downloading


def stage_dir(tmp_path: Path, synthetic_archive, url: str, digest: str, name: str = "run") -> Path:
    run = tmp_path / name
    run.mkdir()
    write_source(run, synthetic_archive.fingerprints, url=url, md5=digest)
    return run


def test_stage_downloads_once_then_uses_the_cache(serve, synthetic_archive, archive_bytes, tmp_path):
    server = serve()
    cache = tmp_path / "cache"
    first = stage_dir(tmp_path, synthetic_archive, server.url(), md5(archive_bytes), "first")
    proc = run_fetch(first, cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    assert f"downloaded {server.url()}" in proc.stdout and len(server.requests) == 1
    np.testing.assert_array_equal(np.load(first / "data/raw/train_images.npy"), make_arrays()["train_images"])
    assert listing(cache) == [NAME]

    second = stage_dir(tmp_path, synthetic_archive, server.url(), md5(archive_bytes), "second")
    proc = run_fetch(second, cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    assert "cached copy" in proc.stdout and len(server.requests) == 1  # no new request
    for out in (first / "data/raw").iterdir():
        assert out.read_bytes() == (second / "data/raw" / out.name).read_bytes()
