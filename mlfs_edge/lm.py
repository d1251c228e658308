"""Language-model evaluation: perplexity on held-out text, and classification with a decoder by
scoring each label word's log-likelihood after a prompt.

Perplexity follows the usual non-overlapping-block recipe: the documents are tokenized, each one
ended with the EOS token, concatenated into one stream and cut into blocks of ``block_size`` tokens;
every token of a block except the first is predicted from the tokens before it in the same block.
Numbers are comparable between models that share a tokenizer and the same ``block_size`` /
``max_tokens`` (the sub-networks of one model and its pruned variants do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mlfs_edge.data import Split
from mlfs_edge.metrics import ClassificationResult

DEFAULT_PROMPT = "Question: {text}\nAnswer type ({choices}):"


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens
    # with perplexity(..., predictions=True): the greedy next token at every predicted position
    predictions: torch.Tensor | None = field(default=None, compare=False, repr=False)


def greedy_agreement(a: PerplexityResult, b: PerplexityResult) -> float:
    """Fraction of positions where two models' greedy next tokens agree (teacher forced, the same
    text and blocks): a draft's acceptance rate under greedy speculative decoding for a target."""
    if a.predictions is None or b.predictions is None or a.predictions.shape != b.predictions.shape:
        raise ValueError("greedy_agreement needs both results from perplexity(..., predictions=True) on the same text")
    return float((a.predictions == b.predictions).float().mean())


def token_stream(tokenizer, texts: Sequence[str], max_tokens: int | None = None) -> list[int]:  # noqa: ANN001
    """All documents as one token list, each followed by EOS (when the tokenizer has one)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if max_tokens is not None and len(ids) >= max_tokens:
            return ids[:max_tokens]
    return ids


def token_blocks(ids: list[int], block_size: int, full_only: bool = False) -> list[list[int]]:
    """The stream cut into consecutive non-overlapping blocks. The shorter last block is kept when it
    predicts anything (≥ 2 tokens) unless `full_only` (training batches then need no padding)."""
    blocks = [ids[i:i + block_size] for i in range(0, len(ids), block_size)]
    while blocks and (len(blocks[-1]) < 2 or (full_only and len(blocks[-1]) < block_size)):
        blocks.pop()  # a lone trailing token predicts nothing
    return blocks


@torch.no_grad()
def perplexity(model: torch.nn.Module, tokenizer, texts: Sequence[str], block_size: int = 256,  # noqa: ANN001
               max_tokens: int | None = None, batch_size: int = 4, predictions: bool = False) -> PerplexityResult:
    """Perplexity of a causal LM on `texts` (see the module notes for the recipe); with `predictions`
    also its greedy next token at every predicted position."""
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2 tokens, got {block_size}")
    ids = token_stream(tokenizer, texts, max_tokens)
    if len(ids) < 2:
        raise ValueError("perplexity needs at least 2 tokens of text; pass longer or more documents")
    blocks = token_blocks(ids, block_size)
    model.eval()
    nll_sum, count = 0.0, 0
    argmax: list[torch.Tensor] = []
    # Equal-length blocks batch without padding; the shorter last block goes alone.
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start:start + batch_size]
        groups = [chunk] if len({len(b) for b in chunk}) == 1 else [chunk[:-1], chunk[-1:]]
        for group in groups:
            x = torch.tensor(group)
            logits = model(input_ids=x).logits[:, :-1].float()
            nll_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                       reduction="sum").item()
            count += x[:, 1:].numel()
            if predictions:
                argmax.append(logits.argmax(-1).reshape(-1))
    nll = nll_sum / count
    return PerplexityResult(math.exp(nll), nll, count, torch.cat(argmax) if predictions else None)


# --- classification with a decoder: label-word scoring ---------------------------------------------


@dataclass(frozen=True)
class PromptAnswer:
    """One tokenized prompt + answer; the answer occupies input_ids[answer_start:]."""

    input_ids: list[int]
    answer_start: int


def format_prompt(text: str, label_words: Sequence[str], template: str = DEFAULT_PROMPT) -> str:
    return template.format(text=text, choices=", ".join(label_words))


def encode_prompt_answer(tokenizer, prompt: str, answer: str, max_length: int = 128) -> PromptAnswer:  # noqa: ANN001
    """Tokens of `prompt` (special tokens as the tokenizer adds them) followed by ' ' + `answer`.

    Prompt and answer are tokenized separately so that the answer's tokens are the same whatever
    the prompt; an over-long prompt loses its beginning, never the answer.
    """
    answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    if not answer_ids:
        raise ValueError(f"answer {answer!r} tokenizes to nothing")
    prompt_ids = tokenizer(prompt)["input_ids"]
    keep = max(1, max_length - len(answer_ids))
    prompt_ids = prompt_ids[-keep:]
    return PromptAnswer(prompt_ids + answer_ids, len(prompt_ids))


def pad_prompt_answers(items: Sequence[PromptAnswer], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, and answer_mask marking the answer tokens."""
    width = max(len(it.input_ids) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    answer = torch.zeros((len(items), width), dtype=torch.bool)
    for row, it in enumerate(items):
        n = len(it.input_ids)
        ids[row, :n] = torch.tensor(it.input_ids)
        attn[row, :n] = 1
        answer[row, it.answer_start:n] = True
    return {"input_ids": ids, "attention_mask": attn, "answer_mask": answer}


def pad_id_of(tokenizer) -> int:  # noqa: ANN001
    for tok_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return 0


def answer_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Per row: the summed log-probability of the answer tokens (position t is predicted at t-1)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token_logp * answer_mask[:, 1:]).sum(-1)


@torch.no_grad()
def label_word_scores(model: torch.nn.Module, tokenizer, texts: Sequence[str], label_words: Sequence[str],  # noqa: ANN001
                      template: str = DEFAULT_PROMPT, batch_size: int = 32, max_length: int = 128) -> torch.Tensor:
    """[len(texts), len(label_words)]: log p(' ' + word | prompt(text)) summed over the word's tokens.

    When every label word is a single token (TREC's are, for SmolLM2) one forward pass per prompt
    scores all of them at once; otherwise each (prompt, word) pair is its own sequence.
    """
    if len(label_words) < 2:
        raise ValueError(f"label-word scoring needs at least 2 label words, got {list(label_words)}")
    model.eval()
    word_ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in label_words]
    single_token = all(len(ids) == 1 for ids in word_ids)
    words = label_words[:1] if single_token else label_words
    pairs = [(i, j) for i in range(len(texts)) for j in range(len(words))]
    items = [encode_prompt_answer(tokenizer, format_prompt(texts[i], label_words, template), words[j], max_length)
             for i, j in pairs]
    order = sorted(range(len(items)), key=lambda k: len(items[k].input_ids))  # little padding per batch
    scores = torch.empty(len(texts), len(label_words))
    pad = pad_id_of(tokenizer)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = pad_prompt_answers([items[k] for k in idx], pad)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if single_token:
            # The position before the answer predicts it: read every label word's probability there.
            before_answer = torch.tensor([items[k].answer_start - 1 for k in idx])
            logp = torch.log_softmax(logits[torch.arange(len(idx)), before_answer].float(), dim=-1)
            scores[[pairs[k][0] for k in idx]] = logp[:, [ids[0] for ids in word_ids]]
        else:
            lp = answer_logprobs(logits, batch["input_ids"], batch["answer_mask"])
            for k, value in zip(idx, lp.tolist(), strict=True):
                scores[pairs[k]] = value
    return scores


def evaluate_label_words(model: torch.nn.Module, tokenizer, split: Split, label_words: Sequence[str],  # noqa: ANN001
                         template: str = DEFAULT_PROMPT, batch_size: int = 32,
                         max_length: int = 128) -> ClassificationResult:
    """Accuracy of a decoder that predicts the label word with the highest log-likelihood."""
    scores = label_word_scores(model, tokenizer, split.texts, label_words, template, batch_size, max_length)
    preds = scores.argmax(-1).tolist()
    correct = sum(int(p == y) for p, y in zip(preds, split.labels, strict=True))
    return ClassificationResult(correct / max(1, len(split)), preds, len(split))
