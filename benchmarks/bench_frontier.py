"""Where a training step of the frontier network goes: airbench94's network as
`numpynet.model.build_frontier` builds it (widths 64 / 256 / 256), one batch of random images of
CIFAR shapes, forward, softmax cross-entropy and backward, timed layer by layer, each convolution
against the float32 matrix-product peak this machine measures.

    .venv/bin/python -m benchmarks.bench_frontier                 # batch 512, 3 timed steps
    .venv/bin/python -m benchmarks.bench_frontier --batch-size 256 --steps 5 --no-write
    .venv/bin/python -m benchmarks.bench_frontier --batch-size 1024 --torch-python /tmp/torchvenv/bin/python

With --torch-python, the same step (forward, cross-entropy, backward; no optimizer) of the same
network in PyTorch follows: numpynet and PyTorch each in a fresh process, alternating, --repeats
rounds, PyTorch in both of its memory layouts (NCHW, and channels-last as airbench runs it), each
process reporting the median of its timed steps; the medians and best runs of those, and the
ratio, go into the block too.

The peak is the best of a few float32 products of the convolutions' own size (numpynet.parallel,
on the worker threads the stages use). The report, with the time of an epoch of the pipeline's
45,000 training images extrapolated from the steps, goes to the `bench-frontier` block of
docs/performance.md (benchmarks/report.py). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import stages  # before NumPy: BLAS on one thread and its Haswell kernels, as the stages run

# isort: split
import numpy as np

from benchmarks import report
from numpynet import parallel
from numpynet.conv import KERNEL, Conv2D
from numpynet.losses import softmax_cross_entropy
from numpynet.model import build_frontier

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "bench-frontier"
IMAGE_SHAPE = (3, 32, 32)
WIDTHS = (64, 256, 256)
TRAIN_IMAGES = 45_000        # all ten classes: 50,000 training images minus the 10% validation split

# The same network as build_frontier's in PyTorch: a frozen 3x3 whitening conv (54 filters) and GELU,
# three groups of conv -> 2x2 max pool -> batch norm (no scale) -> GELU -> conv -> batch norm -> GELU,
# global max pool, logits x 1/9, dense; GELU in its tanh form, as ours.
TORCH_STEP = r"""
import json, sys, time, torch
from torch import nn
batch, steps, layout = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
def norm(w):
    bn = nn.BatchNorm2d(w, momentum=0.6, eps=1e-12)
    bn.weight.requires_grad_(False)
    return bn
layers, c = [nn.Conv2d(3, 54, 3, padding=1), nn.GELU(approximate="tanh")], 54
layers[0].weight.requires_grad_(False)
for w in (64, 256, 256):
    layers += [nn.Conv2d(c, w, 3, padding=1), nn.MaxPool2d(2), norm(w), nn.GELU(approximate="tanh"),
               nn.Conv2d(w, w, 3, padding=1), norm(w), nn.GELU(approximate="tanh")]
    c = w
class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(c, 10)
    def forward(self, x):
        return self.dense(x.amax(dim=(2, 3)) / 9)
net = nn.Sequential(*layers, Head())
x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
if layout == "channels_last":
    net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
times = []
for step in range(steps + 1):
    start = time.perf_counter()
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    times.append(time.perf_counter() - start)
print(json.dumps({"steps": times[1:], "version": torch.__version__, "threads": torch.get_num_threads()}))
"""


def matmul_peak(rows: int, inner: int, cols: int, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of numpynet.parallel.matmul on an (rows, inner) @ (inner, cols) product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, inner), dtype=np.float32)
    b = rng.standard_normal((inner, cols), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        parallel.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * cols / best / 1e9


def conv_flops(layer: Conv2D, shape: tuple[int, ...]) -> int:
    """Multiply-adds x 2 of one forward pass of `layer` on an input of `shape` (N, C, H, W)."""
    n, c, h, w = shape
    return 2 * n * h * w * KERNEL * KERNEL * c * layer.out_channels


def train_steps(network, x: np.ndarray, y: np.ndarray, steps: int, after_warm_up=lambda: None) -> list[float]:
    """Seconds of each of `steps` training steps (forward, cross-entropy, backward) after a warm-up one."""
    times = []
    for step in range(steps + 1):
        if step == 1:
            after_warm_up()
        start = time.perf_counter()
        _, grad = softmax_cross_entropy(network.forward(x, training=True), y)
        network.backward(grad)
        times.append(time.perf_counter() - start)
    return times[1:]


def against_torch(args: argparse.Namespace) -> str:
    """The same step in numpynet and in PyTorch (both layouts), each a fresh process, alternating:
    a markdown table of the per-process medians, their median and best, and numpynet's ratio."""
    ours = [sys.executable, "-m", "benchmarks.bench_frontier", "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--time-only"]
    runs = {"numpynet": ours, **{f"PyTorch, {layout}": [args.torch_python, "-c", TORCH_STEP, str(args.batch_size),
                                                        str(args.steps), layout] for layout in ("NCHW", "channels_last")}}
    medians: dict[str, list[float]] = {name: [] for name in runs}
    version = "?"
    for _ in range(args.repeats):
        for name, cmd in runs.items():
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"bench_frontier: error: {name} failed:\n{done.stderr}")
            out = json.loads(done.stdout.strip().splitlines()[-1])
            medians[name].append(statistics.median(out["steps"]))
            version = out.get("version", version)
            print(f"  {name}: median step {medians[name][-1]:.2f} s", flush=True)
    mine = statistics.median(medians["numpynet"])
    rows = []
    for name, times in medians.items():
        ratio = "" if name == "numpynet" else (f"{mine / statistics.median(times):.2f}x, "
                                               f"{min(medians['numpynet']) / min(times):.2f}x")
        rows.append([name.replace("PyTorch", f"PyTorch {version}"), f"{statistics.median(times):.2f} s",
                     ", ".join(f"{t:.2f}" for t in times), ratio])
    table = report.markdown_table(["one step, a fresh process each", "median", "each process's median step, "
                                   "in run order", "numpynet / it: median, best / best"], rows)
    print(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--page", type=Path, default=ROOT / "docs/performance.md")
    parser.add_argument("--torch-python", help="a Python with torch (not this venv): compare with PyTorch")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the comparison with PyTorch")
    parser.add_argument("--time-only", action="store_true", help=argparse.SUPPRESS)   # a comparison's child
    args = parser.parse_args()
    parallel.set_workers(stages.threads())   # as run_stage sets it for the stages

    rng = np.random.default_rng(0)
    network = build_frontier(IMAGE_SHAPE, WIDTHS, 10, rng)
    x = rng.standard_normal((args.batch_size, int(np.prod(IMAGE_SHAPE))), dtype=np.float32)
    y = rng.integers(0, 10, args.batch_size)
    if args.time_only:
        print(json.dumps({"steps": train_steps(network, x, y, args.steps)}))
        return

    seconds: dict[tuple[int, str], list[float]] = {}
    inputs: dict[int, tuple[int, ...]] = {}
    def timer(fn, key: tuple[int, str]):
        def timed(*a, **k):
            if key[1] == "forward":
                inputs[key[0]] = a[0].shape
            start = time.perf_counter()
            out = fn(*a, **k)
            seconds.setdefault(key, []).append(time.perf_counter() - start)
            return out
        return timed

    for i, layer in enumerate(network.layers):
        for name in ("forward", "backward"):
            setattr(layer, name, timer(getattr(layer, name), (i, name)))

    usage = []   # CPU time used when the timed steps start

    def start_timing() -> None:
        seconds.clear()
        usage.append(resource.getrusage(resource.RUSAGE_SELF))

    steps = train_steps(network, x, y, args.steps, after_warm_up=start_timing)
    end = resource.getrusage(resource.RUSAGE_SELF)
    user, system = ((getattr(end, f) - getattr(usage[0], f)) / args.steps for f in ("ru_utime", "ru_stime"))
    step_time = statistics.median(steps)
    epoch_minutes = step_time * TRAIN_IMAGES / args.batch_size / 60

    convs = [(i, layer) for i, layer in enumerate(network.layers) if isinstance(layer, Conv2D)]
    biggest = max(convs, key=lambda pair: conv_flops(pair[1], inputs[pair[0]]))
    n, c, h, w = inputs[biggest[0]]
    peak = matmul_peak(n * h * w, KERNEL * KERNEL * c, biggest[1].out_channels)

    total = sum(statistics.median(v) for v in seconds.values())
    rows = []
    for i, layer in enumerate(network.layers):
        for name in ("forward", "backward"):
            if (i, name) not in seconds:
                continue
            t = statistics.median(seconds[(i, name)])
            label = f"{i:2d} {layer.kind}"
            rate = ""
            if isinstance(layer, Conv2D):
                label += f" {layer.in_channels}->{layer.out_channels} at {inputs[i][2]}x{inputs[i][3]}"
                flops = conv_flops(layer, inputs[i]) * (1 if name == "forward" else 2)
                rate = f"{flops / t / 1e9:.0f} GFLOP/s ({100 * flops / t / 1e9 / peak:.0f}% of peak)"
            rows.append([label, name, f"{t:.3f} s", f"{100 * t / total:.0f}%", rate])
    rows.sort(key=lambda r: -float(r[2].split()[0]))

    summary = (f"One training step of the frontier network (widths {', '.join(map(str, WIDTHS))}) on "
               f"{args.batch_size} random images of CIFAR shapes, {parallel.workers()} worker threads: median "
               f"{step_time:.2f} s (best {min(steps):.2f} s) over {args.steps} steps, so about {epoch_minutes:.0f} "
               f"minutes an epoch of {TRAIN_IMAGES:,} images; CPU time a step: {user:.1f} s user, {system:.1f} s "
               f"system (in the kernel). The float32 matrix-product peak measured on the largest "
               f"convolution's product ({n * h * w}x{KERNEL * KERNEL * c} @ "
               f"{KERNEL * KERNEL * c}x{biggest[1].out_channels}) is {peak:.0f} GFLOP/s.")
    print(summary)
    table = report.markdown_table(["layer", "pass", "time", "share", "convolution speed"],
                                  [r for r in rows if float(r[3][:-1]) >= 1])
    print(table)
    if args.torch_python:
        table = against_torch(args) + "\n\n" + table
    if not args.no_write:
        report.write_block(args.page, BLOCK, summary + "\n\n" + table,
                           report.command_line("benchmarks.bench_frontier", sys.argv[1:]))


if __name__ == "__main__":
    main()
