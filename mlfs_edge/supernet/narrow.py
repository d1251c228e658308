"""Models whose heads are narrower than hidden / heads: what an extracted sub-network with fewer heads
becomes in the families whose config derives the head size from hidden / heads (BERT, RoBERTa,
XLM-R, DistilBERT, MPNet, ModernBERT, GPT-2).

Such a sub-network is saved as model type ``mlfs_<type>`` (``mlfs_bert``, ``mlfs_roberta``, ...): the
family's own config plus ``attention_head_size``. Its model classes subclass the family's: they are
built with the head count that gives the original head size (hidden / head size), then every
attention projection is replaced by one of the kept width, following the family's module map. The
classes are registered with the Auto classes when ``mlfs_edge.supernet`` is imported, so
``AutoModel*.from_pretrained`` loads the folder back.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
from transformers.pytorch_utils import Conv1D

from mlfs_edge import families
from mlfs_edge.families import Family
from mlfs_edge.supernet.arch import layer_parts, set_head_attrs

_AUTO = (AutoModel, AutoModelForSequenceClassification, AutoModelForCausalLM)


def _resized(module: nn.Module, out_features: int | None = None, in_features: int | None = None) -> nn.Module:
    if isinstance(module, Conv1D):
        nx, nf = module.weight.shape
        return Conv1D(out_features or nf, in_features or nx)
    return nn.Linear(in_features or module.in_features, out_features or module.out_features,
                     bias=module.bias is not None)


def _replace(root: nn.Module, module: nn.Module, new: nn.Module) -> None:
    for name, child in root.named_modules():
        if child is module:
            parent, _, attr = name.rpartition(".")
            setattr(root.get_submodule(parent) if parent else root, attr, new)
            return


def narrow_heads(model: nn.Module, family: Family, heads: int, kv_heads: int, head_dim: int) -> None:
    """Cut every layer's attention of `model` (built with the full head count) to `heads` heads."""
    width = {"q": heads * head_dim, "kv": kv_heads * head_dim}
    base = model.base_model
    layers = base.get_submodule(family.modules.layers)
    for layer in layers:
        p = layer_parts(layer, family)
        for module, segments in p.outs:
            if "mlp" not in segments:
                _replace(layer, module, _resized(module, out_features=sum(width[k] for k in segments)))
        _replace(layer, p.o, _resized(p.o, in_features=width["q"]))
        set_head_attrs(p.attn, heads, kv_heads, head_dim)
    if family.modules.head_bias:
        old = base.get_submodule(family.modules.head_bias)
        _replace(base, old, nn.Embedding(old.num_embeddings, heads))


def _narrow_config_class(family: Family, config_cls: type) -> type:
    def __init__(self: Any, attention_head_size: int | None = None, **kwargs: Any) -> None:
        config_cls.__init__(self, **kwargs)
        n = family.names
        self.attention_head_size = attention_head_size or getattr(self, n.hidden) // getattr(self, n.heads)
        # BERT-like configs check hidden % heads unless `embedding_size` is set; their embeddings do
        # not read it, so it only switches that check off (the head size is explicit).
        self.embedding_size = getattr(self, n.hidden)
        # Rotary embeddings (ModernBERT) size themselves from config.head_dim when present.
        self.head_dim = self.attention_head_size

    name = "Mlfs" + config_cls.__name__
    return type(name, (config_cls,), {"model_type": f"mlfs_{family.model_types[0]}", "__init__": __init__,
                                      "__module__": __name__})


def _narrow_model_class(family: Family, model_cls: type, config_cls: type) -> type:
    def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        n = family.names
        d, heads = config.attention_head_size, getattr(config, n.heads)
        # Built with hidden / d heads (the original head size), then cut. The config object itself is
        # changed for the while (not a copy): the modules keep it and read e.g. its attention kind.
        setattr(config, n.heads, getattr(config, n.hidden) // d)
        try:
            model_cls.__init__(self, config, *args, **kwargs)
        finally:
            setattr(config, n.heads, heads)
        narrow_heads(self, family, heads, heads, d)

    return type("Mlfs" + model_cls.__name__, (model_cls,), {"config_class": config_cls, "__init__": __init__,
                                                             "__module__": __name__})


NARROW_CONFIGS: dict[str, type] = {}  # family model type -> its mlfs_ config class
NARROW_MODELS: dict[type, type] = {}  # a family model class (or its narrow class) -> the narrow class


def _register(family: Family) -> None:
    own = family.model_types[0]
    config_cls = AutoConfig.for_model(own).__class__
    narrow_cfg = _narrow_config_class(family, config_cls)
    AutoConfig.register(narrow_cfg.model_type, narrow_cfg, exist_ok=True)
    NARROW_CONFIGS[own] = narrow_cfg
    for auto in _AUTO:
        try:
            model_cls = auto._model_mapping[config_cls]
        except KeyError:  # e.g. no causal LM class for an encoder
            continue
        narrow = _narrow_model_class(family, model_cls, narrow_cfg)
        auto.register(narrow_cfg, narrow, exist_ok=True)
        NARROW_MODELS[model_cls] = NARROW_MODELS[narrow] = narrow


for _fam in families.FAMILIES:
    if not _fam.names.head_dim and f"mlfs_{_fam.model_types[0]}" in _fam.model_types:
        _register(_fam)

MlfsBertConfig = NARROW_CONFIGS["bert"]
