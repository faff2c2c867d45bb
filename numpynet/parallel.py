"""Matrix products whose every bit is independent of the number of threads.

OpenBLAS's own threading changes the rounding of float32 products: with one thread it tiles
the output one way, with two or more another, so the same training gave one model with one
thread and another with two. Here BLAS runs single-threaded (the stages ask for that before
NumPy loads, see `stages/__init__.py`), and work is cut into jobs by a rule that depends on
the operands' shapes only; `set_workers(n)` decides how many threads run those jobs. One worker
or sixteen, every job is the same single-threaded computation on the same operands, so every
result is bit-for-bit the same.

Words: a *job* is one unit of work a worker thread runs; a large product is cut into *blocks*
(of rows or columns of its output), one job each; a convolution's batch is cut into runs of
images, one job each (`batch_jobs`).

    matmul(a, b)        a (M, K) @ b (K, N) -> (M, N), like `a @ b` for 2-D operands
    run(jobs)           call each job (disjoint outputs) on the worker threads
    batch_jobs(n, e)    a batch of n items of e elements of work each, cut into jobs
    elementwise(f, *a)  f(*a) for an elementwise f, in cache-sized chunks on the worker threads

Small products (below the first threshold of SPLITS) are one BLAS call on the calling thread,
because handing them to a thread costs more than they take.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# (multiply-adds from which, blocks): a product is cut in two from 2**24 multiply-adds and in four
# from 2**26, never in three (on two workers one of them would idle a third of the time). Smaller
# products stay whole, as a second thread costs more than it saves; four blocks pay only on larger
# products, as each block packs the shared operand again. benchmarks/bench_blocks.py measures each cut.
SPLITS = ((1 << 26, 4), (1 << 24, 2))
ALIGN = 16                 # block edges fall on multiples of 16 rows / columns (BLAS tile sizes)
JOB_ELEMENTS = 1 << 18     # elements of work per job of `batch_jobs` (4 bytes each in float32): a
                           # job's data stays in cache from one of its passes to the next
                           # (time a change with benchmarks/bench_conv.py)
CHUNK_ELEMENTS = 1 << 16   # elements per job of `elementwise`: a chunk of each array and of the
                           # formula's temporaries stays in a core's L2 cache (2 MiB here)

_workers = 1
_pool: ThreadPoolExecutor | None = None


def set_workers(n: int) -> None:
    """Run jobs on `n` threads (n >= 1). Changes speed only, never a result."""
    global _workers, _pool
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    if n != _workers:
        if _pool is not None:
            _pool.shutdown()
        # the calling thread runs jobs itself, so n workers are n - 1 pool threads
        _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="numpynet") if n > 1 else None
        _workers = n


def workers() -> int:
    """The number of threads that run jobs."""
    return _workers


def block_edges(length: int, macs: int) -> list[int]:
    """Where to cut an axis of `length` for a product of `macs` multiply-adds: 0, ..., length.

    A function of the two numbers only (never of the worker count): that is what keeps
    results independent of threads."""
    blocks = next((b for least, b in SPLITS if macs >= least), 1)
    blocks = min(blocks, max(1, length // ALIGN))
    if blocks <= 1:
        return [0, length]
    units = -(-length // ALIGN)   # the axis in ALIGN-sized units, the last one possibly short
    return [min(length, (units * i // blocks) * ALIGN) for i in range(blocks)] + [length]


def batch_jobs(n: int, item_elements: int) -> list[slice]:
    """The n items of a batch cut into jobs of about JOB_ELEMENTS elements of work each
    (`item_elements` per item, at least one item per job), each job a slice of the batch: the
    jobs of the per-image passes of `numpynet._conv_kernel`. A function of the shape only, so
    the jobs, and with them every result, are the same whatever the number of threads."""
    step = max(1, JOB_ELEMENTS // max(1, item_elements))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _take_jobs(jobs: list[Callable[[], object]], todo: itertools.count) -> None:
    for i in todo:  # next() of itertools.count is atomic under the GIL
        if i >= len(jobs):
            return
        jobs[i]()


def run(jobs: list[Callable[[], object]]) -> None:
    """Call every job once, spread over the worker threads, and return when all are done.

    The jobs must write disjoint outputs; each is the same computation whichever thread runs
    it, so the results cannot depend on the worker count. NumPy releases the GIL inside BLAS
    and inside the loops of its copies and ufuncs, so jobs of large array operations run in
    parallel."""
    if _pool is None or len(jobs) < 2:
        for job in jobs:
            job()
        return
    todo = itertools.count()  # each thread takes the next job until none is left
    futures = [_pool.submit(_take_jobs, jobs, todo) for _ in range(min(_workers, len(jobs)) - 1)]
    _take_jobs(jobs, todo)
    for f in futures:
        f.result()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a (M, K) @ b (K, N) -> out (M, N), in a's dtype; bit-identical for any worker count.

    A large product is cut along its longer output axis (rows of a, or columns of b) at
    `block_edges`; each block is one BLAS call, a job on the worker threads."""
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), np.result_type(a, b))
    edges = block_edges(max(m, n), m * n * k)
    if len(edges) == 2:
        return np.matmul(a, b, out=out)
    if m >= n:
        blocks = [(a[s:e], b, out[s:e]) for s, e in itertools.pairwise(edges)]
    else:
        blocks = [(a, b[:, s:e], out[:, s:e]) for s, e in itertools.pairwise(edges)]
    run([functools.partial(np.matmul, x, y, out=o) for x, y, o in blocks])
    return out


def elementwise(fn: Callable[..., np.ndarray | tuple[np.ndarray, ...]], *arrays: np.ndarray
                ) -> np.ndarray | tuple[np.ndarray, ...]:
    """fn(*arrays) for an elementwise `fn` (each element of each result depends on the same
    element of each input alone; it returns one array or a tuple of arrays of the inputs' shape),
    computed over chunks of CHUNK_ELEMENTS of the arrays in memory order, a job each on the
    worker threads: each chunk's temporaries stay in cache instead of each step of the formula
    making a pass over memory. Element by element it is the same computation, so the result is
    the same bits as fn(*arrays), whatever the number of workers, and in the same memory layout
    (C-contiguous, or channels-last seen as (N, C, H, W)). Small arrays, and arrays that differ
    in shape or layout or have gaps, are just fn(*arrays)."""
    a = arrays[0]
    axes = sorted(range(a.ndim), key=lambda i: -a.strides[i])      # the axes in memory order
    if a.size <= CHUNK_ELEMENTS or any(b.shape != a.shape or b.strides != a.strides
                                       or not b.transpose(axes).flags.c_contiguous for b in arrays):
        return fn(*arrays)
    flat = [b.transpose(axes).reshape(-1) for b in arrays]            # views, in memory order

    def store(start: int, results: np.ndarray | tuple[np.ndarray, ...]) -> None:
        for out, result in zip(outs, as_tuple(results), strict=True):
            out[start:start + len(result)] = result

    def job(start: int, stop: int) -> None:
        store(start, fn(*(f[start:stop] for f in flat)))

    first = fn(*(f[:CHUNK_ELEMENTS] for f in flat))   # the first chunk, and the results' number and dtypes
    outs = [np.empty(a.size, r.dtype) for r in as_tuple(first)]
    store(0, first)
    edges = [*range(CHUNK_ELEMENTS, a.size, CHUNK_ELEMENTS), a.size]
    run([functools.partial(job, s, e) for s, e in itertools.pairwise(edges)])
    back = tuple(np.argsort(axes))
    shaped = [out.reshape(a.transpose(axes).shape).transpose(back) for out in outs]
    return shaped[0] if isinstance(first, np.ndarray) else tuple(shaped)


def as_tuple(results: np.ndarray | tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """One array or a tuple of them, as a tuple."""
    return results if isinstance(results, tuple) else (results,)
