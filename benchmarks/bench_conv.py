"""Time one training epoch of a small CNN built from numpynet.conv on random data of CIFAR
shapes, with a per-layer forward / backward profile. (The comparison with PyTorch is
benchmarks/bench_cnn.py: each library in its own fresh process. Two libraries in one process
fight over the cores and give wrong ratios, so this file no longer runs PyTorch.)

Network: conv 3->32 + pool, ReLU, conv 32->64 + pool, ReLU, conv 64->128 + pool, ReLU, flatten,
dense 2048->128, ReLU, dense 128->3.  One epoch = 13,500 images (the train split of 3 CIFAR
classes) in mini-batches: forward, softmax cross-entropy, backward, plain SGD update; float32.

Run from the repo root:
    .venv/bin/python -m benchmarks.bench_conv
    .venv/bin/python -m benchmarks.bench_conv --profile         # + per-layer breakdown
    ... --batch-size 128 --threads 1                            # other batch size, 1 thread each

The table reports the median and the best epoch; it is printed and written to the `bench-conv`
block of docs/performance.md (benchmarks/report.py), with the profile when --profile is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__" and "--threads" in sys.argv:
    # BLAS reads its thread count once, when NumPy is first imported: set it before that
    _threads = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads

import stages  # before NumPy: BLAS on one thread and its Haswell kernels, as the stages run

# isort: split
import numpy as np

from benchmarks import report
from numpynet import parallel
from numpynet.conv import Conv2D, Flatten
from numpynet.layers import Dense, Layer, ReLU
from numpynet.losses import softmax_cross_entropy

N_IMAGES = 13_500         # train split of 3 CIFAR-10 classes (15,000 minus 10% validation)
IMAGE_SHAPE = (3, 32, 32)
CONV_CHANNELS = [32, 64, 128]
HIDDEN = 128
N_CLASSES = 3
LEARNING_RATE = 0.01      # plain SGD; the value only matters for keeping the weights finite
ROOT = Path(__file__).resolve().parents[1]
BLOCK = "bench-conv"


def build_numpy_cnn(rng: np.random.Generator) -> list[Layer]:
    layers: list[Layer] = []
    c, h = IMAGE_SHAPE[0], IMAGE_SHAPE[1]
    for f in CONV_CHANNELS:
        layers += [Conv2D(c, f, rng, pool=True), ReLU()]  # as numpynet.model.build_cnn builds it
        c, h = f, h // 2
    return layers + [Flatten(), Dense(c * h * h, HIDDEN, rng), ReLU(), Dense(HIDDEN, N_CLASSES, rng)]


def label(j: int, layer: Layer) -> str:
    """"2 conv 32->64" / "7 dense": the layer's index, kind and, for a convolution, its channels."""
    if isinstance(layer, Conv2D):
        return f"{j:2d} conv {layer.in_channels}->{layer.out_channels}"
    return f"{j:2d} {layer.kind}"


def numpy_epoch(layers: list[Layer], x: np.ndarray, y: np.ndarray, batch_size: int,
                timings: dict[str, float] | None = None) -> float:
    """One epoch of SGD over x (N, 3, 32, 32) float32, y (N,) int; returns seconds.
    With `timings`, accumulate per-layer forward/backward seconds into it (slower)."""
    clock = time.perf_counter
    start = clock()
    for i in range(0, len(x), batch_size):
        out = x[i:i + batch_size]
        for j, layer in enumerate(layers):
            t = clock()
            out = layer.forward(out, training=True)
            if timings is not None:
                key = f"{label(j, layer)} fwd"
                timings[key] = timings.get(key, 0.0) + clock() - t
        _, grad = softmax_cross_entropy(out, y[i:i + batch_size])
        for j in range(len(layers) - 1, -1, -1):
            t = clock()
            grad = layers[j].backward(grad, need_input_grad=j > 0)
            if timings is not None:
                key = f"{label(j, layers[j])} bwd"
                timings[key] = timings.get(key, 0.0) + clock() - t
        t = clock()
        lr = np.float32(LEARNING_RATE)
        for layer in layers:
            for k, p in layer.params.items():
                p -= lr * layer.grads[k]
        if timings is not None:
            timings["sgd update"] = timings.get("sgd update", 0.0) + clock() - t
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after a warm-up)")
    parser.add_argument("--images", type=int, default=N_IMAGES, help="images per epoch")
    parser.add_argument("--profile", action="store_true", help="also print a per-layer breakdown")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads for the products (default: the CPUs, as the stages)")
    report.add_arguments(parser, ROOT / "docs/performance.md")
    args = parser.parse_args()
    if not args.no_write:
        report.check_block(args.page, BLOCK)
    parallel.set_workers(stages.threads())  # as run_stage does: products spread over the cores

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.images, *IMAGE_SHAPE), dtype=np.float32)
    y = rng.integers(0, N_CLASSES, args.images)
    layers = build_numpy_cnn(rng)
    # warm-up: buffer allocation, first-touch of the work buffers
    warm = min(len(x), 8 * args.batch_size)
    numpy_epoch(layers, x[:warm], y[:warm], args.batch_size)
    ours = [numpy_epoch(layers, x, y, args.batch_size) for _ in range(args.epochs)]

    print(f"epoch = {args.images} images, batch {args.batch_size}, float32, numpy {np.__version__}, "
          f"{parallel.workers()} worker threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'implementation':<34}{'median s/epoch':>16}{'best s/epoch':>14}")
    print(f"{'numpynet.conv':<34}{statistics.median(ours):>16.2f}{min(ours):>14.2f}")

    parts = [f"One epoch of {args.images:,} random images of CIFAR shapes, batch {args.batch_size}, "
             f"{parallel.workers()} worker threads: median {statistics.median(ours):.2f} s, best {min(ours):.2f} s "
             f"({args.epochs} epochs after a warm-up)."]
    if args.profile:
        timings: dict[str, float] = {}
        total = numpy_epoch(layers, x, y, args.batch_size, timings)
        print(f"\nper-layer breakdown of one numpynet epoch ({total:.2f} s with timers)")
        for key, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
            print(f"  {key:<22}{seconds:>8.3f} s {100 * seconds / total:>5.1f}%")
        rows = [[key.strip(), f"{seconds:.2f} s", f"{100 * seconds / total:.0f}%"]
                for key, seconds in sorted(timings.items(), key=lambda kv: -kv[1]) if seconds >= 0.01 * total]
        rest = sum(seconds for seconds in timings.values() if seconds < 0.01 * total)
        rows.append(["every other part (under 1% each)", f"{rest:.2f} s", f"{100 * rest / total:.0f}%"])
        parts += [f"Where an epoch goes (one more epoch with timers: {total:.2f} s):",
                  report.markdown_table(["layer, pass", "time", "share"], rows)]
    if not args.no_write:
        report.write_block(args.page, BLOCK, "\n\n".join(parts), report.command_line("benchmarks.bench_conv", sys.argv[1:]))


if __name__ == "__main__":
    main()
