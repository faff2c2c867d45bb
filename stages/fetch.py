"""fetch: get the CIFAR-10 python archive and decode it into plain arrays under data/raw/.

    python -m stages.fetch                                       # download (or reuse the cache)
    CIFAR10_ARCHIVE=../shared/cifar10/cifar-10-python.tar.gz python -m stages.fetch   # offline

Reads the dataset's identity from cifar10/source.yaml: `url`, `md5` (of the downloaded archive)
and `sha256` (of the decoded arrays); it has no params. Sources:
- CIFAR10_ARCHIVE=<file>: a local copy or mirror, used as is (it may be repackaged, so its md5
  is not checked); nothing is downloaded.
- otherwise `url`, downloaded once into the user cache ($CIFAR10_CACHE_DIR, else
  $XDG_CACHE_HOME/cifar10-numpy, else ~/.cache/cifar10-numpy) and checked against `md5`.
Whatever the source, the decoded arrays must match `sha256`, so the output is the same.
Download knobs (tests shorten them): CIFAR10_DOWNLOAD_TIMEOUT=<seconds> to connect and to wait
for the next byte (default 15 and 60), CIFAR10_RETRY_DELAYS=<s,s,...> the pause before each
retry (default 1,2,4; "0" = a single retry, at once). Unset or empty = the default.

Writes data/raw/ as a whole (or not at all): train_images.npy uint8 (50000, 3072),
train_labels.npy int64 (50000,), test_images.npy uint8 (10000, 3072), test_labels.npy int64
(10000,), class_names.json (the 10 names). No pickle leaves this stage.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from pathlib import Path

from cifar10 import archive
from stages._download import CONNECT_TIMEOUT, READ_TIMEOUT, RETRY_DELAYS, cached_download
from stages._io import StageError, atomic_dir, quote, run_stage, save_npy, write_json
from stages.params import Hex, Mapping, Param, Section, Url, load
from stages.paths import RAW, RAW_CLASS_NAMES, SOURCE_FILE, raw_arrays

ARCHIVE_ENV = "CIFAR10_ARCHIVE"  # a local archive to use instead of downloading
CACHE_ENV = "CIFAR10_CACHE_DIR"  # overrides the download cache folder (tests use it)
TIMEOUT_ENV = "CIFAR10_DOWNLOAD_TIMEOUT"  # seconds to connect and between bytes (tests shorten it)
RETRY_ENV = "CIFAR10_RETRY_DELAYS"  # comma-separated seconds before each retry (tests use 0)
MAX_RETRIES = 10
LOCAL_HINT = (f"to use a local copy instead, set {ARCHIVE_ENV}=/path/to/cifar-10-python.tar.gz "
              "(e.g. ../shared/cifar10/cifar-10-python.tar.gz)")

SOURCE = Section("cifar10", (
    Param("url", Url(), "where to download cifar-10-python.tar.gz"),
    Param("md5", Hex(32), "md5 of the downloaded archive"),
    Param("sha256", Mapping(archive.FINGERPRINT_KEYS, Hex(64)), "sha256 of the decoded arrays, whatever the source"),
))


def cache_dir(environ: os._Environ | dict = os.environ) -> Path:
    """The user-level download cache: $CIFAR10_CACHE_DIR, $XDG_CACHE_HOME/cifar10-numpy or ~/.cache/..."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    xdg = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "cifar10-numpy"
    try:
        return Path.home() / ".cache" / "cifar10-numpy"
    except RuntimeError:   # no HOME and no password entry (some containers)
        raise StageError(f"no home folder for the download cache (HOME is unset); set {CACHE_ENV} to a "
                         f"writable folder, or {LOCAL_HINT}") from None


def download_settings(environ: os._Environ | dict = os.environ) -> dict:
    """cached_download keywords from $CIFAR10_DOWNLOAD_TIMEOUT and $CIFAR10_RETRY_DELAYS."""
    def seconds(name: str, text: str, low: float) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= 3600:  # also refuses nan and inf
            raise StageError(f"{name}={quote(environ[name])} is not a number of seconds in "
                             f"[{low:g}, 3600]; fix or unset it")
        return value

    settings: dict = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
                      "retry_delays": RETRY_DELAYS}
    if environ.get(TIMEOUT_ENV):
        timeout = seconds(TIMEOUT_ENV, environ[TIMEOUT_ENV], 0.01)
        settings.update(connect_timeout=timeout, read_timeout=timeout)
    if environ.get(RETRY_ENV):
        parts = [t for t in environ[RETRY_ENV].replace(" ", "").split(",") if t]
        if len(parts) > MAX_RETRIES:
            raise StageError(f"{RETRY_ENV}={quote(environ[RETRY_ENV])} asks for {len(parts)} retries; give at most "
                             f"{MAX_RETRIES} delays, or unset it")
        settings["retry_delays"] = tuple(seconds(RETRY_ENV, t, 0) for t in parts)
    return settings


def locate_archive(url: str, md5: str) -> tuple[Path, str]:
    """Return (archive path, a few words on where it came from)."""
    local = os.environ.get(ARCHIVE_ENV)
    if local:
        path = Path(local)
        reason = ""
        try:
            is_file = path.is_file()
        except OSError as err:   # e.g. a name too long for the file system
            is_file, reason = False, f" ({err.strerror})"
        if not is_file:
            raise StageError(f"{ARCHIVE_ENV}={quote(local, 200, bare=True)}: no such file{reason}; point it at a copy of "
                             f"cifar-10-python.tar.gz, or unset it to download {url}")
        return path, f"local archive {path} ({ARCHIVE_ENV})"
    cache = cache_dir()
    settings = download_settings()
    try:
        path, downloaded = cached_download(url, md5, cache, **settings)
    except StageError as err:
        raise StageError(f"{err}; {LOCAL_HINT}") from None
    except OSError as err:
        raise StageError(f"download cache {cache}: {err}; set {CACHE_ENV} to a writable folder, "
                         f"or {LOCAL_HINT}") from None
    return path, f"{'downloaded' if downloaded else 'cached copy of'} {url} ({path})"


def return_freed_memory_to_the_system() -> None:
    """glibc keeps freed blocks of up to ~32 MB in the heap once one such block was freed (its
    mmap threshold adapts); the decoded batches are such blocks, so fetch fixes the threshold
    at 1 MiB: each batch's memory goes back as soon as it is copied (benchmarks/bench_memory.py
    measures the peak). Elsewhere (macOS, musl, Windows) nothing is done."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).mallopt(-3, 1 << 20)   # M_MMAP_THRESHOLD


def main() -> None:
    return_freed_memory_to_the_system()
    start = time.monotonic()
    values = load(SOURCE, SOURCE_FILE)
    url, md5, expected = values["url"], values["md5"], values["sha256"]
    path, source = locate_archive(url, md5)

    try:
        arrays = archive.read_archive(path)
    except archive.CifarFormatError as err:
        raise StageError(f"{path}: {err}; use an intact cifar-10-python.tar.gz") from None
    except OSError as err:
        raise StageError(f"cannot read {path}: {err.strerror or err}") from None

    wrong = archive.fingerprint_mismatches(archive.fingerprints(arrays), expected)
    if wrong:
        raise StageError(
            f"{path}: decoded {', '.join(wrong)} differ from {SOURCE_FILE} sha256; this is not "
            "the CIFAR-10 data the pipeline expects (a modified or damaged copy?): use an unmodified "
            f"cifar-10-python.tar.gz, or update {SOURCE_FILE} only if you mean to change the dataset")

    try:
        with atomic_dir(RAW) as tmp:
            for split, images, labels in (("train", arrays.train_images, arrays.train_labels),
                                          ("test", arrays.test_images, arrays.test_labels)):
                images_path, labels_path = raw_arrays(split)
                save_npy(tmp / images_path.name, images)
                save_npy(tmp / labels_path.name, labels)
            write_json(tmp / RAW_CLASS_NAMES.name, arrays.class_names)
    except OSError as err:
        raise StageError(f"cannot write {RAW}/: {err.strerror or err}; it was left as it was "
                         "(needs ~185 MB free; free space or fix permissions and rerun)") from None

    print(f"fetch: {source}\n"
          f"fetch: wrote {RAW}/: {len(arrays.train_labels)} train + {len(arrays.test_labels)} test "
          f"images, {len(arrays.class_names)} classes, fingerprints match {SOURCE_FILE} "
          f"({time.monotonic() - start:.1f} s)")


if __name__ == "__main__":
    run_stage("fetch", main)
