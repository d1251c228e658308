// Self-speculative decoding rounds (see mlfs/speculative.h).
#include "mlfs/speculative.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "mlfs/decoder.h"

namespace mlfs {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The draft's keys and values equal the target's at every draft layer when the draft runs the
// target's first layers at the same widths (the same weights see the same inputs).
bool is_depth_prefix(const SubnetSpec& draft, const SubnetSpec& target) {
  if (draft.size() > target.size()) return false;
  for (std::size_t i = 0; i < draft.size(); ++i)
    if (draft[i].layer != target[i].layer || draft[i].heads != target[i].heads || draft[i].mlp != target[i].mlp)
      return false;
  return true;
}

std::int32_t draw(const std::vector<double>& probs, double u) {
  double total = 0.0;
  for (double p : probs) total += p;
  double acc = 0.0;
  std::size_t last = 0;
  for (std::size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0) continue;
    last = i;
    acc += probs[i];
    if (u * total < acc) return static_cast<std::int32_t>(i);
  }
  return static_cast<std::int32_t>(last);  // rounding: the last id with mass
}

constexpr double kDecay = 0.9;  // weight of the past in the running estimates (~10 rounds of memory)

void ema(double& state, double sample) { state = state < 0.0 ? sample : kDecay * state + (1.0 - kDecay) * sample; }

}  // namespace

Speculator::Speculator(Decoder& decoder, const SubnetSpec& target, SpeculationParams params,
                       const SamplingParams& sampling, DType cache_dtype)
    : decoder_(decoder),
      target_(target),
      params_(std::move(params)),
      greedy_(sampling.temperature == 0.f),
      shared_(is_depth_prefix(params_.draft, target)),
      cache_(shared_ ? nullptr : std::make_unique<KvCache>(decoder.make_cache(params_.draft, cache_dtype))),
      draft_sampler_(sampling),
      rng_(sampling.seed ^ 0x9E3779B97F4A7C15ull),  // its own stream: acceptance tests and residual draws
      vocab_(decoder.dims().vocab_size),
      k_last_(params_.k) {
  if (params_.draft.empty()) throw std::invalid_argument("the draft sub-network has no layers");
  decoder.validate(params_.draft);
  if (params_.k_max < 1 || params_.k_max > 64)
    throw std::invalid_argument("k_max (draft tokens per round) must be in 1..64, got " + std::to_string(params_.k_max));
  if (params_.k < 1 || params_.k > params_.k_max)
    throw std::invalid_argument("the first round's k must be in 1..k_max, got " + std::to_string(params_.k));
  draft_logits_.resize(vocab_);
  if (params_.draft_vocab > vocab_ || (params_.draft_vocab % 32 != 0 && params_.draft_vocab != vocab_))
    throw std::invalid_argument("draft_vocab must be a multiple of 32 up to the vocabulary (" + std::to_string(vocab_) +
                                "), or 0 for all; got " + std::to_string(params_.draft_vocab));
}

std::size_t Speculator::next_k(std::size_t limit) const {
  std::size_t k = params_.k;
  if (params_.adaptive && t_plain_ < 0.0) return 0;  // first measure what a plain step costs: the bar to beat
  if (params_.adaptive && t_draft_ > 0.0 && t_verify_ > 0.0 && trials_ema_ > 0.0) {
    // Expected tokens per round with per-token acceptance a: 1 + a + ... + a^k; its cost: k drafts
    // and one verification. Take the k with the best tokens per second; a plain step when none beats it.
    const double a = std::min(accepted_ema_ / trials_ema_, 0.999);
    double best = t_plain_ > 0.0 ? 1.0 / t_plain_ : 0.0;
    k = 0;
    double gain = 1.0, power = 1.0;
    for (std::size_t j = 1; j <= params_.k_max; ++j) {
      power *= a;
      gain += power;
      const double speed = gain / (static_cast<double>(j) * t_draft_ + t_verify_);
      if (speed > best) best = speed, k = j;
    }
    // After a stretch of plain steps, probe the draft again: acceptance may have changed with the text.
    if (k == 0 && plain_since_probe_ >= 16) k = 1;
  }
  return std::min(k, limit);
}

void Speculator::plain_step(double seconds) {
  ema(t_plain_, seconds);
  ++stats_.plain_steps;
  ++plain_since_probe_;
}

void Speculator::draft_forward(const std::int32_t* ids, std::size_t n, KvCache& target_cache, int threads) {
  decoder_.forward(ids, n, shared_ ? target_cache : *cache_, params_.draft, threads, draft_logits_.data(), false,
                   params_.draft_vocab);
}

std::vector<std::int32_t> Speculator::round(const std::vector<std::int32_t>& history, KvCache& target_cache,
                                            Sampler& target_sampler, std::size_t k, int threads) {
  const std::size_t base = history.size();
  if (k == 0 || target_cache.length() + 1 != base)
    throw std::logic_error("a speculation round needs k >= 1 and every token but the last in the target's cache");
  // --- draft k tokens ------------------------------------------------------------------------------
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::int32_t> seen(history);  // the draft's own history (repetition penalty)
  std::vector<std::int32_t> drafted;
  if (!greedy_ && q_.size() < k) q_.resize(k);
  for (std::size_t i = 0; i < k; ++i) {
    if (i == 0) {
      // Shared: the target's cache holds the draft's layers up to base - 1. Own cache: catch up on
      // whatever the last rounds accepted.
      const std::size_t held = shared_ ? target_cache.length() : cache_->length();
      draft_forward(history.data() + held, base - held, target_cache, threads);
    } else {
      draft_forward(&drafted.back(), 1, target_cache, threads);
    }
    std::int32_t d;
    if (greedy_) {
      d = draft_sampler_.sample(draft_logits_.data(), vocab_, seen);
    } else {
      draft_sampler_.distribution(draft_logits_.data(), vocab_, seen, q_[i]);
      d = draw(q_[i], std::uniform_real_distribution<double>(0.0, 1.0)(rng_));
    }
    drafted.push_back(d);
    seen.push_back(d);
  }
  const double t_draft = seconds_since(t0);
  // --- verify: the last history token and the k drafts in one target forward -----------------------
  t0 = std::chrono::steady_clock::now();
  if (shared_) target_cache.truncate(base - 1);  // drop the draft's shallow rows: recomputed for all layers
  std::vector<std::int32_t> fresh{history.back()};
  fresh.insert(fresh.end(), drafted.begin(), drafted.end());
  verify_logits_.resize(fresh.size() * vocab_);
  decoder_.forward(fresh.data(), fresh.size(), target_cache, target_, threads, verify_logits_.data(), true);
  // Row i scores the token at position base + i.
  std::vector<std::int32_t> out, accepted_history(history);
  std::size_t a = 0;
  for (; a < k; ++a) {
    const float* row = verify_logits_.data() + a * vocab_;
    const std::int32_t d = drafted[a];
    if (greedy_) {
      const std::int32_t t = target_sampler.sample(row, vocab_, accepted_history);
      if (t != d) {
        out.push_back(t);
        break;
      }
    } else {
      target_sampler.distribution(row, vocab_, accepted_history, p_);
      const double q = q_[a][static_cast<std::size_t>(d)], p = p_[static_cast<std::size_t>(d)];
      const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
      if (!(u * q < p)) {  // rejected (q > 0: d was drawn from q)
        residual_.resize(vocab_);
        double mass = 0.0;
        for (std::size_t i = 0; i < vocab_; ++i) mass += residual_[i] = std::max(0.0, p_[i] - q_[a][i]);
        const double u2 = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
        out.push_back(draw(mass > 0.0 ? residual_ : p_, u2));
        break;
      }
    }
    out.push_back(d);
    accepted_history.push_back(d);
  }
  if (a == k) {  // every draft kept: the target's next token comes free from the last row
    const float* row = verify_logits_.data() + k * vocab_;
    if (greedy_) {
      out.push_back(target_sampler.sample(row, vocab_, accepted_history));
    } else {
      target_sampler.distribution(row, vocab_, accepted_history, p_);
      out.push_back(draw(p_, std::uniform_real_distribution<double>(0.0, 1.0)(rng_)));
    }
  }
  // --- roll back past the first rejection ---------------------------------------------------------
  // Positions base .. base + a - 1 hold accepted drafts (valid); the emitted last token is not cached.
  target_cache.truncate(base + a);
  if (!shared_) cache_->truncate(std::min(cache_->length(), base + a));
  const double t_verify = seconds_since(t0);
  // --- bookkeeping for the choice of k --------------------------------------------------------------
  ++stats_.rounds;
  stats_.drafted += k;
  stats_.accepted += a;
  stats_.draft_seconds += t_draft;
  stats_.verify_seconds += t_verify;
  // Per-token acceptance as a geometric trial: a successes, then one failure unless all k passed.
  accepted_ema_ = kDecay * accepted_ema_ + static_cast<double>(a);
  trials_ema_ = kDecay * trials_ema_ + static_cast<double>(a + (a < k ? 1 : 0));
  ema(t_draft_, t_draft / static_cast<double>(k));
  ema(t_verify_, t_verify);
  k_last_ = k;
  plain_since_probe_ = 0;
  return out;
}

void Speculator::rollback(std::size_t position) {
  if (!shared_) cache_->truncate(std::min(cache_->length(), position - 1));
}

}  // namespace mlfs
