"""Training cost of sliced sub-networks vs the full model (the MLFS paper's decoder claim).

One LoRA training step (forward, backward, AdamW) of each sub-network, measured in ONE process with
the sub-networks interleaved round by round (the machine is shared: only the ratios to the full
model are meaningful), median of rounds. Two ways to run a sub-network:

- ``elastic``: sliced in place from the supernet by `ElasticSupernet.set_active` (weight views; what
  MLFS training runs);
- ``extracted``: the standalone smaller model `supernet.extract` writes (real smaller matrices; what a
  student trained on its own, or deployed, runs), with its own LoRA.

Wall seconds and process CPU seconds are both recorded: on a loaded machine the CPU time per step is
the steadier measure.

    .venv/bin/python benchmarks/mlfs_step_cost.py --model smollm2 --rounds 3
    .venv/bin/python benchmarks/mlfs_step_cost.py --model minilm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from mlfs_edge.assets import resolve_model_path
from mlfs_edge.config import SubnetConfig
from mlfs_edge.report import markdown_table
from mlfs_edge.supernet import ElasticSupernet, extract, reorder_by_importance
from mlfs_edge.supernet.lora import add_lora

SUBNETS = {
    "minilm": ["full", "depth=6,heads=6,mlp=768", "depth=4,heads=9,mlp=768", "depth=3,heads=6,mlp=384"],
    # the palette of configs/mlfs_smollm2_news.toml, 100 % down to 14.5 % of the layer parameters
    "smollm2": ["full", "depth=30,heads=9,mlp=1152", "depth=30,heads=6,mlp=768", "depth=20,heads=6,mlp=768",
                "depth=16,heads=3,mlp=384"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="minilm, smollm2 or a HF model folder")
    p.add_argument("--subnets", nargs="+", default=None, help="sub-network specs (default: a palette per model)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-extracted", action="store_true", help="time only the elastic (in-place sliced) steps")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/mlfs_step_cost_<model>.json)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(args.model)
    decoder = "llama" in json.loads((path / "config.json").read_text()).get("model_type", "")
    auto = AutoModelForCausalLM if decoder else AutoModel
    base = auto.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    reorder_by_importance(base)
    specs = args.subnets or SUBNETS.get(args.model, ["full"])
    # Standalone students first (from the plain reordered model), then the supernet gets its LoRA.
    arch_probe = ElasticSupernet(base).arch
    configs = [SubnetConfig.parse(s, arch_probe) for s in specs]
    extracted = {} if args.no_extracted else {c.name: add_lora(extract(base, c)).train() for c in configs}
    model = add_lora(base)
    model.train()
    net = ElasticSupernet(model)
    tok = AutoTokenizer.from_pretrained(path)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(tok.vocab_size, net.arch.vocab_size), (args.batch, args.seq), generator=g)
    runners: dict[tuple[str, str], tuple[torch.nn.Module, SubnetConfig | None]] = {}
    for c in configs:
        runners[("elastic", c.name)] = (model, c)
        if c.name in extracted:
            runners[("extracted", c.name)] = (extracted[c.name], None)
    opts = {key: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4)
            for key, (m, _) in runners.items()}

    def step(key: tuple[str, str]) -> tuple[float, float]:
        m, cfg = runners[key]
        if cfg is not None:
            net.set_active(cfg)
        t, c = time.perf_counter(), time.process_time()
        out = m(input_ids=ids, labels=ids) if decoder else m(input_ids=ids)
        loss = out.loss if decoder else out.last_hidden_state.pow(2).mean()
        loss.backward()
        opts[key].step()
        opts[key].zero_grad(set_to_none=True)
        return time.perf_counter() - t, time.process_time() - c

    for key in runners:  # warm-up
        step(key)
    wall: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        for key in runners:
            w, c = step(key)
            wall[key].append(w)
            cpu[key].append(c)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    full_name = SubnetConfig.full(net.arch).name
    ref = ("elastic", full_name) if ("elastic", full_name) in runners else next(iter(runners))
    full_wall, full_cpu = statistics.median(wall[ref]), statistics.median(cpu[ref])
    rows = []
    for (mode, name), _ in runners.items():
        cfg = next(c for c in configs if c.name == name)
        w, c = statistics.median(wall[(mode, name)]), statistics.median(cpu[(mode, name)])
        rows.append({"subnet": name, "mode": mode, "param_fraction": round(cfg.param_fraction(net.arch), 3),
                     "step_s": round(w, 3), "cpu_s": round(c, 3),
                     "wall_vs_full": round(w / full_wall, 3), "cpu_vs_full": round(c / full_cpu, 3)})
    print(markdown_table(rows))
    out = Path(args.out or f"benchmarks/results/mlfs_step_cost_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + " ".join(["benchmarks/mlfs_step_cost.py", *sys.argv[1:]]),
              "settings": {"batch": args.batch, "seq": args.seq, "rounds": args.rounds,
                           "threads": torch.get_num_threads(), "lora_rank": 8},
              "note": "one LoRA step (forward + backward + AdamW) per sub-network, interleaved rounds in one "
                      "process, median; 'vs_full' = ratio to the elastic full model; shared 2-core machine: "
                      "compare ratios only (cpu_s = process CPU time, steadier under load)",
              "rows": rows, "subnets": {c.name: c.to_dict() for c in configs}}
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
