"""mlfs_edge: one pretrained transformer in, a palette of edge-ready sub-networks out.

The package is organised along the data flow (see README): ``supernet`` (elastic model, importance
reordering, sliceable LoRA) → ``train`` (multistage low-rank fine-tuning with distillation) →
``quant`` / ``export`` / ``runtime`` (int8/fp16, ExecuTorch, the C++ engine).
"""

import os

# Offline by design: models and data come from installed packages. Without this, transformers may
# try the hub (and wait for timeouts) on some code paths. Set HF_HUB_OFFLINE=0 to opt out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig

__version__ = "0.1.0"
__all__ = ["ArchSpec", "SearchSpace", "SubnetConfig", "__version__"]
