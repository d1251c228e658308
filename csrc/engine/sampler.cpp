// Sampler chain steps (see mlfs/sampler.h).
#include "mlfs/sampler.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace mlfs {

void CandidateList::sort_descending() {
  if (sorted) return;
  // stable: equal logits keep the lower id first (argmax's tie rule)
  std::stable_sort(items.begin(), items.end(), [](const Candidate& a, const Candidate& b) { return a.logit > b.logit; });
  sorted = true;
}

namespace {

class RepetitionPenalty : public SamplerStep {
 public:
  explicit RepetitionPenalty(float p) : p_(p) {}
  void apply(CandidateList& c, const std::vector<std::int32_t>& history) override {
    // Candidates are still the whole vocabulary in id order here (the first step of the chain).
    std::unordered_set<std::int32_t> seen(history.begin(), history.end());
    for (std::int32_t id : seen) {
      if (id < 0 || static_cast<std::size_t>(id) >= c.items.size()) continue;
      float& l = c.items[static_cast<std::size_t>(id)].logit;
      l = l > 0.f ? l / p_ : l * p_;
    }
  }

 private:
  float p_;
};

class Greedy : public SamplerStep {
 public:
  void apply(CandidateList& c, const std::vector<std::int32_t>&) override {
    std::size_t best = 0;
    for (std::size_t i = 1; i < c.items.size(); ++i)
      if (c.items[i].logit > c.items[best].logit) best = i;
    c.selected = static_cast<std::int64_t>(best);
  }
};

class Temperature : public SamplerStep {
 public:
  explicit Temperature(float t) : t_(t) {}
  void apply(CandidateList& c, const std::vector<std::int32_t>&) override {
    for (Candidate& x : c.items) x.logit /= t_;
  }

 private:
  float t_;
};

class TopK : public SamplerStep {
 public:
  explicit TopK(std::uint32_t k) : k_(k) {}
  void apply(CandidateList& c, const std::vector<std::int32_t>&) override {
    if (k_ >= c.items.size()) return;
    // partial sort is enough: only the first k need order
    std::partial_sort(c.items.begin(), c.items.begin() + k_, c.items.end(), [](const Candidate& a, const Candidate& b) {
      return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    });
    c.items.resize(k_);
    c.sorted = true;
  }

 private:
  std::uint32_t k_;
};

// Softmax probabilities of the (sorted) candidates, in place of nothing: returned.
std::vector<double> probabilities(const CandidateList& c) {
  double mx = -INFINITY;
  for (const Candidate& x : c.items) mx = std::max(mx, static_cast<double>(x.logit));
  std::vector<double> p(c.items.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(static_cast<double>(c.items[i].logit) - mx);
  for (double& v : p) v /= sum;
  return p;
}

class TopP : public SamplerStep {
 public:
  explicit TopP(float p) : p_(p) {}
  void apply(CandidateList& c, const std::vector<std::int32_t>&) override {
    if (p_ >= 1.f) return;
    c.sort_descending();
    const std::vector<double> prob = probabilities(c);
    // keep the smallest prefix whose mass reaches p (at least one token), as HF's TopPLogitsWarper
    double mass = 0.0;
    std::size_t keep = 0;
    while (keep < prob.size()) {
      mass += prob[keep++];
      if (mass >= p_) break;
    }
    c.items.resize(std::max<std::size_t>(keep, 1));
  }

 private:
  float p_;
};

class Draw : public SamplerStep {
 public:
  explicit Draw(std::uint64_t seed) : rng_(seed) {}
  void apply(CandidateList& c, const std::vector<std::int32_t>&) override {
    const std::vector<double> prob = probabilities(c);
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    double acc = 0.0;
    std::size_t i = 0;
    for (; i + 1 < prob.size(); ++i) {
      acc += prob[i];
      if (u < acc) break;
    }
    c.selected = static_cast<std::int64_t>(i);
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace

std::unique_ptr<SamplerStep> repetition_penalty_step(float penalty) { return std::make_unique<RepetitionPenalty>(penalty); }
std::unique_ptr<SamplerStep> greedy_step() { return std::make_unique<Greedy>(); }
std::unique_ptr<SamplerStep> temperature_step(float temperature) { return std::make_unique<Temperature>(temperature); }
std::unique_ptr<SamplerStep> top_k_step(std::uint32_t k) { return std::make_unique<TopK>(k); }
std::unique_ptr<SamplerStep> top_p_step(float p) { return std::make_unique<TopP>(p); }
std::unique_ptr<SamplerStep> draw_step(std::uint64_t seed) { return std::make_unique<Draw>(seed); }

Sampler::Sampler(const SamplingParams& p) {
  if (!(p.temperature >= 0.f) || !std::isfinite(p.temperature))
    throw std::invalid_argument("temperature must be >= 0 (0 = greedy), got " + std::to_string(p.temperature));
  if (!(p.top_p > 0.f && p.top_p <= 1.f)) throw std::invalid_argument("top_p must be in (0, 1], got " + std::to_string(p.top_p));
  if (!(p.repetition_penalty > 0.f) || !std::isfinite(p.repetition_penalty))
    throw std::invalid_argument("repetition_penalty must be > 0, got " + std::to_string(p.repetition_penalty));
  if (p.repetition_penalty != 1.f) add(repetition_penalty_step(p.repetition_penalty));
  if (p.temperature == 0.f) {
    add(greedy_step());
    greedy_ = true;
    return;
  }
  add(temperature_step(p.temperature));
  if (p.top_k > 0) add(top_k_step(p.top_k));
  if (p.top_p < 1.f) add(top_p_step(p.top_p));
  add(draw_step(p.seed));
}

void Sampler::distribution(const float* logits, std::size_t vocab, const std::vector<std::int32_t>& history,
                           std::vector<double>& probs) {
  if (greedy_) throw std::logic_error("a greedy sampler has no distribution to draw from");
  work_.items.resize(vocab);
  for (std::size_t i = 0; i < vocab; ++i) work_.items[i] = {logits[i], static_cast<std::int32_t>(i)};
  work_.sorted = false;
  work_.selected = -1;
  for (std::size_t s = 0; s + 1 < steps_.size(); ++s) steps_[s]->apply(work_, history);  // the last is the draw
  const std::vector<double> p = probabilities(work_);
  probs.assign(vocab, 0.0);
  for (std::size_t i = 0; i < p.size(); ++i) probs[static_cast<std::size_t>(work_.items[i].id)] = p[i];
}

std::int32_t Sampler::sample(const float* logits, std::size_t vocab, const std::vector<std::int32_t>& history) {
  work_.items.resize(vocab);
  for (std::size_t i = 0; i < vocab; ++i) work_.items[i] = {logits[i], static_cast<std::int32_t>(i)};
  work_.sorted = false;
  work_.selected = -1;
  for (auto& step : steps_) {
    step->apply(work_, history);
    if (work_.selected >= 0) break;
  }
  if (work_.selected < 0) throw std::logic_error("sampler chain ended without picking a token");
  return work_.items[static_cast<std::size_t>(work_.selected)].id;
}

}  // namespace mlfs
