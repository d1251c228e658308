"""Quantization of the bundled decoder: SmolLM2-135M in fp32, fp16, the project's int8 scheme
(per-channel int8 weights, dynamic per-token activations) and bitsandbytes LLM.int8 / NF4, each
scored by perplexity on held-out news text (the same blocks for every variant) and weight size.

The tied embedding / LM head stays in float for every variant (quantizing it is a separate choice);
the sizes are of the whole state, as a save would write it.

    .venv/bin/python benchmarks/quant_decoder.py --max-tokens 8192

Writes benchmarks/results/quant_decoder.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMES = ("fp32", "fp16", "int8", "bnb-int8", "bnb-nf4")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2 or a causal-LM folder")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--max-tokens", type=int, default=8192, help="held-out news tokens scored")
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--json", default=str(RESULTS / "quant_decoder.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlfs_edge.assets import resolve_model_path
    from mlfs_edge.data import load_text
    from mlfs_edge.lm import perplexity
    from mlfs_edge.quant import config_for, model_size_bytes, quantize
    from mlfs_edge.report import markdown_table

    path = resolve_model_path(args.model)
    base = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = load_text("news").test
    base_size = model_size_bytes(base)
    rows = []
    for scheme in args.schemes.split(","):
        model = copy.deepcopy(base)
        if scheme == "fp16":
            model = model.half()
        elif scheme != "fp32":
            config = replace(config_for(scheme), skip=("lm_head",))
            if scheme == "int8":
                config = replace(config, embeddings=False)
            model = quantize(model, config)
        t0 = time.perf_counter()
        with torch.no_grad():
            res = perplexity(model, tokenizer, texts, args.block_size, args.max_tokens)
        size = model_size_bytes(model)
        rows.append({"scheme": scheme, "perplexity": res.perplexity, "tokens": res.tokens, "size_bytes": size,
                     "size_vs_fp32": size / base_size, "eval_s": time.perf_counter() - t0})
        print(f"{scheme}: perplexity {res.perplexity:.3f} on {res.tokens} tokens, {size / 1e6:.1f} MB")
        del model
    ref = rows[0]["perplexity"]
    print(markdown_table([{"scheme": r["scheme"], "perplexity": f"{r['perplexity']:.3f}",
                           "vs fp32": f"{100 * (r['perplexity'] / ref - 1):+.2f}%",
                           "size MB": f"{r['size_bytes'] / 1e6:.1f}", "× fp32": f"{r['size_vs_fp32']:.3f}",
                           "eval s": f"{r['eval_s']:.0f}"} for r in rows]))
    record = {"command": shlex.join(["python", "benchmarks/quant_decoder.py", *sys.argv[1:]]),
              "model": args.model, "max_tokens": args.max_tokens, "block_size": args.block_size, "rows": rows}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
