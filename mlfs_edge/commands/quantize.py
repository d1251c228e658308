"""mlfs-edge quantize: int8 / fp16 / bitsandbytes variants of a sub-network, sizes and accuracy."""

from __future__ import annotations

import argparse

from mlfs_edge.commands._common import DEFAULT_RUN_DIR, add_data_args

ORDER = 60
SCHEMES = ("fp32", "int8", "fp16", "bnb-int8", "bnb-nf4")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantize a sub-network (int8, fp16, bitsandbytes) and report size/accuracy",
                       description="Slice a sub-network from a fine-tuned model (or a trained supernet), quantize it "
                                   "with each scheme in PyTorch and print its size and test accuracy. int8 is the "
                                   "project's scheme (per-channel int8 weights, per-token int8 activations, the one "
                                   "the C++ engine and the .pte exports use); bnb-int8 / bnb-nf4 are bitsandbytes "
                                   "LLM.int8 and 4-bit NormalFloat.",
                       epilog="example: mlfs-edge quantize --subnet depth=4,heads=6,mlp=768 --schemes fp32,int8,fp16")
    p.add_argument("--model", default=str(DEFAULT_RUN_DIR / "demo" / "teacher"),
                   help="fine-tuned classifier or trained supernet folder (default: %(default)s)")
    p.add_argument("--subnet", default="full", help="sub-network: 'full', 'depth=4,heads=6,mlp=768', JSON or a "
                                                    ".json/.toml file (default: %(default)s)")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated, from " + ", ".join(SCHEMES))
    p.add_argument("--max-eval", type=int, default=None, help="evaluate on only the first N test sentences")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows (and the command) as JSON")
    add_data_args(p, "rotten_tomatoes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import copy
    from dataclasses import replace

    from tqdm.auto import tqdm

    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.compare import load_source, parse_subnets
    from mlfs_edge.metrics import evaluate_classifier
    from mlfs_edge.quant import config_for, model_size_bytes, quantize
    from mlfs_edge.report import markdown_table
    from mlfs_edge.supernet import extract

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    for s in schemes:
        if s not in SCHEMES:
            raise ValueError(f"unknown scheme {s!r}; choose from {', '.join(SCHEMES)}")
    data = load_classification(args.data, args.text_column, args.label_column)
    model, tokenizer, space = load_source(args.model)
    cfg = parse_subnets([args.subnet], space)[0]
    sub = extract(model, cfg)
    test = data.test.subset(args.max_eval)
    rows = []
    base_size = model_size_bytes(sub)
    for scheme in tqdm(schemes, desc="quantize"):
        config = config_for(scheme) if scheme != "fp32" else None
        if scheme.startswith("bnb-"):
            # The 2-row classification head stays float: tiny, and bitsandbytes' CPU 4-bit packing
            # needs an output dimension divisible by its block.
            config = replace(config, skip=("classifier",))
        q = copy.deepcopy(sub) if config is None else quantize(copy.deepcopy(sub), config)
        res = evaluate_classifier(q, tokenizer, test)
        size = model_size_bytes(q)
        rows.append({"subnet": cfg.name, "scheme": scheme, "size_bytes": size, "size_vs_fp32": size / base_size,
                     "accuracy": res.accuracy, "test_examples": len(test)})
    print(markdown_table([{"subnet": r["subnet"], "scheme": r["scheme"], "size MB": f"{r['size_bytes'] / 1e6:.1f}",
                           "vs fp32": f"{r['size_vs_fp32']:.3f}", "test acc %": f"{100 * r['accuracy']:.2f}"}
                          for r in rows]))
    if args.json:
        import json
        import shlex
        import sys
        from pathlib import Path

        from mlfs_edge.atomic import write_atomically

        payload = json.dumps({"command": shlex.join(["mlfs-edge", *sys.argv[1:]]), "model": args.model,
                              "rows": rows}, indent=2) + "\n"
        write_atomically(Path(args.json), lambda tmp: tmp.write_text(payload))
    return 0
