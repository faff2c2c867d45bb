"""`make rerun-check` (tools/rerun_check.py): recompute every stage in a clone of HEAD and judge
the metrics against the committed ones. Driven as a user runs it, in a git + DVC copy of the repo
on the synthetic archive, with the real `dvc`."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers.repo import PINNED, PipelineRepo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def committed(synthetic_archive, tmp_path_factory) -> PipelineRepo:
    """A copy whose pipeline ran once and whose results are committed, as on main."""
    repo = PipelineRepo.create(tmp_path_factory.mktemp("rerun") / "repo", *synthetic_archive, **PINNED)
    repo.dvc("repro")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "results")
    return repo


def check(repo: PipelineRepo, *args: str, summary=None):
    env = dict(repo.env)
    env.pop("GITHUB_STEP_SUMMARY", None)
    if summary is not None:
        env["GITHUB_STEP_SUMMARY"] = str(summary)
    return PipelineRepo(repo.path, env).run(sys.executable, "-m", "tools.rerun_check", *args, check=False,
                                           timeout=900)


def commit_accuracy_shift(repo: PipelineRepo, dest, shift: float) -> tuple[PipelineRepo, float]:
    """A copy of `repo` whose HEAD holds metrics/metrics.json with accuracy moved by `shift`."""
    fork = repo.fork(dest)
    path = fork.path / "metrics/metrics.json"
    metrics = json.loads(path.read_text())
    metrics["test"]["accuracy"] += shift
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    fork.git("commit", "-qam", f"accuracy moved by {shift}")
    return fork, metrics["test"]["accuracy"]


def test_a_clean_rerun_passes_reports_and_leaves_git_status_clean(committed, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    done = check(committed, "--mode", "exact", summary=summary)
    assert done.returncode == 0, done.stdout + done.stderr
    report = (committed.path / "rerun-check/report.md").read_text()
    assert "## Rerun check: PASSED" in report and "every output byte-identical" in report
    assert "| metrics/metrics.json: test.accuracy |" in report
    assert "dvc.lock outputs whose hashes changed: none" in report
    assert report in done.stdout
    assert summary.read_text() == "earlier step\n" + report      # appended, not overwritten
    assert committed.git("status", "--porcelain").stdout == ""


def test_a_committed_accuracy_off_by_0_02_fails_naming_it_in_both_modes(committed, tmp_path):
    repo, shifted = commit_accuracy_shift(committed, tmp_path / "repo", 0.02)
    for mode in ("exact", "tolerance"):
        done = check(repo, "--mode", mode)
        assert done.returncode == 1, (mode, done.stdout, done.stderr)
        errors = [line for line in done.stderr.splitlines() if "accuracy" in line]
        assert len(errors) == 1, done.stderr
        assert errors[0].startswith("rerun-check: error: metrics/metrics.json: test.accuracy: committed ")
        assert f"committed {shifted:.6g}, rerun {shifted - 0.02:.6g}" in errors[0]
        assert "| metrics/metrics.json: test.accuracy |" in done.stdout and "**differs**" in done.stdout
    assert repo.git("status", "--porcelain").stdout == ""


def test_a_difference_within_tolerance_passes_in_tolerance_mode_only(committed, tmp_path):
    repo, _ = commit_accuracy_shift(committed, tmp_path / "repo", 0.004)
    assert check(repo, "--mode", "tolerance").returncode == 0
    exact = check(repo, "--mode", "exact")
    assert exact.returncode == 1 and "metrics/metrics.json: test.accuracy" in exact.stderr


def test_a_failed_rerun_exits_2_with_dvc_s_message(committed, tmp_path):
    repo = committed.fork(tmp_path / "repo")
    repo.set_param("train", "learning_rate", -1)
    repo.git("commit", "-qam", "a bad param")
    done = check(repo)
    assert done.returncode == 2
    assert "rerun-check: error: `dvc repro --force` failed" in done.stderr and "train.learning_rate" in done.stderr


def test_a_committed_dvc_lock_with_merge_conflict_markers_exits_2_in_one_line(committed, tmp_path):
    repo = committed.fork(tmp_path / "repo")
    lock = (repo.path / "dvc.lock").read_text()
    (repo.path / "dvc.lock").write_text("<<<<<<< HEAD\n" + lock + "=======\n" + lock + ">>>>>>> other\n")
    repo.git("commit", "-qam", "a conflicted dvc.lock")
    done = check(repo)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = done.stderr.strip().splitlines()
    assert errors[-1].startswith("rerun-check: error: ") and "dvc.lock" in errors[-1], done.stderr
