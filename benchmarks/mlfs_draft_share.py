"""What weighting the MLFS sandwich toward speculative drafts does: the same decoder MLFS run with
`draft_share = 0` (the plain sandwich rule) and with `draft_share = S`, the drafts being depth
prefixes of the full model (its first D layers at full widths, so they share the target's KV cache
in the engine). Both runs draw the same batches; the drafts are added to the palette of both, and
every palette member is evaluated the same way as `mlfs-edge eval`: held-out perplexity, and its
greedy acceptance rate as a draft for that run's full model on the held-out news text and on a
second corpus (Hamlet).

    .venv/bin/python benchmarks/mlfs_draft_share.py --config configs/mlfs_smollm2_news.toml --draft-depths 8 --share 0.5

Writes benchmarks/results/mlfs_draft_share.json (with the command). A finished run of the same
config is reused, not trained again, so an interrupted invocation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def prefix_draft(arch: Any, depth: int) -> str:
    """The first `depth` layers of the full model at full widths, as a SubnetConfig JSON spec."""
    from mlfs_edge.config import SubnetConfig

    full = SubnetConfig.full(arch)
    if not 1 <= depth < arch.num_layers:
        raise SystemExit(f"--draft-depths: {depth} is not between 1 and {arch.num_layers - 1}")
    return SubnetConfig(full.layers[:depth], full.heads[:depth], full.mlp[:depth]).to_json()


def train_variant(cfg: Any, share: float, out: str) -> dict[str, Any]:
    from mlfs_edge.train.mlfs import finished_run, train_mlfs

    run_cfg = replace(cfg, draft_share=share, out=out).validate()
    summary = finished_run(out, run_cfg)
    if summary is not None:
        print(f"draft_share = {share:g}: reusing the finished run {out}")
        return summary
    print(f"draft_share = {share:g}: training {out}")
    return train_mlfs(run_cfg, resume=True)  # continues an interrupted run from its checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mlfs_smollm2_news.toml", help="decoder MLFS training config (TOML)")
    p.add_argument("--draft-depths", type=int, nargs="+", default=[8],
                   help="drafts: the full model's first D layers (default: 8)")
    p.add_argument("--share", type=float, default=0.5,
                   help="draft_share of the weighted run: the probability that a random sandwich slot is a draft")
    p.add_argument("--runs", default="runs/draft_share", help="folder for the two training runs")
    p.add_argument("--json", default=str(RESULTS / "mlfs_draft_share.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from transformers import AutoConfig

    from mlfs_edge.assets import resolve_model_path
    from mlfs_edge.config import ArchSpec
    from mlfs_edge.data import load_lm_text, load_text
    from mlfs_edge.eval.palette_lm import evaluate_lm_palette
    from mlfs_edge.report import markdown_table
    from mlfs_edge.train.mlfs import MLFSConfig
    from mlfs_edge.train.run_folder import SUPERNET_DIR

    cfg = MLFSConfig.from_toml(args.config)
    if cfg.resolved_task() != "causal_lm":
        raise SystemExit(f"{args.config} is not a causal-LM config: drafts are for decoders")
    arch = ArchSpec.from_hf_config(AutoConfig.from_pretrained(resolve_model_path(cfg.model)))
    drafts = tuple(prefix_draft(arch, d) for d in args.draft_depths)
    cfg = replace(cfg, drafts=drafts, palette=(*cfg.palette, *drafts))
    corpus = load_lm_text(cfg.data, cfg.text_column)
    second = "hamlet" if cfg.data != "hamlet" else "news"
    variants: dict[str, Any] = {}
    for share in sorted({0.0, args.share}):
        out = f"{args.runs}/share{share:g}"
        summary = train_variant(cfg, share, out)
        result = evaluate_lm_palette(Path(out) / SUPERNET_DIR, corpus.test, list(cfg.palette), cfg.block_size,
                                     cfg.max_eval_tokens, draft_texts={second: load_text(second).test})
        variants[f"{share:g}"] = {"draft_share": share, "out": out, "mlfs_wall_s": summary["mlfs_wall_s"],
                                  "teacher_perplexity": result["teacher_perplexity"], "rows": result["rows"]}
    base, weighted = variants["0"], variants[f"{args.share:g}"]
    draft_names = {json.dumps(json.loads(d)) for d in drafts}
    rows = []
    for a, b in zip(base["rows"], weighted["rows"], strict=True):
        rows.append({"subnet": a["name"], "is_draft": json.dumps(a["subnet"]) in draft_names,
                     "param_fraction": a["param_fraction"],
                     "perplexity_share0": a["perplexity"], "perplexity_weighted": b["perplexity"],
                     "perplexity_no_mlfs": a["perplexity_no_mlfs"],
                     "acceptance_share0": a["draft_acceptance"], "acceptance_weighted": b["draft_acceptance"],
                     f"acceptance_{second}_share0": a[f"draft_acceptance_{second}"],
                     f"acceptance_{second}_weighted": b[f"draft_acceptance_{second}"]})
    s = f"{args.share:g}"
    print(markdown_table([{
        "sub-network": r["subnet"] + (" (draft)" if r["is_draft"] else ""),
        "fraction": f"{100 * r['param_fraction']:.1f}%",
        "ppl share 0": f"{r['perplexity_share0']:.2f}", f"ppl share {s}": f"{r['perplexity_weighted']:.2f}",
        f"accept {cfg.data} 0 / {s}": f"{100 * r['acceptance_share0']:.1f} / {100 * r['acceptance_weighted']:.1f}%",
        f"accept {second} 0 / {s}":
            f"{100 * r[f'acceptance_{second}_share0']:.1f} / {100 * r[f'acceptance_{second}_weighted']:.1f}%",
    } for r in rows]))
    record = {"command": shlex.join(["python", "benchmarks/mlfs_draft_share.py", *sys.argv[1:]]),
              "config": args.config, "drafts": [json.loads(d) for d in drafts], "draft_share": args.share,
              "data": cfg.data, "second_corpus": second, "steps": sum(st.steps for st in cfg.stages),
              "eval_tokens": cfg.max_eval_tokens, "rows": rows, "variants": variants}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
