"""Loading and saving Hugging Face model folders, the way every layer of the project does it
(eager attention, fp32, label names in the config, folders written atomically with an mlfs_meta.json),
and reading what a sentence-transformers folder adds on top (its pooling, `sentence_pooling`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# sentence-transformers' 1_Pooling/config.json keys (with its defaults) → the packed file's pooling
# names (mlfs_edge.runtime.format.POOLING_CODES); "cls" there is the raw first token, our "cls_token".
_ST_POOLING_KEYS = {"pooling_mode_cls_token": ("cls_token", False), "pooling_mode_mean_tokens": ("mean", True),
                    "pooling_mode_max_tokens": ("max", False),
                    "pooling_mode_mean_sqrt_len_tokens": ("mean_sqrt_len", False),
                    "pooling_mode_weightedmean_tokens": ("weightedmean", False),
                    "pooling_mode_lasttoken": ("lasttoken", False)}
_ST_POOLING_NAMES = {"cls": "cls_token", "mean": "mean", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len",
                     "weightedmean": "weightedmean", "lasttoken": "lasttoken"}
SENTENCE_POOLINGS = ("mean", "cls_token", "max", "mean_sqrt_len", "lasttoken")  # what the engine computes


@dataclass(frozen=True)
class SentencePooling:
    """How a sentence-transformers folder turns token states into its sentence embedding."""

    mode: str  # one of SENTENCE_POOLINGS
    normalize: bool  # a Normalize module follows the pooling
    max_seq_length: int | None  # sentence_bert_config.json: inputs are truncated to this many tokens
    do_lower_case: bool  # sentence_bert_config.json: texts are lower-cased before tokenizing


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def sentence_pooling(folder: str | Path) -> SentencePooling | None:
    """The pooling of a sentence-transformers model folder (modules.json → its Pooling module's
    config.json, whether a Normalize module follows; sentence_bert_config.json), or None for a folder
    without modules.json. A pipeline the engine cannot reproduce (another module, several poolings
    concatenated, weighted-mean pooling) or a broken config is a one-line ValueError."""
    folder = Path(folder)
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").is_file() else None
    if modules is None:
        return None
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                for m in modules):
        raise ValueError(f"{folder / 'modules.json'}: expected a list of {{\"type\": ..., \"path\": ...}} modules")
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(f"{folder}: the sentence-transformers pipeline {' → '.join(kinds)} is not what the engine "
                         "runs (Transformer → Pooling, optionally → Normalize)")
    if modules[0].get("path", ""):
        raise ValueError(f"{folder}: the transformer lives in the subfolder {modules[0]['path']!r}; the engine packs "
                         "a folder whose own config.json is the transformer")
    config_path = folder / str(modules[1].get("path", "")) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder}: the Pooling module's config {config_path} is missing")
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object of pooling_mode_* settings")
    if config.get("pooling_mode") is not None:  # the string form sentence-transformers also accepts
        name = config["pooling_mode"]
        if name not in _ST_POOLING_NAMES:
            raise ValueError(f"{config_path}: unknown pooling_mode {name!r} (known: {', '.join(_ST_POOLING_NAMES)})")
        modes = [_ST_POOLING_NAMES[name]]
    else:
        for key in config:
            if key.startswith("pooling_mode_") and key not in _ST_POOLING_KEYS:
                raise ValueError(f"{config_path}: unknown pooling mode {key!r}")
        bad = [k for k in _ST_POOLING_KEYS if not isinstance(config.get(k, False), bool)]
        if bad:
            raise ValueError(f"{config_path}: {bad[0]} must be true or false, got {config[bad[0]]!r}")
        modes = [mode for key, (mode, default) in _ST_POOLING_KEYS.items() if config.get(key, default)]
    if len(modes) != 1:
        found = "no pooling mode is enabled" if not modes else "concatenates " + " + ".join(modes)
        raise ValueError(f"{config_path}: {found}; the engine computes exactly one")
    if modes[0] not in SENTENCE_POOLINGS:
        raise ValueError(f"{config_path}: {modes[0]} pooling is not implemented by the engine "
                         f"({', '.join(SENTENCE_POOLINGS)} are)")
    bert_config = folder / "sentence_bert_config.json"
    settings = _read_json(bert_config) if bert_config.is_file() else {}
    if not isinstance(settings, dict):
        raise ValueError(f"{bert_config}: expected a JSON object")
    max_len = settings.get("max_seq_length")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"{bert_config}: max_seq_length must be a positive integer, got {max_len!r}")
    return SentencePooling(modes[0], len(kinds) == 3, max_len, bool(settings.get("do_lower_case", False)))
