"""mlfs-edge train: MLFS supernet training from a TOML config."""

from __future__ import annotations

import argparse

ORDER = 40


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="MLFS: train one supernet (frozen teacher + shared LoRA) for a whole palette",
        description="Multistage low-rank fine-tuning of a super-transformer (Kundu et al. 2024). Stage 0 is "
                    "the fine-tuned teacher (reused when the config names one or <out>/teacher exists); "
                    "stage 1 trains shared LoRA adapters for sub-networks of different widths at full "
                    "depth, stage 2 for widths and depths. Writes <out>/supernet (a Hugging Face folder every "
                    "sub-network is sliced from), <out>/mlfs_train.json and checkpoints in "
                    "<out>/checkpoint.safetensors. "
                    "With [lora] elastic_ranks = [2, 4] the adapter rank is sampled too, and eval/slice/pack "
                    "take --rank / --lora-rank afterwards.",
        epilog="Example: mlfs-edge train --config configs/mlfs_minilm_rt.toml   (then: mlfs-edge eval, "
               "mlfs-edge slice). Several processes (DDP; gloo on CPU): accelerate launch --multi_gpu "
               "--num_processes 2 -m mlfs_edge.cli train --config ...")
    p.add_argument("--config", required=True, help="training config (TOML), e.g. configs/mlfs_minilm_rt.toml")
    p.add_argument("--quick", action="store_true", help="the config's [quick] smoke-test variant (minutes)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.safetensors (bit-for-bit)")
    p.add_argument("--data", default=None, metavar="NAME|PATH",
                   help="override the config's dataset (causal_lm: news, hamlet or a .txt/.jsonl file)")
    p.add_argument("--model", default=None, help="override the config's model (minilm, smollm2 or a folder)")
    p.add_argument("--out", default=None, help="override the config's output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlfs_edge.train.mlfs import MLFSConfig, is_main_process, train_mlfs

    cfg = MLFSConfig.from_toml(args.config, quick=args.quick, data=args.data, model=args.model, out=args.out)
    summary = train_mlfs(cfg, resume=args.resume, progress=not args.no_progress)
    if not is_main_process():  # under `accelerate launch`: the summary and next steps once, from the main process
        return 0
    teacher_s = summary["full_finetune_wall_s"]  # None for causal_lm: the pretrained LM is the teacher
    teacher = f"teacher fine-tune: {teacher_s:.0f} s" if teacher_s is not None else f"teacher: {summary['teacher']}"
    print(f"\nsupernet written to {cfg.out}/supernet: {summary['steps']} steps in {summary['mlfs_wall_s']:.0f} s "
          f"({teacher}); trainable "
          f"{100 * summary['trainable_fraction']:.2f} % of the parameters. Next: mlfs-edge eval --config {args.config}"
          f"{' --quick' if args.quick else ''}")
    return 0
