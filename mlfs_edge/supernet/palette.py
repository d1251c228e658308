"""Evaluate a palette of sub-networks of a trained supernet (and of the teacher without MLFS)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlfs_edge.atomic import write_atomically
from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.supernet.elastic import ElasticSupernet
from mlfs_edge.supernet.importance import ImportanceOrder, apply_order


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


def evaluate_palette(supernet_dir: str | Path, data, palette: list[str], max_eval: int | None = None,  # noqa: ANN001
                     max_length: int = 128, progress: bool = True, rank: int | None = None) -> dict[str, Any]:
    """Test accuracy of each palette sub-network, sliced from the MLFS supernet (its adapters at
    `rank`, None = full rank) and, for comparison, from the teacher with the same importance order
    but without MLFS training."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification

    from mlfs_edge.eval.metrics import evaluate_classifier

    model, tokenizer, net, meta = load_supernet(supernet_dir, rank)
    arch = ArchSpec.from_hf_config(model.config)
    teacher = AutoModelForSequenceClassification.from_pretrained(meta["teacher"], attn_implementation="eager").eval()
    apply_order(teacher, ImportanceOrder.from_dict(meta["order"]))
    teacher_net = ElasticSupernet(teacher)
    test = data.test.subset(max_eval)
    configs = sorted({SubnetConfig.parse(spec, arch) for spec in palette}, key=lambda c: c.layer_params(arch))
    full_layers = SubnetConfig.full(arch).layer_params(arch)
    embed = sum(p.numel() for p in model.parameters()) - full_layers
    rows = []
    for cfg in tqdm(configs, desc="evaluate palette", unit="subnet", disable=not progress):
        net.set_active(cfg)
        teacher_net.set_active(cfg)
        rows.append({"subnet": cfg.to_dict(), "name": cfg.name, "params": cfg.layer_params(arch),
                     "total_params": cfg.layer_params(arch) + embed,
                     "param_fraction": cfg.param_fraction(arch),
                     "accuracy": evaluate_classifier(model, tokenizer, test, max_length=max_length).accuracy,
                     "accuracy_no_mlfs": evaluate_classifier(teacher, tokenizer, test, max_length=max_length).accuracy})
    teacher_net.set_active(teacher_net.full)
    teacher_acc = evaluate_classifier(teacher, tokenizer, test, max_length=max_length).accuracy
    return {"teacher_accuracy": teacher_acc, "test_examples": len(test), "rows": rows,
            "lora_rank": meta["rank"]}


def plot_palette(result: dict[str, Any], path: str | Path, title: str) -> None:
    """Accuracy vs layer parameters: MLFS sub-networks, the same slices of the teacher, the teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    x = [r["params"] / 1e6 for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(x, [100 * r["accuracy"] for r in rows], "o-", label="MLFS sub-networks")
    ax.plot(x, [100 * r["accuracy_no_mlfs"] for r in rows], "s--", label="sliced teacher, no MLFS")
    ax.axhline(100 * result["teacher_accuracy"], color="gray", lw=1, ls=":", label="teacher (full fine-tune)")
    ax.set_xlabel("transformer-layer parameters (M)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    write_atomically(Path(path), lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
