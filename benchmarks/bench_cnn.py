"""The README's CNN through the `train` stage against the same network's PyTorch loop, each run in
its own fresh process, alternating, on the same prepared real images.

    CIFAR10_ARCHIVE=... make bench-cnn TORCH_PYTHON=/tmp/torchvenv/bin/python
    CIFAR10_ARCHIVE=... python -m benchmarks.bench_cnn --torch-python /tmp/torchvenv/bin/python [--batch-size 64 128]

The `train` stage's time per epoch is the difference between a 3-epoch and a 1-epoch run of
`python -m stages.train` (so start-up, data loading and evaluation of the validation split
cancel out as far as they are per-run; validation per epoch stays in, as in the stage); PyTorch
runs the same network (conv 32-64-128 + dense 128, He init), the same augmentation (random
flip, 4-pixel random crop), Nesterov SGD with momentum 0.9 and weight decay, batch 64 (or
--batch-size), cropping either one image at a time as numpynet does or the whole batch in one
gather (PyTorch's faster way), timed the same way (3 epochs minus 1 epoch, each a fresh process, each epoch
followed by a pass over the validation split). The matmul peak is measured in the same run,
in a fresh process, as the stages compute products. Prints medians and best runs, FLOPs per
layer and the percent of peak, and writes the `bench-cnn` block of docs/performance.md (one row
per batch size; benchmarks/report.py). It is not a test; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks import report
from benchmarks.bench_train import scratch_copy

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "bench-cnn"
CNN = {"model": "cnn", "conv_channels": [32, 64, 128], "hidden_sizes": [128], "momentum": 0.9, "nesterov": True,
       "learning_rate": 0.03, "lr_schedule": "cosine", "warmup_epochs": 0, "weight_decay": 0.0005, "flip": True,
       "crop_padding": 4, "restore_best": False, "dropout": 0.2}

TORCH_LOOP = r"""
import sys, time, numpy as np, torch
from torch import nn
data, epochs, batch, crop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
start = time.perf_counter()
x = torch.from_numpy(np.load(f"{data}/train_images.npy").reshape(-1, 3, 32, 32))
y = torch.from_numpy(np.load(f"{data}/train_labels.npy"))
xv = torch.from_numpy(np.load(f"{data}/val_images.npy").reshape(-1, 3, 32, 32))
yv = torch.from_numpy(np.load(f"{data}/val_labels.npy"))
torch.manual_seed(0)
layers, c = [], 3
for f in (32, 64, 128):
    layers += [nn.Conv2d(c, f, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    c = f
net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 16, 128), nn.ReLU(), nn.Dropout(0.2),
                    nn.Linear(128, int(y.max()) + 1))
for m in net.modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu"); nn.init.zeros_(m.bias)
decay = [p for n, p in net.named_parameters() if n.endswith("weight")]
rest = [p for n, p in net.named_parameters() if not n.endswith("weight")]
opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest}], lr=0.03, momentum=0.9, nesterov=True)
g = torch.Generator().manual_seed(0)
for epoch in range(epochs):
    net.train()
    order = torch.randperm(len(x), generator=g)
    for i in range(0, len(x), batch):
        idx = order[i:i + batch]
        xb = x[idx]
        flip = torch.rand(len(xb), generator=g) < 0.5
        xb[flip] = xb[flip].flip(-1)
        padded = nn.functional.pad(xb, (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2, len(xb)), generator=g)
        if crop == "loop":  # one slice per image, as numpynet.augment.random_crop does
            xb = torch.stack([padded[k, :, dy[k]:dy[k] + 32, dx[k]:dx[k] + 32] for k in range(len(xb))])
        else:               # one gather for the batch
            ar = torch.arange(32)
            xb = padded[torch.arange(len(xb))[:, None, None, None], torch.arange(3)[None, :, None, None],
                        (dy[:, None] + ar)[:, None, :, None], (dx[:, None] + ar)[:, None, None, :]]
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), y[idx]).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = sum(int((net(xv[i:i + 1000]).argmax(1) == yv[i:i + 1000]).sum()) for i in range(0, len(xv), 1000))
print(time.perf_counter() - start, torch.__version__, torch.get_num_threads())
"""

PEAK = r"""
import stages, time, numpy as np
from numpynet import parallel
parallel.set_workers(stages.threads())
a = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
best = 1e9
for _ in range(5):
    t = time.perf_counter(); parallel.matmul(a, a); best = min(best, time.perf_counter() - t)
print(2 * 4096 ** 3 / best / 1e9)
"""


def layer_flops(batch_images: int = 1) -> list[tuple[str, float]]:
    """Forward multiply-adds x 2 per image, per layer; backward is about twice the forward."""
    out, c, h = [], 3, 32
    for f in (32, 64, 128):
        out.append((f"conv {c}->{f} at {h}x{h}", 2 * h * h * 9 * c * f))
        c, h = f, h // 2
    out += [("dense 2048->128", 2 * 2048 * 128), ("dense 128->3", 2 * 128 * 3)]
    return out


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch-python", required=True, help="a Python with torch (not this venv)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 128], help="one row each (default: 64 128)")
    report.add_arguments(parser, ROOT / "docs/performance.md")
    args = parser.parse_args()
    if not args.no_write:
        report.check_block(args.page, BLOCK)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    rows, versions = [], set()
    with tempfile.TemporaryDirectory(prefix="bench-cnn-") as tmp:
        work = Path(tmp)
        scratch_copy(work)
        for stage in ("fetch", "filter_normalize"):
            subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=work, env=env, check=True, capture_output=True)
        data = work / "data/prepared"
        n_train = int(json.loads((data / "dataset.json").read_text())["counts"]["train"]["total"])
        peak = float(subprocess.run([sys.executable, "-c", PEAK], cwd=work, env=env, capture_output=True, text=True,
                                    check=True).stdout)
        flops = layer_flops()
        per_image = 3 * sum(f for _, f in flops)      # forward + backward (about 2x forward)
        epoch_flop = per_image * n_train
        print(f"CNN 32-64-128 + dense 128, {n_train} images, flip + crop 4, Nesterov SGD; "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; matmul peak {peak:.0f} GFLOP/s")
        for name, f in flops:
            print(f"  {name:<22} {3 * f / 1e6:8.1f} MFLOP per image (forward + backward)")
        print(f"  {'total':<22} {per_image / 1e6:8.1f} MFLOP per image, {epoch_flop / 1e12:.2f} TFLOP per epoch")

        for batch in args.batch_size:
            def train(epochs: int, batch: int = batch) -> float:
                params = yaml.safe_load((work / "params.yaml").read_text())
                params["train"].update(CNN, epochs=epochs, batch_size=batch)
                (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                return timed([sys.executable, "-m", "stages.train"], work, env)

            def torch(epochs: int, crop: str, batch: int = batch) -> float:
                return timed([args.torch_python, "-c", TORCH_LOOP, str(data), str(epochs), str(batch), crop], work, env)

            ours, theirs, batched = [], [], []
            for _ in range(args.repeats):   # alternating, each run a fresh process
                ours.append((train(3) - train(1)) / 2)
                theirs.append((torch(3, "loop") - torch(1, "loop")) / 2)
                batched.append((torch(3, "batched") - torch(1, "batched")) / 2)
            print(f"batch {batch}:")
            runs = (("train stage (numpynet)", ours), ("PyTorch, per-image crops", theirs),
                    ("PyTorch, batched crop", batched))
            for name, times in runs:
                med = statistics.median(times)
                print(f"  {name:<26} median {med:6.2f} s/epoch, best {min(times):6.2f} s "
                      f"({100 * epoch_flop / med / 1e9 / peak:.0f}% of peak)  runs {[round(t, 2) for t in times]}")
            for name, times in runs[1:]:
                print(f"  numpynet / {name}: {statistics.median(ours) / statistics.median(times):.2f} (median), "
                      f"{min(ours) / min(times):.2f} (best)")

            def cell(times: list[float]) -> str:
                return (f"median {statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)}), "
                        f"{100 * epoch_flop / min(times) / 1e9 / peak:.0f}% of peak at best")
            rows.append([batch, cell(ours), cell(batched), cell(theirs),
                         f"{statistics.median(ours) / statistics.median(batched):.2f}x, {min(ours) / min(batched):.2f}x"])
        versions.add(subprocess.run([args.torch_python, "-c", "import torch; print(torch.__version__)"],
                                    capture_output=True, text=True).stdout.strip() or "?")
    if not args.no_write:
        head = (f"Seconds per epoch of {n_train:,} images ({epoch_flop / 1e12:.2f} TFLOP an epoch, "
                f"{per_image / 1e6:.1f} MFLOP an image forward + backward), {args.repeats} runs each in run order; "
                f"PyTorch {', '.join(sorted(versions))}; float32 matmul peak {peak:.0f} GFLOP/s in the same run.")
        table = report.markdown_table(["batch", "`train` stage (numpynet)", "PyTorch, batched crop",
                                       "PyTorch, per-image crops", "numpynet / PyTorch batched: median, best / best"], rows)
        report.write_block(args.page, BLOCK, head + "\n\n" + table,
                           report.command_line("benchmarks.bench_cnn", sys.argv[1:]))


if __name__ == "__main__":
    main()
