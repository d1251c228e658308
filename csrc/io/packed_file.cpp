// Reader of the .mlfs packed file: mmap, then validate everything before anything is used.
#include "mlfs/packed_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <limits>

namespace mlfs {

namespace {

// Field offsets of the 256-byte header (see mlfs_edge/runtime/format.py).
constexpr std::size_t kOffVersion = 8, kOffEndian = 12, kOffFileSize = 16, kOffChecksum = 24;
constexpr std::size_t kOffNTensors = 28, kOffDir = 32, kOffMeta = 40, kOffMetaBytes = 48, kOffDims = 56;
constexpr std::size_t kNameSize = 64, kMaxDims = 4;
// Sanity caps that keep a corrupt header from asking for absurd allocations later.
constexpr std::uint32_t kMaxDim = 1u << 24;
constexpr std::uint32_t kMaxTensors = 1u << 20;

// Version 2 fields after the v1 dims block: kind, num_kv_heads, rope_theta, rope_linear_factor, flags.
constexpr std::size_t kOffKind = kOffDims + 48, kOffKvHeads = kOffKind + 4, kOffRopeTheta = kOffKind + 8;
constexpr std::size_t kOffRopeFactor = kOffKind + 12, kOffFlags = kOffKind + 16;
constexpr std::uint32_t kFlagTied = 1u, kFlagQkvBias = 2u, kFlagNormalize = 4u;
// Version 4: family option flags and four floats after the flags (format.py names the same bits).
constexpr std::uint32_t kFlagLayerNorm = 8u, kFlagGeluTanh = 16u, kFlagUngated = 32u, kFlagLinearBias = 64u;
constexpr std::uint32_t kFlagQkNorm = 128u, kFlagPostNorms = 256u, kFlagLearnedPos = 512u, kFlagPoolerRelu = 1024u;
constexpr std::uint32_t kFlagPreNorm = 2048u, kFlagGatedFfn = 4096u, kFlagPoolerGeluLn = 8192u;
constexpr std::uint32_t kFlagsV3 = kFlagTied | kFlagQkvBias | kFlagNormalize;
constexpr std::uint32_t kFlagsV4 = kFlagsV3 | kFlagLayerNorm | kFlagGeluTanh | kFlagUngated | kFlagLinearBias |
                                   kFlagQkNorm | kFlagPostNorms | kFlagLearnedPos | kFlagPoolerRelu | kFlagPreNorm |
                                   kFlagGatedFfn | kFlagPoolerGeluLn;
constexpr std::size_t kOffAttnScale = kOffFlags + 4, kOffAttnSoftcap = kOffFlags + 8;
constexpr std::size_t kOffFinalSoftcap = kOffFlags + 12, kOffEmbedScale = kOffFlags + 16;

static_assert(kPackHeaderSize >= kOffEmbedScale + 4, "header too small for the dims block");

template <typename T>
T load_le(const std::uint8_t* p) {
  // The format is little-endian and so is every supported host (checked in parse()); memcpy keeps
  // unaligned loads well-defined.
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string fmt_size(std::uint64_t n) { return std::to_string(n) + " bytes"; }

// Slice-by-8 tables: table[0] is the classic byte table, table[j][b] advances a byte by j more zero
// bytes, so eight input bytes are folded per step (~4x the byte loop; the whole file is checked at load).
using CrcTables = std::array<std::array<std::uint32_t, 256>, 8>;

const CrcTables& crc_tables() {
  static const CrcTables tables = [] {
    CrcTables t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
      for (int j = 1; j < 8; ++j) t[j][i] = (t[j - 1][i] >> 8) ^ t[0][t[j - 1][i] & 0xFFu];
    return t;
  }();
  return tables;
}

bool host_is_little_endian() {
  const std::uint32_t one = 1;
  std::uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

}  // namespace

std::uint32_t crc32_update(std::uint32_t crc, const std::uint8_t* data, std::size_t n) {
  const CrcTables& t = crc_tables();
  crc = ~crc;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint32_t lo = load_le<std::uint32_t>(data + i) ^ crc;
    const std::uint32_t hi = load_le<std::uint32_t>(data + i + 4);
    crc = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFFu] ^ t[2][(hi >> 8) & 0xFFu] ^ t[1][(hi >> 16) & 0xFFu] ^ t[0][hi >> 24];
  }
  for (; i < n; ++i) crc = t[0][(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::i8: return "int8";
    case DType::q4: return "q4";
  }
  return "unknown";
}

const char* pooling_name(Pooling pooling) {
  switch (pooling) {  // the names mlfs_edge.runtime.format.POOLING_CODES writes
    case Pooling::mean: return "mean";
    case Pooling::cls: return "cls";
    case Pooling::cls_token: return "cls_token";
    case Pooling::max: return "max";
    case Pooling::mean_sqrt_len: return "mean_sqrt_len";
    case Pooling::lasttoken: return "lasttoken";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::i8: return 1;
    case DType::q4: return 1;  // shapes of q4 tensors count bytes
  }
  return 0;
}

std::shared_ptr<PackedFile> PackedFile::open(const std::string& path, bool verify_checksum) {
  std::shared_ptr<PackedFile> file(new PackedFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw PackedFileError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw PackedFileError(path + ": not a regular file");
  }
  file->size_ = static_cast<std::uint64_t>(st.st_size);
  if (file->size_ < kPackHeaderSize) {
    ::close(fd);
    throw PackedFileError(path + ": truncated: " + fmt_size(file->size_) + ", the header alone needs " +
                          fmt_size(kPackHeaderSize));
  }
  void* m = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (m == MAP_FAILED) throw PackedFileError(path + ": mmap failed: " + std::strerror(errno));
  file->mapping_ = m;
  file->base_ = static_cast<const std::uint8_t*>(m);
  file->parse(verify_checksum);
  return file;
}

std::shared_ptr<PackedFile> PackedFile::from_bytes(std::vector<std::uint8_t> bytes, bool verify_checksum) {
  std::shared_ptr<PackedFile> file(new PackedFile());
  file->path_ = "<memory>";
  file->size_ = bytes.size();
  if (file->size_ < kPackHeaderSize)
    throw PackedFileError("<memory>: truncated: " + fmt_size(file->size_) + ", the header alone needs " +
                          fmt_size(kPackHeaderSize));
  // Copy into page-aligned memory so tensor data keeps the 64-byte alignment it has in a mapped file.
  void* m = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw PackedFileError("<memory>: cannot allocate " + fmt_size(file->size_));
  std::memcpy(m, bytes.data(), bytes.size());
  file->mapping_ = m;
  file->base_ = static_cast<const std::uint8_t*>(m);
  file->parse(verify_checksum);
  return file;
}

PackedFile::~PackedFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

namespace {
// The one place that knows which tensor layouts changed since a file's version: an older file
// whose tensors use such a layout cannot be read in place (fp32 / fp16 tensors of v1 and v2 files
// still load). v3: int8 weights moved from "K4N" to the "P32K4" panels of mlfs/kernels.h, q4 weights
// from "KN4" (fp32 scales) to the "P16" panels with fp16 scales.
bool layout_outdated(std::uint32_t version, DType dtype) {
  return version < 3 && (dtype == DType::i8 || dtype == DType::q4);
}
std::string outdated_message(std::uint32_t version, DType dtype) {
  return "format version " + std::to_string(version) + " stores " + dtype_name(dtype) +
         " weights in an older layout; re-pack the model with `mlfs-edge pack`";
}
}  // namespace

void PackedFile::parse(bool verify_checksum) {
  const std::string where = path_ + ": ";
  const std::uint8_t* h = base_;
  if (std::memcmp(h, kPackMagic, sizeof(kPackMagic)) != 0)
    throw PackedFileError(where + "not an .mlfs packed file (wrong magic; expected \"MLFSPACK\")");
  const auto endian = load_le<std::uint32_t>(h + kOffEndian);
  if (!host_is_little_endian())
    throw PackedFileError(where + "this engine build runs on a big-endian host; .mlfs files are little-endian");
  if (endian != kPackEndianMarker) {
    const bool swapped = endian == 0x04030201u;
    throw PackedFileError(where + (swapped ? "wrong endianness: the file was written big-endian"
                                           : "corrupt header: bad endianness marker"));
  }
  const auto version = load_le<std::uint32_t>(h + kOffVersion);
  if (version < kPackOldestVersion || version > kPackFormatVersion)
    throw PackedFileError(where + "unsupported format version " + std::to_string(version) +
                          " (this build reads versions " + std::to_string(kPackOldestVersion) + ".." +
                          std::to_string(kPackFormatVersion) + "); re-pack the model with `mlfs-edge pack`");
  const auto declared = load_le<std::uint64_t>(h + kOffFileSize);
  if (declared != size_)
    throw PackedFileError(where + (size_ < declared ? "truncated: " : "unexpected trailing data: ") +
                          fmt_size(size_) + " on disk, the header says " + fmt_size(declared));
  checksum_ = load_le<std::uint32_t>(h + kOffChecksum);
  if (verify_checksum) {
    const std::uint8_t zeros[4] = {0, 0, 0, 0};
    std::uint32_t crc = crc32_update(0, base_, kOffChecksum);
    crc = crc32_update(crc, zeros, 4);
    crc = crc32_update(crc, base_ + kOffChecksum + 4, size_ - kOffChecksum - 4);
    if (crc != checksum_)
      throw PackedFileError(where + "checksum mismatch (file corrupt): stored CRC-32 " + std::to_string(checksum_) +
                            ", computed " + std::to_string(crc));
  }

  // Regions: [off, off + n) must lie inside the file; written so that nothing can overflow.
  auto check_region = [&](std::uint64_t off, std::uint64_t n, const std::string& what) {
    if (off > size_ || n > size_ - off)
      throw PackedFileError(where + what + " [" + std::to_string(off) + ", +" + std::to_string(n) +
                            ") lies outside the file (" + fmt_size(size_) + ")");
  };
  const auto n_tensors = load_le<std::uint32_t>(h + kOffNTensors);
  const auto dir_off = load_le<std::uint64_t>(h + kOffDir);
  const auto meta_off = load_le<std::uint64_t>(h + kOffMeta);
  const auto meta_bytes = load_le<std::uint64_t>(h + kOffMetaBytes);
  if (n_tensors > kMaxTensors) throw PackedFileError(where + "corrupt header: " + std::to_string(n_tensors) + " tensors");
  if (dir_off < kPackHeaderSize) throw PackedFileError(where + "corrupt header: directory overlaps the header");
  check_region(dir_off, std::uint64_t{n_tensors} * kPackDirEntrySize, "tensor directory");
  check_region(meta_off, meta_bytes, "metadata");
  metadata_.assign(reinterpret_cast<const char*>(base_ + meta_off), meta_bytes);

  const std::uint8_t* d = h + kOffDims;
  auto dim = [&](int i) { return load_le<std::uint32_t>(d + 4 * i); };
  dims_.num_layers = dim(0);
  dims_.hidden = dim(1);
  dims_.num_heads = dim(2);
  dims_.head_dim = dim(3);
  dims_.intermediate = dim(4);
  dims_.vocab_size = dim(5);
  dims_.max_positions = dim(6);
  dims_.type_vocab_size = dim(7);
  dims_.num_labels = dim(8);
  const std::uint32_t pooling = dim(9), wdtype = dim(10);
  dims_.layer_norm_eps = load_le<float>(d + 44);
  for (int i = 0; i < 8; ++i)
    if (dim(i) == 0 || dim(i) > kMaxDim)
      throw PackedFileError(where + "corrupt header: model dimension #" + std::to_string(i) + " is " +
                            std::to_string(dim(i)));
  if (dims_.num_labels > kMaxDim) throw PackedFileError(where + "corrupt header: bad label count");
  if (version >= 2) {
    const auto kind = load_le<std::uint32_t>(h + kOffKind);
    if (kind > 1) throw PackedFileError(where + "corrupt header: unknown model kind " + std::to_string(kind));
    dims_.kind = static_cast<ModelKind>(kind);
    dims_.num_kv_heads = load_le<std::uint32_t>(h + kOffKvHeads);
    dims_.rope_theta = load_le<float>(h + kOffRopeTheta);
    dims_.rope_linear_factor = load_le<float>(h + kOffRopeFactor);
    const auto flags = load_le<std::uint32_t>(h + kOffFlags);
    if (flags & ~(version >= 4 ? kFlagsV4 : kFlagsV3)) throw PackedFileError(where + "corrupt header: unknown flags");
    dims_.tied_embeddings = (flags & kFlagTied) != 0;
    dims_.qkv_bias = (flags & kFlagQkvBias) != 0;
    dims_.normalize = (flags & kFlagNormalize) != 0;
    dims_.layer_norm = (flags & kFlagLayerNorm) != 0;
    dims_.gelu_tanh = (flags & kFlagGeluTanh) != 0;
    dims_.ungated = (flags & kFlagUngated) != 0;
    dims_.linear_bias = (flags & kFlagLinearBias) != 0;
    dims_.qk_norm = (flags & kFlagQkNorm) != 0;
    dims_.post_norms = (flags & kFlagPostNorms) != 0;
    dims_.learned_pos = (flags & kFlagLearnedPos) != 0;
    dims_.pooler_relu = (flags & kFlagPoolerRelu) != 0;
    dims_.pre_norm = (flags & kFlagPreNorm) != 0;
    dims_.gated_ffn = (flags & kFlagGatedFfn) != 0;
    dims_.pooler_gelu_ln = (flags & kFlagPoolerGeluLn) != 0;
  }
  if (version >= 4) {
    dims_.attn_scale = load_le<float>(h + kOffAttnScale);
    dims_.attn_softcap = load_le<float>(h + kOffAttnSoftcap);
    dims_.final_softcap = load_le<float>(h + kOffFinalSoftcap);
    dims_.embed_scale = load_le<float>(h + kOffEmbedScale);
    for (float v : {dims_.attn_scale, dims_.attn_softcap, dims_.final_softcap, dims_.embed_scale})
      if (!(v >= 0.f && v < 1e6f)) throw PackedFileError(where + "corrupt header: a family option out of range");
  }
  if (dims_.kind == ModelKind::decoder) {
    if (dims_.num_kv_heads == 0 || dims_.num_heads % dims_.num_kv_heads != 0)
      throw PackedFileError(where + "corrupt header: heads not a whole number of key/value groups");
    if (!(dims_.rope_theta > 0.f && dims_.rope_theta < 1e9f) ||
        !(dims_.rope_linear_factor >= 1.f && dims_.rope_linear_factor < 1e6f))
      throw PackedFileError(where + "corrupt header: RoPE settings out of range");
    if (dims_.num_labels != 0) throw PackedFileError(where + "corrupt header: a decoder has no classifier");
  } else if (std::uint64_t{dims_.num_heads} * dims_.head_dim > dims_.hidden || dims_.head_dim == 0) {
    // Fewer heads than hidden / head_dim is an extracted narrow-head sub-network (q/k/v [heads x
    // head_dim, hidden]); wider attention than the hidden size no supported encoder has.
    throw PackedFileError(where + "corrupt header: an encoder's heads x head_dim exceeds hidden");
  }
  if (pooling >= kPoolingModes)
    throw PackedFileError(where + "corrupt header: unknown pooling code " + std::to_string(pooling));
  if (dims_.normalize && (dims_.kind != ModelKind::encoder || dims_.num_labels != 0))
    throw PackedFileError(where + "corrupt header: only a plain encoder's embedding can be normalised");
  if (dims_.num_labels != 0 && pooling != static_cast<std::uint32_t>(Pooling::cls) &&
      pooling != static_cast<std::uint32_t>(Pooling::mean))
    throw PackedFileError(where + "corrupt header: a classifier reads cls or mean pooling");
  if (wdtype > 3 || (wdtype == 3 && dims_.kind != ModelKind::decoder))
    throw PackedFileError(where + "corrupt header: unknown weight dtype " + std::to_string(wdtype));
  if (!(dims_.layer_norm_eps > 0.f && dims_.layer_norm_eps < 1.f))
    throw PackedFileError(where + "corrupt header: layer_norm_eps out of range");
  if (wdtype <= 3 && layout_outdated(version, static_cast<DType>(wdtype)))
    throw PackedFileError(where + outdated_message(version, static_cast<DType>(wdtype)));
  dims_.pooling = static_cast<Pooling>(pooling);
  dims_.weight_dtype = static_cast<DType>(wdtype);

  tensors_.reserve(n_tensors);
  for (std::uint32_t i = 0; i < n_tensors; ++i) {
    const std::uint8_t* e = base_ + dir_off + std::uint64_t{i} * kPackDirEntrySize;
    const auto* name_begin = reinterpret_cast<const char*>(e);
    const std::size_t name_len = strnlen(name_begin, kNameSize);
    if (name_len == 0 || name_len == kNameSize)
      throw PackedFileError(where + "tensor #" + std::to_string(i) + ": name empty or not NUL-terminated");
    for (std::size_t c = 0; c < name_len; ++c)
      if (name_begin[c] < 0x21 || name_begin[c] > 0x7E)  // names end up in error messages: plain ASCII only
        throw PackedFileError(where + "tensor #" + std::to_string(i) + ": name is not printable ASCII");
    TensorView t;
    t.name.assign(name_begin, name_len);
    const std::string tw = where + "tensor '" + t.name + "': ";
    const auto code = load_le<std::uint32_t>(e + 64);
    const auto ndim = load_le<std::uint32_t>(e + 68);
    if (code > 3) throw PackedFileError(tw + "unknown dtype code " + std::to_string(code));
    if (ndim < 1 || ndim > kMaxDims) throw PackedFileError(tw + "bad rank " + std::to_string(ndim));
    if (layout_outdated(version, static_cast<DType>(code)))
      throw PackedFileError(where + outdated_message(version, static_cast<DType>(code)));
    t.dtype = static_cast<DType>(code);
    std::uint64_t count = 1;
    for (std::uint32_t k = 0; k < ndim; ++k) {
      const auto s = load_le<std::uint64_t>(e + 72 + 8 * k);
      if (s == 0 || s > size_ || count > size_ / s)  // no element count can exceed the file's bytes
        throw PackedFileError(tw + "bad shape");
      count *= s;
      t.shape.push_back(s);
    }
    const auto off = load_le<std::uint64_t>(e + 104);
    t.nbytes = load_le<std::uint64_t>(e + 112);
    if (count * dtype_size(t.dtype) != t.nbytes)
      throw PackedFileError(tw + "size " + fmt_size(t.nbytes) + " does not match its shape and dtype");
    if (off % kPackAlign != 0) throw PackedFileError(tw + "data not 64-byte aligned");
    if (off < kPackHeaderSize) throw PackedFileError(tw + "data overlaps the header");
    check_region(off, t.nbytes, "tensor '" + t.name + "' data");
    t.data = base_ + off;
    if (!index_.emplace(t.name, tensors_.size()).second) throw PackedFileError(tw + "appears twice");
    tensors_.push_back(std::move(t));
  }
}

const TensorView* PackedFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorView& PackedFile::require(const std::string& name, DType dtype,
                                      const std::vector<std::uint64_t>& shape) const {
  const TensorView* t = find(name);
  if (t == nullptr) throw PackedFileError(path_ + ": missing tensor '" + name + "'");
  if (t->dtype != dtype)
    throw PackedFileError(path_ + ": tensor '" + name + "' is " + dtype_name(t->dtype) + ", expected " +
                          dtype_name(dtype));
  if (t->shape != shape) {
    std::string want, got;
    for (auto s : shape) want += std::to_string(s) + " ";
    for (auto s : t->shape) got += std::to_string(s) + " ";
    throw PackedFileError(path_ + ": tensor '" + name + "' has shape [ " + got + "], expected [ " + want + "]");
  }
  return *t;
}

}  // namespace mlfs
