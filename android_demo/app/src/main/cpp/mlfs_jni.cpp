// JNI face of the engine for org.mlfsedge.demo.engine.MlfsEngine: argument checks and conversions
// only; the work is done by mlfs_native (csrc/). A handle holds an encoder (run) or a decoder
// (generate), told apart by the packed file's model kind. Every entry point runs inside guard(), which turns
// C++ exceptions into Java ones, so none ever unwinds through the JVM's frames (undefined behaviour,
// in practice an abort). Arrays are copied in and out with Get/Set<Type>ArrayRegion: no pinned
// memory to release on an error path.
#include <jni.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlfs/budget.h"
#include "mlfs/decoder.h"
#include "mlfs/engine.h"
#include "mlfs/packed_file.h"

namespace {

// A Java exception is already pending (a failed JNI call raised it): just return to Java.
struct JavaPending {};
// Maps to IllegalStateException (use after close).
struct IllegalState : std::logic_error {
  using std::logic_error::logic_error;
};

struct Handle {
  std::unique_ptr<mlfs::Engine> engine;     // an encoder file, or
  std::shared_ptr<mlfs::Decoder> decoder;  // a decoder file (a Generation shares it)
  const mlfs::ModelDims& dims() const { return engine ? engine->dims() : decoder->dims(); }
  const mlfs::PackedFile& file() const { return engine ? engine->file() : decoder->file(); }
};

// UTF-8 (possibly malformed) → UTF-16, so that any message or path becomes a valid Java string:
// ThrowNew/NewStringUTF want *modified* UTF-8 and abort under CheckJNI on 4-byte sequences.
std::u16string utf16(const std::string& s) {
  std::u16string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xe ? 2 : (c >> 3) == 0x1e ? 3 : -1;
    std::uint32_t cp = extra == 0 ? c : extra == 1 ? c & 0x1f : extra == 2 ? c & 0x0f : c & 0x07;
    bool ok = extra >= 0 && i + extra < s.size();
    for (int k = 1; ok && k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc >> 6) == 0x2;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      out.push_back(u'\ufffd');
      ++i;
      continue;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xd800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xdc00 + (cp & 0x3ff)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
    i += extra + 1;
  }
  return out;
}

jstring java_string(JNIEnv* env, const std::string& s) {
  const std::u16string u = utf16(s);
  return env->NewString(reinterpret_cast<const jchar*>(u.data()), static_cast<jsize>(u.size()));
}

void throw_java(JNIEnv* env, const char* class_name, const std::string& message) {
  if (env->ExceptionCheck()) return;  // keep the first exception
  jclass cls = env->FindClass(class_name);
  if (cls == nullptr) return;  // FindClass raised NoClassDefFoundError
  jmethodID ctor = env->GetMethodID(cls, "<init>", "(Ljava/lang/String;)V");
  jstring msg = ctor ? java_string(env, message) : nullptr;
  if (msg != nullptr) {
    auto* ex = static_cast<jthrowable>(env->NewObject(cls, ctor, msg));
    if (ex != nullptr) env->Throw(ex);
  }
}

template <typename R, typename F>
R guard(JNIEnv* env, R fallback, F&& body) {
  try {
    return body();
  } catch (const JavaPending&) {
  } catch (const IllegalState& e) {
    throw_java(env, "java/lang/IllegalStateException", e.what());
  } catch (const mlfs::PackedFileError& e) {
    throw_java(env, "java/io/IOException", e.what());
  } catch (const std::invalid_argument& e) {
    throw_java(env, "java/lang/IllegalArgumentException", e.what());
  } catch (const std::bad_alloc&) {
    throw_java(env, "java/lang/OutOfMemoryError", "native allocation failed");
  } catch (const std::exception& e) {
    throw_java(env, "java/lang/RuntimeException", e.what());
  } catch (...) {
    throw_java(env, "java/lang/RuntimeException", "unknown native error");
  }
  return fallback;
}

Handle& handle_of(jlong handle) {
  if (handle == 0) throw IllegalState("this MlfsEngine is closed");
  return *reinterpret_cast<Handle*>(handle);
}

mlfs::Engine& engine_of(jlong handle) {
  Handle& h = handle_of(handle);
  if (!h.engine)
    throw std::invalid_argument(h.file().path() + ": a decoder (causal LM) file; generate text with it instead");
  return *h.engine;
}

const std::shared_ptr<mlfs::Decoder>& decoder_of(jlong handle) {
  Handle& h = handle_of(handle);
  if (!h.decoder) throw std::invalid_argument(h.file().path() + ": an encoder file; generate() needs a decoder");
  return h.decoder;
}

void check(JNIEnv* env) {
  if (env->ExceptionCheck()) throw JavaPending{};
}

std::vector<std::int32_t> ints(JNIEnv* env, jintArray a, const char* what) {
  if (a == nullptr) throw std::invalid_argument(std::string(what) + " must not be null");
  std::vector<std::int32_t> v(static_cast<std::size_t>(env->GetArrayLength(a)));
  env->GetIntArrayRegion(a, 0, static_cast<jsize>(v.size()), reinterpret_cast<jint*>(v.data()));
  check(env);
  return v;
}

std::vector<double> doubles(JNIEnv* env, jdoubleArray a, const char* what) {
  if (a == nullptr) throw std::invalid_argument(std::string(what) + " must not be null");
  std::vector<double> v(static_cast<std::size_t>(env->GetArrayLength(a)));
  env->GetDoubleArrayRegion(a, 0, static_cast<jsize>(v.size()), v.data());
  check(env);
  return v;
}

std::uint32_t non_negative(std::int32_t v, const std::string& what) {
  if (v < 0) throw std::invalid_argument(what + " must not be negative, got " + std::to_string(v));
  return static_cast<std::uint32_t>(v);
}

// One sub-network from its three parallel arrays; the engine validates it against the model.
mlfs::SubnetSpec subnet(JNIEnv* env, jintArray layers, jintArray heads, jintArray mlp) {
  const auto l = ints(env, layers, "layers"), h = ints(env, heads, "heads"), f = ints(env, mlp, "mlp");
  if (l.size() != h.size() || l.size() != f.size())
    throw std::invalid_argument("layers, heads and mlp must have one entry per kept layer, got " +
                                std::to_string(l.size()) + ", " + std::to_string(h.size()) + ", " +
                                std::to_string(f.size()));
  mlfs::SubnetSpec spec;
  for (std::size_t i = 0; i < l.size(); ++i)
    spec.push_back({non_negative(l[i], "layer index"), non_negative(h[i], "heads"), non_negative(f[i], "mlp width")});
  return spec;
}

std::vector<mlfs::SubnetSpec> subnets(JNIEnv* env, jobjectArray layers, jobjectArray heads, jobjectArray mlp) {
  if (layers == nullptr || heads == nullptr || mlp == nullptr)
    throw std::invalid_argument("candidate arrays must not be null");
  const jsize n = env->GetArrayLength(layers);
  if (n == 0) throw std::invalid_argument("give at least one candidate sub-network");
  if (env->GetArrayLength(heads) != n || env->GetArrayLength(mlp) != n)
    throw std::invalid_argument("layers, heads and mlp must list the same candidates");
  std::vector<mlfs::SubnetSpec> out;
  for (jsize i = 0; i < n; ++i) {
    auto l = static_cast<jintArray>(env->GetObjectArrayElement(layers, i));
    check(env);
    auto h = static_cast<jintArray>(env->GetObjectArrayElement(heads, i));
    check(env);
    auto f = static_cast<jintArray>(env->GetObjectArrayElement(mlp, i));
    check(env);
    out.push_back(subnet(env, l, h, f));
    env->DeleteLocalRef(l);  // a long candidate list must not exhaust the local reference table
    env->DeleteLocalRef(h);
    env->DeleteLocalRef(f);
  }
  return out;
}

int positive(jint v, const char* what, jint max) {
  if (v < 1 || v > max)
    throw std::invalid_argument(std::string(what) + " must be between 1 and " + std::to_string(max) + ", got " +
                                std::to_string(v));
  return v;
}

jintArray new_ints(JNIEnv* env, const std::vector<jint>& v) {
  jintArray a = env->NewIntArray(static_cast<jsize>(v.size()));
  if (a == nullptr) throw JavaPending{};
  env->SetIntArrayRegion(a, 0, static_cast<jsize>(v.size()), v.data());
  check(env);
  return a;
}

}  // namespace

#define MLFS_JNI(ret, name) extern "C" JNIEXPORT ret JNICALL Java_org_mlfsedge_demo_engine_MlfsEngine_##name

MLFS_JNI(jlong, nativeOpen)(JNIEnv* env, jclass, jstring path, jboolean verify_checksum) {
  return guard<jlong>(env, 0, [&]() -> jlong {
    if (path == nullptr) throw std::invalid_argument("path must not be null");
    // The path as real UTF-8 (String.getBytes), not JNI's modified UTF-8, which open() would misread.
    jclass string_class = env->GetObjectClass(path);
    jmethodID get_bytes = env->GetMethodID(string_class, "getBytes", "(Ljava/lang/String;)[B");
    check(env);
    jstring charset = env->NewStringUTF("UTF-8");
    check(env);
    auto bytes = static_cast<jbyteArray>(env->CallObjectMethod(path, get_bytes, charset));
    check(env);
    std::string p(static_cast<std::size_t>(env->GetArrayLength(bytes)), '\0');
    env->GetByteArrayRegion(bytes, 0, static_cast<jsize>(p.size()), reinterpret_cast<jbyte*>(&p[0]));
    check(env);
    if (p.empty()) throw std::invalid_argument("path must not be empty");
    if (p.find('\0') != std::string::npos) throw std::invalid_argument("path must not contain NUL characters");
    auto handle = std::make_unique<Handle>();
    std::shared_ptr<const mlfs::PackedFile> file = mlfs::PackedFile::open(p, verify_checksum == JNI_TRUE);
    if (file->dims().kind == mlfs::ModelKind::decoder)
      handle->decoder = std::make_shared<mlfs::Decoder>(std::move(file));
    else
      handle->engine = std::make_unique<mlfs::Engine>(std::move(file));
    return reinterpret_cast<jlong>(handle.release());
  });
}

MLFS_JNI(void, nativeClose)(JNIEnv* env, jclass, jlong handle) {
  guard<int>(env, 0, [&] {
    delete reinterpret_cast<Handle*>(handle);
    return 0;
  });
}

MLFS_JNI(jintArray, nativeDims)(JNIEnv* env, jclass, jlong handle) {
  return guard<jintArray>(env, nullptr, [&] {
    const Handle& h = handle_of(handle);
    const mlfs::ModelDims& d = h.dims();
    // Order: MlfsEngine's NUM_LAYERS .. NUM_KV_HEADS constants. A decoder's output row is the logits.
    const std::size_t output_dim = h.engine ? h.engine->output_dim() : d.vocab_size;
    return new_ints(env, {static_cast<jint>(d.num_layers), static_cast<jint>(d.hidden),
                          static_cast<jint>(d.num_heads), static_cast<jint>(d.intermediate),
                          static_cast<jint>(d.vocab_size), static_cast<jint>(d.max_positions),
                          static_cast<jint>(d.num_labels), static_cast<jint>(output_dim),
                          static_cast<jint>(d.kind == mlfs::ModelKind::decoder ? 1 : 0),
                          static_cast<jint>(d.num_kv_heads)});
  });
}

MLFS_JNI(jstring, nativeDtype)(JNIEnv* env, jclass, jlong handle) {
  return guard<jstring>(env, nullptr, [&] {
    return java_string(env, mlfs::dtype_name(handle_of(handle).dims().weight_dtype));
  });
}

MLFS_JNI(jlong, nativeFileSize)(JNIEnv* env, jclass, jlong handle) {
  return guard<jlong>(env, 0, [&] { return static_cast<jlong>(handle_of(handle).file().file_size()); });
}

MLFS_JNI(jbyteArray, nativeMetadata)(JNIEnv* env, jclass, jlong handle) {
  return guard<jbyteArray>(env, nullptr, [&] {
    const std::string& meta = handle_of(handle).file().metadata_json();
    jbyteArray a = env->NewByteArray(static_cast<jsize>(meta.size()));
    if (a == nullptr) throw JavaPending{};
    env->SetByteArrayRegion(a, 0, static_cast<jsize>(meta.size()), reinterpret_cast<const jbyte*>(meta.data()));
    check(env);
    return a;
  });
}

MLFS_JNI(jintArray, nativeUniformLayers)(JNIEnv* env, jclass, jlong handle, jint depth, jint heads, jint mlp) {
  return guard<jintArray>(env, nullptr, [&] {
    const Handle& h = handle_of(handle);
    const std::uint32_t dp = non_negative(depth, "depth"), hd = non_negative(heads, "heads"),
                        f = non_negative(mlp, "mlp width");
    mlfs::SubnetSpec spec;
    if (h.engine) {
      spec = mlfs::uniform_subnet(*h.engine, dp, hd, f);
    } else {  // the same spread of layers; the decoder checks whole key/value groups (and 4-bit widths)
      for (std::uint32_t layer : mlfs::layers_for_depth(h.dims().num_layers, dp)) spec.push_back({layer, hd, f});
      h.decoder->validate(spec);
    }
    std::vector<jint> layers;
    for (const mlfs::LayerSlice& s : spec) layers.push_back(static_cast<jint>(s.layer));
    return new_ints(env, layers);
  });
}

MLFS_JNI(jobjectArray, nativeDefaultCandidates)(JNIEnv* env, jclass, jlong handle) {
  return guard<jobjectArray>(env, nullptr, [&] {
    const std::vector<mlfs::SubnetSpec> space = mlfs::default_candidates(engine_of(handle).dims());
    jclass int_array = env->FindClass("[I");
    check(env);
    jobjectArray out = env->NewObjectArray(static_cast<jsize>(space.size()), int_array, nullptr);
    if (out == nullptr) throw JavaPending{};
    for (std::size_t i = 0; i < space.size(); ++i) {
      std::vector<jint> flat;  // (layer, heads, mlp) triples
      for (const mlfs::LayerSlice& s : space[i])
        flat.insert(flat.end(), {static_cast<jint>(s.layer), static_cast<jint>(s.heads), static_cast<jint>(s.mlp)});
      jintArray row = new_ints(env, flat);
      env->SetObjectArrayElement(out, static_cast<jsize>(i), row);
      check(env);
      env->DeleteLocalRef(row);
    }
    return out;
  });
}

MLFS_JNI(jlong, nativeLayerParams)(JNIEnv* env, jclass, jlong handle, jintArray layers, jintArray heads,
                                   jintArray mlp) {
  return guard<jlong>(env, 0, [&] {
    const mlfs::Engine& e = engine_of(handle);
    const mlfs::SubnetSpec spec = subnet(env, layers, heads, mlp);
    e.validate(spec);
    return static_cast<jlong>(mlfs::layer_params(e.dims(), spec));
  });
}

MLFS_JNI(jfloatArray, nativeRun)(JNIEnv* env, jclass, jlong handle, jintArray input_ids, jintArray attention_mask,
                                 jint batch, jintArray layers, jintArray heads, jintArray mlp, jint threads) {
  return guard<jfloatArray>(env, nullptr, [&] {
    mlfs::Engine& e = engine_of(handle);
    const auto ids = ints(env, input_ids, "inputIds"), mask = ints(env, attention_mask, "attentionMask");
    const mlfs::SubnetSpec spec = subnet(env, layers, heads, mlp);
    if (batch < 1) throw std::invalid_argument("batch must be at least 1, got " + std::to_string(batch));
    if (ids.empty()) throw std::invalid_argument("inputIds must not be empty");
    if (mask.size() != ids.size())
      throw std::invalid_argument("attentionMask has " + std::to_string(mask.size()) + " entries, inputIds " +
                                  std::to_string(ids.size()) + ": they must match");
    if (ids.size() % static_cast<std::size_t>(batch))
      throw std::invalid_argument(std::to_string(ids.size()) + " input ids do not split into " +
                                  std::to_string(batch) + " rows of equal length");
    const std::size_t rows = static_cast<std::size_t>(batch), seq = ids.size() / rows;
    std::vector<float> out(rows * e.output_dim());
    e.run(ids.data(), mask.data(), rows, seq, spec, threads, out.data());  // validates ids, seq, threads
    jfloatArray result = env->NewFloatArray(static_cast<jsize>(out.size()));
    if (result == nullptr) throw JavaPending{};
    env->SetFloatArrayRegion(result, 0, static_cast<jsize>(out.size()), out.data());
    check(env);
    return result;
  });
}

MLFS_JNI(jdoubleArray, nativeProfile)(JNIEnv* env, jclass, jlong handle, jobjectArray layers, jobjectArray heads,
                                      jobjectArray mlp, jint seq, jint threads, jint runs) {
  return guard<jdoubleArray>(env, nullptr, [&] {
    mlfs::Engine& e = engine_of(handle);
    const std::vector<mlfs::SubnetSpec> candidates = subnets(env, layers, heads, mlp);
    const int max_seq = static_cast<int>(e.dims().max_positions);
    positive(seq, "seq", max_seq);
    positive(runs, "runs", 100000);
    for (const mlfs::SubnetSpec& c : candidates) e.validate(c);
    std::vector<double> ms;
    for (const mlfs::SubnetSpec& c : candidates)
      ms.push_back(mlfs::profile_ms(e, c, static_cast<std::size_t>(seq), 1, threads, 3, runs));
    jdoubleArray out = env->NewDoubleArray(static_cast<jsize>(ms.size()));
    if (out == nullptr) throw JavaPending{};
    env->SetDoubleArrayRegion(out, 0, static_cast<jsize>(ms.size()), ms.data());
    check(env);
    return out;
  });
}

MLFS_JNI(jint, nativePickUnderBudget)(JNIEnv* env, jclass, jdoubleArray scores, jdoubleArray latency_ms,
                                      jdouble budget_ms) {
  return guard<jint>(env, -1, [&] {
    if (!(budget_ms > 0) || std::isinf(budget_ms))
      throw std::invalid_argument("budgetMs must be a positive number, got " + std::to_string(budget_ms));
    return static_cast<jint>(
        mlfs::pick_under_budget(doubles(env, scores, "scores"), doubles(env, latency_ms, "latencyMs"), budget_ms));
  });
}

MLFS_JNI(jint, nativePickLargest)(JNIEnv* env, jclass, jlong handle, jobjectArray layers, jobjectArray heads,
                                  jobjectArray mlp, jdouble budget_ms, jint seq, jint threads, jint runs,
                                  jdoubleArray latency_out) {
  return guard<jint>(env, -1, [&] {
    mlfs::Engine& e = engine_of(handle);
    const std::vector<mlfs::SubnetSpec> candidates = subnets(env, layers, heads, mlp);
    if (latency_out == nullptr || env->GetArrayLength(latency_out) != static_cast<jsize>(candidates.size()))
      throw std::invalid_argument("latency output array must have one entry per candidate");
    positive(seq, "seq", static_cast<jint>(e.dims().max_positions));
    positive(runs, "runs", 100000);
    if (!(budget_ms > 0) || std::isinf(budget_ms))
      throw std::invalid_argument("budgetMs must be a positive number, got " + std::to_string(budget_ms));
    const mlfs::BudgetPick pick =
        mlfs::pick_largest_under_budget(e, candidates, budget_ms, static_cast<std::size_t>(seq), threads, runs);
    env->SetDoubleArrayRegion(latency_out, 0, static_cast<jsize>(pick.latency_ms.size()), pick.latency_ms.data());
    check(env);
    return static_cast<jint>(pick.index);
  });
}

// One generation on the calling thread. stats_out (6 doubles): prompt tokens, prefill seconds, decode
// seconds, and with a draft (draft_layers non-null: self-speculative decoding) rounds, drafted and
// accepted tokens. listener: null, or an object with `boolean onToken(int)` called after each new
// token (streaming; false stops the generation early). A Java exception thrown by it is left pending.
MLFS_JNI(jintArray, nativeGenerate)(JNIEnv* env, jclass, jlong handle, jintArray prompt_ids, jintArray layers,
                                    jintArray heads, jintArray mlp, jint max_new_tokens, jfloat temperature,
                                    jint top_k, jfloat top_p, jfloat repetition_penalty, jlong seed,
                                    jintArray stop_ids, jboolean fp16_cache, jint threads, jobject listener,
                                    jdoubleArray stats_out, jintArray draft_layers, jintArray draft_heads,
                                    jintArray draft_mlp, jint draft_k, jint draft_vocab) {
  return guard<jintArray>(env, nullptr, [&] {
    const std::shared_ptr<mlfs::Decoder>& d = decoder_of(handle);
    std::vector<std::int32_t> prompt = ints(env, prompt_ids, "promptIds");
    const mlfs::SubnetSpec spec = subnet(env, layers, heads, mlp);
    if (stats_out == nullptr || env->GetArrayLength(stats_out) != 6)
      throw std::invalid_argument("the stats output array must have 6 entries");
    if (max_new_tokens < 1)
      throw std::invalid_argument("max_new_tokens must be at least 1, got " + std::to_string(max_new_tokens));
    mlfs::GenerationParams p;
    p.max_new_tokens = static_cast<std::size_t>(max_new_tokens);
    for (std::int32_t t : ints(env, stop_ids, "stopIds")) {
      if (t < 0 || static_cast<std::uint32_t>(t) >= d->dims().vocab_size)
        throw std::invalid_argument("stop token " + std::to_string(t) + " is outside the vocabulary [0, " +
                                    std::to_string(d->dims().vocab_size) + ")");
      p.stop_tokens.push_back(t);
    }
    // The seed's 64 bits as they are: a negative Java long is the same uint64 Python would pass.
    p.sampling = {temperature, non_negative(top_k, "top_k"), top_p, repetition_penalty, static_cast<std::uint64_t>(seed)};
    p.cache_dtype = fp16_cache == JNI_TRUE ? mlfs::DType::f16 : mlfs::DType::f32;
    p.threads = threads;
    if (draft_layers != nullptr) {
      if (draft_k < 1 || draft_k > 64) throw std::invalid_argument("draftK must be in 1..64, got " + std::to_string(draft_k));
      p.speculation = mlfs::SpeculationParams{subnet(env, draft_layers, draft_heads, draft_mlp),
                                              std::max<std::size_t>(8, static_cast<std::size_t>(draft_k)),
                                              static_cast<std::size_t>(draft_k), true,
                                              non_negative(draft_vocab, "draftVocab")};
    }
    jmethodID on_token = nullptr;
    if (listener != nullptr) {
      jclass cls = env->GetObjectClass(listener);
      on_token = env->GetMethodID(cls, "onToken", "(I)Z");
      check(env);  // NoSuchMethodError: not a TokenListener
      env->DeleteLocalRef(cls);
    }
    mlfs::Generation gen(d, std::move(prompt), spec, std::move(p));  // validates everything up front
    std::vector<jint> out;
    for (std::int64_t t; (t = gen.next()) >= 0;) {
      out.push_back(static_cast<jint>(t));
      if (on_token != nullptr) {
        const jboolean more = env->CallBooleanMethod(listener, on_token, static_cast<jint>(t));
        check(env);
        if (more != JNI_TRUE) break;
      }
    }
    const mlfs::Speculator* sp = gen.speculator();
    const double stats[6] = {static_cast<double>(gen.prompt_tokens()), gen.prefill_seconds(), gen.decode_seconds(),
                             sp ? static_cast<double>(sp->stats().rounds) : 0.0,
                             sp ? static_cast<double>(sp->stats().drafted) : 0.0,
                             sp ? static_cast<double>(sp->stats().accepted) : 0.0};
    env->SetDoubleArrayRegion(stats_out, 0, 6, stats);
    check(env);
    return new_ints(env, out);
  });
}
