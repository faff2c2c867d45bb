"""Runs killed with SIGKILL and rerun, and a training run that diverges.

- `train` killed after epoch 1, before it saves (a full output pipe holds it at its first log
  line), then rerun: the rerun's outputs are byte-identical to those of
  an uninterrupted run (the one `dvc repro` made), and while train runs, a watcher reading
  models/model.npz never sees a file that is not complete. The training record
  (models/training/) is written live, epoch by epoch, so a killed run leaves the epochs it
  finished; DVC removes models/ before it runs train, and a rerun replaces the record.
- `fetch` killed mid-download from a slow local server: nothing under data/, nothing under the
  archive's final name in the cache; the rerun resumes from the bytes already received and
  writes exactly what a fetch from the local archive writes.
- a learning rate that makes the loss overflow: exit 1 with the NaN message suggesting a smaller
  learning rate, no traceback, no model file written, dvc.lock unchanged under `dvc repro`.

The archive here is larger than the session fixture (2100 images, 6.8 MB) so that training
and the download last long enough to be interrupted.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import pipes
from tests.helpers.archives import fixture_fingerprints, make_archive, run_fetch, write_source
from tests.helpers.files import assert_clean_failure, digests, md5, sha256, snapshot
from tests.helpers.http import NAME, FaultServer, fetch_process, start_fetch
from tests.helpers.repo import ROOT, PipelineRepo

pytestmark = pytest.mark.slow

# 3 classes x 200 = 600 images: 540 train, 60 validation; a 3072-256-128-3 MLP (a 3 MB model
# file) for 6 epochs takes a few seconds, long enough to be killed after epoch 1.
TRAIN = {"hidden_sizes": [256, 128], "batch_size": 32, "epochs": 6}
TRAIN_OUTPUTS = ("models/model.npz", "models/training/metrics.json", "models/training/plots/metrics/train/loss.tsv",
                 "models/training/plots/metrics/val/loss.tsv", "models/training/plots/metrics/val/accuracy.tsv")
# One BLAS thread per process: on 2 shared cores, threaded BLAS triples the CPU time of these
# small products. Every run compared here uses the same setting.
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("faults-interrupt-archive") / "cifar-10-python.tar.gz"
    make_archive(path, train_per_class=200, test_per_class=10, seed=3, compresslevel=1)
    return path, fixture_fingerprints(path)


@pytest.fixture(scope="module")
def repo(big_archive, tmp_path_factory) -> PipelineRepo:
    """fetch, filter_normalize and an uninterrupted train, by `dvc repro train`."""
    repo = PipelineRepo.create(tmp_path_factory.mktemp("faults-interrupt") / "repo", *big_archive, train=TRAIN)
    repo.env.update(ONE_BLAS_THREAD)
    repo.dvc("repro", "train")
    return repo


class Watcher:
    """Reads models/model.npz in a loop while a run goes on; records every state in which it
    exists but is not a complete, loadable file."""

    def __init__(self, root: Path) -> None:
        self.model = root / "models/model.npz"
        self.problems: list[str] = []
        self.complete_models: set[str] = set()
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.reads += 1
            try:
                data = self.model.read_bytes()
            except FileNotFoundError:
                pass
            else:
                try:
                    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                        for key in npz.files:
                            npz[key]
                    self.complete_models.add(sha256(data))
                except Exception as err:
                    self.problems.append(f"models/model.npz ({len(data)} bytes): {err!r}")
            time.sleep(0.002)


def start_stage(repo: PipelineRepo, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"stages.{name}"], cwd=repo.path, env=repo.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def test_train_killed_after_an_epoch_before_it_saves_then_rerun_equals_an_uninterrupted_run(repo):
    reference = digests(repo.path, TRAIN_OUTPUTS)  # from the uninterrupted `dvc repro train`
    shutil.rmtree(repo.path / "models")  # as dvc does before it runs the stage

    with Watcher(repo.path) as watcher:
        proc = start_stage(repo, "train")
        # its output pipe full before it writes anything: train blocks at its first line, which it
        # writes once epoch 1 is over and logged, and stays there until it is killed
        pipes.fill(proc.stdout.fileno())
        deadline = time.monotonic() + 300
        while not pipes.blocked_writing(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"train ended by itself before the kill: {out}{err}"
    assert not (repo.path / "models/model.npz").exists(), "a model file after train was killed"
    leftovers = [p.name for p in (repo.path / "models").iterdir()]
    assert leftovers == ["training"], f"files left in models/ by the killed run: {leftovers}"
    logged = (repo.path / TRAIN_OUTPUTS[2]).read_text().splitlines()   # the live record: epoch 1
    assert logged[0] == "step\tloss" and [row.split("\t")[0] for row in logged[1:]] == ["1"]
    assert watcher.problems == []

    with Watcher(repo.path) as watcher:
        proc = repo.stage("train")
    assert proc.returncode == 0, proc.stderr
    assert digests(repo.path, TRAIN_OUTPUTS) == reference, "the rerun differs from the uninterrupted run"
    assert sorted(p.name for p in (repo.path / "models").iterdir()) == ["model.npz", "training"], \
        "the rerun left the killed run's record (or a temporary copy of it) beside its own"
    assert watcher.problems == [], watcher.problems
    assert watcher.complete_models <= {reference["models/model.npz"]}  # only ever the final model
    assert watcher.reads > 50
    assert repo.dvc("status", "train").stdout.strip().endswith("Data and pipelines are up to date."), \
        "dvc does not see the rerun's outputs as those dvc.lock records"


def test_fetch_killed_mid_download_then_rerun_resumes(big_archive, tmp_path):
    path, fingerprints = big_archive
    body = path.read_bytes()
    reference = tmp_path / "reference"  # an uninterrupted fetch, from the local archive
    reference.mkdir()
    write_source(reference, fingerprints)
    assert run_fetch(reference, archive=path).returncode == 0

    server = FaultServer(body, [f"stall-after-{3 << 20}", "ok"])  # 3 MiB, then silence
    try:
        run, cache = tmp_path / "run", tmp_path / "cache"
        run.mkdir()
        write_source(run, fingerprints, url=server.url(), md5=md5(body))
        part = cache / f"{NAME}.part"
        proc = start_fetch(run, cache, env={"CIFAR10_DOWNLOAD_TIMEOUT": "60"})
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= 2 << 20):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the download did not get going"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        received = part.stat().st_size
        assert 2 << 20 <= received <= 3 << 20
        assert not (run / "data").exists(), "fetch killed mid-download left data/"
        assert sorted(p.name for p in cache.iterdir()) == [f"{NAME}.part"]  # nothing under the final name

        proc = fetch_process(run, cache)
        assert proc.returncode == 0, proc.stderr
        assert [r["range"] for r in server.requests] == [None, f"bytes={received}-"]
        assert server.requests[1]["sent"] == len(body) - received  # only the missing bytes
        assert (cache / NAME).read_bytes() == body and not part.exists()
        assert snapshot(run, ("data",)) == snapshot(reference, ("data",))
    finally:
        server.close()


@pytest.fixture(scope="module")
def diverged(repo, tmp_path_factory):
    """`python -m stages.train` with a constant learning_rate 10 (the largest allowed); outputs snapshotted around it."""
    params = repo.path / "params.yaml"
    text = params.read_text()
    before = snapshot(repo.path)
    repo.set_param("train", "learning_rate", 10)
    repo.set_param("train", "lr_schedule", "constant")  # so the message shows exactly 10
    repo.set_param("train", "warmup_epochs", 0)
    try:
        proc = repo.stage("train")
    finally:
        params.write_text(text)
    return proc, before, snapshot(repo.path)


def test_divergence_stops_with_the_nan_message(diverged):
    proc, before, after = diverged
    assert_clean_failure(proc, "train", "the training loss became nan", "(learning rate 10)",
                         "try a smaller learning_rate")
    assert after == before, "a diverged run changed or left files among the outputs"


def test_divergence_message_is_the_only_output(diverged):
    proc, _, _ = diverged
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_divergence_under_dvc_repro_writes_no_model_and_keeps_dvc_lock(repo, tmp_path):
    copy = PipelineRepo(tmp_path / "copy", repo.env)
    shutil.copytree(repo.path, copy.path, symlinks=True)
    before = snapshot(copy.path)
    copy.set_param("train", "learning_rate", 10)
    proc = copy.dvc("repro", "train", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text, text
    assert "train: error: the training loss became nan" in text and "try a smaller learning_rate" in text
    after = snapshot(copy.path)
    assert after["dvc.lock"] == before["dvc.lock"]
    assert not (copy.path / "models/model.npz").exists()  # dvc removed it before the run; none was written
    changed = [p for p, d in after.items() if before.get(p) != d]
    assert not changed, f"new or changed after a failed dvc repro: {changed}"


# A file cut short by something outside the pipeline (a killed copy, a full disk, a
# half-finished `dvc checkout`) is refused by the stage that reads it, by name, with what to rerun.
HALF_WRITTEN = {
    "raw-train-images": ("data/raw/train_images.npy", "filter_normalize",
                         ("cannot read data/raw/train_*.npy", "run `dvc repro fetch`"),
                         ("data/prepared",)),
    "prepared-train-images": ("data/prepared/train_images.npy", "train",
                              ("cannot read train data in data/prepared/", "run `dvc repro -f filter_normalize`"),
                              TRAIN_OUTPUTS),
    "model": ("models/model.npz", "evaluate",
              ("models/model.npz is not a usable model file", "run `dvc repro train`"),
              ("metrics", "plots")),
}


@pytest.mark.parametrize("case", list(HALF_WRITTEN))
def test_a_half_written_input_is_refused_by_the_next_stage(repo, tmp_path, case):
    damaged, stage, fragments, outputs = HALF_WRITTEN[case]
    copy = PipelineRepo(tmp_path / "copy", repo.env)
    shutil.copytree(repo.path, copy.path, symlinks=True)
    target = copy.path / damaged
    data = target.read_bytes()
    target.unlink()  # dvc may have linked it to its cache: never write through
    target.write_bytes(data[: len(data) // 3])
    before = snapshot(copy.path, outputs)
    proc = copy.stage(stage)
    assert_clean_failure(proc, stage, *fragments)
    assert snapshot(copy.path, outputs) == before


def test_sigterm_in_mid_epoch_leaves_the_earlier_model_and_record_as_they_were(repo):
    """SIGTERM (a `kill`, a cancelled CI job) ends train in one line, exit 143, with the earlier
    model and training record byte-identical and nothing left beside them: the record DVCLive was
    writing in place is removed and the earlier one put back."""
    before = snapshot(repo.path)
    proc = start_stage(repo, "train")
    first = proc.stdout.readline()
    assert first.startswith("epoch   1/"), first + proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert f"epoch {TRAIN['epochs']:3d}/" not in out, "signalled too late: training had finished"
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["train: interrupted; no output was written under its final name, earlier ones "
                                        "are as they were"], err
    assert snapshot(repo.path) == before


def test_sigterm_inside_an_atomic_write_removes_the_temporary_folder(tmp_path):
    """The mechanism, without timing: a stage signals itself while its temporary folder exists."""
    code = """
import os, signal, stages
from pathlib import Path
from stages._io import atomic_dir, run_stage
def main():
    with atomic_dir(Path("out")) as tmp:
        (tmp / "half.npy").write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGTERM)
        (tmp / "never.npy").write_bytes(b"")
run_stage("filter_normalize", main)
"""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.npy").write_bytes(b"old")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 143 and "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]          # no temporary folder beside it
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.npy"]  # the earlier output as it was


def test_sigterm_while_filter_normalize_writes_leaves_data_as_it_was(repo):
    """The probe's case, through the stage's own code and without timing: the signal arrives
    while the first split is being written (the stage signals itself from inside its writer)."""
    code = """
import os, signal, sys
import stages.filter_normalize as stage
write = stage.save_npy_chunks
def write_then_terminated(path, *args):
    os.kill(os.getpid(), signal.SIGTERM)   # handled at the next bytecode: inside this write
    return write(path, *args)
stage.save_npy_chunks = write_then_terminated
stage.run_stage("filter_normalize", stage.main)
"""
    repo.set_param("filter_normalize", "val_fraction", 0.2)   # so that a finished run would change data/prepared
    try:
        before = snapshot(repo.path)
        done = repo.run(sys.executable, "-c", code, check=False, timeout=300)
    finally:
        repo.set_param("filter_normalize", "val_fraction", 0.1)
    assert done.returncode == 143 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("filter_normalize: interrupted"), done.stderr
    assert snapshot(repo.path) == before, "data/ changed, or a temporary folder was left in it"
