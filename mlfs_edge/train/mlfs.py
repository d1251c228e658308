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
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib
import torch
from torch import nn
from tqdm.auto import tqdm

from mlfs_edge.assets import resolve_model_path
from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig
from mlfs_edge.models import load_causal_lm
from mlfs_edge.supernet import ElasticSupernet, ImportanceOrder, apply_order, reorder_by_importance
from mlfs_edge.supernet.lora import LoraSettings, add_lora, trainable_report
from mlfs_edge.supernet.quantized import quantize_frozen_base
from mlfs_edge.train.checkpoint import CHECKPOINT, find_checkpoint, load_checkpoint, save_checkpoint
from mlfs_edge.train.distill import feature_mse, gradient_scale, random_projection, subnet_loss
from mlfs_edge.train.finetune import FinetuneConfig

SUPERNET_DIR = "supernet"
CHECKPOINT_KEYS = frozenset({"config", "order", "stage", "step", "global_step", "wall_s", "history", "merged",
                             "adapters", "optimizer"})
SUMMARY = "mlfs_train.json"


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSettings:
    alpha: float = 0.9  # weight of KD from the largest network (paper default)
    beta: float = 0.1  # weight of feature distillation (paper default)
    temperature: float = 1.0
    gamma: float = 0.5  # gradient scaling exponent; 0 switches it off
    feature_dim: int = 64  # hidden states are compared after a fixed projection to this many dims

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"loss.alpha must lie in [0, 1], got {self.alpha}")
        if self.beta < 0 or self.temperature <= 0 or self.gamma < 0:
            raise ValueError("loss.beta and loss.gamma must be ≥ 0 and loss.temperature > 0")


@dataclass(frozen=True)
class StageSettings:
    name: str
    vary_depth: bool  # stage 1: False (widths at full depth); stage 2: True
    steps: int
    lr: float = 1e-3
    k_random: int = 1  # random sub-networks per step, besides the largest and the smallest
    warmup_ratio: float = 0.06
    fresh_adapters: bool = False  # merge the previous stage's adapters into the base, start new ones

    def __post_init__(self) -> None:
        if self.steps < 1 or self.k_random < 0 or self.lr <= 0:
            raise ValueError(f"stage {self.name!r}: steps ≥ 1, k_random ≥ 0 and lr > 0 are required")


TASKS = ("classification", "causal_lm")
_DECODER_TYPES = ("llama", "mistral", "qwen2", "gpt2")


@dataclass(frozen=True)
class MLFSConfig:
    model: str = "minilm"  # "minilm", "smollm2" or a Hugging Face model folder
    task: str = ""  # "classification", "causal_lm" or "" (from the model: a decoder LM → causal_lm)
    data: str = "rotten_tomatoes"  # bundled dataset name or a .csv/.jsonl/.parquet file (causal_lm: news,
    #                                hamlet or a .txt/.jsonl text file)
    text_column: str = "text"
    label_column: str = "label"
    out: str = "runs/mlfs"
    teacher: str = ""  # an existing fine-tuned teacher folder; "" = <out>/teacher (fine-tuned if absent)
    teacher_finetune: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig fields for stage 0
    importance: str = "weight"  # "weight" (L2 norms) or "activation" (mean |activation|, Minitron-style)
    calibration_examples: int = 256  # importance = "activation": training sentences / blocks it is measured on
    base_quant: str = "none"  # frozen base stored by bitsandbytes: "none", "int8" or "nf4" (QLoRA-style)
    search: dict[str, Any] = field(default_factory=dict)  # SearchSpace fields: depths, heads, mlp, ...
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    stages: tuple[StageSettings, ...] = ()
    batch_size: int = 32
    max_length: int = 64
    max_train_examples: int | None = None  # causal_lm: training blocks
    max_eval_examples: int | None = None
    block_size: int = 128  # causal_lm: tokens per training block and per perplexity block
    max_eval_tokens: int | None = None  # causal_lm: held-out tokens for perplexity (None: the whole test split)
    seed: int = 0
    checkpoint_every: int = 50
    group_by_length: bool = True  # batches of similar length (as the teacher's): less padding per step
    palette: tuple[str, ...] = ("full",)  # sub-networks `mlfs-edge eval` reports, SubnetConfig.parse specs

    @classmethod
    def from_toml(cls, path: str | Path, quick: bool = False, **overrides: Any) -> MLFSConfig:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"training config {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
        return cls.from_dict(raw, quick=quick, **overrides)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], quick: bool = False, **overrides: Any) -> MLFSConfig:
        raw = dict(raw)
        quick_table = raw.pop("quick", {})
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))}, and a [quick] table)")
        kw = dict(raw)
        kw["lora"] = _make(LoraSettings, raw.get("lora", {}), "lora")
        kw["loss"] = _make(LossSettings, raw.get("loss", {}), "loss")
        kw["stages"] = tuple(_make(StageSettings, s, "stages") for s in raw.get("stages", []))
        kw["palette"] = tuple(raw.get("palette", ("full",)))
        cfg = cls(**kw)
        if quick:
            cfg = cfg.quick(quick_table)
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if not cfg.stages:
            raise ValueError("the training config needs at least one [[stages]] table")
        FinetuneConfig(**cfg.teacher_finetune)  # unknown teacher_finetune keys fail here, early
        return cfg.validate()

    def validate(self) -> MLFSConfig:
        """Checks across fields (also run by `train_mlfs`, for configs built with `replace`)."""
        if self.base_quant not in ("none", "int8", "nf4"):
            raise ValueError(f"base_quant must be none, int8 or nf4, got {self.base_quant!r}")
        if self.base_quant != "none" and any(s.fresh_adapters for s in self.stages):
            raise ValueError("fresh_adapters merges adapters into the base: it needs base_quant = \"none\" "
                             "(set fresh_adapters = false in every [[stages]] table to train on a quantized base)")
        if self.task not in ("", *TASKS):
            raise ValueError(f"task must be {' or '.join(TASKS)} (or left out), got {self.task!r}")
        if self.block_size < 2 or self.calibration_examples < 1:
            raise ValueError("block_size must be ≥ 2 tokens and calibration_examples ≥ 1")
        return self

    def resolved_task(self) -> str:
        """The task, inferred from the model when the config leaves it out: a causal LM (its config
        names a *ForCausalLM architecture, or a decoder family) trains as causal_lm, anything else
        as classification. Reads only config.json; the bundled names need no lookup."""
        if self.task:
            return self.task
        if self.model in ("minilm", "smollm2"):
            return "causal_lm" if self.model == "smollm2" else "classification"
        config_path = Path(self.model) / "config.json"
        if not config_path.is_file():
            raise ValueError(f"model {self.model!r}: use 'minilm', 'smollm2' or a Hugging Face model folder "
                             "with config.json")
        hf = json.loads(config_path.read_text())
        archs = hf.get("architectures") or []
        if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            return "causal_lm"
        if archs:
            return "classification"
        return "causal_lm" if hf.get("model_type") in _DECODER_TYPES else "classification"

    def quick(self, table: dict[str, Any]) -> MLFSConfig:
        """The smoke-test version: `[quick]` may set steps (per stage), max_train_examples,
        max_eval_examples, max_eval_tokens, teacher_epochs, checkpoint_every and out."""
        allowed = {"steps", "max_train_examples", "max_eval_examples", "max_eval_tokens", "teacher_epochs",
                   "checkpoint_every", "out"}
        unknown = set(table) - allowed
        if unknown:
            raise ValueError(f"unknown [quick] keys: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(allowed))})")
        teacher = dict(self.teacher_finetune)
        if "teacher_epochs" in table:
            teacher["epochs"] = table["teacher_epochs"]
        if "max_train_examples" in table:
            teacher["max_train_examples"] = table["max_train_examples"]
        stages = tuple(replace(s, steps=table.get("steps", s.steps)) for s in self.stages)
        return replace(self, stages=stages, teacher_finetune=teacher,
                       max_train_examples=table.get("max_train_examples", self.max_train_examples),
                       max_eval_examples=table.get("max_eval_examples", self.max_eval_examples),
                       max_eval_tokens=table.get("max_eval_tokens", self.max_eval_tokens),
                       checkpoint_every=table.get("checkpoint_every", self.checkpoint_every),
                       out=table.get("out", self.out + "_quick"), teacher="" if "out" in table else self.teacher)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _make(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"[{where}] must be a table, got {values!r}")
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"[{where}]: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    return cls(**values)


# --- stage 0: the teacher -------------------------------------------------------------------------


def ensure_teacher(cfg: MLFSConfig, data, progress: bool = True) -> tuple[Path, dict[str, Any]]:  # noqa: ANN001
    """The fine-tuned teacher folder and its fine-tune record (trains it when absent)."""
    from mlfs_edge.train.finetune import finetune_classifier

    teacher = Path(cfg.teacher) if cfg.teacher else Path(cfg.out) / "teacher"
    meta_path = teacher / "mlfs_meta.json"
    if not meta_path.is_file():
        if cfg.teacher:
            raise ValueError(f"teacher {teacher} has no mlfs_meta.json: give a folder written by "
                             "`mlfs-edge demo`/stage 0, or leave `teacher` empty to fine-tune one")
        ft = FinetuneConfig(**{"max_train_examples": cfg.max_train_examples,
                               "max_eval_examples": cfg.max_eval_examples, **cfg.teacher_finetune})
        finetune_classifier(resolve_model_path(cfg.model), data, teacher, ft, progress=progress)
    return teacher, json.loads(meta_path.read_text())["finetune"]


def calibration_batches(tokenizer, texts: list[str], cfg: MLFSConfig) -> list[dict[str, torch.Tensor]] | None:  # noqa: ANN001
    """Inputs for activation importance: the first `calibration_examples` training sentences, in
    batches (None for weight importance, which needs no data)."""
    if cfg.importance != "activation":
        return None
    texts = texts[:cfg.calibration_examples]
    return [dict(tokenizer(texts[i:i + 32], padding=True, truncation=True, max_length=cfg.max_length,
                           return_tensors="pt")) for i in range(0, len(texts), 32)]


# --- the sandwich step ----------------------------------------------------------------------------


def _hidden_for(layers: tuple[int, ...], hidden_states: tuple[torch.Tensor, ...]) -> dict[int, torch.Tensor]:
    """Map original layer index → that layer's output (hidden_states[0] is the embedding output)."""
    return {layer: h for layer, h in zip(layers, hidden_states[1:], strict=True)}


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              ignore_index: int = -100) -> torch.Tensor:
    """Next-token targets of a causal LM batch, flattened to [B·(T−1)] to match `token_rows`;
    positions whose target is padding get `ignore_index`."""
    labels = input_ids[:, 1:].clone()
    if attention_mask is not None:
        labels[attention_mask[:, 1:] == 0] = ignore_index
    return labels.reshape(-1)


def token_rows(logits: torch.Tensor) -> torch.Tensor:
    """[B, T, V] → [B·(T−1), V]: position t's logits predict token t+1 (the last predicts nothing)."""
    return logits[:, :-1].reshape(-1, logits.shape[-1])


class SandwichObjective(nn.Module):
    """One training step's loss over a list of sub-networks, largest first, in ONE forward call
    (so DDP sees one forward and one backward per step).

    Classification: logits [B, C], labels [B]. Causal LM (`causal_lm=True`): logits [B, T, V] are
    flattened by `token_rows`, labels come from `lm_labels`; KD and CE are then means over tokens."""

    def __init__(self, model: nn.Module, loss: LossSettings, seed: int, causal_lm: bool = False) -> None:
        super().__init__()
        self.model = model
        self.net = ElasticSupernet(model)
        self.settings = loss
        self.causal_lm = causal_lm
        self.register_buffer("projection", random_projection(self.net.arch.hidden, loss.feature_dim, seed),
                             persistent=False)

    def _rows(self, logits: torch.Tensor) -> torch.Tensor:
        return token_rows(logits) if self.causal_lm else logits

    def forward(self, batch: dict[str, torch.Tensor], labels: torch.Tensor, subnets: list[SubnetConfig],
                scales: list[float], ranks: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`ranks` (elastic LoRA rank): the adapter rank of each sub-network; None = full rank."""
        s = self.settings
        losses = []
        ranks = ranks or [None] * len(subnets)  # type: ignore[list-item]
        self.net.set_active(subnets[0])
        self.net.set_rank(ranks[0])
        out = self.model(**batch, output_hidden_states=s.beta > 0)
        logits = self._rows(out.logits)
        largest_loss = nn.functional.cross_entropy(logits.float(), labels, ignore_index=-100)
        losses.append(largest_loss)
        total = largest_loss * scales[0]
        teacher_logits = logits.detach()
        teacher_hidden = _hidden_for(subnets[0].layers, out.hidden_states) if s.beta > 0 else {}
        for cfg, scale, rank in zip(subnets[1:], scales[1:], ranks[1:], strict=True):
            self.net.set_active(cfg)
            self.net.set_rank(rank)
            out = self.model(**batch, output_hidden_states=s.beta > 0)
            feat = None
            if s.beta > 0:
                sub_hidden = _hidden_for(cfg.layers, out.hidden_states)
                shared = [i for i in cfg.layers if i in teacher_hidden]
                feat = feature_mse([sub_hidden[i] for i in shared], [teacher_hidden[i].detach() for i in shared],
                                   self.projection, batch.get("attention_mask"), normalize=self.causal_lm)
            loss = subnet_loss(self._rows(out.logits), teacher_logits, labels, s.alpha, s.temperature, s.beta, feat)
            losses.append(loss)
            total = total + scale * loss
        self.net.set_active(self.net.full)
        self.net.set_rank(None)
        return total, torch.stack([x.detach() for x in losses])


def sandwich(space: SearchSpace, rng: random.Random, vary_depth: bool, k: int) -> list[SubnetConfig]:
    """Largest, smallest, then k random sub-networks (the sandwich rule)."""
    return [space.largest(), space.smallest(vary_depth), *(space.sample(rng, vary_depth) for _ in range(k))]


def sandwich_ranks(ranks: tuple[int, ...], rng: random.Random, k: int) -> list[int] | None:
    """Elastic LoRA rank, in the sandwich's order: the largest rank for the largest sub-network, the
    smallest for the smallest, random ones for the k others; None when the rank is fixed (then `rng`
    is not touched, so a fixed-rank run draws exactly the sub-networks it always did)."""
    if len(ranks) == 1:
        return None
    return [ranks[-1], ranks[0], *(rng.choice(ranks) for _ in range(k))]


def batch_indices(step: int, batch_size: int, lengths: list[int], seed: int,
                  group_by_length: bool = True) -> list[int]:
    """The examples of global step `step`: the step-th batch of a seeded sequence of epochs.

    With `group_by_length` the batches are those of the teacher fine-tune (`finetune.epoch_batches`:
    similar lengths together, batch order random), so a step pads less; a function of (seed, step)
    only, which keeps `--resume` bit-for-bit."""
    per_epoch = math.ceil(len(lengths) / batch_size)
    epoch, i = divmod(step, per_epoch)
    return _epoch_batches(tuple(lengths), batch_size, seed * 1_000_003 + epoch, group_by_length)[i]


@functools.lru_cache(maxsize=2)
def _epoch_batches(lengths: tuple[int, ...], batch_size: int, seed: int, group_by_length: bool) -> list[list[int]]:
    from mlfs_edge.train.finetune import epoch_batches

    return epoch_batches(list(lengths), batch_size, torch.Generator().manual_seed(seed), group_by_length)


def lr_at(step: int, stage: StageSettings) -> float:
    warmup = int(stage.steps * stage.warmup_ratio)
    if step < warmup:
        return stage.lr * (step + 1) / warmup
    return stage.lr * max(0.0, (stage.steps - step) / max(1, stage.steps - warmup))


# --- checkpoints ----------------------------------------------------------------------------------


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def resume_message(path: Path, saved: dict[str, Any] | None, stages: tuple[StageSettings, ...]) -> str:
    """What `--resume` continues from, in one line."""
    if saved is None:
        return f"no checkpoint at {path}: starting from the beginning"
    stage, step, global_step = int(saved["stage"]), int(saved["step"]), int(saved["global_step"])
    if stage >= len(stages):
        return (f"resuming from {path}: all {len(stages)} stages done ({global_step} steps); "
                "writing the supernet")
    s = stages[stage]
    return (f"resuming from {path}: stage {stage + 1} of {len(stages)} ({s.name}) at step {step} of {s.steps} "
            f"({global_step} steps done in all)")


@torch.no_grad()
def merge_and_reset_adapters(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Fold the current adapters into the frozen base and start fresh ones (B = 0, A re-drawn).
    Returns the merged adapter values, which a resume re-applies."""
    from mlfs_edge.supernet.arch import base_linear, lora_pairs

    merged = lora_state(model)
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for (lora_a, lora_b), name in zip(lora_pairs(module), getattr(module, "lora_A", {}), strict=False):
            base_linear(module).weight += module.scaling[name] * (lora_b.weight @ lora_a.weight)
            bound = 1 / math.sqrt(lora_a.weight.shape[1])
            lora_a.weight.copy_(torch.rand(lora_a.weight.shape, generator=g) * 2 * bound - bound)
            lora_b.weight.zero_()
    return merged


@torch.no_grad()
def _reapply_merged(model: nn.Module, merged: list[dict[str, torch.Tensor]]) -> None:
    params = dict(model.named_parameters())
    for adapters in merged:
        for name, value in adapters.items():
            params[name].copy_(value)
        merge_and_reset_adapters(model, seed=0)


# --- the task: model, data, batches ---------------------------------------------------------------


@dataclass
class TaskSetup:
    """What the training loop needs from a task."""

    model: nn.Module  # the frozen base (teacher or pretrained LM), not yet reordered
    tokenizer: Any
    n_train: int  # training examples (classification: sentences; causal_lm: token blocks)
    batch: Callable[[list[int]], tuple[dict[str, torch.Tensor], torch.Tensor]]  # indices → (inputs, labels)
    teacher: str  # recorded in the supernet: the teacher folder, or the pretrained model for causal_lm
    teacher_record: dict[str, Any]  # the stage-0 fine-tune record ({} for causal_lm: no stage 0)
    lengths: list[int]  # tokens per training example (batches group similar lengths: less padding)

    def calibration(self, n: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """The first n training examples as input batches (activation importance)."""
        idx = list(range(min(n, self.n_train)))
        return [self.batch(idx[i:i + batch_size])[0] for i in range(0, len(idx), batch_size)]


def _classification_setup(cfg: MLFSConfig, accelerator, progress: bool) -> TaskSetup:  # noqa: ANN001
    from mlfs_edge.data import BUILTIN_TEXT, load_classification
    from mlfs_edge.models import load_classifier

    if cfg.data in BUILTIN_TEXT:
        raise ValueError(f"{cfg.data!r} is language-model text: set task = \"causal_lm\" with a decoder model "
                         "(e.g. smollm2), or give classification data")
    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    if accelerator.is_main_process:
        ensure_teacher(cfg, data, progress)
    accelerator.wait_for_everyone()
    teacher, teacher_record = ensure_teacher(cfg, data, progress=False)
    model, tokenizer = load_classifier(teacher, data.num_labels, data.label_names)
    train = data.train.subset(cfg.max_train_examples)
    enc = tokenizer(train.texts, truncation=True, max_length=cfg.max_length)
    labels_all = torch.tensor(train.labels)

    def batch(idx: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        padded = tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in idx],
                                "attention_mask": [enc["attention_mask"][i] for i in idx]}, return_tensors="pt")
        return dict(padded), labels_all[idx]

    lengths = [len(ids) for ids in enc["input_ids"]]
    return TaskSetup(model, tokenizer, len(train), batch, str(teacher), teacher_record, lengths)


def _causal_lm_setup(cfg: MLFSConfig) -> TaskSetup:
    from transformers import AutoConfig

    from mlfs_edge.data import load_lm_text
    from mlfs_edge.lm import token_blocks, token_stream

    corpus = load_lm_text(cfg.data, cfg.text_column)  # bad data fails here, before the model loads
    path = resolve_model_path(cfg.model)
    arch = ArchSpec.from_hf_config(AutoConfig.from_pretrained(path))
    if arch.family != "llama":
        raise ValueError(f"causal_lm MLFS needs a Llama-family decoder (e.g. smollm2), got a {arch.family} model")
    # No stage 0: the pretrained LM is the teacher (the largest sub-network distils its own LoRA-tuned
    # self to the others). Fine-tuning it on the text first would only move the starting point.
    model, tokenizer = load_causal_lm(path)
    max_tokens = None if cfg.max_train_examples is None else cfg.max_train_examples * cfg.block_size
    blocks = token_blocks(token_stream(tokenizer, corpus.train, max_tokens), cfg.block_size, full_only=True)
    if not blocks:
        raise ValueError(f"{cfg.data}: the training split has fewer than block_size = {cfg.block_size} tokens")
    data = torch.tensor(blocks, dtype=torch.long)  # full blocks only: no padding, every target counts

    def batch(idx: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x = data[idx]
        return {"input_ids": x}, lm_labels(x)

    return TaskSetup(model, tokenizer, len(blocks), batch, cfg.model, {}, [cfg.block_size] * len(blocks))


# --- the run --------------------------------------------------------------------------------------


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
    from mlfs_edge.train.run_folder import record_run

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
    setup = _causal_lm_setup(cfg) if task == "causal_lm" else _classification_setup(cfg, accelerator, progress)
    if accelerator.is_main_process:  # after the data is checked (a refused config writes nothing), before the
        record_run(cfg, command)     # first step: an interrupted run knows its config too
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
        _reapply_merged(model, saved["merged"])
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
            subnets = sandwich(space, rng, stage.vary_depth, stage.k_random)
            ranks = sandwich_ranks(cfg.lora.ranks, rng, stage.k_random)
            scales = [gradient_scale(n_largest, c.layer_params(arch), cfg.loss.gamma) for c in subnets]
            idx = batch_indices(state.global_step, cfg.batch_size, setup.lengths, cfg.seed,
                                cfg.group_by_length)[rank::world]
            batch, labels = setup.batch(idx)
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
        "distributed": accelerator.distributed_type.value,
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
