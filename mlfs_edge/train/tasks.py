"""The per-task set-up of an MLFS run (`TaskSetup`): the frozen base model, its tokenizer and the
training batches. Classification fine-tunes (or reuses) the stage-0 teacher; a causal LM trains on
its own pretrained self over blocks of text."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlfs_edge.assets import resolve_model_path
from mlfs_edge.families import check_stage
from mlfs_edge.models import load_causal_lm
from mlfs_edge.train.finetune import FinetuneConfig
from mlfs_edge.train.mlfs_config import MLFSConfig
from mlfs_edge.train.objective import lm_labels
from mlfs_edge.train.run_folder import teacher_folder


def ensure_teacher(cfg: MLFSConfig, data, progress: bool = True) -> tuple[Path, dict[str, Any]]:  # noqa: ANN001
    """The fine-tuned teacher folder and its fine-tune record (trains it when absent)."""
    from mlfs_edge.train.finetune import finetune_classifier

    teacher = teacher_folder(cfg)
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


def classification_setup(cfg: MLFSConfig, accelerator, progress: bool) -> TaskSetup:  # noqa: ANN001
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
    texts, labels = list(train.texts), list(train.labels)
    if cfg.augment != "none":
        extra, extra_labels = augmented_examples(cfg, model, tokenizer, texts, labels,
                                                 progress and accelerator.is_local_main_process,
                                                 accelerator.is_main_process)
        texts, labels = texts + extra, labels + extra_labels
    enc = tokenizer(texts, truncation=True, max_length=cfg.max_length)
    labels_all = torch.tensor(labels)

    def batch(idx: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        padded = tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in idx],
                                "attention_mask": [enc["attention_mask"][i] for i in idx]}, return_tensors="pt")
        return dict(padded), labels_all[idx]

    lengths = [len(ids) for ids in enc["input_ids"]]
    return TaskSetup(model, tokenizer, len(texts), batch, str(teacher), teacher_record, lengths)


def augmented_examples(cfg: MLFSConfig, teacher: nn.Module, tokenizer, texts: list[str], labels: list[int],  # noqa: ANN001
                       progress: bool, report: bool) -> tuple[list[str], list[int]]:
    """The config's augmentation (`train.augment`): round(augment_ratio × training examples) extra
    texts, labelled by the stage-0 teacher's prediction."""
    from mlfs_edge.train.augment import edited_sentences, news_sentences, teacher_labels

    n = max(1, round(cfg.augment_ratio * len(texts)))
    source: list[int] = []
    if cfg.augment == "edit":
        extra, source = edited_sentences(texts, n, cfg.seed)
    else:
        extra = news_sentences(n, cfg.seed)
    extra_labels = teacher_labels(teacher, tokenizer, extra, cfg.max_length, progress=progress)
    if report:
        same = sum(extra_labels[j] == labels[i] for j, i in enumerate(source))
        kept = f"; the teacher keeps the source sentence's label on {100 * same / len(source):.1f} %" if source else ""
        names = getattr(teacher.config, "id2label", None) or {}
        counts = Counter(extra_labels)
        spread = ", ".join(f"{names.get(k, k)} {counts[k]:,}" for k in sorted(counts))
        print(f"augment: {len(extra):,} {cfg.augment} examples labelled by the teacher ({spread}; {len(texts):,} "
              f"training examples){kept}")
    return extra, extra_labels


def causal_lm_setup(cfg: MLFSConfig) -> TaskSetup:
    from transformers import AutoConfig

    from mlfs_edge.data import load_lm_text
    from mlfs_edge.lm import token_blocks, token_stream

    if cfg.augment != "none":
        raise ValueError("augment labels extra text with a classifier teacher: a causal LM run takes augment = "
                         "\"none\" (give it more text in data instead)")
    corpus = load_lm_text(cfg.data, cfg.text_column)  # bad data fails here, before the model loads
    path = resolve_model_path(cfg.model)
    fam = check_stage(AutoConfig.from_pretrained(path), "lora")
    if fam.kind != "decoder":
        raise ValueError(f"causal_lm MLFS needs a decoder (e.g. smollm2), got a {fam.name} encoder")
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
