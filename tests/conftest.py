"""Shared pytest fixtures. Keep this file small: helpers live in tests/cifar_fixture.py."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from tests.cifar_fixture import fixture_fingerprints, make_archive


class SyntheticArchive(NamedTuple):
    path: Path                   # a small cifar-10-python.tar.gz (make_archive defaults: 60 train, 30 test)
    fingerprints: dict[str, str]  # what params.yaml fetch.sha256 must hold for it


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> SyntheticArchive:
    """`path, fingerprints = synthetic_archive`; the arrays are `cifar_fixture.make_arrays()`."""
    path = tmp_path_factory.mktemp("cifar10") / "cifar-10-python.tar.gz"
    make_archive(path)
    return SyntheticArchive(path, fixture_fingerprints(path))
