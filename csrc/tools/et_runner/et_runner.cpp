// et_runner: run an exported mlfs-edge encoder (.pte, XNNPACK) with ExecuTorch's C++ Module API —
// the same calls the Android app makes through org.pytorch.executorch.Module (whose JNI wraps
// executorch::extension::Module). Built against the executorch wheel's prebuilt libraries, for the
// host and cross-built for aarch64 Linux (see CMakeLists.txt beside this file).
//
//   et_runner MODEL.pte INPUT.txt OUTPUT.txt [--warmup N] [--repeat N]
//
// INPUT.txt: one example per line, token ids separated by blanks, optionally followed by '|' and
//            the attention mask (same count; default all ones). Blank lines and '#' lines are
//            skipped. Each example runs as forward(input_ids int64 [1, seq], attention_mask
//            int64 [1, seq]), batch 1 at its own length, as the app runs it.
// OUTPUT.txt: one line per example, the float32 output row, each value printed with 9 significant
//            digits (enough to round-trip a float exactly).
// stdout:    the latency of each example (median and min over --repeat runs after --warmup) and a
//            summary line.
// Exit status: 0 ok, 1 the model failed to load or run, 2 bad arguments or input.

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

using executorch::extension::from_blob;
using executorch::extension::Module;
using executorch::runtime::Error;

namespace {

struct Example {
  std::vector<int64_t> ids;
  std::vector<int64_t> mask;
};

[[noreturn]] void fail(int code, const std::string& message) {
  std::cerr << "et_runner: " << message << "\n";
  std::exit(code);
}

std::vector<int64_t> parse_ints(const std::string& text, const std::string& where) {
  std::vector<int64_t> out;
  std::istringstream in(text);
  std::string token;
  while (in >> token) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(token.c_str(), &end, 10);
    if (errno != 0 || end == token.c_str() || *end != '\0') {
      fail(2, where + ": '" + token + "' is not an integer");
    }
    out.push_back(v);
  }
  return out;
}

std::vector<Example> read_examples(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(2, "cannot open input file " + path);
  std::vector<Example> examples;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    const std::string where = path + ":" + std::to_string(lineno);
    const auto bar = line.find('|');
    Example ex;
    ex.ids = parse_ints(line.substr(0, bar), where);
    ex.mask = bar == std::string::npos ? std::vector<int64_t>(ex.ids.size(), 1)
                                       : parse_ints(line.substr(bar + 1), where);
    if (ex.ids.empty()) fail(2, where + ": no token ids");
    if (ex.mask.size() != ex.ids.size()) {
      fail(2, where + ": " + std::to_string(ex.ids.size()) + " ids but " + std::to_string(ex.mask.size()) +
                  " mask values");
    }
    examples.push_back(std::move(ex));
  }
  if (examples.empty()) fail(2, "no examples in " + path);
  return examples;
}

int parse_count(const char* text, const char* flag, int minimum) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < minimum || v > 1000000) {
    fail(2, std::string(flag) + " needs an integer >= " + std::to_string(minimum) + ", got '" + text + "'");
  }
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int warmup = 1;
  int repeat = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--warmup" || arg == "--repeat") && i + 1 < argc) {
      (arg == "--warmup" ? warmup : repeat) = parse_count(argv[++i], arg.c_str(), arg == "--warmup" ? 0 : 1);
    } else if (arg == "-h" || arg == "--help") {
      std::cout << "usage: et_runner MODEL.pte INPUT.txt OUTPUT.txt [--warmup N] [--repeat N]\n";
      return 0;
    } else if (!arg.empty() && arg[0] == '-') {
      fail(2, "unknown option " + arg + " (see --help)");
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 3) fail(2, "usage: et_runner MODEL.pte INPUT.txt OUTPUT.txt [--warmup N] [--repeat N]");
  const std::string& model_path = positional[0];
  const std::vector<Example> examples = read_examples(positional[1]);

  // Mmap: the app maps the bundled file the same way; weights are paged in, not copied.
  Module module(model_path, Module::LoadMode::Mmap);
  using clock = std::chrono::steady_clock;
  const auto load_start = clock::now();
  if (module.load_forward() != Error::Ok) {
    fail(1, "cannot load method 'forward' of " + model_path + " (not an ExecuTorch program, or it needs a "
            "backend/operator this runner was not linked with)");
  }
  const double load_ms = std::chrono::duration<double, std::milli>(clock::now() - load_start).count();

  std::ofstream out(positional[2]);
  if (!out) fail(2, "cannot write output file " + positional[2]);
  std::vector<double> medians;
  for (size_t n = 0; n < examples.size(); ++n) {
    // Copies: from_blob does not own its data, and the runtime may not write into our inputs,
    // but the vectors must outlive every forward call below.
    std::vector<int64_t> ids = examples[n].ids;
    std::vector<int64_t> mask = examples[n].mask;
    const auto seq = static_cast<executorch::aten::SizesType>(ids.size());
    auto ids_t = from_blob(ids.data(), {1, seq}, executorch::aten::ScalarType::Long);
    auto mask_t = from_blob(mask.data(), {1, seq}, executorch::aten::ScalarType::Long);

    std::vector<float> row;
    std::vector<double> times;
    for (int r = 0; r < warmup + repeat; ++r) {
      const auto start = clock::now();
      const auto result = module.forward({ids_t, mask_t});
      const double ms = std::chrono::duration<double, std::milli>(clock::now() - start).count();
      if (!result.ok()) {
        fail(1, "forward failed on example " + std::to_string(n) + " (seq " + std::to_string(seq) +
                    "): error " + std::to_string(static_cast<int>(result.error())) +
                    "; is the length within the exported range (see the manifest)?");
      }
      if (r >= warmup) times.push_back(ms);
      if (r == 0) {
        const auto& t = result->at(0).toTensor();
        if (t.scalar_type() != executorch::aten::ScalarType::Float) fail(1, "output is not float32");
        const float* data = t.const_data_ptr<float>();
        row.assign(data, data + t.numel());  // copy now: the output buffer is reused by the next call
      }
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    medians.push_back(median);
    std::printf("example %zu: seq %d, %zu outputs, latency median %.3f ms, min %.3f ms (%d runs)\n", n,
                static_cast<int>(seq), row.size(), median, times.front(), repeat);
    for (size_t i = 0; i < row.size(); ++i) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.9g", row[i]);
      out << (i ? " " : "") << buf;
    }
    out << "\n";
  }
  out.close();
  if (!out) fail(2, "error writing " + positional[2]);
  std::sort(medians.begin(), medians.end());
  std::printf("model %s: load %.1f ms, %zu examples, median latency %.3f ms\n", model_path.c_str(), load_ms,
              examples.size(), medians[medians.size() / 2]);
  return 0;
}
