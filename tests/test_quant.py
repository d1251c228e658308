"""quantize(model, config): the shared int8 scheme in PyTorch, fp16 and the bitsandbytes variants."""

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from mlfs_edge.quant import (
    BnbInt8Config,
    BnbNf4Config,
    Fp16Config,
    Int8Config,
    config_for,
    model_size_bytes,
    quantize,
)
from mlfs_edge.quant.int8 import Int8Embedding, Int8Linear
from mlfs_edge.quant.scheme import dequantize_per_row, int8_linear_reference, quantize_per_row


def _tiny_classifier(seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_int8_linear_equals_the_scheme_reference_exactly(rows):
    torch.manual_seed(rows)
    lin = nn.Linear(96, 48)
    q = Int8Linear.from_float(lin)
    x = torch.randn(rows, 96) * 3
    q_w, s_w = quantize_per_row(lin.weight)
    assert torch.equal(q.qweight, q_w) and torch.equal(q.weight_scale, s_w)
    assert torch.equal(q(x), int8_linear_reference(x, q_w, s_w, lin.bias))
    x3 = torch.randn(2, 7, 96)  # leading dims are tokens
    assert torch.equal(q(x3), int8_linear_reference(x3, q_w, s_w, lin.bias))


def test_int8_embedding_dequantises_the_looked_up_rows():
    torch.manual_seed(0)
    emb = nn.Embedding(50, 16, padding_idx=0)
    q = Int8Embedding.from_float(emb)
    ids = torch.tensor([[0, 3, 49, 3]])
    q_w, s = quantize_per_row(emb.weight)
    assert torch.equal(q(ids), dequantize_per_row(q_w, s)[ids])
    assert q.padding_idx == 0


def test_int8_model_replaces_linears_and_embeddings_keeps_predictions_and_shrinks():
    model = _tiny_classifier()
    ids, mask = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
    fp32_bytes = model_size_bytes(model)
    quantize(model, Int8Config(skip=("classifier",)))
    kinds = {type(m) for m in model.modules()}
    assert nn.Linear in kinds  # the skipped classifier
    assert isinstance(model.classifier, nn.Linear) and isinstance(model.bert.pooler.dense, Int8Linear)
    assert not any(type(m) is nn.Embedding for m in model.modules())
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.99
    assert model_size_bytes(model) < 0.3 * fp32_bytes


def test_int8_without_embeddings_leaves_the_tables_in_float():
    model = quantize(_tiny_classifier(), Int8Config(embeddings=False))
    assert isinstance(model.bert.embeddings.word_embeddings, nn.Embedding)
    assert not any(type(m) is nn.Linear for m in model.modules())


def test_fp16_halves_the_size_and_keeps_the_logits():
    model = _tiny_classifier()
    ids, mask = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
    fp32_bytes = model_size_bytes(model)
    quantize(model, Fp16Config())
    assert next(model.parameters()).dtype == torch.float16
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits.float()
    assert (out - ref).abs().max() < 1e-2
    assert model_size_bytes(model) <= 0.5 * fp32_bytes + 64


@pytest.mark.parametrize("config", [BnbInt8Config(), BnbNf4Config()], ids=["llm.int8", "nf4"])
def test_bitsandbytes_variants_run_on_cpu_and_shrink(config):
    import bitsandbytes as bnb

    model = _tiny_classifier()
    ids, mask = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
    fp32_bytes = model_size_bytes(model)
    quantize(model, config)
    layer_type = bnb.nn.Linear8bitLt if isinstance(config, BnbInt8Config) else bnb.nn.Linear4bit
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, layer_type)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits.float()
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.95
    # The embeddings stay in float, so only the linears shrink.
    assert model_size_bytes(model) < fp32_bytes


def test_bad_configs_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"unknown quantization 'int4'.*int8, fp16"):
        config_for("int4")
    with pytest.raises(TypeError, match="Int8Config"):
        quantize(_tiny_classifier(), "int8")
    assert config_for("bnb-nf4") == BnbNf4Config()
    with pytest.raises(ValueError, match="2-D int8"):
        Int8Linear(torch.zeros(3, 3), torch.ones(3), None)


def test_quantize_command_writes_sizes_and_accuracy(tiny_bert_dir, tmp_path, capsys):
    import json

    from mlfs_edge.cli import main

    out = tmp_path / "q.json"
    assert main(["quantize", "--model", str(tiny_bert_dir), "--subnet", "full", "--schemes", "fp32,int8,fp16",
                 "--max-eval", "16", "--json", str(out)]) == 0
    rows = {r["scheme"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"fp32", "int8", "fp16"} and all(r["test_examples"] == 16 for r in rows.values())
    assert rows["fp16"]["size_vs_fp32"] < 0.55 and rows["int8"]["size_vs_fp32"] < rows["fp16"]["size_vs_fp32"]
    assert "| fp16" in capsys.readouterr().out
    assert main(["quantize", "--model", str(tiny_bert_dir), "--schemes", "int4"]) == 2  # unknown scheme
