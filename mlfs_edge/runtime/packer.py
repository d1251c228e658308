"""Pack a (reordered) supernet into one ``.mlfs`` file for the C++ engine: a BERT-family encoder,
or a Llama-family decoder (Llama, SmolLM2, Qwen2-style q/k/v bias; see `_pack_decoder`).

The engine runs any sub-network by striding into these buffers, so the file holds the *full*
supernet once. Linear weights (and the word embedding) are stored in the chosen dtype — fp32, fp16,
or int8 with mlfs_edge.quant.scheme's per-output-row scales, which stay valid for every prefix slice —
and everything small (biases, LayerNorms, position embeddings, the classifier) in fp32. Linear
weights are laid out for the kernels (transposed "KN", int8 "P32K4" panels; see csrc/include/mlfs/kernels.h),
in which a prefix slice W[:n, :k] is still a stride.
LoRA adapters are stored unmerged (fp32 A, B and scale per adapted Linear) so the engine runs the
low-rank path beside the sliced base, or merged into the base weights before quantisation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlfs_edge import _core
from mlfs_edge.atomic import write_dir_atomically
from mlfs_edge.config import ArchSpec
from mlfs_edge.models import sentence_pooling
from mlfs_edge.quant.scheme import Q4_GROUP, quantize_per_row, quantize_q4_groups
from mlfs_edge.runtime.format import DTYPE_CODES, POOLING_CODES, ModelDims, encode, write_atomically
from mlfs_edge.supernet.lora import LoraAdapter, adapters_of

# Engine name of each per-layer Linear → its module path inside a HF BertLayer.
LAYER_LINEARS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "ff1": "intermediate.dense",
    "ff2": "output.dense",
}
LAYER_NORMS = {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}

def tokenizer_dir_for(path: str | os.PathLike) -> Path:
    """Where `pack` saves the tokenizer of a packed file: a folder next to it."""
    path = Path(path)
    return path.with_name(path.name + ".tokenizer")


def _load(model: torch.nn.Module | str | os.PathLike) -> torch.nn.Module:
    if not isinstance(model, str | os.PathLike):
        return model
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    path = Path(model)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json)")
    config = AutoConfig.from_pretrained(path)
    if ArchSpec.from_hf_config(config).family == "llama":
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    cls = AutoModelForSequenceClassification if is_classifier else AutoModel
    return cls.from_pretrained(path, attn_implementation="eager").eval()


def _split_model(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module | None, dict[str, LoraAdapter]]:
    """(the BertModel, the classifier Linear or None, the LoRA adapters of a peft model)."""
    lora: dict[str, LoraAdapter] = {}
    if hasattr(model, "peft_config"):
        lora = adapters_of(model)
        model = model.get_base_model()
    encoder = getattr(model, model.base_model_prefix, model) if hasattr(model, "classifier") else model
    classifier = getattr(model, "classifier", None)
    if classifier is not None and not isinstance(classifier, torch.nn.Linear):
        raise ValueError(f"classifier head {type(classifier).__name__} is not supported: a single Linear is")
    if not hasattr(encoder, "embeddings") or not hasattr(encoder, "encoder"):
        raise ValueError(f"{type(model).__name__} is not a BERT-family encoder (BertModel or "
                         "BertForSequenceClassification)")
    # keys are paths in the HF model ("bert.encoder.layer.0..." in a classifier); keep the BertModel part.
    lora = {name[name.find("encoder.layer."):] if "encoder.layer." in name else name: ad for name, ad in lora.items()}
    return encoder, classifier, lora


def _weight(module: torch.nn.Module) -> torch.nn.Linear:
    """The plain Linear of a possibly LoRA-wrapped module (peft keeps it as `base_layer`)."""
    return getattr(module, "base_layer", module)


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def _store_linear(out: dict[str, np.ndarray], name: str, weight: torch.Tensor, dtype: str) -> None:
    """A Linear weight W [out, in] in the kernels' layout (csrc/include/mlfs/kernels.h): fp32/fp16
    transposed ("KN"), int8 quantised per output row then cut into panels of 32 outputs, each a run of
    groups of 4 inputs ("P32K4") + fp32 scales, q4 quantised per group of 32 inputs into "P16" panels
    of 16 outputs with the fp16 scales and minimums inline (one tensor)."""
    if dtype == "q4":
        q, d, lo = quantize_q4_groups(weight.detach().float())
        out[name] = _core.pack_weight_q4(q.numpy(), d.numpy().astype(np.float16), lo.numpy().astype(np.float16))
    elif dtype == "int8":
        q, scale = quantize_per_row(weight.detach().float())
        out[name] = _core.pack_weight(q.numpy())
        out[name + ".scale"] = scale.numpy().astype(np.float32)
    else:
        w = _f32(weight)
        out[name] = _core.pack_weight(w.astype(np.float16) if dtype == "fp16" else w)


def _store_table(out: dict[str, np.ndarray], name: str, table: torch.Tensor, dtype: str) -> None:
    """An embedding table [rows, hidden], row-major (rows are gathered); int8 with per-row scales."""
    if dtype == "int8":
        q, scale = quantize_per_row(table.detach().float())
        out[name], out[name + ".scale"] = q.numpy(), scale.numpy().astype(np.float32)
    else:
        t = _f32(table)
        out[name] = t.astype(np.float16) if dtype == "fp16" else t


def pack(model: torch.nn.Module | str | os.PathLike, path: str | os.PathLike, dtype: str = "fp32",
         lora: Mapping[str, LoraAdapter] | None = None, merge_lora: bool = False, pooling: str | None = None,
         importance_order: Mapping[str, Any] | None = None, tokenizer: Any = None,
         source: str | None = None, head_dtype: str | None = None,
         vocab_order: Sequence[int] | None = None, vocab_order_source: str | None = None,
         normalize: bool | None = None) -> Path:
    """Write `model` to `path`: a BertModel or BertForSequenceClassification (an encoder file), or a
    Llama-family causal LM (a decoder file: LlamaForCausalLM / Qwen2ForCausalLM, e.g. SmolLM2 or a
    decoder supernet folder written by `mlfs-edge train`), or the folder of either.

    dtype: "fp32" | "fp16" | "int8" for the Linear weights and the word embedding; decoders also
        "q4" (4-bit groups of 32 inputs, mlfs_edge.quant.scheme.quantize_q4_groups).
    lora: {module path ("encoder.layer.0.attention.self.query"): (A [r, in], B [out, r], scale)};
        taken from the model itself when it is a peft model. Stored unmerged unless merge_lora.
    pooling: "cls" (pooler dense + tanh on the first token; required by a classifier head), or one
        of sentence-transformers' modes on the raw last hidden states: "mean" (over the attention
        mask), "cls_token" (first token), "max", "mean_sqrt_len", "lasttoken". Default for a plain
        encoder: what the folder's sentence-transformers config says (modules.json →
        1_Pooling/config.json, `mlfs_edge.models.sentence_pooling`), else "mean".
    normalize: L2-normalise a plain encoder's pooled embedding in the engine (default: whether the
        folder's sentence-transformers pipeline ends with a Normalize module).
    importance_order: the permutations applied to heads/channels when the supernet was reordered,
        recorded as provenance (JSON-serialisable), e.g. {"heads": [[...] per layer], "mlp": [...]};
        read from a supernet folder's mlfs_meta.json when not given.
    tokenizer: a tokenizer (or its folder) to save next to the file, in `tokenizer_dir_for(path)`.
    head_dtype: decoders: the LM head's (and the embedding table's) storage when it should differ
        from `dtype` (e.g. "fp16" in an int8 or q4 file); default: `dtype`.
    vocab_order: decoders: a permutation of the token ids, most frequent first (see
        `frequency_order`); the LM head and embedding rows are stored in that order so that a
        speculative draft can score a prefix of the vocabulary (an elastic head). Token ids in and out
        of the engine are unchanged. `vocab_order_source` says where the counts came from.
    """
    if dtype not in DTYPE_CODES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CODES)}, got {dtype!r}")
    src_name = source or (str(model) if isinstance(model, str | os.PathLike) else type(model).__name__)
    if importance_order is None and isinstance(model, str | os.PathLike):
        importance_order = _supernet_order(Path(model))
    loaded = _load(model)
    if ArchSpec.from_hf_config(getattr(loaded, "config", None)).family == "llama":
        if lora or hasattr(loaded, "peft_config"):
            raise ValueError("unmerged LoRA adapters are packed for encoders only; pack the decoder supernet "
                             "folder `mlfs-edge train` wrote (adapters merged)")
        return _pack_decoder(loaded, path, dtype, importance_order, tokenizer, src_name, head_dtype or dtype,
                             vocab_order, vocab_order_source)
    if vocab_order is not None:
        raise ValueError("vocab_order is for decoders (their LM head)")
    if dtype == "q4":
        raise ValueError("4-bit (q4) files are for decoders; pack an encoder as fp32, fp16 or int8")
    if head_dtype is not None:
        raise ValueError("head_dtype is for decoders (their LM head)")
    encoder, classifier, peft_lora = _split_model(loaded)
    lora = dict(lora if lora is not None else peft_lora)
    config = encoder.config
    arch = ArchSpec.from_hf_config(config)
    if arch.family != "bert":
        raise ValueError(f"the engine runs BERT-family encoders; this model is {arch.family}")
    if getattr(config, "hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {config.hidden_act!r} is not supported: the engine implements erf GELU")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported")
    pooler = getattr(encoder, "pooler", None)
    # a sentence-transformers folder says how its embedding is pooled; a classifier's head ignores it
    st = sentence_pooling(model) if isinstance(model, str | os.PathLike) and classifier is None else None
    pooling = pooling or (st.mode if st else "cls" if classifier is not None else "mean")
    if pooling not in POOLING_CODES:
        raise ValueError(f"pooling must be one of {', '.join(POOLING_CODES)}, got {pooling!r}")
    normalize = bool(st.normalize if normalize is None and st else normalize)
    if normalize and classifier is not None:
        raise ValueError("normalize is for a plain encoder's embedding; a classifier outputs logits")
    if classifier is not None and pooling != "cls":
        raise ValueError("a sequence-classification head reads the pooler output: use pooling='cls'")
    if pooling == "cls" and pooler is None:
        raise ValueError("pooling='cls' needs the model's pooler layer (dense + tanh), which this model lacks")
    known = {f"encoder.layer.{i}.{m}" for i in range(arch.num_layers) for m in LAYER_LINEARS.values()}
    unknown = sorted(set(lora) - known)
    if unknown:
        raise ValueError(f"LoRA adapters for modules the engine does not adapt: {', '.join(unknown[:3])}; "
                         "adaptable are the query/key/value/output/intermediate/output dense Linears")

    emb = encoder.embeddings
    tensors: dict[str, np.ndarray] = {}
    _store_table(tensors, "emb.word", emb.word_embeddings.weight, dtype)
    tensors["emb.pos"] = _f32(emb.position_embeddings.weight)
    tensors["emb.type"] = _f32(emb.token_type_embeddings.weight)
    tensors["emb.ln.w"], tensors["emb.ln.b"] = _f32(emb.LayerNorm.weight), _f32(emb.LayerNorm.bias)
    adapted: list[str] = []
    for i, layer in enumerate(encoder.encoder.layer):
        for short, sub in LAYER_LINEARS.items():
            linear = _weight(layer.get_submodule(sub))
            weight = linear.weight.detach().float()
            adapter = lora.get(f"encoder.layer.{i}.{sub}")
            name = f"l{i}.{short}"
            if adapter is not None:
                a, b, s = adapter[0].detach().float(), adapter[1].detach().float(), float(adapter[2])
                if a.shape[1] != weight.shape[1] or b.shape[0] != weight.shape[0] or a.shape[0] != b.shape[1]:
                    raise ValueError(f"LoRA of {name}: A {tuple(a.shape)} and B {tuple(b.shape)} do not fit "
                                     f"the weight {tuple(weight.shape)} (need A [r, in], B [out, r])")
                if merge_lora:
                    weight = weight + s * (b @ a)
                else:
                    tensors[f"{name}.lora_at"], tensors[f"{name}.lora_bt"] = _f32(a.T), _f32(b.T)
                    tensors[f"{name}.lora_s"] = np.array([s], np.float32)
                adapted.append(name)
            _store_linear(tensors, f"{name}.w", weight, dtype)
            tensors[f"{name}.b"] = _f32(linear.bias)
        for short, sub in LAYER_NORMS.items():
            ln = layer.get_submodule(sub)
            tensors[f"l{i}.{short}.w"], tensors[f"l{i}.{short}.b"] = _f32(ln.weight), _f32(ln.bias)
    if pooling == "cls":
        _store_linear(tensors, "pooler.w", pooler.dense.weight, dtype)
        tensors["pooler.b"] = _f32(pooler.dense.bias)
    labels: list[str] = []
    if classifier is not None:
        _store_linear(tensors, "cls.w", classifier.weight, "fp32")
        tensors["cls.b"] = _f32(classifier.bias)
        id2label = getattr(config, "id2label", None) or {}
        labels = [str(id2label.get(j, f"LABEL_{j}")) for j in range(classifier.out_features)]

    dims = ModelDims(arch.num_layers, arch.hidden, arch.num_heads, arch.head_dim, arch.intermediate,
                     arch.vocab_size, config.max_position_embeddings, config.type_vocab_size,
                     classifier.out_features if classifier is not None else 0, pooling, dtype,
                     float(config.layer_norm_eps), normalize=normalize)
    path = Path(path)
    metadata = {
        "arch": arch.__dict__,
        "importance_order": dict(importance_order) if importance_order is not None else None,
        "labels": labels,
        "pooling": pooling,
        "normalize": normalize,
        # what a sentence-transformers pipeline does around the engine (truncation, lower-casing)
        "sentence_transformers": {"max_seq_length": st.max_seq_length, "do_lower_case": st.do_lower_case}
        if st else None,
        "dtype": dtype,
        "lora": {"adapted": adapted, "merged": bool(merge_lora and adapted)},
        "source": src_name,
        "tokenizer": tokenizer_dir_for(path).name if tokenizer is not None else None,
        "quant_scheme": "int8 symmetric per output row (mlfs_edge.quant.scheme)" if dtype == "int8" else None,
    }
    data = encode(dims, tensors, metadata)
    if tokenizer is not None:
        _save_tokenizer(tokenizer, tokenizer_dir_for(path))
    return write_atomically(path, data)


def _supernet_order(folder: Path) -> dict[str, Any] | None:
    """The importance order a supernet folder records (mlfs_meta.json), for provenance."""
    import json

    meta_path = folder / "mlfs_meta.json"
    if not meta_path.is_file():
        return None
    try:
        order = json.loads(meta_path.read_text()).get("supernet", {}).get("order")
    except (OSError, ValueError):
        return None
    return order if isinstance(order, dict) else None


def _rope_linear_factor(config: Any) -> float:
    """1.0 without rope_scaling, its factor for "linear"; anything else is refused here, at pack time."""
    scaling = getattr(config, "rope_scaling", None)
    if not scaling:
        return 1.0
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return 1.0
    if kind != "linear":
        raise ValueError(f"rope_scaling {kind!r} is not supported by the engine (none and 'linear' are)")
    factor = float(scaling["factor"])
    if factor < 1.0:
        raise ValueError(f"rope_scaling linear factor {factor} must be >= 1")
    return factor


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:  # newer transformers keep it in rope_parameters
        params = getattr(config, "rope_parameters", None) or {}
        theta = params.get("rope_theta", 10000.0)
    return float(theta)


def frequency_order(token_ids: Iterable[int], vocab_size: int) -> list[int]:
    """Token ids by decreasing count in `token_ids` (ties, and unseen tokens, by id): the vocabulary
    order that puts the tokens a draft most needs in the first rows of the LM head."""
    counts = np.bincount(np.fromiter(token_ids, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    return np.lexsort((np.arange(vocab_size), -counts)).tolist()


def _pack_decoder(model: torch.nn.Module, path: str | os.PathLike, dtype: str,
                  importance_order: Mapping[str, Any] | None, tokenizer: Any, source: str, head_dtype: str,
                  vocab_order: Sequence[int] | None = None, vocab_order_source: str | None = None) -> Path:
    """A Llama-family causal LM (LlamaForCausalLM, Qwen2ForCausalLM; SmolLM2) as a decoder file.

    RMSNorm, RoPE (theta; rope_scaling none or linear), grouped-query attention (sub-networks keep
    whole key/value groups), SwiGLU (gate/up sliced on rows, down on columns), optional q/k/v biases
    (Qwen2) and an untied LM head; with tied embeddings the LM head is stored once and the engine
    reads embedding rows out of it.
    """
    config = model.config
    arch = ArchSpec.from_hf_config(config)
    backbone = model.model
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {config.hidden_act!r} is not supported: the engine implements SwiGLU with SiLU")
    if getattr(config, "mlp_bias", False):
        raise ValueError("MLP biases (mlp_bias=True) are not supported by the engine")
    if dtype == "q4" and (arch.hidden % Q4_GROUP or arch.intermediate % Q4_GROUP
                          or (arch.num_heads * arch.head_dim) % Q4_GROUP):
        raise ValueError(f"a 4-bit file needs hidden, intermediate and heads x head_dim that are multiples of "
                         f"{Q4_GROUP}; this model has {arch.hidden}, {arch.intermediate}, "
                         f"{arch.num_heads * arch.head_dim}")
    layer0 = backbone.layers[0].self_attn
    qkv_bias = layer0.q_proj.bias is not None
    if layer0.o_proj.bias is not None:
        raise ValueError("an o_proj bias (Llama attention_bias=True) is not supported; q/k/v biases (Qwen2) are")
    head = model.lm_head.weight
    embed = backbone.embed_tokens.weight
    tied = head is embed or (head.shape == embed.shape and bool(torch.equal(head, embed)))

    tensors: dict[str, np.ndarray] = {}
    if head_dtype not in DTYPE_CODES:
        raise ValueError(f"head_dtype must be one of {', '.join(DTYPE_CODES)}, got {head_dtype!r}")
    if vocab_order is not None:
        order = np.asarray(vocab_order, dtype=np.int64)
        if order.shape != (arch.vocab_size,) or not np.array_equal(np.sort(order), np.arange(arch.vocab_size)):
            raise ValueError(f"vocab_order must be a permutation of the {arch.vocab_size} token ids")
        # fp32 holds ids < 2^24 exactly (the format has no integer dtype); row r of the head = token order[r]
        tensors["vocab.order"] = order.astype(np.float32)
        head, embed = head[torch.from_numpy(order)], embed[torch.from_numpy(order)]
    _store_linear(tensors, "head.w", head, head_dtype)
    if not tied:
        _store_linear(tensors, "emb.w", embed, head_dtype)
    tensors["norm.w"] = _f32(backbone.norm.weight)
    for i, layer in enumerate(backbone.layers):
        att, mlp = layer.self_attn, layer.mlp
        for short, lin in (("q", att.q_proj), ("k", att.k_proj), ("v", att.v_proj), ("o", att.o_proj),
                           ("gate", mlp.gate_proj), ("up", mlp.up_proj), ("down", mlp.down_proj)):
            _store_linear(tensors, f"l{i}.{short}.w", lin.weight, dtype)
            if short in ("q", "k", "v") and qkv_bias:
                tensors[f"l{i}.{short}.b"] = _f32(lin.bias)
        tensors[f"l{i}.attn_norm.w"] = _f32(layer.input_layernorm.weight)
        tensors[f"l{i}.mlp_norm.w"] = _f32(layer.post_attention_layernorm.weight)

    dims = ModelDims(arch.num_layers, arch.hidden, arch.num_heads, arch.head_dim, arch.intermediate,
                     arch.vocab_size, config.max_position_embeddings, 1, 0, "mean", dtype, float(config.rms_norm_eps),
                     kind="decoder", num_kv_heads=arch.num_kv_heads, rope_theta=_rope_theta(config),
                     rope_linear_factor=_rope_linear_factor(config), tied_embeddings=tied, qkv_bias=qkv_bias)
    path = Path(path)
    tok_source = str(tokenizer) if isinstance(tokenizer, str | os.PathLike) else (
        getattr(tokenizer, "name_or_path", None) if tokenizer is not None else None)
    metadata = {
        "kind": "decoder",
        "arch": arch.__dict__,
        "model_type": config.model_type,
        "importance_order": dict(importance_order) if importance_order is not None else None,
        "labels": [],
        "dtype": dtype,
        "head_dtype": head_dtype,
        "tied_embeddings": tied,
        "vocab_order": vocab_order_source if vocab_order is not None else None,
        "rope": {"theta": dims.rope_theta, "linear_factor": dims.rope_linear_factor},
        "eos_token_id": config.eos_token_id,
        "bos_token_id": config.bos_token_id,
        "source": source,
        "tokenizer": tokenizer_dir_for(path).name if tokenizer is not None else None,
        "tokenizer_source": tok_source,
        "quant_scheme": {"int8": "int8 symmetric per output row (mlfs_edge.quant.scheme)",
                         "q4": f"4-bit per group of {Q4_GROUP} inputs with fp16 scale and minimum, Q4_1 family "
                               "(mlfs_edge.quant.scheme.quantize_q4_groups)"}.get(dtype),
    }
    data = encode(dims, tensors, metadata)
    if tokenizer is not None:
        _save_tokenizer(tokenizer, tokenizer_dir_for(path))
    return write_atomically(path, data)


def _save_tokenizer(tokenizer: Any, target: Path) -> None:
    if isinstance(tokenizer, str | os.PathLike):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    write_dir_atomically(target, tokenizer.save_pretrained)
