"""Pieces of the engine benchmark that can be checked quickly (the full run is `mlfs-edge bench engine`)."""

from __future__ import annotations

import pytest

from mlfs_edge.cli import build_parser
from mlfs_edge.config import ArchSpec
from mlfs_edge.eval.bench_engine import half_subnet, ratios
from mlfs_edge.runtime import Engine, pack
from mlfs_edge.runtime.benchmark import peak_rss, switch_cost_us


@pytest.fixture(scope="module")
def tiny_int8(tiny_bert_dir, tmp_path_factory):
    return pack(tiny_bert_dir, tmp_path_factory.mktemp("bench") / "tiny-int8.mlfs", dtype="int8")


def test_half_subnet_keeps_half_the_layer_parameters():
    arch = ArchSpec("bert", 6, 384, 12, 12, 32, 1536, 30522)
    cfg = half_subnet(arch)
    assert cfg.depth == 6 and cfg.heads == (6,) * 6 and cfg.mlp == (768,) * 6
    assert cfg.param_fraction(arch) == pytest.approx(0.5, abs=0.01)


def test_ratios_use_one_runs_medians():
    rows = [{"backend": b, "subnet": "full", "threads": t, "ms_median": ms} for b, t, ms in [
        ("mlfs-int8", 1, 6.0), ("pytorch-int8", 1, 12.0), ("onnxruntime-int8", 1, 10.0),
        ("mlfs-fp32", 1, 20.0), ("pytorch-fp32", 1, 25.0), ("mlfs-fp16", 1, 21.0), ("mlfs-fp32", 2, 11.0)]]
    r = ratios(rows, threads=1)
    assert r["mlfs-int8 / pytorch-int8"] == 0.5
    assert r["mlfs-int8 / onnxruntime-int8"] == 0.6
    assert r["mlfs-fp32 / pytorch-fp32"] == 0.8
    assert r["mlfs-fp32 speed-up 2 vs 1 threads"] == pytest.approx(20 / 11)
    assert "mlfs-int8 speed-up 2 vs 1 threads" not in r  # not measured: left out, not invented
    assert "mlfs-int8 / executorch-int8" not in r


def test_switch_copies_nothing_and_rss_is_measured(tiny_int8):
    engine = Engine.load(tiny_int8)
    switch = switch_cost_us(engine, engine.arch, repeats=20)
    assert switch["workspace_bytes_changed"] == 0 and switch["run_after_switch_us"] > 0
    rss = peak_rss(tiny_int8, seq=16)
    assert rss["file_size"] == engine.file_size and rss["peak_rss"] >= rss["bare_rss"]


def test_bench_command_parses():
    args = build_parser().parse_args(["bench", "engine", "--seq", "64", "--threads", "2", "--runs", "5"])
    assert (args.seq, args.threads, args.runs, args.what) == (64, 2, 5, "engine")
