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
from mlfs_edge.supernet.arch import backbone_layers, family_of, layer_parts, lora_pairs
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
    parts = layer_parts(backbone_layers(model)[0], family_of(model))
    (_, q_b), = lora_pairs(parts.outs[0][0])
    (o_a, _), = lora_pairs(parts.o)
    (down_a, _), = lora_pairs(parts.mlp_out)
    (up_a, up_b), = lora_pairs(parts.outs[4][0])
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


@pytest.mark.slow
@pytest.mark.integration
def test_real_minilm_reorder_slice_extract(tmp_path):
    """The bundled MiniLM: reordering keeps its function; a sub-network with half the heads
    (an mlfs_bert config) extracts, saves and reloads with the supernet's outputs."""
    from transformers import AutoModel, AutoTokenizer

    from mlfs_edge.assets import minilm_path

    model = AutoModel.from_pretrained(minilm_path(), attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(minilm_path())
    enc = tok(["a gripping, beautifully shot film", "dull and far too long"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).last_hidden_state
        reorder_by_importance(model)
        torch.testing.assert_close(model(**enc).last_hidden_state, before, atol=1e-5, rtol=0)
        net = ElasticSupernet(model)
        cfg = SubnetConfig.parse("depth=4,heads=6,mlp=768", net.arch)
        net.set_active(cfg)
        active = model(**enc).last_hidden_state
        extract(model, cfg).save_pretrained(tmp_path)
        small = AutoModel.from_pretrained(tmp_path).eval()
        assert small.config.model_type == "mlfs_bert" and small.config.num_attention_heads == 6
        torch.testing.assert_close(small(**enc).last_hidden_state, active, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_quantized_frozen_base_slices_and_extracts(mode):
    from mlfs_edge.supernet.quantized import SlicedQuantLinear, quantize_frozen_base

    model = tiny_bert()
    reorder_by_importance(model)
    model = add_lora(model, LoraSettings(rank=4))
    randomize_lora(model)
    full_precision = out(model)
    assert quantize_frozen_base(model, mode)
    quantized = [m for m in model.modules() if isinstance(m, SlicedQuantLinear)]
    assert len(quantized) == 3 * 6 and all(not p.requires_grad for m in quantized for p in m.parameters())
    dense_bytes = sum(m.in_features * m.out_features * 4 for m in quantized)
    assert sum(m.quantized_bytes() for m in quantized) < dense_bytes / (3 if mode == "int8" else 5)
    torch.testing.assert_close(out(model), full_precision, atol=0.05, rtol=0.05)  # quantization error only
    net = ElasticSupernet(model)
    cfg = SubnetConfig.uniform(net.arch, depth=2, heads=2, mlp=40)
    net.set_active(cfg)
    active = out(model)
    model(**inputs()).logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n and "layer.0." in n)
    torch.testing.assert_close(out(extract(model, cfg)), active, atol=1e-4, rtol=0)  # dequantized + merged
    with pytest.raises(ValueError, match="unknown base quantization"):
        quantize_frozen_base(model, "fp8")


# --- elastic LoRA rank ------------------------------------------------------------------------------


def truncated_copy(model: torch.nn.Module, rank: int) -> torch.nn.Module:
    """The same peft model with every adapter's components beyond `rank` zeroed."""
    import copy

    clone = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in clone.named_parameters():
            if "lora_A" in name:
                p[rank:] = 0
            elif "lora_B" in name:
                p[:, rank:] = 0
    return clone


@pytest.mark.parametrize("make", MODELS)
def test_set_rank_uses_the_first_r_components(make):
    model = make()
    reorder_by_importance(model)
    model = add_lora(model, LoraSettings(rank=4, elastic_ranks=(1, 2)))
    randomize_lora(model)
    net = ElasticSupernet(model)
    full = out(model)
    cfg = SubnetConfig.uniform(net.arch, depth=2, heads=2, mlp=24)
    for rank in (1, 2):
        net.set_rank(rank)
        torch.testing.assert_close(out(model), out(truncated_copy(model, rank)), atol=1e-6, rtol=0)
        with net.activated(cfg):  # rank and widths slice independently
            sliced = out(model)
        reference = truncated_copy(model, rank)
        ElasticSupernet(reference).set_active(cfg)
        torch.testing.assert_close(sliced, out(reference), atol=1e-6, rtol=0)
        assert (out(model) - full).abs().max() > 1e-4  # a lower rank really changes the function
    net.set_rank(None)
    torch.testing.assert_close(out(model), full, atol=0, rtol=0)
    with pytest.raises(ValueError, match="rank 5 out of range"):
        net.set_rank(5)


@pytest.mark.parametrize("make", MODELS)
def test_reduce_rank_of_the_merged_weights_equals_the_rank_sliced_adapters(make):
    from mlfs_edge.supernet.extract import merged_state_dict
    from mlfs_edge.supernet.lora import adapters_of, reduce_rank

    model = make()
    reorder_by_importance(model)
    model = add_lora(model, LoraSettings(rank=4, elastic_ranks=(2,)))
    randomize_lora(model)
    merged = make()
    merged.load_state_dict(merged_state_dict(model))
    adapters = adapters_of(model)
    assert len(adapters) == 3 * (7 if make is tiny_llama else 6)
    reduce_rank(merged, adapters, 2)
    ElasticSupernet(model).set_rank(2)
    torch.testing.assert_close(out(merged), out(model), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        reduce_rank(merged, adapters, 9)


def test_elastic_rank_settings_are_checked():
    assert LoraSettings(rank=8, elastic_ranks=[4, 2, 4]).ranks == (2, 4, 8)  # a TOML list works too
    assert LoraSettings(rank=8).ranks == (8,)
    for bad in ([0], [9], [2.5]):
        with pytest.raises(ValueError, match="elastic_ranks"):
            LoraSettings(rank=8, elastic_ranks=bad)


def test_damaged_adapter_files_are_clear_errors(tmp_path):
    from mlfs_edge.supernet.lora import adapters_of, load_adapters, save_adapters

    model = add_lora(tiny_bert(), LoraSettings(rank=4, elastic_ranks=(2,)))
    path = tmp_path / "adapters.safetensors"
    save_adapters(adapters_of(model), path)
    loaded = load_adapters(path)
    assert loaded.keys() == adapters_of(model).keys() and all(a.shape[0] == 4 for a, _, _ in loaded.values())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="cannot read the LoRA adapters"):
        load_adapters(path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read the LoRA adapters"):
        load_adapters(path)
