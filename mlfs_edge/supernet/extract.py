"""Extraction: materialize one sub-network as a standalone, smaller Hugging Face model.

Because every sub-network is a prefix (see importance.py), extraction is: merge the LoRA adapters
into the full weights, renumber the kept layers, and cut every tensor to the leading block of its
new shape. The result has real smaller matrices and a smaller config, saves with
``save_pretrained`` and loads back with ``AutoModel*.from_pretrained``.

Configs:
- Llama family: ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``,
  ``intermediate_size`` change; ``head_dim`` is written explicitly (it no longer equals
  hidden/heads). Plain ``model_type: llama``.
- BERT family: HF BERT derives the head size from hidden/heads, so a BERT with fewer heads than
  the original cannot be written as a plain BERT config. With all heads kept the result is a plain
  ``bert`` model; with fewer heads it is ``mlfs_bert`` (`MlfsBertConfig`: a BertConfig plus
  ``attention_head_size``), whose classes subclass the BERT ones and are registered with the Auto
  classes when ``mlfs_edge.supernet`` is imported.
- Non-uniform sub-networks (different heads or MLP width per kept layer) cannot be expressed by
  these configs (one ``intermediate_size``/``num_attention_heads`` for all layers). They run in the
  elastic supernet (`ElasticSupernet.set_active`) and in the native engine, which take per-layer
  widths; `extract` refuses them with a ValueError saying so.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PreTrainedModel,
)

from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.supernet.arch import arch_of, base_linear, full_depth, lora_pairs, unwrap

# --- a BERT whose heads are narrower than hidden/heads --------------------------------------------


class MlfsBertConfig(BertConfig):
    """BertConfig with an explicit ``attention_head_size`` (heads × head size may differ from hidden)."""

    model_type = "mlfs_bert"

    def __init__(self, attention_head_size: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.attention_head_size = attention_head_size or self.hidden_size // self.num_attention_heads
        # HF BERT checks hidden % heads == 0 unless the config has `embedding_size`; BERT's embeddings
        # do not read it, so it only switches that check off (our head size is explicit).
        self.embedding_size = self.hidden_size


def _narrow_attention(model: nn.Module, config: MlfsBertConfig) -> None:
    d, h = config.attention_head_size, config.num_attention_heads
    for module in model.modules():
        attn = getattr(module, "self", None)
        if module.__class__.__name__ != "BertAttention" or attn is None:
            continue
        attn.attention_head_size, attn.all_head_size, attn.scaling = d, h * d, d ** -0.5
        attn.query = nn.Linear(config.hidden_size, h * d)
        attn.key = nn.Linear(config.hidden_size, h * d)
        attn.value = nn.Linear(config.hidden_size, h * d)
        module.output.dense = nn.Linear(h * d, config.hidden_size)


class MlfsBertModel(BertModel):
    config_class = MlfsBertConfig

    def __init__(self, config: MlfsBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        _narrow_attention(self, config)


class MlfsBertForSequenceClassification(BertForSequenceClassification):
    config_class = MlfsBertConfig

    def __init__(self, config: MlfsBertConfig) -> None:
        super().__init__(config)
        _narrow_attention(self, config)


AutoConfig.register("mlfs_bert", MlfsBertConfig, exist_ok=True)
AutoModel.register(MlfsBertConfig, MlfsBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(MlfsBertConfig, MlfsBertForSequenceClassification, exist_ok=True)

_MLFS_BERT_CLASSES: dict[type, type] = {BertModel: MlfsBertModel,
                                        BertForSequenceClassification: MlfsBertForSequenceClassification,
                                        MlfsBertModel: MlfsBertModel,
                                        MlfsBertForSequenceClassification: MlfsBertForSequenceClassification}

# --- extraction -----------------------------------------------------------------------------------

_LAYER_KEY = re.compile(r"(\.layers?\.)(\d+)(\.)")


def _sub_config(hf_config, arch: ArchSpec, cfg: SubnetConfig):  # noqa: ANN001
    d = hf_config.to_dict()
    heads, mlp = cfg.heads[0], cfg.mlp[0]
    d.update(num_hidden_layers=cfg.depth, num_attention_heads=heads, intermediate_size=mlp)
    d["mlfs_subnet"] = cfg.to_dict()
    if arch.family == "llama":
        d.update(num_key_value_heads=heads // arch.group_size, head_dim=arch.head_dim)
        return type(hf_config).from_dict(d)
    if heads == arch.num_heads and type(hf_config) is not MlfsBertConfig:
        return type(hf_config).from_dict(d)
    d["model_type"] = "mlfs_bert"
    d["attention_head_size"] = arch.head_dim
    return MlfsBertConfig.from_dict(d)


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
        active = set(getattr(module, "active_adapters", []))
        for adapter, (lora_a, lora_b) in zip(module.lora_A, pairs, strict=True):
            if adapter in active and not getattr(module, "merged", False):
                w += module.scaling[adapter] * (lora_b.weight @ lora_a.weight).to(w.dtype)
        merged[f"{name}.weight"] = w
    out: dict[str, torch.Tensor] = {}
    with full_depth(hf):
        state = hf.state_dict()
    for key, value in state.items():
        if ".lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        out[plain] = merged.get(plain, value)
    return out


@torch.no_grad()
def extract(model: nn.Module, cfg: SubnetConfig) -> PreTrainedModel:
    """A standalone HF model computing sub-network `cfg` of `model` (LoRA merged), in eval mode.

    `model` is the (reordered) supernet: a HF model or a peft model over one. Only uniform
    sub-networks can be extracted (see the module docstring); the others raise ValueError.
    """
    hf = unwrap(model)
    arch = arch_of(hf)
    cfg.validate(arch)
    if not cfg.is_uniform():
        raise ValueError(
            f"cannot extract the non-uniform sub-network {cfg.name}: a Hugging Face config has one head count "
            "and one MLP width for all layers. Run it with ElasticSupernet.set_active (or the native engine), "
            "or extract a uniform sub-network (same heads and mlp in every kept layer).")
    sub_config = _sub_config(hf.config, arch, cfg)
    cls = type(hf)
    if isinstance(sub_config, MlfsBertConfig):
        if cls not in _MLFS_BERT_CLASSES:
            raise ValueError(f"extracting fewer heads from a {cls.__name__} is not supported; "
                             "use BertModel or BertForSequenceClassification")
        cls = _MLFS_BERT_CLASSES[cls]
    sub = cls(sub_config)
    source = merged_state_dict(hf)
    new_index = {str(old): str(new) for new, old in enumerate(cfg.layers)}
    by_new_key: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        m = _LAYER_KEY.search(key)
        if m:
            if m.group(2) not in new_index:
                continue
            key = key[:m.start(2)] + new_index[m.group(2)] + key[m.end(2):]
        by_new_key[key] = value
    target = sub.state_dict()
    missing = [k for k in target if k not in by_new_key]
    if missing:
        raise ValueError(f"extraction found no source for {missing[:3]}: the model layout is not supported")
    # Every sliced dimension is a prefix, so each tensor is the leading block of its source.
    new_state = {k: by_new_key[k][tuple(slice(0, n) for n in t.shape)].clone() for k, t in target.items()}
    sub.load_state_dict(new_state, strict=True)
    return sub.eval()
