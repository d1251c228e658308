"""MLFS training: losses against hand computation, gradient scaling, config checks, resume
bit-for-bit, a 2-process accelerate run, and the train → eval → slice commands on a tiny BERT."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlfs_edge.cli import main
from mlfs_edge.config import dumps_toml
from mlfs_edge.train.checkpoint import load_checkpoint
from mlfs_edge.train.distill import feature_mse, gradient_scale, kd_kl, random_projection, subnet_loss
from mlfs_edge.train.mlfs import CHECKPOINT, MLFSConfig, batch_indices, lr_at, train_mlfs


def test_kd_and_subnet_loss_match_hand_computation():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    y = torch.tensor([0, 2, 1, 2])
    temp = 2.0
    pt, ps = torch.softmax(t / temp, -1), torch.softmax(s / temp, -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1).mean() * temp ** 2
    torch.testing.assert_close(kd_kl(t, s, temp), kl)
    ce = -torch.log_softmax(s, -1)[torch.arange(4), y].mean()
    feat = torch.tensor(0.7)
    pt1, ps1 = torch.softmax(t, -1), torch.softmax(s, -1)
    kl1 = (pt1 * (pt1.log() - ps1.log())).sum(-1).mean()
    expected = 0.9 * kl1 + 0.1 * ce + 0.25 * feat
    torch.testing.assert_close(subnet_loss(s, t, y, alpha=0.9, temperature=1.0, beta=0.25, feature_loss=feat), expected)
    # ignored rows (label -100, e.g. padding) do not count
    y_pad = torch.tensor([0, 2, -100, -100])
    torch.testing.assert_close(subnet_loss(s, t, y_pad, 0.5, 1.0), subnet_loss(s[:2], t[:2], y[:2], 0.5, 1.0))
    assert kd_kl(t, t, 1.0).abs() < 1e-6


def test_feature_mse_masks_padding_and_projects():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    eye = torch.eye(8)
    per_token = (a - b).pow(2).mean(-1)
    expected = (per_token * mask).sum() / mask.sum()
    torch.testing.assert_close(feature_mse([a], [b], eye, mask), expected)
    b_pad = b.clone()
    b_pad[0, 3:] += 100.0  # changes only padding
    torch.testing.assert_close(feature_mse([a], [b_pad], eye, mask), expected)
    proj = random_projection(8, 4, seed=0)
    assert proj.shape == (8, 4) and torch.equal(proj, random_projection(8, 4, seed=0))
    assert torch.equal(random_projection(8, 0, seed=0), eye)
    with pytest.raises(ValueError):
        feature_mse([], [], eye)


def test_gradient_scaling():
    assert gradient_scale(100, 25, 0.0) == 1.0
    assert gradient_scale(100, 25, 0.5) == pytest.approx(2.0)
    assert gradient_scale(100, 100, 1.0) == 1.0
    with pytest.raises(ValueError):
        gradient_scale(100, 0, 0.5)


def test_schedule_and_batches_are_pure_functions_of_the_step():
    from mlfs_edge.train.mlfs import StageSettings

    stage = StageSettings("s", False, steps=100, lr=1e-3, warmup_ratio=0.1)
    assert lr_at(0, stage) == pytest.approx(1e-4) and lr_at(9, stage) == pytest.approx(1e-3)
    assert lr_at(99, stage) == pytest.approx(1e-3 / 90)
    lengths = [(7 * i) % 23 + 1 for i in range(20)]
    for grouped in (False, True):
        first_epoch = [i for s in range(5) for i in batch_indices(s, 4, lengths, 3, grouped)]
        assert sorted(first_epoch) == list(range(20))  # one epoch = a permutation of the examples
        assert batch_indices(7, 4, lengths, 3, grouped) == batch_indices(7, 4, list(lengths), 3, grouped)
        assert batch_indices(5, 4, lengths, 3, grouped) != batch_indices(0, 4, lengths, 3, grouped)  # new epoch
    # Grouped by length, a batch's lengths span less than in random batches: less padding.
    spread = {g: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                     for b in (batch_indices(s, 4, lengths, 3, g) for s in range(5))) for g in (False, True)}
    assert spread[True] < spread[False], spread


def test_mlfs_module_still_offers_the_names_it_had_before_the_split():
    """train/mlfs.py was cut along its jobs; code importing from it keeps working, with the same objects."""
    import importlib

    from mlfs_edge.train import mlfs

    homes = {"mlfs_config": ["LossSettings", "StageSettings", "MLFSConfig", "TASKS"],
             "tasks": ["TaskSetup", "ensure_teacher", "calibration_batches"],
             "objective": ["SandwichObjective", "lm_labels", "token_rows"],
             "sampling": ["sandwich", "sandwich_ranks", "batch_indices", "lr_at"],
             "adapters": ["lora_state", "merge_and_reset_adapters"],
             "checkpoint": ["CHECKPOINT", "CHECKPOINT_KEYS", "resume_message"],
             "run_folder": ["SUPERNET_DIR", "SUMMARY"],
             "mlfs": ["TrainState", "train_mlfs", "finished_run", "save_supernet", "is_main_process"]}
    assert sorted(n for names in homes.values() for n in names) == sorted(mlfs.__all__)
    for module, names in homes.items():
        home = importlib.import_module(f"mlfs_edge.train.{module}")
        for name in names:
            assert getattr(mlfs, name) is getattr(home, name), name


def test_config_errors_are_clear(tmp_path):
    base = {"stages": [{"name": "w", "vary_depth": False, "steps": 2}]}
    MLFSConfig.from_dict(base)
    with pytest.raises(ValueError, match="unknown training config keys: bogus"):
        MLFSConfig.from_dict({**base, "bogus": 1})
    with pytest.raises(ValueError, match=r"\[loss\]: unknown keys"):
        MLFSConfig.from_dict({**base, "loss": {"alfa": 0.5}})
    with pytest.raises(ValueError, match="alpha"):
        MLFSConfig.from_dict({**base, "loss": {"alpha": 1.5}})
    with pytest.raises(ValueError, match="base_quant"):
        MLFSConfig.from_dict({**base, "base_quant": "fp8"})
    with pytest.raises(ValueError, match="fresh_adapters"):
        MLFSConfig.from_dict({"base_quant": "nf4", "stages": [{"name": "w", "vary_depth": False, "steps": 2,
                                                               "fresh_adapters": True}]})
    from dataclasses import replace

    fresh = MLFSConfig.from_dict({"stages": [{"name": "w", "vary_depth": False, "steps": 2, "fresh_adapters": True}]})
    with pytest.raises(ValueError, match="fresh_adapters"):  # a config changed in code is checked by train_mlfs
        train_mlfs(replace(fresh, base_quant="int8", out=str(tmp_path / "never")), progress=False)
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="at least one"):
        MLFSConfig.from_dict({})
    with pytest.raises(ValueError, match="does not exist"):
        MLFSConfig.from_toml(tmp_path / "nope.toml")
    quick = MLFSConfig.from_dict({**base, "quick": {"steps": 1, "max_train_examples": 8}}, quick=True)
    assert quick.stages[0].steps == 1 and quick.max_train_examples == 8 and quick.out.endswith("_quick")


# --- end to end on a tiny BERT ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    rows = ["text,label"] + [f"good great fine film {i},pos" for i in range(40)] + \
        [f"bad awful dull film {i},neg" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    return path


def tiny_config(tmp: Path, model: Path, data: Path, teacher: str = "", **extra) -> dict:
    return {
        "model": str(model), "data": str(data), "out": str(tmp / "run"), "teacher": teacher,
        "batch_size": 8, "max_length": 16, "checkpoint_every": 2, "seed": 1,
        "palette": ["full", "depth=2,heads=2,mlp=32"],
        "teacher_finetune": {"epochs": 2.0, "lr": 3e-3, "batch_size": 16},
        "search": {"depths": [2, 3], "heads": [2, 4], "mlp": [32, 64]},
        "lora": {"rank": 4}, "loss": {"gamma": 0.5, "feature_dim": 16},
        "stages": [{"name": "widths", "vary_depth": False, "steps": 2, "lr": 5e-3},
                   {"name": "widths+depths", "vary_depth": True, "steps": 3, "lr": 5e-3, "k_random": 2}],
        **extra,
    }


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, tiny_bert_dir, toy_csv) -> Path:
    from mlfs_edge.data import load_classification
    from mlfs_edge.train.mlfs import ensure_teacher

    tmp = tmp_path_factory.mktemp("teacher")
    cfg = MLFSConfig.from_dict(tiny_config(tmp, tiny_bert_dir, toy_csv))
    teacher, record = ensure_teacher(cfg, load_classification(str(toy_csv)), progress=False)
    assert record["steps"] > 0
    return teacher


def write_toml(path: Path, cfg: dict) -> Path:
    """dumps_toml has no arrays of tables: the [[stages]] are appended by hand."""
    stages = cfg.pop("stages")
    text = dumps_toml(cfg) + "".join("\n[[stages]]\n" + dumps_toml(s) for s in stages)
    path.write_text(text)
    return path


def adapters(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / CHECKPOINT)["adapters"]


def train_straight_and_killed(straight: MLFSConfig, resumed: MLFSConfig) -> tuple[dict, dict]:
    """Train `straight` in one go and `resumed` stopped after 3 steps (mid stage 2, as a kill) then
    resumed; the final adapters must be identical bit for bit. Returns both summaries."""
    summary_straight = train_mlfs(straight, progress=False)
    assert train_mlfs(resumed, progress=False, stop_after=3) == {"stopped_at": 3}
    assert load_checkpoint(Path(resumed.out) / CHECKPOINT)["stage"] == 1
    summary = train_mlfs(resumed, resume=True, progress=False)
    a, b = adapters(Path(straight.out)), adapters(Path(resumed.out))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # it did train
    return summary_straight, summary


@pytest.mark.parametrize("importance", ["weight", "activation"])
def test_resume_after_a_kill_is_bit_for_bit(tmp_path, tiny_bert_dir, toy_csv, tiny_teacher, importance, capsys):
    extra = {"importance": importance, "calibration_examples": 24}
    straight = MLFSConfig.from_dict(tiny_config(tmp_path / "a", tiny_bert_dir, toy_csv, str(tiny_teacher), **extra))
    resumed = MLFSConfig.from_dict(tiny_config(tmp_path / "b", tiny_bert_dir, toy_csv, str(tiny_teacher), **extra))
    capsys.readouterr()
    _, summary = train_straight_and_killed(straight, resumed)
    # stage 1 has 2 steps, so the kill after 3 steps lands at step 1 of stage 2
    assert (f"resuming from {resumed.out}/{CHECKPOINT}: stage 2 of 2 (widths+depths) at step 1 of 3 "
            "(3 steps done in all)") in capsys.readouterr().out
    assert summary["steps"] == 5 and len(summary["history"]) == 5
    order = load_checkpoint(Path(resumed.out) / CHECKPOINT)["order"]
    assert order["method"] == importance
    assert summary["trainable_fraction"] < 0.05 or summary["total_params"] < 2_000_000  # tiny model: big share


@pytest.mark.parametrize("name", [CHECKPOINT, "checkpoint.pt"])
def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, tiny_bert_dir, toy_csv, tiny_teacher, capsys,
                                                         name):
    from test_checkpoint import evil_pickle

    cfg_path = write_toml(tmp_path / "tiny.toml", tiny_config(tmp_path, tiny_bert_dir, toy_csv, str(tiny_teacher)))
    marker = tmp_path / "code_ran"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name).write_bytes(evil_pickle(marker))  # a tampered checkpoint (test_checkpoint: it is live)
    assert main(["train", "--config", str(cfg_path), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlfs-edge train: error: ") and "\n" not in err, err
    assert "not loaded" in err or "does not load pickles" in err
    assert not marker.exists()
    assert not (tmp_path / "run" / "supernet").exists()  # refused before any training


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, tiny_bert_dir, toy_csv, tiny_teacher, capsys):
    from mlfs_edge.train.checkpoint import save_checkpoint

    cfg = tiny_config(tmp_path, tiny_bert_dir, toy_csv, str(tiny_teacher))
    assert train_mlfs(MLFSConfig.from_dict(cfg), progress=False, stop_after=1) == {"stopped_at": 1}
    other_rank = write_toml(tmp_path / "rank2.toml", {**cfg, "lora": {"rank": 2}})
    assert main(["train", "--config", str(other_rank), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds adapters of another model or LoRA setting" in err and "resume with the config" in err, err
    save_checkpoint(tmp_path / "run" / CHECKPOINT, {"stage": 0, "step": 0})  # valid data, not a training state
    assert main(["train", "--config", str(other_rank), "--resume", "--no-progress"]) == 2
    assert "lacks adapters, config, global_step" in capsys.readouterr().err


def test_train_eval_slice_commands(tmp_path, tiny_bert_dir, toy_csv, tiny_teacher, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.supernet.folder import load_supernet

    cfg_path = write_toml(tmp_path / "tiny.toml", tiny_config(tmp_path, tiny_bert_dir, toy_csv, str(tiny_teacher)))
    assert main(["train", "--config", str(cfg_path), "--no-progress"]) == 0
    result_json = tmp_path / "results" / "palette.json"
    assert main(["eval", "--config", str(cfg_path), "--json", str(result_json)]) == 0
    record = json.loads(result_json.read_text())
    assert set(record) >= {"command", "teacher_accuracy", "rows", "mlfs_wall_s", "full_finetune_wall_s",
                           "trainable_fraction"}
    assert [r["param_fraction"] for r in record["rows"]][-1] == 1.0 and len(record["rows"]) == 2
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["params"] > 0 for r in record["rows"])
    assert all(r["single_answer"] in (None, "neg", "pos") for r in record["rows"])  # a collapse names the label
    assert (tmp_path / "run" / "palette.png").stat().st_size > 1000
    out = tmp_path / "small"
    assert main(["slice", "--supernet", str(tmp_path / "run" / "supernet"), "--subnet", "depth=2,heads=2,mlp=32",
                 "--out", str(out)]) == 0
    small = AutoModelForSequenceClassification.from_pretrained(out).eval()
    model, tokenizer, net, _ = load_supernet(tmp_path / "run" / "supernet")
    net.set_active(SubnetConfig.parse("depth=2,heads=2,mlp=32", net.arch))
    assert AutoTokenizer.from_pretrained(out).vocab_size == tokenizer.vocab_size
    enc = tokenizer(["good film", "dull film 3"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(small(**enc).logits, model(**enc).logits, atol=1e-4, rtol=0)
    assert small.config.num_hidden_layers == 2
    # bad input: a clear one-line error, exit code 2
    assert main(["slice", "--supernet", str(tmp_path / "run" / "supernet"), "--subnet", "depth=9",
                 "--out", str(tmp_path / "x")]) == 2
    assert "depth must be between" in capsys.readouterr().err
    assert main(["eval", "--config", str(cfg_path), "--out", str(tmp_path / "empty")]) == 2


@pytest.mark.slow
def test_elastic_rank_train_eval_slice(tmp_path, tiny_bert_dir, toy_csv, tiny_teacher, capsys):
    from transformers import AutoModelForSequenceClassification

    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.supernet.folder import load_supernet
    from mlfs_edge.supernet.lora import ADAPTERS_FILE

    cfg = tiny_config(tmp_path, tiny_bert_dir, toy_csv, str(tiny_teacher), lora={"rank": 4, "elastic_ranks": [1, 2]})
    cfg_path = write_toml(tmp_path / "elastic.toml", cfg)
    assert main(["train", "--config", str(cfg_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "mlfs_train.json").read_text())
    ranks = [row["ranks"] for row in summary["history"]]
    assert all(r[0] == 4 and r[1] == 1 and set(r) <= {1, 2, 4} for r in ranks)  # largest, smallest, random
    assert len(ranks[-1]) == 4  # stage 2: k_random = 2
    supernet = tmp_path / "run" / "supernet"
    assert (supernet / ADAPTERS_FILE).stat().st_size > 0
    result_json = tmp_path / "rank2.json"
    assert main(["eval", "--config", str(cfg_path), "--rank", "2", "--json", str(result_json)]) == 0
    assert json.loads(result_json.read_text())["lora_rank"] == 2
    # slice --rank 2 == the supernet at rank 2 with the sub-network active; rank 2 != full rank
    spec = "depth=2,heads=2,mlp=32"
    assert main(["slice", "--supernet", str(supernet), "--subnet", spec, "--rank", "2", "--out",
                 str(tmp_path / "small2")]) == 0
    small = AutoModelForSequenceClassification.from_pretrained(tmp_path / "small2").eval()
    outputs = {}
    for rank in (2, None):
        model, tokenizer, net, meta = load_supernet(supernet, rank)
        assert meta["rank"] == (rank or 4)
        net.set_active(SubnetConfig.parse(spec, net.arch))
        enc = tokenizer(["good film", "dull film 3"], padding=True, return_tensors="pt")
        with torch.no_grad():
            outputs[rank] = model(**enc).logits
    with torch.no_grad():
        torch.testing.assert_close(small(**enc).logits, outputs[2], atol=1e-4, rtol=0)
    assert (outputs[2] - outputs[None]).abs().max() > 1e-6
    # the engine runs the rank-2 adapters unmerged (its low-rank path) over the frozen base
    from mlfs_edge.runtime import Engine

    packed = tmp_path / "rank2.mlfs"
    assert main(["pack", str(supernet), str(packed), "--lora-rank", "2"]) == 0
    engine = Engine.load(packed)
    assert len(engine.metadata["lora"]["adapted"]) == 3 * 6 and not engine.metadata["lora"]["merged"]
    cfg = SubnetConfig.parse(spec, net.arch)
    got = engine.run(enc["input_ids"].numpy(), enc["attention_mask"].numpy(), subnet=cfg)
    np.testing.assert_allclose(got, outputs[2].numpy(), atol=1e-4)
    # ranks that were not trained, and a fixed-rank supernet asked for another rank: clear errors
    assert main(["eval", "--config", str(cfg_path), "--rank", "3"]) == 2
    assert "rank 3 was not trained; the supernet's ranks are [1, 2, 4]" in capsys.readouterr().err
    fixed = write_toml(tmp_path / "fixed.toml", tiny_config(tmp_path / "f", tiny_bert_dir, toy_csv, str(tiny_teacher)))
    assert main(["train", "--config", str(fixed), "--no-progress"]) == 0
    assert main(["slice", "--supernet", str(tmp_path / "f" / "run" / "supernet"), "--subnet", spec, "--rank", "2",
                 "--out", str(tmp_path / "never")]) == 2
    assert "fixed LoRA rank 4" in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert not (tmp_path / "f" / "run" / "supernet" / ADAPTERS_FILE).exists()


def test_two_processes_with_accelerate_gloo(tmp_path, tiny_bert_dir, toy_csv, tiny_teacher):
    cfg = tiny_config(tmp_path, tiny_bert_dir, toy_csv, str(tiny_teacher))
    cfg["stages"] = [{"name": "widths+depths", "vary_depth": True, "steps": 2, "lr": 5e-3}]
    cfg_path = write_toml(tmp_path / "tiny.toml", cfg)
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # accelerate's --cpu launcher is single-process without mpirun; --multi_gpu starts torchrun, and on a
    # machine without CUDA the Accelerator then runs DDP over gloo (MULTI_CPU).
    proc = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mlfs_edge.cli", "train",
                           "--config", str(cfg_path), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one summary and one "Next:" line (the main process's), not one per process
    assert proc.stdout.count("supernet written to") == 1 and proc.stdout.count("Next:") == 1, proc.stdout
    assert proc.stdout.count("supernet: bert") == 1, proc.stdout
    summary = json.loads((tmp_path / "run" / "mlfs_train.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    if not torch.cuda.is_available():
        assert summary["distributed"] == "MULTI_CPU"
    assert math.isfinite(summary["history"][-1]["total"])
