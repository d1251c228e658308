"""Evaluate a palette of sub-networks of a trained supernet (and of the teacher without MLFS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlfs_edge.atomic import write_atomically
from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.models import check_labels
from mlfs_edge.supernet.elastic import ElasticSupernet
from mlfs_edge.supernet.folder import load_supernet
from mlfs_edge.supernet.importance import ImportanceOrder, apply_order


def evaluate_palette(supernet_dir: str | Path, data, palette: list[str], max_eval: int | None = None,  # noqa: ANN001
                     max_length: int = 128, progress: bool = True, rank: int | None = None) -> dict[str, Any]:
    """Test accuracy of each palette sub-network, sliced from the MLFS supernet (its adapters at
    `rank`, None = full rank) and, for comparison, from the teacher with the same importance order
    but without MLFS training. Each accuracy comes with its per-item correctness ("correct",
    "correct_no_mlfs", "teacher_correct": `stats.encode_correct` strings over the test split) for
    paired comparisons across methods and seeds."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification

    from mlfs_edge.metrics import compute_device, evaluate_classifier
    from mlfs_edge.stats import encode_correct

    check_labels(supernet_dir, data.label_names, data.name)
    model, tokenizer, net, meta = load_supernet(supernet_dir, rank)
    arch = ArchSpec.from_hf_config(model.config)
    teacher = AutoModelForSequenceClassification.from_pretrained(meta["teacher"], attn_implementation="eager").eval()
    apply_order(teacher, ImportanceOrder.from_dict(meta["order"]))
    teacher_net = ElasticSupernet(teacher)
    model.to(compute_device())  # where training ran too; inference only
    teacher.to(compute_device())
    test = data.test.subset(max_eval)
    configs = sorted({SubnetConfig.parse(spec, arch) for spec in palette}, key=lambda c: c.layer_params(arch))
    full_layers = SubnetConfig.full(arch).layer_params(arch)
    embed = sum(p.numel() for p in model.parameters()) - full_layers
    rows = []
    for cfg in tqdm(configs, desc="evaluate palette", unit="subnet", disable=not progress):
        net.set_active(cfg)
        teacher_net.set_active(cfg)
        mlfs = evaluate_classifier(model, tokenizer, test, max_length=max_length)
        sliced = evaluate_classifier(teacher, tokenizer, test, max_length=max_length)
        rows.append({"subnet": cfg.to_dict(), "name": cfg.name, "params": cfg.layer_params(arch),
                     "total_params": cfg.layer_params(arch) + embed,
                     "param_fraction": cfg.param_fraction(arch),
                     "accuracy": mlfs.accuracy, "accuracy_no_mlfs": sliced.accuracy,
                     "correct": encode_correct(mlfs.predictions, test.labels),
                     "correct_no_mlfs": encode_correct(sliced.predictions, test.labels),
                     "single_answer": single_answer(mlfs.predictions, test.labels, data.label_names)})
    teacher_net.set_active(teacher_net.full)
    full = evaluate_classifier(teacher, tokenizer, test, max_length=max_length)
    return {"teacher_accuracy": full.accuracy, "teacher_correct": encode_correct(full.predictions, test.labels),
            "test_examples": len(test), "rows": rows, "lora_rank": meta["rank"]}


def single_answer(predictions: list[int], labels: list[int], label_names: list[str]) -> str | None:
    """The label a model gave every test item when it gave only one and the items have several (a
    collapsed run: its accuracy is then just that label's share of the test split), else None."""
    answers = set(predictions)
    if len(answers) == 1 and len(set(labels)) > 1:
        return label_names[answers.pop()]
    return None


def collapse_warning(record: dict[str, Any], run: str | Path) -> str | None:
    """A line for the user when sub-networks of the run collapsed to one answer (rows from `evaluate_palette`;
    older records without "single_answer" count as fine), else None."""
    collapsed = [r for r in record["rows"] if r.get("single_answer")]
    if not collapsed:
        return None
    answers = " / ".join(sorted({repr(r["single_answer"]) for r in collapsed}))
    return (f"warning: {len(collapsed)} of {len(record['rows'])} sub-networks of {run} answer {answers} for every "
            f"test item ({100 * collapsed[0]['accuracy']:.2f} %: that label's share of the test split, not a "
            f"trained model): too few steps, or a training that diverged (its loss history: "
            f"{Path(run) / 'mlfs_train.json'}). Retrain with more steps, a lower [[stages]] lr or [lora] rank, or "
            "another seed.")


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
