"""Training cost of sliced sub-networks vs the full model (the MLFS paper's decoder claim).

One LoRA training step (forward, backward, AdamW) of each sub-network, sliced from the supernet by
`ElasticSupernet.set_active`, measured in ONE process with the sub-networks interleaved round by
round (the machine is shared: only the ratios to the full model are meaningful), median of rounds.

    .venv/bin/python benchmarks/mlfs_step_cost.py --model smollm2 --rounds 3
    .venv/bin/python benchmarks/mlfs_step_cost.py --model minilm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from mlfs_edge.assets import resolve_model_path
from mlfs_edge.config import SubnetConfig
from mlfs_edge.eval.report import markdown_table
from mlfs_edge.supernet import ElasticSupernet, reorder_by_importance
from mlfs_edge.supernet.lora import add_lora

SUBNETS = {
    "minilm": ["full", "depth=6,heads=6,mlp=768", "depth=4,heads=9,mlp=768", "depth=3,heads=6,mlp=384"],
    "smollm2": ["full", "depth=30,heads=6,mlp=768", "depth=20,heads=6,mlp=768", "depth=15,heads=3,mlp=768"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="minilm, smollm2 or a HF model folder")
    p.add_argument("--subnets", nargs="+", default=None, help="sub-network specs (default: a palette per model)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/mlfs_step_cost_<model>.json)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(args.model)
    decoder = "llama" in json.loads((path / "config.json").read_text()).get("model_type", "")
    model = (AutoModelForCausalLM if decoder else AutoModel).from_pretrained(path, attn_implementation="eager")
    reorder_by_importance(model)
    model = add_lora(model)
    model.train()
    net = ElasticSupernet(model)
    specs = args.subnets or SUBNETS.get(args.model, ["full"])
    configs = [SubnetConfig.parse(s, net.arch) for s in specs]
    tok = AutoTokenizer.from_pretrained(path)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(tok.vocab_size, net.arch.vocab_size), (args.batch, args.seq), generator=g)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    def step(cfg: SubnetConfig) -> float:
        net.set_active(cfg)
        t = time.perf_counter()
        out = model(input_ids=ids, labels=ids) if decoder else model(input_ids=ids)
        loss = out.loss if decoder else out.last_hidden_state.pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    for cfg in configs:  # warm-up
        step(cfg)
    times: dict[str, list[float]] = {c.name: [] for c in configs}
    for _ in range(args.rounds):
        for cfg in configs:
            times[cfg.name].append(step(cfg))
    full = statistics.median(times[configs[0].name])
    rows = [{"subnet": c.name, "param_fraction": round(c.param_fraction(net.arch), 3),
             "step_s": round(statistics.median(times[c.name]), 3),
             "vs_first": round(statistics.median(times[c.name]) / full, 3)} for c in configs]
    print(markdown_table(rows))
    out = Path(args.out or f"benchmarks/results/mlfs_step_cost_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": f"python benchmarks/mlfs_step_cost.py --model {args.model} --batch {args.batch} "
                         f"--seq {args.seq} --rounds {args.rounds}",
              "note": "one process, interleaved rounds, median; shared 2-core machine: compare ratios only",
              "rows": rows, "subnets": {c.name: c.to_dict() for c in configs}}
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
