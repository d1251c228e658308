"""mlfs-edge prune: L2-norm structured MLP pruning of a saved model into a smaller standalone model."""

from __future__ import annotations

import argparse

ORDER = 45


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="L2-norm MLP pruning: a smaller standalone HF model (baseline for MLFS)",
        description="In every transformer block, rank the MLP's intermediate channels by the L2 norm of their "
                    "weights and remove the lowest --ratio of them. The result has real smaller matrices and "
                    "loads with from_pretrained. Works for the families `mlfs-edge info --families` lists "
                    "(MiniLM, SmolLM2, RoBERTa, Qwen, Gemma, Phi-3, GPT-2, ...). "
                    "Re-train it afterwards (see `mlfs-edge baselines`).",
        epilog="Example: mlfs-edge prune --model runs/demo/teacher --ratio 0.3 --out runs/pruned30")
    p.add_argument("--model", required=True, metavar="DIR|minilm|smollm2",
                   help="a saved HF model folder, or a bundled model name")
    p.add_argument("--ratio", type=float, required=True, help="share of MLP channels to remove, in [0, 1)")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import transformers

    from mlfs_edge.assets import resolve_model_path
    from mlfs_edge.models import save_atomically
    from mlfs_edge.prune.baselines import layer_params
    from mlfs_edge.prune.mlp import kept_channels, prune_mlp
    from mlfs_edge.report import markdown_table

    path = resolve_model_path(args.model)
    config = transformers.AutoConfig.from_pretrained(path)
    kept_channels(config.intermediate_size, args.ratio)  # refuse a bad ratio before loading weights
    architecture = (getattr(config, "architectures", None) or ["AutoModel"])[0]
    model_cls = getattr(transformers, architecture, transformers.AutoModel)
    model = model_cls.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    pruned = prune_mlp(model, args.ratio)
    save_atomically(pruned, tokenizer, Path(args.out), {"prune": {"method": "l2-norm-mlp", "ratio": args.ratio,
                                                                  "source": str(path)}})
    print(markdown_table([
        {"model": name, "MLP channels / layer": m.config.intermediate_size,
         "params": f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f}M",
         "layer params": f"{layer_params(m) / 1e6:.2f}M"}
        for name, m in (("original", model), (f"pruned {100 * args.ratio:g} %", pruned))]))
    print(f"\nsaved to {args.out}; re-train it before use (accuracy drops without it)")
    return 0
