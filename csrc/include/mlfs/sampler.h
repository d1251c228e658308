// The sampler chain: the next token from one row of logits, as a list of small steps (like
// llama.cpp's llama_sampler_chain_add): repetition penalty, then greedy (temperature 0) or
// temperature, top-k, top-p and a seeded draw. Each step only narrows or reweights the candidate
// list, so every step is testable alone and new ones slot in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

namespace mlfs {

struct SamplingParams {
  float temperature = 0.f;         // 0: greedy (argmax, first index on ties, like torch.argmax)
  std::uint32_t top_k = 0;         // 0: off
  float top_p = 1.f;               // 1: off
  float repetition_penalty = 1.f;  // 1: off; HF's rule: logit / p if > 0 else logit * p, per seen token
  std::uint64_t seed = 0;
};

struct Candidate {
  float logit;
  std::int32_t id;
};

// The state a step works on: candidates (the whole vocabulary at first) and, once a step picked
// one, `selected` (an index into candidates).
struct CandidateList {
  std::vector<Candidate> items;
  bool sorted = false;  // by logit, descending
  std::int64_t selected = -1;
  void sort_descending();
};

class SamplerStep {
 public:
  virtual ~SamplerStep() = default;
  // history: the prompt and every generated token so far.
  virtual void apply(CandidateList& c, const std::vector<std::int32_t>& history) = 0;
};

std::unique_ptr<SamplerStep> repetition_penalty_step(float penalty);
std::unique_ptr<SamplerStep> greedy_step();
std::unique_ptr<SamplerStep> temperature_step(float temperature);
std::unique_ptr<SamplerStep> top_k_step(std::uint32_t k);
std::unique_ptr<SamplerStep> top_p_step(float p);
std::unique_ptr<SamplerStep> draw_step(std::uint64_t seed);  // softmax over the candidates, one seeded draw

class Sampler {
 public:
  // The chain for `params`; throws std::invalid_argument for values out of range.
  explicit Sampler(const SamplingParams& params);
  void add(std::unique_ptr<SamplerStep> step) { steps_.push_back(std::move(step)); }
  std::int32_t sample(const float* logits, std::size_t vocab, const std::vector<std::int32_t>& history);
  // Temperature 0: the chain ends in an argmax, there is no distribution to draw from.
  bool greedy() const { return greedy_; }
  // The distribution the chain's final draw samples from (every step but the draw), dense over the
  // vocabulary: probs[id], 0 for the ids top-k / top-p removed. Sampling chains only (!greedy()).
  void distribution(const float* logits, std::size_t vocab, const std::vector<std::int32_t>& history,
                    std::vector<double>& probs);

 private:
  bool greedy_ = false;
  std::vector<std::unique_ptr<SamplerStep>> steps_;
  CandidateList work_;
};

}  // namespace mlfs
