from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random BERT (real architecture, random weights) with the MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mlfs_edge.assets import minilm_path

    path = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def packed_minilm(tmp_path_factory):
    """The bundled all-MiniLM-L6-v2 packed int8 and fp16 ({dtype: path}), tokenizer saved beside each."""
    from transformers import AutoModel, AutoTokenizer

    from mlfs_edge.assets import minilm_path
    from mlfs_edge.runtime import pack

    path = minilm_path()
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    out = tmp_path_factory.mktemp("packed_minilm")
    return {dtype: pack(model, out / f"minilm-{dtype}.mlfs", dtype=dtype, tokenizer=tokenizer, source="minilm")
            for dtype in ("int8", "fp16")}


TINY_DECODER_VOCAB = 160


@pytest.fixture(scope="session")
def packed_tiny_decoder(tmp_path_factory):
    """A tiny random Llama decoder (GQA: 4 heads, 2 key/value groups; 48 positions) packed fp32 and
    int8 ({dtype: path}): small enough for qemu and the JVM tests of the runner and the JNI bridge."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mlfs_edge.runtime import pack

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=TINY_DECODER_VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48,
                      tie_word_embeddings=True, rope_theta=5000.0, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # wider logits than the 0.02 init: greedy picks are no near-ties across ISAs
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    out = tmp_path_factory.mktemp("tiny_decoder")
    return {dt: pack(model, out / f"llama-{dt}.mlfs", dtype=dt) for dt in ("fp32", "int8")}


def save_tiny_llama(path, intermediate_size: int = 64):
    """A tiny random Llama (2 layers, 4 heads / 2 key-value groups) with the bundled SmolLM2 tokenizer,
    saved to `path` (the CLI tests of pack / generate / bench generate use it)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mlfs_edge.assets import smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=intermediate_size,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
