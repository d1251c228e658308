// The key/value cache of one sequence for one sub-network.
//
// Memory grows with the tokens actually held: positions live in chunks of `chunk` positions,
// allocated when a forward pass first writes into them, never the whole context up front, and freed
// again by truncate() (speculative decoding rolls back rejected draft tokens that way). Within a
// chunk, layer slot s keeps a K block then a V block of rows [kv_heads(s) * head_dim], one row per
// position: a sub-network with fewer key/value groups has narrower rows (it allocates only the
// prefix of groups it uses). Rows are fp32 or fp16 (halves the cache; attention converts back).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "mlfs/kernels.h"
#include "mlfs/packed_file.h"

namespace mlfs {

class KvCache {
 public:
  // widths[s]: K (and V) row width of layer slot s; dtype f32 or f16; positions <= max_positions.
  KvCache(std::vector<std::size_t> widths, DType dtype, std::size_t max_positions, std::size_t chunk = 64);

  std::size_t length() const { return length_; }          // positions holding valid keys/values
  std::size_t capacity() const { return chunks_.size() * chunk_; }
  std::size_t slots() const { return widths_.size(); }
  std::size_t width(std::size_t slot) const { return widths_[slot]; }
  DType dtype() const { return dtype_; }
  std::size_t bytes() const { return chunks_.size() * chunk_bytes_; }  // allocated, not just used

  // Make room for positions [0, positions): allocates missing chunks; throws std::invalid_argument
  // beyond max_positions and std::runtime_error when the memory cannot be had.
  void reserve(std::size_t positions);
  // Forget every position >= `positions` (roll back) and free the chunks past it.
  void truncate(std::size_t positions);
  // Mark [0, positions) valid (after a forward pass wrote them); positions <= capacity().
  void set_length(std::size_t positions);

  // Store rows [pos0, pos0 + n) of slot s from k/v [n, width(s)] (leading dimensions ldk / ldv).
  void write(std::size_t slot, std::size_t pos0, std::size_t n, const float* k, std::size_t ldk, const float* v,
             std::size_t ldv, const kernels::KernelTable& kt);
  // Head `head` (columns [head * head_dim, +head_dim)) of positions [0, n) of slot s as fp32:
  // kt [head_dim, n] (K transposed, row stride n) and v [n, head_dim].
  void read_head(std::size_t slot, std::size_t head, std::size_t head_dim, std::size_t n, float* kt, float* v,
                 const kernels::KernelTable& kt_table) const;
  // In-place access for attention over few query rows (decode): the K (value = false) or V row of
  // position `pos` < capacity() in slot s, width(s) elements of dtype(). Rows of one chunk are
  // contiguous (row stride width(s)): positions [c * chunk(), (c + 1) * chunk()) form one block.
  const void* row_at(std::size_t slot, bool value, std::size_t pos) const { return row(slot, value, pos); }
  std::size_t chunk() const { return chunk_; }

 private:
  std::uint8_t* row(std::size_t slot, bool value, std::size_t pos) const;

  std::vector<std::size_t> widths_, offsets_;  // offsets_[s]: element offset of slot s's K block in a chunk
  DType dtype_;
  std::size_t max_positions_, chunk_, esize_, chunk_bytes_ = 0, length_ = 0;
  std::vector<std::unique_ptr<std::uint8_t[]>> chunks_;
};

}  // namespace mlfs
