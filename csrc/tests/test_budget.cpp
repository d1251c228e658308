// The native budget picker's pure parts (mlfs/budget.h) against values computed by their Python
// twins (mlfs_edge.config); the engine-dependent parts (profile, pick over a real file) are checked
// against Python by tests/test_budget_native.py and the JNI host test.
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "mlfs/budget.h"

namespace {


std::string join(const std::vector<std::uint32_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

void test_layers_for_depth() {
  // Expected values from mlfs_edge.config.layers_for_depth, whose round() sends halves to even:
  // (6, 3) keeps layer 2 (round(2.5) == 2), where std::round would keep layer 3.
  struct Case {
    std::uint32_t n, d;
    const char* want;
  } cases[] = {{6, 3, "0,2,5"},        {6, 4, "0,2,3,5"},          {6, 5, "0,1,2,4,5"},
               {12, 5, "0,3,6,8,11"},  {12, 7, "0,2,4,6,7,9,11"},   {4, 3, "0,2,3"},
               {24, 9, "0,3,6,9,12,14,17,20,23"}, {6, 1, "5"},      {6, 6, "0,1,2,3,4,5"}};
  for (const Case& c : cases) {
    const std::string got = join(mlfs::layers_for_depth(c.n, c.d));
    CHECK(got == c.want, "layers_for_depth(%u, %u) = %s, want %s", c.n, c.d, got.c_str(), c.want);
  }
  for (std::uint32_t bad : {0u, 7u}) {
    bool threw = false;
    try {
      mlfs::layers_for_depth(6, bad);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    CHECK(threw, "depth %u of 6 layers must be rejected", bad);
  }
}

void test_pick_under_budget() {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // The rule of Engine.pick: highest score within budget; equal scores: the faster; then the first.
  CHECK(mlfs::pick_under_budget({0.70, 0.80, 0.85}, {1.0, 2.0, 4.0}, 3.0) == 1, "budget 3 -> index 1");
  CHECK(mlfs::pick_under_budget({0.70, 0.80, 0.85}, {1.0, 2.0, 4.0}, 4.0) == 2, "latency == budget fits");
  CHECK(mlfs::pick_under_budget({0.70, 0.80, 0.85}, {1.0, 2.0, 4.0}, 0.5) == -1, "none fits -> -1");
  CHECK(mlfs::pick_under_budget({0.8, 0.8, 0.8}, {3.0, 1.0, 1.0}, 5.0) == 1, "tie: the faster, then the first");
  CHECK(mlfs::pick_under_budget({0.9, 0.5}, {nan, 1.0}, 5.0) == 1, "a NaN latency never fits");
  CHECK(mlfs::pick_under_budget({0.9}, {1.0}, nan) == -1, "a NaN budget fits nothing");
  CHECK(mlfs::pick_under_budget({}, {}, 1.0) == -1, "no candidates -> -1");
  bool threw = false;
  try {
    mlfs::pick_under_budget({1.0, 2.0}, {1.0}, 1.0);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "lists of different lengths must be rejected");
}

void test_sizes_and_names() {
  mlfs::ModelDims d;  // all-MiniLM-L6-v2
  d.num_layers = 6;
  d.hidden = 384;
  d.num_heads = 12;
  d.head_dim = 32;
  d.intermediate = 1536;
  // SubnetConfig.full(arch).layer_params(arch) for MiniLM (ArchSpec.layer_params, bert).
  const std::uint64_t full = mlfs::layer_params(d, mlfs::full_subnet(d));
  CHECK(full == 10646784ull, "MiniLM layer parameters %llu, want 10646784", static_cast<unsigned long long>(full));
  CHECK(mlfs::subnet_name(mlfs::full_subnet(d)) == "L6-H12-F1536", "full name");
  const mlfs::SubnetSpec mixed = {{0, 12, 1536}, {2, 6, 512}, {5, 6, 384}};
  CHECK(mlfs::subnet_name(mixed) == "L3-H12/6/6-F1536/512/384", "per-layer name %s", mlfs::subnet_name(mixed).c_str());
  const std::vector<mlfs::SubnetSpec> space = mlfs::default_candidates(d);
  CHECK(space.size() == 4 * 4 * 4, "default space of MiniLM: depths 3..6 x 4 heads x 4 widths, got %zu", space.size());
  for (std::size_t i = 1; i < space.size(); ++i)
    CHECK(mlfs::layer_params(d, space[i - 1]) <= mlfs::layer_params(d, space[i]), "smallest first at %zu", i);
  CHECK(mlfs::subnet_name(space.front()) == "L3-H3-F384", "smallest %s", mlfs::subnet_name(space.front()).c_str());
  CHECK(mlfs::subnet_name(space.back()) == "L6-H12-F1536", "largest %s", mlfs::subnet_name(space.back()).c_str());
}

}  // namespace

int main() {
  test_layers_for_depth();
  test_pick_under_budget();
  test_sizes_and_names();
  return mlfs_test::report("test_budget");
}
