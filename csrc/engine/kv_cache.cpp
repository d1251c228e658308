// KV cache storage (see mlfs/kv_cache.h).
#include "mlfs/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

namespace mlfs {

KvCache::KvCache(std::vector<std::size_t> widths, DType dtype, std::size_t max_positions, std::size_t chunk)
    : widths_(std::move(widths)), dtype_(dtype), max_positions_(max_positions), chunk_(chunk) {
  if (dtype_ != DType::f32 && dtype_ != DType::f16)
    throw std::invalid_argument(std::string("the KV cache holds fp32 or fp16, not ") + dtype_name(dtype_));
  if (chunk_ == 0 || widths_.empty()) throw std::invalid_argument("KV cache: empty layout");
  esize_ = dtype_size(dtype_);
  std::size_t elements = 0;
  for (std::size_t w : widths_) {
    offsets_.push_back(elements);
    elements += 2 * w * chunk_;
  }
  chunk_bytes_ = elements * esize_;
}

void KvCache::reserve(std::size_t positions) {
  if (positions > max_positions_)
    throw std::invalid_argument("sequence of " + std::to_string(positions) + " positions exceeds the model's " +
                                std::to_string(max_positions_));
  const std::size_t need = (positions + chunk_ - 1) / chunk_;
  try {
    while (chunks_.size() < need) chunks_.emplace_back(new std::uint8_t[chunk_bytes_]);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("KV cache: cannot allocate " + std::to_string(need * chunk_bytes_) + " bytes for " +
                             std::to_string(positions) + " positions (out of memory)");
  }
}

void KvCache::truncate(std::size_t positions) {
  length_ = std::min(length_, positions);
  chunks_.resize(std::min(chunks_.size(), (length_ + chunk_ - 1) / chunk_));
}

void KvCache::set_length(std::size_t positions) {
  if (positions > capacity()) throw std::logic_error("KV cache: length past the allocated chunks");
  length_ = positions;
}

std::uint8_t* KvCache::row(std::size_t slot, bool value, std::size_t pos) const {
  const std::size_t w = widths_[slot];
  const std::size_t elem = offsets_[slot] + (value ? w * chunk_ : 0) + (pos % chunk_) * w;
  return chunks_[pos / chunk_].get() + elem * esize_;
}

void KvCache::write(std::size_t slot, std::size_t pos0, std::size_t n, const float* k, std::size_t ldk, const float* v,
                    std::size_t ldv, const kernels::KernelTable& kt) {
  const std::size_t w = widths_[slot];
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t* kr = row(slot, false, pos0 + i);
    std::uint8_t* vr = row(slot, true, pos0 + i);
    if (dtype_ == DType::f32) {
      std::memcpy(kr, k + i * ldk, w * 4);
      std::memcpy(vr, v + i * ldv, w * 4);
    } else {
      kt.f32_to_f16(w, k + i * ldk, reinterpret_cast<std::uint16_t*>(kr));
      kt.f32_to_f16(w, v + i * ldv, reinterpret_cast<std::uint16_t*>(vr));
    }
  }
}

void KvCache::read_head(std::size_t slot, std::size_t head, std::size_t head_dim, std::size_t n, float* kt, float* v,
                        const kernels::KernelTable& kt_table) const {
  const std::size_t c0 = head * head_dim;
  float tmp[512];  // one fp16 key row converted
  if (head_dim > 512 || c0 + head_dim > widths_[slot])
    throw std::invalid_argument("KV cache: head " + std::to_string(head) + " of " + std::to_string(head_dim) +
                                " columns is outside the slot (or head_dim > 512)");
  for (std::size_t p = 0; p < n; ++p) {
    const float* krow;
    if (dtype_ == DType::f32) {
      krow = reinterpret_cast<const float*>(row(slot, false, p)) + c0;
      std::memcpy(v + p * head_dim, reinterpret_cast<const float*>(row(slot, true, p)) + c0, head_dim * 4);
    } else {
      kt_table.f16_to_f32(head_dim, reinterpret_cast<const std::uint16_t*>(row(slot, false, p)) + c0, tmp);
      krow = tmp;
      kt_table.f16_to_f32(head_dim, reinterpret_cast<const std::uint16_t*>(row(slot, true, p)) + c0, v + p * head_dim);
    }
    for (std::size_t d = 0; d < head_dim; ++d) kt[d * n + p] = krow[d];
  }
}

}  // namespace mlfs
