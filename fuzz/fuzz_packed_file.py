"""Fuzz the .mlfs reader (csrc/io/packed_file.cpp) and the engine's binding of tensors, with atheris.

Every input is handed to ``Engine.from_bytes``; the only allowed outcomes are a loaded engine (which
then runs one short input) or a PackedFileError. A crash, hang or any other exception is a bug.

Random bytes almost never pass the CRC-32, so the custom mutator re-seals half of the mutated files
with a correct checksum: those reach the header, directory and tensor checks behind it.

    .venv/bin/python fuzz/fuzz_packed_file.py -max_total_time=60 build/fuzz-corpus
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np

    from mlfs_edge.runtime import Engine, PackedFileError
    from mlfs_edge.runtime import format as fmt


def seal(data: bytes) -> bytes:
    """`data` with a correct checksum (when it is long enough to hold one)."""
    if len(data) < fmt.HEADER_SIZE:
        return data
    buf = bytearray(data)
    struct.pack_into("<I", buf, fmt.CHECKSUM_OFFSET, fmt.checksum(buf))
    return bytes(buf)


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    mutated = atheris.Mutate(data, max_size)
    return seal(mutated) if seed % 2 else mutated


def test_one_input(data: bytes) -> None:
    try:
        engine = Engine.from_bytes(data)
    except PackedFileError:
        return
    if engine.kind == "decoder":
        if engine.max_positions < 2:
            return
        out = engine.generate([0], max_new_tokens=1, stop_tokens=[])
        assert len(out) == 1 and 0 <= out[0] < engine.arch.vocab_size
        return
    seq = min(4, engine.max_positions)
    ids = np.zeros((1, seq), np.int64)
    out = engine.run(ids, np.ones_like(ids))
    assert out.shape == (1, engine.output_dim)


def make_seed_corpus(folder: Path) -> None:
    """A few tiny valid packed files (fp32 / fp16 / int8, encoder and classifier; decoders fp32 / int8
    / q4), a few KB each."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, LlamaConfig, LlamaForCausalLM

    from mlfs_edge.runtime import pack

    folder.mkdir(parents=True, exist_ok=True)
    cfg = dict(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
               max_position_embeddings=8, type_vocab_size=1)
    torch.manual_seed(0)
    for dtype in ("fp32", "fp16", "int8"):
        pack(BertModel(BertConfig(**cfg)), folder / f"seed-{dtype}.mlfs", dtype=dtype)
    pack(BertForSequenceClassification(BertConfig(num_labels=2, **cfg)), folder / "seed-cls.mlfs", dtype="int8")
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8))
    for dtype in ("fp32", "int8", "q4"):
        pack(llama, folder / f"seed-decoder-{dtype}.mlfs", dtype=dtype)


def main() -> None:
    corpus = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus is not None and not corpus.is_file() and not any(corpus.glob("seed-*.mlfs")):
        make_seed_corpus(corpus)
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
