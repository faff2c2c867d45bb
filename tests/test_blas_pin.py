"""The stages pin OpenBLAS's kernels (see stages/__init__.py), so results do not depend on
whether the CPU has AVX-512. Checked in a fresh interpreter, as `python -m stages.<name>` runs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from stages import NEEDED_CPU_FLAGS, cpu_flags
from tests.pipeline_repo import ROOT

pytest.importorskip("threadpoolctl", reason="threadpoolctl (installed with scikit-learn) reports OpenBLAS's kernels")
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the pin applies to x86-64 only")

PROBE = ("import os, stages, numpy, threadpoolctl, json; "
         "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE')] + [i.get('architecture') "
         "for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas']))")


def openblas_kernels(**env: str) -> list[str | None]:
    """[OPENBLAS_CORETYPE as the stage sees it, the kernels OpenBLAS then loaded]."""
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_stages_run_numpy_on_openblas_avx2_kernels():
    if not NEEDED_CPU_FLAGS <= cpu_flags():
        pytest.skip(f"this CPU lacks {sorted(NEEDED_CPU_FLAGS - cpu_flags())}: the pin is rightly not applied")
    assert openblas_kernels() == ["Haswell", "Haswell"]


def test_a_kernel_the_user_sets_wins():
    assert openblas_kernels(OPENBLAS_CORETYPE="Sandybridge") == ["Sandybridge", "Sandybridge"]


def test_no_pin_on_a_cpu_without_avx2(monkeypatch):
    import stages

    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setattr(stages, "cpu_flags", lambda: {"sse2", "avx"})
    monkeypatch.delitem(sys.modules, "numpy")  # as if NumPy were not loaded yet
    stages.pin_blas_kernels()
    assert "OPENBLAS_CORETYPE" not in os.environ
