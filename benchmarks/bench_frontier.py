"""Where a training step of the frontier network goes: airbench94's network as
`numpynet.model.build_frontier` builds it (widths 64 / 256 / 256), one batch of random images of
CIFAR shapes, forward, softmax cross-entropy and backward, timed layer by layer, each convolution
against the float32 matrix-product peak this machine measures.

    .venv/bin/python -m benchmarks.bench_frontier                 # batch 512, 3 timed steps
    .venv/bin/python -m benchmarks.bench_frontier --batch-size 256 --steps 5 --no-write

The peak is the best of a few float32 products of the convolutions' own size (numpynet.parallel,
on the worker threads the stages use). The report, with the time of an epoch of the pipeline's
45,000 training images extrapolated from the steps, goes to the `bench-frontier` block of
docs/performance.md (benchmarks/report.py). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--page", type=Path, default=ROOT / "docs/performance.md")
    args = parser.parse_args()
    parallel.set_workers(stages.threads())   # as run_stage sets it for the stages

    rng = np.random.default_rng(0)
    network = build_frontier(IMAGE_SHAPE, WIDTHS, 10, rng)
    x = rng.standard_normal((args.batch_size, int(np.prod(IMAGE_SHAPE))), dtype=np.float32)
    y = rng.integers(0, 10, args.batch_size)

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

    steps = []
    for step in range(args.steps + 1):
        if step == 1:
            seconds.clear()
        start = time.perf_counter()
        _, grad = softmax_cross_entropy(network.forward(x, training=True), y)
        network.backward(grad)
        steps.append(time.perf_counter() - start)
    steps = steps[1:]
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
               f"minutes an epoch of {TRAIN_IMAGES:,} images. The float32 matrix-product peak measured on the "
               f"largest convolution's product ({n * h * w}x{KERNEL * KERNEL * c} @ "
               f"{KERNEL * KERNEL * c}x{biggest[1].out_channels}) is {peak:.0f} GFLOP/s.")
    print(summary)
    table = report.markdown_table(["layer", "pass", "time", "share", "convolution speed"],
                                  [r for r in rows if float(r[3][:-1]) >= 1])
    print(table)
    if not args.no_write:
        report.write_block(args.page, BLOCK, summary + "\n\n" + table,
                           report.command_line("benchmarks.bench_frontier", sys.argv[1:]))


if __name__ == "__main__":
    main()
