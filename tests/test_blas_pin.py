"""The stages pin OpenBLAS's kernels (see stages/__init__.py), so results do not depend on
whether the CPU has AVX-512. Checked in a fresh interpreter, as `python -m stages.<name>` runs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tests.pipeline_repo import ROOT

pytest.importorskip("threadpoolctl", reason="threadpoolctl (installed with scikit-learn) reports OpenBLAS's kernels")
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the pin applies to x86-64 only")

PROBE = ("import stages, numpy, threadpoolctl, json; "
         "print(json.dumps([i.get('architecture') for i in threadpoolctl.threadpool_info() "
         "if i['internal_api'] == 'openblas']))")


def openblas_kernels(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_stages_run_numpy_on_openblas_avx2_kernels():
    assert openblas_kernels() == ["Haswell"]


def test_a_kernel_the_user_sets_wins():
    assert openblas_kernels(OPENBLAS_CORETYPE="Sandybridge") == ["Sandybridge"]
