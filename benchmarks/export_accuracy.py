"""ExecuTorch .pte parity on the real model: one sub-network exported in fp32, fp16, int8 dynamic and
int8 static, each run in the ExecuTorch runtime on the whole Rotten Tomatoes test split.

Reported per variant: test accuracy, agreement with eager PyTorch fp32, cosine of the logits with
eager, max abs difference, and the .pte size as a fraction of fp32's (the export issue's targets:
fp32 max abs ≤ 1e-4; int8/fp16 cosine ≥ 0.99 and accuracy within 1 point of fp32; int8 ≤ 0.3× and
fp16 ≤ 0.55× the fp32 size).

    .venv/bin/python benchmarks/export_accuracy.py --model runs/mlfs_minilm_rt/supernet --subnet depth=6,heads=6,mlp=768

Writes benchmarks/results/export_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"fp32": ("fp32", "dynamic"), "fp16": ("fp16", "dynamic"), "int8-dynamic": ("int8", "dynamic"),
            "int8-static": ("int8", "static")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/mlfs_minilm_rt/supernet", help="supernet or fine-tuned teacher folder")
    p.add_argument("--subnet", default="depth=6,heads=6,mlp=768")
    p.add_argument("--max-test", type=int, default=None, help="first N test sentences (default: all)")
    p.add_argument("--calibration", type=int, default=64, help="training sentences for int8 static")
    p.add_argument("--work-dir", default="runs/export_accuracy")
    p.add_argument("--json", default=str(RESULTS / "export_accuracy.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.compare import load_source, parse_subnets
    from mlfs_edge.export import EncoderForExport, ExportConfig, Manifest, PteModel, export_pte
    from mlfs_edge.report import markdown_table
    from mlfs_edge.supernet import extract

    data = load_classification("rotten_tomatoes")
    test = data.test.subset(args.max_test)
    model, tokenizer, space = load_source(args.model)
    cfg = parse_subnets([args.subnet], space)[0]
    sub = extract(model, cfg).eval()
    max_length = 128
    wrapper = EncoderForExport(sub, "logits").eval()
    ref = []
    with torch.no_grad():
        for text in test.texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            ref.append(wrapper(enc["input_ids"], enc["attention_mask"]))
    ref_logits = torch.cat(ref)
    ref_pred = ref_logits.argmax(-1)
    labels = torch.tensor(test.labels)
    rows = []
    sizes = {}
    for name, (dtype, mode) in VARIANTS.items():
        ecfg = ExportConfig(dtype, "logits", max_length, mode,
                            tuple(data.train.texts[:args.calibration]) if mode == "static" else ())
        manifest = export_pte(sub, tokenizer, Path(args.work_dir), name, ecfg, subnet=cfg.to_dict())
        pte = PteModel(manifest)
        logits = torch.cat([pte([t]) for t in test.texts])
        sizes[name] = Manifest.read(manifest).size_bytes
        pred = logits.argmax(-1)
        rows.append({"variant": name, "accuracy": float((pred == labels).float().mean()),
                     "agreement": float((pred == ref_pred).float().mean()),
                     "cosine_min": float(torch.nn.functional.cosine_similarity(logits, ref_logits, dim=1).min()),
                     "max_abs_diff": float((logits - ref_logits).abs().max()),
                     "size_bytes": sizes[name], "size_vs_fp32": sizes[name] / sizes["fp32"]})
        print(f"{name}: accuracy {100 * rows[-1]['accuracy']:.2f}%, agreement {100 * rows[-1]['agreement']:.2f}%")
    eager_acc = float((ref_pred == labels).float().mean())
    print(markdown_table([{"variant": r["variant"], "accuracy %": f"{100 * r['accuracy']:.2f}",
                           "Δ vs eager fp32": f"{100 * (r['accuracy'] - eager_acc):+.2f}",
                           "agreement %": f"{100 * r['agreement']:.2f}", "min cosine": f"{r['cosine_min']:.4f}",
                           "max |Δ|": f"{r['max_abs_diff']:.2e}", "size": f"{r['size_bytes'] / 1e6:.1f} MB",
                           "× fp32": f"{r['size_vs_fp32']:.3f}"} for r in rows]))
    record = {"command": shlex.join(["python", "benchmarks/export_accuracy.py", *sys.argv[1:]]),
              "model": args.model, "subnet": cfg.name, "test_examples": len(test), "eager_fp32_accuracy": eager_acc,
              "rows": rows}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
