"""The JSON manifest written beside each ``.pte``: everything an app needs to feed and read it.

An app (or ``mlfs_edge.export.runtime.PteModel``) reads ``<name>.json``, checks the ``.pte`` against
its sha256, tokenizes with the vocabulary named there (WordPiece, lower-cased for MiniLM), pads or
truncates to at most ``max_length`` tokens, and calls ``forward(input_ids int64 [1, seq],
attention_mask int64 [1, seq])`` with ``min_length ≤ seq ≤ max_length``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "mlfs-edge-pte"
VERSION = 1
DTYPES = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Manifest:
    pte: str  # file name of the program, beside the manifest
    sha256: str
    size_bytes: int
    dtype: str  # fp32 | fp16 | int8
    quantization: dict[str, Any]  # how int8 was made (empty for fp32/fp16)
    output: str  # logits | embedding
    output_dim: int
    labels: list[str]  # class names for logits (empty for embeddings)
    min_length: int
    max_length: int
    tokenizer: dict[str, Any]  # files (relative to the manifest) and special token ids
    subnet: dict[str, list[int]] | None  # SubnetConfig.to_dict() of the sub-network, None: whole model
    model_config: dict[str, Any]  # the exported model's dimensions
    versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Load and validate a manifest; ValueError saying what to do when it is not usable."""
        path = Path(path)
        redo = "re-export it with `mlfs-edge export`"
        if not path.is_file():
            raise FileNotFoundError(f"manifest {path} does not exist; {redo}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"manifest {path} is not valid JSON ({e}); {redo}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not an mlfs-edge .pte manifest (format {FORMAT!r} expected); {redo}")
        if data.get("version") != VERSION:
            raise ValueError(f"manifest {path} has version {data.get('version')!r}, this mlfs-edge reads "
                             f"version {VERSION}; {redo}")
        names = set(cls.__dataclass_fields__)
        missing = sorted(names - set(data) - {"versions"})
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"manifest {path} is malformed (missing: {', '.join(missing) or '-'}; unknown: "
                             f"{', '.join(unknown) or '-'}); {redo}")
        manifest = cls(**data)
        if manifest.dtype not in DTYPES:
            raise ValueError(f"manifest {path}: unknown dtype {manifest.dtype!r}; {redo}")
        if not (isinstance(manifest.max_length, int) and 1 <= manifest.min_length <= manifest.max_length):
            raise ValueError(f"manifest {path}: bad length range {manifest.min_length}..{manifest.max_length}; {redo}")
        return manifest

    def pte_path(self, manifest_path: str | Path) -> Path:
        return Path(manifest_path).parent / self.pte

    def verify_pte(self, manifest_path: str | Path) -> bytes:
        """The program's bytes, after checking size and sha256 against the manifest."""
        pte = self.pte_path(manifest_path)
        if not pte.is_file():
            raise FileNotFoundError(f"{pte} (named by {manifest_path}) does not exist; re-export with "
                                    "`mlfs-edge export`")
        data = pte.read_bytes()
        if len(data) != self.size_bytes or sha256_hex(data) != self.sha256:
            raise ValueError(f"{pte} is corrupt or was replaced: its size/sha256 do not match {manifest_path}; "
                             "re-export with `mlfs-edge export`")
        return data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


