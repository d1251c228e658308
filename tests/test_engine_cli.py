"""Budget picker (profile + pick, cached per CPU) and the pack / run commands, on a tiny random BERT."""

from __future__ import annotations

import json

import pytest

from mlfs_edge.cli import main
from mlfs_edge.config import SubnetConfig
from mlfs_edge.runtime import Engine, cpu_model


@pytest.fixture(scope="module")
def packed(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny-int8.mlfs"
    assert main(["pack", str(tiny_bert_dir), str(out), "--dtype", "int8"]) == 0
    return out


def test_pack_command_writes_the_file_and_its_tokenizer(packed, capsys):
    engine = Engine.load(packed)
    assert engine.dtype == "int8" and engine.arch.num_layers == 3
    assert (engine.tokenizer_dir() / "tokenizer_config.json").is_file()


def test_profile_measures_and_caches_per_cpu(packed, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFS_EDGE_CACHE", str(tmp_path))
    engine = Engine.load(packed)
    small, big = SubnetConfig((0,), (1,), (16,)), SubnetConfig.full(engine.arch)
    table = engine.profile([small, big], seq=16, runs=5)
    assert set(table) == {small, big} and all(v > 0 for v in table.values())
    cache = json.loads((tmp_path / "engine_profiles.json").read_text())
    [key] = cache
    assert cpu_model() in key and f"{engine.checksum:08x}" in key
    cache[key][small.to_json()] = 123.0  # a second profile must read the cache, not re-measure
    (tmp_path / "engine_profiles.json").write_text(json.dumps(cache))
    assert engine.profile([small], seq=16)[small] == 123.0


def test_pick_returns_the_most_accurate_subnet_within_budget(packed):
    engine = Engine.load(packed)
    a, b, c = (SubnetConfig((0,), (1,), (16,)), SubnetConfig((0, 1), (2, 2), (32, 32)), SubnetConfig.full(engine.arch))
    accuracy = {a: 0.70, b: 0.80, c: 0.85}
    latency = {a: 1.0, b: 2.0, c: 4.0}
    assert engine.pick(3.0, accuracy, latency_table=latency) == b
    assert engine.pick(10.0, accuracy, latency_table=latency) == c
    with pytest.raises(ValueError, match=r"fastest candidate, L1-H1-F16, takes 1.00 ms"):
        engine.pick(0.5, accuracy, latency_table=latency)
    with pytest.raises(ValueError, match="empty"):
        engine.pick(1.0, {})


def test_run_command_embeds_text_with_a_subnet_or_a_budget(packed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFS_EDGE_CACHE", str(tmp_path))
    assert main(["run", str(packed), "--text", "a gripping film", "--subnet", "depth=2,heads=2,mlp=32"]) == 0
    out = capsys.readouterr().out
    assert "embedding[32] norm" in out and "L2-H2-F32" in out and " ms " in out
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps([{"subnet": SubnetConfig((0,), (1,), (16,)).to_dict(), "accuracy": 0.6},
                               {"subnet": SubnetConfig((0, 2), (4, 4), (64, 64)).to_dict(), "accuracy": 0.8}]))
    assert main(["run", str(packed), "--text", "dull", "--budget-ms", "1000", "--accuracy", str(acc)]) == 0
    assert "picked L2-H4-F64" in capsys.readouterr().out
    assert main(["run", str(packed), "--text", "dull", "--budget-ms", "0.000001", "--accuracy", str(acc)]) == 2
    assert "no sub-network runs within" in capsys.readouterr().err


def test_run_command_errors_say_what_to_do(packed, tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.mlfs"), "--text", "x"]) == 2
    assert "mlfs-edge pack" in capsys.readouterr().err
    bad = tmp_path / "bad.mlfs"
    bad.write_bytes(packed.read_bytes()[:1000])
    assert main(["run", str(bad), "--text", "x"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert main(["run", str(packed), "--text", "x", "--subnet", "heads=99"]) == 2
    assert "heads" in capsys.readouterr().err
