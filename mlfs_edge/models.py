"""Loading and saving Hugging Face model folders, the way every layer of the project does it
(eager attention, fp32, label names in the config, folders written atomically with an mlfs_meta.json)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mlfs_edge.atomic import write_dir_atomically


def load_classifier(model_dir: str | Path, num_labels: int, label_names: list[str]):  # noqa: ANN201
    """An AutoModelForSequenceClassification over a (base or already fine-tuned) model folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh classifier head's "newly initialized" notice is expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=num_labels, id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)}, attn_implementation="eager")
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


def load_causal_lm(path: str | Path):  # noqa: ANN201
    """(model, tokenizer) of a causal LM folder, fp32, eager attention (as every other path here)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return model, AutoTokenizer.from_pretrained(path)


def save_atomically(model, tokenizer, out_dir: Path, meta: dict,  # noqa: ANN001
                    extra: Callable[[Path], None] | None = None) -> None:
    """model + tokenizer + mlfs_meta.json (+ whatever `extra` writes into the folder), all or nothing."""
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "mlfs_meta.json").write_text(json.dumps(meta, indent=2))
        if extra is not None:
            extra(tmp)

    write_dir_atomically(Path(out_dir), fill)


def check_labels(model_dir: str | Path, label_names: list[str], data_name: str) -> None:
    """The data's labels against the model's (its config's id2label): another number of classes, or the
    same names in another order, would be scored against the wrong classes — an error. Other names
    (a model saved as neg/pos, data labelled negative/positive) are matched by position, and said so."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = config.get("id2label") or {}
    model_labels = [id2label.get(str(i), id2label.get(i)) for i in range(len(id2label))]
    data_labels = list(label_names)
    if not model_labels or model_labels == data_labels:
        return
    if len(model_labels) != len(data_labels) or (set(model_labels) == set(data_labels)):
        raise ValueError(f"{data_name} has the labels {data_labels} but the model {model_dir} was trained on "
                         f"{model_labels}: evaluate it on data with the same labels, in the same order")
    if not all(str(m).startswith("LABEL_") for m in model_labels):  # HF's placeholder names say nothing
        print(f"note: the model's labels {model_labels} are matched by position to {data_name}'s {data_labels}")
