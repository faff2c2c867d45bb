"""How long the matrix products of the pipeline's models take cut into 1, 2, 3 or 4 blocks on
the worker threads: the measurement behind `numpynet.parallel.SPLITS`.

    .venv/bin/python -m benchmarks.bench_blocks [--threads 2] [--repeats 7]

Each row is one product shape the models compute (a (M, K) @ (K, N), cut along its longer output
axis as `numpynet.parallel.matmul` cuts it), the best of `repeats` timings of 100 products, and
each block count's time relative to one block, printed and written to the `bench-blocks` block of
docs/performance.md (benchmarks/report.py). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import stages  # before NumPy: BLAS on one thread and its Haswell kernels, as the stages run

# isort: split
import numpy as np

from benchmarks import report
from numpynet import parallel

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "bench-blocks"

SHAPES = [  # (M, K, N), where from
    ((64, 1024, 128), "a narrower MLP's first layer"),
    ((64, 2048, 128), "CNN head, forward (batch 64)"),
    ((64, 3072, 128), "reference MLP first layer, forward"),
    ((3072, 64, 128), "reference MLP first layer, weight gradient"),
    ((256, 512, 256), "best MLP third layer, forward (batch 256)"),
    ((512, 256, 256), "best MLP third layer, weight gradient"),
    ((27, 32, 65536), "CNN input conv, columns' gradient (batch 64)"),
    ((500, 512, 256), "best MLP, evaluation (batch 1000)"),
    ((1000, 3072, 128), "reference MLP, evaluation (batch 1000)"),
]


def edges(length: int, blocks: int) -> list[int]:
    units = -(-length // parallel.ALIGN)
    return [min(length, (units * i // blocks) * parallel.ALIGN) for i in range(blocks)] + [length]


def seconds(a: np.ndarray, b: np.ndarray, out: np.ndarray, blocks: int, repeats: int) -> float:
    m, n = a.shape[0], b.shape[1]
    cuts = list(zip(edges(max(m, n), blocks), edges(max(m, n), blocks)[1:]))
    if m >= n:
        jobs = [functools.partial(np.matmul, a[s:e], b, out=out[s:e]) for s, e in cuts]
    else:
        jobs = [functools.partial(np.matmul, a, b[:, s:e], out=out[:, s:e]) for s, e in cuts]
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(100):
            parallel.run(jobs)
        best = min(best, (time.perf_counter() - t) / 100)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=stages.threads())
    ap.add_argument("--repeats", type=int, default=7)
    report.add_arguments(ap, ROOT / "docs/performance.md")
    args = ap.parse_args()
    if not args.no_write:
        report.check_block(args.page, BLOCK)
    rows = []
    parallel.set_workers(args.threads)
    rng = np.random.default_rng(0)
    print(f"{args.threads} worker threads; best of {args.repeats} x 100 products; "
          f"time of 2, 3, 4 blocks relative to 1; the block count `SPLITS` picks")
    for (m, k, n), where in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        t = {blocks: seconds(a, b, out, blocks, args.repeats) for blocks in (1, 2, 3, 4)}
        picked = len(parallel.block_edges(max(m, n), m * k * n)) - 1
        ratios = "  ".join(f"{blocks}: {t[blocks] / t[1]:.2f}x" for blocks in (2, 3, 4))
        print(f"  {m:>5} x {k:>5} x {n:>5}  {m * k * n / 1e6:6.1f}M MACs  1: {t[1] * 1e6:6.0f} us  {ratios}"
              f"  -> {picked}  ({where})")
        rows.append([f"({m} x {k}) @ ({k} x {n})", f"{m * k * n / 1e6:.1f}M", f"{t[1] * 1e6:.0f} us",
                     *(f"{t[blocks] / t[1]:.2f}x" for blocks in (2, 3, 4)), picked, where])
    if not args.no_write:
        table = report.markdown_table(["product", "multiply-adds", "1 block", "2 blocks", "3 blocks", "4 blocks",
                                       "`SPLITS` cuts it in", "where"], rows)
        report.write_block(args.page, BLOCK, f"{args.threads} worker threads; best of {args.repeats} x 100 products; "
                           f"2, 3 and 4 blocks as a fraction of one block's time.\n\n{table}",
                           report.command_line("benchmarks.bench_blocks", sys.argv[1:]))


if __name__ == "__main__":
    main()
