"""Full fine-tuning of a sequence classifier: the teacher every sub-network is compared with."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mlfs_edge.data import ClassificationDataset
from mlfs_edge.metrics import compute_device, device_name, evaluate_classifier, on_device_of
from mlfs_edge.models import load_classifier, save_atomically


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: float = 2.0
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0
    max_train_examples: int | None = None  # None: the whole train split
    max_eval_examples: int | None = None
    # The word-embedding table is half of MiniLM's weights; freezing it saves its dense gradient and
    # AdamW state (11.7M rows). On a 640-sentence check both settings gave the same dev/test accuracy.
    freeze_word_embeddings: bool = True
    group_by_length: bool = True  # batches of similar length: less padding, same data per epoch


@dataclass(frozen=True)
class FinetuneResult:
    out_dir: str
    dev_accuracy: float
    test_accuracy: float
    train_examples: int
    steps: int
    wall_s: float
    params: int
    config: dict


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def epoch_batches(lengths: list[int], batch_size: int, gen: torch.Generator,
                  group_by_length: bool = True) -> list[list[int]]:
    """One epoch of index batches in random order; with `group_by_length`, examples are sorted by
    length inside random windows of 50 batches, so a batch pads to a similar length."""
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    if group_by_length:
        window = 50 * batch_size
        perm = [i for s in range(0, len(perm), window)
                for i in sorted(perm[s:s + window], key=lengths.__getitem__)]
    batches = [perm[s:s + batch_size] for s in range(0, len(perm), batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def finetune_classifier(model_dir: str | Path, data: ClassificationDataset, out_dir: str | Path,
                        cfg: FinetuneConfig = FinetuneConfig(), progress: bool = True) -> FinetuneResult:
    """Fine-tune every weight of `model_dir` + a new classification head on `data`; save to `out_dir`.

    The output folder is written atomically: a crash leaves either the old folder or none.
    """
    gen = seed_everything(cfg.seed)
    model, tokenizer = load_classifier(model_dir, data.num_labels, data.label_names)
    device = compute_device()  # the GPU when there is one, as for the MLFS stages
    model.to(device)
    train = data.train.subset(cfg.max_train_examples)
    enc = tokenizer(train.texts, truncation=True, max_length=cfg.max_length)
    labels = torch.tensor(train.labels)
    lengths = [len(ids) for ids in enc["input_ids"]]
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = max(1, round(steps_per_epoch * cfg.epochs))
    warmup = int(total * cfg.warmup_ratio)

    if cfg.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))

    t0 = time.perf_counter()
    model.train()
    step = 0
    bar = tqdm(total=total, desc="fine-tune teacher", unit="step", disable=not progress)
    while step < total:
        for idx in epoch_batches(lengths, cfg.batch_size, gen, cfg.group_by_length):
            if step >= total:
                break
            batch = tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in idx],
                                   "attention_mask": [enc["attention_mask"][i] for i in idx]},
                                  return_tensors="pt")
            out = model(**on_device_of(model, dict(batch)), labels=labels[idx].to(device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.set_postfix(loss=f"{out.loss.item():.3f}")
            bar.update()
    bar.close()
    train_s = time.perf_counter() - t0

    dev = evaluate_classifier(model, tokenizer, data.dev.subset(cfg.max_eval_examples), max_length=cfg.max_length)
    test = evaluate_classifier(model, tokenizer, data.test.subset(cfg.max_eval_examples), max_length=cfg.max_length)
    wall = time.perf_counter() - t0
    result = FinetuneResult(str(out_dir), dev.accuracy, test.accuracy, len(train), total, wall,
                            sum(p.numel() for p in model.parameters()),
                            {**asdict(cfg), "dataset": data.name, "train_s": train_s, "device": device_name(device)})
    save_atomically(model, tokenizer, Path(out_dir), {"finetune": asdict(result)})
    return result
