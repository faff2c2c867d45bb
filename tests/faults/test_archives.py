"""Broken and malicious archives given to the real fetch stage (`python -m stages.fetch`).

Every case starts from a folder where a good archive has already been fetched (cifar10/source.yaml with
the fixture's fingerprints, data/raw/ complete), then runs the stage on a bad archive via
CIFAR10_ARCHIVE, and asserts: exit 1, one `fetch: error:` line naming the archive and the
problem and what to do, no traceback, data/ byte-identical to before (no partial or temporary
folder either), nothing written outside it, and, for pickles that would run code, that the code
never ran (its marker file is never created, its module never imported).
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.archives import (
    FOLDER,
    call_pickle,
    make_archive,
    py2_pickle,
    reduce_pickle,
    run_fetch,
    tar_member,
    write_source,
)
from tests.helpers.files import assert_clean_failure, snapshot

pytestmark = pytest.mark.slow

ABSOLUTE_TARGET = f"/tmp/cifar-faults-absolute-{uuid.uuid4().hex}"  # must never be created
EVIL_MODULE = "cifar_faults_evil"  # a module beside the stage that touches MARKER when imported
MARKER = "MARKER"


@pytest.fixture(scope="module")
def fetched(synthetic_archive, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder where the good fixture archive was fetched, and its data/ snapshot."""
    base = tmp_path_factory.mktemp("faults-archives") / "fetched"
    base.mkdir()
    write_source(base, synthetic_archive.fingerprints)
    proc = run_fetch(base, archive=synthetic_archive.path)
    assert proc.returncode == 0, proc.stderr
    return base, snapshot(base, ("data",))


def _batch(data: np.ndarray, labels: list[int]) -> bytes:
    return py2_pickle({b"batch_label": b"training batch 3 of 5", b"data": data, b"labels": labels})


def _set_label(value: int) -> Callable[[dict], None]:
    return lambda arrays: arrays["train_labels"].__setitem__(17, value)


# id -> (make_archive keywords or a callable(path, good_bytes) writing the archive, message fragments)
def _truncated(path: Path, good: bytes) -> None:
    path.write_bytes(good[: len(good) // 2])


def _not_gzip(path: Path, good: bytes) -> None:
    path.write_bytes(b"<html><body>Proxy error: 502 Bad Gateway</body></html>\n")


def _plain_tar(path: Path, good: bytes) -> None:
    path.write_bytes(gzip.decompress(good))  # a valid tar, but not gzip'd


def _gzip_of_a_text(path: Path, good: bytes) -> None:
    path.write_bytes(gzip.compress(b"just some text, no tar here\n" * 40))


def _empty_gzip(path: Path, good: bytes) -> None:
    path.write_bytes(gzip.compress(b""))


def _trailing_garbage(path: Path, good: bytes) -> None:
    path.write_bytes(good + b"fifteen bytes!!")   # gzip -t: "trailing garbage ignored"


def _a_gzip_prefix(path: Path, good: bytes) -> None:
    path.write_bytes(good[:10] + b"\0" * 100)    # a gzip header, then nothing that inflates


ALL_MEMBERS = ("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch")

CASES: dict[str, tuple[dict | Callable[[Path, bytes], None], tuple[str, ...]]] = {
    # the gzip / tar layer
    "truncated-gzip": (_truncated, ("truncated", "an incomplete download or copy?")),
    "not-a-gzip": (_not_gzip, ("not a gzip file",)),
    "tar-not-gzipped": (_plain_tar, ("not a gzip file",)),
    "gzip-not-a-tar": (_gzip_of_a_text, ("not a valid tar archive inside the gzip",)),
    "empty-gzip": (_empty_gzip, ("not a valid tar archive inside the gzip",)),
    "trailing-garbage": (_trailing_garbage, ("has data after the end of its gzip stream", "trailing garbage")),
    "gzip-header-then-zeros": (_a_gzip_prefix, ("corrupt gzip data",)),
    "tar-without-cifar-files": (dict(omit=ALL_MEMBERS, extra=[tar_member("readme.html", b"<html></html>")]),
                                (f"archive lacks {FOLDER}/data_batch_1", f"{FOLDER}/test_batch, {FOLDER}/batches.meta")),
    "test-batch-missing": (dict(omit=("test_batch",)), (f"archive lacks {FOLDER}/test_batch;",)),
    # unsafe members, placed before the batches (so refusal cannot wait for the end)
    "dotdot-member": (dict(extra=[tar_member("../escaped", b"x")], extra_first=True),
                      ("member '../escaped' has a '..' component; refused",)),
    "dotdot-inside-folder": (dict(extra=[tar_member(f"{FOLDER}/../../escaped", b"x")], extra_first=True),
                             (f"member '{FOLDER}/../../escaped' has a '..' component",)),
    "absolute-member": (dict(extra=[tar_member(ABSOLUTE_TARGET, b"x")], extra_first=True),
                        (f"member '{ABSOLUTE_TARGET}' has an absolute path; refused",)),
    "symlink-member": (dict(extra=[tar_member(f"{FOLDER}/data_batch_1", None, type=tarfile.SYMTYPE,
                                              linkname="/etc/passwd")], extra_first=True, omit=("data_batch_1",)),
                       (f"member '{FOLDER}/data_batch_1' is a link (to '/etc/passwd'); refused",)),
    "hardlink-member": (dict(extra=[tar_member(f"{FOLDER}/data_batch_1", None, type=tarfile.LNKTYPE,
                                               linkname="/etc/shadow")], extra_first=True, omit=("data_batch_1",)),
                        ("is a link (to '/etc/shadow')",)),
    "device-member": (dict(extra=[tar_member(f"{FOLDER}/zero", None, type=tarfile.CHRTYPE, devmajor=1, devminor=5)],
                           extra_first=True), (f"member '{FOLDER}/zero' is a device or fifo; refused",)),
    "fifo-member": (dict(extra=[tar_member(f"{FOLDER}/pipe", None, type=tarfile.FIFOTYPE)], extra_first=True),
                    (f"member '{FOLDER}/pipe' is a device or fifo",)),
    # a decompression bomb: 210 MiB of zeros in a <1 MB archive, refused from its tar header
    "decompression-bomb": (dict(extra=[tar_member(f"{FOLDER}/data_batch_1", 210 << 20)], extra_first=True,
                                omit=("data_batch_1",)),
                           ("declares 210 MiB, over the 200 MiB limit per member", "decompression bomb")),
    # batches of the wrong form
    "pixels-wrong-shape": (dict(replace={"data_batch_3": _batch(np.zeros((12, 3071), np.uint8), [0] * 12)}),
                           (f"{FOLDER}/data_batch_3", "b'data' has shape (12, 3071); expected (N, 3072)")),
    "pixels-one-dimensional": (dict(replace={"data_batch_3": _batch(np.zeros(3072 * 12, np.uint8), [0] * 12)}),
                               ("b'data' has shape (36864,)",)),
    "pixels-float64": (dict(replace={"data_batch_3": pickle.dumps(
                           {b"data": np.zeros((12, 3072)), b"labels": [0] * 12}, protocol=4)}),
                       (f"{FOLDER}/data_batch_3", "array dtype 'f8' refused; CIFAR-10 arrays are uint8")),
    "pixels-uint16-over-255": (dict(replace={"data_batch_3": pickle.dumps(
                                   {b"data": np.full((12, 3072), 300, np.uint16), b"labels": [0] * 12}, protocol=4)}),
                               ("b'data' has dtype uint16; expected uint8 pixels 0..255",)),
    "label-10": (dict(edit=_set_label(10)), (f"{FOLDER}/data_batch_2", "label 10 out of range; expected 0..9")),
    "label-negative": (dict(edit=_set_label(-1)), ("label -1 out of range; expected 0..9",)),
    "labels-count": (dict(replace={"data_batch_3": _batch(np.zeros((12, 3072), np.uint8), [0] * 11)}),
                     ("11 labels for 12 images",)),
    "pickle-garbage": (dict(replace={"test_batch": b"garbage"}), (f"{FOLDER}/test_batch", "not a valid pickle")),
    # pickles that run code when loaded without restriction (the marker must never appear)
    "pickle-os-system": (dict(replace={"test_batch": reduce_pickle(os.system, f"touch {MARKER}")}),
                         (f"{FOLDER}/test_batch", "posix.system", "refused without running it")),
    "pickle-os-system-protocol-4": (dict(replace={"test_batch": reduce_pickle(os.system, f"touch {MARKER}", protocol=4)}),
                                    ("posix.system", "refused without running it")),
    "pickle-eval": (dict(replace={"data_batch_2": reduce_pickle(eval, f"open({MARKER!r}, 'w').close()")}),
                    (f"{FOLDER}/data_batch_2", "__builtin__.eval", "refused without running it")),
    "pickle-subprocess": (dict(replace={"data_batch_4": call_pickle("subprocess", "check_call", "touch", MARKER)}),
                          ("subprocess.check_call", "refused without running it")),
    "pickle-imports-a-module": (dict(replace={"batches.meta": call_pickle(EVIL_MODULE, "run")}),
                                (f"{FOLDER}/batches.meta", f"{EVIL_MODULE}.run", "refused without running it")),
    "pickle-numpy-load": (dict(replace={"data_batch_5": call_pickle("numpy", "load", "/etc/passwd")}),
                          ("numpy.load", "refused")),
}


def write_evil_module(folder: Path) -> None:
    """A module in the stage's working folder (on sys.path under `python -m`): importing it
    creates MARKER there."""
    (folder / f"{EVIL_MODULE}.py").write_text(f"open({MARKER!r}, 'w').close()\ndef run(*args):\n    return b''\n")


def test_the_evil_module_would_run_if_a_pickle_were_loaded_unrestricted(tmp_path):
    """Control for the `pickle-imports-a-module` case: the payload really imports and runs the
    module from the stage's working folder when given to plain pickle."""
    write_evil_module(tmp_path)
    (tmp_path / "payload.pickle").write_bytes(call_pickle(EVIL_MODULE, "run"))
    subprocess.run([sys.executable, "-c", "import pickle; pickle.load(open('payload.pickle', 'rb'), encoding='bytes')"],
                   cwd=tmp_path, capture_output=True, timeout=60)
    assert (tmp_path / MARKER).exists()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_archive_is_refused_and_data_is_untouched(fetched, synthetic_archive, tmp_path, case):
    build, fragments = CASES[case]
    base, data_before = fetched
    run = tmp_path / "run"
    shutil.copytree(base, run, symlinks=True)
    write_evil_module(run)
    archive = tmp_path / "bad.tar.gz"
    if callable(build):
        build(archive, synthetic_archive.path.read_bytes())
    else:
        make_archive(archive, **build)
    if case == "decompression-bomb":  # a real bomb: over 200x expansion
        assert archive.stat().st_size < 1 << 20

    proc = run_fetch(run, archive=archive)

    assert_clean_failure(proc, "fetch", f"{archive}: ", *fragments, "use an intact cifar-10-python.tar.gz")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # the error line alone
    assert snapshot(run, ("data",)) == data_before, "data/ changed, or a partial/temporary folder was left"
    assert sorted(p.name for p in run.iterdir()) == sorted(["data", "cifar10", f"{EVIL_MODULE}.py"])
    assert not (tmp_path / "escaped").exists() and not os.path.lexists(ABSOLUTE_TARGET)
    assert not (run / MARKER).exists() and not (Path.cwd() / MARKER).exists(), "a pickle ran code"

