"""Prefill and decode tokens/s of the decoder engine on SmolLM2-135M beside PyTorch.

The engine in fp32 / fp16 / int8 / q4 x the full model and a ~50 % sub-network x 1 and 2 threads,
and PyTorch fp32 `generate` (with its KV cache) at the same thread counts: a `--prompt-tokens`
news prompt, `--new-tokens` greedy tokens (no stop token). Rows are interleaved per thread count so
background load hits every backend alike. Prefill tok/s = prompt tokens / time to the first new
token; decode tok/s = the remaining new tokens / their time. Also: the time to switch sub-network
between two generations (only the sub-network argument changes; no weight is copied).

    .venv/bin/python benchmarks/decoder_speed.py --json benchmarks/results/decoder_speed.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlfs_edge.assets import smollm2_path
from mlfs_edge.config import SubnetConfig
from mlfs_edge.data import load_text
from mlfs_edge.lm import token_stream
from mlfs_edge.runtime import Engine, pack
from mlfs_edge.runtime.format import atomic_write_text

DTYPES = ("fp32", "fp16", "int8", "q4")


def half_subnet(arch) -> SubnetConfig:
    """~50 % of the layer parameters: every layer, 2 of 3 key/value groups, half the MLP."""
    return SubnetConfig.uniform(arch, heads=2 * arch.group_size, mlp=arch.intermediate // 2)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def engine_row(engine: Engine, prompt: list[int], cfg: SubnetConfig, name: str, new: int, threads: int) -> dict:
    engine.generate(prompt[:16], subnet=cfg, max_new_tokens=4, stop_tokens=[], threads=threads)  # page weights in
    stream = engine.stream(prompt, subnet=cfg, max_new_tokens=new, stop_tokens=[], threads=threads)
    n = len(list(stream))
    return {"backend": "mlfs", "subnet": name, "dtype": engine.dtype, "threads": threads,
            "prompt_tokens": len(prompt), "new_tokens": n, "prefill_tok_s": stream.prefill_tok_s,
            "decode_tok_s": stream.decode_tok_s, "peak_rss_mb": peak_rss_mb(), "file_bytes": engine.file_size}


@torch.no_grad()
def torch_row(model: torch.nn.Module, prompt: list[int], new: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    x = torch.tensor([prompt])
    mask = torch.ones_like(x)
    model.generate(x[:, :16], attention_mask=mask[:, :16], max_new_tokens=4, do_sample=False, pad_token_id=0)
    t0 = time.perf_counter()
    model(x, attention_mask=mask)  # the prefill alone
    prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model.generate(x, attention_mask=mask, max_new_tokens=new, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    total = time.perf_counter() - t0
    n = out.shape[1] - len(prompt)
    return {"backend": "pytorch", "subnet": "full", "dtype": "fp32", "threads": threads, "prompt_tokens": len(prompt),
            "new_tokens": n, "prefill_tok_s": len(prompt) / prefill,
            "decode_tok_s": (n - 1) / max(total - prefill, 1e-9), "peak_rss_mb": peak_rss_mb(), "file_bytes": None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--no-pytorch", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = token_stream(tokenizer, load_text("news").test, max_tokens=args.prompt_tokens)
    threads = [int(t) for t in args.threads.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        engines = {d: Engine.load(pack(model, Path(tmp) / f"smollm2-{d}.mlfs", dtype=d)) for d in DTYPES}
        arch = engines["fp32"].arch
        subnets = {"full": SubnetConfig.full(arch), "half": half_subnet(arch)}
        for t in threads:
            for dtype, engine in engines.items():
                for name, cfg in subnets.items():
                    row = engine_row(engine, prompt, cfg, name, args.new_tokens, t)
                    rows.append(row)
                    print(f"mlfs    {dtype:5s} {name:5s} {t} thr: prefill {row['prefill_tok_s']:7.1f} tok/s  "
                          f"decode {row['decode_tok_s']:6.1f} tok/s", flush=True)
            if not args.no_pytorch:
                row = torch_row(model, prompt, args.new_tokens, t)
                rows.append(row)
                print(f"pytorch fp32  full  {t} thr: prefill {row['prefill_tok_s']:7.1f} tok/s  "
                      f"decode {row['decode_tok_s']:6.1f} tok/s", flush=True)
        # Sub-network switch between generations: the cost of a new generation on another config,
        # beyond its compute (one token of prompt, one new token), measured against the same config.
        engine, ids = engines["int8"], np.asarray(prompt[:1], np.int64)
        switch = []
        for cfg in (subnets["full"], subnets["half"]) * 20:
            t0 = time.perf_counter()
            engine.stream(ids, subnet=cfg, max_new_tokens=1, stop_tokens=[])  # validation + cache layout only
            switch.append((time.perf_counter() - t0) * 1e6)
        switch_us = float(np.median(switch))
        print(f"sub-network switch (start a generation on another config): {switch_us:.1f} us, 0 weight bytes copied")
    record = {"command": shlex.join(["python", "benchmarks/decoder_speed.py", *sys.argv[1:]]),
              "model": "SmolLM2-135M-Instruct (bundled)", "cpu": _cpu(), "subnets": {k: v.to_dict() for k, v in
                                                                                   subnets.items()},
              "half_param_fraction": subnets["half"].param_fraction(arch), "switch_us": switch_us, "rows": rows}
    if args.json:
        atomic_write_text(args.json, json.dumps(record, indent=1))
    return 0


def _cpu() -> str:
    from mlfs_edge.runtime import cpu_model

    return cpu_model()


if __name__ == "__main__":
    raise SystemExit(main())
