"""Re-training a pruned model with identical schedules, data and steps.

Four methods, two losses × two parameter sets:

============  ======================================  =====================================
method        loss                                     trained parameters
============  ======================================  =====================================
l2pft         cross-entropy on the labels              all
l2psd         KL to the unpruned teacher (no labels)   all
lora-sft      cross-entropy on the labels              LoRA adapters only
lora-kd       KL to the unpruned teacher (no labels)   LoRA adapters only (LLM-Neo style)
============  ======================================  =====================================

Every method sees the same examples in the same order (one seeded permutation), for the same number
of steps, with the same warm-up + linear-decay schedule; only the peak learning rate differs between
full-parameter and LoRA training (adapters start at zero and need a larger step, as is standard).

Tasks (how a batch of texts becomes a loss):

- :class:`ClassifierTask` — a sequence classifier: CE on its class logits, KD on its class logits.
- :class:`LabelWordTask` — a decoder on a classification task posed as next-token scoring of label
  words. CE trains the label word's tokens after the prompt. KD runs on the *prompt only* (so the
  answer, i.e. the label, is never in its input) and matches the teacher's next-token distribution at
  every prompt position: the last position is the answer distribution over the whole vocabulary, the
  earlier ones keep the pruned model a language model (which is what perplexity measures).

"Full-parameter" means every weight except the word-embedding table, which stays frozen as in the
teacher fine-tune (`mlfs_edge.train.finetune`): it is most of a small model's weights, barely moves
in a short fine-tune and doubles the cost of a CPU step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mlfs_edge.data import Split
from mlfs_edge.families import check_stage
from mlfs_edge.lm import (
    DEFAULT_PROMPT,
    encode_prompt_answer,
    evaluate_label_words,
    format_prompt,
    pad_id_of,
    pad_prompt_answers,
    perplexity,
)
from mlfs_edge.metrics import evaluate_classifier, on_device_of
from mlfs_edge.prune.losses import answer_ce_loss, kd_loss
from mlfs_edge.supernet.lora import lora_targets
from mlfs_edge.train.finetune import epoch_batches

# method name -> (loss, LoRA?)
METHODS: dict[str, tuple[str, bool]] = {
    "l2pft": ("ce", False),
    "l2psd": ("kd", False),
    "lora-sft": ("ce", True),
    "lora-kd": ("kd", True),
}

@dataclass(frozen=True)
class RetrainConfig:
    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-4  # full-parameter methods
    lora_lr: float = 1e-3  # LoRA methods
    lora_r: int = 8
    lora_alpha: int = 16
    temperature: float = 2.0
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


@dataclass
class RetrainResult:
    model: torch.nn.Module  # LoRA adapters merged: a plain HF model of the pruned shape
    method: str
    trainable_params: int
    steps: int
    train_s: float
    losses: list[float] = field(default_factory=list)


class ClassifierTask:
    """A sequence classifier (AutoModelForSequenceClassification) on labelled sentences."""

    def __init__(self, tokenizer, max_length: int = 64) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.max_length = max_length

    def _encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def ce_loss(self, model: torch.nn.Module, texts: Sequence[str], labels: Sequence[int]) -> torch.Tensor:
        logits = model(**on_device_of(model, self._encode(texts))).logits
        return F.cross_entropy(logits, torch.tensor(list(labels), device=logits.device))

    def kd_inputs(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        return self._encode(texts), None  # one position per sentence: its class logits

    def evaluate(self, model: torch.nn.Module, split: Split) -> dict[str, float]:
        return {"accuracy": evaluate_classifier(model, self.tokenizer, split, max_length=self.max_length).accuracy}


class LabelWordTask:
    """A causal LM on a classification task: the answer is the label word after a prompt."""

    def __init__(self, tokenizer, label_words: Sequence[str], template: str = DEFAULT_PROMPT,  # noqa: ANN001
                 max_length: int = 64, lm_texts: Sequence[str] | None = None, lm_max_tokens: int = 8192,
                 lm_block_size: int = 256) -> None:
        self.tokenizer = tokenizer
        self.label_words = list(label_words)
        self.template = template
        self.max_length = max_length
        self.lm_texts = list(lm_texts) if lm_texts is not None else None
        self.lm_max_tokens = lm_max_tokens
        self.lm_block_size = lm_block_size
        self.pad_id = pad_id_of(tokenizer)

    def _prompt(self, text: str) -> str:
        return format_prompt(text, self.label_words, self.template)

    def ce_loss(self, model: torch.nn.Module, texts: Sequence[str], labels: Sequence[int]) -> torch.Tensor:
        items = [encode_prompt_answer(self.tokenizer, self._prompt(t), self.label_words[y], self.max_length)
                 for t, y in zip(texts, labels, strict=True)]
        batch = on_device_of(model, pad_prompt_answers(items, self.pad_id))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return answer_ce_loss(logits, batch["input_ids"], batch["answer_mask"])

    def kd_inputs(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        enc = self.tokenizer([self._prompt(t) for t in texts], truncation=True, max_length=self.max_length)
        width = max(len(ids) for ids in enc["input_ids"])
        ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(texts), width), dtype=torch.long)
        for row, seq in enumerate(enc["input_ids"]):  # right padding: real positions see no padding
            ids[row, :len(seq)] = torch.tensor(seq)
            attn[row, :len(seq)] = 1
        return {"input_ids": ids, "attention_mask": attn}, attn.bool()

    def evaluate(self, model: torch.nn.Module, split: Split) -> dict[str, float]:
        out = {"accuracy": evaluate_label_words(model, self.tokenizer, split, self.label_words, self.template,
                                                max_length=self.max_length).accuracy}
        if self.lm_texts is not None:
            out["perplexity"] = perplexity(model, self.tokenizer, self.lm_texts, self.lm_block_size,
                                           self.lm_max_tokens).perplexity
        return out


Task = ClassifierTask | LabelWordTask


def add_lora(model: torch.nn.Module, r: int = 8, alpha: int = 16) -> torch.nn.Module:
    """The model wrapped by peft with LoRA on every attention and MLP projection; only adapters train."""
    from peft import LoraConfig, get_peft_model

    check_stage(model.config, "lora")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=lora_targets(model))
    return get_peft_model(model, config)


def _schedule(total: int, warmup_ratio: float):
    warmup = int(total * warmup_ratio)
    return lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))


def batch_order(lengths: Sequence[int], steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """The example indices of every step: the teacher fine-tune's seeded, length-grouped epochs, one
    after another until `steps` batches (identical for every method)."""
    gen = torch.Generator().manual_seed(seed)
    out: list[list[int]] = []
    while len(out) < steps:
        out.extend(epoch_batches(list(lengths), batch_size, gen))
    return out[:steps]


def method_loss(method: str, task: Task, model: torch.nn.Module, teacher: torch.nn.Module | None,
                texts: Sequence[str], labels: Sequence[int], temperature: float) -> torch.Tensor:
    """The training loss of one batch. The KD branch is handed no labels at all."""
    loss_kind, _ = METHODS[method]
    if loss_kind == "ce":
        return task.ce_loss(model, texts, labels)
    return distill_loss(task, model, teacher, texts, temperature)


def distill_loss(task: Task, model: torch.nn.Module, teacher: torch.nn.Module | None, texts: Sequence[str],
                 temperature: float) -> torch.Tensor:
    if teacher is None:
        raise ValueError("self-distillation needs the unpruned teacher model")
    inputs, mask = task.kd_inputs(texts)
    inputs = on_device_of(model, inputs)
    mask = None if mask is None else mask.to(inputs["input_ids"].device)
    with torch.no_grad():
        teacher_logits = teacher(**inputs).logits
    return kd_loss(model(**inputs).logits, teacher_logits, temperature, mask)


def retrain(model: torch.nn.Module, task: Task, train: Split, method: str, cfg: RetrainConfig = RetrainConfig(),
            teacher: torch.nn.Module | None = None, progress: bool = True) -> RetrainResult:
    """Re-train `model` (in place for full-parameter methods) with `method`; see the module notes."""
    if method not in METHODS:
        raise ValueError(f"unknown re-training method {method!r}; use one of {', '.join(METHODS)}")
    if len(train) == 0:
        raise ValueError("the training split is empty")
    _, use_lora = METHODS[method]
    torch.manual_seed(cfg.seed)
    if teacher is not None:
        teacher.eval()
    if use_lora:
        student = add_lora(model, cfg.lora_r, cfg.lora_alpha)
    else:
        student = model
        # As in the teacher fine-tune: the word-embedding table (most of a small model's weights;
        # tied to the LM head in SmolLM2) stays frozen, which keeps CPU steps affordable.
        model.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lora_lr if use_lora else cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.steps, cfg.warmup_ratio))

    t0 = time.perf_counter()
    student.train()
    losses = []
    # Word counts stand in for token lengths (the grouping only has to keep padding small).
    steps = batch_order([len(t.split()) for t in train.texts], cfg.steps, cfg.batch_size, cfg.seed)
    for idx in tqdm(steps, desc=method, unit="step", disable=not progress, leave=False):
        texts = [train.texts[i] for i in idx]
        labels = [train.labels[i] for i in idx]
        loss = method_loss(method, task, student, teacher, texts, labels, cfg.temperature)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    student.eval()
    final = student.merge_and_unload() if use_lora else student
    return RetrainResult(final, method, n_trainable, cfg.steps, train_s, losses)
