"""Decoder MLFS (task = causal_lm): the per-token objective, text data, task inference, resume
bit-for-bit, the train → eval → slice commands on a tiny random Llama, bad input, the shipped config."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from test_lm_eval import WORDS, word_tokenizer
from test_mlfs import train_straight_and_killed, write_toml

from mlfs_edge.cli import main
from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig
from mlfs_edge.data import load_lm_text
from mlfs_edge.supernet import reorder_by_importance
from mlfs_edge.supernet.lora import LoraSettings, add_lora
from mlfs_edge.train.distill import subnet_loss
from mlfs_edge.train.mlfs_config import LossSettings, MLFSConfig
from mlfs_edge.train.objective import SandwichObjective, lm_labels, token_rows

ROOT = Path(__file__).resolve().parents[1]


def tiny_llama(vocab_size: int, seed: int = 0):
    """A tiny random Llama: 3 layers (so depth can shrink twice), 4 heads in 2 KV groups, MLP 64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


# --- the per-token objective -----------------------------------------------------------------------


def test_lm_labels_shift_and_ignore_padding():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert lm_labels(ids).tolist() == [6, 7, 8, 10, 0, 0]
    assert lm_labels(ids, mask).tolist() == [6, 7, 8, 10, -100, -100]  # padding targets are ignored
    logits = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    rows = token_rows(logits)
    assert rows.shape == (6, 3)
    assert torch.equal(rows[3], logits[1, 0])  # row b·(T−1)+t holds position t of sequence b


def test_subnet_loss_per_token_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = lm_labels(ids, mask)
    got = subnet_loss(token_rows(s), token_rows(t), labels, alpha=0.7, temperature=2.0)
    # by hand, over the 4 + 2 real next-token positions only
    kl, ce, n = 0.0, 0.0, 0
    for b, length in ((0, 5), (1, 3)):
        for pos in range(length - 1):
            pt = torch.softmax(t[b, pos] / 2.0, -1)
            ps = torch.softmax(s[b, pos] / 2.0, -1)
            kl += float((pt * (pt.log() - ps.log())).sum()) * 4.0
            ce += float(-torch.log_softmax(s[b, pos], -1)[ids[b, pos + 1]])
            n += 1
    assert got.item() == pytest.approx(0.7 * kl / n + 0.3 * ce / n, rel=1e-5)


def test_feature_mse_normalized_ignores_residual_scale():
    """Decoder hidden states are compared per-token RMS-normalized: outlier magnitudes do not count."""
    from mlfs_edge.train.distill import feature_mse

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 4, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    eye = torch.eye(8)
    base = feature_mse([a], [b], eye, normalize=True)
    scale = torch.tensor([1.0, 1e4]).view(2, 1, 1)  # one sequence with a huge residual stream
    torch.testing.assert_close(feature_mse([a * scale], [b * scale], eye, normalize=True), base)
    assert feature_mse([a * scale], [b * scale], eye) > 1e6 * base  # the raw MSE would explode
    unit = a / a.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(feature_mse([a], [unit], eye, normalize=True), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_sandwich_objective_on_a_decoder():
    """The largest sub-network's loss is the model's own next-token loss; the others get KD + CE."""
    model = tiny_llama(len(WORDS))
    reorder_by_importance(model)
    model = add_lora(model, LoraSettings(rank=4))
    obj = SandwichObjective(model, LossSettings(feature_dim=8), seed=0, causal_lm=True)
    arch = obj.net.arch
    ids = torch.randint(3, len(WORDS), (2, 9), generator=torch.Generator().manual_seed(1))
    subnets = [SubnetConfig.full(arch), SubnetConfig.uniform(arch, depth=2, heads=2, mlp=32)]
    total, losses = obj({"input_ids": ids}, lm_labels(ids), subnets, [1.0, 2.0])
    with torch.no_grad():
        own = model(input_ids=ids, labels=ids).loss  # HF shifts the labels itself
    torch.testing.assert_close(losses[0], own)
    assert losses.shape == (2,) and torch.isfinite(total)
    torch.testing.assert_close(total.detach(), losses[0] + 2.0 * losses[1])
    total.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads)
    assert obj.net.active == obj.net.full  # the objective leaves the full network active


# --- text data and task inference ------------------------------------------------------------------


def test_load_lm_text_files_and_errors(tmp_path):
    txt = tmp_path / "docs.txt"
    txt.write_text("\n\n".join(f"document {i}\nsecond line" for i in range(40)) + "\n")
    corpus = load_lm_text(str(txt))
    assert (len(corpus.train), len(corpus.dev), len(corpus.test)) == (36, 2, 2)
    assert all(d.startswith("document") and d.endswith("second line") for d in corpus.test)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": f"text {i}"}) + "\n" for i in range(20)))
    assert len(load_lm_text(str(jsonl), text_column="body").train) == 18
    with pytest.raises(ValueError, match="no column 'text'"):
        load_lm_text(str(jsonl))
    with pytest.raises(ValueError, match="is a classification dataset"):
        load_lm_text("rotten_tomatoes")
    (tmp_path / "one.txt").write_text("just one document without blank lines\n")
    with pytest.raises(ValueError, match="too few"):
        load_lm_text(str(tmp_path / "one.txt"))
    (tmp_path / "data.csv").write_text("text,label\na,b\n")
    with pytest.raises(ValueError, match=r"\.txt or \.jsonl"):
        load_lm_text(str(tmp_path / "data.csv"))
    assert len(load_lm_text("hamlet").test) >= 1


def test_task_is_inferred_from_the_model(tmp_path, tiny_llama_dir, tiny_bert_dir):
    stages = [{"name": "w", "vary_depth": False, "steps": 1}]
    assert MLFSConfig.from_dict({"model": "smollm2", "stages": stages}).resolved_task() == "causal_lm"
    assert MLFSConfig.from_dict({"model": "minilm", "stages": stages}).resolved_task() == "classification"
    assert MLFSConfig.from_dict({"model": str(tiny_llama_dir), "stages": stages}).resolved_task() == "causal_lm"
    assert MLFSConfig.from_dict({"model": str(tiny_bert_dir), "stages": stages}).resolved_task() == "classification"
    explicit = MLFSConfig.from_dict({"model": "smollm2", "task": "classification", "stages": stages})
    assert explicit.resolved_task() == "classification"
    with pytest.raises(ValueError, match="task must be"):
        MLFSConfig.from_dict({"task": "lm", "stages": stages})
    with pytest.raises(ValueError, match="block_size"):
        MLFSConfig.from_dict({"block_size": 1, "stages": stages})
    with pytest.raises(ValueError, match="model folder"):
        MLFSConfig.from_dict({"model": str(tmp_path), "stages": stages}).resolved_task()


# --- end to end on a tiny random Llama -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (3 layers, 4 heads in 2 KV groups, MLP 64) with a word-level tokenizer."""
    path = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama(len(WORDS)).save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def toy_text(tmp_path_factory) -> Path:
    """Documents with structure an LM can pick up (fixed phrases in random order)."""
    phrases = ["what is the capital of france ?", "who wrote hamlet ?", "how many legs does a spider have ?",
               "answer type : location", "answer type : person", "answer type : number"]
    rng = random.Random(0)
    docs = [" ".join(rng.choice(phrases) for _ in range(6)) for _ in range(60)]
    path = tmp_path_factory.mktemp("text") / "toy.txt"
    path.write_text("\n\n".join(docs) + "\n")
    return path


def lm_config(tmp: Path, model: Path, data: Path, **extra) -> dict:
    return {
        "model": str(model), "data": str(data), "out": str(tmp / "run"),
        "batch_size": 4, "block_size": 16, "checkpoint_every": 2, "seed": 3,
        "importance": "activation", "calibration_examples": 8,  # the decoder default (see the shipped config)
        "palette": ["full", "depth=3,heads=2,mlp=32", "depth=2,heads=2,mlp=32"],
        "search": {"depths": [2, 3], "heads": [2, 4], "mlp": [32, 64]},
        "lora": {"rank": 4}, "loss": {"gamma": 0.5, "feature_dim": 16},
        "stages": [{"name": "widths", "vary_depth": False, "steps": 2, "lr": 1e-2},
                   {"name": "widths+depths", "vary_depth": True, "steps": 3, "lr": 1e-2, "k_random": 2}],
        "quick": {"steps": 2, "max_train_examples": 24, "max_eval_tokens": 200},
        **extra,
    }


def test_lm_resume_after_a_kill_is_bit_for_bit(tmp_path, tiny_llama_dir, toy_text):
    straight = MLFSConfig.from_dict(lm_config(tmp_path / "a", tiny_llama_dir, toy_text))
    resumed = MLFSConfig.from_dict(lm_config(tmp_path / "b", tiny_llama_dir, toy_text))
    summary_a, summary = train_straight_and_killed(straight, resumed)
    assert [h["total"] for h in summary["history"]] == [h["total"] for h in summary_a["history"]]
    assert summary["task"] == "causal_lm" and summary["full_finetune_wall_s"] is None and summary["steps"] == 5
    # the per-token losses start near ln(vocabulary) (random model) and stay finite
    assert all(math.isfinite(h["largest"]) and math.isfinite(h["smallest"]) for h in summary["history"])
    assert summary["history"][0]["largest"] == pytest.approx(math.log(len(WORDS)), abs=0.5)


def test_lm_train_eval_slice_commands(tmp_path, tiny_llama_dir, toy_text, capsys):
    from transformers import AutoModelForCausalLM

    from mlfs_edge.supernet.folder import load_supernet

    cfg_path = write_toml(tmp_path / "tiny_lm.toml", lm_config(tmp_path, tiny_llama_dir, toy_text))
    assert main(["train", "--config", str(cfg_path), "--quick", "--no-progress"]) == 0
    run = tmp_path / "run_quick"
    summary = json.loads((run / "mlfs_train.json").read_text())
    assert summary["steps"] == 4 and summary["task"] == "causal_lm"  # [quick]: 2 steps per stage
    result_json = tmp_path / "results" / "lm.json"
    assert main(["eval", "--config", str(cfg_path), "--quick", "--json", str(result_json)]) == 0
    record = json.loads(result_json.read_text())
    assert set(record) >= {"command", "teacher_perplexity", "rows", "mlfs_wall_s", "trainable_fraction",
                           "eval_tokens", "block_size"}
    assert "--quick" in record["command"] and record["block_size"] == 16
    rows = record["rows"]
    assert [r["name"] for r in rows] == ["L2-H2-F32", "L3-H2-F32", "L3-H4-F64"]  # smallest first
    assert rows[-1]["param_fraction"] == 1.0 and rows[0]["param_fraction"] < rows[1]["param_fraction"]
    assert all(1.0 < r["perplexity"] < 1e4 and 1.0 < r["perplexity_no_mlfs"] < 1e4 for r in rows)
    # the pretrained full model is the no-MLFS full row; LoRA training changed the supernet
    assert record["teacher_perplexity"] == pytest.approx(rows[-1]["perplexity_no_mlfs"])
    assert rows[-1]["perplexity"] != pytest.approx(rows[-1]["perplexity_no_mlfs"])
    assert 0 < record["eval_tokens"] <= 200
    # acceptance as a draft for the full model (greedy agreement) on the run's text and on a second text
    for key in ("draft_acceptance", "draft_acceptance_hamlet"):
        assert rows[-1][key] == 1.0 and all(0.0 <= r[key] <= 1.0 for r in rows)
    assert result_json.with_suffix(".png").stat().st_size > 1000 and (run / "palette.md").is_file()
    out_text = capsys.readouterr().out
    assert "ppl MLFS" in out_text and "draft accept. (hamlet)" in out_text
    # slice: a standalone causal LM with the supernet's outputs for that sub-network
    out = tmp_path / "small"
    assert main(["slice", "--supernet", str(run / "supernet"), "--subnet", "depth=2,heads=2,mlp=32",
                 "--out", str(out)]) == 0
    small = AutoModelForCausalLM.from_pretrained(out).eval()
    model, _, net, _ = load_supernet(run / "supernet")
    net.set_active(SubnetConfig.parse("depth=2,heads=2,mlp=32", net.arch))
    ids = torch.randint(3, len(WORDS), (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(small(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4, rtol=0)
    assert small.config.num_hidden_layers == 2 and small.config.num_key_value_heads == 1


def test_lm_config_with_classification_data_is_a_one_line_error(tmp_path, tiny_llama_dir, tiny_bert_dir, capsys):
    bad = write_toml(tmp_path / "bad.toml", lm_config(tmp_path, tiny_llama_dir, Path("rotten_tomatoes")))
    assert main(["train", "--config", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a classification dataset" in err and len(err.splitlines()) == 1
    # and the other way round: a classification model with language-model text
    assert main(["train", "--config", str(bad), "--model", str(tiny_bert_dir), "--data", "news",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "language-model text" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing was trained or written


# --- the shipped SmolLM2 config ----------------------------------------------------------------------

SMOLLM2 = ArchSpec("llama", num_layers=30, hidden=576, num_heads=9, num_kv_heads=3, head_dim=64,
                   intermediate=1536, vocab_size=49152, gated_mlp=True, bias=False)


def test_shipped_smollm2_config_is_consistent():
    cfg = MLFSConfig.from_toml(ROOT / "configs" / "mlfs_smollm2_news.toml")
    assert cfg.resolved_task() == "causal_lm" and cfg.data == "news"
    assert [s.vary_depth for s in cfg.stages] == [False, True]  # stage 1 widths, stage 2 widths + depths
    space = SearchSpace.from_dict(SMOLLM2, cfg.search)
    palette = [SubnetConfig.parse(p, SMOLLM2) for p in cfg.palette]
    fractions = sorted(p.param_fraction(SMOLLM2) for p in palette)
    assert len(palette) >= 6 and fractions[0] <= 0.16 and fractions[-1] == 1.0
    assert all(space.contains(p) for p in palette)  # every reported sub-network was trained for
    assert all(h % SMOLLM2.group_size == 0 for p in palette for h in p.heads)  # whole KV groups
    quick = MLFSConfig.from_toml(ROOT / "configs" / "mlfs_smollm2_news.toml", quick=True)
    assert sum(s.steps for s in quick.stages) <= 6 and quick.max_eval_tokens is not None
    assert quick.out != cfg.out


@pytest.mark.slow
@pytest.mark.integration
def test_shipped_smollm2_quick_run(tmp_path):
    """The real SmolLM2 on news, the shipped config's --quick variant: train, then the palette."""
    cfg_path = ROOT / "configs" / "mlfs_smollm2_news.toml"
    assert main(["train", "--config", str(cfg_path), "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    result = tmp_path / "lm.json"
    assert main(["eval", "--config", str(cfg_path), "--quick", "--out", str(tmp_path), "--json", str(result)]) == 0
    record = json.loads(result.read_text())
    assert len(record["rows"]) >= 6
    # the pretrained SmolLM2 is a real LM on news (the baselines table measured ≈ 50 at 1k tokens)
    assert 5 < record["teacher_perplexity"] < 200
    full = record["rows"][-1]
    assert full["param_fraction"] == 1.0 and full["perplexity"] < 2 * record["teacher_perplexity"]


def test_sandwich_weighted_toward_drafts(tiny_llama_dir):
    """draft_share puts the sub-networks meant as speculative drafts into the sandwich's random slots at
    that rate (full-depth drafts only in a widths-only stage); without drafts the draws are unchanged."""
    from transformers import AutoConfig

    from mlfs_edge.train.sampling import sandwich

    arch = ArchSpec.from_hf_config(AutoConfig.from_pretrained(tiny_llama_dir))
    space = SearchSpace.from_dict(arch, {"depths": [2, 3], "heads": [2, 4], "mlp": [32, 64]})
    shallow = SubnetConfig((0,), (2,), (32,))
    narrow = SubnetConfig((0, 1, 2), (2, 2, 2), (32, 32, 32))
    plain = [sandwich(space, random.Random(f"0/1/{s}"), True, 2) for s in range(50)]
    same = [sandwich(space, random.Random(f"0/1/{s}"), True, 2, (shallow,), 0.0) for s in range(50)]
    assert plain == same  # draft_share 0: bit-for-bit the old sandwich
    picks = [c for s in range(400) for c in sandwich(space, random.Random(f"0/1/{s}"), True, 2, (shallow,), 0.5)[2:]]
    assert 0.4 < picks.count(shallow) / len(picks) < 0.6
    widths_only = [c for s in range(200)
                   for c in sandwich(space, random.Random(f"0/0/{s}"), False, 1, (shallow, narrow), 1.0)[2:]]
    assert set(widths_only) == {narrow}  # the depth-1 draft waits for the depth stage
    with pytest.raises(ValueError, match="draft_share must be in"):
        MLFSConfig.from_dict({"model": "smollm2", "stages": [{"name": "a", "vary_depth": True, "steps": 1}],
                              "drafts": ["depth=2"], "draft_share": 1.5})
    with pytest.raises(ValueError, match="needs the draft sub-networks"):
        MLFSConfig.from_dict({"model": "smollm2", "stages": [{"name": "a", "vary_depth": True, "steps": 1}],
                              "draft_share": 0.5})


def test_lm_training_with_drafts_runs_and_resumes(tmp_path, tiny_llama_dir, toy_text):
    extra = {"drafts": ['{"layers": [0], "heads": [4], "mlp": [64]}'], "draft_share": 0.5}
    straight = MLFSConfig.from_dict(lm_config(tmp_path / "a", tiny_llama_dir, toy_text, **extra))
    resumed = MLFSConfig.from_dict(lm_config(tmp_path / "b", tiny_llama_dir, toy_text, **extra))
    summary_a, summary = train_straight_and_killed(straight, resumed)
    assert [h["total"] for h in summary["history"]] == [h["total"] for h in summary_a["history"]]
