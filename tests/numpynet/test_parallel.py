"""Same params and data give the same bits whatever the thread count (stages/__init__.py,
numpynet/parallel.py). Each model kind trains a few steps in a fresh `python` per thread count,
started as a stage starts (the `stages` package imported before NumPy), and every weight and
loss is compared byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from numpynet import parallel
from tests.helpers.repo import ROOT

THREAD_COUNTS = (1, 2, 3, 4, 8, 16)

# Each model kind at shapes that exercise the block splitting: the reference MLP, the default
# params' MLP (dropout, flip, cosine, weight decay), the README's best MLP, the CNN, and the
# frontier network of `make cifar10-full` with its recipe (airbench's schedule, faster batch-norm
# biases, Lookahead, label smoothing) for a few steps.
PROBE = r"""
import hashlib, json, sys
import stages
from numpynet import parallel
from numpynet.model import build_cnn, build_frontier, build_mlp
from numpynet.training import RandomStreams, TrainConfig, fit
import numpy as np

parallel.set_workers(stages.threads())
data = np.random.default_rng(1)
x = data.standard_normal((640, 3072), dtype=np.float32)
y = data.integers(0, 3, 640)
kinds = {
    "mlp_reference": ([128, 64], None, 0.0, TrainConfig(batch_size=64, epochs=1)),
    "mlp_default": ([128, 64], None, 0.2, TrainConfig(batch_size=64, epochs=1, weight_decay=5e-4,
                                                      lr_schedule="cosine", flip=True)),
    "mlp_1024": ([1024, 512, 256], None, 0.2, TrainConfig(batch_size=256, epochs=1, momentum=0.9,
                                                           nesterov=True, crop_padding=4, mixup_alpha=0.2)),
    "cnn": ([128], [32, 64, 128], 0.0, TrainConfig(batch_size=64, epochs=1, momentum=0.9, crop_padding=4,
                                                   flip=True)),
    "frontier": (None, [64, 256, 256], 0.0, TrainConfig(
        batch_size=16, epochs=1, learning_rate=1.5, momentum=0.85, nesterov=True, weight_decay=0.00133,
        lr_schedule="airbench", flip=True, crop_padding=2, label_smoothing=0.2, lookahead=True)),
}
out = {"workers": parallel.workers()}
for name, (hidden, conv, dropout, config) in kinds.items():
    streams = RandomStreams.from_seed(0)
    if name == "frontier":   # 6 steps: Lookahead's every-5-steps update runs once
        xs = x[:96]
        net = build_frontier((3, 32, 32), tuple(conv), 3, streams.init, xs.reshape(-1, 3, 32, 32))
    elif conv:
        net = build_cnn((3, 32, 32), conv, hidden, 3, streams.init, dropout, streams.dropout)
        xs = x[:192]
    else:
        net = build_mlp(3072, hidden, 3, streams.init, dropout, streams.dropout)
        xs = x[:512]
    result = fit(net, (xs, y[:len(xs)]), (x[512:], y[512:]), config, streams, (3, 32, 32))
    digest = hashlib.sha256()
    for value in net.state().values():   # every weight, frozen or not, and the running statistics
        digest.update(value.tobytes())
    digest.update(np.float64([result.history[-1].train_loss, result.history[-1].val_loss]).tobytes())
    out[name] = digest.hexdigest()
print(json.dumps(out))
"""


def run_probe(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_every_model_kind_trains_to_the_same_bytes_on_any_thread_count():
    results = {t: run_probe(t) for t in THREAD_COUNTS}
    for t, r in results.items():
        assert r.pop("workers") == t, "the stages must compute on the thread count asked for"
    reference = results[THREAD_COUNTS[0]]
    for t, r in results.items():
        differ = [kind for kind in reference if r[kind] != reference[kind]]
        assert not differ, f"{differ} trained to other bytes on {t} threads than on {THREAD_COUNTS[0]}"


def test_block_edges_depend_on_the_shape_only_and_cover_the_axis():
    assert parallel.block_edges(128, (1 << 24) - 1) == [0, 128]
    assert parallel.block_edges(128, 1 << 24) == [0, 64, 128]          # the reference MLP's first layer: two
    assert parallel.block_edges(3072, 64 * 3072 * 128) == [0, 1536, 3072]
    assert parallel.block_edges(1000, (1 << 26) - 1) == [0, 496, 1000]
    assert parallel.block_edges(100, 1 << 26) == [0, 16, 48, 80, 100]   # four, on multiples of ALIGN
    assert parallel.block_edges(20, 1 << 30) == [0, 20]                  # too short an axis to cut
    edges = parallel.block_edges(1000, 10**12)
    assert edges[0] == 0 and edges[-1] == 1000 and len(edges) == 5
    assert all(e % parallel.ALIGN == 0 for e in edges[:-1]) and edges == sorted(set(edges))


@pytest.mark.parametrize("shape", [(64, 3072, 128), (3072, 64, 128), (1000, 3072, 1024), (27, 65536, 32), (8, 5, 3)])
def test_matmul_equals_the_product_and_does_not_depend_on_the_workers(shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    by_workers = []
    try:
        for w in (1, 2, 3):
            parallel.set_workers(w)
            by_workers.append(parallel.matmul(a, b))
    finally:
        parallel.set_workers(1)
    np.testing.assert_allclose(by_workers[0], exact, rtol=1e-4, atol=1e-3 * np.sqrt(k))
    for r in by_workers[1:]:
        assert r.tobytes() == by_workers[0].tobytes()


def test_matmul_of_transposed_views_and_into_out():
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((256, 3072), dtype=np.float32), rng.standard_normal((256, 1024), dtype=np.float32)
    out = np.empty((3072, 1024), np.float32)
    parallel.matmul(x.T, g, out=out)                    # dW = x^T dY, as Dense.backward does
    np.testing.assert_allclose(out, x.T.astype(np.float64) @ g, rtol=1e-4, atol=1e-2)
    w = rng.standard_normal((3072, 1024), dtype=np.float32)
    np.testing.assert_allclose(parallel.matmul(g, w.T), g.astype(np.float64) @ w.T, rtol=1e-4, atol=1e-2)


def test_batch_jobs_cover_the_batch_in_order_with_at_least_one_item_each():
    assert parallel.batch_jobs(10, parallel.JOB_ELEMENTS // 3) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert parallel.batch_jobs(4, parallel.JOB_ELEMENTS * 5) == [slice(i, i + 1) for i in range(4)]  # one item each
    assert parallel.batch_jobs(7, 1) == [slice(0, 7)]
    assert parallel.batch_jobs(0, 1) == []


@pytest.mark.parametrize("layout", ["C", "channels_last", "strided"])
def test_elementwise_is_the_formula_bit_for_bit_in_chunks_on_any_worker_count(layout):
    from numpynet.layers import GELU
    rng = np.random.default_rng(2)
    shape = (5, 7, 61, 67)   # 143,045 elements: two full chunks and a short one
    x, g = (3 * rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
    if layout == "channels_last":   # (N, C, H, W) views of (N, H, W, C) memory, as the conv layers hand over
        x, g = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) for a in (x, g))
    elif layout == "strided":       # gaps between elements: no memory order to chunk, computed whole
        x, g = x[:, :, ::2], g[:, :, ::2]
    y0, t0 = GELU.formula(x)
    dx0 = GELU.derivative(g, x, t0)
    sizes = []
    def recording(*a):
        sizes.append(a[0].size)
        return GELU.formula(*a)
    try:
        for w in (1, 2, 3):
            parallel.set_workers(w)
            sizes.clear()
            y, t = parallel.elementwise(recording, x)
            dx = parallel.elementwise(GELU.derivative, g, x, t)
            for got, want in ((y, y0), (t, t0), (dx, dx0)):
                assert got.tobytes() == want.tobytes() and got.strides == want.strides
            if layout == "strided":
                assert sizes == [x.size]
            else:
                assert sizes[0] == parallel.CHUNK_ELEMENTS and sorted(sizes) == sorted(
                    [parallel.CHUNK_ELEMENTS] * 2 + [x.size - 2 * parallel.CHUNK_ELEMENTS])
    finally:
        parallel.set_workers(1)


def test_elementwise_of_small_or_mismatched_arrays_is_fn_itself():
    calls = []
    def fn(*a):
        calls.append([b.shape for b in a])
        return a[0] + a[-1]
    small = np.ones((4, 4), np.float32)
    assert parallel.elementwise(fn, small, small).tolist() == (2 * small).tolist()
    big = np.ones((300, 300), np.float32)
    parallel.elementwise(fn, big, big.T.copy().T)   # the same shape in another layout
    assert calls == [[(4, 4), (4, 4)], [(300, 300), (300, 300)]]
