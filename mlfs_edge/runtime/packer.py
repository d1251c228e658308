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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlfs_edge import _core
from mlfs_edge.atomic import write_dir_atomically
from mlfs_edge.config import ArchSpec
from mlfs_edge.families import check_stage
from mlfs_edge.models import sentence_pooling
from mlfs_edge.quant.scheme import Q4_GROUP, quantize_per_row, quantize_q4_groups
from mlfs_edge.runtime.format import DTYPE_CODES, POOLING_CODES, ModelDims, encode, write_atomically
from mlfs_edge.supernet.lora import LoraAdapter, adapters_of


# --- encoder families -------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderMap:
    """Where one post-LN encoder family keeps its layers: the layer list inside the base model, and
    the engine name of each per-layer Linear / LayerNorm → its module path inside a layer."""

    layers: str
    linears: dict[str, str]
    norms: dict[str, str]


_BERT_MAP = EncoderMap("encoder.layer", {"q": "attention.self.query", "k": "attention.self.key",
                                         "v": "attention.self.value", "o": "attention.output.dense",
                                         "ff1": "intermediate.dense", "ff2": "output.dense"},
                       {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"})
# Keyed like DECODER_OPTIONS by the registry's `Family.arch` (ArchSpec.family), so a family's other
# model types (ELECTRA, an extracted narrow-head mlfs_<type>) pack like the family itself.
ENCODER_MAPS = {
    "bert": _BERT_MAP, "roberta": _BERT_MAP, "xlm-roberta": _BERT_MAP,
    "mpnet": EncoderMap("encoder.layer", {"q": "attention.attn.q", "k": "attention.attn.k", "v": "attention.attn.v",
                                          "o": "attention.attn.o", "ff1": "intermediate.dense", "ff2": "output.dense"},
                         {"ln1": "attention.LayerNorm", "ln2": "output.LayerNorm"}),
    "distilbert": EncoderMap("transformer.layer", {"q": "attention.q_lin", "k": "attention.k_lin",
                                                   "v": "attention.v_lin", "o": "attention.out_lin",
                                                   "ff1": "ffn.lin1", "ff2": "ffn.lin2"},
                             {"ln1": "sa_layer_norm", "ln2": "output_layer_norm"}),
}
# ModernBERT: pre-LN, RoPE, GeGLU, local / global layers; its layers do not fit an EncoderMap (fused
# Wqkv / Wi), `_modernbert_layer` is its tensor map.
MODERNBERT = "modernbert"
# RoBERTa numbers positions from padding_idx + 1: the packer stores the table from that row on.
POSITION_OFFSET_FAMILIES = ("roberta", "xlm-roberta", "mpnet")

INT8_SCHEME = "int8 symmetric per output row (mlfs_edge.quant.scheme)"


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
    # a family the engine cannot run: one line, before loading any weights
    if check_stage(config, "engine").kind == "decoder":
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    cls = AutoModelForSequenceClassification if is_classifier else AutoModel
    return cls.from_pretrained(path, attn_implementation="eager").eval()


def _split_model(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear | None,
                                                  torch.nn.Linear | None, bool, dict[str, LoraAdapter]]:
    """(the base encoder, the classifier Linear or None, the pooler's dense Linear or None, whether
    the pooler's activation is ReLU, the LoRA adapters of a peft model). The pooler is the first
    token's dense + tanh: BERT's pooler, RoBERTa's classification head dense (its out_proj is the
    classifier), or dense + ReLU: DistilBERT's pre_classifier."""
    lora: dict[str, LoraAdapter] = {}
    if hasattr(model, "peft_config"):
        lora = adapters_of(model)
        model = model.get_base_model()
    encoder = getattr(model, model.base_model_prefix, model) if hasattr(model, "classifier") else model
    classifier = getattr(model, "classifier", None)
    pooler = getattr(getattr(encoder, "pooler", None), "dense", None)
    relu = False
    if classifier is not None and hasattr(getattr(model, "head", None), "norm"):
        pooler = model.head.dense  # ModernBERT: head (dense + GELU + LayerNorm) then classifier
    elif (classifier is not None and hasattr(classifier, "dense") and hasattr(classifier, "out_proj")
          and not hasattr(classifier, "activation")):  # ELECTRA's head looks alike but applies GELU
        pooler, classifier = classifier.dense, classifier.out_proj  # RoBERTa: dense + tanh + out_proj
    elif classifier is not None and hasattr(model, "pre_classifier"):
        pooler, relu = model.pre_classifier, True  # DistilBERT: pre_classifier + ReLU + classifier
    if classifier is not None and not isinstance(classifier, torch.nn.Linear):
        raise ValueError(f"classifier head {type(classifier).__name__} is not supported: a single Linear is")
    check_stage(encoder.config, "engine")
    family = ArchSpec.from_hf_config(encoder.config).family
    emap = ENCODER_MAPS.get(family) if family != MODERNBERT else EncoderMap("layers", {}, {})
    if emap is None or not hasattr(encoder, "embeddings"):
        raise ValueError(f"{type(model).__name__} is not an encoder the engine runs (BERT, RoBERTa, XLM-RoBERTa, "
                         "DistilBERT) nor a decoder it runs (Llama, Qwen2/3, Mistral, Gemma/2, Phi-3, GPT-2)")
    if hasattr(encoder, "embeddings_project"):
        raise ValueError("ELECTRA with embedding_size != hidden_size (an embedding projection) is not supported "
                         "by the engine")
    # keys are paths in the HF model ("bert.encoder.layer.0..." in a classifier); keep the base model part.
    at = emap.layers + "."
    lora = {name[name.find(at):] if at in name else name: ad for name, ad in lora.items()}
    return encoder, classifier, pooler, relu, lora


def _modernbert_layer(layer: torch.nn.Module, arch: ArchSpec) -> tuple[dict[str, Linear], dict[str, Linear]]:
    """ModernBERT's layer as the engine's tensors: Wqkv cut into q/k/v, Wi into ff1 (the GELU half)
    and ff1g (the gate half); the first layer's attention norm is an Identity (no ln1)."""
    q, k, v = _split_rows(layer.attn.Wqkv, (arch.num_heads * arch.head_dim,) * 3)  # fewer heads when extracted
    ff1, ff1g = _split_rows(layer.mlp.Wi, (arch.intermediate,) * 2)
    linears = {"q": q, "k": k, "v": v, "o": _plain(layer.attn.Wo), "ff1": ff1, "ff1g": ff1g,
               "ff2": _plain(layer.mlp.Wo)}
    norms = {"ln2": _plain(layer.mlp_norm)}
    if isinstance(layer.attn_norm, torch.nn.LayerNorm):
        norms["ln1"] = _plain(layer.attn_norm)
    return linears, norms


def _modernbert_checks(config: Any, pooling: str) -> None:
    for what in ("hidden_activation", "classifier_activation"):
        if getattr(config, what, "gelu") != "gelu":
            raise ValueError(f"ModernBERT with {what} {getattr(config, what)!r} is not supported: the engine "
                             "implements erf GELU")
    if pooling != "cls":
        raise ValueError(f"ModernBERT classifier_pooling {pooling!r} is not supported: the engine's ModernBERT "
                         "head reads the first token ('cls')")


def _relative_bias_table(encoder: torch.nn.Module, positions: int) -> np.ndarray:
    """MPNet's relative attention bias as a table [2 * positions - 1, heads] by offset j - i +
    positions - 1, evaluated by transformers' own bucketing (compute_position_bias) so the engine
    only looks values up."""
    probe = torch.zeros(1, positions, 1)
    with torch.no_grad():
        bias = encoder.encoder.compute_position_bias(probe)[0]  # [heads, i, j], a function of j - i
    last = positions - 1
    table = torch.cat([bias[:, last, :last], bias[:, 0, :]], dim=1)  # offsets -(P-1)..-1, then 0..P-1
    return _f32(table.T)


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
    if check_stage(loaded.config, "engine").kind == "decoder":
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
    encoder, classifier, pooler, pooler_relu, peft_lora = _split_model(loaded)
    lora = dict(lora if lora is not None else peft_lora)
    config = encoder.config
    arch = ArchSpec.from_hf_config(config)
    act = getattr(config, "activation", None) or getattr(config, "hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"hidden_act {act!r} is not supported: the engine implements erf GELU")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported")
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
    if arch.family == MODERNBERT:
        if lora:
            raise ValueError("unmerged LoRA adapters are not supported for ModernBERT files; merge them first")
        _modernbert_checks(config, config.classifier_pooling if classifier is not None else "cls")
        return _pack_modernbert(loaded, encoder, classifier, path, dtype, pooling, normalize, importance_order,
                                tokenizer, src_name)
    emap = ENCODER_MAPS[arch.family]
    known = {f"{emap.layers}.{i}.{m}" for i in range(arch.num_layers) for m in emap.linears.values()}
    unknown = sorted(set(lora) - known)
    if unknown:
        raise ValueError(f"LoRA adapters for modules the engine does not adapt: {', '.join(unknown[:3])}; "
                         "adaptable are the query/key/value/output/intermediate/output dense Linears")

    emb = encoder.embeddings
    tensors: dict[str, np.ndarray] = {}
    _store_table(tensors, "emb.word", emb.word_embeddings.weight, dtype)
    # Position p of an unpadded row is table row p + offset (RoBERTa: padding_idx + 1; padded
    # positions, which transformers numbers padding_idx, are masked out anyway).
    offset = config.pad_token_id + 1 if arch.family in POSITION_OFFSET_FAMILIES else 0
    tensors["emb.pos"] = _f32(emb.position_embeddings.weight[offset:])
    if arch.family == "mpnet":
        tensors["attn.relbias"] = _relative_bias_table(encoder, tensors["emb.pos"].shape[0])
    token_types = getattr(emb, "token_type_embeddings", None)  # DistilBERT has none: one zero row
    tensors["emb.type"] = _f32(token_types.weight if token_types is not None else torch.zeros(1, arch.hidden))
    tensors["emb.ln.w"], tensors["emb.ln.b"] = _f32(emb.LayerNorm.weight), _f32(emb.LayerNorm.bias)
    adapted: list[str] = []
    for i, layer in enumerate(encoder.get_submodule(emap.layers)):
        for short, sub in emap.linears.items():
            linear = _weight(layer.get_submodule(sub))
            weight = linear.weight.detach().float()
            adapter = lora.get(f"{emap.layers}.{i}.{sub}")
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
        for short, sub in emap.norms.items():
            ln = layer.get_submodule(sub)
            tensors[f"l{i}.{short}.w"], tensors[f"l{i}.{short}.b"] = _f32(ln.weight), _f32(ln.bias)
    if pooling == "cls":
        _store_linear(tensors, "pooler.w", pooler.weight, dtype)
        tensors["pooler.b"] = _f32(pooler.bias)
    labels: list[str] = []
    if classifier is not None:
        _store_linear(tensors, "cls.w", classifier.weight, "fp32")
        tensors["cls.b"] = _f32(classifier.bias)
        id2label = getattr(config, "id2label", None) or {}
        labels = [str(id2label.get(j, f"LABEL_{j}")) for j in range(classifier.out_features)]

    dims = ModelDims(arch.num_layers, arch.hidden, arch.num_heads, arch.head_dim, arch.intermediate,
                     arch.vocab_size, tensors["emb.pos"].shape[0], tensors["emb.type"].shape[0],
                     classifier.out_features if classifier is not None else 0, pooling, dtype,
                     float(getattr(config, "layer_norm_eps", 1e-12)), pooler_relu=pooler_relu and pooling == "cls",
                     normalize=normalize)
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
        "quant_scheme": INT8_SCHEME if dtype == "int8" else None,
    }
    return _write_file(path, dims, tensors, metadata, tokenizer)


def _pack_modernbert(model: torch.nn.Module, encoder: torch.nn.Module, classifier: torch.nn.Linear | None,
                     path: str | os.PathLike, dtype: str, pooling: str, normalize: bool,
                     importance_order: Mapping[str, Any] | None, tokenizer: Any, source: str) -> Path:
    """A ModernBertModel / ModernBertForSequenceClassification as an encoder file (pre-norm, RoPE
    with a base per layer type, local layers attending |i - j| <= sliding_window, GeGLU, the
    dense + GELU + LayerNorm head on the first token)."""
    config = encoder.config
    arch = ArchSpec.from_hf_config(config)
    tensors: dict[str, np.ndarray] = {}
    hidden = arch.hidden

    def norm(name: str, ln: torch.nn.Module) -> None:
        weight, bias = _plain(ln)
        tensors[f"{name}.w"] = _f32(weight)
        tensors[f"{name}.b"] = _f32(bias if bias is not None else torch.zeros(hidden))  # norm_bias=False

    _store_table(tensors, "emb.word", encoder.embeddings.tok_embeddings.weight, dtype)
    norm("emb.ln", encoder.embeddings.norm)
    for i, layer in enumerate(encoder.layers):
        linears, norms = _modernbert_layer(layer, arch)
        for short, (weight, bias) in linears.items():
            _store_linear(tensors, f"l{i}.{short}.w", weight, dtype)
            tensors[f"l{i}.{short}.b"] = _f32(bias if bias is not None else torch.zeros(weight.shape[0]))
        for short in norms:
            norm(f"l{i}.{short}", layer.attn_norm if short == "ln1" else layer.mlp_norm)
    norm("final.ln", encoder.final_norm)
    types = config.layer_types
    tensors["attn.theta"] = np.asarray([config.rope_parameters[t]["rope_theta"] for t in types], np.float32)
    # transformers' bidirectional local mask keeps |i - j| <= sliding_window; the engine's window is exclusive
    tensors["attn.window"] = np.asarray([config.sliding_window + 1 if t == "sliding_attention" else 0 for t in types],
                                        np.float32)
    labels: list[str] = []
    if classifier is not None:
        _store_linear(tensors, "pooler.w", model.head.dense.weight, dtype)
        tensors["pooler.b"] = _f32(model.head.dense.bias if model.head.dense.bias is not None else torch.zeros(hidden))
        norm("pooler.ln", model.head.norm)
        _store_linear(tensors, "cls.w", classifier.weight, "fp32")
        tensors["cls.b"] = _f32(classifier.bias)
        id2label = getattr(config, "id2label", None) or {}
        labels = [str(id2label.get(j, f"LABEL_{j}")) for j in range(classifier.out_features)]
    dims = ModelDims(arch.num_layers, hidden, arch.num_heads, arch.head_dim, arch.intermediate, arch.vocab_size,
                     config.max_position_embeddings, 1, classifier.out_features if classifier is not None else 0,
                     pooling, dtype, float(config.norm_eps), pre_norm=True, gated_ffn=True,
                     pooler_gelu_ln=classifier is not None, normalize=normalize)
    path = Path(path)
    metadata = {
        "arch": arch.__dict__, "model_type": MODERNBERT, "labels": labels, "pooling": pooling, "dtype": dtype,
        "importance_order": dict(importance_order) if importance_order is not None else None,
        "lora": {"adapted": [], "merged": False}, "source": source,
        "quant_scheme": INT8_SCHEME if dtype == "int8" else None,
    }
    return _write_file(path, dims, tensors, metadata, tokenizer)


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


# --- decoder families ---------------------------------------------------------------------------
# Each family is taught here once: its engine options (format v4 flags, see format.ModelDims) and,
# in `_decoder_layer`, where its modules sit. Everything else (slicing, quantisation, the engine's
# forward) is shared.
DECODER_OPTIONS: dict[str, dict[str, bool]] = {
    "llama": {}, "mistral": {}, "phi3": {},  # Qwen2 computes as Llama (families.py: arch "llama")
    "qwen3": {"qk_norm": True},
    "gemma": {"gelu_tanh": True},
    "gemma2": {"gelu_tanh": True, "post_norms": True},
    "gpt2": {"layer_norm": True, "gelu_tanh": True, "ungated": True, "learned_pos": True},
}
GELU_TANH = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")  # transformers' names of GELU-tanh
# Families whose RMSNorm multiplies by (1 + w): stored as 1 + w, so the engine has one RMSNorm.
NORM_PLUS_ONE = ("gemma", "gemma2")

Linear = tuple[torch.Tensor, torch.Tensor | None]  # (W [out, in], bias or None)


def _split_rows(linear: torch.nn.Module, sizes: Sequence[int], conv1d: bool = False) -> list[Linear]:
    """A fused projection (Phi-3 qkv_proj / gate_up_proj, GPT-2 c_attn) cut into its parts by output
    rows; GPT-2's Conv1D stores W as [in, out]."""
    weight = linear.weight.detach().float()
    weight = weight.T if conv1d else weight
    bias = linear.bias.detach().float() if linear.bias is not None else None
    rows = [r.contiguous() for r in torch.split(weight, list(sizes), dim=0)]  # the kernels' packers need C order
    biases = torch.split(bias, list(sizes)) if bias is not None else [None] * len(sizes)
    return list(zip(rows, biases, strict=True))


def _plain(linear: torch.nn.Module) -> Linear:
    bias = getattr(linear, "bias", None)  # RMSNorms have none
    return linear.weight.detach().float(), (bias.detach().float() if bias is not None else None)


def _decoder_layer(family: str, layer: torch.nn.Module, arch: ArchSpec) -> tuple[dict[str, Linear], dict[str, Linear]]:
    """(Linears {q, k, v, o, [gate,] up, down}, norms {attn_norm, mlp_norm, [post_attn_norm,
    post_mlp_norm, q_norm, k_norm]}) of one decoder layer, each as (weight, bias or None)."""
    qd, kvd = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    if family == "gpt2":
        att, mlp = layer.attn, layer.mlp
        q, k, v = _split_rows(att.c_attn, (qd, kvd, kvd), conv1d=True)
        (o,), (up,), (down,) = (_split_rows(m, (m.weight.shape[1],), conv1d=True) for m in (att.c_proj, mlp.c_fc,
                                                                                           mlp.c_proj))
        return {"q": q, "k": k, "v": v, "o": o, "up": up, "down": down}, {"attn_norm": _plain(layer.ln_1),
                                                                           "mlp_norm": _plain(layer.ln_2)}
    att, mlp = layer.self_attn, layer.mlp
    if family == "phi3":
        q, k, v = _split_rows(att.qkv_proj, (qd, kvd, kvd))
        gate, up = _split_rows(mlp.gate_up_proj, (arch.intermediate, arch.intermediate))
    else:
        q, k, v = _plain(att.q_proj), _plain(att.k_proj), _plain(att.v_proj)
        gate, up = _plain(mlp.gate_proj), _plain(mlp.up_proj)
    linears = {"q": q, "k": k, "v": v, "o": _plain(att.o_proj), "gate": gate, "up": up, "down": _plain(mlp.down_proj)}
    norms = {"attn_norm": _plain(layer.input_layernorm)}
    if family == "gemma2":
        norms.update(post_attn_norm=_plain(layer.post_attention_layernorm),
                     mlp_norm=_plain(layer.pre_feedforward_layernorm),
                     post_mlp_norm=_plain(layer.post_feedforward_layernorm))
    else:
        norms["mlp_norm"] = _plain(layer.post_attention_layernorm)
    if family == "qwen3":
        norms.update(q_norm=_plain(att.q_norm), k_norm=_plain(att.k_norm))
    return linears, norms


def _decoder_checks(config: Any, family: str) -> None:
    """One-line refusals of what the engine does not implement, at pack time."""
    if family == "gpt2":
        act = config.activation_function
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
            if getattr(config, flag, False):
                raise ValueError(f"GPT-2 with {flag}=True is not supported by the engine")
    else:
        act = getattr(config, "hidden_activation", None) or config.hidden_act
    want = GELU_TANH if DECODER_OPTIONS[family].get("gelu_tanh") else ("silu",)
    if act not in want:
        raise ValueError(f"{family} with activation {act!r} is not supported: the engine implements "
                         f"{'GELU-tanh' if want == GELU_TANH else 'SiLU'} for this family")
    if family != "gpt2":
        _rope_linear_factor(config)  # refuses longrope / su / yarn ... before anything reads the RoPE settings
    rotary = getattr(config, "partial_rotary_factor", None)
    if rotary is None:
        rotary = (getattr(config, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
    if float(rotary) != 1.0:
        raise ValueError(f"partial_rotary_factor {rotary} is not supported: the engine rotates the whole head")


def _layer_windows(config: Any, num_layers: int) -> list[int]:
    """Per-layer sliding window (0 = full attention): transformers' layer_types when the config has
    them (Gemma 2 alternates), else sliding_window on every layer (Mistral)."""
    window = getattr(config, "sliding_window", None) or 0
    types = getattr(config, "layer_types", None)
    if types is not None:
        return [int(window) if t == "sliding_attention" else 0 for t in types]
    return [int(window)] * num_layers


def _pack_decoder(model: torch.nn.Module, path: str | os.PathLike, dtype: str,
                  importance_order: Mapping[str, Any] | None, tokenizer: Any, source: str, head_dtype: str,
                  vocab_order: Sequence[int] | None = None, vocab_order_source: str | None = None) -> Path:
    """A causal LM of one of DECODER_OPTIONS' families (Llama / SmolLM2, Qwen2, Qwen3, Mistral,
    Gemma, Gemma 2, Phi-3, GPT-2) as a decoder file.

    RMSNorm (LayerNorm for GPT-2), RoPE (theta; rope_scaling none or linear) or learned positions,
    grouped-query attention (sub-networks keep whole key/value groups), SwiGLU / GeGLU (gate/up sliced
    on rows, down on columns) or GPT-2's ungated MLP, biases where the family has them, fused
    projections cut into q/k/v and gate/up here; an untied LM head or, with tied embeddings, the LM
    head stored once (the engine reads embedding rows out of it).
    """
    config = model.config
    arch = ArchSpec.from_hf_config(config)
    family = arch.family
    options = DECODER_OPTIONS[family]
    _decoder_checks(config, family)
    gpt2 = family == "gpt2"
    backbone = model.transformer if gpt2 else model.model
    if dtype == "q4" and (arch.hidden % Q4_GROUP or arch.intermediate % Q4_GROUP
                          or (arch.num_heads * arch.head_dim) % Q4_GROUP):
        raise ValueError(f"a 4-bit file needs hidden, intermediate and heads x head_dim that are multiples of "
                         f"{Q4_GROUP}; this model has {arch.hidden}, {arch.intermediate}, "
                         f"{arch.num_heads * arch.head_dim}")
    layers = [_decoder_layer(family, layer, arch) for layer in (backbone.h if gpt2 else backbone.layers)]
    linears0 = layers[0][0]
    qkv_bias = linears0["q"][1] is not None
    # Any bias past q/k/v (GPT-2; Llama attention_bias / mlp_bias) turns on biases for every Linear,
    # the missing ones stored as zeros: one engine path.
    linear_bias = any(linears0[n][1] is not None for n in ("o", "gate", "up", "down") if n in linears0)
    head = model.lm_head.weight
    embed = (backbone.wte if gpt2 else backbone.embed_tokens).weight
    tied = head is embed or (head.shape == embed.shape and bool(torch.equal(head, embed)))
    plus_one = 1.0 if family in NORM_PLUS_ONE else 0.0

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
    final = backbone.ln_f if gpt2 else backbone.norm
    tensors["norm.w"] = _f32(final.weight.detach().float() + plus_one)
    if options.get("layer_norm"):
        tensors["norm.b"] = _f32(final.bias)
    if options.get("learned_pos"):
        tensors["emb.pos"] = _f32(backbone.wpe.weight)
    windows = _layer_windows(config, arch.num_layers)
    if any(windows):
        tensors["attn.window"] = np.asarray(windows, dtype=np.float32)  # fp32: exact below 2^24
    for i, (linears, norms) in enumerate(layers):
        for short, (weight, bias) in linears.items():
            _store_linear(tensors, f"l{i}.{short}.w", weight, dtype)
            if linear_bias or (qkv_bias and short in ("q", "k", "v")):
                tensors[f"l{i}.{short}.b"] = _f32(bias if bias is not None else torch.zeros(weight.shape[0]))
        for short, (weight, bias) in norms.items():
            tensors[f"l{i}.{short}.w"] = _f32(weight + plus_one)
            if options.get("layer_norm"):
                tensors[f"l{i}.{short}.b"] = _f32(bias)

    eps = config.layer_norm_epsilon if gpt2 else config.rms_norm_eps
    scalar = getattr(config, "query_pre_attn_scalar", None) if family == "gemma2" else None
    dims = ModelDims(arch.num_layers, arch.hidden, arch.num_heads, arch.head_dim, arch.intermediate,
                     arch.vocab_size, config.max_position_embeddings, 1, 0, "mean", dtype, float(eps),
                     kind="decoder", num_kv_heads=arch.num_kv_heads, rope_theta=_rope_theta(config),
                     rope_linear_factor=1.0 if gpt2 else _rope_linear_factor(config), tied_embeddings=tied,
                     qkv_bias=qkv_bias, linear_bias=linear_bias, **options,
                     attn_scale=float(scalar) ** -0.5 if scalar else (0.0 if getattr(config, "scale_attn_weights", True)
                                                                      else 1.0),
                     attn_softcap=float(getattr(config, "attn_logit_softcapping", None) or 0.0),
                     final_softcap=float(getattr(config, "final_logit_softcapping", None) or 0.0),
                     # Gemma: embeddings x sqrt(hidden), rounded to the model's dtype as transformers does
                     embed_scale=float(torch.tensor(arch.hidden ** 0.5, dtype=torch.float32))
                     if family in NORM_PLUS_ONE else 0.0)
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
        "tokenizer_source": tok_source,
        "quant_scheme": {"int8": INT8_SCHEME,
                         "q4": f"4-bit per group of {Q4_GROUP} inputs with fp16 scale and minimum, Q4_1 family "
                               "(mlfs_edge.quant.scheme.quantize_q4_groups)"}.get(dtype),
    }
    return _write_file(path, dims, tensors, metadata, tokenizer)


def _write_file(path: Path, dims: ModelDims, tensors: dict[str, np.ndarray], metadata: dict[str, Any],
                tokenizer: Any) -> Path:
    """The packed file (atomically) and, when given, the tokenizer in the folder beside it."""
    metadata = {**metadata, "tokenizer": tokenizer_dir_for(path).name if tokenizer is not None else None}
    data = encode(dims, tensors, metadata)
    if tokenizer is not None:
        _save_tokenizer(tokenizer, tokenizer_dir_for(path))
    return write_atomically(path, data)


def _save_tokenizer(tokenizer: Any, target: Path) -> None:
    if isinstance(tokenizer, str | os.PathLike):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    write_dir_atomically(target, tokenizer.save_pretrained)
