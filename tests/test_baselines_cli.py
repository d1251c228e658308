"""The baselines and prune commands end to end on a tiny random BERT teacher (real data, few steps)."""

import json

import pytest
import torch

from mlfs_edge.cli import main
from mlfs_edge.prune.baselines import default_config, mlfs_rows


@pytest.fixture
def tiny_teacher_dir(tiny_bert_dir, tmp_path):
    from mlfs_edge.models import load_classifier

    torch.manual_seed(0)
    model, tok = load_classifier(tiny_bert_dir, 2, ["negative", "positive"])
    model.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def test_baselines_quick_run_writes_the_table_json_and_plot(tiny_teacher_dir, tmp_path, capsys):
    out_json, out_png = tmp_path / "res" / "baselines_minilm.json", tmp_path / "res" / "b.png"
    rc = main(["baselines", "--model", "minilm", "--quick", "--teacher", str(tiny_teacher_dir), "--ratios", "0.25,0.5",
               "--methods", "none,l2psd,lora-kd,mlfs", "--mlfs-results", str(tmp_path / "absent.json"),
               "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    record = json.loads(out_json.read_text())
    assert record["complete"] and record["command"].startswith("mlfs-edge baselines")
    rows = record["rows"]
    assert [(r["method"], r["ratio"]) for r in rows] == [
        ("none", 0.0), ("none", 0.25), ("l2psd", 0.25), ("lora-kd", 0.25), ("none", 0.5), ("l2psd", 0.5),
        ("lora-kd", 0.5)]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["wall_s"] >= 0
    by = {(r["method"], r["ratio"]): r for r in rows}
    assert by["none", 0.25]["trainable_params"] == 0
    assert 0 < by["lora-kd", 0.5]["trainable_params"] < by["l2psd", 0.5]["trainable_params"]
    # layer params: 3 layers lose 16 (then 32) of 64 MLP channels, 2·32 weights + 1 bias each
    assert by["none", 0.0]["layer_params"] - by["none", 0.25]["layer_params"] == 3 * 16 * 65
    assert by["l2psd", 0.5]["params"] < by["l2psd", 0.25]["params"] < by["none", 0.0]["params"]
    assert any("mlfs rows left out" in n and "absent.json" in n for n in record["notes"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| method" in printed and "lora-kd" in printed


def test_mlfs_rows_are_read_from_the_supernet_palette_result(tmp_path):
    path = tmp_path / "mlfs.json"
    path.write_text(json.dumps({"teacher_accuracy": 0.8, "test_examples": 10, "mlfs_wall_s": 12.5,
                                "rows": [{"name": "L3-H6-F768", "param_fraction": 0.25, "accuracy": 0.7,
                                          "params": 100, "total_params": 1000}]}))
    rows, note = mlfs_rows(path)
    assert rows == [{"method": "mlfs", "ratio": 0.75, "subnet": "L3-H6-F768", "accuracy": 0.7,
                     "trainable_params": None, "params": 1000, "layer_params": 100, "wall_s": 12.5}]
    assert "1 sub-networks" in note
    path.write_text("{}")
    assert mlfs_rows(path)[0] == [] and "not an MLFS palette result" in mlfs_rows(path)[1]


def test_prune_command_writes_a_smaller_model(tiny_teacher_dir, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    assert main(["prune", "--model", str(tiny_teacher_dir), "--ratio", "0.5", "--out", str(tmp_path / "p")]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "p")
    assert model.config.intermediate_size == 32
    assert "pruned 50 %" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["baselines", "--ratios", "0.3,1.2"], "pruning ratio"),
    (["baselines", "--methods", "none,magic"], "unknown method"),
    (["baselines", "--threads", "0"], "--threads"),
    (["prune", "--model", "/nonexistent", "--ratio", "0.3", "--out", "x"], "model folder with config.json"),
])
def test_bad_input_gets_one_line_that_says_what_to_do(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_defaults_fit_the_cpu_budget_and_quick_is_small():
    assert default_config("minilm").retrain.steps > default_config("minilm", quick=True).retrain.steps
    assert default_config("smollm2", steps=None).max_train is not None  # a TREC subset, short sequences
    with pytest.raises(ValueError, match="unknown model"):
        default_config("gpt5")
