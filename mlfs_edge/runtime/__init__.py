"""The native engine's Python face and the packed supernet file (``.mlfs``).

``pack(model, path, dtype=...)`` writes one file holding the whole reordered supernet;
``Engine.load(path).run(ids, mask, subnet=cfg)`` runs any of its sub-networks in C++.
Running needs only numpy and the native core; torch is imported only when packing.
"""

from typing import Any

from mlfs_edge.runtime.engine import DraftChoice, Engine, PackedFileError, TokenStream, cpu_model, expected_speedup

_PACKER_NAMES = ("frequency_order", "pack", "tokenizer_dir_for")
__all__ = ["DraftChoice", "Engine", "PackedFileError", "TokenStream", "cpu_model", "expected_speedup", *_PACKER_NAMES]


def __getattr__(name: str) -> Any:
    # The packer needs torch; load it on first use so that running a packed model does not.
    if name in _PACKER_NAMES:
        from mlfs_edge.runtime import packer

        return getattr(packer, name)
    raise AttributeError(f"module 'mlfs_edge.runtime' has no attribute {name!r}")
