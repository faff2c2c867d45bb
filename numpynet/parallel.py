"""Matrix products whose every bit is independent of the number of threads.

OpenBLAS's own threading changes the rounding of float32 products: with one thread it tiles
the output one way, with two or more another, so the same training gave one model with one
thread and another with two. Here BLAS runs single-threaded (the stages ask for that before
NumPy loads, see `stages/__init__.py`), and a large product is cut into blocks by a rule that
depends on the operands' shapes only; `set_workers(n)` decides how many threads compute those
blocks. One worker or sixteen, every block is the same single-threaded BLAS call on the same
operands, so every result is bit-for-bit the same.

    matmul(a, b)        a (M, K) @ b (K, N) -> (M, N), like `a @ b` for 2-D operands

Small products (below MIN_SPLIT_MACS multiply-adds) are one BLAS call on the calling thread,
because handing them to a thread costs more than they take.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_SPLIT_MACS = 1 << 24   # one block per this many multiply-adds: handing a thread less work
                           # than that costs more than it saves (benchmarks/mlp_timing.py)
MAX_BLOCKS = 4             # at most this many blocks, so up to 4 workers have work
ALIGN = 16                 # block edges fall on multiples of 16 rows / columns (BLAS tile sizes)

_workers = 1
_pool: ThreadPoolExecutor | None = None


def set_workers(n: int) -> None:
    """Compute blocks on `n` threads (n >= 1). Changes speed only, never a result."""
    global _workers, _pool
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    if n != _workers:
        if _pool is not None:
            _pool.shutdown()
        # the calling thread computes one block itself, so n workers are n - 1 pool threads
        _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="numpynet") if n > 1 else None
        _workers = n


def workers() -> int:
    """The number of threads that compute the blocks of a large product."""
    return _workers


def block_edges(length: int, macs: int) -> list[int]:
    """Where to cut an axis of `length` for a product of `macs` multiply-adds: 0, ..., length.

    A function of the two numbers only (never of the worker count): that is what keeps
    results independent of threads."""
    blocks = min(MAX_BLOCKS, macs // MIN_SPLIT_MACS, max(1, length // ALIGN))
    if blocks <= 1:
        return [0, length]
    units = -(-length // ALIGN)   # the axis in ALIGN-sized units, the last one possibly short
    return [min(length, (units * i // blocks) * ALIGN) for i in range(blocks)] + [length]


def _take_blocks(jobs: list, todo: itertools.count) -> None:
    for i in todo:  # next() of itertools.count is atomic under the GIL
        if i >= len(jobs):
            return
        a, b, out = jobs[i]
        np.matmul(a, b, out=out)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a (M, K) @ b (K, N) -> out (M, N), in a's dtype; bit-identical for any worker count.

    A large product is cut along its longer output axis (rows of a, or columns of b) at
    `block_edges`; each block is one BLAS call, computed on the worker threads."""
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), np.result_type(a, b))
    edges = block_edges(max(m, n), m * n * k)
    if len(edges) == 2:
        return np.matmul(a, b, out=out)
    if m >= n:
        jobs = [(a[s:e], b, out[s:e]) for s, e in itertools.pairwise(edges)]
    else:
        jobs = [(a, b[:, s:e], out[:, s:e]) for s, e in itertools.pairwise(edges)]
    if _pool is None:
        for x, y, o in jobs:
            np.matmul(x, y, out=o)
    else:  # NumPy releases the GIL inside BLAS, so the blocks run in parallel
        todo = itertools.count()  # each thread takes the next block until none is left
        futures = [_pool.submit(_take_blocks, jobs, todo) for _ in range(min(_workers, len(jobs)) - 1)]
        _take_blocks(jobs, todo)
        for f in futures:
            f.result()
    return out
