// The .mlfs packed supernet file, read-only and memory-mapped.
//
// Layout (little-endian; the writer is mlfs_edge/runtime/format.py, keep both in step):
//   [0, 256)   header: magic "MLFSPACK", format version, endianness marker 0x01020304, file size,
//              CRC-32 (zlib polynomial, over the whole file with its own 4 bytes read as 0),
//              tensor count, directory / metadata offsets, model dims; version 2 adds the model
//              kind (encoder / decoder) and the decoder's fields (KV heads, RoPE, norms, head);
//              version 3 changes the int8 weight layout (K4N -> P32K4 panels, mlfs/kernels.h);
//              pooling codes 2-5 and the normalise flag (4) were added within version 3 (older
//              readers refuse such files as an unknown pooling code / flag)
//              version 4 adds the family options (flags 8.. + attention scale, soft-caps, embedding scale)
//   directory  n_tensors entries of 128 bytes: name[64], dtype u32, ndim u32, shape u64[4],
//              offset u64, nbytes u64
//   metadata   UTF-8 JSON (provenance: ArchSpec, importance order, labels, tokenizer, LoRA)
//   data       tensors, each 64-byte aligned
// Every offset and size is checked against the file length before it is used: a truncated,
// corrupt or foreign file throws PackedFileError naming the problem, it never reads out of bounds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace mlfs {

// q4: 4-bit group-wise weights with their fp16 scales / minimums inline (the "P16" panel layout of
// mlfs/kernels.h); a q4 tensor's shape counts bytes.
enum class DType : std::uint32_t { f32 = 0, f16 = 1, i8 = 2, q4 = 3 };
enum class ModelKind : std::uint32_t { encoder = 0, decoder = 1 };
// How an encoder turns its last hidden states into one vector. cls: the BERT pooler (dense + tanh)
// on the first token, what a classifier head reads. The others are sentence-transformers' Pooling
// modes on the raw states: cls_token (the first token), mean / max / mean_sqrt_len (sum / sqrt(n))
// over the attended tokens, lasttoken (the last attended token).
enum class Pooling : std::uint32_t { mean = 0, cls = 1, cls_token = 2, max = 3, mean_sqrt_len = 4, lasttoken = 5 };
inline constexpr std::uint32_t kPoolingModes = 6;

const char* dtype_name(DType dtype);
const char* pooling_name(Pooling pooling);
std::size_t dtype_size(DType dtype);

inline constexpr char kPackMagic[8] = {'M', 'L', 'F', 'S', 'P', 'A', 'C', 'K'};
inline constexpr std::uint32_t kPackFormatVersion = 4;
// Version 1 files (encoders only, no kind field) still load: they read as kind = encoder.
inline constexpr std::uint32_t kPackOldestVersion = 1;
inline constexpr std::uint32_t kPackEndianMarker = 0x01020304u;
inline constexpr std::size_t kPackHeaderSize = 256;
inline constexpr std::size_t kPackDirEntrySize = 128;
inline constexpr std::size_t kPackAlign = 64;

// What the engine needs to compute (mirrors mlfs_edge.runtime.format.ModelDims).
struct ModelDims {
  std::uint32_t num_layers = 0, hidden = 0, num_heads = 0, head_dim = 0, intermediate = 0;
  std::uint32_t vocab_size = 0, max_positions = 0, type_vocab_size = 0;
  std::uint32_t num_labels = 0;  // 0: no classifier head
  Pooling pooling = Pooling::mean;
  DType weight_dtype = DType::f32;
  float layer_norm_eps = 1e-12f;  // LayerNorm (encoder) or RMSNorm (decoder) epsilon
  // Version 2:
  ModelKind kind = ModelKind::encoder;
  std::uint32_t num_kv_heads = 0;   // decoder: key/value heads (grouped-query attention)
  float rope_theta = 10000.f;       // decoder: RoPE base
  float rope_linear_factor = 1.f;   // decoder: rope_scaling "linear" factor (positions / factor); 1 = none
  bool tied_embeddings = false;     // decoder: the LM head is the embedding table (one copy, "head.w")
  bool qkv_bias = false;            // decoder: q/k/v projections carry biases (Qwen2)
  bool normalize = false;           // encoder without a classifier: L2-normalise the pooled embedding
                                    // (a sentence-transformers Normalize module after the pooling)
  // Version 4: the family options (mlfs_edge/runtime/format.py ModelDims; older files: all off).
  bool layer_norm = false;    // decoder: LayerNorm with bias (GPT-2), not RMSNorm
  bool gelu_tanh = false;     // decoder MLP activation GELU-tanh (GPT-2, Gemma GeGLU), not SiLU
  bool ungated = false;       // decoder MLP up -> act -> down, no gate (GPT-2)
  bool linear_bias = false;   // decoder: o / gate / up / down carry biases (GPT-2)
  bool qk_norm = false;       // decoder: per-head RMSNorm of q, k before RoPE (Qwen3)
  bool post_norms = false;    // decoder: RMSNorm on each block's output before the residual add (Gemma 2)
  bool learned_pos = false;   // decoder: learned absolute positions "emb.pos", no RoPE (GPT-2)
  bool pooler_relu = false;   // encoder: pooler activation ReLU (DistilBERT), not tanh
  bool pre_norm = false;      // encoder: pre-LN layers + final LayerNorm (ModernBERT), not post-LN
  bool gated_ffn = false;     // encoder: GeGLU GELU(ff1 x) * (ff1g x) (ModernBERT)
  bool pooler_gelu_ln = false;  // encoder: pooler dense + GELU + LayerNorm (ModernBERT's head)
  float attn_scale = 0.f;     // attention scores scale; 0 = 1 / sqrt(head_dim)
  float attn_softcap = 0.f;   // cap * tanh(scores / cap) before the softmax; 0 = off (Gemma 2)
  float final_softcap = 0.f;  // the same on the logits; 0 = off
  float embed_scale = 0.f;    // embeddings times this (Gemma: sqrt(hidden)); 0 = 1
};

struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::uint64_t> shape;
  const void* data = nullptr;  // inside the mapping, 64-byte aligned
  std::uint64_t nbytes = 0;

  std::uint64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  std::uint64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
};

class PackedFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class PackedFile {
 public:
  // mmap `path` read-only and validate it; verify_checksum=false skips the CRC pass (which touches
  // every page) for callers that trust the file.
  static std::shared_ptr<PackedFile> open(const std::string& path, bool verify_checksum = true);
  // Validate an in-memory copy (the fuzz target and tests use this; same checks as open()).
  static std::shared_ptr<PackedFile> from_bytes(std::vector<std::uint8_t> bytes, bool verify_checksum = true);

  ~PackedFile();
  PackedFile(const PackedFile&) = delete;
  PackedFile& operator=(const PackedFile&) = delete;

  const ModelDims& dims() const { return dims_; }
  const std::string& metadata_json() const { return metadata_; }
  std::uint32_t checksum() const { return checksum_; }
  std::uint64_t file_size() const { return size_; }
  const std::string& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }

  // nullptr when absent.
  const TensorView* find(const std::string& name) const;
  // The tensor, checked to have `dtype` and `shape`; throws PackedFileError naming what differs.
  const TensorView& require(const std::string& name, DType dtype, const std::vector<std::uint64_t>& shape) const;

 private:
  PackedFile() = default;
  void parse(bool verify_checksum);

  std::string path_;
  const std::uint8_t* base_ = nullptr;
  std::uint64_t size_ = 0;
  void* mapping_ = nullptr;           // mmap'ed region (open) ...
  std::vector<std::uint8_t> owned_;  // ... or an owned buffer (from_bytes)
  ModelDims dims_;
  std::string metadata_;
  std::uint32_t checksum_ = 0;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, std::size_t> index_;
};

// CRC-32 (IEEE 802.3, zlib's crc32), continuing from `crc`.
std::uint32_t crc32_update(std::uint32_t crc, const std::uint8_t* data, std::size_t n);

}  // namespace mlfs
