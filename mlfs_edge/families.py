"""The model families the pipeline takes, each taught once: its Hugging Face model types, where its
dimensions live in the config, where its sliceable projections live in the module tree, and which
pipeline stages work for it (the support table `mlfs-edge info --families` prints).

Everything family-specific in the package reads this registry: `ArchSpec.from_hf_config` (dims),
`supernet.arch` (module map), LoRA and re-training targets, extraction's sub-config, the trainer's
task inference, and each stage's first call (`check_stage`: a refused stage fails there with one
line). Adding a family is one `Family` entry here (plus its tiny test model in tests/families.py).

Pure data and string paths: no torch here (this is the ground floor).
`mlfs-edge info --families [--markdown]` prints the support table (the README's is the Markdown one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The pipeline stages of the support table, in order, with their column titles.
STAGES: dict[str, str] = {
    "reorder": "reorder",
    "supernet": "supernet",
    "lora": "LoRA / MLFS",
    "extract": "extract",
    "prune": "prune",
    "quantize": "quantize",
    "pte": "ExecuTorch .pte",
    "engine": "engine pack/run",
}


@dataclass(frozen=True)
class ModuleMap:
    """Where a layer's projections live. `layers`: dotted path from the HF base model to the
    ModuleList of transformer layers; the others: dotted paths inside one layer.

    A fused projection is named once and its segments told apart: `qkv` holds q, k and v stacked on
    its output axis (q first: heads·d rows, then k and v: kv_heads·d rows each), `mlp_in` entries
    may be a fused gate-and-up pair (`gate_up`: two halves of `intermediate` rows each).
    `conv1d`: the projections are GPT-2 ``Conv1D`` (weight stored [in, out])."""

    layers: str
    q: str = ""
    k: str = ""
    v: str = ""
    qkv: str = ""  # fused q/k/v (Phi-3 qkv_proj, ModernBERT Wqkv, GPT-2 c_attn); then q/k/v are ""
    o: str = ""
    mlp_in: tuple[str, ...] = ()
    gate_up: str = ""  # fused gate and up projections (Phi-3 gate_up_proj, ModernBERT Wi)
    mlp_out: str = ""
    conv1d: bool = False
    # An embedding [buckets, heads] shared by all layers (MPNet's relative attention bias; path from the
    # HF base model): its columns follow the heads, so all layers share one head order.
    head_bias: str = ""

    def projections(self) -> tuple[str, ...]:
        """Every projection path inside a layer (what LoRA adapts)."""
        names = (self.qkv,) if self.qkv else (self.q, self.k, self.v)
        return (*names, self.o, *self.mlp_in, *((self.gate_up,) if self.gate_up else ()), self.mlp_out)


@dataclass(frozen=True)
class ConfigNames:
    """Names of the config attributes holding the dims (read by ArchSpec, written by extraction)."""

    layers: str = "num_hidden_layers"
    hidden: str = "hidden_size"
    heads: str = "num_attention_heads"
    kv_heads: str = ""  # "" = no grouped-query attention (kv heads = heads)
    head_dim: str = ""  # "" = head size is hidden / heads (fewer heads then needs an explicit-head-size config)
    intermediate: str = "intermediate_size"
    vocab: str = "vocab_size"
    intermediate_per_hidden: int = 0  # GPT-2: n_inner None means 4 · hidden


BERT_MAP = ModuleMap("encoder.layer", q="attention.self.query", k="attention.self.key",
                     v="attention.self.value", o="attention.output.dense", mlp_in=("intermediate.dense",),
                     mlp_out="output.dense")
LLAMA_MAP = ModuleMap("layers", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                      o="self_attn.o_proj", mlp_in=("mlp.gate_proj", "mlp.up_proj"), mlp_out="mlp.down_proj")
DECODER_NAMES = ConfigNames(kv_heads="num_key_value_heads", head_dim="head_dim")

_PTE_DECODER = "ExecuTorch .pte export is for encoders"


@dataclass(frozen=True)
class Family:
    name: str  # what users call it
    kind: str  # "encoder" | "decoder"
    model_types: tuple[str, ...]  # HF config.model_type values (the first is the family's own)
    arch: str  # ArchSpec.family: what the packer and the engine dispatch on (shared when they compute alike)
    modules: ModuleMap
    names: ConfigNames = ConfigNames()
    gated_mlp: bool = False  # gate and up projections (SwiGLU / GeGLU)
    bias: bool = True  # projections carry biases
    refused: Mapping[str, str] = field(default_factory=dict)  # stage -> why it is refused

    def support(self, stage: str) -> str | None:
        """None when `stage` works for this family, else the reason it is refused."""
        if stage not in STAGES:
            raise KeyError(stage)
        if stage == "pte" and self.kind == "decoder":
            return self.refused.get(stage, _PTE_DECODER)
        return self.refused.get(stage)


# The export wrapper hands the encoder one 4-D mask, which replaces ModernBERT's own local masks.
_MODERNBERT_PTE = ("the export wrapper's 4-D mask bypasses ModernBERT's sliding-window attention "
                   "(1e-3 off PyTorch; not wired yet)")

FAMILIES: tuple[Family, ...] = (
    Family("BERT", "encoder", ("bert", "mlfs_bert", "electra"), "bert", BERT_MAP),
    Family("RoBERTa", "encoder", ("roberta", "mlfs_roberta"), "roberta", BERT_MAP),
    Family("XLM-RoBERTa", "encoder", ("xlm-roberta", "mlfs_xlm-roberta"), "xlm-roberta", BERT_MAP),
    Family("DistilBERT", "encoder", ("distilbert", "mlfs_distilbert"), "distilbert",
           ModuleMap("transformer.layer", q="attention.q_lin", k="attention.k_lin", v="attention.v_lin",
                     o="attention.out_lin", mlp_in=("ffn.lin1",), mlp_out="ffn.lin2"),
           ConfigNames(layers="n_layers", hidden="dim", heads="n_heads", intermediate="hidden_dim")),
    Family("MPNet", "encoder", ("mpnet", "mlfs_mpnet"), "mpnet",
           ModuleMap("encoder.layer", q="attention.attn.q", k="attention.attn.k", v="attention.attn.v",
                     o="attention.attn.o", mlp_in=("intermediate.dense",), mlp_out="output.dense",
                     head_bias="encoder.relative_attention_bias")),
    Family("ModernBERT", "encoder", ("modernbert", "mlfs_modernbert"), "modernbert",
           ModuleMap("layers", qkv="attn.Wqkv", o="attn.Wo", gate_up="mlp.Wi", mlp_out="mlp.Wo"),
           gated_mlp=True, bias=False, refused={"pte": _MODERNBERT_PTE}),
    Family("Llama", "decoder", ("llama",), "llama", LLAMA_MAP, DECODER_NAMES, gated_mlp=True, bias=False),
    Family("Qwen2", "decoder", ("qwen2",), "llama", LLAMA_MAP, DECODER_NAMES, gated_mlp=True, bias=False),
    Family("Qwen3", "decoder", ("qwen3",), "qwen3", LLAMA_MAP, DECODER_NAMES, gated_mlp=True, bias=False),
    Family("Mistral", "decoder", ("mistral",), "mistral", LLAMA_MAP, DECODER_NAMES, gated_mlp=True, bias=False),
    Family("Gemma", "decoder", ("gemma",), "gemma", LLAMA_MAP, DECODER_NAMES, gated_mlp=True, bias=False),
    Family("Gemma2", "decoder", ("gemma2",), "gemma2", LLAMA_MAP, DECODER_NAMES, gated_mlp=True, bias=False),
    Family("Phi-3", "decoder", ("phi3",), "phi3",
           ModuleMap("layers", qkv="self_attn.qkv_proj", o="self_attn.o_proj", gate_up="mlp.gate_up_proj",
                     mlp_out="mlp.down_proj"),
           DECODER_NAMES, gated_mlp=True, bias=False),
    Family("GPT-2", "decoder", ("gpt2", "mlfs_gpt2"), "gpt2",
           ModuleMap("h", qkv="attn.c_attn", o="attn.c_proj", mlp_in=("mlp.c_fc",), mlp_out="mlp.c_proj",
                     conv1d=True),
           ConfigNames(layers="n_layer", hidden="n_embd", heads="n_head", intermediate="n_inner",
                       intermediate_per_hidden=4)),
)

_BY_TYPE: dict[str, Family] = {t: f for f in FAMILIES for t in f.model_types}


def supported_names() -> str:
    return ", ".join(f.name for f in FAMILIES)


def family_of(config: Any) -> Family:
    """The family of a Hugging Face config (or of a model: its `.config`); ValueError if unknown."""
    config = getattr(config, "config", config)
    model_type = getattr(config, "model_type", "") or ""
    fam = _BY_TYPE.get(model_type)
    if fam is None:
        raise ValueError(f"unsupported model type {model_type!r}: the supported families are {supported_names()}")
    return fam


def by_name(name: str) -> Family:
    for f in FAMILIES:
        if f.name.lower() == name.lower():
            return f
    raise ValueError(f"unknown family {name!r}: the supported families are {supported_names()}")


def check_stage(config: Any, stage: str, known_only: bool = False) -> Family | None:
    """The family of `config` (a HF config or model) if `stage` works for it; else a one-line ValueError
    saying why. Every stage's first call runs this, so a refused stage fails before any work.
    `known_only`: a model of no listed family passes (None) — for stages that work on any model."""
    model_type = getattr(getattr(config, "config", config), "model_type", "")
    if known_only and model_type not in _BY_TYPE:
        return None
    fam = family_of(config)
    reason = fam.support(stage)
    if reason is not None:
        raise ValueError(f"{STAGES[stage]} is not supported for {fam.name} models: {reason}")
    return fam


def decoder_model_types() -> tuple[str, ...]:
    return tuple(t for f in FAMILIES if f.kind == "decoder" for t in f.model_types)


# --- the support table -----------------------------------------------------------------------------

def table_rows() -> list[list[str]]:
    """Header + one row per family: "works" or "refused: <reason>" per stage."""
    rows = [["family", *STAGES.values()]]
    for fam in FAMILIES:
        cells = []
        for stage in STAGES:
            reason = fam.support(stage)
            cells.append("works" if reason is None else f"refused: {reason}")
        rows.append([fam.name, *cells])
    return rows


def markdown_table() -> str:
    rows = table_rows()
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def text_table() -> str:
    """The table for a terminal: the works / refused grid, then the reasons, numbered."""
    reasons: dict[str, int] = {}
    grid = [["family", *STAGES]]
    for fam in FAMILIES:
        row = [fam.name]
        for stage in STAGES:
            reason = fam.support(stage)
            row.append("works" if reason is None else f"no ({reasons.setdefault(reason, len(reasons) + 1)})")
        grid.append(row)
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in grid]
    lines += [""] + [f"({n}) {reason}" for reason, n in reasons.items()]
    return "\n".join(lines) + "\n"
