"""dvc.yaml declares, for each stage, the code it runs as whole folders (stages/, numpynet/,
cifar10/): a change to any file the stage's code loads must make `dvc status` report the stage,
or committed results go stale; and a new module needs no edit of dvc.yaml."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.repo import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
CODE_FOLDERS = ("stages", "numpynet", "cifar10")

# The repository files a stage loads, found by importing it in a fresh interpreter.
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""


def deps(stage: str) -> set[str]:
    return {d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]}


def loaded_repo_files(stage: str) -> set[Path]:
    out = subprocess.run([sys.executable, "-c", PROBE, f"stages.{stage}"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    files = [Path(f) for f in json.loads(out.stdout)]
    return {f.relative_to(ROOT) for f in files if f.is_relative_to(ROOT) and f.relative_to(ROOT).parts[0] in CODE_FOLDERS}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_repository_file_a_stage_loads_is_inside_one_of_its_deps(stage):
    loaded = loaded_repo_files(stage)
    assert loaded, "the probe found none of the stage's code: it tests nothing"
    missing = sorted(str(f) for f in loaded if f.parts[0] not in deps(stage))
    assert not missing, f"dvc.yaml: stage {stage} runs {missing} but does not depend on their folder"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_whole_folders_so_a_new_module_needs_no_edit(stage):
    """No single source file as a dep (one `dvc exp show` column each, and a hand list to keep
    true); a stage's code folders are stages/ and the packages it imports, of which each stage
    imports cifar10 (the layout) and all but fetch numpynet."""
    code = {d for d in deps(stage) if d.split("/")[0] in CODE_FOLDERS}
    assert all((ROOT / d).is_dir() for d in code), code
    assert code == ({"stages", "cifar10"} if stage == "fetch" else set(CODE_FOLDERS))
