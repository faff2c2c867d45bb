"""Shared plumbing for the stages: one-line errors, atomic writes, array files.

Every stage is `python -m stages.<name>` and goes through `run_stage`, so a
`StageError` becomes one readable line on stderr and exit status 1 (never a
traceback), and every file is written to a temporary name in the same folder
and renamed into place, so an interrupted run leaves nothing half-written under
a final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import stages

_UMASK = os.umask(0)
os.umask(_UMASK)


class StageError(Exception):
    """A problem the user can act on; printed without a traceback."""


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning `StageError` into `<name>: error: ...` and exit 1.

    A stage that computes matrix products (it has imported `numpynet.parallel`) computes them
    on `stages.threads()` threads."""
    try:
        if stages.THREADS_PROBLEM:
            raise StageError(stages.THREADS_PROBLEM)
        if "numpynet.parallel" in sys.modules:
            sys.modules["numpynet.parallel"].set_workers(stages.threads())
        main()
    except StageError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was written under its final name", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # storage: a read-only folder, a full disk, a vanished file
        where = f" {err.filename}" if err.filename else ""
        print(f"{name}: error: cannot read or write{where}: {err.strerror or err}; check that the "
              "folder exists, is writable and has free space, then rerun (earlier outputs are intact)",
              file=sys.stderr)
        sys.exit(1)


# ---------------------------------------------------------------- messages


def quote(value: Any, limit: int = 60, bare: bool = False) -> str:
    """`repr(value)` (or `str` if bare) for an error message, shortened to about `limit` characters."""
    text = str(value) if bare else repr(value)
    return text if len(text) <= limit else f"{text[:limit - 15]}...({len(text)} chars)"


# ---------------------------------------------------------------- atomic writes


def _remove_stale(path: Path) -> None:
    """Delete leftovers of earlier runs killed mid-write: `.name.*.tmp` and `.name.old.<pid>`
    beside `path`, unless the process that made them is still running."""
    for leftover in path.parent.glob(f".{path.name}.*"):
        suffix = leftover.name[len(path.name) + 2:]
        pid = suffix[4:] if suffix.startswith("old.") else None
        if not (suffix.endswith(".tmp") or (pid and pid.isdigit())):
            continue
        if pid and _alive(int(pid)):
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
    except PermissionError:
        return True
    return pid != os.getpid()


@contextlib.contextmanager
def _atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_bytes(path, buf.getvalue())


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
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_figure(path: Path, fig: Any) -> None:
    """Save a matplotlib figure as a PNG with no timestamp or software tag (byte-stable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `path` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
