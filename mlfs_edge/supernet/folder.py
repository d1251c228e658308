"""A trained supernet folder (what `mlfs-edge train` writes): its record, and the model at a LoRA rank."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlfs_edge.supernet.elastic import ElasticSupernet


def supernet_meta(supernet_dir: str | Path) -> dict[str, Any]:
    meta_path = Path(supernet_dir) / "mlfs_meta.json"
    if not meta_path.is_file():
        raise ValueError(f"{supernet_dir} is not a trained supernet (no mlfs_meta.json): run `mlfs-edge train` first")
    meta = json.loads(meta_path.read_text())
    if "supernet" not in meta:
        raise ValueError(f"{meta_path} has no supernet record: is {supernet_dir} a teacher folder, not a supernet?")
    return meta["supernet"]


def load_supernet(supernet_dir: str | Path, rank: int | None = None):  # noqa: ANN201
    """(model, tokenizer, ElasticSupernet, meta) of a folder written by `train_mlfs`.

    `rank`: for a supernet trained with elastic LoRA ranks, use its adapters at that rank (one of
    the trained ranks); None = the full rank, which the folder's weights hold merged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from mlfs_edge.supernet.lora import ADAPTERS_FILE, load_adapters, reduce_rank

    meta = supernet_meta(supernet_dir)
    lora = meta.get("lora", {})
    full_rank = lora.get("rank")
    reduce = rank is not None and rank != full_rank
    if reduce:
        if not lora.get("elastic_ranks"):
            raise ValueError(f"{supernet_dir} was trained at the fixed LoRA rank {full_rank}: only that rank exists "
                             "(train with [lora] elastic_ranks = [...] to choose a rank afterwards)")
        if rank not in lora["elastic_ranks"]:
            raise ValueError(f"rank {rank} was not trained; the supernet's ranks are "
                             f"{sorted({*lora['elastic_ranks'], full_rank})}")
    auto = AutoModelForCausalLM if meta.get("task") == "causal_lm" else AutoModelForSequenceClassification
    model = auto.from_pretrained(supernet_dir, dtype=torch.float32, attn_implementation="eager").eval()
    if reduce:
        adapters_path = Path(supernet_dir) / ADAPTERS_FILE
        if not adapters_path.is_file():
            raise ValueError(f"{adapters_path} is missing: it holds the adapters a lower rank is cut from; "
                             "re-run `mlfs-edge train`")
        reduce_rank(model, load_adapters(adapters_path), rank)
    meta = {**meta, "rank": rank if reduce else full_rank}
    return model, AutoTokenizer.from_pretrained(supernet_dir), ElasticSupernet(model), meta


def unmerged_supernet(supernet_dir: str | Path, rank: int) -> tuple[Any, dict[str, Any]]:
    """(the frozen base model, its last adapters at `rank`) of a supernet trained with elastic ranks;
    adapters are keyed like `runtime.pack`'s `lora` ("encoder.layer.0.attention.self.query")."""
    from mlfs_edge.supernet.lora import ADAPTERS_FILE, load_adapters, slice_rank, subtract_adapters

    supernet_dir = Path(supernet_dir)
    model, _, _, _ = load_supernet(supernet_dir, rank)  # checks that the rank was trained
    if not (supernet_dir / ADAPTERS_FILE).is_file():  # asked for the full rank of a fixed-rank supernet
        raise ValueError(f"{supernet_dir} keeps no unmerged adapters ({ADAPTERS_FILE}): that needs a supernet "
                         "trained with [lora] elastic_ranks")
    adapters = slice_rank(load_adapters(supernet_dir / ADAPTERS_FILE), rank)
    subtract_adapters(model, adapters)  # the weights held base + the rank-r adapters
    return model, {name[name.find("encoder.layer."):]: ad for name, ad in adapters.items()}
