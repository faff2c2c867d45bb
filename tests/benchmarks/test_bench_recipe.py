"""benchmarks/bench_recipe.py: following a run's train stage through /proc and DVCLive's summary
(a fake `stages.train` the test moves one epoch at a time), and the report from the records."""

import json
import queue
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from benchmarks import bench_recipe

FAKE_TRAIN = """
import json, os, sys
from pathlib import Path

summary = Path("models/training/metrics.json")
summary.parent.mkdir(parents=True, exist_ok=True)
for line in sys.stdin:                       # one line from the test per epoch
    epoch, accuracy = line.split()
    tmp = summary.with_suffix(".tmp")
    tmp.write_text(json.dumps({"train": {"loss": 1.0}, "val": {"loss": 1.0, "accuracy": float(accuracy)},
                               "step": int(epoch)}))
    os.replace(tmp, summary)
    print("written", flush=True)
"""

FAKE_EVALUATE = """
import json
from pathlib import Path

Path("metrics").mkdir(exist_ok=True)
Path("metrics/metrics.json").write_text(json.dumps({"test": {"accuracy": 0.9123}}))
"""


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "train.py").write_text(FAKE_TRAIN)
    (tmp_path / "stages" / "evaluate.py").write_text(FAKE_EVALUATE)
    (tmp_path / "params.yaml").write_text("train:\n  seed: 3\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=tmp_path, check=True)
    return tmp_path


def test_follow_records_each_epoch_the_train_time_and_the_test_accuracy(repo, monkeypatch):
    monkeypatch.setattr(bench_recipe, "POLL", 0.01)
    runner = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import subprocess, sys
        subprocess.run([sys.executable, "-m", "stages.train"], check=True)
        subprocess.run([sys.executable, "-m", "stages.evaluate"], check=True)
    """)], cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    before = time.time()
    lines: queue.Queue[str] = queue.Queue()
    result = {}
    follower = threading.Thread(target=lambda: result.update(
        bench_recipe.follow(repo, 3, runner, log=lines.put)), daemon=True)
    follower.start()

    def next_line(prefix):
        while True:
            line = lines.get(timeout=120)
            if line.startswith(prefix):
                return line

    next_line("bench_recipe: train (pid")
    for epoch, accuracy in ((1, 0.5), (2, 0.75)):   # the next epoch only once this one is recorded
        runner.stdin.write(f"{epoch} {accuracy}\n")
        runner.stdin.flush()
        assert runner.stdout.readline() == "written\n"
        assert f"epoch {epoch} at" in next_line(f"bench_recipe: epoch {epoch}")
    runner.stdin.write("3 0.875\n")   # the last epoch, and train ends at once: seen while running or after
    runner.stdin.close()               # train ends, evaluate runs
    follower.join(timeout=120)
    assert not follower.is_alive()
    assert [(e["epoch"], e["val_accuracy"]) for e in result["epochs"]] == [(1, 0.5), (2, 0.75), (3, 0.875)]
    seconds = [e["seconds"] for e in result["epochs"]]
    assert 0 <= seconds[0] <= seconds[1] <= seconds[2] <= result["train_seconds"] + 0.1
    assert result["train_seconds"] <= time.time() - before + 1
    assert result["test_accuracy"] == 0.9123 and result["seed"] == 3 and result["params"] == "train:\n  seed: 3\n"


def test_started_at_is_the_process_start_time(tmp_path):
    (tmp_path / "sleeper.py").write_text("import sys\nsys.stdin.read()\n")
    before = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "sleeper"], cwd=tmp_path, stdin=subprocess.PIPE)
    try:
        pid = None
        while pid is None:
            pid = bench_recipe.stage_pid("sleeper", tmp_path)
        assert pid == proc.pid and bench_recipe.alive(pid)
        assert before - 1 <= bench_recipe.started_at(pid) <= time.time()
        assert bench_recipe.stage_pid("sleeper", tmp_path / "elsewhere") is None
    finally:
        proc.communicate("")
    assert not bench_recipe.alive(proc.pid)


def record(seed, accuracy, minutes):
    return {"seed": seed, "commit": "abc1234", "date": "2026-12-07", "machine": "a CPU, 2 cores, an OS",
            "train_seconds": minutes * 60, "test_accuracy": accuracy, "params": "",
            "epochs": [{"epoch": 1, "seconds": minutes * 30, "val_accuracy": accuracy - 0.1},
                       {"epoch": 2, "seconds": minutes * 60, "val_accuracy": accuracy}]}


def test_report_writes_each_seed_the_median_and_the_curve(tmp_path):
    results = tmp_path / "results"
    runs = [record(0, 0.9012, 50.0), record(1, 0.9301, 52.5), record(2, 0.9155, 49.0)]
    for run in runs:
        bench_recipe.save(run, results)
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- generated:cifar10-full -->\nold\n<!-- /generated:cifar10-full -->\nend\n")
    png = tmp_path / "curve.png"
    bench_recipe.write_report(page, results, png)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("end\n") and "old" not in text
    for run in runs:
        assert f"| {run['seed']} | {run['test_accuracy']:.4f} | {run['train_seconds'] / 60:.1f} min | 2 |" in text
    median = statistics.median(r["test_accuracy"] for r in runs)
    assert f"| median of 3 | {median:.4f} | 50.0 min |" in text
    assert f"| {bench_recipe.AIRBENCH['accuracy']:.4f} | 47 min |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert json.loads((results / "recipe-seed1.json").read_text()) == runs[1]


def test_report_without_records_says_how_to_make_them(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("<!-- generated:cifar10-full -->\n<!-- /generated:cifar10-full -->\n")
    with pytest.raises(SystemExit, match=r"no records in .*; run `python -m benchmarks\.bench_recipe run` first"):
        bench_recipe.write_report(page, tmp_path / "none", tmp_path / "curve.png")
