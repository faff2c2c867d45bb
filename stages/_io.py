"""Shared plumbing for the stages: one-line errors, atomic writes, array files.

Every stage is `python -m stages.<name>` and goes through `run_stage`, so a
`StageError` becomes one readable line on stderr and exit status 1 (never a
traceback), and every file is written to a temporary name in the same folder
and renamed into place, so an interrupted run leaves nothing half-written under
a final name.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import io
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import stages

_UMASK = os.umask(0)
os.umask(_UMASK)


class StageError(Exception):
    """A problem the user can act on; printed without a traceback."""


class Terminated(BaseException):
    """SIGTERM arrived (a `kill`, a CI job cancelled, `dvc queue kill`): raised in the main thread
    like KeyboardInterrupt for SIGINT, so that every `finally` removes its temporary files and the
    earlier outputs stay as they were."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning `StageError` into `<name>: error: ...` and exit 1.

    Storage failures (a read-only or full disk, a file size limit, a vanished folder) and running
    out of memory end the same way. A stage that computes matrix products (it has imported
    `numpynet.parallel`) computes them on `stages.threads()` threads."""
    if hasattr(signal, "SIGXFSZ"):  # over a file size limit (ulimit -f): an OSError, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if stages.THREADS_PROBLEM:
            raise StageError(stages.THREADS_PROBLEM)
        if "numpynet.parallel" in sys.modules:
            sys.modules["numpynet.parallel"].set_workers(stages.threads())
        main()
    except StageError as err:
        _fail(name, str(err))
    except (KeyboardInterrupt, Terminated) as err:
        print(f"{name}: interrupted; no output was written under its final name, earlier ones are as they were",
              file=sys.stderr)
        sys.exit(143 if isinstance(err, Terminated) else 130)
    except OSError as err:
        where = f" {quote(err.filename, 200, bare=True)}" if err.filename else ""
        _fail(name, f"cannot read or write{where}: {err.strerror or err}; check that the folder exists, is "
                    "writable and has free space, then rerun (earlier outputs are intact)")
    except MemoryError:
        _fail(name, "ran out of memory; close other programs or use a machine with more memory "
                    "(earlier outputs are intact)")


def _fail(name: str, message: str) -> None:
    print(f"{name}: error: {message}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------- messages


def quote(value: Any, limit: int = 60, bare: bool = False) -> str:
    """`repr(value)` (or `str` if bare, control characters escaped) for a one-line error message,
    shortened to about `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value)) if bare else repr(value)
    return text if len(text) <= limit else f"{text[:limit - 15]}...({len(text)} chars)"


# ---------------------------------------------------------------- atomic writes
# The rule for temporary names: a writer makes `.<name>.<pid>.<random>.tmp` (and, while it swaps
# a folder into place, `.<name>.<pid>.<random>.old`) beside the output `<name>`, and removes only
# leftovers whose <pid> is no longer running. So a writer never touches a file of another live
# writer, and two processes writing the same output both finish with complete files: the last
# one to finish wins.


def _owner(leftover: Path, name: str) -> int | None:
    """The pid in a temporary name of output `name`, or None if it is not one of ours."""
    core = leftover.name[len(name) + 2:]
    pid, _, rest = core.partition(".")
    if not (pid.isdigit() and rest.endswith((".tmp", ".old"))):
        return None
    return int(pid)


def _remove_stale(path: Path) -> None:
    """Delete the temporary files and folders beside `path` whose writer is no longer running."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*"):
        pid = _owner(leftover, path.name)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


@contextlib.contextmanager
def _atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with _atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json_text(obj))


def save_npy(path: Path, array: np.ndarray) -> None:
    """`np.save`'s bytes, written straight to the file (no second copy in memory)."""
    with _atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def save_npy_chunks(path: Path, shape: tuple[int, ...], dtype: np.dtype, chunks: Iterable[np.ndarray]) -> None:
    """An .npy of `shape` and `dtype` whose C-order data are the `chunks` in turn, each (k, *shape[1:]):
    the bytes `np.save` would write for their concatenation, with one chunk in memory at a time."""
    header = np.lib.format.header_data_from_array_1_0(np.empty((0, *shape[1:]), dtype))
    header["shape"] = tuple(shape)
    rows = 0
    with _atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)   # np.save's header (format 1.0 fits any shape here)
        for chunk in chunks:
            if chunk.dtype != dtype or chunk.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"chunk {chunk.dtype} {chunk.shape} does not fit {dtype} {shape}")
            f.write(np.ascontiguousarray(chunk).data)
            rows += len(chunk)
        if rows != shape[0]:
            raise ValueError(f"chunks hold {rows} rows, the header says {shape[0]}")
        f.flush()
        os.fsync(f.fileno())


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz that `np.load` reads, written byte-reproducibly.

    `np.savez` stamps each zip entry with the current time; here every entry gets
    the same fixed timestamp, so the same arrays always give the same bytes.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (no pickles); a ValueError for any entry NumPy cannot parse (its
    header parser raises SyntaxError, TypeError and more on crafted headers)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
    except (OSError, MemoryError, zipfile.BadZipFile):
        raise
    except Exception as err:
        raise ValueError(f"an entry is not a valid .npy ({type(err).__name__}: {str(err)[:100]})") from None


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes with no timestamp or software tag (byte-stable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    """A CSV through the `csv` module (any field is quoted as it needs), "\n" line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def write_all(files: dict[Path, bytes | str]) -> None:
    """Write a stage's outputs as one set: every file to a temporary name beside it first, then
    each renamed into place, so a failure while writing (a full disk) replaces none of them."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(path)
            fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
            staged.append((Path(name), path))
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(name, 0o666 & ~_UMASK)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def set_aside(path: Path) -> Path | None:
    """Rename the file or folder `path` to a temporary name beside it (None if there is none), for
    a writer that must write `path` in place (DVCLive's live record) yet put it back on failure."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return None
    _remove_stale(path)
    aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
    aside.rmdir()
    os.replace(path, aside)
    return aside


def put_back(path: Path, aside: Path | None) -> None:
    """Undo `set_aside`: whatever is at `path` now is deleted and the old one returns."""
    shutil.rmtree(path, ignore_errors=True)
    if aside is not None:
        os.replace(aside, path)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `path` as a whole.

    The old folder is renamed aside, the new one renamed into place, the old one deleted. If
    another writer puts a folder at `path` between those two renames, the swap is retried:
    the last writer to finish wins, and `path` is always one writer's complete folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        old = Path(str(tmp)[:-len(".tmp")] + ".old")
        for _ in range(100):
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, old)
            try:
                os.replace(tmp, path)
                break
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not path.exists():
                    raise
            finally:
                if old.is_symlink():   # `path` was a link to a folder elsewhere: the link goes, not its target
                    old.unlink()
                else:
                    shutil.rmtree(old, ignore_errors=True)
        else:
            raise OSError(errno.EBUSY, "other processes keep replacing it", str(path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _npy_call(path: Path, load):
    """`load()` with every error NumPy's .npy parser raises as a ValueError naming `path`
    (FileNotFoundError, other OSErrors and MemoryError propagate; a NumPy warning, such as a
    header "created on Python 2", which nothing here writes, is an error too)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return load()
    except (OSError, MemoryError):
        raise
    except Exception as err:   # SyntaxError, TypeError, ... from the header; EOFError, ValueError from the size
        raise ValueError(f"{path} is not a valid .npy file ({type(err).__name__}: {str(err)[:100]})") from None


def map_npy(path: Path) -> np.ndarray:
    """An .npy file memory-mapped read-only, checked: a regular file, no pickles, a header NumPy
    can parse and a size that covers what the header declares. Anything else is a ValueError."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"{path} is not a regular file (a folder, device or pipe?)")
    return _npy_call(path, lambda: np.load(path, mmap_mode="r", allow_pickle=False))


def load_npy(path: Path) -> np.ndarray:
    """An .npy file as an in-memory array, checked as `map_npy` checks it before any data is read,
    so a crafted header cannot make it allocate more than the file holds. The data are then read
    into one allocation (a copy of the map would hold the file's pages and the copy at once)."""
    map_npy(path)   # the check; the map is dropped at once
    return _npy_call(path, lambda: np.load(path, allow_pickle=False))

