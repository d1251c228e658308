"""Data augmentation for distillation (`augment` in the MLFS config): extra training text whose label
is the stage-0 teacher's prediction, so the sub-networks see more of the teacher's function than the
labelled split shows (TinyBERT's augmentation; here without a masked LM or word vectors: the bundled
model has neither).

- "edit": each extra example is a training sentence with about 15 % of its words edited — two words
  swapped, one deleted, replaced by or inserted before another word of the training text (EDA's
  operations, drawn from the training vocabulary instead of a thesaurus);
- "news": sentences of the bundled news articles (other text of the same language, off-domain).

Everything is drawn from `random.Random(seed)`, so a resumed run rebuilds the same examples."""

from __future__ import annotations

import math
import random
import re

from torch import nn

EDIT_FRACTION = 0.15  # of a sentence's words edited (EDA's alpha)
NEWS_WORDS = (6, 50)  # news sentences kept: this many words, both ends included


def edited_sentences(texts: list[str], n: int, seed: int) -> tuple[list[str], list[int]]:
    """`n` edited copies of training sentences (cycling through a seeded shuffle of them) and the
    index of the sentence each came from."""
    if not texts:
        raise ValueError("augmentation needs training sentences to edit")
    rng = random.Random(seed)
    vocabulary = [w for t in texts for w in t.split()]
    order = list(range(len(texts)))
    out, source = [], []
    while len(out) < n:
        rng.shuffle(order)
        for i in order[:n - len(out)]:
            out.append(_edit(texts[i].split(), rng, vocabulary))
            source.append(i)
    return out, source


def _edit(words: list[str], rng: random.Random, vocabulary: list[str]) -> str:
    words = list(words)
    for _ in range(max(1, math.ceil(EDIT_FRACTION * len(words)))):
        op = rng.randrange(4)
        if op == 0 and len(words) >= 2:  # swap two words
            a, b = rng.sample(range(len(words)), 2)
            words[a], words[b] = words[b], words[a]
        elif op == 1 and len(words) >= 4:  # delete one
            del words[rng.randrange(len(words))]
        elif op == 2 and words:  # replace one
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        else:  # insert one
            words.insert(rng.randrange(len(words) + 1), rng.choice(vocabulary))
    return " ".join(words)


def news_sentences(n: int, seed: int) -> list[str]:
    """`n` distinct sentences of the bundled news articles, of NEWS_WORDS words, in a seeded order."""
    from mlfs_edge.data import BUILTIN_TEXT

    seen: dict[str, None] = {}
    for doc in BUILTIN_TEXT["news"]():
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
            if NEWS_WORDS[0] <= len(sentence.split()) <= NEWS_WORDS[1]:
                seen.setdefault(sentence)
    sentences = list(seen)
    if len(sentences) < n:
        raise ValueError(f"augment = \"news\" asks for {n:,} sentences but the bundled news has {len(sentences):,}: "
                         f"lower augment_ratio to at most {len(sentences) / max(1, n):.2f} of it")
    random.Random(seed).shuffle(sentences)
    return sentences[:n]


def teacher_labels(model: nn.Module, tokenizer, texts: list[str], max_length: int,  # noqa: ANN001
                   progress: bool = True) -> list[int]:
    """The classifier's predicted class of every text (`metrics.predict_logits`; the model's
    train/eval mode is restored)."""
    from mlfs_edge.metrics import predict_logits

    was_training = model.training
    logits = predict_logits(model, tokenizer, texts, max_length=max_length,
                            progress="teacher labels augmentation" if progress else None)
    model.train(was_training)
    return logits.argmax(-1).tolist()
