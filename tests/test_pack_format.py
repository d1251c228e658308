"""The .mlfs packed file: layout, metadata, atomic writes, and rejection of every kind of bad file."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from mlfs_edge.quant.scheme import quantize_per_row
from mlfs_edge.runtime import Engine, PackedFileError, pack
from mlfs_edge.runtime import format as fmt


def tiny_config(**kw) -> BertConfig:
    base = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=40, attn_implementation="eager")
    return BertConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return BertModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("pack") / "tiny.mlfs"
    pack(tiny_model, path, dtype="fp32", importance_order={"heads": [[3, 1, 0, 2]] * 3})
    return path


def directory(data: bytes) -> dict[str, tuple[int, list[int], int, int]]:
    """name → (dtype code, shape, offset, nbytes), parsed independently of the C++ reader."""
    n = struct.unpack_from("<I", data, 28)[0]
    out = {}
    for i in range(n):
        name, code, ndim, *rest = struct.unpack_from("<64sII4QQQ", data, fmt.HEADER_SIZE + i * fmt.DIR_ENTRY_SIZE)
        shape, offset, nbytes = rest[:ndim], rest[4], rest[5]
        out[name.rstrip(b"\0").decode()] = (code, list(shape), offset, nbytes)
    return out


def with_checksum(data: bytearray) -> bytes:
    struct.pack_into("<I", data, fmt.CHECKSUM_OFFSET, fmt.checksum(data))
    return bytes(data)


def test_layout_header_directory_alignment_and_checksum(packed):
    data = packed.read_bytes()
    assert data[:8] == b"MLFSPACK"
    version, endian, size, crc = struct.unpack_from("<IIQI", data, 8)
    assert (version, endian, size) == (fmt.FORMAT_VERSION, 0x01020304, len(data))
    blank = bytearray(data)
    blank[24:28] = b"\0\0\0\0"
    assert crc == zlib.crc32(bytes(blank))
    entries = directory(data)
    assert {"emb.word", "emb.pos", "l0.q.w", "l2.ff2.b", "l1.ln2.w"} <= set(entries)
    for name, (_, _, offset, nbytes) in entries.items():
        assert offset % 64 == 0, name
        assert offset + nbytes <= len(data)
    assert entries["l0.ff1.w"][1] == [32, 64]  # W [out 64, in 32] stored transposed ("KN")


def test_engine_reads_dims_metadata_and_importance_order(packed, tiny_model):
    engine = Engine.load(packed)
    assert engine.arch.num_layers == 3 and engine.arch.hidden == 32 and engine.arch.num_heads == 4
    assert engine.dtype == "fp32" and engine.pooling == "mean" and engine.labels == []
    assert engine.file_size == packed.stat().st_size
    assert engine.metadata["importance_order"] == {"heads": [[3, 1, 0, 2]] * 3}
    assert engine.output_dim == 32
    assert engine.checksum == struct.unpack_from("<I", packed.read_bytes(), 24)[0]


def test_weights_are_stored_exactly(packed, tiny_model, tmp_path):
    data = packed.read_bytes()
    code, shape, off, nbytes = directory(data)["l1.ff1.w"]
    stored = np.frombuffer(data, np.float32, count=nbytes // 4, offset=off).reshape(shape)
    np.testing.assert_array_equal(stored.T, tiny_model.encoder.layer[1].intermediate.dense.weight.detach().numpy())

    int8_path = pack(tiny_model, tmp_path / "int8.mlfs", dtype="int8")
    data8 = int8_path.read_bytes()
    entries = directory(data8)
    q_want, s_want = quantize_per_row(tiny_model.encoder.layer[1].intermediate.dense.weight)
    code, shape, off, nbytes = entries["l1.ff1.w"]
    n_out, k_in = q_want.shape
    panels, k4 = -(-n_out // 32), -(-k_in // 4) * 4
    assert code == 2 and shape == [panels, 32 * k4]
    # "P32K4": element (k, n) at [n // 32, (k // 4) * 128 + (n % 32) * 4 + k % 4], zero padding
    p32 = np.frombuffer(data8, np.int8, nbytes, off).reshape(panels, k4 // 4, 32, 4)
    unpacked = p32.transpose(0, 2, 1, 3).reshape(panels * 32, k4)
    np.testing.assert_array_equal(unpacked[:n_out, :k_in], q_want.numpy())
    assert not unpacked[n_out:].any() and not unpacked[:, k_in:].any()
    _, _, off, nbytes = entries["l1.ff1.w.scale"]
    np.testing.assert_array_equal(np.frombuffer(data8, np.float32, nbytes // 4, off), s_want.numpy())
    _, shape, off, nbytes = entries["emb.word"]  # the embedding table stays row-major, per-row scales
    q_emb, _ = quantize_per_row(tiny_model.embeddings.word_embeddings.weight)
    np.testing.assert_array_equal(np.frombuffer(data8, np.int8, nbytes, off).reshape(shape), q_emb.numpy())
    assert entries["l1.ff1.b"][0] == 0  # biases stay fp32
    fp16_path = pack(tiny_model, tmp_path / "fp16.mlfs", dtype="fp16")
    assert directory(fp16_path.read_bytes())["l0.q.w"][0] == 1
    sizes = {p.name: p.stat().st_size for p in (packed, int8_path, fp16_path)}
    assert sizes["int8.mlfs"] < sizes["fp16.mlfs"] < sizes["tiny.mlfs"]


def test_classifier_records_labels_and_cls_pooling(tmp_path):
    torch.manual_seed(1)
    model = BertForSequenceClassification(tiny_config(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})).eval()
    engine = Engine.load(pack(model, tmp_path / "cls.mlfs"))
    assert engine.labels == ["neg", "neu", "pos"]
    assert engine.pooling == "cls" and engine.output_dim == 3


def test_pack_rejects_bad_arguments(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        pack(tiny_model, tmp_path / "x.mlfs", dtype="int4")
    with pytest.raises(ValueError, match="pooling"):
        pack(tiny_model, tmp_path / "x.mlfs", pooling="weightedmean")
    with pytest.raises(ValueError, match="LoRA adapters for modules"):
        pack(tiny_model, tmp_path / "x.mlfs", lora={"encoder.layer.9.attention.self.query": (
            torch.zeros(2, 32), torch.zeros(32, 2), 1.0)})
    with pytest.raises(ValueError, match="do not fit"):
        pack(tiny_model, tmp_path / "x.mlfs", lora={"encoder.layer.0.attention.self.query": (
            torch.zeros(2, 31), torch.zeros(32, 2), 1.0)})
    with pytest.raises(FileNotFoundError, match=r"config.json"):
        pack(tmp_path, tmp_path / "x.mlfs")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_write_is_atomic_and_replaces_whole_files(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "m.mlfs"
    pack(tiny_model, path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        pack(tiny_model, path, dtype="int8")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlfs"]  # the temp file was removed


# --- bad files: every one raises PackedFileError naming the problem -------------------------------


@pytest.mark.parametrize("length", [0, 7, 100, 255, 256, 300, 4096, -64, -1])
def test_truncated_files_are_rejected(packed, tmp_path, length):
    data = packed.read_bytes()
    cut = data[:length] if length >= 0 else data[:len(data) + length]
    bad = tmp_path / "cut.mlfs"
    bad.write_bytes(cut)
    with pytest.raises(PackedFileError, match=r"truncated|magic"):
        Engine.load(bad)
    with pytest.raises(PackedFileError, match=r"truncated|magic"):
        Engine.from_bytes(cut)


def test_corrupt_magic_version_endianness_and_checksum(packed):
    data = bytearray(packed.read_bytes())
    assert isinstance(Engine.from_bytes(bytes(data)), Engine)
    cases = {
        "magic": (0, b"GGUF\0\0\0\0"),
        f"format version {fmt.FORMAT_VERSION + 1}": (8, struct.pack("<I", fmt.FORMAT_VERSION + 1)),
        "endianness": (12, struct.pack(">I", 0x01020304)),
    }
    for what, (offset, patch) in cases.items():
        bad = bytearray(data)
        bad[offset:offset + len(patch)] = patch
        with pytest.raises(PackedFileError, match=what):
            Engine.from_bytes(with_checksum(bad))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    with pytest.raises(PackedFileError, match="checksum mismatch"):
        Engine.from_bytes(bytes(flipped))
    assert issubclass(PackedFileError, ValueError)


def test_directory_entries_are_checked_against_the_file(packed):
    data = bytearray(packed.read_bytes())
    entry0 = fmt.HEADER_SIZE

    def patched(offset: int, fmt_: str, value: int) -> bytes:
        bad = bytearray(data)
        struct.pack_into(fmt_, bad, offset, value)
        return with_checksum(bad)

    with pytest.raises(PackedFileError, match="outside the file"):
        Engine.from_bytes(patched(entry0 + 104, "<Q", (len(data) // 64) * 64))  # data offset past the end
    with pytest.raises(PackedFileError, match="outside the file"):
        Engine.from_bytes(patched(entry0 + 104, "<Q", 2**64 - 64))  # offset + size overflows
    with pytest.raises(PackedFileError, match="aligned"):
        Engine.from_bytes(patched(entry0 + 104, "<Q", 4096 + 4))
    with pytest.raises(PackedFileError, match="does not match its shape"):
        Engine.from_bytes(patched(entry0 + 112, "<Q", 12))
    with pytest.raises(PackedFileError, match="unknown dtype"):
        Engine.from_bytes(patched(entry0 + 64, "<I", 9))
    with pytest.raises(PackedFileError, match="bad shape"):
        Engine.from_bytes(patched(entry0 + 72, "<Q", 2**62))
    with pytest.raises(PackedFileError, match="tensor directory"):
        Engine.from_bytes(patched(28, "<I", 100000))
    with pytest.raises(PackedFileError, match="corrupt header"):
        Engine.from_bytes(patched(56 + 4, "<I", 0))  # hidden = 0


def test_missing_or_misshapen_tensors_are_named(tiny_model):
    tensors = {"emb.word": np.zeros((120, 32), np.float32)}
    dims = fmt.ModelDims(3, 32, 4, 8, 64, 120, 40, 2, 0, "mean", "fp32", 1e-12)
    with pytest.raises(PackedFileError, match=r"missing tensor 'emb.pos'"):
        Engine.from_bytes(fmt.encode(dims, tensors, {"arch": {}}))
    tensors["emb.word"] = np.zeros((121, 32), np.float32)
    with pytest.raises(PackedFileError, match=r"'emb.word' has shape"):
        Engine.from_bytes(fmt.encode(dims, tensors, {"arch": {}}))


def test_metadata_is_json_with_provenance(packed):
    data = packed.read_bytes()
    offset, nbytes = struct.unpack_from("<QQ", data, 40)
    meta = json.loads(data[offset:offset + nbytes])
    assert meta["arch"]["family"] == "bert" and meta["dtype"] == "fp32" and meta["pooling"] == "mean"
    assert meta["lora"] == {"adapted": [], "merged": False}


def test_load_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="mlfs-edge pack"):
        Engine.load(tmp_path / "nope.mlfs")


def test_is_current_tells_cached_files_to_repack(tmp_path):
    from mlfs_edge.runtime.format import FORMAT_VERSION, is_current

    old, new = tmp_path / "old.mlfs", tmp_path / "new.mlfs"
    head = bytearray(b"MLFSPACK" + struct.pack("<I", FORMAT_VERSION))
    new.write_bytes(bytes(head))
    old.write_bytes(bytes(head[:8]) + struct.pack("<I", FORMAT_VERSION - 1))
    assert is_current(new) and not is_current(old)
    assert not is_current(tmp_path / "missing.mlfs") and not is_current(tmp_path)
