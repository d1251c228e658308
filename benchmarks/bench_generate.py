"""Decoder benchmark (see mlfs_edge.eval.bench_generate): prefill / decode tokens/s of the engine (fp32 /
fp16 / int8 / q4 x the full SmolLM2-135M and two sub-networks) beside llama.cpp (F16 / Q8_0 / Q4_0 of
the same weights; `make bench-setup` adds it) and PyTorch fp32 `generate`, plus the sub-network switch
time, KV memory and decode's weight bandwidth. Prints the tables, writes JSON and a PNG beside it.

    .venv/bin/python benchmarks/bench_generate.py --json benchmarks/results/generate.json

Same as `mlfs-edge bench generate` (every option of it works here; defaults: a 128-token prompt, 128
new tokens, 1 and 2 threads, 3 round-robin rounds). Numbers from a shared machine are only meaningful
as ratios between the rows of one run.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mlfs_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "generate", *sys.argv[1:]]))
