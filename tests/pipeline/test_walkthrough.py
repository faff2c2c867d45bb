"""The README's experiment walkthrough, run as written, line by line, on a tiny dataset: it must
do what its text says. Two queued experiments that differ from the committed params in the
learning rate only (nothing else leaks in from the workspace), `dvc exp show --only-changed`
comparing them, `dvc exp apply` bringing one into the workspace, and the way back restoring the
committed state: params, dvc.lock, metrics, plots and the model itself."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.files import glob_digests
from tests.helpers.repo import ROOT, PipelineRepo

pytestmark = pytest.mark.slow

MARKER = "<!-- walkthrough: tests/pipeline/test_walkthrough.py runs this block on a tiny dataset -->"
RESULTS = ("dvc.lock", "params.yaml", "metrics/*", "plots/*", "models/*", "models/training/*", "models/training/*/*/*/*")


def walkthrough_commands(readme: str) -> list[str]:
    """The commands of the fenced block that follows MARKER, comments and blank lines dropped."""
    found = re.search(re.escape(MARKER) + r"\s*```(?:sh|bash)?\n(.*?)```", readme, re.S)
    assert found, f"README.md has no fenced block after {MARKER!r}"
    commands = []
    for line in found[1].splitlines():
        command = line.split("  #")[0].strip()   # a comment after two spaces, as the README writes them
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def experiments(repo: PipelineRepo) -> dict[str, dict]:
    """{name: data} of `dvc exp show --json`, the baseline under "baseline"."""
    found = {}
    for row in json.loads(repo.dvc("exp", "show", "--json").stdout):
        if row["rev"] != "workspace":
            found["baseline"] = row["data"]
        for exp in row.get("experiments") or []:
            found[exp["name"]] = exp["revs"][0]["data"]
    return found


def test_the_readme_walkthrough_does_what_it_says(synthetic_archive, tmp_path):
    commands = walkthrough_commands((ROOT / "README.md").read_text())
    repo = PipelineRepo.create(tmp_path / "repo", *synthetic_archive)
    repo.dvc("repro")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "results")        # the committed state, as a clone of this repository has it
    committed = glob_digests(repo.path, *RESULTS)
    params = repo.params()
    assert any(p.startswith("models/training/") for p in committed)

    runs: dict[str, str] = {}
    venv = f"VENV={Path(sys.executable).parent.parent}"     # make uses this venv, installs nothing
    for command in commands:
        # COLUMNS: what the user reads is a terminal of 160 columns
        proc = repo.run("bash", "-c", f"COLUMNS=160 {command} {venv}" if command.startswith("make ") else command,
                        timeout=900)
        runs[command] = proc.stdout + proc.stderr
        if "--queue" in command:
            assert repo.params() == params, f"`{command}` changed the workspace's params.yaml"
        if command.startswith(("dvc exp show", "make compare")):
            table = proc.stdout
            exps = experiments(repo)
            queued = {n: e for n, e in exps.items() if n != "baseline"}
            assert len(queued) == 2, f"two experiments after the queue ran: {sorted(exps)}\n{runs}"
            for name, exp in queued.items():
                got = exp["params"]["params.yaml"]["data"]
                lr = float(re.search(r"train\.learning_rate=(\S+)", next(c for c in commands if name in c))[1])
                # the experiment differs from what was committed in the one param it sets
                assert got["train"] == {**params["train"], "learning_rate": lr}, name
                assert {k: v for k, v in got.items() if k != "train"} == {k: v for k, v in params.items() if k != "train"}
                assert name in table
                assert exp["metrics"]["metrics/metrics.json"]["data"]["test"]["accuracy"] is not None
            assert "learning_rate" in table and "…" not in table, f"the comparison does not fit 160 columns:\n{table}"
        if command.startswith("dvc exp apply"):
            name = shlex.split(command)[-1]
            applied = experiments(repo)[name]
            assert repo.params()["train"]["learning_rate"] == applied["params"]["params.yaml"]["data"]["train"]["learning_rate"]
            assert json.loads((repo.path / "metrics/metrics.json").read_text()) == \
                applied["metrics"]["metrics/metrics.json"]["data"]
            status = json.loads(repo.dvc("status", "--json").stdout)
            lock = yaml.safe_load((repo.path / "dvc.lock").read_text())
            assert status == {}, ("the applied model does not match dvc.lock", status, repo.params()["train"],
                                  {n: s.get("params") for n, s in lock["stages"].items()}, runs)
            assert glob_digests(repo.path, *RESULTS) != committed

    assert any(c.startswith("dvc exp apply") for c in commands)
    assert any(c.startswith(("dvc exp show", "make compare")) for c in commands)
    # the way back: the committed state, model included
    assert glob_digests(repo.path, *RESULTS) == committed, "the recovery recipe did not bring back the committed state"
    assert repo.git("status", "--porcelain").stdout == ""
    assert json.loads(repo.dvc("status", "--json").stdout) == {}
