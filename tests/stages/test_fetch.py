"""stages.fetch run as `python -m stages.fetch` in a temp folder, on synthetic archives.

Each run gets its own folder holding cifar10/source.yaml (the repo's, with the sha256 set for
the fixture); the stage writes data/raw/ there. Downloads are covered in tests/stages/test_download.py,
broken and malicious archives given to the stage in tests/faults/test_archives.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.archives import FOLDER, REPO_ROOT, SOURCE_FILE, make_archive, make_arrays, run_fetch, tar_member, write_source
from tests.helpers.realdata import real_archive

OUTPUTS = {"train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy", "class_names.json"}


def workdir(tmp_path: Path, fingerprints: dict[str, str], name: str = "run") -> Path:
    path = tmp_path / name
    path.mkdir()
    write_source(path, fingerprints)
    return path


def load_outputs(raw: Path) -> dict:
    assert {p.name for p in raw.iterdir()} == OUTPUTS
    out = {p.stem: np.load(p, allow_pickle=False) for p in raw.glob("*.npy")}
    out["class_names"] = json.loads((raw / "class_names.json").read_text())
    return out


def assert_refused(proc, *fragments: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fetch: error: "), proc.stderr  # one line, no traceback
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_stage_writes_exactly_the_fixture_arrays(synthetic_archive, tmp_path):
    run = workdir(tmp_path, synthetic_archive.fingerprints)
    proc = run_fetch(run, archive=synthetic_archive.path)
    assert proc.returncode == 0, proc.stderr
    assert "60 train + 30 test" in proc.stdout and "CIFAR10_ARCHIVE" in proc.stdout

    out, want = load_outputs(run / "data" / "raw"), make_arrays()
    for key, dtype, shape in [("train_images", np.uint8, (60, 3072)), ("train_labels", np.int64, (60,)),
                              ("test_images", np.uint8, (30, 3072)), ("test_labels", np.int64, (30,))]:
        assert out[key].dtype == dtype and out[key].shape == shape, key
        np.testing.assert_array_equal(out[key], want[key], err_msg=key)
    assert out["class_names"] == ["airplane", "automobile", "bird", "cat", "deer",
                                  "dog", "frog", "horse", "ship", "truck"]
    for path in (run / "data" / "raw").iterdir():  # no pickle leaves the stage
        assert b"\x80\x02" not in path.read_bytes()[:256] and b"numpy.core" not in path.read_bytes()
    assert not (run / "download-cache").exists()  # nothing downloaded, nothing cached


def test_repackaged_archive_gives_byte_identical_outputs(synthetic_archive, tmp_path):
    repacked = tmp_path / "repacked.tar.gz"
    make_archive(repacked, protocol=4, compresslevel=1,
                 member_order=("test_batch",) + tuple(f"data_batch_{i}" for i in (5, 4, 3, 2, 1)) + ("batches.meta",),
                 extra=[tar_member(f"{FOLDER}/readme.html", b"<html></html>")])
    assert repacked.read_bytes() != synthetic_archive.path.read_bytes()

    first, second = workdir(tmp_path, synthetic_archive.fingerprints, "a"), workdir(tmp_path, synthetic_archive.fingerprints, "b")
    assert run_fetch(first, archive=synthetic_archive.path).returncode == 0
    proc = run_fetch(second, archive=repacked)
    assert proc.returncode == 0, proc.stderr
    for name in OUTPUTS:
        assert (first / "data/raw" / name).read_bytes() == (second / "data/raw" / name).read_bytes(), name


@pytest.mark.parametrize("split", ["train", "test"])
def test_archive_one_pixel_off_the_fingerprints_is_refused(synthetic_archive, tmp_path, split):
    def flip(arrays):
        arrays[f"{split}_images"][5, 77] ^= 1
    edited = tmp_path / "edited.tar.gz"
    make_archive(edited, edit=flip)
    run = workdir(tmp_path, synthetic_archive.fingerprints)
    proc = run_fetch(run, archive=edited)
    other = "test" if split == "train" else "train"
    assert_refused(proc, f"decoded {split}_images differ from cifar10/source.yaml sha256", str(edited))
    assert f"{other}_images" not in proc.stderr
    assert not (run / "data").exists()


def test_an_error_while_writing_leaves_no_partial_output(synthetic_archive, tmp_path, monkeypatch):
    from stages import fetch
    from stages._io import StageError

    run = workdir(tmp_path, synthetic_archive.fingerprints)
    monkeypatch.chdir(run)
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(synthetic_archive.path))
    written = []

    def save_then_fill_the_disk(path, array):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path)
        np.save(path, array)
    monkeypatch.setattr(fetch, "save_npy", save_then_fill_the_disk)
    with pytest.raises(StageError, match="cannot write data/raw/: No space left on device"):
        fetch.main()
    assert len(written) == 2  # two files were written before the failure ...
    assert list((run / "data").iterdir()) == []  # ... and none of them is left anywhere


def test_missing_local_archive_names_the_path(synthetic_archive, tmp_path):
    run = workdir(tmp_path, synthetic_archive.fingerprints)
    missing = tmp_path / "nowhere" / "cifar-10-python.tar.gz"
    assert_refused(run_fetch(run, archive=missing), f"CIFAR10_ARCHIVE={missing}", "no such file")
    assert not (run / "download-cache").exists()  # it did not fall back to downloading


@pytest.mark.slow
@pytest.mark.realdata
def test_real_mirror(tmp_path):
    archive = real_archive()
    run = tmp_path / "real"
    (run / SOURCE_FILE).parent.mkdir(parents=True)
    (run / SOURCE_FILE).write_text((REPO_ROOT / SOURCE_FILE).read_text())
    proc = run_fetch(run, archive=archive)
    assert proc.returncode == 0, proc.stderr
    out = load_outputs(run / "data" / "raw")
    assert out["train_images"].shape == (50000, 3072) and out["train_images"].dtype == np.uint8
    assert out["test_images"].shape == (10000, 3072) and out["test_images"].dtype == np.uint8
    assert out["train_labels"].dtype == out["test_labels"].dtype == np.int64
    assert np.bincount(out["train_labels"], minlength=10).tolist() == [5000] * 10
    assert np.bincount(out["test_labels"], minlength=10).tolist() == [1000] * 10
    # the fingerprints published in shared/cifar10/README.md, recomputed from the outputs
    readme = {
        "train_images": "9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111",
        "train_labels": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
        "test_images": "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
        "test_labels": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
    }
    for key, digest in readme.items():
        assert hashlib.sha256(out[key].astype(np.uint8).tobytes()).hexdigest() == digest, key


def test_real_data_tests_look_where_cifar10_archive_points(tmp_path, monkeypatch):
    """They use CIFAR10_ARCHIVE when set (and say so when it is not a file), else the ../shared mirror."""
    from tests.helpers import realdata

    archive = tmp_path / "my-cifar.tar.gz"
    archive.write_bytes(b"x")
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive))
    assert realdata.real_archive() == archive.resolve()
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(tmp_path / "elsewhere.tar.gz"))
    with pytest.raises(pytest.skip.Exception, match=r"CIFAR10_ARCHIVE=.*elsewhere\.tar\.gz is not a file"):
        realdata.real_archive()
    monkeypatch.delenv("CIFAR10_ARCHIVE")
    assert realdata.real_archive_path() == realdata.MIRROR
