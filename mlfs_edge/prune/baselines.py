"""The compression-baselines table: pruning ratio × re-training method → quality, cost.

For one model (MiniLM on Rotten Tomatoes, or SmolLM2 on TREC posed as label-word scoring plus
perplexity on held-out news), the unpruned *fine-tuned* model is the teacher and the reference row.
Each ratio prunes it once (L2-norm MLP pruning) and every re-training method starts from a copy of
that same pruned model, with the same data, order, steps and schedule (`retrain`). Rows:

    method  none | l2pft | l2psd | lora-sft | lora-kd | mlfs
    ratio   share of MLP channels removed (0.0: the unpruned teacher); for mlfs rows the share of
            transformer-layer parameters the sub-network drops (it also drops heads and layers)
    accuracy, perplexity (SmolLM2 only), trainable_params, params (whole model), layer_params
    (transformer layers only, embeddings excluded: the size measure MLFS reports), wall_s (pruning +
    re-training; for mlfs the supernet's whole training, shared by all its sub-networks)
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.data import TREC_LABEL_WORDS, ClassificationDataset, Split, load_classification, load_text
from mlfs_edge.prune.mlp import kept_channels, prune_mlp
from mlfs_edge.prune.retrain import METHODS, ClassifierTask, LabelWordTask, RetrainConfig, Task, retrain

ALL_METHODS = ("none", *METHODS, "mlfs")
MODELS = ("minilm", "smollm2")


@dataclass(frozen=True)
class BaselinesConfig:
    model: str = "minilm"
    ratios: tuple[float, ...] = (0.1, 0.3, 0.5)
    methods: tuple[str, ...] = ("none", "l2pft", "l2psd", "lora-sft", "lora-kd")
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    max_train: int | None = None  # re-training examples (first N of the seeded train split)
    max_eval: int | None = None  # test examples
    max_length: int = 64
    lm_max_tokens: int = 8192  # news test tokens for perplexity (SmolLM2)
    teacher_dir: str | None = None  # a fine-tuned unpruned model; trained (and kept) when missing
    teacher_steps: int = 200  # SmolLM2 teacher fine-tune steps on TREC (MiniLM uses finetune_classifier)
    runs_dir: str = "runs/baselines"
    mlfs_results: str = "benchmarks/results/mlfs_minilm_rt.json"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; use one of {', '.join(MODELS)}")
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(ALL_METHODS)}")
        if not self.ratios:
            raise ValueError("give at least one pruning ratio, e.g. --ratios 0.1,0.3,0.5")
        for r in self.ratios:
            kept_channels(1536, r)  # validates the ratio with a clear message


# Re-training budgets sized for a small 2-core CPU; --quick is a smoke test. MiniLM uses the whole
# training and test splits and the max length of the MLFS run it is compared with
# (configs/mlfs_minilm_rt.toml), half an epoch of re-training per pruned model; SmolLM2 steps are few
# because one step costs ~10 s there.
DEFAULTS: dict[str, dict[str, Any]] = {
    "minilm": {"retrain": RetrainConfig(steps=126, batch_size=32, lr=1e-4, lora_lr=1e-3), "max_train": None,
               "max_eval": None, "max_length": 64},
    "smollm2": {"retrain": RetrainConfig(steps=5, batch_size=8, lr=1e-4, lora_lr=1e-3), "max_train": 2000,
                "max_eval": 60, "max_length": 48, "lm_max_tokens": 1024, "teacher_steps": 16},
}
QUICK: dict[str, Any] = {"retrain": RetrainConfig(steps=3, batch_size=8), "max_train": 64, "max_eval": 48,
                         "lm_max_tokens": 512, "teacher_steps": 3}


def default_config(model: str, quick: bool = False, **overrides: Any) -> BaselinesConfig:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")
    values = {**DEFAULTS[model], **(QUICK if quick else {})}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return BaselinesConfig(model=model, **values)


@dataclass
class Setup:
    teacher: torch.nn.Module
    task: Task
    train: Split
    test: Split
    data: ClassificationDataset


def _minilm_setup(cfg: BaselinesConfig, progress: bool) -> Setup:
    from mlfs_edge.assets import minilm_path
    from mlfs_edge.models import load_classifier
    from mlfs_edge.train.finetune import FinetuneConfig, finetune_classifier

    data = load_classification("rotten_tomatoes")
    teacher_dir = Path(cfg.teacher_dir or Path(cfg.runs_dir) / "minilm-teacher")
    if not (teacher_dir / "config.json").is_file():
        # The MLFS run's stage-0 recipe (configs/mlfs_minilm_rt.toml, the `mlfs-edge demo` teacher),
        # seeded: both tables start from the same teacher.
        ft = FinetuneConfig(max_train_examples=cfg.max_train)
        print(f"fine-tuning the MiniLM teacher ({ft}) into {teacher_dir} (once; reused later)")
        finetune_classifier(minilm_path(), data, teacher_dir, ft, progress=progress)
    teacher, tok = load_classifier(teacher_dir, data.num_labels, data.label_names)
    task = ClassifierTask(tok, cfg.max_length)
    return Setup(teacher.eval(), task, data.train.subset(cfg.max_train), data.test.subset(cfg.max_eval), data)


def _smollm2_setup(cfg: BaselinesConfig, progress: bool) -> Setup:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlfs_edge.assets import smollm2_path
    from mlfs_edge.models import save_atomically

    data = load_classification("trec")
    news = load_text("news").test
    teacher_dir = Path(cfg.teacher_dir or Path(cfg.runs_dir) / "smollm2-trec-teacher")
    source = teacher_dir if (teacher_dir / "config.json").is_file() else smollm2_path()
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="eager")
    task = LabelWordTask(tok, TREC_LABEL_WORDS, max_length=cfg.max_length, lm_texts=news,
                         lm_max_tokens=cfg.lm_max_tokens)
    train = data.train.subset(cfg.max_train)
    if source != teacher_dir:
        # The teacher is the unpruned model fine-tuned on the task (answer-word cross-entropy), as the
        # self-distillation recipe asks; same optimiser and schedule as the L2PFT re-training.
        print(f"fine-tuning the SmolLM2 teacher on TREC ({cfg.teacher_steps} steps) into {teacher_dir}")
        res = retrain(model, task, train, "l2pft", replace(cfg.retrain, steps=cfg.teacher_steps), progress=progress)
        model = res.model
        save_atomically(model, tok, teacher_dir, {"teacher": {"steps": res.steps, "train_s": res.train_s,
                                                              "train_examples": len(train)}})
    return Setup(model.eval(), task, train, data.test.subset(cfg.max_eval), data)


def layer_params(model: torch.nn.Module) -> int:
    """Transformer-layer parameters (embeddings and heads excluded), as `SubnetConfig.layer_params`."""
    arch = ArchSpec.from_hf_config(model.config)
    return SubnetConfig.full(arch).layer_params(arch)


def _row(method: str, ratio: float, model: torch.nn.Module, quality: dict[str, float], trainable: int,
         wall_s: float) -> dict[str, Any]:
    return {"method": method, "ratio": ratio, **quality, "trainable_params": trainable,
            "params": sum(p.numel() for p in model.parameters()), "layer_params": layer_params(model),
            "wall_s": round(wall_s, 2)}


def mlfs_rows(path: str | Path) -> tuple[list[dict[str, Any]], str]:
    """Rows for the MLFS sub-networks from the supernet's result file, or none and the reason."""
    path = Path(path)
    if not path.is_file():
        return [], f"{path} does not exist (the supernet's `mlfs-edge eval --json` writes it)"
    try:
        record = json.loads(path.read_text())
        rows = [{"method": "mlfs", "ratio": round(1.0 - r["param_fraction"], 4), "subnet": r["name"],
                 "accuracy": r["accuracy"], "trainable_params": record.get("trainable_params"),
                 "params": r["total_params"], "layer_params": r["params"], "wall_s": record["mlfs_wall_s"]}
                for r in record["rows"]]
    except (KeyError, TypeError, ValueError) as e:
        return [], f"{path} is not an MLFS palette result ({e!r})"
    note = (f"{path}: {len(rows)} sub-networks; MLFS teacher accuracy {record.get('teacher_accuracy')} "
            f"on {record.get('test_examples')} test examples")
    return rows, note


def run_baselines(cfg: BaselinesConfig, progress: bool = True,
                  on_row: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """All rows of the table (see the module notes) and notes on what was left out or how it was run."""
    notes: list[str] = []
    setup = (_minilm_setup if cfg.model == "minilm" else _smollm2_setup)(cfg, progress)
    teacher, task = setup.teacher, setup.task
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_row:
            on_row(row)

    add(_row("none", 0.0, teacher, task.evaluate(teacher, setup.test), 0, 0.0))
    retrain_methods = [m for m in cfg.methods if m in METHODS]
    for ratio in cfg.ratios:
        t0 = time.perf_counter()
        pruned = prune_mlp(teacher, ratio)
        prune_s = time.perf_counter() - t0
        if "none" in cfg.methods:
            add(_row("none", ratio, pruned, task.evaluate(pruned, setup.test), 0, prune_s))
        for method in retrain_methods:
            uses_teacher = METHODS[method][0] == "kd"  # the CE methods never see the teacher
            res = retrain(copy.deepcopy(pruned), task, setup.train, method, cfg.retrain,
                          teacher=teacher if uses_teacher else None, progress=progress)
            add(_row(method, ratio, res.model, task.evaluate(res.model, setup.test), res.trainable_params,
                     prune_s + res.train_s))
    if "mlfs" in cfg.methods:
        if cfg.model != "minilm":
            notes.append("mlfs rows left out: MLFS sub-networks exist for MiniLM on Rotten Tomatoes only")
        else:
            extra, note = mlfs_rows(cfg.mlfs_results)
            notes.append(note if extra else f"mlfs rows left out: {note}")
            for row in extra:
                add(row)
    notes.append(f"{len(setup.train)} re-training examples, {cfg.retrain.steps} steps of batch "
                 f"{cfg.retrain.batch_size}; {len(setup.test)} test examples")
    return rows, notes


def plot_baselines(rows: list[dict[str, Any]], path: str | Path, title: str) -> None:
    """Accuracy (and perplexity where measured) against transformer-layer parameters, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("accuracy", "perplexity") if any(m in r for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.5), squeeze=False)
    reference = next(r for r in rows if r["method"] == "none" and r["ratio"] == 0.0)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for method in ALL_METHODS:
            pts = sorted((r["layer_params"] / 1e6, r[metric]) for r in rows
                         if r["method"] == method and metric in r and not (method == "none" and r["ratio"] == 0.0))
            if pts:
                style = "*" if method == "mlfs" else "o-"
                ax.plot(*zip(*pts, strict=True), style, label=method, markersize=9 if method == "mlfs" else 5)
        ax.axhline(reference[metric], color="gray", ls="--", lw=1, label="unpruned teacher")
        ax.set_xlabel("transformer-layer parameters (M)")
        ax.set_ylabel(metric)
        if metric == "perplexity":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
