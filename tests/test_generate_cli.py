"""mlfs-edge pack / generate on a tiny random Llama that uses the bundled SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from mlfs_edge.cli import main
from mlfs_edge.runtime import Engine


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mlfs_edge.assets import smollm2_path

    path = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


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
