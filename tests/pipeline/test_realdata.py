"""CI rerun on the real data: a clean `git clone` of the committed repo, `dvc repro` on the local
CIFAR-10 mirror (CIFAR10_ARCHIVE), and the same results as the ones committed.

    .venv/bin/python -m pytest tests/pipeline/test_realdata.py -q

It tests the committed state (HEAD), not the work in progress, and trains the default config on
the real data: measured 1 min 41 s in all on this 2-core machine at load ~2, 7 min at load ~6.
It finds the archive where the user keeps it: CIFAR10_ARCHIVE when set, else the mirror
../shared/cifar10/cifar-10-python.tar.gz beside the repo; skipped, with the reason, when neither is
a file.

The pipeline is deterministic: seeds in params.yaml, float32 NumPy, outputs written without
timestamps, and on x86-64 with AVX2 + FMA the same bits whatever the thread count (the stages pin
OpenBLAS's kernels and make products thread-count independent, stages/__init__.py). So results
are compared exactly; a mismatch message gives this run's settings.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.helpers.realdata import real_archive
from tests.helpers.repo import PipelineRepo

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

METRICS = ("metrics/metrics.json",)
BLAS_THREADS = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
ACROSS_MACHINES = ("The pipeline gives byte-identical results on x86-64 CPUs with AVX2 + FMA at any thread "
                   "count, with the pinned requirements. Elsewhere (no AVX2, ARM, another NumPy or BLAS "
                   "build) float32 sums round differently; `python -m tools.rerun_check --mode tolerance` judges such "
                   f"a rerun. This run: {os.cpu_count()} CPUs, {BLAS_THREADS}, OPENBLAS_CORETYPE "
                   f"{os.environ.get('OPENBLAS_CORETYPE', 'unset (the stages set it)')}. With the pinned "
                   "requirements on such a CPU, a difference is a real loss of reproducibility.")


@pytest.fixture(scope="module")
def rerun(tmp_path_factory) -> PipelineRepo:
    archive = real_archive()
    repo = PipelineRepo.clone(tmp_path_factory.mktemp("realdata") / "clone", archive)
    # --force: every stage really runs (a plain repro would skip `evaluate` when the retrained
    # model is byte-identical to the committed one, and the metrics would not be recomputed)
    out = repo.dvc("repro", "--force", timeout=1800)
    assert all(f"Running stage '{s}'" in out.stdout for s in ("fetch", "filter_normalize", "train", "evaluate")), out.stdout
    return repo


def committed(repo: PipelineRepo, path: str) -> str:
    return repo.git("show", f"HEAD:{path}").stdout


def locks(repo: PipelineRepo) -> tuple[dict, dict]:
    """(committed dvc.lock stages, the rerun's dvc.lock stages)."""
    return (yaml.safe_load(committed(repo, "dvc.lock"))["stages"],
            yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"])


def stale_inputs(repo: PipelineRepo) -> list[str]:
    """What the committed dvc.lock records differently from the committed code and params (the
    rerun's dvc.lock records those): stages added or removed, params, dependency md5s, outputs."""
    old, new = locks(repo)
    found = [f"stage {s}: {'only in the rerun' if s in new else 'only in the committed dvc.lock'}"
             for s in sorted(set(old) ^ set(new))]
    for stage in sorted(set(old) & set(new)):
        o, n = old[stage], new[stage]
        old_params, new_params = o.get("params", {}).get("params.yaml", {}), n.get("params", {}).get("params.yaml", {})
        found += [f"{stage}: param {k}: {old_params.get(k)!r} -> {new_params.get(k)!r}"
                  for k in sorted(set(old_params) | set(new_params)) if old_params.get(k) != new_params.get(k)]
        old_deps = {d["path"]: d["md5"] for d in o.get("deps", [])}
        new_deps = {d["path"]: d["md5"] for d in n.get("deps", [])}
        found += [f"{stage}: dep {p} {'changed' if p in old_deps and p in new_deps else 'added' if p in new_deps else 'removed'}"
                  for p in sorted(set(old_deps) | set(new_deps)) if old_deps.get(p) != new_deps.get(p)]
        old_outs, new_outs = {d["path"] for d in o.get("outs", [])}, {d["path"] for d in n.get("outs", [])}
        found += [f"{stage}: out {p} {'added' if p in new_outs else 'removed'}" for p in sorted(old_outs ^ new_outs)]
    return found


def why(repo: PipelineRepo) -> str:
    """The likely reason committed results differ from the rerun's."""
    stale = stale_inputs(repo)
    if stale:
        return ("The committed results were not made from the committed code and params (their dvc.lock "
                f"records other inputs: {'; '.join(stale)}): run `dvc repro` on the real data and commit "
                "dvc.lock, metrics/ and plots/.")
    return ACROSS_MACHINES


def test_committed_dvc_lock_matches_the_committed_code_and_params(rerun):
    """The committed results are the ones the committed code and params make: a fresh clone's
    `dvc repro` records the same params, dependencies and outputs in dvc.lock."""
    stale = stale_inputs(rerun)
    assert not stale, ("the committed dvc.lock is out of date with the committed code/params; run `dvc repro` "
                       "on the real data and commit dvc.lock, metrics/ and plots/:\n  " + "\n  ".join(stale))


@pytest.mark.parametrize("path", METRICS)
def test_rerun_metrics_equal_the_committed_ones(rerun, path):
    old, new = committed(rerun, path), (rerun.path / path).read_text()
    if new != old:
        changed = {k: (v, json.loads(new).get(k)) for k, v in json.loads(old).items() if json.loads(new).get(k) != v}
        pytest.fail(f"{path} after `dvc repro` on the mirror differs from the committed one: "
                    f"(committed, rerun) {changed}. {why(rerun)}")


def test_rerun_dvc_lock_outputs_equal_the_committed_ones(rerun):
    """Every output the committed dvc.lock records (data/raw, data/prepared, models/ with the model
    and its training record, metrics, plots) has the same md5 after the rerun."""
    old, new = locks(rerun)
    outs = lambda stages: {o["path"]: o["md5"] for s in stages.values() for o in s.get("outs", [])}
    old_outs, new_outs = outs(old), outs(new)
    assert {"data/raw", "data/prepared", "models", *METRICS} <= set(old_outs)
    differ = {p: (md5, new_outs.get(p)) for p, md5 in old_outs.items() if new_outs.get(p) != md5}
    assert not differ, f"outputs differ from the committed dvc.lock, (committed, rerun): {differ}. {why(rerun)}"
