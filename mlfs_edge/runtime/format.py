"""The ``.mlfs`` packed supernet file: layout constants and the byte-level writer.

The C++ reader (csrc/io/packed_file.cpp, csrc/include/mlfs/packed_file.h) is the other half of this
spec; both must change together (bump ``FORMAT_VERSION``).

Layout (all integers little-endian)::

    [0, 256)        header: magic "MLFSPACK", format version, endianness marker 0x01020304,
                    file size, CRC-32, tensor count, directory and metadata offsets, model dims;
                    version 2 adds the model kind (encoder / decoder) and the decoder's fields
                    (KV heads, RoPE theta and linear factor, flags: tied head, q/k/v bias;
                    later: normalised embedding). Pooling codes 2-5 and the normalise flag
                    (sentence-transformers' modes) were added within version 3: older readers
                    refuse such files as an unknown pooling code / flag.
                    Version 3 stores int8 weights in "P32K4" panels (was "K4N") and q4
                    weights in "P16" panels with fp16 scales (was "KN4", fp32 scales); older
                    files with int8 or q4 tensors must be re-packed, their fp32/fp16 files
                    still load. Version 1 files (encoders) still load.
                    Version 4 adds the family options (flags: LayerNorm with bias, GELU-tanh,
                    ungated MLP, biases on every Linear, q/k norms, post-norms, learned positions,
                    ReLU pooler; floats: attention scale, attention / final soft-caps, embedding
                    scale): one file format for GPT-2, Qwen3, Gemma / Gemma 2, Mistral, Phi-3 and
                    the RoBERTa / DistilBERT encoders. Older files read with every option off.
    [256, ...)      tensor directory: one 128-byte entry per tensor
                    (name[64] NUL-padded, dtype u32, ndim u32, shape u64[4], offset u64, nbytes u64)
    metadata        UTF-8 JSON: ArchSpec, importance order, labels, tokenizer, LoRA and source
                    provenance (not needed to compute, only to describe)
    tensor data     each tensor 64-byte aligned, in its own dtype

The CRC-32 (zlib's polynomial) covers the whole file with the 4 checksum bytes read as zero.

Tensors (written by mlfs_edge.runtime.packer; W is a Linear weight [out, in]):
    emb.word [vocab, hidden]            file dtype, row-major (+ emb.word.scale [vocab] for int8)
    emb.pos, emb.type, emb.ln.{w,b}     fp32
    l{i}.{q,k,v,o,ff1,ff2}.w            fp32/fp16: W^T [in, out] ("KN"); int8: [ceil(out/32),
                                        32*round_up(in, 4)] ("P32K4": panels of 32 outputs, each a
                                        run of groups of 4 inputs) + .w.scale [out]; see kernels.h
    l{i}.{q,...}.b, l{i}.{ln1,ln2}.{w,b}  fp32
    l{i}.{q,...}.lora_at [in, r], .lora_bt [r, out], .lora_s [1]   fp32, unmerged LoRA (optional)
    pooler.{w,b} (pooling "cls" only)   like a layer Linear;  cls.{w,b} (classifier)  fp32 KN
    attn.relbias [2 * max_positions - 1, num_heads]   fp32, optional (MPNet): the relative attention
                                        bias of offset j - i at row j - i + max_positions - 1
    (emb.pos starts at RoBERTa / MPNet's position padding_idx + 1; DistilBERT's emb.type is one zero row)
    ModernBERT (FLAG_PRE_NORM, FLAG_GATED_FFN, FLAG_POOLER_GELU_LN): no emb.pos / emb.type; attn.theta
    [num_layers] (RoPE base per layer), attn.window [num_layers] (a key j is visible from i when
    |i - j| < window; 0 = all), l{i}.ff1g (the GeGLU gate half), final.ln.{w,b}, pooler.ln.{w,b};
    l0.ln1 absent (the first layer's attention input is not normed)

Decoder tensors (Llama family; every Linear in the file dtype and its layout, q4 = "P16" panels
[ceil(out / 16), in / 32 * 320] bytes with the fp16 scales and minimums inline; see
csrc/include/mlfs/kernels.h):
    head.w                              the LM head W [vocab, hidden]; with tied embeddings it is
                                        also the embedding table (one copy), else emb.w holds it
    norm.w, l{i}.{attn_norm,mlp_norm}.w fp32 RMSNorm weights
    l{i}.{q,k,v,o,gate,up,down}.w       (+ l{i}.{q,k,v}.b fp32 with the q/k/v-bias flag, Qwen2)
  version 4 family options (flags in the header, the packer's per-family tensor map writes them):
    l{i}.{o,gate,up,down}.b             fp32, FLAG_LINEAR_BIAS (GPT-2: every Linear has a bias)
    norm.b, l{i}.{attn,mlp}_norm.b      fp32, FLAG_LAYERNORM (LayerNorm with bias, not RMSNorm)
    l{i}.{q,k}_norm.w [head_dim]        fp32, FLAG_QK_NORM (Qwen3: per-head RMSNorm before RoPE)
    l{i}.post_{attn,mlp}_norm.w         fp32, FLAG_POST_NORMS (Gemma 2: norms on each block's output)
    emb.pos [max_positions, hidden]     fp32, FLAG_LEARNED_POS (GPT-2: no RoPE)
    attn.window [num_layers]            fp32, optional: per-layer sliding window (0 = full attention)
    no l{i}.gate with FLAG_UNGATED (GPT-2: up -> GELU -> down); Gemma's (1 + w) norm weights are
    stored as 1 + w.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"MLFSPACK"
FORMAT_VERSION = 4
ENDIAN_MARKER = 0x01020304
HEADER_SIZE = 256
DIR_ENTRY_SIZE = 128
NAME_SIZE = 64
MAX_DIMS = 4
ALIGN = 64
CHECKSUM_OFFSET = 24  # byte offset of the u32 CRC-32 in the header

DTYPE_CODES = {"fp32": 0, "fp16": 1, "int8": 2, "q4": 3}
NUMPY_DTYPES = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.uint8}  # q4 tensors are their bytes
# "cls" is the BERT pooler (dense + tanh) on the first token; the others are sentence-transformers'
# modes over the raw last hidden states (csrc/include/mlfs/packed_file.h says each).
POOLING_CODES = {"mean": 0, "cls": 1, "cls_token": 2, "max": 3, "mean_sqrt_len": 4, "lasttoken": 5}
KIND_CODES = {"encoder": 0, "decoder": 1}
FLAG_TIED, FLAG_QKV_BIAS, FLAG_NORMALIZE = 1, 2, 4
# version 4 family options (csrc/io/packed_file.cpp reads the same bits)
FLAG_LAYERNORM, FLAG_GELU_TANH, FLAG_UNGATED, FLAG_LINEAR_BIAS = 8, 16, 32, 64
FLAG_QK_NORM, FLAG_POST_NORMS, FLAG_LEARNED_POS, FLAG_POOLER_RELU = 128, 256, 512, 1024
FLAG_PRE_NORM, FLAG_GATED_FFN, FLAG_POOLER_GELU_LN = 2048, 4096, 8192  # encoders (ModernBERT)
KIND_OFFSET = 104  # byte offset of the model kind (version 2)

# magic, version, endian, file_size, crc, n_tensors, dir_offset, meta_offset, meta_nbytes,
# num_layers, hidden, num_heads, head_dim, intermediate, vocab, max_positions, type_vocab,
# num_labels, pooling, weight_dtype, layer_norm_eps, kind, num_kv_heads, rope_theta,
# rope_linear_factor, flags; v4: attn_scale, attn_softcap, final_softcap, embed_scale
_HEADER = struct.Struct("<8sIIQIIQQQ" + "I" * 11 + "f" + "II" + "ff" + "I" + "ffff")
_DIR_ENTRY = struct.Struct(f"<{NAME_SIZE}sII{MAX_DIMS}QQQ8x")  # padded to 128 bytes
assert _HEADER.size <= HEADER_SIZE and _DIR_ENTRY.size == DIR_ENTRY_SIZE
assert struct.calcsize("<8sIIQ") == CHECKSUM_OFFSET
assert struct.calcsize("<8sIIQIIQQQ" + "I" * 11 + "f") == KIND_OFFSET


@dataclass(frozen=True)
class ModelDims:
    """What the engine needs to compute (mirrors mlfs::ModelDims in C++)."""

    num_layers: int
    hidden: int
    num_heads: int
    head_dim: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    num_labels: int  # 0: no classifier, the engine returns the pooled embedding
    pooling: str  # a key of POOLING_CODES: "mean" (over the attention mask), "cls" (pooler dense + tanh), ...
    dtype: str  # "fp32" | "fp16" | "int8" | "q4" (decoders): the Linear weights and the word embedding
    layer_norm_eps: float  # LayerNorm (encoder) or RMSNorm (decoder) epsilon
    kind: str = "encoder"  # "encoder" | "decoder"
    num_kv_heads: int = 0  # decoder: key/value heads (grouped-query attention)
    rope_theta: float = 10000.0
    rope_linear_factor: float = 1.0  # rope_scaling {"type": "linear", "factor": f}; 1 = none
    tied_embeddings: bool = False
    qkv_bias: bool = False
    normalize: bool = False  # encoder: L2-normalise the pooled embedding (sentence-transformers' Normalize)
    # version 4 family options (0 for a float = off / the default)
    layer_norm: bool = False  # decoder: LayerNorm with bias (GPT-2), not RMSNorm
    gelu_tanh: bool = False  # decoder MLP activation: GELU-tanh (GPT-2, Gemma's GeGLU), not SiLU
    ungated: bool = False  # decoder MLP: up -> act -> down (GPT-2), no gate
    linear_bias: bool = False  # decoder: o / gate / up / down carry biases too (GPT-2)
    qk_norm: bool = False  # decoder: per-head RMSNorm of q and k before RoPE (Qwen3)
    post_norms: bool = False  # decoder: RMSNorm on the attention and MLP outputs (Gemma 2)
    learned_pos: bool = False  # decoder: learned absolute positions (GPT-2), no RoPE
    pooler_relu: bool = False  # encoder: the pooler's activation is ReLU (DistilBERT), not tanh
    pre_norm: bool = False  # encoder: pre-LN layers + a final LayerNorm (ModernBERT), not post-LN
    gated_ffn: bool = False  # encoder: GeGLU, GELU(ff1 x) * (ff1g x) (ModernBERT)
    pooler_gelu_ln: bool = False  # encoder: pooler = dense + GELU + LayerNorm "pooler.ln" (ModernBERT's head)
    attn_scale: float = 0.0  # scores scale; 0 = 1 / sqrt(head_dim) (Gemma 2: query_pre_attn_scalar^-0.5)
    attn_softcap: float = 0.0  # cap * tanh(scores / cap) before the softmax (Gemma 2)
    final_softcap: float = 0.0  # the same on the logits (Gemma 2)
    embed_scale: float = 0.0  # the embeddings times this (Gemma: sqrt(hidden)); 0 = 1

    @property
    def flags(self) -> int:
        bits = ((self.tied_embeddings, FLAG_TIED), (self.qkv_bias, FLAG_QKV_BIAS), (self.normalize, FLAG_NORMALIZE),
                (self.layer_norm, FLAG_LAYERNORM),
                (self.gelu_tanh, FLAG_GELU_TANH), (self.ungated, FLAG_UNGATED), (self.linear_bias, FLAG_LINEAR_BIAS),
                (self.qk_norm, FLAG_QK_NORM), (self.post_norms, FLAG_POST_NORMS),
                (self.learned_pos, FLAG_LEARNED_POS), (self.pooler_relu, FLAG_POOLER_RELU),
                (self.pre_norm, FLAG_PRE_NORM), (self.gated_ffn, FLAG_GATED_FFN),
                (self.pooler_gelu_ln, FLAG_POOLER_GELU_LN))
        return sum(flag for on, flag in bits if on)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def checksum(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 of a packed file with its checksum field read as zero."""
    crc = zlib.crc32(data[:CHECKSUM_OFFSET])
    crc = zlib.crc32(b"\0\0\0\0", crc)
    return zlib.crc32(data[CHECKSUM_OFFSET + 4:], crc)


def encode(dims: ModelDims, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> bytes:
    """The bytes of a packed file holding `tensors` (name → C-contiguous fp32/fp16/int8 array)."""
    meta = json.dumps(metadata, sort_keys=True).encode()
    dir_offset = HEADER_SIZE
    meta_offset = dir_offset + DIR_ENTRY_SIZE * len(tensors)
    offset = _aligned(meta_offset + len(meta))
    entries, blobs = [], []
    reverse_codes = {np.dtype(v): k for k, v in NUMPY_DTYPES.items()}
    for name, arr in tensors.items():
        raw = name.encode()
        if not raw or len(raw) >= NAME_SIZE or not all(0x21 <= c <= 0x7E for c in raw):
            raise ValueError(f"tensor name {name!r} must be 1..{NAME_SIZE - 1} printable ASCII characters")
        if arr.dtype not in reverse_codes:
            raise ValueError(f"tensor {name}: dtype {arr.dtype} cannot be packed (fp32, fp16, int8 or q4 bytes)")
        if not 1 <= arr.ndim <= MAX_DIMS:
            raise ValueError(f"tensor {name}: {arr.ndim} dimensions, the format holds 1..{MAX_DIMS}")
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        shape = list(arr.shape) + [0] * (MAX_DIMS - arr.ndim)
        entries.append(_DIR_ENTRY.pack(raw, reverse_codes[arr.dtype], arr.ndim, *shape, offset, len(data)))
        blobs.append((offset, data))
        offset = _aligned(offset + len(data))
    file_size = offset
    buf = bytearray(file_size)
    buf[HEADER_SIZE:meta_offset] = b"".join(entries)
    buf[meta_offset:meta_offset + len(meta)] = meta
    for off, data in blobs:
        buf[off:off + len(data)] = data
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, ENDIAN_MARKER, file_size, 0, len(tensors), dir_offset, meta_offset, len(meta),
        dims.num_layers, dims.hidden, dims.num_heads, dims.head_dim, dims.intermediate, dims.vocab_size,
        dims.max_positions, dims.type_vocab_size, dims.num_labels, POOLING_CODES[dims.pooling],
        DTYPE_CODES[dims.dtype], dims.layer_norm_eps, KIND_CODES[dims.kind], dims.num_kv_heads, dims.rope_theta,
        dims.rope_linear_factor, dims.flags, dims.attn_scale, dims.attn_softcap, dims.final_softcap, dims.embed_scale)
    buf[:len(header)] = header
    struct.pack_into("<I", buf, CHECKSUM_OFFSET, checksum(buf))
    return bytes(buf)


def is_current(path: str | os.PathLike) -> bool:
    """Whether `path` is a packed file of this FORMAT_VERSION: a cached file of an older version (its
    int8 / q4 layouts may have changed) is re-packed rather than reused."""
    try:
        with open(path, "rb") as f:
            header = f.read(12)
    except OSError:
        return False
    return len(header) == 12 and header[:8] == MAGIC and struct.unpack_from("<I", header, 8)[0] == FORMAT_VERSION


def model_kind(header: bytes) -> str:
    """"encoder" or "decoder" from the first bytes of a packed file (version 1 files are encoders);
    the C++ reader validates everything else when the file is loaded."""
    if len(header) < HEADER_SIZE or header[:8] != MAGIC:
        return "encoder"  # not a packed file at all: the loader's own error message says why
    version = struct.unpack_from("<I", header, 8)[0]
    if version < 2:
        return "encoder"
    code = struct.unpack_from("<I", header, KIND_OFFSET)[0]
    return "decoder" if code == KIND_CODES["decoder"] else "encoder"


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename: a crash
    leaves the old file or none, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, text.encode())
