// The writer side of the .mlfs format for the native tests (the real writer is
// mlfs_edge/runtime/format.py): tensors, their directory and the CRC; each test fills the header
// fields of its model kind through `header`.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mlfs/packed_file.h"

namespace mlfs_test {

struct Tensor {
  std::string name;
  mlfs::DType dtype;
  std::vector<std::uint64_t> shape;
  std::vector<std::uint8_t> bytes;
};

template <typename T>
void put(std::vector<std::uint8_t>& buf, std::size_t off, T v) {
  std::memcpy(buf.data() + off, &v, sizeof(T));
}

template <typename T>
Tensor make(const std::string& name, mlfs::DType dtype, std::vector<std::uint64_t> shape, const std::vector<T>& v) {
  Tensor t{name, dtype, std::move(shape), std::vector<std::uint8_t>(v.size() * sizeof(T))};
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

inline std::vector<float> randn(std::mt19937& rng, std::size_t n, float stddev, float mean = 0.f) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// `header(buf)` writes the version (offset 8) and the model's fields (offsets 48..127); the rest —
// magic, byte-order mark, size, directory, tensors, CRC-32 — is the same for every version.
inline std::vector<std::uint8_t> encode(const std::vector<Tensor>& tensors,
                                        const std::function<void(std::vector<std::uint8_t>&)>& header) {
  auto align = [](std::size_t n) { return (n + 63) / 64 * 64; };
  const std::size_t dir = 256, meta = dir + 128 * tensors.size();
  std::size_t off = align(meta);
  std::vector<std::size_t> offsets;
  for (const auto& t : tensors) {
    offsets.push_back(off);
    off = align(off + t.bytes.size());
  }
  std::vector<std::uint8_t> buf(off, 0);
  std::memcpy(buf.data(), "MLFSPACK", 8);
  put<std::uint32_t>(buf, 12, 0x01020304u);
  put<std::uint64_t>(buf, 16, buf.size());
  put<std::uint32_t>(buf, 28, static_cast<std::uint32_t>(tensors.size()));
  put<std::uint64_t>(buf, 32, dir);
  put<std::uint64_t>(buf, 40, meta);
  header(buf);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::size_t e = dir + 128 * i;
    std::memcpy(buf.data() + e, tensors[i].name.c_str(), tensors[i].name.size());
    put<std::uint32_t>(buf, e + 64, static_cast<std::uint32_t>(tensors[i].dtype));
    put<std::uint32_t>(buf, e + 68, static_cast<std::uint32_t>(tensors[i].shape.size()));
    for (std::size_t k = 0; k < tensors[i].shape.size(); ++k) put<std::uint64_t>(buf, e + 72 + 8 * k, tensors[i].shape[k]);
    put<std::uint64_t>(buf, e + 104, offsets[i]);
    put<std::uint64_t>(buf, e + 112, tensors[i].bytes.size());
    std::memcpy(buf.data() + offsets[i], tensors[i].bytes.data(), tensors[i].bytes.size());
  }
  const std::uint8_t zeros[4] = {0, 0, 0, 0};
  std::uint32_t crc = mlfs::crc32_update(0, buf.data(), 24);
  crc = mlfs::crc32_update(crc, zeros, 4);
  crc = mlfs::crc32_update(crc, buf.data() + 28, buf.size() - 28);
  put<std::uint32_t>(buf, 24, crc);
  return buf;
}

}  // namespace mlfs_test
