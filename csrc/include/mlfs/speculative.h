// Self-speculative decoding: a smaller sub-network of the same packed file drafts k tokens, the
// target sub-network checks them in ONE forward over k + 1 positions (a small GEMM instead of k + 1
// GEMVs: on a CPU the weights are read once for all of them), and both KV caches roll back past the
// first rejection. No second model: the draft is a prefix slice of the same weights.
//
// Exactness: with greedy decoding every emitted token is the target's own argmax (the same sampler
// chain as plain decoding, repetition penalty included), so the output is token-for-token plain
// decoding's. With sampling, draft token d ~ q is kept with probability min(1, p(d) / q(d)), else
// the target's token is drawn from norm(max(0, p - q)) (Leviathan et al. 2023 / Chen et al. 2023),
// so every token has the target's distribution p (its processed distribution: temperature, top-k,
// top-p, penalty), though not plain sampling's random stream.
//
// Shared cache: when the draft's layers are the target's first layers with the same widths, the
// draft's keys and values at those layers ARE the target's (same weights, same inputs). The draft
// then works in the target's cache (its first slots) instead of its own: no draft prefill, no
// catch-up on accepted tokens, one cache in memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "mlfs/engine.h"
#include "mlfs/kv_cache.h"
#include "mlfs/sampler.h"

namespace mlfs {

class Decoder;

struct SpeculationParams {
  SubnetSpec draft;
  std::size_t k_max = 8;  // draft tokens per round at most
  std::size_t k = 4;      // the first round's k (and every round's when not adaptive)
  bool adaptive = true;   // choose k (0 = a plain step) from the measured acceptance and costs
  // The draft scores only the first draft_vocab rows of the LM head (0 = all): with a file whose
  // vocabulary is ordered by frequency, the draft's head costs draft_vocab / vocab of the target's.
  // The target still verifies over the whole vocabulary, so outputs are unchanged.
  std::size_t draft_vocab = 0;
};

struct SpeculationStats {
  std::size_t rounds = 0;         // verifications
  std::size_t drafted = 0;        // draft tokens proposed
  std::size_t accepted = 0;       // draft tokens kept
  std::size_t plain_steps = 0;    // decode steps without a draft (k = 0 chosen, or too close to the end)
  double draft_seconds = 0.0, verify_seconds = 0.0;
};

class Speculator {
 public:
  // Throws std::invalid_argument when the draft does not fit the file or k_max is 0 or > 64.
  Speculator(Decoder& decoder, const SubnetSpec& target, SpeculationParams params, const SamplingParams& sampling,
             DType cache_dtype);

  // How many tokens to draft next round (0: a plain step pays better), at most `limit`.
  std::size_t next_k(std::size_t limit) const;
  // One round past `history` (its last token is not in target_cache yet: target_cache.length() ==
  // history.size() - 1): draft k tokens, verify, roll back. Returns the accepted draft tokens and
  // the target's own next token (1 .. k + 1 tokens); target_cache then holds all but the last.
  std::vector<std::int32_t> round(const std::vector<std::int32_t>& history, KvCache& target_cache,
                                  Sampler& target_sampler, std::size_t k, int threads);
  // Record a plain decode step's time (the cost speculation must beat).
  void plain_step(double seconds);
  // The tokens at positions >= `position` are gone (Generation::rollback).
  void rollback(std::size_t position);

  bool shares_cache() const { return shared_; }
  const SpeculationStats& stats() const { return stats_; }
  std::size_t cache_bytes() const { return shared_ ? 0 : cache_->bytes(); }

 private:
  void draft_forward(const std::int32_t* ids, std::size_t n, KvCache& target_cache, int threads);

  Decoder& decoder_;
  SubnetSpec target_;
  SpeculationParams params_;
  bool greedy_;
  bool shared_;
  std::unique_ptr<KvCache> cache_;  // the draft's own cache; null when it shares the target's
  Sampler draft_sampler_;
  std::mt19937_64 rng_;
  std::size_t vocab_;
  std::vector<float> draft_logits_, verify_logits_;
  std::vector<double> p_, residual_;
  std::vector<std::vector<double>> q_;  // the draft's distribution per drafted token (sampling)
  SpeculationStats stats_;
  // Running estimates for choosing k: acceptance per draft token, seconds per draft token, per
  // verification, per plain step (exponential moving averages; < 0 = not measured yet).
  double accepted_ema_ = 0.0, trials_ema_ = 0.0;
  double t_draft_ = -1.0, t_verify_ = -1.0, t_plain_ = -1.0;
  std::size_t k_last_;
  std::size_t plain_since_probe_ = 0;
};

}  // namespace mlfs
