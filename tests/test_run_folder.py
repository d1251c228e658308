"""One run folder carries its own truth: a run trained on the user's CSV is evaluated, sliced, packed,
run and compared on that CSV — every command takes the run folder — and a --config that is not the
run's is an error naming both."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from test_mlfs import tiny_config, write_toml

from mlfs_edge.cli import main
from mlfs_edge.commands.demo import guard_failures
from mlfs_edge.data import load_classification
from mlfs_edge.train.run_folder import RUN_CONFIG, open_run


@pytest.fixture(scope="module")
def user_csv(tmp_path_factory) -> Path:
    """A user's file: their own column names and labels, 400 rows (test split: 40 sentences)."""
    path = tmp_path_factory.mktemp("user") / "reviews.csv"
    rows = ["review,verdict"] + [f"a warm funny lovely story number {i},yay" for i in range(200)] + \
        [f"a cold boring tired story number {i},nay" for i in range(200)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_bert_dir, user_csv) -> tuple[Path, Path]:
    """`mlfs-edge train` with a config naming another dataset, overridden by --data/--text-column/
    --label-column/--out, as a user would: (the run folder, the config file)."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tmp, tiny_bert_dir, Path("rotten_tomatoes"))
    cfg["teacher_finetune"] = {"epochs": 1.0, "lr": 3e-3, "batch_size": 32}
    config = write_toml(tmp / "tiny.toml", cfg)
    run = tmp / "mine"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "--config", str(config), "--data", str(user_csv), "--text-column", "review",
                     "--label-column", "verdict", "--out", str(run), "--no-progress"]) == 0
    (tmp / "train.out").write_text(printed.getvalue())
    return run, config


def test_train_records_the_resolved_config_and_prints_next_steps_for_this_run(trained_run, user_csv, capsys):
    run, _ = trained_run
    record = json.loads((run / RUN_CONFIG).read_text())
    assert record["config"]["data"] == str(user_csv.resolve())
    assert (record["config"]["text_column"], record["config"]["label_column"]) == ("review", "verdict")
    assert record["config"]["task"] == "classification" and record["config"]["out"] == str(run)
    found = open_run(run / "supernet")  # the supernet folder inside names the same run
    assert found.folder == run and found.config.data == str(user_csv.resolve())
    # the teacher was fine-tuned on the user's labels
    teacher_cfg = json.loads((run / "teacher" / "config.json").read_text())
    assert sorted(teacher_cfg["id2label"].values()) == ["nay", "yay"]
    # "Next:" names this run's folder, never the config's default output
    printed = (run.parent / "train.out").read_text()
    assert f"mlfs-edge eval {run}" in printed and f"mlfs-edge pack {run}" in printed
    assert "runs/" not in printed.split("Next:")[1]
    assert record["command"].startswith("mlfs-edge train --config")


def test_every_command_takes_the_run_folder_and_uses_its_data(trained_run, user_csv, tmp_path, capsys):
    run, _ = trained_run
    n_test = len(load_classification(str(user_csv), "review", "verdict").test)
    capsys.readouterr()
    # eval: the run folder alone is enough; the palette is on the user's test split
    assert main(["eval", str(run)]) == 0
    palette = json.loads((run / "palette.json").read_text())
    assert palette["data"] == str(user_csv.resolve()) and palette["test_examples"] == n_test
    assert "mlfs-edge train --config" in palette["command"] and f"mlfs-edge eval {run}" in palette["command"]
    # slice from the run folder
    assert main(["slice", str(run), "--subnet", "depth=2,heads=2,mlp=32", "--out", str(tmp_path / "small")]) == 0
    sliced = json.loads((tmp_path / "small" / "config.json").read_text())
    assert sorted(sliced["id2label"].values()) == ["nay", "yay"]
    # pack into the run folder; run finds the file there and budgets with the run's measured palette
    assert main(["pack", str(run), "--dtype", "int8"]) == 0
    assert (run / "supernet-int8.mlfs").is_file()
    out = capsys.readouterr().out
    assert f"mlfs-edge run {run}" in out
    assert main(["run", str(run), "--text", "a warm funny lovely story", "--budget-ms", "1000"]) == 0
    out = capsys.readouterr().out
    assert f"accuracies from {run / 'palette.json'}" in out
    assert any(line.split()[0] in ("yay", "nay") for line in out.splitlines() if "|" in line)
    # compare: the run's test data, not Rotten Tomatoes
    result = tmp_path / "compare.json"
    assert main(["compare", "--model", str(run), "--backends", "pytorch,mlfs", "--dtypes", "fp32,int8",
                 "--threads", "1", "--runs", "2", "--subnets", "full", "--json", str(result),
                 "--work-dir", str(tmp_path / "work")]) == 0
    meta = json.loads(result.read_text())["meta"]
    assert meta["data"] == str(user_csv.resolve()) and meta["model"] == str(run / "supernet")
    assert "recorded by the run" in capsys.readouterr().out


def test_eval_overrides_and_mismatches_are_explicit(trained_run, user_csv, tmp_path, capsys):
    run, config = trained_run
    # a --config that is not the run's: an error naming both, nothing evaluated
    assert main(["eval", str(run), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and str(run) in err and "rotten_tomatoes" in err and "data" in err
    # --data: another file with the same labels is evaluated; one with other labels is refused
    other = tmp_path / "other.csv"
    other.write_text("review,verdict\n" + "".join(f"lovely warm tale {i},yay\ncold dull tale {i},nay\n"
                                                  for i in range(60)))
    assert main(["eval", str(run), "--data", str(other), "--json", str(tmp_path / "other.json")]) == 0
    record = json.loads((tmp_path / "other.json").read_text())
    assert record["data"] == str(other) and record["test_examples"] == len(load_classification(
        str(other), "review", "verdict").test)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("review,verdict\n" + "".join(f"text {i},{'abc'[i % 3]}\n" for i in range(60)))
    assert main(["eval", str(run), "--data", str(wrong)]) == 2
    assert "labels" in capsys.readouterr().err
    # not a run at all
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a training run folder" in capsys.readouterr().err


def test_resume_a_run_by_its_folder(trained_run, capsys):
    run, config = trained_run
    assert main(["train", "--resume", str(run), "--config", str(config)]) == 2
    assert "drop --config" in capsys.readouterr().err


def _palette(fractions_acc: list[tuple[float, float]], teacher: float) -> dict:
    return {"teacher_accuracy": teacher,
            "rows": [{"name": f"S{i}", "param_fraction": f, "accuracy": a} for i, (f, a) in enumerate(fractions_acc)]}


def test_demo_guard_catches_a_weak_big_subnet_and_a_lossy_int8_row():
    good = _palette([(0.17, 0.70), (0.5, 0.84), (1.0, 0.86)], teacher=0.86)
    rows = [{"subnet": "S1", "backend": b, "threads": 1, "dtype": d, "accuracy": a}
            for b, d, a in (("mlfs", "fp32", 0.84), ("mlfs", "int8", 0.83), ("pytorch", "fp32", 0.84),
                            ("pytorch", "fp16", 0.70))]
    assert guard_failures(good, rows) == []  # a small sub-network may be weak; fp16 is not guarded
    weak = _palette([(0.5, 0.80), (1.0, 0.86)], teacher=0.86)
    assert any("S0" in f and "teacher" in f for f in guard_failures(weak, rows))
    lossy = [*rows, {"subnet": "S1", "backend": "onnxruntime", "threads": 1, "dtype": "fp32", "accuracy": 0.84},
             {"subnet": "S1", "backend": "onnxruntime", "threads": 1, "dtype": "int8", "accuracy": 0.815}]
    failures = guard_failures(good, lossy)
    assert len(failures) == 1 and "onnxruntime" in failures[0] and "int8" in failures[0]


def test_a_teacher_is_compared_as_the_folder_it_names(tmp_path, tiny_bert_dir, user_csv):
    """`teacher = ""` in runs/x means runs/x/teacher: a run recorded either way is the same config (a moved
    or copied run is reused), while a really different teacher is still a difference."""
    from dataclasses import replace

    from mlfs_edge.train.mlfs import MLFSConfig
    from mlfs_edge.train.run_folder import config_differences

    cfg = MLFSConfig.from_dict(tiny_config(tmp_path, tiny_bert_dir, user_csv))
    implicit = replace(cfg, teacher="", out=str(tmp_path / "x"))
    explicit = replace(implicit, teacher=str(tmp_path / "x" / "teacher"), out=str(tmp_path / "elsewhere"))
    assert config_differences(implicit, explicit) == []
    assert config_differences(implicit, replace(explicit, teacher=str(tmp_path / "other"))) == ["teacher"]
