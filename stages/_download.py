"""Download one file over HTTP(S) into a cache folder, verified by md5, resumable.

    path, downloaded = cached_download(url, md5, cache_dir)

Cache layout, for a URL ending in `name`:
    <cache_dir>/<name>        complete file whose md5 matched (reused, after re-checking its md5)
    <cache_dir>/<name>.part   bytes received so far; the next try resumes it with an HTTP Range
                              request (a server that ignores Range sends the whole file again)

A file whose md5 does not match is deleted, never renamed to `name`. Network errors, timeouts,
connections dropped mid-file and HTTP 408/425/429/5xx are retried after `retry_delays`; other HTTP
errors fail at once. Failures raise `DownloadError` (a StageError) naming the URL and the cause.
Two runs sharing one cache folder at the same time are not supported.

urllib3 (installed with dvc) does the HTTP: connections and TLS, the connect and per-read
timeouts (`Timeout`), redirects (`Retry(redirect=...)`) and the body streamed CHUNK bytes at a
time (`preload_content=False`). What stays ours, and why:
- the tries (`cached_download`'s loop): each try resumes where the last one stopped, so it is a new
  request with a new Range header, and a connection that drops or stalls in the middle of the body
  is retried like one refused. urllib3's Retry re-sends the same request and only for failures
  before the body; its pauses are 0, 2f, 4f, ... (not the 1, 2, 4 s default nor the list in
  CIFAR10_RETRY_DELAYS) through time.sleep, silently. So Retry here follows redirects and retries
  nothing else, and one loop counts every try, says `...; retrying in 1 s (try 2 of 4)` and sleeps
  through `sleep` (tests record the pauses instead of waiting).
- resume (.part, Range, checking Content-Range) and md5: urllib3 knows neither.
- the one-line causes ("timed out after 1024 of 2048 bytes (no data for 60 s)"): urllib3's errors
  are nested wrappers (MaxRetryError > NewConnectionError > ConnectionRefusedError).
- proxies: urllib3 reads no environment variables, so http_proxy, https_proxy and no_proxy are read
  with urllib.request (as the urllib opener did before), and a ProxyManager is used if they apply.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError, LocationValueError, MaxRetryError, ProxySchemeUnknown, ResponseError

from stages._io import StageError
from stages.paths import SOURCE_FILE

CONNECT_TIMEOUT = 15.0        # seconds to open a connection
READ_TIMEOUT = 60.0           # seconds without a single byte before a read is abandoned
RETRY_DELAYS = (1.0, 2.0, 4.0)  # seconds to wait before the 2nd, 3rd and 4th try
CHUNK = 1 << 20               # bytes per read/write
RETRY_STATUSES = {408, 425, 429}  # and every 5xx
MAX_REDIRECTS = 10            # as many as urllib followed
HEADERS = {"User-Agent": "cifar10-numpy-fetch", "Accept-Encoding": "identity"}
# urllib3 follows redirects and hands every failure straight back to cached_download's loop
# (total=None: only these counts apply; no status is retried, Retry-After or not).
FOLLOW_REDIRECTS = urllib3.Retry(total=None, connect=0, read=0, other=0, status=0, redirect=MAX_REDIRECTS)


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

    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    tries = len(retry_delays) + 1
    resumed = False  # whether .part holds bytes from an earlier try or run
    last = ""
    with _pool_manager(url) as pool:
        for attempt in range(tries):
            if attempt:
                delay = retry_delays[attempt - 1]
                log(f"{last}; retrying in {delay:g} s (try {attempt + 1} of {tries})")
                sleep(delay)
            try:
                resumed |= _fetch_into(pool, url, part, timeout, progress, log)
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
                                f"({SOURCE_FILE} md5); the file was deleted")
    raise DownloadError(f"download of {url} failed after {tries} tries: {last}")


def _fetch_into(pool: urllib3.PoolManager, url: str, part: Path, timeout: urllib3.Timeout,
                progress: bool, log: Callable[[str], None]) -> bool:
    """One HTTP request that appends to (or restarts) `part` until the body ends.

    Returns True if it appended to bytes already in `part`. Raises _Retry for transient
    failures and DownloadError for final ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {**HEADERS, "Range": f"bytes={offset}-"} if offset else HEADERS
    try:
        response = pool.request("GET", url, headers=headers, timeout=timeout,
                                preload_content=False, decode_content=False)
    except MaxRetryError as err:
        if isinstance(err.reason, ResponseError):  # the one thing urllib3 retries: redirects
            raise DownloadError(f"download of {url} failed: more than {MAX_REDIRECTS} redirects") from None
        raise _Retry(_describe(err, "while connecting or waiting for the response",
                               f"connect timeout {timeout.connect_timeout:g} s, "
                               f"read timeout {timeout.read_timeout:g} s")) from None
    except (LocationValueError, ValueError) as err:   # a URL urllib3 cannot use: a bad redirect
        raise DownloadError(f"download of {url} failed: it was sent to a URL that cannot be used ({err}); "
                            "the server's redirect is broken") from None

    with response:
        what = f"HTTP {response.status} {response.reason}"
        if response.status == 416 and offset:  # our .part is longer than the file: start over
            part.unlink()
            raise _Retry(f"{what} for a partial download of {offset} bytes; starting over")
        if response.status in RETRY_STATUSES or response.status >= 500:
            raise _Retry(what)
        if not 200 <= response.status < 300:
            raise DownloadError(f"download of {url} failed: {what}")
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
                for chunk in response.stream(CHUNK):  # HTTPError from reading; OSError from f passes
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except HTTPError as err:
                received = f"{written} of {total}" if total is not None else f"{written}"
                raise _Retry(_describe(err, f"after {received} bytes",
                                       f"no data for {timeout.read_timeout:g} s")) from None
            finally:
                f.flush()
                os.fsync(f.fileno())
    if total is not None and written != total:  # e.g. a 206 shorter than its Content-Range says
        raise _Retry(f"connection closed after {written} of {total} bytes")
    return mode == "ab"


def _describe(err: BaseException, when: str, timeouts: str) -> str:
    """One line for a network error, e.g. 'timed out after 1024 bytes (no data for 60 s)'."""
    reason = _innermost(err)
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"timed out {when} ({timeouts})"
    if isinstance(reason, http.client.IncompleteRead):
        return f"connection closed {when}"
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return f"{text} ({when})"


def _innermost(err: BaseException) -> BaseException:
    """The socket or http.client error inside urllib3's wrappers: they raise `from` it
    (MaxRetryError, NewConnectionError, ReadTimeoutError) or hold it as an argument (ProtocolError)."""
    while inner := err.__cause__ or next((a for a in err.args if isinstance(a, BaseException)), None):
        err = inner
    return err


def _pool_manager(url: str) -> urllib3.PoolManager:
    """urllib3's PoolManager for `url`, or its ProxyManager if http_proxy/https_proxy name a proxy
    for it and no_proxy does not exempt its host.

    urllib3 reads no environment variables; urllib.request.getproxies() and proxy_bypass() are
    the standard library's reading of them (the one urllib's opener used), and a user:password
    in the proxy URL is sent as Proxy-Authorization, as urllib did. Unlike urllib, which chose
    again for each redirect's host, a redirect goes through the same proxy (or none).
    """
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return urllib3.PoolManager(retries=FOLLOW_REDIRECTS)
    try:
        proxy_url = urllib3.util.parse_url(proxy if "://" in proxy else f"http://{proxy}")  # urllib took host:port
        auth = urllib.parse.unquote(proxy_url.auth) if proxy_url.auth else None
        return urllib3.ProxyManager(proxy_url._replace(auth=None).url, retries=FOLLOW_REDIRECTS,
                                    proxy_headers=urllib3.make_headers(proxy_basic_auth=auth) if auth else None)
    except (ProxySchemeUnknown, LocationValueError) as err:
        raise DownloadError(f"download of {url} failed: {parts.scheme}_proxy: {err}; fix or unset it") from None
