"""No warning a user cannot act on reaches the terminal: each command's quick path is run as a user
runs it (a subprocess, so stderr is the real one, logging and warnings set up by `mlfs-edge` itself),
and every stderr line must be a progress bar or an allowed line. The known third-party noise is
filtered in mlfs_edge/quiet.py; `--verbose` shows it again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlfs_edge import quiet

MLFS_EDGE = [sys.executable, "-m", "mlfs_edge.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1"}

# tqdm bars ("desc:  40%|████      | 2/5 [00:01<00:02, 1.2it/s]", "measure: 3it [00:01, 2.0it/s]")
PROGRESS = re.compile(r"\[\d+:\d\d(:\d\d)?(<|,|\])")
# stderr lines that are fine for a user to see: mlfs-edge's own collapse warning (eval), which the two-step
# run below earns for its depth-1 member
ALLOWED: tuple[re.Pattern[str], ...] = (
    re.compile(r"^warning: \d+ of \d+ sub-networks of .* answer '\w+' for every test item"),)


def unexpected_lines(stderr: str) -> list[str]:
    """The stderr lines that are neither progress bars nor allowed (tqdm redraws with '\\r')."""
    lines = (ln.strip() for ln in re.split(r"[\r\n]", stderr))
    return [ln for ln in lines if ln and not PROGRESS.search(ln) and not any(p.search(ln) for p in ALLOWED)]


def mlfs_edge(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([*MLFS_EDGE, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"mlfs-edge {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


def test_progress_bars_pass_and_anything_else_is_caught():
    bars = ("fine-tune teacher:   0%|          | 0/1 [00:00<?, ?step/s]\r"
            "Loading weights: 100%|██████████| 105/105 [00:00<00:00, 3489.24it/s]\n"
            "measure L3: 3it [00:01,  2.00it/s]\n\n")
    assert unexpected_lines(bars) == []
    noise = "/x/copyreg.py:105: FutureWarning: something\n  return cls.__new__(cls, *args)\nWARNING:root:hm\n"
    assert unexpected_lines(bars + noise) == ["/x/copyreg.py:105: FutureWarning: something",
                                              "return cls.__new__(cls, *args)", "WARNING:root:hm"]


def test_every_known_filter_is_narrow_and_documented():
    for noise in quiet.KNOWN:
        assert (noise.logger is None) != (noise.category is None), noise  # exactly one of them
        assert noise.source and noise.why, noise
        assert len(noise.message) > 25 and noise.message not in (".*", ""), noise  # a message, not a blanket
        re.compile(noise.message)


@pytest.fixture
def installed():
    """quiet.install() for one test; its logging filters are removed afterwards (pytest restores warnings)."""
    import logging

    from transformers.utils import logging as hf_logging

    env, bars = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), hf_logging.is_progress_bar_enabled()
    yield quiet.install
    if env is None:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    else:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env
    if bars:
        hf_logging.enable_progress_bar()
    for name in {n.logger for n in quiet.KNOWN if n.logger}:
        target = logging.getLogger() if name == "root" else logging.getLogger(name)
        for f in [f for f in target.filters if isinstance(f, quiet._DropKnown)]:
            target.removeFilter(f)


def test_install_hides_only_the_known_messages(installed, caplog):
    import logging
    import warnings

    quiet.install()
    quiet.install()  # idempotent: one filter per logger
    assert sum(isinstance(f, quiet._DropKnown) for f in logging.getLogger("torchao").filters) == 1
    torchao = logging.getLogger("torchao")
    torchao.warning("Failed to load /venv/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: nope")
    torchao.warning("Failed to load /venv/site-packages/torchao/_C_cpu_kernels.so: a CPU kernel, keep it")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet.install()  # catch_warnings restored the filters of the test session: put ours back
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", UserWarning, stacklevel=1)
        warnings.warn("some other FutureWarning", FutureWarning, stacklevel=1)
    assert [(w.category, str(w.message)[:12]) for w in seen] == [(UserWarning, "`isinstance("),
                                                                (FutureWarning, "some other F")]
    logged = caplog.text
    assert "_C_cpu_kernels" in logged and "_C_mxfp8" not in logged
    from transformers.utils import logging as hf_logging

    assert not hf_logging.is_progress_bar_enabled()  # no "Loading weights" bar on every from_pretrained


@pytest.mark.slow
@pytest.mark.integration
def test_quick_paths_of_every_command_print_no_unexpected_warning(tmp_path):
    """train (with its teacher) → eval → pack → run → export → compare on tiny limits; each stderr must
    be clean. The demo is checked the same way in test_finetune_cli (on a tiny model) and for real by CI."""
    run = tmp_path / "run"
    config = tmp_path / "tiny.toml"
    config.write_text(f"""
model = "minilm"
data = "rotten_tomatoes"
out = "{run}"
teacher = ""
importance = "activation"
calibration_examples = 8
batch_size = 8
max_length = 24
max_train_examples = 16
max_eval_examples = 16
checkpoint_every = 1
palette = ["full", "depth=1,heads=2,mlp=64"]

[search]
depths = [1, 6]
heads = [2, 12]
mlp = [64, 1536]

[lora]
rank = 2

[[stages]]
name = "widths"
vary_depth = false
steps = 1

[[stages]]
name = "widths+depths"
vary_depth = true
steps = 1
fresh_adapters = true
""")
    sub = "depth=1,heads=2,mlp=64"  # the smallest: ExecuTorch lowers it fastest
    steps = {
        "train": ["train", "--config", str(config)],
        "eval": ["eval", "--config", str(config)],
        "pack": ["pack", str(run / "supernet"), str(tmp_path / "s.mlfs"), "--dtype", "int8"],
        "run": ["run", str(tmp_path / "s.mlfs"), "--text", "a gripping film", "--subnet", sub],
        "export": ["export", "--model", str(run / "supernet"), "--subnet", sub, "--dtypes", "fp32",
                   "--max-length", "16", "--out", str(tmp_path / "export")],
        # export: fp32 only (int8's pt2e calibration alone takes ~100 s here; it printed nothing more when checked
        # by hand, nor did compare's ExecuTorch rows). ONNX Runtime is where the export and quantization noise was.
        "compare": ["compare", "--quick", "--model", str(run), "--max-test", "16", "--threads", "1",
                    "--backends", "pytorch,onnxruntime,mlfs", "--dtypes", "fp32,int8",
                    "--work-dir", str(tmp_path / "compare")],
    }
    found, seconds = {}, {}
    for name, args in steps.items():
        t0 = time.perf_counter()
        proc = mlfs_edge(*args, cwd=tmp_path)
        seconds[name] = round(time.perf_counter() - t0)
        found[name] = unexpected_lines(proc.stderr)
        assert "Loading weights" not in proc.stderr and "Writing model shards" not in proc.stderr, name
    print(f"seconds per command: {seconds}")
    assert all(not lines for lines in found.values()), {k: v for k, v in found.items() if v}
    # the same command with --verbose shows the hidden lines again (and so the check above can fail)
    verbose = unexpected_lines(mlfs_edge("--verbose", *steps["pack"], cwd=tmp_path).stderr)
    assert any("torchao" in ln and "Failed to load" in ln for ln in verbose), verbose
    assert any("register_constant" in ln for ln in verbose), verbose
