"""Atomic writes: never a partial file under the final name, no leftovers piling up."""

import os

import numpy as np
import pytest

from stages import _io


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.npy"
    _io.save_npy(target, np.arange(3))
    with pytest.raises(RuntimeError), _io._atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert np.array_equal(np.load(target), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_leftovers_of_killed_runs_are_removed_on_the_next_write(tmp_path):
    dead = 2 ** 22 + 12345                                                 # beyond pid_max: never alive
    live = os.getppid()
    (tmp_path / f".model.npz.{dead}.abc123.tmp").write_bytes(b"partial")  # killed mid-write
    (tmp_path / f".raw.{dead}.x1y2.tmp").mkdir()                           # killed atomic_dir
    (tmp_path / f".raw.{dead}.x1y2.old").mkdir()                           # killed between the renames
    (tmp_path / f".raw.{live}.k3.tmp").mkdir()                             # a live writer's: kept
    (tmp_path / ".model.npz.keep").write_bytes(b"not ours")                # not a leftover pattern: kept
    (tmp_path / ".model.npz.abc.tmp").write_bytes(b"no pid")               # no pid in it: kept
    _io.save_npz(tmp_path / "model.npz", {"a": np.zeros(2)})
    with _io.atomic_dir(tmp_path / "raw") as d:
        (d / "x").write_text("1")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([".model.npz.keep", ".model.npz.abc.tmp", f".raw.{live}.k3.tmp", "model.npz", "raw"])
    assert (tmp_path / "raw" / "x").read_text() == "1"


def test_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    _io.write_text(tmp_path / "t.txt", "x")
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o666 & ~_io._UMASK


def test_npz_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "meta": np.array("{}")}
    _io.save_npz(tmp_path / "a.npz", arrays)
    monkeypatch.setattr("time.time", lambda: 2_000_000_000.0)
    monkeypatch.setattr("time.localtime", lambda *a: (2033, 5, 18, 3, 33, 20, 2, 138, 0))
    _io.save_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = _io.load_npz(tmp_path / "b.npz")
    assert np.array_equal(loaded["w"], arrays["w"]) and str(loaded["meta"]) == "{}"


def test_a_read_only_output_folder_ends_train_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers.repo import ROOT

    if os.geteuid() == 0:
        # root writes anywhere; a missing parent that cannot be created stands in for it
        target = tmp_path / "file"
        target.write_text("not a folder")
        path = target / "metrics.json"
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        path = folder / "metrics.json"
    code = ("import sys; sys.argv=['x']; from stages._io import run_stage, write_json; "
            f"run_stage('train', lambda: write_json(__import__('pathlib').Path({str(path)!r}), {{}}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train: error: cannot read or write"), done.stderr


def test_npy_written_in_chunks_has_the_bytes_of_np_save(tmp_path):
    import io

    a = np.random.default_rng(0).standard_normal((1000, 7)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, a)
    _io.save_npy_chunks(tmp_path / "a.npy", a.shape, a.dtype, (a[i:i + 333] for i in range(0, 1000, 333)))
    _io.save_npy(tmp_path / "b.npy", a)
    assert (tmp_path / "a.npy").read_bytes() == buf.getvalue() == (tmp_path / "b.npy").read_bytes()
    with pytest.raises(ValueError, match="chunks hold 999 rows"):
        _io.save_npy_chunks(tmp_path / "c.npy", a.shape, a.dtype, iter([a[:999]]))
    assert not (tmp_path / "c.npy").exists()


def test_an_output_folder_that_is_a_symlink_is_replaced_without_a_leftover(tmp_path):
    """Found by the second probe: a symlinked output folder left `.<name>.<pid>.*.old` behind."""
    from stages._io import atomic_dir

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "kept.txt").write_text("theirs")
    (tmp_path / "out").symlink_to(elsewhere)
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.txt").write_text("ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]
    assert (elsewhere / "kept.txt").read_text() == "theirs"   # the link's target is not deleted
