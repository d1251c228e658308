"""The native budget picker's helpers (csrc/include/mlfs/budget.h) agree with their Python twins, so
the app (JNI) and mlfs-runner build the same palettes and pick as ``Engine.pick`` does."""

from __future__ import annotations

import math

import pytest

from mlfs_edge import _core
from mlfs_edge.config import SearchSpace, SubnetConfig, layers_for_depth
from mlfs_edge.runtime import Engine


def test_layers_for_depth_matches_python_for_every_depth():
    for n in range(1, 25):
        for d in range(1, n + 1):
            assert tuple(_core.layers_for_depth(n, d)) == layers_for_depth(n, d), (n, d)
    with pytest.raises(ValueError, match="out of range"):
        _core.layers_for_depth(6, 0)


@pytest.fixture(scope="module")
def engine(tiny_bert_dir, tmp_path_factory):
    from mlfs_edge.runtime import pack

    return Engine.load(pack(tiny_bert_dir, tmp_path_factory.mktemp("budget") / "tiny.mlfs", dtype="int8"))


def test_default_candidates_and_sizes_match_the_search_space(engine):
    want = SearchSpace.default(engine.arch).uniform_configs()
    got = [SubnetConfig(*map(tuple, zip(*layers, strict=True))) for layers in engine._core.default_candidates()]
    assert got == want
    for cfg in [*want, SubnetConfig((0, 2), (1, 3), (8, 40))]:
        layers = list(zip(cfg.layers, cfg.heads, cfg.mlp, strict=True))
        assert engine._core.layer_params(layers) == cfg.layer_params(engine.arch)


def test_pick_rule_ties_and_nan():
    pick = _core.pick_under_budget
    assert pick([0.8, 0.8, 0.8], [3.0, 1.0, 1.0], 5.0) == 1  # equal scores: the faster, then the first
    assert pick([0.9, 0.5], [math.nan, 1.0], 5.0) == 1
    assert pick([0.9], [1.0], math.nan) == -1
    with pytest.raises(ValueError, match="2 scores but 1 latencies"):
        pick([1.0, 2.0], [1.0], 1.0)


def test_engine_pick_keeps_the_first_of_equals(engine):
    a, b = SubnetConfig((0,), (1,), (16,)), SubnetConfig((0, 1), (2, 2), (32, 32))
    assert engine.pick(5.0, {a: 0.8, b: 0.8}, latency_table={a: 2.0, b: 2.0}) == a
    assert engine.pick(5.0, {a: 0.8, b: 0.8}, latency_table={a: 2.0, b: 1.0}) == b
