// The encoder engine: runs any prefix-sliced sub-network of a packed BERT-family supernet.
//
// A sub-network is a list of (layer, first-h heads, first-f MLP channels). Its weights are strides
// into the full buffers of the mmapped file, so switching sub-network copies nothing: it is only a
// different argument to run(). Activations are fp32; weights fp32, fp16 or int8 (activations then
// quantised per token, mlfs_edge.quant.scheme). Activation buffers are sized for the largest
// (batch x seq) seen and reused by every layer and call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "mlfs/kernels.h"
#include "mlfs/linear.h"
#include "mlfs/packed_file.h"
#include "mlfs/thread_pool.h"

namespace mlfs {

struct LayerSlice {
  std::uint32_t layer = 0;  // index into the supernet's layers
  std::uint32_t heads = 0;  // the first `heads` attention heads
  std::uint32_t mlp = 0;    // the first `mlp` MLP channels
};
using SubnetSpec = std::vector<LayerSlice>;

// Throws std::invalid_argument naming the entry when `subnet` is not a prefix slice of a model of
// `dims`: layers in range and strictly increasing, 1..num_heads heads in whole groups of
// `heads_per_group` (key/value groups; 1 for an encoder), 1..intermediate MLP channels.
void validate_subnet(const SubnetSpec& subnet, const ModelDims& dims, std::size_t heads_per_group = 1);

struct LayerWeights {
  LinearWeights q, k, v, o, ff1, ff2;
  LinearWeights ff1g;  // GeGLU's gate half (ModernBERT), unbound otherwise
  const float *ln1_w = nullptr, *ln1_b = nullptr, *ln2_w = nullptr, *ln2_b = nullptr;  // ln1 null: no norm
  std::size_t window = 0;       // keys with |i - j| < window are visible; 0 = all (ModernBERT's local layers)
  std::vector<float> inv_freq;  // RoPE frequencies of this layer; empty: no RoPE (absolute positions)
};

class Engine {
 public:
  // Binds every tensor of `file` (checked for presence, dtype and shape; PackedFileError if wrong).
  // `table` is the dispatched kernel table by default; tests pass table_for(isa) to compare ISAs.
  explicit Engine(std::shared_ptr<const PackedFile> file, const kernels::KernelTable& table = kernels::active());
  ~Engine();

  const ModelDims& dims() const { return dims_; }
  const PackedFile& file() const { return *file_; }
  // Width of run()'s output rows: num_labels for a classifier, else hidden (the pooled embedding).
  std::size_t output_dim() const { return dims_.num_labels ? dims_.num_labels : dims_.hidden; }
  bool has_lora() const { return has_lora_; }

  // Throws std::invalid_argument naming the problem when `subnet` does not fit this supernet.
  void validate(const SubnetSpec& subnet) const;

  // input_ids / attention_mask: [batch, seq] row-major (int32 or int64); out: [batch, output_dim()].
  // The mask holds only 0 (padding) and 1 (token); any other value throws std::invalid_argument.
  // Validates ids (0 <= id < vocab), seq <= max_positions and that every row attends to >= 1 token
  // (std::invalid_argument otherwise) before any compute. Thread-safe (calls are serialised).
  template <typename Index>
  void run(const Index* input_ids, const Index* attention_mask, std::size_t batch, std::size_t seq,
           const SubnetSpec& subnet, int threads, float* out);

  // Bytes of activation workspace currently allocated (grows to the largest batch x seq seen).
  std::size_t workspace_bytes() const;

 private:
  struct Workspace;
  void forward(const std::int32_t* ids, const std::uint8_t* mask, std::size_t batch, std::size_t seq,
               const SubnetSpec& subnet, int threads, float* out);
  void attention(std::size_t batch, std::size_t seq, std::size_t heads, std::size_t window, int threads);
  void ensure_workspace(std::size_t tokens, std::size_t seq, int threads);
  void pre_norm_layer(const LayerWeights& L, const LayerSlice& s, std::size_t batch, std::size_t seq, int threads);

  std::shared_ptr<const PackedFile> file_;
  ModelDims dims_;
  const kernels::KernelTable& kt_;
  // Embeddings: the word table in the file's dtype (+ int8 row scales), the rest fp32.
  const void* word_emb_ = nullptr;
  const float* word_scale_ = nullptr;
  const float *pos_emb_ = nullptr, *type_emb_ = nullptr, *emb_ln_w_ = nullptr, *emb_ln_b_ = nullptr;
  std::vector<LayerWeights> layers_;
  LinearWeights pooler_, classifier_;
  // MPNet: relative attention bias per offset j - i + max_positions - 1 and head ("attn.relbias"
  // [2 * max_positions - 1, num_heads]; the packer evaluates transformers' buckets), else null.
  const float* rel_bias_ = nullptr;
  // Pre-norm encoders (ModernBERT): the final LayerNorm, and the head's LayerNorm after the pooler.
  const float *final_ln_w_ = nullptr, *final_ln_b_ = nullptr, *pooler_ln_w_ = nullptr, *pooler_ln_b_ = nullptr;
  bool has_lora_ = false;

  std::mutex run_mutex_;
  ThreadPool pool_;
  LinearRunner lin_{pool_, kt_};
  std::unique_ptr<Workspace> ws_;
};

}  // namespace mlfs
