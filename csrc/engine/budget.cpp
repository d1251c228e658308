#include "mlfs/budget.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>
#include <stdexcept>

namespace mlfs {

namespace {

// Python's round(): halves go to the even neighbour. std::nearbyint does the same in the default
// rounding mode, where std::round would not (round(2.5) is 2 in Python, 3 in std::round).
std::uint32_t round_half_even(double x) { return static_cast<std::uint32_t>(std::nearbyint(x)); }

}  // namespace

std::vector<std::uint32_t> layers_for_depth(std::uint32_t num_layers, std::uint32_t depth) {
  if (depth < 1 || depth > num_layers)
    throw std::invalid_argument("depth " + std::to_string(depth) + " out of range 1.." + std::to_string(num_layers));
  std::vector<std::uint32_t> layers;
  if (depth == num_layers) {
    for (std::uint32_t i = 0; i < depth; ++i) layers.push_back(i);
  } else if (depth == 1) {
    layers.push_back(num_layers - 1);
  } else {
    const double step = static_cast<double>(num_layers - 1) / static_cast<double>(depth - 1);
    std::set<std::uint32_t> kept;
    for (std::uint32_t i = 0; i < depth; ++i) kept.insert(round_half_even(i * step));
    layers.assign(kept.begin(), kept.end());
  }
  return layers;
}

SubnetSpec uniform_subnet(const Engine& engine, std::uint32_t depth, std::uint32_t heads, std::uint32_t mlp) {
  SubnetSpec spec;
  for (std::uint32_t layer : layers_for_depth(engine.dims().num_layers, depth)) spec.push_back({layer, heads, mlp});
  engine.validate(spec);
  return spec;
}

SubnetSpec full_subnet(const ModelDims& dims) {
  SubnetSpec spec;
  for (std::uint32_t i = 0; i < dims.num_layers; ++i) spec.push_back({i, dims.num_heads, dims.intermediate});
  return spec;
}

std::vector<SubnetSpec> default_candidates(const ModelDims& dims) {
  const double fractions[] = {0.25, 0.5, 0.75, 1.0};
  std::set<std::uint32_t> heads, mlp;
  for (double fr : fractions) {
    heads.insert(std::clamp<std::uint32_t>(round_half_even(dims.num_heads * fr), 1, dims.num_heads));
    mlp.insert(std::min<std::uint32_t>(std::max<std::uint32_t>(8, round_half_even(dims.intermediate * fr / 8) * 8),
                                       dims.intermediate));
  }
  std::vector<SubnetSpec> out;
  for (std::uint32_t d = std::max<std::uint32_t>(1, dims.num_layers / 2); d <= dims.num_layers; ++d)
    for (std::uint32_t h : heads)
      for (std::uint32_t f : mlp) {
        SubnetSpec spec;
        for (std::uint32_t layer : layers_for_depth(dims.num_layers, d)) spec.push_back({layer, h, f});
        out.push_back(std::move(spec));
      }
  // Stable, as Python's sorted(): equal sizes keep the (depth, heads, mlp) order.
  std::stable_sort(out.begin(), out.end(), [&](const SubnetSpec& a, const SubnetSpec& b) {
    return layer_params(dims, a) < layer_params(dims, b);
  });
  return out;
}

std::uint64_t layer_params(const ModelDims& dims, const SubnetSpec& subnet) {
  const std::uint64_t hidden = dims.hidden, head_dim = dims.head_dim;
  std::uint64_t total = 0;
  for (const LayerSlice& s : subnet) {
    const std::uint64_t q = s.heads * head_dim;  // BERT: as many key/value heads as query heads
    const std::uint64_t attn = hidden * 3 * q + q * hidden + 3 * q + hidden;
    const std::uint64_t mlp = 2 * hidden * s.mlp + s.mlp + hidden;
    total += attn + mlp + 4 * hidden;  // + two LayerNorms (weight and bias)
  }
  return total;
}

std::string subnet_name(const SubnetSpec& subnet) {
  auto fmt = [&](std::uint32_t LayerSlice::*field) {
    bool same = true;
    for (const LayerSlice& s : subnet) same = same && s.*field == subnet.front().*field;
    if (same) return subnet.empty() ? std::string("0") : std::to_string(subnet.front().*field);
    std::string out;
    for (const LayerSlice& s : subnet) out += (out.empty() ? "" : "/") + std::to_string(s.*field);
    return out;
  };
  return "L" + std::to_string(subnet.size()) + "-H" + fmt(&LayerSlice::heads) + "-F" + fmt(&LayerSlice::mlp);
}

double profile_ms(Engine& engine, const SubnetSpec& subnet, std::size_t seq, std::size_t batch, int threads,
                  int warmup, int runs) {
  if (runs < 1) throw std::invalid_argument("runs must be at least 1");
  if (warmup < 0) throw std::invalid_argument("warmup must not be negative");
  engine.validate(subnet);
  const std::size_t vocab = engine.dims().vocab_size;
  std::vector<std::int32_t> ids(batch * seq), mask(batch * seq, 1);
  // Fixed ordinary-word ids (not special tokens), in range for small test vocabularies too.
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((1000 + (i * 7919) % 1000) % vocab);
  std::vector<float> out(batch * engine.output_dim());
  for (int i = 0; i < warmup; ++i) engine.run(ids.data(), mask.data(), batch, seq, subnet, threads, out.data());
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    engine.run(ids.data(), mask.data(), batch, seq, subnet, threads, out.data());
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const std::size_t n = times.size();
  return n % 2 ? times[n / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;  // statistics.median
}

std::ptrdiff_t pick_under_budget(const std::vector<double>& scores, const std::vector<double>& latency_ms,
                                 double budget_ms) {
  if (scores.size() != latency_ms.size())
    throw std::invalid_argument(std::to_string(scores.size()) + " scores but " + std::to_string(latency_ms.size()) +
                                " latencies");
  std::ptrdiff_t best = -1;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    if (!(latency_ms[i] <= budget_ms)) continue;  // also skips NaN
    if (best < 0 || scores[i] > scores[best] || (scores[i] == scores[best] && latency_ms[i] < latency_ms[best]))
      best = static_cast<std::ptrdiff_t>(i);
  }
  return best;
}

BudgetPick pick_largest_under_budget(Engine& engine, const std::vector<SubnetSpec>& candidates, double budget_ms,
                                     std::size_t seq, int threads, int runs) {
  if (candidates.empty()) throw std::invalid_argument("no candidate sub-networks to pick from");
  if (!(budget_ms > 0)) throw std::invalid_argument("the latency budget must be a positive number of ms");
  for (const SubnetSpec& c : candidates) engine.validate(c);  // fail before minutes of profiling
  BudgetPick pick;
  std::vector<double> size;
  for (const SubnetSpec& c : candidates) {
    pick.latency_ms.push_back(profile_ms(engine, c, seq, 1, threads, 3, runs));
    size.push_back(static_cast<double>(layer_params(engine.dims(), c)));
  }
  pick.index = pick_under_budget(size, pick.latency_ms, budget_ms);
  return pick;
}

}  // namespace mlfs
