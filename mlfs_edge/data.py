"""Datasets: the bundled ones (offline, from installed packages) and the user's own files.

Splits are deterministic: the examples are shuffled once with ``random.Random(SPLIT_SEED)`` and cut
80 % / 10 % / 10 % into train / dev / test (documents for language-model text: 90 / 5 / 5). The same
seed and fractions are used everywhere in the project, so every method is judged on the same test set.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlfs_edge.assets import asset_path

SPLIT_SEED = 20240402  # arXiv 2404.01353, the MLFS paper
CLASSIFICATION_FRACTIONS = (0.8, 0.1, 0.1)
LM_FRACTIONS = (0.9, 0.05, 0.05)


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None) -> Split:
        """The first n examples (the split is already shuffled), or all when n is None."""
        if n is None or n >= len(self.texts):
            return self
        return Split(self.texts[:n], self.labels[:n])


@dataclass(frozen=True)
class ClassificationDataset:
    name: str
    label_names: list[str]
    train: Split
    dev: Split
    test: Split

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Split:
        if name not in ("train", "dev", "test"):
            raise ValueError(f"unknown split {name!r}; use train, dev or test")
        return getattr(self, name)


@dataclass(frozen=True)
class TextCorpus:
    """Documents for language modelling, split by document."""

    name: str
    train: list[str]
    dev: list[str]
    test: list[str]


def _cut(n: int, fractions: Sequence[float]) -> tuple[int, int]:
    n_train = round(n * fractions[0])
    n_dev = round(n * fractions[1])
    return n_train, n_train + n_dev


def split_examples(texts: list[str], labels: list[int], name: str, label_names: list[str]) -> ClassificationDataset:
    order = list(range(len(texts)))
    random.Random(SPLIT_SEED).shuffle(order)
    a, b = _cut(len(order), CLASSIFICATION_FRACTIONS)

    def take(idx: list[int]) -> Split:
        return Split([texts[i] for i in idx], [labels[i] for i in idx])

    return ClassificationDataset(name, label_names, take(order[:a]), take(order[a:b]), take(order[b:]))


# --- bundled classification datasets --------------------------------------------------------------


def _rotten_tomatoes() -> ClassificationDataset:
    path = asset_path("rotten_tomatoes")
    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        next(f)  # header: id, sentiment, text
        for line in f:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) != 3:
                continue
            score = float(parts[1])
            if abs(score) <= 0.5:  # near-neutral VADER scores are dropped (binary task)
                continue
            texts.append(parts[2].strip())
            labels.append(1 if score > 0 else 0)
    return split_examples(texts, labels, "rotten_tomatoes", ["negative", "positive"])


TREC_LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
TREC_LABEL_WORDS = ["abbreviation", "description", "entity", "person", "location", "number"]


def _trec() -> ClassificationDataset:
    path = asset_path("trec")
    lines = path.read_text(encoding="latin-1").splitlines()[10000:]
    texts, labels = [], []
    for line in lines:
        tag, _, question = line.partition(" ")
        coarse = tag.split(":", 1)[0]
        if coarse in TREC_LABELS and question.strip():
            texts.append(question.strip())
            labels.append(TREC_LABELS.index(coarse))
    return split_examples(texts, labels, "trec", list(TREC_LABELS))


def _sms_spam() -> ClassificationDataset:
    path = asset_path("sms_spam")
    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            texts.append(row["text"].strip())
            labels.append(int(row["spam"]))
    return split_examples(texts, labels, "sms_spam", ["ham", "spam"])


BUILTIN_CLASSIFICATION = {"rotten_tomatoes": _rotten_tomatoes, "trec": _trec, "sms_spam": _sms_spam}


# --- the user's own files -------------------------------------------------------------------------


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        return rows
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow: pip install 'mlfs-edge[data]'") from None
        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl or .parquet")


def load_classification_file(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
) -> ClassificationDataset:
    """A CSV / JSONL / Parquet file with a text and a label column, split like the bundled data.

    Label values are compared as strings. With ``labels`` the label set (and its order) is fixed and
    any other value is an error; without it the sorted distinct values are used.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: the file has no rows")
    columns = list(rows[0].keys())
    for col, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if col not in rows[0]:
            raise ValueError(f"{path}: no column {col!r} (columns: {', '.join(map(str, columns))}); pass {flag}")
    texts, raw = [], []
    for i, row in enumerate(rows, 1):
        text, label = row.get(text_column), row.get(label_column)
        if text is None or str(text).strip() == "":
            raise ValueError(f"{path}: row {i} has an empty {text_column!r}")
        if label is None or str(label).strip() == "":
            raise ValueError(f"{path}: row {i} has an empty {label_column!r}")
        texts.append(str(text).strip())
        raw.append(str(label).strip())
    label_names = list(labels) if labels is not None else sorted(set(raw))
    index = {name: i for i, name in enumerate(label_names)}
    for i, value in enumerate(raw, 1):
        if value not in index:
            raise ValueError(f"{path}: row {i} has unknown label {value!r}; known labels: {', '.join(label_names)}")
    if len(label_names) < 2:
        raise ValueError(f"{path}: a classifier needs at least 2 labels, found {label_names}")
    return split_examples(texts, [index[v] for v in raw], path.stem, label_names)


def load_classification(
    name_or_path: str,
    text_column: str = "text",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
) -> ClassificationDataset:
    """A bundled dataset by name (rotten_tomatoes, trec, sms_spam) or the user's file by path."""
    if name_or_path in BUILTIN_CLASSIFICATION:
        return BUILTIN_CLASSIFICATION[name_or_path]()
    path = Path(name_or_path)
    if path.suffix or path.exists():
        return load_classification_file(path, text_column, label_column, labels)
    raise ValueError(
        f"unknown dataset {name_or_path!r}: use one of {', '.join(BUILTIN_CLASSIFICATION)} "
        "or a path to a .csv/.jsonl/.parquet file"
    )


# --- language-model text --------------------------------------------------------------------------


def _news() -> list[str]:
    with zipfile.ZipFile(asset_path("news")) as z, z.open("NewsArticles.csv") as f:
        reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", errors="replace"))
        docs = [f"{r['title'].strip()}\n{r['text'].strip()}" for r in reader if r["text"].strip()]
    return docs


def _hamlet() -> list[str]:
    # One document per scene: scenes are the natural unit and keep the splits from sharing passages.
    text = asset_path("hamlet").read_text(encoding="utf-8", errors="replace")
    scenes, current = [], []
    for line in text.splitlines():
        if line.startswith("SCENE") and current:
            scenes.append("\n".join(current).strip())
            current = []
        current.append(line)
    if current:
        scenes.append("\n".join(current).strip())
    return [s for s in scenes if s]


BUILTIN_TEXT = {"news": _news, "hamlet": _hamlet}


def split_documents(docs: list[str], name: str) -> TextCorpus:
    """Documents shuffled with SPLIT_SEED and cut 90/5/5 (whole documents never straddle splits)."""
    order = list(range(len(docs)))
    random.Random(SPLIT_SEED).shuffle(order)
    a, b = _cut(len(order), LM_FRACTIONS)
    return TextCorpus(name, [docs[i] for i in order[:a]], [docs[i] for i in order[a:b]], [docs[i] for i in order[b:]])


def load_text(name: str) -> TextCorpus:
    if name not in BUILTIN_TEXT:
        raise ValueError(f"unknown text corpus {name!r}; use one of {', '.join(BUILTIN_TEXT)}")
    return split_documents(BUILTIN_TEXT[name](), name)


def load_text_file(path: str | Path, text_column: str = "text") -> TextCorpus:
    """The user's language-model text: a .txt file (documents separated by blank lines) or a .jsonl
    file (one document per row, in `text_column`), split by document like the bundled corpora."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = path.read_text(encoding="utf-8", errors="replace")
        docs = [d.strip() for d in re.split(r"\n\s*\n", text) if d.strip()]
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_rows(path)
        if rows and text_column not in rows[0]:
            raise ValueError(f"{path}: no column {text_column!r} (columns: {', '.join(map(str, rows[0]))}); "
                             "set text_column")
        docs = [str(r.get(text_column) or "").strip() for r in rows]
        docs = [d for d in docs if d]
    else:
        raise ValueError(f"{path}: language-model text must be a .txt or .jsonl file, not {suffix or 'no suffix'!r}")
    corpus = split_documents(docs, path.stem)
    if not corpus.train or not corpus.test:
        raise ValueError(f"{path}: {len(docs)} document(s) is too few to split 90/5/5 by document "
                         "(a .txt file needs blank lines between documents; give at least 10)")
    return corpus


def read_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped: one text each (sentences to embed)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def load_lm_text(name_or_path: str, text_column: str = "text") -> TextCorpus:
    """A bundled text corpus (news, hamlet) or the user's .txt / .jsonl file."""
    if name_or_path in BUILTIN_TEXT:
        return load_text(name_or_path)
    if name_or_path in BUILTIN_CLASSIFICATION:
        raise ValueError(f"{name_or_path!r} is a classification dataset; a language-model (causal_lm) run needs "
                         f"text: {', '.join(BUILTIN_TEXT)} or a .txt/.jsonl file")
    path = Path(name_or_path)
    if path.suffix or path.exists():
        return load_text_file(path, text_column)
    raise ValueError(f"unknown text corpus {name_or_path!r}: use one of {', '.join(BUILTIN_TEXT)} "
                     "or a path to a .txt/.jsonl file")
