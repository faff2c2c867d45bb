"""Holding a process at its next write: fill the pipe it writes its output into.

A test that must look at a stage while it runs (its live record, a kill before it saves) cannot
wait for "long enough": that fails on a slow or busy machine. Instead it fills the pipe the stage
writes to, so the stage blocks at its next log line, and looks while it is held there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def fill(pipe_fd: int) -> None:
    """Fill the pipe `pipe_fd` (either end) to the brim. Its writers then block at their next write
    until it is read. The filler writes through a file description of its own, non-blocking, so the
    writers' own stays blocking; the bytes it writes are NULs."""
    with contextlib.suppress(OSError):   # the smallest buffer, so that little is needed to fill it
        fcntl.fcntl(pipe_fd, fcntl.F_SETPIPE_SZ, 4096)
    filler = os.open(f"/proc/self/fd/{pipe_fd}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"\0" * 512)
    finally:
        os.close(filler)


def blocked_writing(pid: int) -> bool:
    """Is process `pid` waiting for room in a full pipe (the kernel names the wait (anon_)pipe_write)?"""
    try:
        return Path(f"/proc/{pid}/wchan").read_text().endswith("pipe_write")
    except OSError:
        return False
