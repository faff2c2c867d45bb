"""Speed and memory of the pipeline on the real data: prints a table and writes a JSON.

    CIFAR10_ARCHIVE=../shared/cifar10/cifar-10-python.tar.gz make bench
    # or: .venv/bin/python -m benchmarks.bench_train [--epochs 50] [--repeats 3] [--no-torch] [--out FILE]

1. Training the reference config (3072-128-64-3 MLP, plain SGD lr 0.01, batch 64) on the
   prepared real training split: seconds per epoch, images per second and the GFLOP/s
   achieved, counting the matrix-multiply FLOPs of the forward pass (2*N*in*out per dense
   layer), of the weight gradients (the same again) and of the input gradients of every layer
   but the first (which needs none). Also the default params.yaml config (its options on).
2. The machine's float32 matmul peak (best of five 4096x4096 products), measured in each
   numpynet training process right before it trains, and the ratio of (1) to it.
   The ceiling: the time of the first layer's forward and weight-gradient products alone, and
   with its in-place update W -= dW (same shapes, same process, nothing else in the loop), for
   as many steps as the run, computed as the layers compute them (numpynet.parallel.matmul):
   no training loop built on those products beats it.
3. The same MLP, batch, epochs and learning rate in PyTorch on the CPU when `torch` is
   importable (not a dependency: `pip install torch==2.13.0` into the venv to include it),
   and the time ratio ours / PyTorch.
4. Peak resident memory of each stage (run as its own process in a scratch copy of the
   repository) and the wall time of a no-op `dvc repro` there.
5. Where the time goes: one profiled numpynet run (per layer, loss, update; the rest is the
   loop: batch gather, schedule, Python).

The tables go to the `bench-train` block of docs/performance.md (benchmarks/report.py), and are
printed. Every training run is a fresh process (benchmarks/bench_train_run.py). This machine's speed
drifts by 2x from minute to minute (shared host), so numpynet and PyTorch runs alternate,
`--repeats` times, and the table gives medians and the median of the per-pair ratios, and the
best runs: here a run is either at full speed or about 2.5x slower (when the host takes a core
from a 2-thread OpenBLAS run), so the best run is the closest to what the code itself costs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs/performance.md"
BLOCK = "bench-train"
STAGES = ("fetch", "filter_normalize", "train", "evaluate")
# the reference config as train params (the stage still validates every epoch on the val split)
REFERENCE_STAGE = {"model": "mlp", "hidden_sizes": [128, 64], "learning_rate": 0.01, "batch_size": 64,
                   "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "lr_schedule": "constant",
                   "warmup_epochs": 0, "dropout": 0.0, "flip": False, "crop_padding": 0, "restore_best": False,
                   "label_smoothing": 0.0, "mixup_alpha": 0.0}


def mlp_flops_per_epoch(n: int, sizes: list[int]) -> float:
    """Matmul FLOPs of one epoch: forward + weight grads for every layer, input grads for all but the first."""
    pairs = list(itertools.pairwise(sizes))
    per_sample = sum(2 * 2 * a * b for a, b in pairs) + sum(2 * a * b for a, b in pairs[1:])
    return float(n) * per_sample


def timing_run(args: list[str], cwd: Path, env: dict, python: str = sys.executable) -> dict:
    """Run benchmarks.bench_train_run in a fresh process of `python`; its JSON result."""
    out = subprocess.run([python, "-m", "benchmarks.bench_train_run", *args], cwd=cwd, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmarks.bench_train_run {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_available(env: dict, python: str = sys.executable) -> str | None:
    out = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], env=env,
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


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


def reference_stage_seconds(work: Path, env: dict, epochs: int) -> float:
    """Wall time of the whole train stage (start-up, data loading, validation, writing the model)
    with the reference config in params.yaml; params.yaml is put back afterwards."""
    path = work / "params.yaml"
    saved = path.read_text()
    params = yaml.safe_load(saved)
    params["train"].update(REFERENCE_STAGE, epochs=epochs)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        return run_measured([sys.executable, "-m", "stages.train"], work, env)[0]
    finally:
        path.write_text(saved)


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
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, choices=range(1, 21), metavar="1..20",
                        help="timed runs per implementation, alternating")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if importable")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="the Python that runs PyTorch (default: this one; e.g. a venv of its own with torch)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench_train.json")
    report.add_arguments(parser, PAGE)
    args = parser.parse_args()
    if not args.no_write:
        report.check_block(args.page, BLOCK)
    if not os.environ.get("CIFAR10_ARCHIVE") and not (ROOT / "data/raw").exists():
        print("note: CIFAR10_ARCHIVE is not set; fetch will download CIFAR-10", file=sys.stderr)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                                 "load_average_at_start": os.getloadavg()[0]}}

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        scratch_copy(work)
        print("stages (each its own process; wall time, peak resident memory):")
        stages = {}
        for stage in STAGES:
            seconds, rss = run_measured([sys.executable, "-m", f"stages.{stage}"], work, env)
            stages[stage] = {"seconds": round(seconds, 2), "peak_rss_mib": round(rss, 1)}
            print(f"  {stage:<18} {seconds:7.2f} s  {rss:7.1f} MiB", flush=True)
        subprocess.run([shutil.which("dvc", path=env["PATH"]) or "dvc", "commit", "-f", "-q"], cwd=work, env=env, check=True)
        noop = min(run_measured(["dvc", "repro"], work, env)[0] for _ in range(3))
        print(f"  no-op dvc repro    {noop:7.2f} s (best of 3)", flush=True)
        results["stages"] = stages
        results["noop_dvc_repro_seconds"] = round(noop, 2)

        data = ["--data", str(work / "data/prepared")]
        timed = [*data, "--epochs", str(args.epochs)]
        torch_version = None if args.no_torch else torch_available(env, args.torch_python)
        runs: dict[str, list[dict]] = {"reference": [], "torch": [], "default": [], "default_1_thread": []}
        stage_runs: list[float] = []   # the whole `python -m stages.train` process, reference params
        one_thread = {**env, "OPENBLAS_NUM_THREADS": "1"}
        print(f"\ntraining, {args.repeats} alternating runs of each (fresh processes) ...", flush=True)
        for _ in range(args.repeats):
            runs["reference"].append(timing_run(["numpy", *timed], work, env))
            if torch_version:
                runs["torch"].append(timing_run(["torch", *timed], work, env, args.torch_python))
                stage_runs.append(reference_stage_seconds(work, env, args.epochs))
            runs["default"].append(timing_run(["numpy", "--config", "default", *timed], work, env))
            runs["default_1_thread"].append(timing_run(["numpy", "--config", "default", *timed], work, one_thread))
        profile = timing_run(["numpy", *data, "--epochs", "5", "--profile"], work, env)

    results["train"] = {name: summarize(r) for name, r in runs.items() if r}
    if runs["torch"]:
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs["reference"], runs["torch"])]
        best = min(r["seconds"] for r in runs["reference"]) / min(r["seconds"] for r in runs["torch"])
        results["train"]["ratio_ours_to_torch"] = {"median": round(statistics.median(ratios), 3),
                                                   "best_to_best": round(best, 3), "runs": [round(r, 3) for r in ratios]}
        results["train"]["reference_stage"] = {
            "seconds": {"median": round(statistics.median(stage_runs), 2), "best": round(min(stage_runs), 2),
                        "runs": [round(t, 2) for t in stage_runs]},
            "ratio_to_torch_loop": {"median": round(statistics.median(stage_runs) / statistics.median(
                r["seconds"] for r in runs["torch"]), 3),
                "best_to_best": round(min(stage_runs) / min(r["seconds"] for r in runs["torch"]), 3)}}
    results["profile"] = profile
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, torch_version, profile)
    print(f"\nwrote {args.out}")
    if not args.no_write:
        report.write_block(args.page, BLOCK, markdown(results, torch_version, profile),
                           report.command_line("benchmarks.bench_train", sys.argv[1:]))


def summarize(runs: list[dict]) -> dict:
    """Medians over the runs of one implementation/config, with GFLOP/s and the fraction of peak."""
    first = runs[0]
    out = {k: first[k] for k in ("framework", "config", "batch_size", "epochs", "images", "blas", "threads") if k in first}
    seconds = [r["seconds"] for r in runs]
    out["seconds"] = {"median": round(statistics.median(seconds), 2), "best": round(min(seconds), 2),
                      "runs": [round(s, 2) for s in seconds]}
    out["seconds_per_epoch"] = round(statistics.median(seconds) / first["epochs"], 4)
    out["images_per_second"] = round(first["images"] * first["epochs"] / statistics.median(seconds))
    if "layers" in first:
        sizes = first["layers"]
        flops = mlp_flops_per_epoch(first["images"], sizes) * first["epochs"]
        gflops = [flops / r["seconds"] / 1e9 for r in runs]
        fractions = [g / r["matmul_peak_gflops"] for g, r in zip(gflops, runs)]
        out.update(layers=sizes, gflop_per_second=round(statistics.median(gflops), 1),
                   best_gflop_per_second=round(max(gflops), 1),
                   matmul_peak_gflop_per_second=round(statistics.median(r["matmul_peak_gflops"] for r in runs), 1),
                   fraction_of_peak={"median": round(statistics.median(fractions), 3), "best": round(max(fractions), 3),
                                     "runs": [round(f, 3) for f in fractions]})
        # a step's FLOPs over the time of its first layer's work alone: no numpy.matmul loop beats it
        step_flops = mlp_flops_per_epoch(first["batch_size"], sizes)
        steps = first["epochs"] * math.ceil(first["images"] / first["batch_size"])
        best_peak = max(r["matmul_peak_gflops"] for r in runs)
        out["first_layer_alone"] = {}
        for key in ("products", "products_and_update"):
            per_step = min(r["first_layer_alone_seconds_per_step"][key] for r in runs)
            out["first_layer_alone"][key] = {
                "seconds_per_step": round(per_step, 6), "seconds_for_the_run": round(per_step * steps, 2),
                "ceiling_gflop_per_second": round(step_flops / per_step / 1e9, 1),
                "ceiling_fraction_of_peak": round(step_flops / per_step / 1e9 / best_peak, 3)}
    return out


def print_table(results: dict, torch_version: str | None, profile: dict) -> None:
    t = results["train"]
    ref = t["reference"]
    print(f"\ntraining {ref['layers']} batch {ref['batch_size']}, {ref['epochs']} epochs on {ref['images']} images "
          f"(medians; runs in brackets)")
    for key, label in (("reference", "numpynet, reference config"), ("default", "numpynet, default params.yaml"),
                       ("default_1_thread", "the same, OPENBLAS_NUM_THREADS=1")):
        r = t[key]
        print(f"  {label:<32} {r['seconds']['median']:7.2f} s {r['seconds']['runs']}  {r['seconds_per_epoch']:.3f} s/epoch  "
              f"{r['images_per_second']:>7} img/s  {r['gflop_per_second']:6.1f} GFLOP/s = "
              f"{100 * r['fraction_of_peak']['median']:.0f}% of peak (best run {r['seconds']['best']:.2f} s, "
              f"{100 * r['fraction_of_peak']['best']:.0f}%)")
    for key, label, what in (("products", "1st layer's matmuls alone", "its forward + weight-gradient matmuls"),
                             ("products_and_update", "the same + its update", "those + W -= dW")):
        c = ref["first_layer_alone"][key]
        print(f"  {label:<32} {c['seconds_for_the_run']:7.2f} s  "
              f"{1e6 * c['seconds_per_step']:.0f} us/step: a ceiling of {c['ceiling_gflop_per_second']:.1f} GFLOP/s = "
              f"{100 * c['ceiling_fraction_of_peak']:.0f}% of peak ({what}, nothing else; best run)")
    blas = ref.get("blas", {})
    print(f"  {'float32 matmul peak':<32} {ref['matmul_peak_gflop_per_second']:7.1f} GFLOP/s (4096^2, in each numpynet run; "
          f"OpenBLAS {blas.get('architecture', '?')} kernels, single-threaded blocks on {ref.get('threads', '?')} threads)")
    if torch_version is None:
        print("  PyTorch: not importable (or --no-torch), skipped; give --torch-python <a Python with torch> to compare")
    else:
        r = t["torch"]
        print(f"  {'PyTorch ' + torch_version + ', reference':<32} {r['seconds']['median']:7.2f} s {r['seconds']['runs']}  "
              f"ratio ours / PyTorch {t['ratio_ours_to_torch']['median']:.2f} (median of {t['ratio_ours_to_torch']['runs']}; "
              f"best run / best run {t['ratio_ours_to_torch']['best_to_best']:.2f})")
        st = t["reference_stage"]
        print(f"  {'the whole train stage, reference':<32} {st['seconds']['median']:7.2f} s {st['seconds']['runs']}  "
              f"ratio stage / PyTorch loop {st['ratio_to_torch_loop']['median']:.2f} (medians; "
              f"best run / best run {st['ratio_to_torch_loop']['best_to_best']:.2f})")
    total = profile["seconds"]
    print(f"\nwhere the time goes: reference config, {profile['epochs']} epochs with timers ({total:.2f} s)")
    timed = 0.0
    for key, seconds in profile["profile_seconds"].items():
        timed += seconds
        print(f"  {key:<30} {seconds:7.3f} s {100 * seconds / total:5.1f}%")
    print(f"  {'the loop: gather, schedule, Python':<30} {total - timed:7.3f} s {100 * (total - timed) / total:5.1f}%")


def markdown(results: dict, torch_version: str | None, profile: dict) -> str:
    """The block for docs/performance.md: the training table, the stages, where a step's time goes."""
    t, ref = results["train"], results["train"]["reference"]

    def runs(r: dict) -> str:
        return f"median {r['median']:.2f} s ({', '.join(f'{x:.2f}' for x in r['runs'])})"

    def fit_row(key: str, label: str) -> list[str]:
        r = t[key]
        return [label, runs(r["seconds"]), f"{r['gflop_per_second']:.0f} GFLOP/s, {100 * r['fraction_of_peak']['median']:.0f}% "
                f"of peak (best run {100 * r['fraction_of_peak']['best']:.0f}%)"]

    rows = [fit_row("reference", "numpynet's training loop alone (`fit`), reference config"),
            fit_row("default", "the same, default `params.yaml`"),
            fit_row("default_1_thread", "the same, `OPENBLAS_NUM_THREADS=1`")]
    if torch_version:
        st, ratio = t["reference_stage"], t["ratio_ours_to_torch"]
        rows += [["the whole `train` stage, reference config (start-up, loading, validation every epoch, model file)",
                  runs(st["seconds"]), ""],
                 [f"PyTorch {torch_version}'s bare loop, reference config", runs(t["torch"]["seconds"]), ""],
                 ["whole stage / PyTorch loop", f"{st['ratio_to_torch_loop']['median']:.2f}x of the medians",
                  f"{st['ratio_to_torch_loop']['best_to_best']:.2f}x best run / best run"],
                 ["`fit` / PyTorch loop", f"{ratio['median']:.2f}x (median of the pairs)",
                  f"{ratio['best_to_best']:.2f}x best run / best run"]]
    else:
        rows.append(["PyTorch", "not run (give `--torch-python`)", ""])
    for key, label in (("products", "the first layer's two matmuls alone (a ceiling: the same products, nothing else)"),
                       ("products_and_update", "the same + its update `W -= dW`")):
        c = ref["first_layer_alone"][key]
        rows.append([label, f"{c['seconds_for_the_run']:.2f} s (best run)",
                     f"{c['ceiling_gflop_per_second']:.0f} GFLOP/s, {100 * c['ceiling_fraction_of_peak']:.0f}% of peak"])
    kernels = ref.get("blas", {}).get("architecture", "?")
    rows.append(["float32 matmul peak (4096^2, as the stages compute products)",
                 f"{ref['matmul_peak_gflop_per_second']:.0f} GFLOP/s", f"OpenBLAS {kernels} kernels"])
    stages = results["stages"]
    rows.append(["stages " + " / ".join(stages) + " (default `params.yaml`)",
                 ", ".join(f"{v['seconds']:.1f} s" for v in stages.values()),
                 "peak memory " + ", ".join(f"{v['peak_rss_mib']:.0f}" for v in stages.values()) + " MiB"])
    rows.append(["no-op `dvc repro`", f"{results['noop_dvc_repro_seconds']:.2f} s (best of 3)", ""])
    head = (f"{ref['epochs']} epochs of {ref['layers']}, batch {ref['batch_size']}, on {ref['images']:,} training images; "
            f"{len(t['reference']['seconds']['runs'])} runs of each, alternating, each a fresh process.")
    total = profile["seconds"]
    timed = profile["profile_seconds"]
    shares = [[key, f"{100 * sec / total:.0f}%"] for key, sec in timed.items() if sec >= 0.02 * total]
    small = sum(sec for sec in timed.values() if sec < 0.02 * total)
    shares.append(["every other timed part (under 2% each)", f"{100 * small / total:.0f}%"])
    shares.append(["the loop: batch gather, schedule, Python", f"{100 * (total - sum(timed.values())) / total:.0f}%"])
    return "\n\n".join([head, report.markdown_table(["measure", "time", "rate"], rows),
                         f"Where a step's time goes (reference config, {profile['epochs']} epochs with timers, {total:.1f} s):",
                         report.markdown_table(["part", "share"], shares)])


if __name__ == "__main__":
    main()
