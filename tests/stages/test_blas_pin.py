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
from tests.helpers.repo import ROOT

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
    if not cpu_flags() >= NEEDED_CPU_FLAGS:
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


def test_macos_flags_come_from_sysctl(monkeypatch):
    import subprocess as sp

    import stages

    class Done:
        stdout = "FPU SSE2 AVX1.0 FMA\nAVX2 BMI2 SMEP\n"
    monkeypatch.setattr(stages.sys, "platform", "darwin")
    monkeypatch.setattr(sp, "run", lambda *a, **k: Done())
    assert stages.cpu_flags() >= stages.NEEDED_CPU_FLAGS


@pytest.mark.parametrize("env, threads", [({"OPENBLAS_NUM_THREADS": "3"}, 3), ({"OMP_NUM_THREADS": "5"}, 5),
                                          ({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "7"}, 2)])
def test_the_thread_count_asked_for_is_used(env, threads):
    from stages import requested_threads

    assert requested_threads(env) == (threads, None)


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5", "9999", "x" * 500])
def test_a_bad_thread_count_ends_the_stage_in_one_line_naming_it(value, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-m", "stages.train"], cwd=tmp_path,
                          env={**env, "OPENBLAS_NUM_THREADS": value, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train: error: OPENBLAS_NUM_THREADS=") and len(lines[0]) < 300, done.stderr
    assert "Traceback" not in done.stderr
