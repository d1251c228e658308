import os
import subprocess
import sys

import numpy as np
import pytest

from mlfs_edge import _core

X86 = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vnni", "avx_vnni"]
ARM = ["neon", "dotprod", "fp16", "i8mm"]


def test_cpu_features_reports_the_architecture_flags():
    feats = _core.cpu_features()
    expected = X86 if _core.arch() == "x86_64" else ARM if _core.arch() == "aarch64" else []
    assert list(feats) == expected
    assert all(isinstance(v, bool) for v in feats.values())


def test_cpu_features_agree_with_the_kernel_the_os_reports():
    if _core.arch() != "x86_64" or not os.path.exists("/proc/cpuinfo"):
        pytest.skip("x86-64 Linux only")
    with open("/proc/cpuinfo") as f:
        flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    feats = _core.cpu_features()
    for ours, linux in [("avx2", "avx2"), ("fma", "fma"), ("f16c", "f16c"), ("avx512f", "avx512f"),
                        ("avx512bw", "avx512bw"), ("avx512vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni")]:
        assert feats[ours] == (linux in flags), ours


def test_supported_isas_start_with_scalar_and_selected_is_the_best():
    isas = _core.supported_isas()
    assert isas[0] == "scalar"
    if "MLFS_ISA" not in os.environ:
        assert _core.selected_isa() == isas[-1]


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 33, 384, 1537])
def test_dot_f32_every_isa_matches_numpy(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    want = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    for isa in _core.supported_isas():
        assert _core.dot_f32(a, b, isa) == pytest.approx(want, abs=1e-4 * (1 + np.sqrt(n)))


def test_dot_f32_rejects_bad_input_with_python_errors():
    a = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="float32"):
        _core.dot_f32(a.astype(np.float64), a)
    with pytest.raises(ValueError, match="same length"):
        _core.dot_f32(a, np.ones(5, np.float32))
    with pytest.raises(ValueError, match="1-D"):
        _core.dot_f32(np.ones((2, 2), np.float32), a)
    with pytest.raises(ValueError, match="contiguous"):
        _core.dot_f32(np.ones(8, np.float32)[::2], a)
    with pytest.raises(TypeError):
        _core.dot_f32([1.0, 2.0], a)
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.dot_f32(a, a, "sse9")


@pytest.mark.parametrize("isa", ["scalar", "avx512", "bogus"])
def test_mlfs_isa_forces_the_dispatch_or_says_why_not(isa):
    code = "from mlfs_edge import _core; print(_core.selected_isa())"
    env = {**os.environ, "MLFS_ISA": isa}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if isa in _core.supported_isas():
        assert proc.returncode == 0 and proc.stdout.strip() == isa
    else:
        assert proc.returncode != 0
        assert "MLFS_ISA" in proc.stderr and "Segmentation" not in proc.stderr
