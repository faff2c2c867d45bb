"""Broken params, through a real run of the stage: the wiring from params.yaml (and
cifar10/source.yaml, fetch's dataset identity) to one line on stderr, for every stage.

Each (key, value) is a run of `python -m stages.<stage>` in a shared PipelineRepo copy whose
outputs were made once by `dvc repro`; the file is put back after each case. Each case asserts exit
status 1, one `<stage>: error: ...` line naming the key, the bad value (shortened when long) and
what is allowed, no traceback, peak memory within the bar, and outputs (data/, models/, metrics/,
plots/, dvc.lock) byte-identical.

Per stage: a missing key, one refused value of each kind of rule it uses (generated from its
schema through `tests.helpers.params.refused_values`), an unknown key, a missing or malformed section,
and broken files (invalid YAML, not UTF-8, too large, a FIFO, a key twice, a date); and the
cross-key rules. Every other refused value of every key, and every key missing, is checked
in-process with its exact message by tests/stages/test_params.py (the same `load` and `validate`
the stages call, one process instead of three hundred).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from stages._io import quote
from tests.helpers.files import assert_clean_failure, snapshot
from tests.helpers.params import refused_values
from tests.helpers.repo import PipelineRepo

pytestmark = pytest.mark.slow

STAGES = ("filter_normalize", "train", "evaluate")
PARAMS_FILE, SOURCE_FILE = "params.yaml", "cifar10/source.yaml"
# (stage, file, schema): every stage's params section, and fetch's dataset identity
SCHEMAS = [(name, PARAMS_FILE, importlib.import_module(f"stages.{name}").PARAMS) for name in STAGES] + [
    ("fetch", SOURCE_FILE, importlib.import_module("stages.fetch").SOURCE)]


@dataclass(frozen=True)
class Case:
    stage: str
    edit: Callable[[bytes], bytes | None]  # file bytes -> new bytes, or None to delete the file
    fragments: tuple[str, ...]              # what the error line must hold
    file: str = PARAMS_FILE                 # the file the edit applies to


def _edit(change: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        params = yaml.safe_load(data)
        change(params)
        return yaml.safe_dump(params, sort_keys=False).encode()
    return edit


def _set(section: str, **values: Any) -> Callable[[bytes], bytes]:
    return _edit(lambda p: p[section].update(values))


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for stage, file, schema in SCHEMAS:
        name = schema.name
        first = schema.params[0]
        cases[f"{name}.{first.key}-missing"] = Case(stage, _edit(lambda d, s=name, k=first.key: d[s].pop(k)), (
            f"{file}: {name}.{first.key} is missing; expected {first.rule.describe()}",), file)
        kinds: set[type] = set()
        for i, (key, value) in enumerate(refused_values(schema)):
            rule = next(p.rule for p in schema.params if p.key == key)
            if type(rule) in kinds:   # one refused value of each kind of rule; the rest in-process
                continue
            kinds.add(type(rule))
            loaded = yaml.safe_load(yaml.safe_dump(value, sort_keys=False))
            cases[f"{name}.{key}-{i}={quote(value, 25)}"] = Case(stage, _set(name, **{key: value}), (
                f"{file}: {name}.{key}: {quote(loaded)} ", f"expected {rule.describe()}"), file)
        cases[f"{name}-unknown-key"] = Case(stage, _set(name, colour="red"), (
            f"{file}: {name}.colour is not a param of '{name}'", "a typo?"), file)
        cases[f"{name}-section-missing"] = Case(stage, _edit(lambda d, s=name: d.pop(s)),
                                                (f"{file}: missing section '{name}:'",), file)
        cases[f"{name}-section-not-a-mapping"] = Case(stage, _edit(lambda d, s=name: d.update({s: [1, 2]})),
                                                      (f"section '{name}:' is a list; expected a mapping",), file)
    cases["train.nesterov-without-momentum"] = Case("train", _set("train", nesterov=True, momentum=0.0),
                                                    ("nesterov is true but momentum is 0", "set a momentum"))
    cases["train.warmup-longer-than-run"] = Case("train", _set("train", warmup_epochs=1e300), (
        "train.warmup_epochs: 1e+300 is not allowed",))
    cases["train.warmup-beyond-epochs"] = Case("train", _set("train", warmup_epochs=60, epochs=3), (
        "warmup_epochs is longer than the run (epochs)",))
    cases["train.batch-larger-than-train"] = Case("train", _set("train", batch_size=60000), (
        "train.batch_size: 60000 is larger than the training set", "choose at most"))
    for stage, file, _ in SCHEMAS:
        cases[f"{stage}-invalid-yaml"] = Case(stage, lambda t: t.replace(b":", b": [", 1), (
            f"{file} is not valid YAML at line ", ", column ", "fix the file"), file)
        cases[f"{stage}-not-utf8"] = Case(stage, lambda t: b"# \xff\xfe\n" + t, (
            f"{file} is not UTF-8 text (byte 0xff at line 1)", "save it as UTF-8"), file)
        cases[f"{stage}-huge-file"] = Case(stage, lambda t: t + b"#" * (70 << 20), (
            f"{file} is larger than 1 MiB",), file)
    cases["train-params-yaml-a-fifo"] = Case("train", lambda t: "fifo", (  # a plain open() would wait for a writer
        "params.yaml is not a regular file",))
    cases["evaluate-section-twice"] = Case("evaluate", lambda t: t + b"evaluate:\n  flip_tta: true\n", (
        "params.yaml has the key 'evaluate' twice",))   # as DVC refuses it: no results from params DVC cannot read
    cases["train-seed-a-date"] = Case("train", lambda t: t.replace(b"  seed: 0", b"  seed: 2001-02-30"), (
        "'2001-02-30'", "expected an integer"))        # YAML 1.2: a date is text, not a crash
    cases["fetch-source-yaml-absent"] = Case("fetch", lambda t: None, (f"cannot read {SOURCE_FILE}",), SOURCE_FILE)
    cases["train-params-yaml-absent"] = Case("train", lambda t: None,
                                             ("cannot read params.yaml", "run from the repository root"))
    cases["train-params-yaml-a-list"] = Case("train", lambda t: b"- 1\n- 2\n", ("holds a list",))
    return cases


CASES = _cases()


@dataclass
class Result:
    proc: subprocess.CompletedProcess
    before: dict[str, str]
    after: dict[str, str]


@pytest.fixture(scope="module")
def repo(synthetic_archive, tmp_path_factory) -> PipelineRepo:
    """The shared copy: every output made once by `dvc repro`."""
    repo = PipelineRepo.create(tmp_path_factory.mktemp("faults-params") / "repo", *synthetic_archive)
    repo.dvc("repro")
    return repo


def run_case(repo: PipelineRepo, case: Case) -> Result:
    """Edit the case's file, run the stage, put the file back; outputs snapshotted around the run."""
    path = repo.path / case.file
    data = path.read_bytes()
    before = snapshot(repo.path)
    try:
        new = case.edit(data)
        assert new != data, f"the edit did not change {case.file}"
        if new is None:
            path.unlink()
        elif new == "fifo":
            path.unlink()
            os.mkfifo(path)
        else:
            path.write_bytes(new)
        proc = repo.stage(case.stage)
    finally:
        path.unlink(missing_ok=True)
        path.write_bytes(data)
    return Result(proc, before, snapshot(repo.path))


WORKERS = max(1, min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def results(repo, request) -> dict[str, Result]:
    """Run the selected cases, WORKERS at a time, each worker in its own copy of `repo`."""
    wanted = [item.callspec.params["case"] for item in request.session.items
              if item.module is request.module and "case" in getattr(item, "callspec", SimpleNamespace(params={})).params]
    queue = list(dict.fromkeys(wanted))
    copies = [repo] + [PipelineRepo(repo.path.with_name(f"repo-{i}"), repo.env) for i in range(1, WORKERS)]
    for copy in copies[1:]:
        shutil.copytree(repo.path, copy.path, symlinks=True)
    lock = threading.Lock()
    out: dict[str, Result] = {}

    def work(copy: PipelineRepo) -> None:
        while True:
            with lock:
                if not queue:
                    return
                case_id = queue.pop(0)
            out[case_id] = run_case(copy, CASES[case_id])
    with ThreadPoolExecutor(len(copies)) as pool:
        list(pool.map(work, copies))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_params_stop_the_stage_with_a_message(results, case):
    result, spec = results[case], CASES[case]
    line = assert_clean_failure(result.proc, spec.stage, *spec.fragments)
    assert len(line) < 600, "the message quotes values shortened"
    assert result.after == result.before, "a failed run changed or left files among the outputs"


def test_dvc_repro_with_a_bad_param_keeps_dvc_lock_and_trusts_no_output(repo, tmp_path):
    """Through `dvc repro` (on a copy, since dvc removes a stage's outputs before running it):
    the stage's message reaches the user, dvc.lock is unchanged, every output is absent or as before."""
    copy = PipelineRepo(tmp_path / "copy", repo.env)
    shutil.copytree(repo.path, copy.path, symlinks=True)
    before = snapshot(copy.path)
    copy.set_param("train", "learning_rate", -0.5)
    proc = copy.dvc("repro", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text, text
    assert "train: error: params.yaml: train.learning_rate: -0.5 is not allowed; expected a number in (0, 10]" in text
    after = snapshot(copy.path)
    assert after["dvc.lock"] == before["dvc.lock"]
    changed = [path for path, digest in after.items() if before.get(path) != digest]
    assert not changed, f"new or changed after a failed dvc repro: {changed}"


def test_a_network_too_big_for_memory_is_refused_by_name(repo):
    """hidden_sizes [16384] * 8 with batch 65536 is within every bound yet needs far more memory than
    `ulimit -v` leaves: the allocation fails the same way whatever the machine's overcommit policy."""
    path = repo.path / "params.yaml"
    data = path.read_bytes()
    before = snapshot(repo.path)
    try:
        path.write_bytes(_set("train", hidden_sizes=[16384] * 8)(data))
        proc = repo.run("bash", "-c", f"ulimit -v {2 << 20} && exec {sys.executable} -m stages.train", check=False)
    finally:
        path.write_bytes(data)
    assert snapshot(repo.path) == before
    assert_clean_failure(proc, "train", "train: the network", "hidden_sizes [16384, 16384", "does not fit in memory")
