"""mlfs-edge slice: one sub-network of a trained supernet as a standalone Hugging Face model."""

from __future__ import annotations

import argparse

ORDER = 41


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "slice", help="cut one sub-network out of a trained supernet into a standalone HF model folder",
        description="Extracts a sub-network (LoRA already merged) with real smaller matrices and a smaller "
                    "config; it loads with AutoModelForSequenceClassification.from_pretrained (import "
                    "mlfs_edge.supernet first when heads were removed from an encoder or GPT-2: model_type "
                    "mlfs_bert, mlfs_roberta, ...).",
        epilog="Sub-network formats: 'full', 'depth=4,heads=8,mlp=768' (d/h/f also work), inline JSON "
               "'{\"layers\": [0,2,5], \"heads\": [6,6,6], \"mlp\": [768,768,768]}' or a .json/.toml file.")
    p.add_argument("run", nargs="?", default=None,
                   help="the training run folder (the --out of `mlfs-edge train`) or the supernet folder inside it")
    p.add_argument("--supernet", default=None, help="the same as RUN (kept for older scripts)")
    p.add_argument("--subnet", required=True, help="the sub-network to cut out (see below)")
    p.add_argument("--out", required=True, help="output folder for the standalone model")
    p.add_argument("--rank", type=int, default=None,
                   help="merge the LoRA adapters at this rank (a supernet trained with [lora] elastic_ranks; "
                        "default: full rank)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlfs_edge.commands._common import model_folder
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.models import save_atomically
    from mlfs_edge.supernet.extract import extract
    from mlfs_edge.supernet.folder import load_supernet

    source = args.run or args.supernet
    if source is None or (args.run and args.supernet):
        raise ValueError("give the run folder once: mlfs-edge slice RUN --subnet ... --out DIR")
    supernet = model_folder(source)
    model, tokenizer, net, _ = load_supernet(supernet, args.rank)
    cfg = SubnetConfig.parse(args.subnet, net.arch)
    small = extract(model, cfg)
    save_atomically(small, tokenizer, Path(args.out),
                    {"slice": {"supernet": str(supernet), "subnet": cfg.to_dict(), "lora_rank": args.rank,
                               "param_fraction": cfg.param_fraction(net.arch)}})
    n = sum(p.numel() for p in small.parameters())
    print(f"{cfg.name}: {n:,} parameters ({100 * cfg.param_fraction(net.arch):.1f} % of the layer parameters) "
          f"written to {args.out}")
    return 0
