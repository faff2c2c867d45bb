"""Where the real-data tests find CIFAR-10: where the user keeps it.

    archive = real_archive()   # a Path, or pytest.skip with the reason (both places it looked)

`CIFAR10_ARCHIVE` when it is set (as for `make repro`), else the mirror
../shared/cifar10/cifar-10-python.tar.gz beside the repository. A test that needs the real data
is skipped, with that reason printed (`-ra`), when neither is a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIRROR = (ROOT.parent / "shared" / "cifar10" / "cifar-10-python.tar.gz").resolve()


def real_archive_path() -> Path:
    """CIFAR10_ARCHIVE if set and not empty, else the ../shared mirror (whether or not it exists)."""
    env = os.environ.get("CIFAR10_ARCHIVE", "")
    return Path(env).expanduser().resolve() if env else MIRROR


def real_archive() -> Path:
    path = real_archive_path()
    if not path.is_file():
        where = (f"CIFAR10_ARCHIVE={os.environ['CIFAR10_ARCHIVE']} is not a file"
                 if os.environ.get("CIFAR10_ARCHIVE") else f"CIFAR10_ARCHIVE is unset and {MIRROR} does not exist")
        pytest.skip(f"real CIFAR-10 archive not found ({where}): set CIFAR10_ARCHIVE to your "
                    "cifar-10-python.tar.gz to run this test")
    return path
