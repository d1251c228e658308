// mlfs-runner: run sub-networks of packed .mlfs files with the native engine and print a latency
// table; optionally dump every output (JSON lines) so CI can compare them with the Python engine, and
// pick the largest sub-network within a latency budget. `mlfs-runner generate` continues a prompt of
// token ids with any sub-network of a packed decoder and prints the new ids and tokens/s. Built fully
// static for aarch64 (MLFS_STATIC_RUNNER), it also runs on an Android phone from `adb shell`
// (android_demo/README.md).
#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlfs/budget.h"
#include "mlfs/cpu_features.h"
#include "mlfs/decoder.h"
#include "mlfs/engine.h"
#include "mlfs/packed_file.h"

namespace {

const char kUsage[] =
    "usage: mlfs-runner MODEL.mlfs [MODEL.mlfs ...] [options]\n"
    "  --subnet SPEC    full | depth=D,heads=H,mlp=F (d/h/f; an omitted value is the model's) | palette\n"
    "                   (full, 3/4 width, 2/3 depth at 1/2 width, 1/2 depth at 1/4 width); repeatable;\n"
    "                   default: palette\n"
    "  --seq N          tokens per sequence of the fixed synthetic input (default 128)\n"
    "  --batch N        sequences per run (default 1)\n"
    "  --ids FILE       run these token ids instead: one sequence per line, space-separated; shorter\n"
    "                   lines are padded with id 0 and masked out\n"
    "  --threads N      CPU threads (default 1)\n"
    "  --runs N         timed runs per sub-network (default 20)   --warmup N  untimed runs first (default 3)\n"
    "  --dump FILE      write every output as one JSON line per model and sub-network\n"
    "  --budget-ms MS   also profile the default search space and report the largest sub-network\n"
    "                   that runs within MS on this CPU\n"
    "  --no-verify      skip the checksum pass over each file\n"
    "\n"
    "usage: mlfs-runner generate MODEL.mlfs --prompt-ids 1,2,3 [options]   (a packed decoder)\n"
    "  --subnet SPEC    full | depth=D,heads=H,mlp=F as above (heads: whole key/value groups); default full\n"
    "  --max-new-tokens N   (default 32)      --stop-ids 2,0   end after emitting one of these (default none)\n"
    "  --temperature T  0 = greedy (default)  --top-k K (0 = off)  --top-p P (1 = off)  --seed S\n"
    "  --repetition-penalty R (1 = off)       --threads N (default 1)  --cache fp32|fp16 (default fp32)\n"
    "  --no-verify      skip the checksum pass\n"
    "  --draft depth=D[,heads=H,mlp=F]   self-speculative decoding: the sub-network's first D layers (at\n"
    "                   widths H/F, default its own) draft, the sub-network verifies; greedy output unchanged\n"
    "  --draft-k K      draft tokens per round to start with (default 4; adapted)   --draft-vocab N  the draft\n"
    "                   scores only the first N tokens of a frequency-ordered file (pack --vocab-order)\n"
    "  prints the new ids as they are produced, then prefill and decode tokens/s\n";

struct Options {
  std::vector<std::string> models, subnets;
  std::size_t seq = 128, batch = 1;
  std::string ids_file, dump_file;
  int threads = 1, runs = 20, warmup = 3;
  double budget_ms = 0;
  bool verify = true;
};

struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

long parse_int(const std::string& s, const std::string& what, long lo, long hi) {
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < lo || v > hi)
    throw UsageError(what + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" +
                     s + "'");
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") throw UsageError("");
    else if (a == "--subnet") o.subnets.push_back(value());
    else if (a == "--seq") o.seq = parse_int(value(), "--seq", 1, 1 << 16);
    else if (a == "--batch") o.batch = parse_int(value(), "--batch", 1, 1 << 16);
    else if (a == "--ids") o.ids_file = value();
    else if (a == "--threads") o.threads = static_cast<int>(parse_int(value(), "--threads", 1, 256));
    else if (a == "--runs") o.runs = static_cast<int>(parse_int(value(), "--runs", 1, 1000000));
    else if (a == "--warmup") o.warmup = static_cast<int>(parse_int(value(), "--warmup", 0, 1000000));
    else if (a == "--dump") o.dump_file = value();
    else if (a == "--no-verify") o.verify = false;
    else if (a == "--budget-ms") {
      const std::string v = value();
      char* end = nullptr;
      o.budget_ms = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(o.budget_ms > 0) || std::isinf(o.budget_ms))
        throw UsageError("--budget-ms must be a positive number, got '" + v + "'");
    } else if (a.rfind("--", 0) == 0) throw UsageError("unknown option " + a);
    else o.models.push_back(a);
  }
  if (o.models.empty()) throw UsageError("give at least one .mlfs file");
  if (o.subnets.empty()) o.subnets.push_back("palette");
  return o;
}

std::uint32_t round8(double x) { return std::max<std::uint32_t>(8, static_cast<std::uint32_t>(std::lround(x / 8)) * 8); }

// depth / heads / mlp of a "depth=D,heads=H,mlp=F" spec (d/h/f; an omitted value is the model's).
struct Uniform {
  std::uint32_t depth, heads, mlp;
};

Uniform parse_uniform(const std::string& spec, const mlfs::ModelDims& d) {
  Uniform u{d.num_layers, d.num_heads, d.intermediate};
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) throw UsageError("sub-network '" + spec + "': expected key=value items");
    const std::string key = item.substr(0, eq), val = item.substr(eq + 1);
    const auto v = static_cast<std::uint32_t>(parse_int(val, "sub-network " + key, 1, 1 << 20));
    if (key == "depth" || key == "d") u.depth = v;
    else if (key == "heads" || key == "h") u.heads = v;
    else if (key == "mlp" || key == "f") u.mlp = v;
    else throw UsageError("sub-network '" + spec + "': unknown key '" + key + "' (depth, heads, mlp)");
  }
  return u;
}

// The sub-networks one --subnet SPEC names, for this model.
std::vector<mlfs::SubnetSpec> parse_subnet(const std::string& spec, const mlfs::Engine& e) {
  const mlfs::ModelDims& d = e.dims();
  if (spec == "full") return {mlfs::full_subnet(d)};
  if (spec == "palette") {
    auto h = [&](double fr) { return std::max<std::uint32_t>(1, static_cast<std::uint32_t>(std::lround(d.num_heads * fr))); };
    auto f = [&](double fr) { return std::min<std::uint32_t>(d.intermediate, round8(d.intermediate * fr)); };
    auto depth = [&](double fr) { return std::max<std::uint32_t>(1, static_cast<std::uint32_t>(std::lround(d.num_layers * fr))); };
    return {mlfs::full_subnet(d), mlfs::uniform_subnet(e, d.num_layers, h(0.75), f(0.75)),
            mlfs::uniform_subnet(e, depth(2.0 / 3), h(0.5), f(0.5)), mlfs::uniform_subnet(e, depth(0.5), h(0.25), f(0.25))};
  }
  const Uniform u = parse_uniform(spec, d);
  return {mlfs::uniform_subnet(e, u.depth, u.heads, u.mlp)};
}

struct Batch {
  std::vector<std::int32_t> ids, mask;
  std::size_t rows = 0, seq = 0;
};

Batch read_ids(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::vector<std::vector<std::int32_t>> lines;
  std::string line;
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::vector<std::int32_t> row;
    std::string tok;
    while (ss >> tok) row.push_back(static_cast<std::int32_t>(parse_int(tok, path + ": token id", 0, 1L << 30)));
    if (!row.empty()) lines.push_back(std::move(row));
  }
  if (lines.empty()) throw std::runtime_error(path + ": no token ids");
  Batch b;
  b.rows = lines.size();
  for (const auto& r : lines) b.seq = std::max(b.seq, r.size());
  b.ids.assign(b.rows * b.seq, 0);
  b.mask.assign(b.rows * b.seq, 0);
  for (std::size_t r = 0; r < b.rows; ++r)
    for (std::size_t s = 0; s < lines[r].size(); ++s) {
      b.ids[r * b.seq + s] = lines[r][s];
      b.mask[r * b.seq + s] = 1;
    }
  return b;
}

Batch synthetic(std::size_t rows, std::size_t seq, std::size_t vocab) {
  Batch b;
  b.rows = rows;
  b.seq = seq;
  b.mask.assign(rows * seq, 1);
  for (std::size_t i = 0; i < rows * seq; ++i) b.ids.push_back(static_cast<std::int32_t>((1000 + (i * 7919) % 1000) % vocab));
  return b;
}

std::string json_ints(const mlfs::SubnetSpec& s, std::uint32_t mlfs::LayerSlice::*field) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i].*field);
  return out + "]";
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

int run(const Options& o) {
  std::printf("mlfs-runner: kernels %s (CPU:", mlfs::isa_name(mlfs::selected_isa()));
  for (const auto& [name, present] : mlfs::cpu_feature_list())
    if (present) std::printf(" %s", name.c_str());
  std::printf("), %d thread(s)\n", o.threads);
  std::FILE* dump = nullptr;
  if (!o.dump_file.empty() && !(dump = std::fopen(o.dump_file.c_str(), "w")))
    throw std::runtime_error(o.dump_file + ": cannot write");
  std::printf("%-28s %-5s %9s  %-18s %9s %10s %10s\n", "file", "dtype", "size MiB", "sub-network", "params M",
              "median ms", "min ms");
  for (const std::string& path : o.models) {
    mlfs::Engine engine(mlfs::PackedFile::open(path, o.verify));
    const Batch in = o.ids_file.empty() ? synthetic(o.batch, o.seq, engine.dims().vocab_size) : read_ids(o.ids_file);
    std::vector<mlfs::SubnetSpec> specs;
    for (const std::string& s : o.subnets)
      for (mlfs::SubnetSpec& spec : parse_subnet(s, engine)) specs.push_back(std::move(spec));
    const std::string base = path.substr(path.find_last_of('/') + 1);
    const char* dtype = mlfs::dtype_name(engine.dims().weight_dtype);
    std::vector<float> out(in.rows * engine.output_dim());
    for (const mlfs::SubnetSpec& spec : specs) {
      for (int i = 0; i < o.warmup; ++i)
        engine.run(in.ids.data(), in.mask.data(), in.rows, in.seq, spec, o.threads, out.data());
      std::vector<double> ms;
      for (int i = 0; i < o.runs; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        engine.run(in.ids.data(), in.mask.data(), in.rows, in.seq, spec, o.threads, out.data());
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      const double median = ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
      std::printf("%-28s %-5s %9.1f  %-18s %9.2f %10.3f %10.3f\n", base.c_str(), dtype,
                  engine.file().file_size() / 1048576.0, mlfs::subnet_name(spec).c_str(),
                  mlfs::layer_params(engine.dims(), spec) / 1e6, median, ms.front());
      if (dump) {
        std::fprintf(dump, "{\"file\": %s, \"dtype\": \"%s\", \"subnet\": \"%s\", \"layers\": %s, \"heads\": %s, "
                     "\"mlp\": %s, \"rows\": %zu, \"cols\": %zu, \"median_ms\": %.6f, \"output\": [",
                     json_string(path).c_str(), dtype, mlfs::subnet_name(spec).c_str(),
                     json_ints(spec, &mlfs::LayerSlice::layer).c_str(), json_ints(spec, &mlfs::LayerSlice::heads).c_str(),
                     json_ints(spec, &mlfs::LayerSlice::mlp).c_str(), in.rows, engine.output_dim(), median);
        for (std::size_t i = 0; i < out.size(); ++i)
          std::fprintf(dump, std::isfinite(out[i]) ? "%s%.9g" : "%sNaN", i ? ", " : "", static_cast<double>(out[i]));
        std::fprintf(dump, "]}\n");
      }
    }
    if (o.budget_ms > 0) {
      const std::vector<mlfs::SubnetSpec> space = mlfs::default_candidates(engine.dims());
      const mlfs::BudgetPick pick =
          mlfs::pick_largest_under_budget(engine, space, o.budget_ms, in.seq, o.threads, std::max(1, o.runs / 4));
      if (pick.index < 0) {
        std::size_t fastest = 0;
        for (std::size_t i = 1; i < space.size(); ++i)
          if (pick.latency_ms[i] < pick.latency_ms[fastest]) fastest = i;
        std::printf("budget %.3g ms (%s): no sub-network fits; the fastest, %s, takes %.3f ms\n", o.budget_ms,
                    base.c_str(), mlfs::subnet_name(space[fastest]).c_str(), pick.latency_ms[fastest]);
      } else {
        const auto& best = space[static_cast<std::size_t>(pick.index)];
        std::printf("budget %.3g ms (%s): picked %s, %.3f ms, %.2f M layer parameters (of %zu candidates)\n",
                    o.budget_ms, base.c_str(), mlfs::subnet_name(best).c_str(),
                    pick.latency_ms[static_cast<std::size_t>(pick.index)],
                    mlfs::layer_params(engine.dims(), best) / 1e6, space.size());
      }
    }
  }
  if (dump && std::fclose(dump) != 0) throw std::runtime_error(o.dump_file + ": write failed");
  return 0;
}

// --- generate: a packed decoder continues a prompt of token ids ------------------------------------

struct GenOptions {
  std::string model, subnet = "full", draft;
  std::size_t draft_k = 4, draft_vocab = 0;
  std::vector<std::int32_t> prompt, stops;
  bool have_prompt = false, verify = true;
  mlfs::GenerationParams params;
};

double parse_float(const std::string& s, const std::string& what) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(v)) throw UsageError(what + " must be a number, got '" + s + "'");
  return v;
}

// "1,2,3" → ids. Any int32 passes here: the engine names an id outside the vocabulary itself.
std::vector<std::int32_t> parse_ids(const std::string& s, const std::string& what) {
  std::vector<std::int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    out.push_back(static_cast<std::int32_t>(parse_int(item, what, -2147483647L - 1, 2147483647L)));
  return out;
}

GenOptions parse_generate_args(int argc, char** argv) {
  GenOptions o;
  o.params.max_new_tokens = 32;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    mlfs::SamplingParams& sp = o.params.sampling;
    if (a == "-h" || a == "--help") throw UsageError("");
    else if (a == "--prompt-ids") {
      o.prompt = parse_ids(value(), "--prompt-ids: a token id");
      o.have_prompt = true;
    } else if (a == "--subnet") o.subnet = value();
    // Up to 2^62: a huge value reaches the engine, which says how many positions the model has left.
    else if (a == "--max-new-tokens")
      o.params.max_new_tokens = static_cast<std::size_t>(parse_int(value(), "--max-new-tokens", 0, 1L << 62));
    else if (a == "--stop-ids") o.stops = parse_ids(value(), "--stop-ids: a token id");
    else if (a == "--temperature") sp.temperature = static_cast<float>(parse_float(value(), "--temperature"));
    else if (a == "--top-k") sp.top_k = static_cast<std::uint32_t>(parse_int(value(), "--top-k", 0, 1L << 31));
    else if (a == "--top-p") sp.top_p = static_cast<float>(parse_float(value(), "--top-p"));
    else if (a == "--repetition-penalty")
      sp.repetition_penalty = static_cast<float>(parse_float(value(), "--repetition-penalty"));
    else if (a == "--seed") {
      const std::string v = value();
      char* end = nullptr;
      errno = 0;
      const unsigned long long seed = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
        throw UsageError("--seed must be an integer in 0..2^64-1, got '" + v + "'");
      sp.seed = seed;
    } else if (a == "--threads") o.params.threads = static_cast<int>(parse_int(value(), "--threads", 1, 256));
    else if (a == "--cache") {
      const std::string v = value();
      if (v == "fp32") o.params.cache_dtype = mlfs::DType::f32;
      else if (v == "fp16") o.params.cache_dtype = mlfs::DType::f16;
      else throw UsageError("--cache must be fp32 or fp16, got '" + v + "'");
    } else if (a == "--no-verify") o.verify = false;
    else if (a == "--draft") o.draft = value();
    else if (a == "--draft-k") o.draft_k = static_cast<std::size_t>(parse_int(value(), "--draft-k", 1, 64));
    else if (a == "--draft-vocab")
      o.draft_vocab = static_cast<std::size_t>(parse_int(value(), "--draft-vocab", 32, 1L << 31));
    else if (a.rfind("--", 0) == 0) throw UsageError("unknown option " + a);
    else if (o.model.empty()) o.model = a;
    else throw UsageError("generate takes one .mlfs file, got a second: " + a);
  }
  if (o.model.empty()) throw UsageError("generate: give a packed decoder .mlfs file");
  if (!o.have_prompt) throw UsageError("generate: give the prompt as --prompt-ids 1,2,3");
  return o;
}

int generate(const GenOptions& o) {
  std::shared_ptr<const mlfs::PackedFile> file = mlfs::PackedFile::open(o.model, o.verify);
  if (file->dims().kind != mlfs::ModelKind::decoder)
    throw std::invalid_argument(o.model + ": an encoder file; `generate` needs a packed decoder (causal LM)");
  auto decoder = std::make_shared<mlfs::Decoder>(file);
  const mlfs::ModelDims& d = decoder->dims();
  mlfs::SubnetSpec spec;
  if (o.subnet == "full") {
    spec = mlfs::full_subnet(d);
  } else {
    const Uniform u = parse_uniform(o.subnet, d);
    // Layers spread over the stack as SubnetConfig.uniform picks them; the Generation validates widths.
    for (std::uint32_t layer : mlfs::layers_for_depth(d.num_layers, u.depth)) spec.push_back({layer, u.heads, u.mlp});
  }
  for (std::int32_t t : o.stops)  // named here: the engine's own message would say "position 0"
    if (t < 0 || static_cast<std::uint32_t>(t) >= d.vocab_size)
      throw std::invalid_argument("stop token " + std::to_string(t) + " is outside the vocabulary [0, " +
                                  std::to_string(d.vocab_size) + ")");
  mlfs::GenerationParams params = o.params;
  params.stop_tokens = o.stops;
  if (!o.draft.empty()) {
    // The draft: the first D of the sub-network's layers (a depth prefix at the same widths shares its KV cache).
    mlfs::ModelDims unset = d;  // widths left out of --draft (0 here) keep the sub-network's own
    unset.num_heads = unset.intermediate = 0;
    const Uniform u = parse_uniform(o.draft, unset);
    if (u.depth > spec.size())
      throw std::invalid_argument("--draft depth " + std::to_string(u.depth) + " exceeds the sub-network's " +
                                  std::to_string(spec.size()) + " layers");
    mlfs::SubnetSpec draft(spec.begin(), spec.begin() + u.depth);
    for (mlfs::LayerSlice& l : draft) {
      if (u.heads) l.heads = u.heads;
      if (u.mlp) l.mlp = u.mlp;
    }
    params.speculation = mlfs::SpeculationParams{draft, std::max<std::size_t>(8, o.draft_k), o.draft_k, true,
                                                 o.draft_vocab};
  }
  mlfs::Generation gen(decoder, o.prompt, spec, params);  // validates everything before any compute
  std::printf("mlfs-runner: kernels %s, %d thread(s)\n", mlfs::isa_name(mlfs::selected_isa()), o.params.threads);
  const std::string base = o.model.substr(o.model.find_last_of('/') + 1);
  std::printf("file %s  dtype %s  size %.1f MiB  sub-network %s  prompt %zu tokens  cache %s\n", base.c_str(),
              mlfs::dtype_name(d.weight_dtype), file->file_size() / 1048576.0, mlfs::subnet_name(spec).c_str(),
              o.prompt.size(), o.params.cache_dtype == mlfs::DType::f16 ? "fp16" : "fp32");
  std::printf("generated:");
  std::fflush(stdout);
  for (std::int64_t t; (t = gen.next()) >= 0;) {  // stream: each id as soon as it is sampled
    std::printf(" %lld", static_cast<long long>(t));
    std::fflush(stdout);
  }
  std::printf("\n");
  // The first new token's time is the prefill's; decode tok/s counts the tokens after it.
  const double prefill = gen.prefill_seconds() > 0 ? gen.prompt_tokens() / gen.prefill_seconds() : 0.0;
  const double decode = gen.decode_seconds() > 0 ? (gen.generated() - 1) / gen.decode_seconds() : 0.0;
  std::printf("%zu new tokens; prefill %.1f tok/s (%zu tokens, %.3f ms); decode %.1f tok/s; KV cache %.1f KiB\n",
              gen.generated(), prefill, gen.prompt_tokens(), gen.prefill_seconds() * 1e3, decode,
              gen.cache().bytes() / 1024.0);
  if (const mlfs::Speculator* sp = gen.speculator()) {
    const mlfs::SpeculationStats& st = sp->stats();
    std::printf("draft: %zu/%zu drafted tokens accepted, %.2f tokens per verification over %zu rounds, %zu plain "
                "steps%s\n", st.accepted, st.drafted,
                st.rounds ? static_cast<double>(st.accepted + st.rounds) / static_cast<double>(st.rounds) : 0.0,
                st.rounds, st.plain_steps, sp->shares_cache() ? ", KV cache shared with the sub-network" : "");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::string(argv[1]) == "generate") return generate(parse_generate_args(argc, argv));
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    if (!*e.what()) {  // --help
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "%s\n\n%s", e.what(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlfs-runner: %s\n", e.what());
    return 2;
  }
}
