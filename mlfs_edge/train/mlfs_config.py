"""The MLFS training config: `MLFSConfig` (read from TOML, with its `[quick]` variant), the loss
weights (`LossSettings`) and one `[[stages]]` table (`StageSettings`). Plain data, checked on load."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from mlfs_edge.families import decoder_model_types
from mlfs_edge.supernet.lora import LoraSettings
from mlfs_edge.train.finetune import FinetuneConfig

FEATURE_MAPS = ("same", "replaced")
SAMPLING = ("choices", "params")
AUGMENT = ("none", "edit", "news")


@dataclass(frozen=True)
class LossSettings:
    alpha: float = 0.9  # weight of KD from the largest network (paper default)
    beta: float = 0.1  # weight of feature distillation (paper default)
    temperature: float = 1.0
    gamma: float = 0.5  # gradient scaling exponent; 0 switches it off
    feature_dim: int = 64  # hidden states are compared after a fixed projection to this many dims
    # Which teacher layer a kept layer's output is compared with: "same" (the same layer of the largest
    # network: the paper's), or "replaced" (the last teacher layer of the block it stands for: after a
    # kept layer i the next kept one is j, so it replaces teacher layers i..j−1 — TinyBERT / DynaBERT).
    feature_map: str = "same"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"loss.alpha must lie in [0, 1], got {self.alpha}")
        if self.beta < 0 or self.temperature <= 0 or self.gamma < 0:
            raise ValueError("loss.beta and loss.gamma must be ≥ 0 and loss.temperature > 0")
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"loss.feature_map must be {' or '.join(FEATURE_MAPS)}, got {self.feature_map!r}")


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
    # Sub-networks meant as speculative drafts for the full model (SubnetConfig.parse specs): each random
    # slot of a sandwich step is one of them with probability draft_share (0 = the plain sandwich rule).
    drafts: tuple[str, ...] = ()
    draft_share: float = 0.0
    # How a random sandwich slot is drawn: "choices" (depth, heads and MLP width each uniform over the
    # search space's values) or "params" (a layer-parameter count uniform between the smallest and the
    # largest, then the uniform sub-network nearest to it: the middle of the palette gets its share).
    sampling: str = "choices"
    palette_share: float = 0.0  # probability that a random slot is one of the palette's sub-networks instead
    # Classification: extra training text labelled by the stage-0 teacher (its predicted class), added to
    # the training split — "edit" (training sentences with words swapped, deleted or replaced by other
    # training words, seeded) or "news" (sentences of the bundled news articles); augment_ratio extra
    # examples per training example.
    augment: str = "none"
    augment_ratio: float = 1.0

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
        kw["drafts"] = tuple(raw.get("drafts", ()))
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
        if not 0.0 <= self.draft_share <= 1.0:
            raise ValueError(f"draft_share must be in [0, 1], got {self.draft_share}")
        if self.draft_share > 0 and not self.drafts:
            raise ValueError("draft_share > 0 needs the draft sub-networks: drafts = [\"depth=10\", ...]")
        if self.draft_share > 0 and not any(s.k_random > 0 for s in self.stages):
            raise ValueError("draft_share replaces random sandwich slots: give a stage k_random ≥ 1")
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling must be {' or '.join(SAMPLING)}, got {self.sampling!r}")
        if not 0.0 <= self.palette_share <= 1.0:
            raise ValueError(f"palette_share must be in [0, 1], got {self.palette_share}")
        if self.palette_share > 0 and self.draft_share > 0:
            raise ValueError("palette_share and draft_share both favour sub-networks in the random slots: set one")
        if self.augment not in AUGMENT:
            raise ValueError(f"augment must be {', '.join(AUGMENT)}, got {self.augment!r}")
        if not 0.0 < self.augment_ratio <= 20.0:
            raise ValueError(f"augment_ratio (extra examples per training example) must be in (0, 20], got "
                             f"{self.augment_ratio}")
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
        return "causal_lm" if hf.get("model_type") in decoder_model_types() else "classification"

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
