"""Elastic LoRA rank: one MLFS run that also samples the adapters' rank, evaluated at every rank.

Trains the shipped config with `[lora] elastic_ranks` added (default 2 and 4 besides the config's
own rank — 8 when results/mlfs_elastic_rank.json was measured, 16 since: the largest sub-network
always trains at the full rank, the smallest at the lowest, the random ones at a random rank; same
teacher, batches and sub-network draws as the fixed-rank run),
then evaluates the palette at each rank (`mlfs-edge eval --rank R` does the same) next to the
config's own fixed-rank run. The rank matters where adapters stay unmerged (the engine's adapter
path, several tasks on one frozen base): the adapter parameters scale with it.

    .venv/bin/python benchmarks/mlfs_elastic_rank.py --config configs/mlfs_minilm_rt.toml

Needs the config's finished run (`mlfs-edge train --config ...`) for the fixed-rank column and its
teacher. Writes benchmarks/results/mlfs_elastic_rank.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mlfs_minilm_rt.toml", help="MLFS training config (TOML)")
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4], help="elastic ranks besides the config's rank")
    p.add_argument("--out", default="runs/elastic_rank", help="where the elastic-rank run is trained")
    p.add_argument("--json", default=str(RESULTS / "mlfs_elastic_rank.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.palette import evaluate_palette
    from mlfs_edge.report import markdown_table
    from mlfs_edge.train.mlfs import SUPERNET_DIR, MLFSConfig, finished_run, train_mlfs

    cfg = MLFSConfig.from_toml(args.config)
    fixed = finished_run(cfg.out, cfg)
    if fixed is None:
        raise SystemExit(f"no finished run of {args.config} in {cfg.out}: run `mlfs-edge train --config "
                         f"{args.config}` first (its teacher and its fixed-rank supernet are the baseline)")
    elastic_cfg = replace(cfg, lora=replace(cfg.lora, elastic_ranks=tuple(args.ranks)), out=args.out,
                          teacher=cfg.teacher or str(Path(cfg.out) / "teacher"))
    elastic = finished_run(elastic_cfg.out, elastic_cfg)
    if elastic is None:
        print(f"training {elastic_cfg.out} with LoRA ranks {list(elastic_cfg.lora.ranks)}")
        elastic = train_mlfs(elastic_cfg)
    else:
        print(f"reusing the finished elastic-rank run {elastic_cfg.out}")
    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    palette = list(cfg.palette)
    columns = {f"fixed r{cfg.lora.rank}": evaluate_palette(Path(cfg.out) / SUPERNET_DIR, data, palette,
                                                           cfg.max_eval_examples)}
    for rank in elastic_cfg.lora.ranks:
        columns[f"elastic r{rank}"] = evaluate_palette(Path(elastic_cfg.out) / SUPERNET_DIR, data, palette,
                                                       cfg.max_eval_examples, rank=rank)
    first = next(iter(columns.values()))
    rows = [{"subnet": r["name"], "param_fraction": r["param_fraction"],
             **{name: col["rows"][i]["accuracy"] for name, col in columns.items()}}
            for i, r in enumerate(first["rows"])]
    per_rank = fixed["trainable_params"] / cfg.lora.rank  # adapter parameters per unit of rank
    adapter_params = {f"r{r}": int(per_rank * r) for r in elastic_cfg.lora.ranks}
    print(markdown_table([{"sub-network": r["subnet"], "fraction": f"{100 * r['param_fraction']:.1f}%",
                           **{k: f"{100 * v:.2f}%" for k, v in r.items() if k not in ("subnet", "param_fraction")}}
                          for r in rows]))
    print(f"teacher {100 * first['teacher_accuracy']:.2f}%; adapter parameters {adapter_params}; "
          f"MLFS wall: fixed {fixed['mlfs_wall_s']:.0f} s, elastic {elastic['mlfs_wall_s']:.0f} s")
    record = {"command": shlex.join(["python", "benchmarks/mlfs_elastic_rank.py", *sys.argv[1:]]),
              "config": args.config, "ranks": list(elastic_cfg.lora.ranks),
              "teacher_accuracy": first["teacher_accuracy"], "test_examples": first["test_examples"],
              "adapter_params": adapter_params,
              "mlfs_wall_s": {"fixed": fixed["mlfs_wall_s"], "elastic": elastic["mlfs_wall_s"]},
              "rows": rows}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
