"""The wheel's smoke test (python -m mlfs_edge.smoke) passes on the editable build too, so a change
that would break it fails here before a release build does."""

from __future__ import annotations

import os
import subprocess
import sys

from mlfs_edge import _core


def test_smoke_under_every_isa_this_cpu_supports():
    env = {k: v for k, v in os.environ.items() if k != "MLFS_ISA"}
    proc = subprocess.run([sys.executable, "-m", "mlfs_edge.smoke", "--all-isas"], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for isa in _core.supported_isas():
        assert f"MLFS_ISA={isa} " in proc.stdout
    assert "refused with a clean error" in proc.stdout


def test_smoke_under_a_forced_isa_reports_it():
    proc = subprocess.run([sys.executable, "-m", "mlfs_edge.smoke"], env={**os.environ, "MLFS_ISA": "scalar"},
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and "ISA scalar" in proc.stdout, proc.stdout + proc.stderr
