"""benchmarks/results.py without running the pipeline: its one-line refusals and its configurations.
The run itself, through the real `dvc` queue: tests/pipeline/test_results_table.py."""

import os
import subprocess
import sys

from benchmarks import results
from tests.helpers.repo import ROOT

BLOCK = "# r\n\n<!-- generated:results -->\nold table\n<!-- /generated:results -->\n\nafter\n"


def run_results(args, env, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "benchmarks.results", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_without_an_archive_it_stops_in_one_line_before_any_work(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(BLOCK)
    env = {**os.environ, "CIFAR10_ARCHIVE": str(tmp_path / "absent.tar.gz")}
    done = run_results(["--page", str(page)], env)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("results: error: no CIFAR-10 archive at ") and "absent.tar.gz" in done.stderr
    assert page.read_text() == BLOCK


def test_a_page_without_the_block_stops_it_before_any_work(synthetic_archive, tmp_path):
    page = tmp_path / "README.md"
    page.write_text("# no block\n")
    env = {**os.environ, "CIFAR10_ARCHIVE": str(synthetic_archive.path)}
    done = run_results(["--page", str(page)], env)
    assert done.returncode != 0
    assert "no line <!-- generated:results -->" in done.stderr
    assert "experiments" not in done.stdout   # stopped before the clone


def test_each_configuration_is_the_committed_params_plus_its_sets():
    assert results.CONFIGS["default"].sets == ()
    assert "train.model=cnn" in results.CONFIGS["cnn-10"].sets
    assert results.TEN_CLASSES in results.CONFIGS["cnn-10"].sets and results.TEN_CLASSES in results.CONFIGS["default-10"].sets
    assert results.command("default") == "dvc exp run"
    lines = results.command("cnn").splitlines()
    assert all(line.endswith(" \\") for line in lines[:-1]) and not lines[-1].endswith("\\")
