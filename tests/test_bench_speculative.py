"""The speculative-decoding benchmark on a tiny random Llama: the row schema, greedy identity to plain
decoding, sampling rows, bad arguments (llama.cpp's column is not part of this test)."""

from __future__ import annotations

import json

import pytest
import torch
from test_generate_cli import tiny_llama_dir  # noqa: F401  (a fixture: tiny Llama + SmolLM2 tokenizer)
from transformers import LlamaConfig, LlamaForCausalLM

from mlfs_edge.config import SubnetConfig
from mlfs_edge.eval.bench_speculative import ROW_KEYS, Draft, run_bench_speculative
from mlfs_edge.runtime import frequency_order, pack


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                         tie_word_embeddings=True)).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(6.0)
    out = tmp_path_factory.mktemp("bench_spec")
    order = frequency_order(range(96), 96)
    return {dt: pack(model, out / f"tiny-{dt}.mlfs", dtype=dt, vocab_order=order, vocab_order_source="test")
            for dt in ("fp32", "int8")}


def test_rows_schema_and_greedy_identity(packed, tmp_path):
    prompts = {"news": [[5, 17, 42, 8, 77, 3], [9, 1, 2, 60, 33]], "trec": [[4, 4, 7, 90]]}
    drafts = [Draft(SubnetConfig((0,), (4,), (96,))), Draft(SubnetConfig((0, 1, 2), (4, 4, 4), (96, 96, 96)), 32)]
    out = tmp_path / "spec.json"
    result = run_bench_speculative(packed, prompts, drafts, threads=(1,), new_tokens=12, json_path=out,
                                   command="test", progress=False)
    rows = result["rows"]
    # 2 dtypes x 1 thread count x 2 tasks x 2 sampling modes x 2 drafts
    assert len(rows) == 16 and all(tuple(r) == ROW_KEYS for r in rows)
    assert {r["draft"] for r in rows} == {"L1-H4-F96", "L3-H4-F96+V32"}
    for r in rows:
        assert r["tok_s"] > 0 and r["plain_tok_s"] > 0 and r["llama_cpp_tok_s"] is None
        assert 0.0 <= r["acceptance"] <= 1.0 and r["mean_accepted"] >= 1.0
        assert r["identical"] is (True if r["sampling"] == "greedy" else None)
        # the costs are measured (their size is the benchmark's to report, not a timed test's to judge)
        assert r["draft_cost"] > 0.0 and r["verify_cost"] > 0.0, r
    assert json.loads(out.read_text())["command"] == "test"
    with pytest.raises(ValueError, match="new_tokens must be at least 2"):
        run_bench_speculative(packed, prompts, drafts, new_tokens=1, progress=False)
    with pytest.raises(ValueError, match="at least one draft"):
        run_bench_speculative(packed, prompts, [], progress=False)


def test_bench_generate_draft_command(tiny_llama_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    """`mlfs-edge bench generate --draft ...` on a tiny Llama with SmolLM2's tokenizer: one row per
    (task, dtype, threads, sampling, draft), greedy identical to plain."""
    from mlfs_edge.cli import main

    monkeypatch.setenv("MLFS_EDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "spec.json"
    assert main(["bench", "generate", "--model", str(tiny_llama_dir), "--draft", "depth=1", "--draft-vocab", "4096",
                 "--dtypes", "int8", "--threads", "1", "--prompts", "1", "--prompt-tokens", "16", "--new-tokens", "8",
                 "--work-dir", str(tmp_path / "work"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and {r["draft"] for r in rows} == {"L1-H4-F64+V4096"}
    assert all(r["identical"] for r in rows if r["sampling"] == "greedy")
    assert main(["bench", "generate", "--model", str(tiny_llama_dir), "--draft", "depth=1", "--dtypes", "q8_0"]) != 0
    assert "--dtypes must be among" in capsys.readouterr().err
