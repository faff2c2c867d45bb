"""A local HTTP server that serves an archive and misbehaves on request, and a way to run the
real fetch stage against it with short timeouts.

    server = ArchiveServer(body, ["drop-half", "ok"])  # one plan step per request
    server.url()                                      # http://127.0.0.1:<port>/cifar-10-python.tar.gz
    server.requests                                   # [{"path", "range", "proxy_authorization", "behaviour", "sent"}, ...]
    server = FaultServer(body, ["500", "stall-after-2097152", "ok"])
    proc = fetch_process(workdir, cache)              # python -m stages.fetch, as dvc would run it
    server.close()

Both servers listen on 127.0.0.1 (ephemeral port, own thread) and serve `body` under
/cifar-10-python.tar.gz (NAME), taking one step of the plan per request (then "ok"):
"ok" (honours Range), "ignore-range", "drop-half" (announces the full length, sends half,
closes), "stall" (sends 1000 bytes, then nothing), "redirect" (302 to /NAME; "redirect:<location>" to that), or an HTTP status
such as "404". A request in a proxy's form (`GET http://<any host>/NAME`) is served the same,
so a server can stand in for an http proxy.
FaultServer adds "stall-after-<n>": like "ok" (Range included) but the body stops after n
bytes and the connection stays open, silent, until the server is closed: a slow server caught
mid-file.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

from tests.helpers.archives import fetch_env

__all__ = ["FAST_DOWNLOAD_ENV", "NAME", "ArchiveServer", "FaultServer", "fetch_process", "start_fetch"]

NAME = "cifar-10-python.tar.gz"  # the file the servers serve, at /NAME

# The fetch stage's download knobs (stages/fetch.py): 2 s without a byte is a timeout,
# 4 tries with no pause between them.
FAST_DOWNLOAD_ENV = {"CIFAR10_DOWNLOAD_TIMEOUT": "2", "CIFAR10_RETRY_DELAYS": "0,0,0"}


class ArchiveServer:
    """Serves `body` as /NAME on 127.0.0.1 (ephemeral port, own thread), one `plan` step per
    request; `requests` records each one. Call close() when done."""

    def __init__(self, body: bytes, plan: list[str]) -> None:
        self.body, self.plan = body, list(plan)
        self.requests: list[dict] = []
        self.release = threading.Event()  # ends stalled responses at teardown
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.app = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str = NAME) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        app: ArchiveServer = self.server.app
        behaviour = app.plan.pop(0) if app.plan else "ok"
        record = {"path": self.path, "range": self.headers.get("Range"),
                  "proxy_authorization": self.headers.get("Proxy-Authorization"), "behaviour": behaviour, "sent": 0}
        app.requests.append(record)
        if behaviour.isdigit():
            self.send_error(int(behaviour))
            return
        if urllib.parse.urlsplit(self.path).path != f"/{NAME}":
            self.send_error(404)
            return
        if behaviour.startswith("redirect"):   # "redirect" (to /NAME), or "redirect:<location>"
            self.send_response(302)
            self.send_header("Location", behaviour.partition(":")[2] or f"/{NAME}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, start = app.body, 0
        match = re.fullmatch(r"bytes=(\d+)-", record["range"] or "")
        if match and behaviour != "ignore-range":
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if behaviour == "stall":
            self.wfile.write(payload[:1000])
            self.wfile.flush()
            app.release.wait(10)
            return
        if behaviour == "drop-half":
            payload = payload[: len(payload) // 2]
        self.wfile.write(payload)
        record["sent"] = len(payload)


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
