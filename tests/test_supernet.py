"""Supernet mechanics on tiny random BERT and Llama models: reordering, slicing, LoRA, extraction."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
)

from mlfs_edge.config import SubnetConfig
from mlfs_edge.supernet import ElasticSupernet, apply_order, compute_order, extract, reorder_by_importance
from mlfs_edge.supernet.arch import backbone_layers, layer_parts, lora_pairs
from mlfs_edge.supernet.importance import weight_scores
from mlfs_edge.supernet.lora import LoraSettings, add_lora, trainable_report


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, num_labels=3, max_position_embeddings=32)
    return BertForSequenceClassification(cfg).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def out(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs()).logits


def randomize_lora(model: torch.nn.Module) -> None:
    """peft starts B at zero; random B makes the adapters visible in every output."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


MODELS = [pytest.param(tiny_bert, id="bert"), pytest.param(tiny_llama, id="llama-gqa")]


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("method", ["weight", "activation"])
def test_reordering_keeps_the_full_function(make, method):
    model = make()
    before = out(model)
    order = reorder_by_importance(model, method, calibration=[inputs()])
    assert not order.is_identity()
    torch.testing.assert_close(out(model), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", MODELS)
def test_reordering_sorts_by_weight_norm_and_keeps_kv_groups(make):
    model = make()
    order = reorder_by_importance(model)
    group = model.config.num_attention_heads // getattr(model.config, "num_key_value_heads", 4)
    for heads in order.heads:  # query heads of one key/value group stay together
        assert all(heads[i] // group == heads[i - i % group] // group for i in range(len(heads)))
    for head, kv, mlp in weight_scores(model):  # recomputed after the permutation: now descending
        assert torch.all(mlp[:-1] >= mlp[1:])
        total = kv + head.view(len(kv), -1).sum(1)
        assert torch.all(total[:-1] >= total[1:])
    # the recorded order re-applied to a fresh copy gives the same weights
    fresh = make()
    apply_order(fresh, order)
    for (n, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)


def test_bad_importance_requests_are_refused():
    model = tiny_llama()
    with pytest.raises(ValueError, match="calibration"):
        compute_order(model, "activation")
    with pytest.raises(ValueError, match="unknown importance"):
        compute_order(model, "magic")
    order = compute_order(model)
    broken = type(order)("weight", ((1, 2, 0, 3),) * 3, order.mlp)  # head 1 and 2 sit in different groups
    with pytest.raises(ValueError, match="key/value group"):
        apply_order(model, broken)


SUBNETS = [dict(depth=2, heads=2, mlp=40), dict(depth=3, heads=4, mlp=16), dict(depth=1, heads=2, mlp=64)]


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("sub", SUBNETS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
@pytest.mark.parametrize("with_lora", [False, True], ids=["plain", "lora"])
def test_set_active_equals_extracted_model(make, sub, with_lora, tmp_path):
    model = make()
    reorder_by_importance(model)
    if with_lora:
        model = add_lora(model, LoraSettings(rank=4))
        randomize_lora(model)
    net = ElasticSupernet(model)
    full = out(model)
    cfg = SubnetConfig.uniform(net.arch, **sub)
    net.set_active(cfg)
    active = out(model)
    small = extract(model, cfg)
    assert small.config.num_hidden_layers == cfg.depth and small.config.intermediate_size == cfg.mlp[0]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in make().parameters())
    small.save_pretrained(tmp_path)
    auto = AutoModelForCausalLM if net.arch.family == "llama" else AutoModelForSequenceClassification
    loaded = auto.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(out(small), active, atol=1e-4, rtol=0)
    torch.testing.assert_close(out(loaded), active, atol=1e-4, rtol=0)
    net.set_active(net.full)
    torch.testing.assert_close(out(model), full, atol=0, rtol=0)  # back to the full network exactly
    assert (active - full).abs().max() > 1e-5  # the sub-network really computes something else


def test_lora_is_sliced_with_its_base_layer():
    model = tiny_llama()
    reorder_by_importance(model)
    model = add_lora(model, LoraSettings(rank=4))
    randomize_lora(model)
    report = trainable_report(model)
    assert report["trainable"] == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    net = ElasticSupernet(model)
    net.set_active(SubnetConfig.uniform(net.arch, depth=3, heads=2, mlp=24))
    model(**inputs()).logits.sum().backward()
    parts = layer_parts(backbone_layers(model)[0], "llama")
    (_, q_b), = lora_pairs(parts.q)
    (o_a, _), = lora_pairs(parts.o)
    (down_a, _), = lora_pairs(parts.mlp_out)
    (up_a, up_b), = lora_pairs(parts.mlp_in[1])
    head_dim = 8
    assert q_b.weight.grad[:2 * head_dim].abs().sum() > 0 and q_b.weight.grad[2 * head_dim:].abs().sum() == 0
    assert o_a.weight.grad[:, :2 * head_dim].abs().sum() > 0 and o_a.weight.grad[:, 2 * head_dim:].abs().sum() == 0
    assert down_a.weight.grad[:, 24:].abs().sum() == 0 and up_b.weight.grad[24:].abs().sum() == 0
    assert up_a.weight.grad.abs().sum() > 0  # A of an input projection sees the full hidden size


def test_invalid_and_non_uniform_subnets_are_refused():
    model = tiny_llama()
    net = ElasticSupernet(model)
    with pytest.raises(ValueError, match="key/value groups"):
        net.set_active(SubnetConfig((0, 1), (3, 3), (64, 64)))
    with pytest.raises(ValueError, match="out of range"):
        net.set_active(SubnetConfig((0, 5), (4, 4), (64, 64)))
    non_uniform = SubnetConfig((0, 2), (4, 2), (64, 32))
    net.set_active(non_uniform)  # the elastic model runs per-layer widths ...
    assert out(model).shape == (3, 9, 100)
    with pytest.raises(ValueError, match="non-uniform"):  # ... a HF config cannot hold them
        extract(model, non_uniform)
