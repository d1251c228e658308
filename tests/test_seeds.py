"""--seeds end to end on a tiny BERT: `mlfs-edge train/eval --seeds` (one MLFS run per seed, a shared
stage-0 teacher, finished seeds reused, an interrupted one resumed, mean ± sd and the paired bootstrap)
and benchmarks/mlfs_vs_separate.py --seeds writing the issue-16 quality schema, benchmarks/mlfs_ablation.py
its one-change-at-a-time table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_mlfs import tiny_config, toy_csv, write_toml  # noqa: F401  (toy_csv: the fixture)
from test_mlfs_lm import lm_config, tiny_llama_dir, toy_text  # noqa: F401  (the fixtures)

from mlfs_edge.cli import main
from mlfs_edge.eval.seeds import RunsFailed, parse_seeds, run_in_parallel
from mlfs_edge.train.mlfs import MLFSConfig, train_mlfs
from mlfs_edge.train.run_folder import seed_config

ROOT = Path(__file__).resolve().parent.parent


def test_parse_seeds_and_seed_configs(tmp_path):
    assert parse_seeds("0,1, 2") == [0, 1, 2] and parse_seeds("3") == [3]
    for bad in ("0,x", "", "0,,1", "-1", "1,1", "0.5"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    cfg = MLFSConfig.from_dict(tiny_config(tmp_path, tmp_path / "model", tmp_path / "d.csv", task="classification"))
    assert seed_config(cfg, cfg.seed) is cfg  # the config's own seed: its own folder, reused as it is
    other = seed_config(cfg, 7)
    assert (other.seed, other.out) == (7, str(tmp_path / "run" / "seed7"))
    assert other.teacher == str(tmp_path / "run" / "teacher")
    own = seed_config(cfg, 7, shared_teacher=False)
    assert own.teacher == "" and own.teacher_finetune["seed"] == 7
    with pytest.raises(ValueError, match="teacher per seed"):
        seed_config(MLFSConfig.from_dict({**tiny_config(tmp_path, tmp_path, tmp_path, task="classification"),
                                          "teacher": "t"}), 7, shared_teacher=False)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, tiny_bert_dir, toy_csv):  # noqa: F811
    """A tiny config whose stage 0 runs (teacher = ""): seed 1 trained by `train --seeds 1`, seed 2
    interrupted after 2 steps, then `eval --seeds 1,2`. Returns (tmp, config path, eval output)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("seeds")
    raw = tiny_config(tmp, tiny_bert_dir, toy_csv)
    cfg_path = write_toml(tmp / "tiny.toml", dict(raw))
    assert main(["train", "--config", str(cfg_path), "--seeds", "1", "--no-progress"]) == 0
    cfg = MLFSConfig.from_toml(cfg_path)
    assert train_mlfs(seed_config(cfg, 2), progress=False, stop_after=2) == {"stopped_at": 2}  # a kill
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["eval", "--config", str(cfg_path), "--seeds", "1,2", "--no-progress",
                     "--json", str(tmp / "results" / "seeds.json")])
    assert code == 0
    return tmp, cfg_path, buf.getvalue()


def test_eval_seeds_trains_resumes_reuses_and_summarizes(seeded, capsys):
    tmp, cfg_path, out = seeded
    run = tmp / "run"
    assert "one stage-0 teacher shared by all seeds" in out
    assert f"seed 1 (1/2): run {run} reused" in out and f"seed 2 (2/2): run {run}/seed2 resumed" in out
    # the shared teacher: seed 2 distilled from the run's own stage 0 and fine-tuned none of its own
    assert json.loads((run / "seed2" / "run_config.json").read_text())["config"]["teacher"] == str(run / "teacher")
    assert not (run / "seed2" / "teacher").exists()
    summary = json.loads((run / "palette_seeds.json").read_text())
    assert summary == json.loads((tmp / "results" / "seeds.json").read_text())
    assert summary["seeds"] == [1, 2] and summary["shared_teacher"] is True and summary["test_examples"] == 8
    assert summary["teacher_accuracy_sd"] == 0.0  # one teacher for both seeds
    for seed, folder in ((1, run), (2, run / "seed2")):
        record = json.loads((folder / "palette.json").read_text())
        assert record["seed"] == seed and len(record["rows"][0]["correct"]) == 8
    for row in summary["rows"]:
        assert len(row["accuracy_per_seed"]) == 2 and row["accuracy_sd"] is not None
        low, high = row["diff_vs_no_mlfs_ci"]
        assert low <= row["diff_vs_no_mlfs"] <= high
        assert row["diff_vs_no_mlfs"] == pytest.approx(row["accuracy_mean"] - row["no_mlfs_mean"])
    assert "±" in (run / "palette_seeds.md").read_text()
    # again: every seed and its palette reused, the same numbers (fixed bootstrap seed)
    assert main(["eval", "--config", str(cfg_path), "--seeds", "1,2", "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert again.count("reused, palette reused") == 2, again
    assert json.loads((run / "palette_seeds.json").read_text())["rows"] == summary["rows"]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,x"], "--seeds takes distinct non-negative integers"),
    (["--seeds", "1,1"], "names a seed twice"),
    (["--teacher-per-seed"], "--teacher-per-seed goes with --seeds"),
])
def test_seeds_bad_input_is_one_line(seeded, capsys, argv, message):
    _, cfg_path, _ = seeded
    for command in ("eval", "train"):
        capsys.readouterr()
        assert main([command, "--config", str(cfg_path), "--no-progress", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"mlfs-edge {command}: error: ") and "\n" not in err and message in err, err


def test_quality_benchmark_over_seeds(seeded, capsys):
    """benchmarks/mlfs_vs_separate.py --seeds: the issue's schema, every accuracy in %."""
    tmp, cfg_path, _ = seeded
    spec = importlib.util.spec_from_file_location("mlfs_vs_separate", ROOT / "benchmarks" / "mlfs_vs_separate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = tmp / "results" / "mlfs_quality_toy.json"
    bench.main(["--config", str(cfg_path), "--seeds", "1,2", "--epochs", "0.2", "--json", str(result),
                "--no-progress"])
    record = json.loads(result.read_text())
    assert {"seeds", "teacher_mean", "teacher_sd", "mlfs_wall_s", "separate_wall_s", "rows", "command"} <= set(record)
    assert record["seeds"] == [1, 2] and "--seeds 1,2" in record["command"]
    assert [r["param_fraction"] for r in record["rows"]][-1] == 1.0 and len(record["rows"]) == 2
    full = record["rows"][-1]
    assert full["separate_is_teacher"] and full["separate_kd_mean"] == record["teacher_mean"]
    for row in record["rows"]:
        assert {"subnet", "param_fraction", "mlfs_mean", "mlfs_sd", "separate_kd_mean", "sliced_mean",
                "diff_vs_separate_ci"} <= set(row)
        low, high = row["diff_vs_separate_ci"]
        assert low <= row["mlfs_mean"] - row["separate_kd_mean"] + 1e-9 and \
            row["mlfs_mean"] - row["separate_kd_mean"] <= high + 1e-9
        assert 0.0 <= row["mlfs_mean"] <= 100.0 and 0.0 <= row["sliced_mean"] <= 100.0
    small = record["rows"][0]
    assert small["separate_kd_mean"] is not None and record["separate_wall_s"] > 0
    assert len(record["separate_cpu_s"]) == 2 and record["mlfs_vs_separate_cpu"] > 0  # CPU time: the steadier cost
    # each seed's separate fine-tunes are kept, and reused by the next invocation
    assert (tmp / "run" / "seed2" / "separate_kd.json").is_file()
    capsys.readouterr()
    bench.main(["--config", str(cfg_path), "--seeds", "1,2", "--epochs", "0.2", "--json", str(result),
                "--no-progress"])
    assert "separate fine-tunes reused" in capsys.readouterr().out
    assert json.loads(result.read_text())["rows"] == record["rows"]
    # an interrupted seed (the file is written after every sub-network) picks up at the next sub-network
    kept = tmp / "run" / "seed2" / "separate_kd.json"
    saved = json.loads(kept.read_text())
    assert saved["partial"] is False and len(saved["rows"]) == 1
    kept.write_text(json.dumps({**saved, "partial": True}))
    bench.main(["--config", str(cfg_path), "--seeds", "1,2", "--epochs", "0.2", "--json", str(result),
                "--no-progress"])
    out = capsys.readouterr().out
    assert f"{saved['rows'][0]['subnet']}: reused" in out and "seed 2: 1 separate fine-tunes run" in out
    assert json.loads(kept.read_text()) == saved and json.loads(result.read_text())["rows"] == record["rows"]
    # fine-tunes made with another recipe (here another LoRA rank) are never reused
    kept.write_text(json.dumps({**saved, "key": {**saved["key"], "lora_rank": saved["key"]["lora_rank"] + 8}}))
    bench.main(["--config", str(cfg_path), "--seeds", "1,2", "--epochs", "0.2", "--json", str(result),
                "--no-progress"])
    assert "seed 2: 1 separate fine-tunes run" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--seeds takes"):
        bench.main(["--config", str(cfg_path), "--seeds", "1,y"])


def test_quality_benchmark_in_parallel_processes(tmp_path, tiny_bert_dir, toy_csv, capsys):  # noqa: F811
    """--jobs 2 on a fresh run folder: the shared teacher fine-tuned once, first; then each seed's MLFS run
    and each seed's separate fine-tunes as their own processes; the study reuses all of them."""
    spec = importlib.util.spec_from_file_location("mlfs_vs_separate", ROOT / "benchmarks" / "mlfs_vs_separate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg_path = write_toml(tmp_path / "tiny.toml", tiny_config(tmp_path, tiny_bert_dir, toy_csv))
    run, result = tmp_path / "run", tmp_path / "quality.json"
    bench.main(["--config", str(cfg_path), "--seeds", "1,2", "--jobs", "2", "--epochs", "0.2", "--json",
                str(result), "--no-progress"])
    out = capsys.readouterr().out
    assert "fine-tuning the stage-0 teacher" in out and "4 runs, 2 at a time" in out
    for name in ("mlfs.seed1", "mlfs.seed2", "separate.seed1", "separate.seed2"):
        assert f"done: {name}" in out and (run / "logs" / f"{name}.log").is_file()
    assert "seed 2: 1 separate fine-tunes run" in (run / "logs" / "separate.seed2.log").read_text()
    # the study itself trained nothing: every MLFS run and every separate fine-tune came from the processes
    assert out.count("reused, palette reused") == 2, out
    assert "seed 1: 1 separate fine-tunes reused" in out and "seed 2: 1 separate fine-tunes reused" in out
    assert not (run / "seed2" / "teacher").exists()  # one teacher, shared
    record = json.loads(result.read_text())
    assert record["seeds"] == [1, 2] and "--jobs 2" in record["command"] and len(record["rows"]) == 2
    with pytest.raises(SystemExit, match="--jobs and --separate-only go with --seeds"):
        bench.main(["--config", str(cfg_path), "--jobs", "2"])


def test_run_in_parallel_names_the_failed_log(tmp_path, capsys):
    ok, bad = (["-c", "print('fine')"], tmp_path / "logs" / "ok.log"), \
        (["-c", "import sys; print('no such data file'); sys.exit(3)"], tmp_path / "logs" / "bad.log")
    with pytest.raises(RunsFailed, match=r"1 run\(s\) failed .*bad\.log.*\n.*no such data file"):
        run_in_parallel([ok, bad], jobs=2)
    assert "FAILED: bad" in capsys.readouterr().out and (tmp_path / "logs" / "ok.log").read_text() == "fine\n"
    with pytest.raises(ValueError, match="--jobs must be at least 1"):
        run_in_parallel([ok], jobs=0)


def _record(seed: int, rows: list[dict], **extra) -> dict:
    return {"data": "toy", "run": f"runs/x/seed{seed}", "mlfs_wall_s": 10.0 + seed, "rows": rows, **extra}


def test_summarize_seeds_known_numbers():
    """Two seeds by hand: accuracy 0.5 and 0.75 → mean 0.625, sd 0.1768; the paired difference to the sliced
    teacher is the mean of the per-item seed-averaged differences; perplexity rows for a causal LM."""
    from mlfs_edge.eval.seeds import seeds_table, summarize_seeds

    row = lambda acc, correct, sliced: {"name": "L1", "subnet": {"depth": 1}, "params": 10, "param_fraction": 0.5,  # noqa: E731
                                        "accuracy": acc, "accuracy_no_mlfs": 0.25, "correct": correct,
                                        "correct_no_mlfs": sliced}
    records = {0: _record(0, [row(0.5, "1100", "1000")], teacher_accuracy=1.0, test_examples=4),
               1: _record(1, [row(0.75, "1110", "0001")], teacher_accuracy=1.0, test_examples=4)}
    s = summarize_seeds(records, resamples=300)
    r = s["rows"][0]
    assert s["seeds"] == [0, 1] and s["teacher_accuracy_sd"] == 0.0 and s["mlfs_wall_s_mean"] == 10.5
    assert r["accuracy_mean"] == 0.625 and r["accuracy_sd"] == pytest.approx(0.25 / 2 ** 0.5)
    # per item, seed-averaged: MLFS (1, 1, .5, 0) − sliced (.5, 0, 0, .5) = (.5, 1, .5, −.5), mean .375
    assert r["diff_vs_no_mlfs"] == pytest.approx(0.375)
    assert r["diff_vs_no_mlfs_ci"][0] >= -0.5 and r["diff_vs_no_mlfs_ci"][1] <= 1.0
    assert "62.50 ± 17.68" in seeds_table(s)
    lm = {seed: _record(seed, [{"name": "L1", "subnet": {}, "params": 10, "param_fraction": 0.5,
                                "perplexity": p, "perplexity_no_mlfs": 40.0}], teacher_perplexity=9.0)
          for seed, p in ((0, 12.0), (1, 14.0))}
    s = summarize_seeds(lm)
    assert s["task"] == "causal_lm" and s["rows"][0]["perplexity_mean"] == 13.0
    assert "13.00 ± 1.41" in seeds_table(s)
    other = {0: records[0], 1: {**records[1], "rows": [{**records[1]["rows"][0], "name": "L2"}]}}
    with pytest.raises(ValueError, match="another palette"):
        summarize_seeds(other)


def test_lm_eval_seeds(tmp_path, tiny_llama_dir, toy_text, capsys):  # noqa: F811
    """A causal LM over two seeds: no stage 0 to share, perplexity mean ± sd per palette member."""
    cfg_path = write_toml(tmp_path / "lm.toml", lm_config(tmp_path, tiny_llama_dir, toy_text))
    assert main(["eval", "--config", str(cfg_path), "--quick", "--seeds", "3,4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no stage 0" in out and f"run {tmp_path}/run_quick/seed4 trained" in out
    summary = json.loads((tmp_path / "run_quick" / "palette_seeds.json").read_text())
    assert summary["task"] == "causal_lm" and summary["seeds"] == [3, 4]
    assert all(r["perplexity_sd"] is not None and r["perplexity_mean"] > 1 for r in summary["rows"])
    assert "±" in (tmp_path / "run_quick" / "palette_seeds.md").read_text()


def test_ablation_benchmark_one_change_at_a_time(seeded, capsys):
    """benchmarks/mlfs_ablation.py: a variant = the config with one change, trained over the same seeds
    from the config's teacher, compared item by item with the unchanged config."""
    tmp, cfg_path, _ = seeded
    spec = importlib.util.spec_from_file_location("mlfs_ablation", ROOT / "benchmarks" / "mlfs_ablation.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result, work = tmp / "results" / "ablation.json", tmp / "ablation"
    # --jobs 2: each (variant, seed) its own process; --reference-out: the unchanged config trained anew there
    bench.main(["--config", str(cfg_path), "--seeds", "1,2", "--variants", "feature_replaced,sampling_params",
                "--work-dir", str(work), "--reference-out", str(work / "config"), "--jobs", "2",
                "--json", str(result), "--no-progress"])
    out = capsys.readouterr().out
    assert "| variant" in out and "feature_replaced" in out and f"written {result}" in out
    record = json.loads(result.read_text())
    assert record["seeds"] == [1, 2] and "--variants feature_replaced,sampling_params" in record["command"]
    assert list(record["results"]) == ["feature_replaced", "sampling_params"]
    names = [r["subnet"] for r in record["config_rows"]]
    for variant in record["results"].values():
        assert [r["subnet"] for r in variant["rows"]] == names
        for row in variant["rows"]:
            low, high = row["diff_vs_config_ci"]
            assert low - 1e-9 <= row["diff_vs_config"] <= high + 1e-9
            assert row["diff_vs_config"] == pytest.approx(row["mean"] - record["config_rows"][names.index(
                row["subnet"])]["mean"])
    # each variant's config is kept to rerun by hand: the one change, the config's teacher, its own folder
    changed = MLFSConfig.from_toml(work / "feature_replaced.toml")
    assert changed.loss.feature_map == "replaced" and changed.teacher == str(tmp / "run" / "teacher")
    assert MLFSConfig.from_toml(work / "sampling_params.toml").sampling == "params"
    assert changed.out == str(work / "feature_replaced")
    assert (work / "feature_replaced" / "seed2" / "palette.json").is_file()
    assert (work / "config" / "seed2" / "palette.json").is_file() and (work / "logs" / "config.seed2.log").is_file()
    assert record["config_devices"] == ["cpu"] and record["results"]["sampling_params"]["devices"] == ["cpu"]
    with pytest.raises(SystemExit, match="unknown variants nope"):
        bench.main(["--config", str(cfg_path), "--variants", "nope", "--work-dir", str(work)])


def test_eval_names_a_run_whose_sub_networks_give_one_answer():
    from mlfs_edge.eval.palette import collapse_warning, single_answer

    names = ["ham", "spam"]
    assert single_answer([0, 0, 0], [0, 1, 0], names) == "ham"  # one answer for items of two labels
    assert single_answer([0, 1, 0], [0, 1, 0], names) is None
    assert single_answer([1, 1], [1, 1], names) is None  # a one-label test split: nothing to tell apart
    healthy = {"rows": [{"accuracy": 0.99, "single_answer": None}, {"accuracy": 0.98}]}  # older rows lack the key
    assert collapse_warning(healthy, "runs/x") is None
    collapsed = {"rows": [{"accuracy": 0.8882, "single_answer": "ham"}, {"accuracy": 0.99, "single_answer": None}]}
    warning = collapse_warning(collapsed, "runs/x/seed1")
    assert warning is not None
    assert "1 of 2 sub-networks of runs/x/seed1 answer 'ham' for every test item (88.82 %" in warning
    assert "runs/x/seed1/mlfs_train.json" in warning and "more steps, a lower [[stages]] lr" in warning
