"""Session fixtures only; keep this file small. Helpers live in tests/helpers/ (see its
__init__.py: archives, http, repo, files, gradcheck, layouts, stacks, pipes, params), tests in one folder per code package
(numpynet/, cifar10/, stages/, tools/) plus pipeline/ (the real `dvc` CLI, CI) and faults/
(fault injection through the real stages and tools)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

# Before the first helper import: their asserts (e.g. assert_clean_failure's) report the values compared.
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers.archives import fixture_fingerprints, make_archive  # noqa: E402


class SyntheticArchive(NamedTuple):
    path: Path                   # a small cifar-10-python.tar.gz (make_archive defaults: 60 train, 30 test)
    fingerprints: dict[str, str]  # what cifar10/source.yaml sha256 must hold for it


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> SyntheticArchive:
    """`path, fingerprints = synthetic_archive`; the arrays are `tests.helpers.archives.make_arrays()`."""
    path = tmp_path_factory.mktemp("cifar10") / "cifar-10-python.tar.gz"
    make_archive(path)
    return SyntheticArchive(path, fixture_fingerprints(path))
