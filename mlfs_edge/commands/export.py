"""mlfs-edge export: a sub-network to ExecuTorch .pte files (fp32, fp16, int8) with manifests."""

from __future__ import annotations

import argparse

from mlfs_edge.commands._common import DEFAULT_RUN_DIR, add_data_args

ORDER = 70


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a sub-network to ExecuTorch .pte (XNNPACK) with a JSON manifest",
                       description="Slice a sub-network and lower it with torch.export → to_edge_transform_and_lower "
                                   "(XNNPACK partitioner) → to_executorch, once per dtype. Beside each NAME-DTYPE.pte "
                                   "a NAME-DTYPE.json manifest (sub-network, dtype, labels, max length, tokenizer "
                                   "files, sha256) tells an app how to feed it; the tokenizer goes to OUT/tokenizer. "
                                   "Inputs: input_ids and attention_mask, int64 [1, seq], 2 ≤ seq ≤ --max-length "
                                   "(dynamic). int8: per-channel int8 linears (dynamic per-token activations, or "
                                   "static ones calibrated on real sentences) and int8 embedding tables. fp16 halves "
                                   "the size; it is faster only on CPUs with native fp16 (ARMv8.2+), slower on x86.",
                       epilog="example: mlfs-edge export --subnet depth=4,heads=6,mlp=768 --dtypes fp32,int8 --out "
                              "runs/export")
    p.add_argument("--model", default=str(DEFAULT_RUN_DIR / "demo"),
                   help="a training run folder (its supernet), a trained supernet folder or a fine-tuned classifier "
                        "(default: %(default)s, the demo's run)")
    p.add_argument("--subnet", default="full", help="sub-network: 'full', 'depth=4,heads=6,mlp=768', JSON or a "
                                                    ".json/.toml file (default: %(default)s)")
    p.add_argument("--dtypes", default="fp32,fp16,int8", help="comma-separated from fp32, fp16, int8 "
                                                              "(default: %(default)s)")
    p.add_argument("--output", default="logits", choices=("logits", "embedding"),
                   help="class logits, or the mean-pooled sentence embedding (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=128, help="longest input in tokens, ≤ 512 (default: %(default)s)")
    p.add_argument("--int8-mode", default="dynamic", choices=("dynamic", "static"),
                   help="int8 activations: ranges per token at run time, or calibrated (default: %(default)s)")
    p.add_argument("--calibration", type=int, default=64, metavar="N",
                   help="train sentences used to calibrate int8 static (default: %(default)s)")
    p.add_argument("--name", default=None, help="file name stem (default: the sub-network's name)")
    p.add_argument("--out", default=str(DEFAULT_RUN_DIR / "export"), help="output folder (default: %(default)s)")
    add_data_args(p, "rotten_tomatoes", from_run=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm.auto import tqdm

    from mlfs_edge.commands._common import data_for, model_folder
    from mlfs_edge.eval.compare import load_source, parse_subnets
    from mlfs_edge.export import ExportConfig, Manifest, export_pte
    from mlfs_edge.report import markdown_table
    from mlfs_edge.supernet import extract

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    model_dir = model_folder(args.model)
    calibration: tuple[str, ...] = ()
    if "int8" in dtypes and args.int8_mode == "static":
        data = data_for(model_dir, args)
        print(f"[export] int8 static: calibrating on {args.calibration} training sentences of {data.data} ({data.why})")
        calibration = tuple(data.load().train.texts[:args.calibration])
    base = ExportConfig(output=args.output, max_length=args.max_length, int8_mode=args.int8_mode,
                        calibration_texts=calibration)
    model, tokenizer, space = load_source(model_dir)
    cfg = parse_subnets([args.subnet], space)[0]
    sub = extract(model, cfg)
    for dtype in dtypes:  # check every dtype before the first (slow) export
        replace(base, dtype=dtype).validate(sub)
    rows = []
    for dtype in tqdm(dtypes, desc=f"export {cfg.name}"):
        path = export_pte(sub, tokenizer, args.out, f"{args.name or cfg.name}-{dtype}", replace(base, dtype=dtype),
                          subnet=cfg.to_dict())
        m = Manifest.read(path)
        rows.append({"file": str(m.pte_path(path)), "dtype": dtype, "MB": f"{m.size_bytes / 1e6:.1f}",
                     "manifest": str(path)})
    print(markdown_table(rows))
    return 0
