"""Lower an encoder (sub-network) to an ExecuTorch ``.pte`` for the XNNPACK backend.

Pipeline: ``EncoderForExport`` → ``torch.export`` (dynamic sequence length) → [int8: PT2E
``prepare_pt2e`` / calibrate / ``convert_pt2e`` with ``XNNPACKQuantizer``, re-export] →
``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])`` → ``to_executorch``.

dtypes:
- fp32: as trained.
- fp16: weights and activations in half (XNNPACK fp16 kernels), LayerNorms in float32 (their
  variance overflows fp16 on MiniLM's outlier activations); outputs are cast back to float32.
  On x86 CPUs without native fp16 arithmetic this runs slower than fp32: a size option that pays on
  ARMv8.2+ phones.
- int8: the linears through PT2E, symmetric per-output-channel int8 weights (range ±127, the same
  scales as ``mlfs_edge.quant.scheme``) with int8 activations, ``dynamic`` (per-token ranges at run
  time, the default: best accuracy and latency) or ``static`` (per-tensor ranges calibrated on real
  sentences). The embedding tables, which XNNPACK's quantizer leaves in float and which are half of
  MiniLM's parameters, are stored as weight-only int8 per row (``Int8Embedding``, the same scheme).

Sequence length is dynamic (``torch.export.Dim``) from ``min_length`` = 2 (``[CLS] [SEP]``) up to
``max_length`` (at most 512 and the model's position table); batch is 1. ExecuTorch plans memory for
the largest length, so a smaller ``max_length`` also means a smaller arena.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlfs_edge.atomic import write_atomically
from mlfs_edge.export.manifest import DTYPES, Manifest, sha256_hex
from mlfs_edge.export.wrapper import OUTPUTS, EncoderForExport
from mlfs_edge.families import check_stage
from mlfs_edge.quant import Int8Config, quantize

INT8_MODES = ("dynamic", "static")
MIN_LENGTH = 2
MAX_LENGTH_LIMIT = 512


@dataclass(frozen=True)
class ExportConfig:
    dtype: str = "fp32"  # fp32 | fp16 | int8
    output: str = "logits"  # logits | embedding
    max_length: int = 128
    int8_mode: str = "dynamic"  # dynamic | static
    calibration_texts: tuple[str, ...] = ()  # real sentences, needed by int8 static

    def validate(self, model: nn.Module) -> ExportConfig:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output {self.output!r}; choose one of {', '.join(OUTPUTS)}")
        if self.int8_mode not in INT8_MODES:
            raise ValueError(f"unknown int8 mode {self.int8_mode!r}; choose one of {', '.join(INT8_MODES)}")
        positions = getattr(model.config, "max_position_embeddings", MAX_LENGTH_LIMIT)
        limit = min(MAX_LENGTH_LIMIT, positions)
        if not MIN_LENGTH <= self.max_length <= limit:
            raise ValueError(f"max length {self.max_length} out of range: use {MIN_LENGTH}..{limit} "
                             f"(the model has {positions} positions; exports stop at {MAX_LENGTH_LIMIT})")
        if self.dtype == "int8" and self.int8_mode == "static" and not self.calibration_texts:
            raise ValueError("int8 static needs calibration sentences (calibration_texts); or use int8_mode='dynamic'")
        return self


def export_pte(model: nn.Module, tokenizer: Any, out_dir: str | Path, name: str, cfg: ExportConfig,
               subnet: dict[str, list[int]] | None = None) -> Path:
    """Export `model` (a HF BERT-family model, left unchanged) to ``out_dir/name.pte`` with its manifest
    ``out_dir/name.json`` and the tokenizer in ``out_dir/tokenizer/``; returns the manifest path.

    Files are written atomically (temp file + rename, manifest last): a failure leaves the previous
    files or none."""
    cfg.validate(model)
    out_dir = Path(out_dir)
    program = lower_to_executorch(model, tokenizer, cfg)
    labels = [str(v) for _, v in sorted((getattr(model.config, "id2label", None) or {}).items())]
    manifest = Manifest(
        pte=f"{name}.pte", sha256=sha256_hex(program), size_bytes=len(program), dtype=cfg.dtype,
        quantization=_quantization_info(cfg), output=cfg.output,
        output_dim=len(labels) if cfg.output == "logits" else model.config.hidden_size,
        labels=labels if cfg.output == "logits" else [], min_length=MIN_LENGTH, max_length=cfg.max_length,
        tokenizer=_save_tokenizer(tokenizer, out_dir), subnet=subnet, model_config=_model_config(model),
        versions=_versions())
    pte_path, manifest_path = out_dir / manifest.pte, out_dir / f"{name}.json"
    write_atomically(pte_path, lambda tmp: tmp.write_bytes(program))
    try:
        write_atomically(manifest_path, lambda tmp: tmp.write_text(manifest.to_json()))
    except BaseException:
        pte_path.unlink(missing_ok=True)
        raise
    return manifest_path


def lower_to_executorch(model: nn.Module, tokenizer: Any, cfg: ExportConfig) -> bytes:
    """The ``.pte`` program bytes for `model` as `cfg` says (the model itself is not modified)."""
    check_stage(model.config, "pte")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torch.export import Dim, export

    model = copy.deepcopy(model).eval()
    if cfg.dtype == "fp16":
        model = model.half()
        _layer_norms_in_fp32(model)
    elif cfg.dtype == "int8":
        quantize(model, Int8Config(linears=False))  # weight-only int8 embedding tables
    wrapper = EncoderForExport(model, cfg.output).eval()
    seq = Dim("seq", min=MIN_LENGTH, max=cfg.max_length)
    dynamic = {"input_ids": {1: seq}, "attention_mask": {1: seq}}
    example_len = min(cfg.max_length, 16)
    example = (torch.ones(1, example_len, dtype=torch.long), torch.ones(1, example_len, dtype=torch.long))
    with torch.no_grad():
        program = export(wrapper, example, dynamic_shapes=dynamic)
        if cfg.dtype == "int8":
            program = export(_pt2e_int8(program.module(), tokenizer, cfg), example, dynamic_shapes=dynamic)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        return edge.to_executorch().buffer


class _Fp32LayerNorm(nn.Module):
    """LayerNorm computed in float32 inside an fp16 model: its variance of hidden states with
    outliers (MiniLM has values in the hundreds) overflows fp16's 65504 and wrecks the output."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.normalized_shape, self.eps = norm.normalized_shape, norm.eps
        self.weight = nn.Parameter(norm.weight.detach().float(), requires_grad=False)
        self.bias = nn.Parameter(norm.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.to(x.dtype)


def _layer_norms_in_fp32(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.LayerNorm):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, _Fp32LayerNorm(module))


def _pt2e_int8(graph: nn.Module, tokenizer: Any, cfg: ExportConfig) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = cfg.int8_mode == "dynamic"
    scheme = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    quantizer = XNNPACKQuantizer().set_global(scheme)
    prepared = prepare_pt2e(graph, quantizer)
    # Dynamic ranges are computed at run time; one pass still traces the observers. Static ranges are
    # calibrated on real sentences, each at its own length (as they will run).
    texts = cfg.calibration_texts if not dynamic else (cfg.calibration_texts[:1] or ("calibration",))
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if ids.shape[1] < MIN_LENGTH:
            continue
        prepared(ids, mask)
    return convert_pt2e(prepared)


def _quantization_info(cfg: ExportConfig) -> dict[str, Any]:
    if cfg.dtype != "int8":
        return {}
    return {"linear": f"XNNPACK int8 {cfg.int8_mode}: weights symmetric per output channel [-127, 127]",
            "activations": "per token at run time" if cfg.int8_mode == "dynamic" else
            f"per tensor, calibrated on {len(cfg.calibration_texts)} sentences",
            "embeddings": "weight-only int8 per row (mlfs_edge.quant.scheme)"}


def _model_config(model: nn.Module) -> dict[str, Any]:
    c = model.config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "attention_head_size",
            "intermediate_size", "vocab_size", "max_position_embeddings")
    return {k: getattr(c, k) for k in keys if hasattr(c, k)}


def _save_tokenizer(tokenizer: Any, out_dir: Path) -> dict[str, Any]:
    """Save the tokenizer to ``out_dir/tokenizer`` (atomically, shared by the exports in out_dir)."""
    target = out_dir / "tokenizer"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out_dir))
    try:
        tokenizer.save_pretrained(tmp)
        vocab = getattr(tokenizer, "vocab", None)
        if isinstance(vocab, dict) and not (tmp / "vocab.txt").exists():
            # WordPiece vocabulary, one token per line in id order: what a small app tokenizer reads.
            tokens = sorted(vocab, key=vocab.__getitem__)
            (tmp / "vocab.txt").write_text("".join(f"{t}\n" for t in tokens))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(p.name for p in target.iterdir())
    return {"dir": "tokenizer", "files": files, "vocab": "tokenizer/vocab.txt" if "vocab.txt" in files else None,
            "do_lower_case": bool(getattr(tokenizer, "do_lower_case", False)),
            "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id, "unk_token_id": tokenizer.unk_token_id}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mlfs-edge", "torch", "executorch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def export_many(model: nn.Module, tokenizer: Any, out_dir: str | Path, name: str,
                dtypes: Sequence[str], base: ExportConfig, subnet: dict[str, list[int]] | None = None) -> list[Path]:
    """One export per dtype: ``out_dir/name-<dtype>.pte`` (+ manifest); returns the manifest paths."""
    from dataclasses import replace

    return [export_pte(model, tokenizer, out_dir, f"{name}-{dtype}", replace(base, dtype=dtype), subnet)
            for dtype in dtypes]
