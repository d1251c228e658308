"""Known third-party warnings that a user of `mlfs-edge` cannot act on, hidden narrowly.

Every entry below matches ONE message (a regular expression) from ONE logger or ONE warning category
(and module), says where it comes from and why nothing can be done about it from here. Nothing else
is hidden: an unknown warning still reaches the terminal, and `mlfs-edge --verbose` (which skips
`install`) shows these too. The filters act where the noisy library logs or warns: a `logging.Filter`
on the library's own logger, a `warnings` filter on the message and category, so they apply whenever
that library is imported later.

Only the command line installs them (`mlfs_edge.cli.main`); importing mlfs_edge as a library changes
no logging or warnings state. The list is checked by tests/test_clean_output.py, which runs each
command's quick path and fails on any warning line not covered here.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownNoise:
    """One message to hide: from `logger` (a logging record) or of `category` (a warnings.warn)."""

    message: str  # regular expression, searched in the formatted message
    source: str  # which library emits it, and when
    why: str  # why the user cannot act on it
    logger: str | None = None  # the emitting logger's exact name (logging records)
    category: type[Warning] | None = None  # the warning class (warnings.warn)
    module: str = ""  # warnings: regex on the module the warning is attributed to ("" = any)


KNOWN: tuple[KnownNoise, ...] = (
    KnownNoise(
        message=r"^torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation "
                r"functions .* are deprecated",
        category=UserWarning, module=r"torch\.ao\.nn\.quantized\.",
        source="torch.ao quantize_dynamic (PyTorch's own dynamic int8, the PyTorch int8 row of bench and compare) "
               "creating its quantized weights",
        why="the measured peer is PyTorch's dynamic int8 as PyTorch ships it; its deprecation is PyTorch's roadmap"),
    KnownNoise(
        message=r"^Failed to load \S*torchao[/\\]_C_(mxfp8|cutlass_\w+)\.\S*\.so: ",
        logger="torchao",
        source="torchao/__init__.py on import (imported by peft, executorch and our int8 path): it tries every "
               "bundled _C*.so; _C_mxfp8 and _C_cutlass_90a are CUDA (sm90/sm100) kernels",
        why="CUDA-only kernels that cannot load in the CPU build; the CPU kernels mlfs-edge uses load fine"),
    KnownNoise(
        message=r"^<enum '\w+'> is an Enum subclass and is now natively supported by torch\.compile .*"
                r"register_constant\(\) on Enum subclasses is deprecated",
        logger="torch.utils._pytree",
        source="torch.utils._pytree.register_constant, called by torchao on import for its enums "
               "(KernelPreference, ScaleCalculationMode)",
        why="a deprecation between torchao and torch internals; nothing in the user's code or data calls it"),
    KnownNoise(
        message=r"^`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        source="torch.utils._pytree.LeafSpec, constructed (via copyreg) by torch.export while ExecuTorch and "
               "ONNX exports trace the model",
        why="torch's own export internals use the deprecated class; no argument of ours changes that"),
    KnownNoise(
        message=r"^`is_gradient_checkpointing` is deprecated and will be removed in v6",
        category=FutureWarning, module=r"transformers\.modeling_utils",
        source="transformers PreTrainedModel.is_gradient_checkpointing, read by peft's PeftModel when LoRA "
               "adapters are added (train, baselines)",
        why="peft reads the deprecated property; mlfs-edge never turns gradient checkpointing on"),
    KnownNoise(
        message=r"^torchvision is not installed\. Skipping torchvision::\w+$",
        logger="torch.onnx._internal.exporter._registration",
        source="torch.onnx (dynamo exporter) registering its torchvision op translations (nms, roi_align, ...) "
               "at the first ONNX export (compare, bench)",
        why="text models use no torchvision op; installing torchvision (a large download) would change nothing"),
    KnownNoise(
        message=r"^# The axis name: \w+ will not be used, since it shares the same shape constraints with another "
                r"axis: \w+\.",
        category=UserWarning, module=r"torch\.onnx\.",
        source="torch.onnx dynamic-shape renaming: input_ids and attention_mask share one sequence dimension, "
               "which torch.export names once",
        why="the two inputs' sequence axes are the same dimension by design; the exported model is correct"),
    KnownNoise(
        message=r"^Please consider (to run )?pre-processing before quantization\. ",
        logger="root",
        source="onnxruntime.quantization.quantize_dynamic/quantize_static (logging.warning on the root logger) "
               "for the ONNX Runtime int8 rows of compare and bench",
        why="ORT's shape-inference pre-pass targets static image models; the int8 model is measured against "
            "fp32 in the table, which is the check that matters"),
)


class _DropKnown(logging.Filter):
    """Drops the records of one logger whose message matches one of the known patterns."""

    def __init__(self, patterns: list[re.Pattern[str]]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge: let it through
            return True
        return not any(p.search(message) for p in self.patterns)


_installed = False


def installed() -> bool:
    """Whether this process hides the KNOWN messages (so that its worker processes do too)."""
    return _installed


def install() -> None:
    """Hide the KNOWN messages (idempotent). `mlfs-edge --verbose` does not call it."""
    global _installed
    _installed = True
    by_logger: dict[str, list[re.Pattern[str]]] = {}
    for noise in KNOWN:
        if noise.logger is not None:
            by_logger.setdefault(noise.logger, []).append(re.compile(noise.message))
        elif noise.category is not None:
            warnings.filterwarnings("ignore", message=noise.message.removeprefix("^"), category=noise.category,
                                    module=noise.module)
    for name, patterns in by_logger.items():
        target = logging.getLogger() if name == "root" else logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in target.filters):
            target.addFilter(_DropKnown(patterns))
    hide_library_bars()


def hide_library_bars() -> None:
    """Hugging Face's own bars ("Loading weights", "Writing model shards"): transformers draws one on
    every from_pretrained / save_pretrained, and a run loads and saves models a dozen times, each
    within a second here — they buried the lines that matter, even under --no-progress. mlfs-edge's
    own bars show the long work. A user's HF_HUB_DISABLE_PROGRESS_BARS=0 keeps them."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "0":
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub / transformers are imported
    if "huggingface_hub" in sys.modules:  # imported already: switch their bars off directly
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
