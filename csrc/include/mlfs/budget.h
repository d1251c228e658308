// Sub-network palettes and the latency-budget picker, for callers without Python (the Android app
// over JNI, the mlfs-runner tool). Each function mirrors its Python twin in mlfs_edge.config /
// mlfs_edge.runtime.engine, which the tests compare it with; Python's Engine.pick calls
// pick_under_budget itself, so there is one selection rule.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mlfs/engine.h"
#include "mlfs/packed_file.h"

namespace mlfs {

// The layers a sub-network of `depth` layers keeps, "spread" policy (mlfs_edge.config.layers_for_depth):
// evenly over the stack, first and last always kept. Throws std::invalid_argument when depth is not
// in 1..num_layers.
std::vector<std::uint32_t> layers_for_depth(std::uint32_t num_layers, std::uint32_t depth);

// Same heads and MLP width in each of `depth` spread layers (SubnetConfig.uniform); validated.
SubnetSpec uniform_subnet(const Engine& engine, std::uint32_t depth, std::uint32_t heads, std::uint32_t mlp);
SubnetSpec full_subnet(const ModelDims& dims);

// SearchSpace.default(arch).uniform_configs(): depths from half the layers up, heads and MLP widths at
// 1/4, 1/2, 3/4 and all of the model's; smallest (fewest layer parameters) first.
std::vector<SubnetSpec> default_candidates(const ModelDims& dims);

// Parameters of the kept transformer layers, norms included (SubnetConfig.layer_params, BERT family).
std::uint64_t layer_params(const ModelDims& dims, const SubnetSpec& subnet);

// "L<depth>-H<heads>-F<mlp>", per-layer values joined by '/' when they differ (SubnetConfig.name).
std::string subnet_name(const SubnetSpec& subnet);

// Median wall time in ms of engine.run on `batch` x `seq` fixed token ids, after `warmup` runs
// (which page the slice's weights in). Throws std::invalid_argument on a bad subnet or size.
double profile_ms(Engine& engine, const SubnetSpec& subnet, std::size_t seq, std::size_t batch, int threads,
                  int warmup, int runs);

// Index of the candidate with the highest score whose latency is <= budget_ms (ties: the faster,
// then the earlier); -1 when none fits. A NaN budget or latency never fits. Throws
// std::invalid_argument when the two lists differ in length.
std::ptrdiff_t pick_under_budget(const std::vector<double>& scores, const std::vector<double>& latency_ms,
                                 double budget_ms);

// Profile every candidate, then pick the largest (most layer parameters) within budget_ms.
struct BudgetPick {
  std::ptrdiff_t index = -1;       // into the candidates; -1: none fits
  std::vector<double> latency_ms;  // measured, one per candidate
};
BudgetPick pick_largest_under_budget(Engine& engine, const std::vector<SubnetSpec>& candidates, double budget_ms,
                                     std::size_t seq, int threads, int runs);

}  // namespace mlfs
