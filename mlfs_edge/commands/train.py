"""mlfs-edge train: MLFS supernet training from a TOML config."""

from __future__ import annotations

import argparse
import shlex

from mlfs_edge.commands._common import add_seed_args

ORDER = 40


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="MLFS: train one supernet (frozen teacher + shared LoRA) for a whole palette",
        description="Multistage low-rank fine-tuning of a super-transformer (Kundu et al. 2024). Stage 0 is "
                    "the fine-tuned teacher (reused when the config names one or <out>/teacher exists); "
                    "stage 1 trains shared LoRA adapters for sub-networks of different widths at full "
                    "depth, stage 2 for widths and depths. Writes into the run folder <out>: run_config.json "
                    "(the resolved config: model, data, columns, palette, seed — every later command reads it), "
                    "supernet/ (a Hugging Face folder every sub-network is sliced from), mlfs_train.json and "
                    "checkpoints (checkpoint.safetensors + a JSON index: data, never code). With [lora] "
                    "elastic_ranks = [2, 4] the adapter rank is sampled too, and eval/slice/pack take --rank / "
                    "--lora-rank afterwards.",
        epilog="Examples: mlfs-edge train --config configs/mlfs_minilm_rt.toml  |  mlfs-edge train --config "
               "configs/mlfs_minilm_rt.toml --data my.csv --text-column review --label-column sentiment --out "
               "runs/mine  |  mlfs-edge train --resume runs/mine (continue an interrupted run, bit-for-bit). "
               "Then: mlfs-edge eval <out>. Several processes (DDP; gloo on CPU): accelerate launch --multi_gpu "
               "--num_processes 2 -m mlfs_edge.cli train --config ...  |  mlfs-edge train --config "
               "configs/mlfs_minilm_rt.toml --seeds 0,1,2 (then `mlfs-edge eval --config ... --seeds 0,1,2`)")
    p.add_argument("--config", default=None,
                   help="training config (TOML), e.g. configs/mlfs_minilm_rt.toml (not needed with --resume RUN)")
    p.add_argument("--quick", action="store_true", help="the config's [quick] smoke-test variant (minutes)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                   help="continue from the run's checkpoint.safetensors (bit-for-bit); with a run folder, its "
                        "recorded config is used")
    p.add_argument("--data", default=None, metavar="NAME|PATH",
                   help="override the config's dataset: a bundled name or a .csv/.jsonl/.parquet file "
                        "(causal_lm: news, hamlet or a .txt/.jsonl file)")
    p.add_argument("--text-column", default=None, help="text column of a --data file (default: the config's)")
    p.add_argument("--label-column", default=None, help="label column of a --data file (default: the config's)")
    p.add_argument("--model", default=None, help="override the config's model (minilm, smollm2 or a folder)")
    p.add_argument("--out", default=None, help="override the config's output folder (the run folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_seed_args(p, "train")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mlfs_edge.train.mlfs import MLFSConfig, is_main_process, train_mlfs
    from mlfs_edge.train.run_folder import open_run

    overrides = {"data": args.data, "text_column": args.text_column, "label_column": args.label_column,
                 "model": args.model, "out": args.out}
    if isinstance(args.resume, str):  # --resume RUN: the run's own config
        if args.config or any(v is not None for v in overrides.values()):
            raise ValueError("--resume RUN continues that run with its recorded config: drop --config and the "
                             "overrides (or use --config ... --resume without a folder)")
        cfg = open_run(args.resume).config
    elif args.config:
        cfg = MLFSConfig.from_toml(args.config, quick=args.quick, **overrides)
    else:
        raise ValueError("give --config FILE (e.g. configs/mlfs_minilm_rt.toml), or --resume RUN to continue a run")
    cfg = replace(cfg, out=str(cfg.out))
    if args.seeds is not None:
        if args.resume:
            raise ValueError("--seeds resumes an interrupted seed by itself: drop --resume")
        return train_seeds(args, cfg)
    if args.teacher_per_seed:
        raise ValueError("--teacher-per-seed goes with --seeds")
    summary = train_mlfs(cfg, resume=bool(args.resume), progress=not args.no_progress,
                         command=shlex.join(["mlfs-edge", *args.argv]))
    if not is_main_process():  # under `accelerate launch`: the summary and next steps once, from the main process
        return 0
    teacher_s = summary["full_finetune_wall_s"]  # None for causal_lm: the pretrained LM is the teacher
    teacher = f"teacher fine-tune: {teacher_s:.0f} s" if teacher_s is not None else f"teacher: {summary['teacher']}"
    augmented = f" + teacher-labelled {cfg.augment} text (augment_ratio {cfg.augment_ratio:g})" \
        if cfg.augment != "none" else ""
    print(f"\nsupernet written to {cfg.out}/supernet: {summary['steps']} steps in {summary['mlfs_wall_s']:.0f} s "
          f"({teacher}); trainable {100 * summary['trainable_fraction']:.2f} % of the parameters; trained on "
          f"{cfg.data}{augmented}; the run's config is in {cfg.out}/run_config.json.")
    print(next_steps(cfg.out, summary["task"], summary["search_space"]))
    return 0


def train_seeds(args: argparse.Namespace, cfg) -> int:  # noqa: ANN001
    """--seeds: each seed's run trained, resumed or reused (`train.mlfs.train_seed`)."""
    from mlfs_edge.eval.seeds import parse_seeds, teacher_note
    from mlfs_edge.train.mlfs import train_seed

    seeds = parse_seeds(args.seeds)
    shared = not args.teacher_per_seed
    print(f"[train] {len(seeds)} seeds ({teacher_note(shared, cfg.resolved_task())})")
    command = shlex.join(["mlfs-edge", *args.argv])
    for i, seed in enumerate(seeds):
        run_cfg, summary, how = train_seed(cfg, seed, shared, progress=not args.no_progress, command=command)
        print(f"[train] seed {seed} ({i + 1}/{len(seeds)}): {run_cfg.out} {how} ({summary['steps']} steps, "
              f"{summary['mlfs_wall_s']:.0f} s of MLFS training)")
    print(f"Next: mlfs-edge eval {shlex.quote(cfg.out)} --seeds {args.seeds}"
          f"{' --teacher-per-seed' if args.teacher_per_seed else ''}   # mean ± sd per sub-network")
    return 0


def next_steps(run: str, task: str, space: dict) -> str:
    """The commands that make sense after this run: each takes the run folder, and with it its data."""
    out = shlex.quote(str(run))
    mid = f"depth={space['depths'][len(space['depths']) // 2]},heads={space['heads'][len(space['heads']) // 2]}," \
          f"mlp={space['mlp'][len(space['mlp']) // 2]}"
    what = "perplexity" if task == "causal_lm" else "accuracy"
    lines = [f"  mlfs-edge eval {out}                      # the palette: {what} vs size, MLFS vs sliced teacher",
             f"  mlfs-edge slice {out} --subnet {mid} --out {shlex.quote(str(run) + '/slice')}   "
             "# one sub-network as a standalone HF model"]
    if task != "causal_lm":
        lines += [f"  mlfs-edge pack {out} --dtype int8           # one .mlfs file for the native engine",
                  f"  mlfs-edge run {out} --text 'some text' --budget-ms 5   # the engine picks a sub-network",
                  f"  mlfs-edge compare --model {out} --quick     # int8 vs fp16 vs fp32 across backends"]
    return "Next:\n" + "\n".join(lines)
