"""Evaluate a palette of sub-networks of a trained decoder (causal LM) supernet by perplexity.

For every sub-network: held-out perplexity when sliced from the MLFS supernet, and when sliced from
the pretrained model with the same importance order but without MLFS training
(``perplexity_no_mlfs``); plus the pretrained full model's perplexity. The recipe is
`mlfs_edge.lm.perplexity` (non-overlapping blocks of the training ``block_size``, the first
``max_eval_tokens`` tokens of the test documents), so all numbers of one run are comparable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlfs_edge.atomic import write_atomically
from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.supernet.elastic import ElasticSupernet
from mlfs_edge.supernet.importance import ImportanceOrder, apply_order


def evaluate_lm_palette(supernet_dir: str | Path, texts: list[str], palette: list[str], block_size: int,
                        max_tokens: int | None = None, progress: bool = True,
                        rank: int | None = None, draft_texts: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """Perplexity per palette member (MLFS and without MLFS), and its acceptance rate as a draft for
    the MLFS full model under greedy speculative decoding (greedy agreement, teacher forced) on `texts`
    (``draft_acceptance``) and on each of `draft_texts` (``draft_acceptance_<name>``)."""
    from tqdm.auto import tqdm

    from mlfs_edge.assets import resolve_model_path
    from mlfs_edge.lm import greedy_agreement, perplexity
    from mlfs_edge.models import load_causal_lm
    from mlfs_edge.supernet.folder import load_supernet

    model, tokenizer, net, meta = load_supernet(supernet_dir, rank)
    arch = ArchSpec.from_hf_config(model.config)
    teacher, _ = load_causal_lm(resolve_model_path(meta["teacher"]))
    teacher.eval()
    apply_order(teacher, ImportanceOrder.from_dict(meta["order"]))
    teacher_net = ElasticSupernet(teacher)
    configs = sorted({SubnetConfig.parse(spec, arch) for spec in palette}, key=lambda c: c.layer_params(arch))
    full_layers = SubnetConfig.full(arch).layer_params(arch)
    # Embeddings are tied to the LM head in SmolLM2: count each parameter once.
    embed = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()) - full_layers

    def ppl(m, on: list[str] = texts, predictions: bool = False) -> Any:  # noqa: ANN001
        return perplexity(m, tokenizer, on, block_size=block_size, max_tokens=max_tokens, predictions=predictions)

    # The target of every draft: the MLFS supernet's full model, on each text.
    extra = dict(draft_texts or {})
    net.set_active(net.full)
    target = {"": ppl(model, predictions=True), **{n: ppl(model, t, predictions=True) for n, t in extra.items()}}
    rows, full = [], None
    for cfg in tqdm(configs, desc="evaluate palette", unit="subnet", disable=not progress):
        net.set_active(cfg)
        teacher_net.set_active(cfg)
        mlfs, plain = ppl(model, predictions=True), ppl(teacher)
        if cfg == teacher_net.full:
            full = plain  # the pretrained full model: no need to measure it twice
        row = {"subnet": cfg.to_dict(), "name": cfg.name, "params": cfg.layer_params(arch),
               "total_params": cfg.layer_params(arch) + embed, "param_fraction": cfg.param_fraction(arch),
               "perplexity": mlfs.perplexity, "perplexity_no_mlfs": plain.perplexity,
               "nll": mlfs.nll, "nll_no_mlfs": plain.nll, "draft_acceptance": greedy_agreement(mlfs, target[""])}
        for name, other in extra.items():
            row[f"draft_acceptance_{name}"] = greedy_agreement(ppl(model, other, predictions=True), target[name])
        rows.append(row)
    teacher_net.set_active(teacher_net.full)
    if full is None:
        full = ppl(teacher)
    return {"teacher_perplexity": full.perplexity, "eval_tokens": full.tokens, "block_size": block_size,
            "rows": rows, "lora_rank": meta["rank"]}


def plot_lm_palette(result: dict[str, Any], path: str | Path, title: str) -> None:
    """Perplexity (log scale) vs layer parameters: MLFS sub-networks, the same slices of the
    pretrained model, the pretrained full model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    x = [r["params"] / 1e6 for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(x, [r["perplexity"] for r in rows], "o-", label="MLFS sub-networks")
    ax.plot(x, [r["perplexity_no_mlfs"] for r in rows], "s--", label="sliced pretrained model, no MLFS")
    ax.axhline(result["teacher_perplexity"], color="gray", lw=1, ls=":", label="pretrained full model")
    ax.set_yscale("log")
    ax.set_xlabel("transformer-layer parameters (M)")
    ax.set_ylabel("held-out perplexity (log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right")
    fig.tight_layout()
    write_atomically(Path(path), lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)

