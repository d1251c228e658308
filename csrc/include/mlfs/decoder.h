// The decoder engine: any prefix-sliced sub-network of a packed Llama-family supernet (RMSNorm,
// RoPE, grouped-query attention, SwiGLU), split the way DESIGN.md says:
//   Decoder     the forward pass: prefill = GEMMs over the new tokens, decode = GEMVs (M = 1), over
//               the kernel table the encoder uses; causal attention over a KvCache
//   KvCache     (mlfs/kv_cache.h) one sequence's keys/values, grown in chunks, rolled back
//   Sampler     (mlfs/sampler.h) the next token from the logits
//   Generation  the loop tying them together: one prompt, one sub-network, tokens one at a time
// A sub-network is (layer, query heads — whole key/value groups —, MLP width) per kept layer, a
// stride into the mmapped weights: switching sub-network between generations copies nothing.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "mlfs/engine.h"
#include "mlfs/kv_cache.h"
#include "mlfs/linear.h"
#include "mlfs/sampler.h"
#include "mlfs/speculative.h"

namespace mlfs {

struct DecoderLayerWeights {
  LinearWeights q, k, v, o, gate, up, down;  // gate unbound (weight null) in an ungated MLP (GPT-2)
  const float *attn_norm = nullptr, *mlp_norm = nullptr;
  // The family options' tensors, null when the file does not have them (see ModelDims).
  const float *attn_norm_b = nullptr, *mlp_norm_b = nullptr;   // LayerNorm biases (GPT-2)
  const float *q_norm = nullptr, *k_norm = nullptr;            // per-head q/k RMSNorm (Qwen3)
  const float *post_attn_norm = nullptr, *post_mlp_norm = nullptr;  // Gemma 2
  std::size_t window = 0;  // sliding-window attention over the last `window` positions; 0 = full
};

class Decoder {
 public:
  explicit Decoder(std::shared_ptr<const PackedFile> file, const kernels::KernelTable& table = kernels::active());
  ~Decoder();

  const ModelDims& dims() const { return dims_; }
  const PackedFile& file() const { return *file_; }
  std::size_t group_size() const { return dims_.num_heads / dims_.num_kv_heads; }

  // Throws std::invalid_argument naming the problem when `subnet` does not fit (layers, heads not a
  // whole number of key/value groups, widths; a 4-bit file only slices MLP widths in multiples of 32).
  void validate(const SubnetSpec& subnet) const;
  // A cache laid out for `subnet` (one slot per kept layer, its key/value groups wide).
  KvCache make_cache(const SubnetSpec& subnet, DType dtype = DType::f32) const;

  // Run tokens ids[0..n) at positions cache.length().. through `subnet`, appending their keys and
  // values to `cache`. logits: [n, vocab] when all_logits, else [vocab] for the last token only,
  // indexed by token id. head_rows > 0 scores only the first head_rows rows of the LM head (an
  // elastic vocabulary: with a frequency-ordered file, the most frequent tokens; the others get
  // -inf) — a speculative draft's cheap head. ids must be valid (validate_ids); thread-safe (calls
  // are serialised).
  void forward(const std::int32_t* ids, std::size_t n, KvCache& cache, const SubnetSpec& subnet, int threads,
               float* logits, bool all_logits, std::size_t head_rows = 0);
  // The file stores the vocabulary in its own row order (token id of head row r = vocab_order()[r]),
  // most frequent first; empty when rows are in token-id order.
  const std::vector<std::int32_t>& vocab_order() const { return id_of_row_; }
  // std::invalid_argument naming the first id outside [0, vocab).
  template <typename Index>
  void validate_ids(const Index* ids, std::size_t n) const;

  std::size_t workspace_bytes() const;

 private:
  struct Workspace;
  void attention(std::size_t slot, std::size_t heads, std::size_t start, std::size_t n, std::size_t window,
                 KvCache& cache, int threads);
  void rope(float* x, std::size_t ld, std::size_t heads, std::size_t n) const;

  std::shared_ptr<const PackedFile> file_;
  ModelDims dims_;
  const kernels::KernelTable& kt_;
  LinearWeights embed_, head_;  // embed_ is head_ when the embeddings are tied (one copy in the file)
  const float* final_norm_ = nullptr;
  const float* final_norm_b_ = nullptr;  // LayerNorm bias (GPT-2)
  const float* pos_emb_ = nullptr;       // learned positions [max_positions, hidden] (GPT-2), else RoPE
  std::vector<DecoderLayerWeights> layers_;
  std::vector<float> inv_freq_;  // RoPE frequencies, as transformers computes them in fp32
  std::vector<std::int32_t> id_of_row_, row_of_id_;  // the vocabulary order (empty: identity)

  std::mutex mutex_;
  ThreadPool pool_;
  LinearRunner lin_{pool_, kt_};
  std::unique_ptr<Workspace> ws_;
};

struct GenerationParams {
  std::size_t max_new_tokens = 32;
  std::optional<SpeculationParams> speculation;  // a draft sub-network of the same file (speculative.h)
  std::vector<std::int32_t> stop_tokens;  // generation ends after emitting one of these
  SamplingParams sampling;
  DType cache_dtype = DType::f32;
  int threads = 1;
};

// One generation: validated up front (prompt, ids, lengths, sub-network, sampling), then next()
// produces one token per call (the first call runs the prefill).
class Generation {
 public:
  Generation(std::shared_ptr<Decoder> decoder, std::vector<std::int32_t> prompt, SubnetSpec subnet,
             GenerationParams params);
  ~Generation();
  // The next token, or -1 when finished (max_new_tokens reached, a stop token emitted, or the
  // model's positions used up). With a draft, one call may compute several tokens (a speculation
  // round); the next calls return them without computing.
  std::int64_t next();
  bool done() const { return done_; }
  std::vector<std::int32_t> tokens() const;  // prompt + the tokens next() returned
  std::size_t generated() const { return generated_; }
  std::size_t prompt_tokens() const { return prompt_len_; }
  double prefill_seconds() const { return prefill_s_; }
  double decode_seconds() const { return decode_s_; }
  const KvCache& cache() const { return cache_; }
  const Speculator* speculator() const { return speculator_.get(); }  // null without a draft
  // Forget the tokens at positions >= `position` (>= 1, <= the tokens held): generation continues
  // from there (a speculative decoder rejects draft tokens this way).
  void rollback(std::size_t position);

 private:
  void step();  // compute the next token(s) into pending_
  bool is_stop(std::int32_t token) const;

  std::shared_ptr<Decoder> decoder_;
  SubnetSpec subnet_;
  GenerationParams params_;
  Sampler sampler_;
  KvCache cache_;
  std::vector<std::int32_t> history_;  // prompt + computed tokens (pending_ ones included)
  std::deque<std::int32_t> pending_;   // computed, not yet returned by next()
  std::unique_ptr<Speculator> speculator_;
  std::vector<float> logits_;
  mutable std::mutex mutex_;  // next() / rollback() from several threads (the GIL is released) take turns
  std::size_t prompt_len_ = 0, generated_ = 0;
  bool done_ = false;
  double prefill_s_ = 0.0, decode_s_ = 0.0;
};

}  // namespace mlfs
