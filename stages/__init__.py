"""The pipeline's stages: thin command-line wrappers over the pure `numpynet` core.

Importing this package (which `python -m stages.<name>` does before anything else) pins
OpenBLAS's choice of matrix-multiply kernels, so that float32 results do not depend on which
x86-64 CPU runs the pipeline. OpenBLAS (NumPy's BLAS) picks its kernels at start-up from the CPU:
AVX-512 kernels on CPUs that have it, AVX2 ("Haswell") kernels on the others. They add up the
same products in different orders, and after thousands of SGD steps the two trained models
differ (measured on this pipeline: default config, test accuracy 0.8337 with the AVX2 kernels,
0.8343 with the AVX-512 ones on the same machine). Every x86-64 CPU made since 2013 runs the AVX2
kernels, at the same speed here, so the stages ask for them; the committed results then
reproduce on any such machine with the same number of cores (OpenBLAS splits work by thread,
and that changes rounding too). Set OPENBLAS_CORETYPE yourself to override; other
architectures are left alone.
"""

from __future__ import annotations

import os
import platform
import sys

BLAS_CORETYPE = "Haswell"


def pin_blas_kernels() -> None:
    """Ask OpenBLAS for its AVX2 kernels on x86-64 (it reads the variable when NumPy loads it)."""
    if platform.machine().lower() in ("x86_64", "amd64") and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_CORETYPE", BLAS_CORETYPE)


pin_blas_kernels()
