"""Decoder engine vs PyTorch on the real SmolLM2-135M and held-out news text.

1. fp32 logits of the engine against Hugging Face fp32 for the full model and three sub-networks
   (depth only, width only, per-layer widths): top-1 agreement and max relative difference over
   `--positions` consecutive news tokens.
2. Held-out perplexity (mlfs_edge.lm's recipe: blocks of `--block` tokens of the test split's
   first `--ppl-tokens` tokens) of PyTorch fp32 and of the engine in fp32 / fp16 / int8 / q4 (and
   int8 / q4 with the LM head kept fp16), with the file sizes.

    .venv/bin/python benchmarks/decoder_parity.py --json benchmarks/results/decoder_parity.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from mlfs_edge.assets import smollm2_path
from mlfs_edge.config import SubnetConfig, layers_for_depth
from mlfs_edge.data import load_text
from mlfs_edge.eval.engine_lm import engine_perplexity, logit_agreement, torch_logits
from mlfs_edge.lm import perplexity, token_stream
from mlfs_edge.runtime import Engine, pack
from mlfs_edge.runtime.format import atomic_write_text


def subnets(arch) -> dict[str, SubnetConfig]:
    n, h, f, g = arch.num_layers, arch.num_heads, arch.intermediate, arch.group_size
    return {
        "full": SubnetConfig.full(arch),
        "depth": SubnetConfig(layers_for_depth(n, 24), (h,) * 24, (f,) * 24),
        "width": SubnetConfig(tuple(range(n)), (2 * g,) * n, (f // 2,) * n),
        "per_layer": SubnetConfig(tuple(range(n)), tuple(h if i % 2 == 0 else 2 * g for i in range(n)),
                                  tuple(f if i % 3 == 0 else f // 2 for i in range(n))),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--positions", type=int, default=256)
    p.add_argument("--ppl-tokens", type=int, default=4096)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    test_docs = load_text("news").test
    record: dict = {"command": shlex.join(["python", "benchmarks/decoder_parity.py", *sys.argv[1:]]),
                    "model": "SmolLM2-135M-Instruct (bundled)", "text": "news, test split", "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        engines = {d: Engine.load(pack(model, Path(tmp) / f"smollm2-{d}.mlfs", dtype=d))
                   for d in ("fp32", "fp16", "int8", "q4")}
        # the same layers with the LM head (= tied embeddings) kept fp16, as llama.cpp keeps output.weight
        mixed = {f"{d}+fp16 head": Engine.load(pack(model, Path(tmp) / f"smollm2-{d}-h16.mlfs", dtype=d,
                                                    head_dtype="fp16")) for d in ("int8", "q4")}
        ids = token_stream(tokenizer, test_docs, max_tokens=args.positions)
        rows = []
        for name, cfg in subnets(engines["fp32"].arch).items():
            a = logit_agreement(torch_logits(model, ids, cfg), engines["fp32"].logits(ids, subnet=cfg,
                                                                                      threads=args.threads))
            rows.append({"subnet": name, "config": cfg.name, "positions": a.positions,
                         "top1_agreement": a.top1_agreement, "max_rel_diff": a.max_rel_diff})
            print(f"parity {name:10s} {cfg.name:24s} top-1 {a.top1_agreement:.2%}  max rel diff {a.max_rel_diff:.2e}")
        record["fp32_parity"] = rows
        t0 = time.perf_counter()
        ref = perplexity(model, tokenizer, test_docs, block_size=args.block, max_tokens=args.ppl_tokens)
        ppl = [{"backend": "pytorch", "dtype": "fp32", "perplexity": ref.perplexity, "tokens": ref.tokens,
                "seconds": time.perf_counter() - t0}]
        print(f"perplexity pytorch fp32 {ref.perplexity:.3f} ({ref.tokens} tokens)")
        ppl_ids = token_stream(tokenizer, test_docs, max_tokens=args.ppl_tokens)
        for dtype, engine in {**engines, **mixed}.items():
            t0 = time.perf_counter()
            r = engine_perplexity(engine, ppl_ids, args.block, threads=args.threads)
            delta = 100 * (r.perplexity / ref.perplexity - 1)
            ppl.append({"backend": "mlfs", "dtype": dtype, "perplexity": r.perplexity, "tokens": r.tokens,
                        "delta_vs_pytorch_pct": delta, "file_bytes": engine.file_size,
                        "seconds": time.perf_counter() - t0})
            mib = engine.file_size / 2**20
            print(f"perplexity mlfs {dtype:5s} {r.perplexity:.3f} ({delta:+.2f} %)  file {mib:.0f} MiB")
        record["perplexity"] = ppl
    if args.json:
        atomic_write_text(args.json, json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
