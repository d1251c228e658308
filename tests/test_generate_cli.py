"""mlfs-edge pack / generate on a tiny random Llama that uses the bundled SmolLM2 tokenizer."""

from __future__ import annotations

import pytest
from conftest import save_tiny_llama

from mlfs_edge.cli import main
from mlfs_edge.runtime import Engine


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), intermediate_size=64)


@pytest.mark.parametrize("dtype", ["int8", "q4"])
def test_pack_and_generate(tiny_llama_dir, tmp_path, capsys, dtype):
    out = tmp_path / f"tiny-{dtype}.mlfs"
    assert main(["pack", str(tiny_llama_dir), str(out), "--dtype", dtype]) == 0
    assert "decoder, 4 heads / 2 key-value groups" in capsys.readouterr().out
    engine = Engine.load(out)
    assert engine.kind == "decoder" and engine.dtype == dtype and engine.tokenizer_dir() is not None
    assert main(["generate", str(out), "--prompt", "The council voted", "--raw", "--max-new-tokens", "6",
                 "--subnet", "depth=1,heads=2,mlp=32", "--threads", "2"]) == 0
    text = capsys.readouterr().out
    assert "[L1-H2-F32" in text and "decode" in text and "tok/s" in text
    # the chat template path (SmolLM2's tokenizer has one) and sampling flags
    assert main(["generate", str(out), "--prompt", "Hi", "--max-new-tokens", "3", "--temperature", "0.7",
                 "--top-k", "20", "--top-p", "0.9", "--seed", "3", "--cache-dtype", "fp16"]) == 0


def test_generate_errors_are_one_line(tiny_llama_dir, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "tiny.mlfs"
    assert main(["pack", str(tiny_llama_dir), str(out)]) == 0
    assert main(["generate", str(out), "--prompt", "x", "--max-new-tokens", "0"]) != 0
    assert "max_new_tokens" in capsys.readouterr().err
    assert main(["generate", str(out), "--prompt", "x", "--subnet", "heads=3"]) != 0
    assert "key/value groups" in capsys.readouterr().err
    enc = tmp_path / "enc.mlfs"
    assert main(["pack", str(tiny_bert_dir), str(enc)]) == 0
    assert main(["generate", str(enc), "--prompt", "x"]) != 0
    assert "encoder" in capsys.readouterr().err


def test_generate_picks_a_subnet_for_a_per_token_budget(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("MLFS_EDGE_CACHE", str(tmp_path / "cache"))  # profiles are cached there
    out = tmp_path / "tiny.mlfs"
    assert main(["pack", str(tiny_llama_dir), str(out)]) == 0
    # A palette of `mlfs-edge eval` for a causal LM: the lowest perplexity that fits wins.
    palette = tmp_path / "palette.json"
    rows = [{"subnet": {"layers": [0], "heads": [2], "mlp": [32]}, "perplexity": 90.0},
            {"subnet": {"layers": [0, 1], "heads": [4, 4], "mlp": [64, 64]}, "perplexity": 40.0}]
    palette.write_text(json.dumps({"rows": rows}))
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "x", "--raw", "--max-new-tokens", "2",
                 "--budget-ms-per-token", "1000", "--quality", str(palette)]) == 0
    text = capsys.readouterr().out
    assert "picked L2-H4-F64" in text and "ms per token measured" in text
    profiles = json.loads((tmp_path / "cache" / "engine_profiles.json").read_text())
    (key, table), = profiles.items()
    assert "|decode|" in key and len(table) == 2 and all(0 < ms < 1000 for ms in table.values())
    # Budget below the fastest candidate's measured step: one line naming it.
    assert main(["generate", str(out), "--prompt", "x", "--raw", "--budget-ms-per-token", "1e-6",
                 "--quality", str(palette)]) != 0
    err = capsys.readouterr().err
    # (which one is fastest is timing noise here: the tiny model's cost is its 49k-row head)
    assert "no sub-network runs within 1e-06 ms" in err and "the fastest candidate, L" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # No palette: the search space, bigger ranked as better; a huge budget gives the full model. The file
    # holds no importance order, so a sliced pick would warn that it is untrained (the full model does not).
    assert main(["generate", str(out), "--prompt", "x", "--raw", "--max-new-tokens", "2",
                 "--budget-ms-per-token", "1000"]) == 0
    text = capsys.readouterr().out
    assert "bigger ranked as better" in text and "picked L2-H4-F64" in text and "untrained slice" not in text
    assert main(["generate", str(out), "--prompt", "x", "--raw", "--max-new-tokens", "2",
                 "--subnet", "depth=1,heads=2,mlp=32"]) == 0
    assert "untrained slice" in capsys.readouterr().out
    assert main(["generate", str(out), "--prompt", "x", "--budget-ms-per-token", "-1"]) != 0
    assert "must be positive" in capsys.readouterr().err


def test_generate_with_a_draft(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFS_EDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tiny.mlfs"
    assert main(["pack", str(tiny_llama_dir), str(out)]) == 0
    base = ["generate", str(out), "--prompt", "The council voted", "--raw", "--max-new-tokens", "12"]
    capsys.readouterr()
    assert main(base) == 0
    plain = capsys.readouterr().out.splitlines()[0]
    assert main([*base, "--draft", "depth=1,heads=4,mlp=64", "--draft-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == plain  # greedy speculation prints the same text
    assert lines[-1].startswith("[draft L1-H4-F64]") and "tokens per verification" in lines[-1]
    assert main([*base, "--draft", "auto"]) == 0
    text = capsys.readouterr().out
    assert "[draft auto] measuring" in text and "acceptance" in text and "expected" in text
    assert main([*base, "--draft", "heads=3"]) != 0
    assert "key/value groups" in capsys.readouterr().err


def test_pack_with_a_vocab_order_and_a_cheap_draft_head(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFS_EDGE_CACHE", str(tmp_path / "cache"))
    plain, ordered = tmp_path / "plain.mlfs", tmp_path / "ordered.mlfs"
    assert main(["pack", str(tiny_llama_dir), str(plain)]) == 0
    assert main(["pack", str(tiny_llama_dir), str(ordered), "--vocab-order", "news"]) == 0
    assert "--draft-vocab 8192" in capsys.readouterr().out  # the next hint shows the cheap head
    engine = Engine.load(ordered)
    assert engine.vocab_ordered and "news" in engine.metadata["vocab_order"]
    # the most frequent news tokens come first: ' the' (or ',', '.') among the first rows, not id order
    tok = __import__("transformers").AutoTokenizer.from_pretrained(engine.tokenizer_dir())
    first = tok.convert_ids_to_tokens(list(engine._core.vocab_order[:8]))
    assert {"Ġthe", ",", "."} & set(first) and list(engine._core.vocab_order[:8]) != list(range(8))
    base = ["--prompt", "The council voted", "--raw", "--max-new-tokens", "10"]
    assert main(["generate", str(plain), *base]) == 0
    want = capsys.readouterr().out.splitlines()[0]
    assert main(["generate", str(ordered), *base, "--draft", "depth=1,heads=4,mlp=64", "--draft-vocab", "4096"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == want and "scoring 4096 tokens" in lines[-1]
    assert main(["generate", str(ordered), *base, "--draft", "auto"]) == 0
    # in an ordered file head sizes are candidates: depth 1 x {all, 4096, 8192, 16384} + the target x 3 heads
    assert "measuring 7 candidate drafts" in capsys.readouterr().out
