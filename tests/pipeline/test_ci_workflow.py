"""The CI workflow offered to users (.github/workflows/): actionlint finds nothing, it runs what
the issue asks for, and every `run:` step is a make target or a command run here too."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.repo import BIN, PINNED, ROOT, PipelineRepo

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def steps(workflow: Path) -> list[dict]:
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [step for job in jobs.values() for step in job["steps"]]


def test_there_is_a_workflow():
    assert WORKFLOWS, "no .github/workflows/*.yml"


def test_actionlint_reports_nothing():
    actionlint = BIN / "actionlint"
    if not actionlint.exists():
        pytest.fail(f"{actionlint} missing: `make test` installs it (requirements-test.txt)")
    done = subprocess.run([str(actionlint), *map(str, WORKFLOWS)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_pipeline_workflow_tests_caches_the_archive_and_reruns():
    workflow = yaml.safe_load((ROOT / ".github/workflows/pipeline.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) >= {"push", "pull_request"}
    runs = [s.get("run", "") for s in steps(ROOT / ".github/workflows/pipeline.yml")]
    assert "make test" in runs and "make rerun-check" in runs
    caches = [s for s in steps(ROOT / ".github/workflows/pipeline.yml") if s.get("uses", "").startswith("actions/cache@")]
    assert len(caches) == 1 and "steps.archive.outputs.md5" in caches[0]["with"]["key"]


def test_every_run_step_is_a_make_target_or_a_tested_command():
    for workflow in WORKFLOWS:
        for step in steps(workflow):
            if "run" not in step:
                continue
            command = step["run"].strip()
            target = re.fullmatch(r'make ([a-z-]+)( [A-Z_]+=("[^"]*"|\S+))*', command)
            assert (target and target[1] in MAKE_TARGETS) or command in TESTED_COMMANDS, \
                f"{workflow.name}: step {step.get('name')!r} runs {command!r}, which no test runs"


def test_the_sweep_workflow_runs_one_job_per_experiment_then_gathers_them():
    """Its steps are the make targets tests/pipeline/test_s3_remote.py runs on three clones."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/sweep.yml").read_text())
    assert set(workflow[True]) == {"workflow_dispatch"}
    jobs = workflow["jobs"]
    assert jobs["run"]["strategy"]["matrix"]["experiment"] == "${{ fromJSON(inputs.experiments) }}"
    assert jobs["gather"]["needs"] == "run"
    runs = {job: [s["run"] for s in spec["steps"] if "run" in s] for job, spec in jobs.items()}
    assert runs["run"][-1] == 'make exp-run EXP="$EXP" SET="$SET"'
    assert runs["gather"][-1] == 'make exp-gather EXPS="$EXPS"'
    secrets = " ".join(str(v) for v in workflow["env"].values())
    for name in ("DVC_REMOTE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DVC_S3_ENDPOINT"):
        assert f"secrets.{name}" in secrets
    makefile = (ROOT / "Makefile").read_text()
    assert "dvc exp run --pull $(SET)" in makefile and 'dvc exp push origin "$(EXP)"' in makefile


def archive_key_command() -> str:
    return next(s["run"] for s in steps(ROOT / ".github/workflows/pipeline.yml") if s.get("id") == "archive")


TESTED_COMMANDS = {archive_key_command()}


def test_the_archive_cache_key_is_the_source_md5(tmp_path):
    output = tmp_path / "github_output"
    subprocess.run(["bash", "-c", archive_key_command()], cwd=ROOT, env={"GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"},
                   check=True)
    md5 = yaml.safe_load((ROOT / "cifar10/source.yaml").read_text())["cifar10"]["md5"]
    assert output.read_text() == f"md5={md5}\n"


@pytest.mark.slow
def test_pr_report_writes_params_and_metrics_diffs_and_a_plots_page(synthetic_archive, tmp_path):
    repo = PipelineRepo.create(tmp_path / "repo", *synthetic_archive, **PINNED)
    repo.dvc("repro")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "base")
    base = repo.git("rev-parse", "HEAD").stdout.strip()
    repo.set_param("train", "learning_rate", 0.05)
    repo.dvc("repro")
    summary = tmp_path / "summary.md"
    env = dict(repo.env, GITHUB_STEP_SUMMARY=str(summary))
    done = subprocess.run(["make", "pr-report", f"BASE={base}", f"VENV={Path(sys.executable).parent.parent}"],
                          cwd=repo.path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    diff = (repo.path / "pr-report/diff.md").read_text()
    assert re.search(r"\| params\.yaml +\| train\.learning_rate +\| 0\.01 +\| 0\.05 +\|", diff), diff
    assert re.search(r"\| metrics/metrics\.json +\| model\.train_loss +\|", diff), diff
    assert summary.read_text() == diff
    html = (repo.path / "pr-report/plots/index.html").read_text()
    assert base in html and "workspace" in html
