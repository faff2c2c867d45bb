"""dvc.yaml lists, for each stage, every file of this repository that the stage's code runs:
a change to any of them must make `dvc status` report the stage, or committed results go stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.repo import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

# The modules a stage imports at top level, and those it imports only on some paths
# (the CNN's layers, only for model: cnn), found by importing the stage in a fresh
# interpreter and listing the repository files that got loaded.
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
for lazy in sys.argv[2:]:
    importlib.import_module(lazy)
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""
LAZY = {"train": ["numpynet.conv"], "evaluate": ["numpynet.conv"]}


def loaded_repo_files(stage: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, f"stages.{stage}", *LAZY.get(stage, [])],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    files = [Path(f) for f in json.loads(out.stdout)]
    return {str(f.relative_to(ROOT)) for f in files
            if f.is_relative_to(ROOT) and f.relative_to(ROOT).parts[0] in ("stages", "numpynet", "cifar10")}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_repository_module_a_stage_runs_is_one_of_its_deps(stage):
    deps = {d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]}
    missing = loaded_repo_files(stage) - deps
    assert not missing, f"dvc.yaml: stage {stage} runs {sorted(missing)} but does not list them as deps"
