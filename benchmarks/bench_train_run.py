"""One timed MLP training run, in a process of its own; prints one JSON line.

    python -m benchmarks.bench_train_run numpy --data data/prepared [--config reference|default] [--epochs 50]
    python -m benchmarks.bench_train_run torch --data data/prepared [--epochs 50]
    python -m benchmarks.bench_train_run numpy --data data/prepared --profile [--epochs 5]

`bench_train` runs this for numpynet and for PyTorch alternately, each in a fresh
process, so neither library's threads (OpenBLAS's, PyTorch's OpenMP pool) are alive
while the other one runs. The numpy run also measures the machine's float32 matmul
peak right before training, in the same process and with the same BLAS settings: those of
the stages, which pin OpenBLAS's AVX2 kernels (stages/__init__.py), so on an AVX-512 CPU
the peak is that of the AVX2 kernels (here the two measured the same); the kernels are
recorded in the result. It then times the first layer's unavoidable work alone at the
training shapes (`first_layer_alone`): the ceiling of any numpy.matmul training loop.
PyTorch uses its own BLAS (MKL / oneDNN), unpinned.

Configs (both on the prepared training split, no validation pass, so only training is timed):
  reference  3072-128-64-3, plain SGD lr 0.01, batch 64: the reference project's config
  default    the `train` section of params.yaml (its options included; numpy only)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import stages  # before NumPy: pins OpenBLAS's kernels and one BLAS thread, as the stages run

# isort: split
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"hidden_sizes": [128, 64], "learning_rate": 0.01, "batch_size": 64, "dropout": 0.0}


def matmul_peak(size: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` float32 (size x size) @ (size x size) products, computed
    as the stages compute them: single-threaded BLAS blocks on `stages.threads()` workers."""
    from numpynet.parallel import matmul

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9


def first_layer_alone(x: np.ndarray, n_out: int, batch: int, steps: int = 200, repeats: int = 5) -> dict[str, float]:
    """Best seconds per step of the first dense layer's unavoidable work alone, at the training shapes,
    on consecutive batches of x (N, D), with nothing else in the loop:

      "products": forward (batch, D) @ (D, n_out) and weight gradient (D, batch) @ (batch, n_out);
      "products_and_update": the same plus the one in-place pass of the SGD update, W -= dW (as if
                             the learning rate were already folded into the gradient).

    The products are `numpynet.parallel.matmul`'s, as the layers compute them (in blocks on the
    worker threads where the shape is large enough). That layer holds ~97% of a reference-config
    step's FLOPs, so no training loop built on these products (and NumPy's in-place arithmetic)
    can run a step faster than these here.
    """
    from numpynet.parallel import matmul

    rng = np.random.default_rng(0)
    w = rng.standard_normal((x.shape[1], n_out), dtype=np.float32)
    dz = rng.standard_normal((batch, n_out), dtype=np.float32) * np.float32(1e-4)
    z, dw = np.empty((batch, n_out), np.float32), np.empty_like(w)
    batches = [x[i * batch:(i + 1) * batch] for i in range(min(steps, len(x) // batch))]

    def products(xb: np.ndarray) -> None:
        matmul(xb, w, out=z)
        matmul(xb.T, dz, out=dw)

    def products_and_update(xb: np.ndarray) -> None:
        products(xb)
        np.subtract(w, dw, out=w)

    best = {"products": float("inf"), "products_and_update": float("inf")}
    for _ in range(repeats):
        for key, step in (("products", products), ("products_and_update", products_and_update)):
            t = time.perf_counter()
            for xb in batches:
                step(xb)
            best[key] = min(best[key], (time.perf_counter() - t) / len(batches))
    return best


def numpy_setup(config: str, epochs: int):
    """(TrainConfig, hidden sizes, dropout, seed) of the named config."""
    from numpynet.model import ModelSpec
    from numpynet.training import TrainConfig

    if config == "reference":
        return (TrainConfig(learning_rate=REFERENCE["learning_rate"], batch_size=REFERENCE["batch_size"], epochs=epochs),
                REFERENCE["hidden_sizes"], REFERENCE["dropout"], 0)

    from stages.params import load, make_config
    from stages.train import PARAMS

    values = load(PARAMS)  # params.yaml in the working directory, validated as the stage does
    spec, cfg = make_config(ModelSpec, values), make_config(TrainConfig, values)
    if spec.model != "mlp":
        raise SystemExit(f"bench_train_run: params.yaml says train.model: {spec.model}; this benchmark times MLPs "
                         "(benchmarks/bench_cnn.py times the CNN)")
    cfg = dataclasses.replace(cfg, epochs=epochs, restore_best=False)  # restore_best needs a validation split
    return cfg, list(spec.hidden_sizes), spec.dropout, values["seed"]


def run_numpy(x: np.ndarray, y: np.ndarray, config: str, epochs: int, profile: bool) -> dict:
    from cifar10.layout import IMAGE_SHAPE
    from numpynet import parallel
    from numpynet.model import build_mlp
    from numpynet.training import RandomStreams, fit

    parallel.set_workers(stages.threads())  # as run_stage does
    cfg, hidden, dropout, seed = numpy_setup(config, epochs)
    streams = RandomStreams.from_seed(seed)
    net = build_mlp(x.shape[1], hidden, int(y.max()) + 1, streams.init, dropout, streams.dropout)
    peak = matmul_peak()
    first_layer = first_layer_alone(x, hidden[0], cfg.batch_size)
    timers = instrument(net) if profile else None
    t = time.perf_counter()
    fit(net, (x, y), None, cfg, streams, IMAGE_SHAPE)
    seconds = time.perf_counter() - t
    out = {"framework": "numpy", "numpy": np.__version__, "blas": blas_info(), "config": config,
           "threads": stages.threads(),
           "layers": [x.shape[1], *hidden, int(y.max()) + 1], "batch_size": cfg.batch_size,
           "epochs": epochs, "images": len(x), "seconds": seconds, "matmul_peak_gflops": peak,
           "first_layer_alone_seconds_per_step": first_layer}
    if timers is not None:
        out["profile_seconds"] = dict(sorted(timers.items(), key=lambda kv: -kv[1]))
    return out


def blas_info() -> dict:
    """OpenBLAS's kernels and threads as threadpoolctl reports them (when it is installed)."""
    try:
        import threadpoolctl
    except ImportError:
        return {}
    return next(({k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                 for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"), {})


def instrument(net) -> dict[str, float]:
    """Wrap every layer's forward/backward, the loss, the augmentations and the optimizer step in
    timers; returns the dict they add seconds to. What is left of the total is the loop itself:
    the batch gather (x[idx]), the schedule and Python."""
    from numpynet import augment, optim, training

    timers: dict[str, float] = {}

    def timed(key: str, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers[key] = timers.get(key, 0.0) + time.perf_counter() - t
        return wrapper

    for i, layer in enumerate(net.layers):
        layer.forward = timed(f"layer {i} {layer.kind} forward", layer.forward)
        layer.backward = timed(f"layer {i} {layer.kind} backward", layer.backward)
    training.softmax_cross_entropy = timed("loss + its gradient", training.softmax_cross_entropy)
    training.soft_targets = timed("soft targets", training.soft_targets)
    for name in ("random_flip", "random_crop", "mixup"):
        setattr(augment, name, timed(name, getattr(augment, name)))
    optim.SGD.step = timed("SGD update", optim.SGD.step)
    return timers


def run_torch(x: np.ndarray, y: np.ndarray, epochs: int) -> dict:
    """The reference config in PyTorch on the CPU: same sizes, init scheme aside, same loop."""
    import torch

    torch.manual_seed(0)
    sizes = [x.shape[1], *REFERENCE["hidden_sizes"], int(y.max()) + 1]
    layers: list = []
    for a, b in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=REFERENCE["learning_rate"])
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    bs = REFERENCE["batch_size"]
    t = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), bs):
            idx = order[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return {"framework": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "config": "reference", "batch_size": bs, "epochs": epochs, "images": len(x),
            "seconds": time.perf_counter() - t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("framework", choices=("numpy", "torch"))
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared")
    parser.add_argument("--config", choices=("reference", "default"), default="reference")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="numpy: per-layer / per-step timers")
    args = parser.parse_args()
    x, y = np.load(args.data / "train_images.npy"), np.load(args.data / "train_labels.npy")
    if args.framework == "torch":
        result = run_torch(x, y, args.epochs)
    else:
        result = run_numpy(x, y, args.config, args.epochs, args.profile)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
