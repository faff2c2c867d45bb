"""The fault suite's shared pipeline: one synthetic-data copy of the repository, every stage run
once by `dvc repro`. Tests that change it work on a `fork` or put back what they change."""

from __future__ import annotations

import pytest

from tests.helpers.repo import PipelineRepo


@pytest.fixture(scope="session")
def trained_repo(synthetic_archive, tmp_path_factory) -> PipelineRepo:
    repo = PipelineRepo.create(tmp_path_factory.mktemp("faults-trained") / "repo", *synthetic_archive,
                               evaluate={"flip_tta": True})
    repo.dvc("repro")
    return repo
