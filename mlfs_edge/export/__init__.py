"""ExecuTorch export of encoder sub-networks (``.pte`` + JSON manifest) and running them.

    manifest = export_pte(model, tokenizer, "out", "minilm-int8", ExportConfig(dtype="int8"))
    logits = PteModel(manifest)(["a fine film"])
"""

from mlfs_edge.export.lower import ExportConfig, export_many, export_pte, lower_to_executorch
from mlfs_edge.export.manifest import Manifest
from mlfs_edge.export.runtime import PteModel, xnnpack_runner
from mlfs_edge.export.wrapper import EncoderForExport

__all__ = ["EncoderForExport", "ExportConfig", "Manifest", "PteModel", "export_many", "export_pte",
           "lower_to_executorch", "xnnpack_runner"]
