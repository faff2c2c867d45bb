"""The pipeline's stages: thin command-line wrappers over the pure `numpynet` core.

Importing this package (which `python -m stages.<name>` does before anything else) pins
OpenBLAS's choice of matrix-multiply kernels, so that float32 results do not depend on which
x86-64 CPU runs the pipeline. OpenBLAS (NumPy's BLAS) picks its kernels at start-up from the CPU:
AVX-512 kernels on CPUs that have it, AVX2 ("Haswell") kernels on the others. They add up the
same products in different orders, and after thousands of SGD steps the two trained models
differ (measured on this pipeline: default config, test accuracy 0.8337 with the AVX2 kernels,
0.8343 with the AVX-512 ones on the same machine). So on a CPU with AVX2 and FMA the stages ask
for the AVX2 kernels (at the same speed here); the committed results then reproduce on any such
machine with the same number of cores (OpenBLAS splits work by thread, and that changes
rounding too). CPUs without AVX2 (some Atoms, plain QEMU models) are left to OpenBLAS's own
choice, as are other architectures. Set OPENBLAS_CORETYPE yourself to override. The pin only
works before NumPy is loaded, so it does nothing when a stage is imported into a running program.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

BLAS_CORETYPE = "Haswell"
NEEDED_CPU_FLAGS = {"avx2", "fma"}   # what OpenBLAS's Haswell kernels execute


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where that is not readable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def pin_blas_kernels() -> None:
    """Ask OpenBLAS for its AVX2 kernels on x86-64 CPUs that have AVX2 + FMA (it reads the
    variable when NumPy loads it)."""
    if (platform.machine().lower() in ("x86_64", "amd64") and "numpy" not in sys.modules
            and NEEDED_CPU_FLAGS <= cpu_flags()):
        os.environ.setdefault("OPENBLAS_CORETYPE", BLAS_CORETYPE)


pin_blas_kernels()
