"""The temporary-file rule of stages/_io.py with real processes: a writer removes the leftovers of
writers that are gone, never the files of a live one, and two processes writing the same output
folder at once both succeed and leave one writer's complete folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.files import snapshot
from tests.helpers.repo import ROOT

pytestmark = pytest.mark.slow

WRITE = ("import sys; from pathlib import Path; from stages._io import write_text; "
         "write_text(Path(sys.argv[1]), 'new')")


def write_in_subprocess(path):
    subprocess.run([sys.executable, "-c", WRITE, str(path)], cwd=ROOT, check=True)


def test_a_live_writer_s_temporary_files_survive_another_writer(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live_file = tmp_path / f".out.txt.{sleeper.pid}.abc123.tmp"
        live_dir = tmp_path / f".out.txt.{sleeper.pid}.def456.old"
        live_file.write_text("being written")
        live_dir.mkdir()
        write_in_subprocess(tmp_path / "out.txt")
        assert live_file.read_text() == "being written" and live_dir.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (tmp_path / "out.txt").read_text() == "new"


def test_a_dead_writer_s_leftovers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".out.txt.{dead.pid}.abc123.tmp"
    leftover.write_text("half")
    (tmp_path / f".out.txt.{dead.pid}.def456.old").mkdir()
    unrelated = tmp_path / ".out.txt.notes"      # not a name the rule makes: left alone
    unrelated.write_text("mine")
    write_in_subprocess(tmp_path / "out.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.txt.notes", "out.txt"]


def test_two_processes_writing_the_same_folder_both_finish_with_complete_files(trained_repo, tmp_path):
    repo = trained_repo.fork(tmp_path / "repo")
    want = snapshot(repo.path, ("data/prepared",))
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-m", "stages.filter_normalize"], cwd=repo.path, env=repo.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert snapshot(repo.path, ("data/prepared",)) == want
        assert not [p.name for p in (repo.path / "data").iterdir() if p.name.startswith(".prepared.")]
