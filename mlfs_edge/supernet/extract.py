"""Extraction: materialize one sub-network as a standalone, smaller Hugging Face model.

Because every sub-network is a prefix (see importance.py), extraction is: merge the LoRA adapters
into the full weights, renumber the kept layers, and cut every tensor to the leading block of its
new shape. The result has real smaller matrices and a smaller config, saves with
``save_pretrained`` and loads back with ``AutoModel*.from_pretrained``.

Configs (the dims are written where the family's config keeps them, `mlfs_edge.families`):
- families with a ``head_dim`` field (Llama, Qwen, Mistral, Gemma, Phi-3): layers, heads, key/value
  heads and MLP width change and ``head_dim`` is written explicitly. Plain model type.
- families that derive the head size from hidden/heads (BERT, RoBERTa, DistilBERT, MPNet,
  ModernBERT, GPT-2): with all heads kept the result is a plain model of the family; with fewer
  heads it is ``mlfs_<type>`` (``mlfs_bert``, ...: the config plus ``attention_head_size``, see
  `supernet.narrow`), registered with the Auto classes when ``mlfs_edge.supernet`` is imported.
- fused projections (Phi-3 qkv_proj / gate_up_proj, ModernBERT Wqkv / Wi, GPT-2 c_attn) keep a
  prefix of each of their segments.
- Non-uniform sub-networks (different heads or MLP width per kept layer) cannot be expressed by
  these configs (one ``intermediate_size``/``num_attention_heads`` for all layers). They run in the
  elastic supernet (`ElasticSupernet.set_active`) and in the native engine, which take per-layer
  widths; `extract` refuses them with a ValueError saying so.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.families import Family, check_stage
from mlfs_edge.supernet.arch import arch_of, base_linear, full_depth, lora_pairs, segment_rows, segment_widths, unwrap
from mlfs_edge.supernet.narrow import NARROW_CONFIGS, NARROW_MODELS, MlfsBertConfig

__all__ = ["MlfsBertConfig", "extract", "merged_state_dict"]

def _sub_config(hf_config, arch: ArchSpec, cfg: SubnetConfig, family: Family):  # noqa: ANN001
    """The HF config of the uniform sub-network `cfg`, written where the family keeps each dim."""
    n = family.names
    d = hf_config.to_dict()
    heads, mlp = cfg.heads[0], cfg.mlp[0]
    d.update({n.layers: cfg.depth, n.heads: heads, n.intermediate: mlp})
    d["mlfs_subnet"] = cfg.to_dict()
    if isinstance(d.get("layer_types"), list):  # per-layer attention kinds (sliding / full) follow their layers
        d["layer_types"] = [d["layer_types"][i] for i in cfg.layers]
    if n.kv_heads:
        d[n.kv_heads] = heads // arch.group_size
    if n.head_dim:  # the head size is a config field: write it (it no longer equals hidden / heads)
        d[n.head_dim] = arch.head_dim
        return type(hf_config).from_dict(d)
    narrow = NARROW_CONFIGS[family.model_types[0]]
    if heads == arch.num_heads and type(hf_config) is not narrow:
        return type(hf_config).from_dict(d)
    d["model_type"] = narrow.model_type
    d["attention_head_size"] = arch.head_dim
    return narrow.from_dict(d)


def _rows_of(key: str, fused: dict[str, tuple[str, ...]], sizes: dict[str, int], keep: dict[str, int],
             conv1d: bool) -> tuple[int, list[tuple[int, int]]] | None:
    """(axis, kept row ranges) of a fused projection's weight or bias; None for any other tensor."""
    module, _, leaf = key.rpartition(".")
    segments = fused.get(module.rpartition(".")[2] if module else "")
    if segments is None or leaf not in ("weight", "bias"):
        return None
    axis = 1 if conv1d and leaf == "weight" else 0
    return axis, segment_rows(segments, sizes, keep)


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF model's state dict with every active LoRA adapter merged into its base weight.

    Keys are those of the plain HF model (peft's ``base_layer.`` and ``lora_`` entries removed).
    """
    hf = unwrap(model)
    merged: dict[str, torch.Tensor] = {}
    with full_depth(hf):
        modules = list(hf.named_modules())
    for name, module in modules:
        pairs = lora_pairs(module)
        if not pairs:
            continue
        base = base_linear(module)
        w = base.weight.detach().clone()
        w_oi = w.T if isinstance(base, Conv1D) else w  # GPT-2 Conv1D keeps [in, out]
        active = set(getattr(module, "active_adapters", []))
        for adapter, (lora_a, lora_b) in zip(module.lora_A, pairs, strict=True):
            if adapter in active and not getattr(module, "merged", False):
                w_oi += module.scaling[adapter] * (lora_b.weight @ lora_a.weight).to(w.dtype)
        merged[f"{name}.weight"] = w
    out: dict[str, torch.Tensor] = {}
    with full_depth(hf):
        state = hf.state_dict()
    for key, value in state.items():
        if ".lora_" in key or key.endswith(".qweight"):  # adapters are merged; quantized weights dequantized
            continue
        out[key.replace(".base_layer.", ".")] = value
    out.update(merged)
    return out


@torch.no_grad()
def extract(model: nn.Module, cfg: SubnetConfig) -> PreTrainedModel:
    """A standalone HF model computing sub-network `cfg` of `model` (LoRA merged), in eval mode.

    `model` is the (reordered) supernet: a HF model or a peft model over one. Only uniform
    sub-networks can be extracted (see the module docstring); the others raise ValueError.
    """
    hf = unwrap(model)
    arch, family = arch_of(hf), check_stage(hf.config, "extract")
    cfg.validate(arch)
    if not cfg.is_uniform():
        raise ValueError(
            f"cannot extract the non-uniform sub-network {cfg.name}: a Hugging Face config has one head count "
            "and one MLP width for all layers. Run it with ElasticSupernet.set_active (or the native engine), "
            "or extract a uniform sub-network (same heads and mlp in every kept layer).")
    with full_depth(hf):  # the config as the full model has it (per-layer fields of every layer)
        sub_config = _sub_config(hf.config, arch, cfg, family)
    cls = type(hf)
    if "attention_head_size" in sub_config.to_dict() and not family.names.head_dim:
        if cls not in NARROW_MODELS:
            raise ValueError(f"extracting fewer heads from a {cls.__name__} is not supported; use the family's "
                             "base model or its sequence classifier / causal LM")
        cls = NARROW_MODELS[cls]
    sub = cls(sub_config)
    source = merged_state_dict(hf)
    new_index = {str(old): str(new) for new, old in enumerate(cfg.layers)}
    layer_key = re.compile(rf"(\.{re.escape(family.modules.layers.rpartition('.')[2])}\.)(\d+)(\.)")
    m = family.modules
    fused = {p.rpartition(".")[2]: seg for p, seg in ((m.qkv, ("q", "kv", "kv")), (m.gate_up, ("mlp", "mlp"))) if p}
    sizes, keep = segment_widths(arch), segment_widths(arch, cfg.heads[0], cfg.mlp[0])
    by_new_key: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        hit = layer_key.search(key)
        if hit:
            if hit.group(2) not in new_index:
                continue
            key = key[:hit.start(2)] + new_index[hit.group(2)] + key[hit.end(2):]
            rows = _rows_of(key, fused, sizes, keep, m.conv1d)
            if rows is not None:  # a fused projection keeps a prefix of each segment
                axis, ranges = rows
                value = torch.cat([value.narrow(axis, a, b - a) for a, b in ranges], axis)
        by_new_key[key] = value
    target = sub.state_dict()
    missing = [k for k in target if k not in by_new_key]
    if missing:
        raise ValueError(f"extraction found no source for {missing[:3]}: the model layout is not supported")
    # Every other sliced dimension is a prefix, so each tensor is the leading block of its source.
    new_state = {k: by_new_key[k][tuple(slice(0, n) for n in t.shape)].clone() for k, t in target.items()}
    sub.load_state_dict(new_state, strict=True)
    return sub.eval()
