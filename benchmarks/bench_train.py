"""Speed and memory of the pipeline on the real data: prints a table and writes a JSON.

    CIFAR10_ARCHIVE=../shared/cifar10/cifar-10-python.tar.gz make bench
    # or: .venv/bin/python -m benchmarks.bench_train [--epochs 50] [--repeats 1] [--out FILE]

1. Trains the reference config (3072-128-64-3 MLP, plain SGD lr 0.01, batch 64)
   on the prepared real training split: seconds per epoch, images per second and
   the GFLOP/s achieved, counting the matrix-multiply FLOPs of the forward pass
   (2*N*in*out per dense layer), of the weight gradients (the same again) and of
   the input gradients of every layer but the first (which needs none).
2. The machine's float32 matmul peak, measured in the same run (best of several
   4096x4096 products), and the ratio of (1) to it.
3. The same MLP, batch, epochs and learning rate in PyTorch on the CPU when
   `torch` is importable (not a dependency: `pip install torch==2.13.0` into the
   venv to include it), same data and same run, and the time ratio ours / PyTorch.
4. Peak resident memory of each stage (run as its own process in a scratch copy
   of the repository) and the wall time of a no-op `dvc repro` there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from numpynet.model import build_mlp
from numpynet.training import TrainConfig, fit, rng_streams

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"hidden_sizes": [128, 64], "learning_rate": 0.01, "batch_size": 64, "epochs": 50}
STAGES = ("fetch", "filter_normalize", "train", "evaluate")


def mlp_flops_per_epoch(n: int, sizes: list[int]) -> float:
    """Matmul FLOPs of one epoch: forward + weight grads for every layer, input grads for all but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    per_sample = sum(2 * 2 * a * b for a, b in pairs) + sum(2 * a * b for a, b in pairs[1:])
    return float(n) * per_sample


def matmul_peak(size: int = 4096, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def train_numpy(x: np.ndarray, y: np.ndarray, epochs: int) -> float:
    rngs = rng_streams(0)
    net = build_mlp(x.shape[1], REFERENCE["hidden_sizes"], int(y.max()) + 1, rngs["init"])
    cfg = TrainConfig(learning_rate=REFERENCE["learning_rate"], batch_size=REFERENCE["batch_size"], epochs=epochs)
    return _timed(lambda: fit(net, x, y, None, None, cfg, rngs["shuffle"]))


def train_torch(x: np.ndarray, y: np.ndarray, epochs: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    sizes = [x.shape[1], *REFERENCE["hidden_sizes"], int(y.max()) + 1]
    layers: list = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=REFERENCE["learning_rate"])
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    bs = REFERENCE["batch_size"]

    def run() -> None:
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), bs):
                idx = order[i:i + bs]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xt[idx]), yt[idx]).backward()
                opt.step()
    return _timed(run)


def scratch_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in files:
        if rel and not rel.startswith(("data/", "models/")) and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)


def run_measured(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one child process, from wait4's own rusage."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()}")
    return time.perf_counter() - t, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=REFERENCE["epochs"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench_train.json")
    args = parser.parse_args()
    if not os.environ.get("CIFAR10_ARCHIVE") and not (ROOT / "data/raw").exists():
        print("note: CIFAR10_ARCHIVE is not set; fetch will download CIFAR-10", file=sys.stderr)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__}}

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        scratch_copy(work)
        stages = {}
        for stage in STAGES:
            seconds, rss = run_measured([sys.executable, "-m", f"stages.{stage}"], work, env)
            stages[stage] = {"seconds": round(seconds, 2), "peak_rss_mib": round(rss, 1)}
            print(f"  stage {stage:<17} {seconds:7.2f} s  {rss:7.1f} MiB", flush=True)
        subprocess.run([shutil.which("dvc", path=env["PATH"]) or "dvc", "commit", "-f", "-q"], cwd=work, env=env, check=True)
        noop = min(run_measured(["dvc", "repro"], work, env)[0] for _ in range(3))
        results["stages"] = stages
        results["noop_dvc_repro_seconds"] = round(noop, 2)
        x = np.load(work / "data/prepared/train_images.npy")
        y = np.load(work / "data/prepared/train_labels.npy")

    sizes = [x.shape[1], *REFERENCE["hidden_sizes"], int(y.max()) + 1]
    flops = mlp_flops_per_epoch(len(x), sizes) * args.epochs
    peak = matmul_peak()
    ours = train_numpy(x, y, args.epochs)
    torch_s = train_torch(x, y, args.epochs)
    results["train"] = {
        "config": {**REFERENCE, "epochs": args.epochs, "images": len(x)},
        "seconds": round(ours, 2), "seconds_per_epoch": round(ours / args.epochs, 4),
        "images_per_second": round(len(x) * args.epochs / ours), "gflop_per_second": round(flops / ours / 1e9, 1),
        "matmul_peak_gflop_per_second": round(peak, 1), "fraction_of_peak": round(flops / ours / 1e9 / peak, 3),
        "torch_seconds": None if torch_s is None else round(torch_s, 2),
        "ratio_ours_to_torch": None if torch_s is None else round(ours / torch_s, 3),
    }
    t = results["train"]
    print(f"\ntraining {sizes} batch {REFERENCE['batch_size']}, {args.epochs} epochs on {len(x)} images")
    print(f"  {'numpynet':<26} {ours:7.2f} s   {t['seconds_per_epoch']:.3f} s/epoch   "
          f"{t['images_per_second']:>8} img/s   {t['gflop_per_second']:6.1f} GFLOP/s")
    print(f"  {'float32 matmul peak':<26} {peak:7.1f} GFLOP/s   -> training at {100 * t['fraction_of_peak']:.0f}% of peak")
    if torch_s is None:
        print("  PyTorch: not importable, skipped (pip install torch==2.13.0 to compare)")
    else:
        print(f"  {'PyTorch ' + __import__('torch').__version__:<26} {torch_s:7.2f} s   ratio ours/PyTorch {ours / torch_s:.2f}")
    print(f"  no-op dvc repro: {noop:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
