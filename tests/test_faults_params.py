"""Every params.yaml key, broken three ways, through a real run of the stage that reads it.

The keys come from the repository's params.yaml itself: a key without a row in FAULTS fails
`test_every_key_has_a_fault_row`, and each (key, fault) is a run of `python -m stages.<section>`
in one shared PipelineRepo copy whose outputs were made once by `dvc repro`; params.yaml is put
back after each case. Each case asserts exit status 1, one `<stage>: error: ...` line naming the
key and the bad value and saying what is allowed, no traceback, and outputs (data/, models/,
metrics/, plots/, dvc.lock) byte-identical to before.

`assert_clean_failure` and `snapshot` are shared with the other test_faults_* files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import yaml

from tests.cifar_fixture import REPO_ROOT
from tests.pipeline_repo import PipelineRepo

pytestmark = pytest.mark.slow

OUTPUTS = ("data", "models", "metrics", "plots", "dvc.lock")


# ---------------------------------------------------------------- shared helpers


def snapshot(root: Path, paths: tuple[str, ...] = OUTPUTS) -> dict[str, str]:
    """{relative path: sha256} of every file (hidden ones too) under `paths`; folders as 'dir'."""
    out: dict[str, str] = {}
    for rel in paths:
        p = root / rel
        if p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel] = "dir"
            for f in sorted(p.rglob("*")):
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "dir"
    return out


def assert_clean_failure(proc, stage: str, *fragments: str) -> str:
    """Exit 1, no traceback, and a last stderr line `<stage>: error: ...` holding every fragment.

    Earlier stderr lines are allowed only as notices (e.g. fetch's retry lines). Returns the line.
    """
    out = f"\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 1, f"exit {proc.returncode}{out}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, out
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"{stage}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one final '{stage}: error:' line{out}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in the message{out}"
    return errors[0]


# ---------------------------------------------------------------- the fault table

@dataclass(frozen=True)
class Bad:
    """A value of the right type that is not allowed, and what the message must then hold
    (default: `section.key: <repr(value)>`)."""

    value: Any
    fragment: str | None = None
    id: str = ""
    hint: str | None = None  # overrides Faults.hint for this case


@dataclass(frozen=True)
class Faults:
    wrong_type: Any                           # a value of another type
    bad: tuple[Bad, ...] = ()                 # out of range / not allowed
    no_range: str = ""                        # why there is no out-of-range case (with bad == ())
    hint: str = "expected"                    # the what-to-do words every message for this key holds
    extra: tuple[Bad, ...] = field(default=())  # more wrong-type cases worth a run


HEX64 = "0" * 64
SHA_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

FAULTS: dict[tuple[str, str], Faults] = {
    # fetch
    ("fetch", "url"): Faults(42, (Bad("ftp://example.org/cifar-10-python.tar.gz", id="ftp"),
                                  Bad("www.cs.toronto.edu/cifar-10-python.tar.gz", id="no-scheme"))),
    ("fetch", "md5"): Faults(12345, (Bad("c58f30108f718f92", id="short"), Bad("z" * 32, id="not-hex"))),
    ("fetch", "sha256"): Faults("9d5c2edd", (
        Bad({k: HEX64 for k in SHA_KEYS[:3]}, "fetch.sha256: {", id="key-missing"),
        Bad({**{k: HEX64 for k in SHA_KEYS}, "test_labels": "xyz"}, "fetch.sha256: {", id="not-hex"),
        Bad({**{k: HEX64 for k in SHA_KEYS}, "extra": HEX64}, "fetch.sha256: {", id="unknown-key"))),
    # filter_normalize
    ("filter_normalize", "classes"): Faults("airplane", (
        Bad(["airplane", "airplain"], "filter_normalize.classes: unknown class 'airplain'", id="unknown"),
        Bad(["bird", "cat", "bird"], "filter_normalize.classes: 'bird' listed twice", id="duplicate",
            hint="each class may appear once"),
        Bad(["airplane"], id="single"),
        Bad([], id="empty")),
        hint="airplane, automobile, bird, cat, deer", extra=(Bad(["airplane", 3], "filter_normalize.classes: unknown class 3", id="number-in-list"),)),
    ("filter_normalize", "normalize"): Faults(1, (Bad("zscore"),)),
    ("filter_normalize", "val_fraction"): Faults("0.1", (Bad(1.0, id="one"), Bad(-0.1, id="negative"))),
    ("filter_normalize", "seed"): Faults(True, (Bad(-1),), extra=(Bad(1.5, id="float"),)),
    # train
    ("train", "model"): Faults(["mlp"], (Bad("resnet"),)),
    ("train", "conv_channels"): Faults(32, (Bad([], id="empty"), Bad([32, 0], id="zero-width"),
                                           Bad([8, 8, 8, 8, 8, 8], id="six-blocks"))),
    ("train", "hidden_sizes"): Faults("128,64", (Bad([], id="empty"), Bad([16, 0], id="zero-width")),
                                      extra=(Bad([16, "8"], id="string-in-list"), Bad([16, True], id="bool-in-list"))),
    ("train", "learning_rate"): Faults("0.01", (Bad(0, id="zero"), Bad(-0.01, id="negative"))),
    ("train", "batch_size"): Faults(8.0, (Bad(0, id="zero"),
                                          Bad(100000, "train.batch_size: 100000 is larger than the training set",
                                              id="larger-than-train", hint="choose at most 15"))),
    ("train", "epochs"): Faults(2.5, (Bad(0, id="zero"),)),
    ("train", "seed"): Faults("zero", (Bad(-1),)),
    ("train", "momentum"): Faults("0.9", (Bad(1.0, id="one"), Bad(-0.1, id="negative"))),
    ("train", "nesterov"): Faults("yes", no_range="a boolean; nesterov without momentum is a cross-key case below"),
    ("train", "weight_decay"): Faults([0.1], (Bad(-0.001),)),
    ("train", "lr_schedule"): Faults(1, (Bad("linear"),)),
    ("train", "warmup_epochs"): Faults("1", (Bad(-1),)),
    ("train", "lr_step_epochs"): Faults(2.5, (Bad(0),)),
    ("train", "lr_gamma"): Faults("0.1", (Bad(0, id="zero"), Bad(1.5, id="above-one"))),
    ("train", "dropout"): Faults(True, (Bad(1.0, id="one"), Bad(-0.2, id="negative"))),
    ("train", "flip"): Faults(1, no_range="a boolean"),
    ("train", "crop_padding"): Faults(2.0, (Bad(-1, id="negative"), Bad(17, id="too-large"))),
    ("train", "restore_best"): Faults("false", no_range="a boolean"),
    ("train", "label_smoothing"): Faults("0.1", (Bad(1.0, id="one"), Bad(-0.1, id="negative"))),
    ("train", "mixup_alpha"): Faults([0.2], (Bad(-0.2, id="negative"),)),
    # evaluate
    ("evaluate", "flip_tta"): Faults("yes", no_range="a boolean"),
}


def repo_keys() -> list[tuple[str, str]]:
    """(section, key) for every key of the repository's params.yaml, in file order."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    return [(section, key) for section, values in params.items() for key in values]


def test_every_key_has_a_fault_row():
    keys = repo_keys()
    missing = [f"{s}.{k}" for s, k in keys if (s, k) not in FAULTS]
    assert not missing, f"params.yaml keys without a row in FAULTS (add wrong-type and out-of-range values): {missing}"
    stale = [f"{s}.{k}" for s, k in FAULTS if (s, k) not in keys]
    assert not stale, f"FAULTS rows for keys no longer in params.yaml: {stale}"
    for (s, k), faults in FAULTS.items():
        assert faults.bad or faults.no_range, f"{s}.{k}: give out-of-range values or say why there are none"
        assert not (faults.bad and faults.no_range), f"{s}.{k}: both values and a no-range reason"


# ---------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    stage: str
    edit: Callable[[str], str | None]  # params.yaml text -> new text, or None to delete the file
    fragments: tuple[str, ...]          # what the error line must hold


def _set(section: str, key: str, value: Any) -> Callable[[str], str]:
    def edit(text: str) -> str:
        params = yaml.safe_load(text)
        params[section][key] = value
        return yaml.safe_dump(params, sort_keys=False)
    return edit


def _drop(section: str, key: str | None = None) -> Callable[[str], str]:
    def edit(text: str) -> str:
        params = yaml.safe_load(text)
        (params[section] if key else params).pop(key or section)
        return yaml.safe_dump(params, sort_keys=False)
    return edit


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for section, key in repo_keys():
        name = f"{section}.{key}"
        cases[f"{name}-missing"] = Case(section, _drop(section, key), (f"params.yaml: {name} is missing; expected",))
        faults = FAULTS.get((section, key))
        if faults is None:  # test_every_key_has_a_fault_row fails for it
            continue
        wrong = faults.wrong_type
        cases[f"{name}-wrong-type"] = Case(section, _set(section, key, wrong), (
            f"params.yaml: {name}: {wrong!r} is a {type(wrong).__name__}", faults.hint))
        for bad in faults.extra + faults.bad:
            cases[f"{name}-{bad.id or bad.value}"] = Case(section, _set(section, key, bad.value), (
                bad.fragment or f"params.yaml: {name}: {bad.value!r}", bad.hint or faults.hint))
    cases["train.nesterov-without-momentum"] = Case(
        "train", lambda t: _set("train", "momentum", 0.0)(_set("train", "nesterov", True)(t)),
        ("train.nesterov is true but train.momentum is 0", "set a momentum"))
    for stage in ("fetch", "filter_normalize", "train"):
        cases[f"{stage}-section-missing"] = Case(stage, _drop(stage), (f"params.yaml: missing section '{stage}:'",))
        cases[f"{stage}-invalid-yaml"] = Case(  # an unclosed [ on filter_normalize.seed's line
            stage, lambda t: t.replace("  seed: 0", "  seed: [0", 1),
            ("params.yaml is not valid YAML at line ", ", column ", "fix the file"))
    cases["train-params-yaml-absent"] = Case("train", lambda t: None,
                                             ("cannot read params.yaml", "run from the repository root"))
    return cases


CASES = _cases()


# ---------------------------------------------------------------- running them


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
    """Edit params.yaml, run the stage, put params.yaml back; outputs snapshotted around the run."""
    path = repo.path / "params.yaml"
    text = path.read_text()
    before = snapshot(repo.path)
    try:
        new = case.edit(text)
        assert new != text, "the edit did not change params.yaml"
        if new is None:
            path.unlink()
        else:
            path.write_text(new)
        proc = repo.stage(case.stage)
    finally:
        path.write_text(text)
    return Result(proc, before, snapshot(repo.path))


@pytest.fixture(scope="module")
def results(repo, request) -> dict[str, Result]:
    """Run the selected cases, WORKERS at a time, each worker in its own copy of `repo`
    (a stage process takes ~1 s, mostly imports, so this halves the wall time on 2 cores)."""
    wanted = [item.callspec.params["case"] for item in request.session.items
              if item.module is request.module and "case" in getattr(item, "callspec", SimpleNamespace(params={})).params]
    wanted = list(dict.fromkeys(wanted))
    copies = [repo] + [PipelineRepo(repo.path.with_name(f"repo-{i}"), repo.env) for i in range(1, WORKERS)]
    for copy in copies[1:]:
        shutil.copytree(repo.path, copy.path, symlinks=True)
    queue = list(wanted)
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


WORKERS = max(1, min(2, os.cpu_count() or 1))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_params_stop_the_stage_with_a_message(results, case):
    result, spec = results[case], CASES[case]
    assert_clean_failure(result.proc, spec.stage, *spec.fragments)
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
    assert "train: error: params.yaml: train.learning_rate: -0.5 is not allowed; expected a positive number" in text
    after = snapshot(copy.path)
    assert after["dvc.lock"] == before["dvc.lock"]
    changed = [path for path, digest in after.items() if before.get(path) != digest]
    assert not changed, f"new or changed after a failed dvc repro: {changed}"


def test_a_network_too_big_for_memory_is_refused_by_name(repo):
    """hidden_sizes [1000000000] needs 22 TiB: a typo a user can make. Run under `ulimit -v` so that
    the allocation fails the same way whatever the machine's overcommit policy."""
    path = repo.path / "params.yaml"
    text = path.read_text()
    before = snapshot(repo.path)
    try:
        path.write_text(_set("train", "hidden_sizes", [1000000000])(text))
        proc = repo.run("bash", "-c", f"ulimit -v {8 << 20} && exec {sys.executable} -m stages.train", check=False)
    finally:
        path.write_text(text)
    assert snapshot(repo.path) == before
    assert_clean_failure(proc, "train", "train.hidden_sizes", "1000000000")
