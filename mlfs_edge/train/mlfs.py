"""MLFS: Multistage Low-rank Fine-tuning of Super-transformers (Kundu et al., arXiv 2404.01353).

Stage 0 is the fine-tuned teacher (`finetune.finetune_classifier`, or an existing one). Its weights
are importance-reordered and frozen; LoRA adapters on every projection are shared by all
sub-networks. For a decoder (``task = "causal_lm"``) there is no stage 0: the pretrained language
model itself is the frozen base, the data is text cut into blocks of ``block_size`` tokens, and every
loss below is taken per predicted token (logits [B, T, V] flattened to [B·(T−1), V], next-token
labels). Stage 1 samples widths at full depth, stage 2 widths and depths. Each step runs the
sandwich: the largest sub-network (cross-entropy on the labels; its logits and hidden states are the
distillation targets), the smallest, and k random ones, each with
``(n₁/nⱼ)^γ · [α·KL(largest ‖ sub) + (1−α)·CE + β·feature MSE]``.

Determinism: everything random in step s (its batch, its sub-networks, dropout) is drawn from
generators seeded by (seed, stage, step), so a run resumed from a checkpoint continues bit-for-bit.
Distribution: `accelerate` (DDP); each process takes its share of every batch.

The run is cut along its jobs, one module each; this one holds the loop and re-exports the others'
public names (``from mlfs_edge.train.mlfs import MLFSConfig, train_mlfs`` keeps working):

- `mlfs_config`: the config (`MLFSConfig`, `LossSettings`, `StageSettings`);
- `tasks`: the per-task set-up (`TaskSetup`; the stage-0 teacher, `ensure_teacher`);
- `objective`: the distillation objective (`SandwichObjective`);
- `sampling`: what a step draws (`sandwich`, `sandwich_ranks`, `batch_indices`, `lr_at`);
- `adapters`: LoRA state and merges across stages; `checkpoint`: the checkpoint file and resume;
- `run_folder`: the run folder's names and record.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig
from mlfs_edge.metrics import device_name
from mlfs_edge.supernet import ImportanceOrder, apply_order, reorder_by_importance
from mlfs_edge.supernet.lora import add_lora, trainable_report
from mlfs_edge.supernet.quantized import quantize_frozen_base
from mlfs_edge.train.adapters import lora_state, merge_and_reset_adapters, reapply_merged
from mlfs_edge.train.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_KEYS,
    find_checkpoint,
    load_checkpoint,
    resume_message,
    save_checkpoint,
)
from mlfs_edge.train.distill import gradient_scale
from mlfs_edge.train.mlfs_config import TASKS, LossSettings, MLFSConfig, StageSettings
from mlfs_edge.train.objective import SandwichObjective, lm_labels, token_rows
from mlfs_edge.train.run_folder import (
    RUN_CONFIG,
    SUMMARY,
    SUPERNET_DIR,
    config_differences,
    open_run,
    record_run,
    seed_config,
)
from mlfs_edge.train.sampling import batch_indices, lr_at, sandwich, sandwich_ranks
from mlfs_edge.train.tasks import (
    TaskSetup,
    calibration_batches,
    causal_lm_setup,
    classification_setup,
    ensure_teacher,
)

# The names this module offered before it was cut up, for the code that imports them from here.
__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_KEYS",
    "SUMMARY",
    "SUPERNET_DIR",
    "TASKS",
    "LossSettings",
    "MLFSConfig",
    "SandwichObjective",
    "StageSettings",
    "TaskSetup",
    "TrainState",
    "batch_indices",
    "calibration_batches",
    "ensure_teacher",
    "finished_run",
    "is_main_process",
    "lm_labels",
    "lora_state",
    "lr_at",
    "merge_and_reset_adapters",
    "resume_message",
    "sandwich",
    "sandwich_ranks",
    "save_supernet",
    "token_rows",
    "train_mlfs",
]


@dataclass
class TrainState:
    stage: int = 0
    step: int = 0  # step inside the stage
    global_step: int = 0
    wall_s: float = 0.0  # training time so far, summed over resumes
    history: list[dict[str, Any]] = field(default_factory=list)
    merged: list[dict[str, torch.Tensor]] = field(default_factory=list)
    cpu_s: float = 0.0  # process CPU time of training (the steadier measure on a shared machine)


def train_mlfs(cfg: MLFSConfig, resume: bool = False, progress: bool = True,
               stop_after: int | None = None, command: str = "") -> dict[str, Any]:
    """Run (or resume) all stages; returns the summary also written to <out>/mlfs_train.json.
    `command` (the command line that started it) is recorded in <out>/run_config.json.

    `stop_after` ends the run after that many global steps (with a checkpoint), as a kill would:
    tests use it to check that resuming continues bit-for-bit.
    """
    from accelerate import Accelerator

    from mlfs_edge.train.finetune import seed_everything

    cfg.validate()
    task = cfg.resolved_task()
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    # Read (and refuse a bad one) before any data, model or teacher work: a checkpoint is data, never code.
    found = find_checkpoint(out) if resume else None
    saved = load_checkpoint(found) if found is not None else None
    missing = sorted(CHECKPOINT_KEYS - set(saved)) if saved is not None else []
    if missing:
        raise ValueError(f"{found} lacks {', '.join(missing)}: it was not written by `mlfs-edge train`; delete it "
                         "to train from the start")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    setup = causal_lm_setup(cfg) if task == "causal_lm" else classification_setup(cfg, accelerator, progress)
    if accelerator.is_main_process:  # once the data loaded, before the first step: an interrupted run knows it too
        record_run(cfg, command)
    model, tokenizer = setup.model, setup.tokenizer

    seed_everything(cfg.seed)
    if accelerator.is_main_process and resume:
        print(resume_message(ckpt_path, saved, cfg.stages))
    if saved is not None:
        order = ImportanceOrder.from_dict(saved["order"])
        apply_order(model, order)
    else:
        calibration = setup.calibration(cfg.calibration_examples, cfg.batch_size) if cfg.importance == "activation" \
            else None
        order = reorder_by_importance(model.eval(), cfg.importance, calibration)
    arch = ArchSpec.from_hf_config(model.config)
    space = SearchSpace.from_dict(arch, cfg.search)
    # Sub-networks weighted into the sandwich's random slots: the drafts, or the palette.
    if cfg.palette_share > 0:
        members = (SubnetConfig.parse(spec, arch) for spec in cfg.palette)  # the largest runs every step anyway
        favoured = tuple(c for c in members if space.contains(c) and c != space.largest())
        share = cfg.palette_share
        if not favoured:
            raise ValueError("palette_share > 0 but no palette sub-network lies in the search space: list palette "
                             "members the [search] table can reach")
    else:
        favoured, share = tuple(SubnetConfig.parse(spec, arch) for spec in cfg.drafts), cfg.draft_share
    torch.manual_seed(cfg.seed)  # LoRA A initialisation
    model = add_lora(model, cfg.lora)
    state = TrainState()
    if saved is not None:
        params = dict(model.named_parameters())
        expected = {n: tuple(v.shape) for n, v in params.items() if v.requires_grad}
        got = {n: tuple(getattr(v, "shape", ())) for n, v in saved["adapters"].items()}
        if got != expected:
            differ = {n for n in got.keys() | expected.keys() if got.get(n) != expected.get(n)}
            raise ValueError(f"{ckpt_path} holds adapters of another model or LoRA setting ({len(differ)} of "
                             f"{len(expected)} differ from this config's, e.g. {min(differ)}): resume with the config "
                             "that wrote it, or delete it to train from the start")
        reapply_merged(model, saved["merged"])
        with torch.no_grad():
            for name, value in saved["adapters"].items():
                params[name].copy_(value)
        state = TrainState(saved["stage"], saved["step"], saved["global_step"], saved["wall_s"],
                           saved["history"], saved["merged"], saved.get("cpu_s", 0.0))
    report = trainable_report(model)  # counted before quantization packs the base weights
    quantized = quantize_frozen_base(model, cfg.base_quant)
    n_largest = space.largest().layer_params(arch)

    objective = SandwichObjective(model, cfg.loss, cfg.seed, causal_lm=task == "causal_lm")
    model.train()

    elastic = f" (elastic: {', '.join(map(str, cfg.lora.ranks))})" if cfg.lora.elastic_ranks else ""
    if accelerator.is_main_process:
        print(f"supernet: {arch.family} ({task}, {setup.n_train} training examples), {arch.num_layers} layers; "
              f"LoRA rank {cfg.lora.rank}{elastic}: "
              f"{report['trainable']:,} trainable of {report['total']:,} parameters "
              f"({100 * report['fraction']:.2f} %); frozen base {cfg.base_quant if quantized else 'fp32'}; "
              f"search space {space.to_dict()}")

    def checkpoint(optimizer: torch.optim.Optimizer) -> None:
        if accelerator.is_main_process:
            save_checkpoint(ckpt_path, {
                "config": cfg.to_dict(), "order": order.to_dict(),
                "stage": state.stage, "step": state.step, "global_step": state.global_step,
                "wall_s": state.wall_s, "cpu_s": state.cpu_s, "history": state.history, "merged": state.merged,
                "adapters": lora_state(model), "optimizer": optimizer.state_dict()})
        accelerator.wait_for_everyone()

    world, rank = accelerator.num_processes, accelerator.process_index
    stopped = False
    while state.stage < len(cfg.stages) and not stopped:
        stage = cfg.stages[state.stage]
        if stage.fresh_adapters and state.stage > 0 and state.step == 0:
            state.merged.append(merge_and_reset_adapters(model, cfg.seed + state.stage))
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=stage.lr, weight_decay=0.0)
        if saved is not None and saved["stage"] == state.stage and saved["step"] > 0:
            optimizer.load_state_dict(saved["optimizer"])
        wrapped, optimizer = accelerator.prepare(objective, optimizer)
        bar = tqdm(total=stage.steps, initial=state.step, desc=f"stage {state.stage + 1} ({stage.name})",
                   unit="step", disable=not (progress and accelerator.is_local_main_process))
        t0, c0 = time.perf_counter(), time.process_time()
        while state.step < stage.steps:
            rng = random.Random(f"{cfg.seed}/{state.stage}/{state.step}")
            torch.manual_seed(cfg.seed * 7919 + state.global_step)  # dropout
            subnets = sandwich(space, rng, stage.vary_depth, stage.k_random, favoured, share, cfg.sampling == "params")
            ranks = sandwich_ranks(cfg.lora.ranks, rng, stage.k_random)
            scales = [gradient_scale(n_largest, c.layer_params(arch), cfg.loss.gamma) for c in subnets]
            idx = batch_indices(state.global_step, cfg.batch_size, setup.lengths, cfg.seed,
                                cfg.group_by_length)[rank::world]
            batch, labels = setup.batch(idx)
            # the objective lives on the accelerator's device (a CUDA GPU when there is one)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            labels = labels.to(accelerator.device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state.step, stage)
            total, losses = wrapped(batch, labels, subnets, scales, ranks)
            accelerator.backward(total)
            accelerator.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.global_step += 1
            row = {"stage": state.stage, "step": state.step, "largest": float(losses[0]),
                   "smallest": float(losses[1]), "total": float(total.detach())}
            if ranks is not None:
                row["ranks"] = ranks
            state.history.append(row)
            bar.set_postfix(largest=f"{row['largest']:.3f}", smallest=f"{row['smallest']:.3f}")
            bar.update()
            now, cpu_now = time.perf_counter(), time.process_time()
            state.wall_s += now - t0
            state.cpu_s += cpu_now - c0
            t0, c0 = now, cpu_now
            if stop_after is not None and state.global_step >= stop_after:
                stopped = True
                break
            if state.step % cfg.checkpoint_every == 0 and state.step < stage.steps:
                checkpoint(optimizer)
        bar.close()
        if not stopped:
            state.stage += 1
            state.step = 0
        saved = None
        checkpoint(optimizer)
        objective = accelerator.unwrap_model(wrapped)
        accelerator.free_memory()
    if stopped:
        return {"stopped_at": state.global_step}

    record = setup.teacher_record
    summary = {
        "task": task, "teacher": setup.teacher, "teacher_accuracy": record.get("test_accuracy"),
        # causal_lm has no stage 0, so there is no full fine-tune to compare with (None)
        "full_finetune_wall_s": record["config"].get("train_s", record["wall_s"]) if record else None,
        "mlfs_wall_s": state.wall_s, "mlfs_cpu_s": state.cpu_s,
        "trainable_fraction": report["fraction"], "trainable_params": report["trainable"],
        "total_params": report["total"], "steps": state.global_step, "world_size": world,
        "distributed": accelerator.distributed_type.value, "device": device_name(accelerator.device),
        "base_quant": cfg.base_quant if quantized else "none",
        "search_space": space.to_dict(), "config": cfg.to_dict(), "history": state.history,
    }
    if accelerator.is_main_process:
        save_supernet(model, tokenizer, out / SUPERNET_DIR, order, summary)
        (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    return summary


def is_main_process() -> bool:
    """True in the one process that should print and write (under `accelerate launch`: rank 0; alone: always)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def finished_run(out: str | Path, cfg: MLFSConfig) -> dict[str, Any] | None:
    """The summary of a finished run in `out` trained with exactly `cfg`, else None (benchmarks use
    it to skip a training run an earlier invocation already did)."""
    path = Path(out) / SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    try:  # through from_dict: lists become tuples, and fields added since take their defaults
        same = MLFSConfig.from_dict(summary["config"]) == cfg
    except ValueError:
        return None
    return summary if same else None


def train_or_resume(cfg: MLFSConfig, progress: bool = True, command: str = "") -> tuple[dict[str, Any], str]:
    """Make sure the run in `cfg.out` is finished: reuse it when it already is, resume it from its
    checkpoint when it was interrupted, else train it. Returns (summary, what happened: "reused",
    "resumed" or "trained"). A folder holding a run of another config is an error, never overwritten."""
    out = Path(cfg.out)
    if (out / RUN_CONFIG).is_file() or (out / SUMMARY).is_file():
        run = open_run(out)
        diff = config_differences(cfg, run.config)
        if diff:
            raise ValueError(f"{out} holds a run of another config ({', '.join(diff[:4])} differ): delete it or "
                             "train elsewhere (--out)")
        if (out / SUMMARY).is_file():
            return run.summary(), "reused"
    resume = find_checkpoint(out) is not None
    summary = train_mlfs(cfg, resume=resume, progress=progress, command=command)
    return summary, "resumed" if resume else "trained"


def train_seed(cfg: MLFSConfig, seed: int, shared_teacher: bool = True, progress: bool = True,
               command: str = "") -> tuple[MLFSConfig, dict[str, Any], str]:
    """The run of `cfg` with `seed` (`run_folder.seed_config`), finished by `train_or_resume`; a shared
    stage-0 teacher is fine-tuned first, once, in the config's own folder. Returns (its config,
    its summary, what happened)."""
    run_cfg = seed_config(cfg, seed, shared_teacher)
    shared = run_cfg is not cfg and run_cfg.resolved_task() != "causal_lm" and run_cfg.teacher != cfg.teacher
    if shared and not (Path(run_cfg.teacher) / "mlfs_meta.json").is_file():
        from mlfs_edge.data import load_classification

        ensure_teacher(cfg, load_classification(cfg.data, cfg.text_column, cfg.label_column), progress)
    summary, how = train_or_resume(run_cfg, progress, command)
    return run_cfg, summary, how


def save_supernet(model: nn.Module, tokenizer, out_dir: Path, order: ImportanceOrder,  # noqa: ANN001
                  summary: dict[str, Any]) -> None:
    """The trained supernet as a plain HF folder: reordered teacher weights with the LoRA merged.

    Merging then slicing equals slicing then merging (prefix slices of W + s·B·A), so this folder
    holds every sub-network: `ElasticSupernet` / `extract` slice it, no peft needed. With elastic
    ranks the adapters are also kept unmerged (`lora.ADAPTERS_FILE`): `load_supernet(..., rank=r)` then removes
    their components beyond r.
    """
    from mlfs_edge.models import save_atomically
    from mlfs_edge.supernet.extract import merged_state_dict
    from mlfs_edge.supernet.lora import ADAPTERS_FILE, adapters_of, save_adapters

    plain = model.get_base_model()
    merged = merged_state_dict(model)
    clean = type(plain)(plain.config)
    clean.load_state_dict(merged, strict=True)
    meta = {"supernet": {"task": summary.get("task", "classification"),
                         "order": order.to_dict(), "search_space": summary["search_space"],
                         "teacher": summary["teacher"], "teacher_accuracy": summary["teacher_accuracy"],
                         "lora": summary["config"]["lora"]}}
    elastic = bool(summary["config"]["lora"].get("elastic_ranks"))
    adapters = adapters_of(model) if elastic else None
    save_atomically(clean, tokenizer, out_dir, meta,
                    extra=(lambda tmp: save_adapters(adapters, tmp / ADAPTERS_FILE)) if adapters is not None else None)
