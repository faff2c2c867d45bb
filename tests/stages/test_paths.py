"""stages/paths.py against dvc.yaml, both ways: each stage's `deps`, `outs` and `metrics`, and the
top-level `metrics` and `plots`, are exactly the paths the module declares (a path changed in one
and not the other fails here); no stage or tool spells a path of the pipeline itself; and the code
a stage runs is inside the code folders it depends on, as whole folders (a change to any file the
stage's code loads must make `dvc status` report the stage, and a new module needs no edit of
dvc.yaml). dvc.yaml is read as YAML; no `dvc` run is needed."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages import paths
from tests.helpers.repo import ROOT

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
CODE_FOLDERS = {str(p) for p in paths.CODE}


def entries(items: list | None) -> list[str]:
    """The paths of a dvc.yaml list, whose entries are `path` or `{path: {options}}`."""
    return [item if isinstance(item, str) else next(iter(item)) for item in items or []]


def declared(items) -> list[str]:
    return [str(p) for p in items]


def test_dvc_yaml_has_exactly_the_stages_the_module_declares_in_pipeline_order():
    assert list(STAGES) == list(paths.STAGES)


@pytest.mark.parametrize("stage", list(paths.STAGES))
@pytest.mark.parametrize("field", ["deps", "outs", "metrics"])
def test_each_stage_s_files_in_dvc_yaml_are_the_module_s(stage, field):
    """Equal as lists, so both ways: nothing in dvc.yaml the module lacks, nothing the other way."""
    in_dvc_yaml = entries(STAGES[stage].get(field))
    in_module = declared(getattr(paths.STAGES[stage], field))
    assert sorted(in_dvc_yaml) == sorted(in_module), f"dvc.yaml stage {stage} {field} vs stages/paths.py"
    assert len(set(in_dvc_yaml)) == len(in_dvc_yaml), f"dvc.yaml stage {stage} lists a {field} path twice"


@pytest.mark.parametrize("stage", list(paths.STAGES))
def test_each_stage_runs_its_module_reads_its_params_section_and_declares_no_plots_of_its_own(stage):
    assert STAGES[stage]["cmd"] == f"python -m stages.{stage}"
    assert set(STAGES[stage]) <= {"cmd", "deps", "outs", "metrics", "params"}
    assert STAGES[stage].get("params", [stage]) == [stage]


@pytest.mark.parametrize("stage", list(paths.STAGES))
def test_git_tracked_results_are_not_cached_and_data_and_models_are(stage):
    """metrics/ and plots/ are what any clone reads (cache: false); data/ and models/ are DVC's."""
    for item in STAGES[stage].get("outs", []) + STAGES[stage].get("metrics", []):
        path = entries([item])[0]
        cached = isinstance(item, str) or item[path].get("cache", True)
        assert cached is (path.split("/")[0] in ("data", "models")), f"dvc.yaml stage {stage}: {path}"


def test_top_level_metrics_are_the_live_training_summary():
    assert entries(DVC_YAML["metrics"]) == declared(paths.LIVE_METRICS)


def test_top_level_plots_draw_exactly_the_declared_files():
    drawn = []
    for plot in DVC_YAML["plots"]:
        if isinstance(plot, str):
            drawn.append(plot)
        else:
            (spec,) = plot.values()
            drawn += list(spec["y"])
    assert sorted(drawn) == sorted(declared(paths.PLOTS)) and len(set(drawn)) == len(drawn)


def test_every_declared_file_is_inside_an_output_of_the_stage_that_writes_it():
    outputs = [Path(p) for files in paths.STAGES.values() for p in files.outs + files.metrics]
    for path in (*paths.LIVE_METRICS, *paths.PLOTS, paths.MODEL, paths.DATASET_INFO, paths.RAW_CLASS_NAMES,
                 *paths.raw_arrays("train"), *paths.prepared_arrays("val")):
        assert any(path == out or out in path.parents for out in outputs), path


# ---------------------------------------------------------------- said once

PIPELINE_PATH = re.compile(r"(?<![\w/])(data/|models/|metrics/|plots/|rerun-check/|dvc\.lock|dvc\.yaml|params\.yaml"
                           r"|model\.npz|dataset\.json|cifar10/source\.yaml|source\.yaml)")
SOURCES = sorted(f.relative_to(ROOT) for folder in ("stages", "tools") for f in (ROOT / folder).glob("*.py")
                 if f.name != "paths.py")


def spelled_paths(source: str) -> list[str]:
    """The string literals of `source` (not its docstrings) that spell a file of the pipeline."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and PIPELINE_PATH.search(node.value)]


@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_no_stage_or_tool_spells_a_path_of_the_pipeline(source):
    assert spelled_paths((ROOT / source).read_text()) == [], f"{source}: import it from stages/paths.py"


def test_the_check_finds_a_spelled_path():
    assert spelled_paths('"""Reads models/model.npz."""\nMODEL = Path("models/model.npz")\n') == ["models/model.npz"]
    assert spelled_paths('x = "(cifar10/source.yaml md5)"\ny = "dvc.yaml"\n') == ["(cifar10/source.yaml md5)", "dvc.yaml"]


# ---------------------------------------------------------------- code deps

# The repository files a stage loads, found by importing it in a fresh interpreter.
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""


def code_deps(stage: str) -> set[str]:
    return {d for d in entries(STAGES[stage]["deps"]) if d.split("/")[0] in CODE_FOLDERS}


def loaded_repo_files(stage: str) -> set[Path]:
    out = subprocess.run([sys.executable, "-c", PROBE, f"stages.{stage}"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    files = [Path(f) for f in json.loads(out.stdout)]
    return {f.relative_to(ROOT) for f in files if f.is_relative_to(ROOT) and f.relative_to(ROOT).parts[0] in CODE_FOLDERS}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_repository_file_a_stage_loads_is_inside_one_of_its_deps(stage):
    loaded = loaded_repo_files(stage)
    assert loaded, "the probe found none of the stage's code: it tests nothing"
    missing = sorted(str(f) for f in loaded if f.parts[0] not in code_deps(stage))
    assert not missing, f"dvc.yaml: stage {stage} runs {missing} but does not depend on their folder"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_whole_folders_so_a_new_module_needs_no_edit(stage):
    """No single source file as a dep (one `dvc exp show` column each, and a hand list to keep
    true); a stage's code folders are stages/ and the packages it imports, of which each stage
    imports cifar10 (the layout) and all but fetch numpynet."""
    code = code_deps(stage)
    assert all((ROOT / d).is_dir() for d in code), code
    assert code == ({"stages", "cifar10"} if stage == "fetch" else CODE_FOLDERS)
