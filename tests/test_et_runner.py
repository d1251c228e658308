"""One .pte, four ways: a real MiniLM sub-network exported by the export pipeline (``mlfs-edge
export``'s code path: reorder, extract, ``export_pte``) runs in eager PyTorch, the ExecuTorch Python
runtime, the C++ runner (``csrc/tools/et_runner``, ``executorch::extension::Module`` as the Android
app's JNI uses it) built for the host, and the same runner cross-built for aarch64 against the
aarch64 executorch wheel and run under qemu-user.

Tolerances are the export issue's: fp32 max abs ≤ 1e-4 against eager PyTorch, int8 / fp16 cosine
≥ 0.99; and the C++ runners against the Python runtime, which runs the very same program.
Run by ``make test-et-runner`` (the aarch64 half needs g++-aarch64-linux-gnu and qemu-user-static,
which .ci/run installs; without them it is skipped, saying so).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
RUNNER_SRC = ROOT / "csrc" / "tools" / "et_runner"
BUILD = ROOT / "build"
ET_VERSION = "1.5.1"  # the pinned executorch (constraints.txt): the aarch64 wheel must match it
SUBNET = "depth=3,heads=8,mlp=768"
MAX_LEN = 32  # short sequences: qemu emulates every instruction
DTYPES = ("fp32", "int8", "fp16")
QEMU = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"]
AARCH64_TOOLS = ("aarch64-linux-gnu-g++", "qemu-aarch64-static")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def _checked(cmd: list[str], **kw) -> str:
    proc = _run(cmd, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def host_executorch() -> Path:
    spec = importlib.util.find_spec("executorch")
    assert spec is not None and spec.submodule_search_locations, "executorch is not installed (make setup)"
    return Path(next(iter(spec.submodule_search_locations)))


def aarch64_executorch() -> Path:
    """The manylinux aarch64 executorch wheel, downloaded and unpacked once into build/et-aarch64."""
    root = BUILD / "et-aarch64"
    package = root / "site" / "executorch"
    if (package / "share" / "cmake" / "executorch-config.cmake").is_file():
        return package
    wheels = root / "wheel"
    _checked([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
              "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", f"executorch=={ET_VERSION}",
              "-d", str(wheels)])
    (wheel,) = wheels.glob(f"executorch-{ET_VERSION}-*aarch64.whl")
    tmp = Path(tempfile.mkdtemp(prefix=".site-", dir=root))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
    for target in tmp.glob("executorch/lib/*.so"):  # zip drops the mode bits
        target.chmod(0o755)
    shutil.rmtree(root / "site", ignore_errors=True)
    tmp.rename(root / "site")  # unpack, then rename: an interrupted run leaves no half package
    return package


def build_runner(name: str, package: Path, toolchain: Path | None = None) -> Path:
    """Configure and build et_runner into build/et-runner/<name> (incremental after the first time)."""
    out = BUILD / "et-runner" / name
    cmd = ["cmake", "-S", str(RUNNER_SRC), "-B", str(out), f"-DEXECUTORCH_PACKAGE_DIR={package}",
           "-DCMAKE_BUILD_TYPE=Release"]
    if toolchain is not None:
        cmd.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain}")
    _checked(cmd)
    _checked(["cmake", "--build", str(out), "-j", os.environ.get("JOBS", "1")])
    return out / "et_runner"


@pytest.fixture(scope="module")
def host_runner() -> Path:
    return build_runner("host", host_executorch())


@pytest.fixture(scope="module")
def aarch64_runner() -> Path:
    missing = [tool for tool in AARCH64_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the aarch64 runner cannot be built or emulated here "
                    "(apt-get install g++-aarch64-linux-gnu qemu-user-static; .ci/run does)")
    return build_runner("aarch64", aarch64_executorch(), ROOT / "cmake" / "aarch64-linux-gnu.cmake")


def export_subnet(out: Path) -> dict:
    """The sub-network exported in each dtype into `out`, three real inputs and eager outputs."""
    from transformers import AutoModel, AutoTokenizer

    from mlfs_edge import supernet
    from mlfs_edge.assets import resolve_model_path
    from mlfs_edge.config import ArchSpec, SubnetConfig
    from mlfs_edge.data import load_classification
    from mlfs_edge.export import EncoderForExport, ExportConfig, export_pte

    path = resolve_model_path("minilm")
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    supernet.reorder_by_importance(model, method="weight")  # what `mlfs-edge export` does to a teacher
    cfg = SubnetConfig.parse(SUBNET, ArchSpec.from_hf_config(model.config))
    sub = supernet.extract(model, cfg)
    manifests = {dtype: export_pte(sub, tokenizer, out, f"minilm-{cfg.name}-{dtype}",
                                   ExportConfig(dtype=dtype, output="embedding", max_length=MAX_LEN),
                                   subnet=cfg.to_dict())
                 for dtype in DTYPES}
    texts = load_classification("rotten_tomatoes").test.texts[:100]
    longest = max(texts, key=len)  # truncated to MAX_LEN: the longest input the program takes
    inputs = []
    for text, pad in ((texts[0], None), (longest, None), (texts[0], 16)):  # the last one right-padded
        enc = tokenizer(text, truncation=True, max_length=pad or MAX_LEN, padding="max_length" if pad else False,
                        return_tensors="pt")
        inputs.append((enc["input_ids"], enc["attention_mask"]))
    wrapper = EncoderForExport(sub, "embedding").eval()
    with torch.no_grad():
        eager = np.concatenate([wrapper(ids, mask).numpy() for ids, mask in inputs])
    return {"manifests": manifests, "inputs": inputs, "eager": eager, "dir": out}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_subnet(tmp_path_factory.mktemp("pte"))


def write_inputs(inputs, path: Path) -> Path:
    lines = [" ".join(map(str, ids[0].tolist())) + " | " + " ".join(map(str, mask[0].tolist()))
             for ids, mask in inputs]
    path.write_text("# token ids | attention mask, one example per line\n" + "\n".join(lines) + "\n")
    return path


def run_runner(cmd_prefix: list[str], runner: Path, pte: Path, inputs, workdir: Path, extra: list[str],
               env: dict[str, str] | None = None) -> tuple[np.ndarray, str]:
    in_txt = write_inputs(inputs, workdir / "input.txt")
    out_txt = workdir / f"{pte.stem}.{runner.parent.name}.out.txt"
    stdout = _checked([*cmd_prefix, str(runner), str(pte), str(in_txt), str(out_txt), *extra],
                      env={**os.environ, **(env or {})})
    return np.loadtxt(out_txt, dtype=np.float32, ndmin=2), stdout


def python_runtime(exported, dtype: str) -> np.ndarray:
    from mlfs_edge.export import PteModel

    pte = PteModel(exported["manifests"][dtype], load_tokenizer=False)
    return np.concatenate([pte.forward(ids, mask).numpy() for ids, mask in exported["inputs"]])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_close(got: np.ndarray, ref: np.ndarray, dtype: str, who: str, ref_name: str, min_cosine: float) -> None:
    """fp32: max abs diff ≤ 1e-4; fp16/int8: every row's cosine to `ref` ≥ `min_cosine`."""
    assert got.shape == ref.shape, f"{who}: shape {got.shape}, {ref_name} {ref.shape}"
    if dtype == "fp32":
        diff = float(np.abs(got - ref).max())
        assert diff <= 1e-4, f"{who} fp32: max abs diff to {ref_name} {diff:.3g} > 1e-4"
    else:
        cos = float(cosine(got, ref).min())
        assert cos >= min_cosine, f"{who} {dtype}: cosine to {ref_name} {cos:.5f} < {min_cosine}"


def assert_matches_eager(got: np.ndarray, eager: np.ndarray, dtype: str, who: str) -> None:
    assert_close(got, eager, dtype, who, "eager PyTorch", min_cosine=0.99)


def assert_matches_python(got: np.ndarray, python: np.ndarray, dtype: str, who: str, exact: bool) -> None:
    """The same program in the Python runtime: bit-identical on the same CPU (same XNNPACK kernels,
    same order); on another architecture only float rounding (and an int8/fp16 rounding flip) differs."""
    if exact:
        np.testing.assert_array_equal(got, python, err_msg=f"{who} {dtype} differs from the Python runtime")
    else:
        assert_close(got, python, dtype, who, "the Python runtime", min_cosine=0.999)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_runtime_matches_eager(exported, dtype):
    assert_matches_eager(python_runtime(exported, dtype), exported["eager"], dtype, "ExecuTorch Python runtime")


@pytest.mark.parametrize("dtype", DTYPES)
def test_host_cpp_runner_matches_eager_and_the_python_runtime(exported, host_runner, tmp_path, dtype):
    manifest = exported["manifests"][dtype]
    got, stdout = run_runner([], host_runner, manifest.with_suffix(".pte"), exported["inputs"], tmp_path,
                             ["--warmup", "1", "--repeat", "3"])
    assert "median latency" in stdout and stdout.count("example ") == len(exported["inputs"]), stdout
    print(f"host runner {dtype}: {stdout.strip().splitlines()[-1]}")
    assert_matches_eager(got, exported["eager"], dtype, "host C++ runner")
    assert_matches_python(got, python_runtime(exported, dtype), dtype, "host C++ runner", exact=True)


# Emulated CPUs, so that XNNPACK's different aarch64 paths all run: ARMv9-like with SVE2, dotprod,
# fp16 and i8mm; a Cortex-A76 (dotprod + fp16, a mid-range phone); a Cortex-A53 (ARMv8.0 NEON only).
QEMU_CPUS = ["max,sme=off", "cortex-a76", "cortex-a53"]
# With SME on as well (QEMU_CPU=max), XNNPACK picks its SME int8 GEMM and the int8 program's output
# is unrelated to the others' (cosine ~0.01) under this qemu (7.2); fp32 and fp16 are fine. Either
# the emulator's early SME support or the SME kernel is wrong: only a phone with SME2 can tell.
SME_INT8 = pytest.mark.xfail(reason="int8 with SME under qemu 7.2 gives wrong outputs (emulator or SME kernel)",
                             strict=False)


@pytest.mark.parametrize("cpu", [*QEMU_CPUS, "max"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_aarch64_cpp_runner_under_qemu_matches_eager(exported, aarch64_runner, tmp_path, dtype, cpu, request):
    if cpu == "max" and dtype == "int8":
        request.applymarker(SME_INT8)
    manifest = exported["manifests"][dtype]
    got, stdout = run_runner(QEMU, aarch64_runner, manifest.with_suffix(".pte"), exported["inputs"], tmp_path,
                             ["--warmup", "0", "--repeat", "1"], env={"QEMU_CPU": cpu})
    assert stdout.count("example ") == len(exported["inputs"]), stdout
    assert_matches_eager(got, exported["eager"], dtype, f"aarch64 C++ runner (qemu {cpu})")
    assert_matches_python(got, python_runtime(exported, dtype), dtype, f"aarch64 C++ runner (qemu {cpu})",
                          exact=False)


def test_host_runner_reports_bad_input_and_bad_models(exported, host_runner, tmp_path):
    pte = exported["manifests"]["fp32"].with_suffix(".pte")
    good = write_inputs(exported["inputs"], tmp_path / "good.txt")
    out = str(tmp_path / "out.txt")
    cases = [
        ([str(pte), str(tmp_path / "missing.txt"), out], 2, "cannot open input file"),
        ([str(pte), str(good), out, "--repeat", "0"], 2, "--repeat needs an integer >= 1"),
        ([str(pte), str(good)], 2, "usage"),
        ([str(good), str(good), out], 1, "cannot load method 'forward'"),
    ]
    bad_token = tmp_path / "bad_token.txt"
    bad_token.write_text("101 7592 x 102\n")
    cases.append(([str(pte), str(bad_token), out], 2, "'x' is not an integer"))
    bad_mask = tmp_path / "bad_mask.txt"
    bad_mask.write_text("101 7592 102 | 1 1\n")
    cases.append(([str(pte), str(bad_mask), out], 2, "3 ids but 2 mask values"))
    too_long = tmp_path / "too_long.txt"
    too_long.write_text(" ".join(["1000"] * (MAX_LEN + 1)) + "\n")
    cases.append(([str(pte), str(too_long), out], 1, "exported range"))
    for args, code, message in cases:
        proc = _run([str(host_runner), *args])
        assert proc.returncode == code and message in proc.stderr, (args, proc.returncode, proc.stderr)
