"""The local HTTP server of tests/test_download.py, extended for the fault tests, and a way to
run the real fetch stage against it with short timeouts.

    server = FaultServer(body, ["500", "drop-half", "stall-after-2097152", "ok"])  # one step per request
    proc = fetch_process(workdir, cache)        # python -m stages.fetch, as dvc would run it
    server.close()

Plan steps are those of test_download.ArchiveServer ("ok" honours Range, "ignore-range",
"drop-half", "stall" after 1000 bytes, an HTTP status such as "404"), plus
"stall-after-<n>": like "ok" (Range included) but the body stops after n bytes and the
connection stays open, silent, until the server is closed: a slow server caught mid-file.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from tests.cifar_fixture import fetch_env
from tests.test_download import NAME, ArchiveServer, _Handler

__all__ = ["NAME", "FAST_DOWNLOAD_ENV", "FaultServer", "fetch_process", "start_fetch"]

# The fetch stage's download knobs (stages/fetch.py): 2 s without a byte is a timeout,
# 4 tries with no pause between them.
FAST_DOWNLOAD_ENV = {"CIFAR10_DOWNLOAD_TIMEOUT": "2", "CIFAR10_RETRY_DELAYS": "0,0,0"}


class _StallingWriter:
    """Passes the first `limit` body bytes to `raw`, then blocks until `release` is set."""

    def __init__(self, raw, limit: int, release: threading.Event) -> None:
        self.raw, self.left, self.release = raw, limit, release

    def write(self, data: bytes) -> int:
        if self.left > 0:
            self.raw.write(data[: self.left])
            self.raw.flush()
            self.left -= min(len(data), self.left)
        if self.left <= 0:
            self.release.wait(120)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


class _FaultHandler(_Handler):
    stall_after: int | None = None

    def do_GET(self) -> None:
        app = self.server.app
        with app.lock:
            step = app.plan[0] if app.plan else "ok"
            if step.startswith("stall-after-"):
                self.stall_after = int(step.removeprefix("stall-after-"))
                app.plan[0] = "ok"  # the base handler does Range and headers as for "ok"
        super().do_GET()

    def end_headers(self) -> None:
        super().end_headers()
        if self.stall_after is not None:
            self.wfile = _StallingWriter(self.wfile, self.stall_after, self.server.app.release)


class FaultServer(ArchiveServer):
    """ArchiveServer (127.0.0.1, ephemeral port, own thread) with the "stall-after-<n>" step."""

    def __init__(self, body: bytes, plan: list[str]) -> None:
        self.lock = threading.Lock()
        super().__init__(body, plan)
        self.httpd.RequestHandlerClass = _FaultHandler


def _env(cache: Path, extra: dict[str, str] | None) -> dict[str, str]:
    return {**fetch_env(cache_dir=cache), **FAST_DOWNLOAD_ENV, **(extra or {})}


def fetch_process(workdir: Path, cache: Path, env: dict[str, str] | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m stages.fetch` in `workdir` (its params.yaml names the URL) with the
    download cache `cache`, FAST_DOWNLOAD_ENV, and `env` on top; no CIFAR10_ARCHIVE."""
    return subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=_env(cache, env))


def start_fetch(workdir: Path, cache: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Like fetch_process, but started in the background (to be killed)."""
    return subprocess.Popen([sys.executable, "-m", "stages.fetch"], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=_env(cache, env))
