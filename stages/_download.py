"""Download one file over HTTP(S) into a cache folder, verified by md5, resumable.

    path, downloaded = cached_download(url, md5, cache_dir)

Cache layout, for a URL ending in `name`:
    <cache_dir>/<name>        complete file whose md5 matched (reused, after re-checking its md5)
    <cache_dir>/<name>.part   bytes received so far; the next try resumes it with an HTTP Range
                              request (a server that ignores Range sends the whole file again)

A file whose md5 does not match is deleted, never renamed to `name`. Network errors, timeouts,
connections dropped mid-file and HTTP 408/429/5xx are retried after `retry_delays`; other HTTP
errors fail at once. Failures raise `DownloadError` (a StageError) naming the URL and the cause.
Two runs sharing one cache folder at the same time are not supported.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from stages._io import StageError

CONNECT_TIMEOUT = 15.0        # seconds to open a connection
READ_TIMEOUT = 60.0           # seconds without a single byte before a read is abandoned
RETRY_DELAYS = (1.0, 2.0, 4.0)  # seconds to wait before the 2nd, 3rd and 4th try
CHUNK = 1 << 20               # bytes per read/write
RETRY_STATUSES = {408, 425, 429}  # and every 5xx


class DownloadError(StageError):
    """The download failed for good; the message names the URL and the cause."""


class _Retry(Exception):
    """A failure worth another try (network, timeout, dropped connection, 5xx)."""


def md5_of(path: Path) -> str:
    """md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cached_download(url: str, md5: str, cache_dir: Path, *,
                    connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                    retry_delays: Sequence[float] = RETRY_DELAYS,
                    sleep: Callable[[float], None] = time.sleep,
                    progress: bool | None = None,
                    log: Callable[[str], None] | None = None) -> tuple[Path, bool]:
    """Return (path of the verified file in `cache_dir`, whether it was downloaded now).

    Tries up to len(retry_delays) + 1 times, calling `sleep(delay)` before each retry.
    `progress`: show a tqdm bar on stderr (default: only when stderr is a terminal).
    `log`: where retry notices go (default: stderr).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    md5 = md5.lower()
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "download"
    final = Path(cache_dir) / name
    part = final.with_name(name + ".part")
    if final.is_file():
        if md5_of(final) == md5:
            return final, False
        log(f"cached {final} does not match md5 {md5}; deleting it and downloading again")
        final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()

    tries = len(retry_delays) + 1
    resumed = False  # whether .part holds bytes from an earlier try or run
    last = ""
    for attempt in range(tries):
        if attempt:
            delay = retry_delays[attempt - 1]
            log(f"{last}; retrying in {delay:g} s (try {attempt + 1} of {tries})")
            sleep(delay)
        try:
            resumed |= _fetch_into(url, part, connect_timeout, read_timeout, progress, log)
        except _Retry as err:
            last = str(err)
            continue
        got = md5_of(part)
        if got == md5:
            os.replace(part, final)
            return final, True
        part.unlink()  # a file with the wrong md5 is never kept
        if resumed:  # the earlier bytes may be stale: start over
            resumed, last = False, f"md5 {got} after resuming a partial download, expected {md5}"
            continue
        raise DownloadError(f"download of {url} gave a file with md5 {got}, expected {md5} "
                            "(cifar10/source.yaml md5); the file was deleted")
    raise DownloadError(f"download of {url} failed after {tries} tries: {last}")


def _fetch_into(url: str, part: Path, connect_timeout: float, read_timeout: float,
                progress: bool, log: Callable[[str], None]) -> bool:
    """One HTTP request that appends to (or restarts) `part` until the body ends.

    Returns True if it appended to bytes already in `part`. Raises _Retry for transient
    failures and DownloadError for final ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cifar10-numpy-fetch", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _opener(read_timeout).open(request, timeout=connect_timeout)
    except urllib.error.HTTPError as err:
        err.close()
        what = f"HTTP {err.code} {err.reason}"
        if err.code == 416 and offset:  # our .part is longer than the file: start over
            part.unlink()
            raise _Retry(f"{what} for a partial download of {offset} bytes; starting over") from None
        if err.code in RETRY_STATUSES or err.code >= 500:
            raise _Retry(what) from None
        raise DownloadError(f"download of {url} failed: {what}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _Retry(_describe(err, "while connecting or waiting for the response",
                               f"connect timeout {connect_timeout:g} s, read timeout {read_timeout:g} s")) from None

    with response:
        total = None
        if offset and response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink()
                raise _Retry(f"server answered Range bytes={offset}- with "
                             f"{response.headers.get('Content-Range')!r}; starting over")
            total = int(match.group(3)) if match.group(3) != "*" else None
            mode = "ab"
        else:
            if offset:
                log(f"server ignored the Range request for {url}; downloading from the start")
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        if total is None and length and length.isdigit():
            total = offset + int(length)

        from tqdm import tqdm  # installed with dvc

        written = offset
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=part.name.removesuffix(".part"),
                                          disable=not progress, file=sys.stderr) as bar:
            try:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise _Retry(_describe(err, f"after {written} bytes", f"no data for {read_timeout:g} s")) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            finally:
                f.flush()
                os.fsync(f.fileno())
    if total is not None and written != total:
        raise _Retry(f"connection closed after {written} of {total} bytes")
    return mode == "ab"


def _describe(err: BaseException, when: str, timeouts: str) -> str:
    """One line for a network error, e.g. 'timed out after 1024 bytes (no data for 60 s)'."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"timed out {when} ({timeouts})"
    if isinstance(reason, http.client.IncompleteRead):
        return f"connection closed {when}"
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return f"{text} ({when})"


def _opener(read_timeout: float) -> urllib.request.OpenerDirector:
    """urllib opener whose connections use `timeout` to connect, then `read_timeout` per read."""

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            self.sock.settimeout(read_timeout)

    class SecureConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            self.sock.settimeout(read_timeout)

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(Connection, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(SecureConnection, req, context=ssl.create_default_context())

    return urllib.request.build_opener(Handler, SecureHandler)
