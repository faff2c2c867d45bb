"""The pipeline's stages: thin command-line wrappers over the pure `numpynet` core.

Importing this package (which `python -m stages.<name>` does before anything else) fixes the two
things in OpenBLAS (NumPy's BLAS) that change float32 results from one machine to the next,
before NumPy loads it:

1. The kernels. OpenBLAS picks them at start-up from the CPU: AVX-512 kernels where the CPU
   has it, AVX2 ("Haswell") kernels elsewhere, and they round differently. On an x86-64 CPU
   with AVX2 + FMA the stages ask for the Haswell kernels (OPENBLAS_CORETYPE), found from
   /proc/cpuinfo on Linux, `sysctl` on macOS and IsProcessorFeaturePresent on Windows.
   CPUs without AVX2 and other architectures keep OpenBLAS's own choice. A kernel you set in
   OPENBLAS_CORETYPE yourself wins.
2. The threads. OpenBLAS tiles a product one way on one thread and another way on several,
   which rounds differently. So BLAS always runs on one thread here (OPENBLAS_NUM_THREADS=1),
   and `numpynet.parallel` spreads large products over `threads()` Python threads, in blocks
   chosen by shape alone: any thread count gives the same bits. `threads()` is what you asked
   OpenBLAS for (OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS), else the CPUs this process may
   run on.

Both only work before NumPy is loaded: imported into a program that already loaded NumPy, the
stages compute with whatever that program's BLAS does.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

BLAS_CORETYPE = "Haswell"
NEEDED_CPU_FLAGS = {"avx2", "fma"}   # what OpenBLAS's Haswell kernels execute
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
MAX_THREADS = 256


def _linux_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _macos_flags() -> set[str]:
    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {f.lower().replace("fma3", "fma") for f in out.split()}


def _windows_flags() -> set[str]:
    try:
        import ctypes

        present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):
        return set()
    # PF_AVX2_INSTRUCTIONS_AVAILABLE = 40; Windows names no FMA flag, and every CPU with AVX2
    # made so far has FMA3, so AVX2 stands for both
    return set(NEEDED_CPU_FLAGS) if present(40) else set()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (lower case, e.g. {"avx2", "fma", ...}); empty where unknown."""
    if sys.platform.startswith("linux"):
        return _linux_flags()
    if sys.platform == "darwin":
        return _macos_flags()
    if sys.platform == "win32":
        return _windows_flags()
    return _linux_flags()


def pin_blas_kernels() -> None:
    """Ask OpenBLAS for its AVX2 kernels on x86-64 CPUs that have AVX2 + FMA (it reads the
    variable when NumPy loads it)."""
    if (platform.machine().lower() in ("x86_64", "amd64") and "numpy" not in sys.modules
            and cpu_flags() >= NEEDED_CPU_FLAGS):
        os.environ.setdefault("OPENBLAS_CORETYPE", BLAS_CORETYPE)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def requested_threads(environ: dict | os._Environ = os.environ) -> tuple[int, str | None]:
    """(threads to compute on, a problem with the environment or None).

    The first of THREAD_VARIABLES that is set decides; else the CPUs this process may use."""
    for name in THREAD_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        if value.isdigit() and 1 <= int(value) <= MAX_THREADS:
            return int(value), None
        shown = value if len(value) <= 20 else value[:20] + "..."
        return _available_cpus(), (f"{name}={shown!r} is not a thread count; set it to an integer "
                                   f"from 1 to {MAX_THREADS}, or unset it to use every CPU")
    return _available_cpus(), None


_THREADS, THREADS_PROBLEM = requested_threads()


def threads() -> int:
    """The number of threads the stages compute on (results do not depend on it)."""
    return _THREADS


def load_numpy_with_single_thread_blas() -> None:
    """Load NumPy with OpenBLAS on the calling thread only (see the module docstring), then
    give the environment back as it was, so that programs the stages start see the user's."""
    if "numpy" in sys.modules:
        return
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401  (OpenBLAS reads the variable now, once)
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved


pin_blas_kernels()
load_numpy_with_single_thread_blas()
