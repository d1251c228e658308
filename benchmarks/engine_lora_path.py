"""The engine's low-rank path on a real elastic-rank supernet: adapters unmerged vs merged.

For each LoRA rank the supernet was trained at (`benchmarks/mlfs_elastic_rank.py` trains one), two
packed files of the same function: the adapters merged into the weights, and the frozen base with
the rank-r adapters kept unmerged (`mlfs-edge pack --lora-rank R`; the engine adds s·B(A x) in
fp32 beside the fp32/int8 base GEMM). Reported per file and sub-network: accuracy on the Rotten
Tomatoes test split, agreement with PyTorch (the supernet at that rank), max |Δ logits| vs
PyTorch, and the median latency (batch 1, 64 tokens, 1 thread), merged and unmerged timed in turn.

    .venv/bin/python benchmarks/engine_lora_path.py --supernet runs/elastic_rank/supernet

Writes benchmarks/results/engine_lora_path.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", default="runs/elastic_rank/supernet", help="supernet trained with elastic ranks")
    p.add_argument("--subnets", nargs="+", default=["full", "depth=6,heads=6,mlp=768", "depth=3,heads=6,mlp=384"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "int8"], choices=["fp32", "fp16", "int8"])
    p.add_argument("--seq", type=int, default=64, help="tokens per sequence for the latency runs")
    p.add_argument("--runs", type=int, default=30, help="timed runs per measurement (median)")
    p.add_argument("--json", default=str(RESULTS / "engine_lora_path.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.data import load_classification
    from mlfs_edge.report import markdown_table
    from mlfs_edge.runtime import Engine, pack
    from mlfs_edge.supernet.folder import load_supernet, supernet_meta, unmerged_supernet

    lora = supernet_meta(args.supernet)["lora"]
    ranks = sorted({*lora.get("elastic_ranks", []), lora["rank"]})
    test = load_classification("rotten_tomatoes").test
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rank in ranks:
            model, tokenizer, net, _ = load_supernet(args.supernet, rank)  # merged at this rank
            base, adapters = unmerged_supernet(args.supernet, rank)
            batches = [tokenizer(test.texts[i:i + 64], padding=True, truncation=True, max_length=128,
                                 return_tensors="np") for i in range(0, len(test.texts), 64)]
            labels = np.asarray(test.labels)
            engines_by_dtype = {dtype: {  # packed while the model is the full supernet
                "merged": Engine.load(pack(model, Path(tmp) / f"m{rank}{dtype}.mlfs", dtype=dtype)),
                "unmerged": Engine.load(pack(base, Path(tmp) / f"u{rank}{dtype}.mlfs", dtype=dtype, lora=adapters)),
            } for dtype in args.dtypes}
            for spec in args.subnets:
                cfg = SubnetConfig.parse(spec, net.arch)
                net.set_active(cfg)
                with torch.no_grad():
                    ref = np.concatenate([model(input_ids=torch.from_numpy(b["input_ids"]),
                                                attention_mask=torch.from_numpy(b["attention_mask"])).logits.numpy()
                                          for b in batches])
                for dtype, engines in engines_by_dtype.items():
                    lat = {k: [] for k in engines}
                    for _ in range(3):  # interleaved: machine load hits both alike
                        for k, e in engines.items():
                            lat[k].append(e.profile([cfg], seq=args.seq, runs=args.runs, use_cache=False)[cfg])
                    for k, e in engines.items():
                        got = np.concatenate([e.run(b["input_ids"].astype(np.int64),
                                                    b["attention_mask"].astype(np.int64), subnet=cfg)
                                              for b in batches])
                        rows.append({"rank": rank, "subnet": cfg.name, "dtype": dtype, "adapters": k,
                                     "accuracy": float((got.argmax(1) == labels).mean()),
                                     "torch_accuracy": float((ref.argmax(1) == labels).mean()),
                                     "agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
                                     "max_abs_diff": float(np.abs(got - ref).max()),
                                     "ms_median": float(np.median(lat[k])), "file_mb": e.file_size / 2**20})
                    m, u = rows[-2], rows[-1]
                    u["latency_vs_merged"] = u["ms_median"] / m["ms_median"]
            net.set_active(net.full)
    print(markdown_table([{"rank": r["rank"], "sub-network": r["subnet"], "dtype": r["dtype"],
                           "adapters": r["adapters"], "acc %": f"{100 * r['accuracy']:.2f}",
                           "torch acc %": f"{100 * r['torch_accuracy']:.2f}", "agree %": f"{100 * r['agreement']:.1f}",
                           "max |Δ|": f"{r['max_abs_diff']:.1e}", "ms": f"{r['ms_median']:.2f}",
                           "× merged": f"{r.get('latency_vs_merged', 1.0):.2f}", "MiB": f"{r['file_mb']:.1f}"}
                          for r in rows]))
    record = {"command": shlex.join(["python", "benchmarks/engine_lora_path.py", *sys.argv[1:]]),
              "supernet": args.supernet, "seq": args.seq, "runs": args.runs, "threads": 1,
              "test_examples": len(test.texts), "rows": rows}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
