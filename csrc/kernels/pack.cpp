// Weight packing into the engine's layouts (see kernels.h): portable, run once by the pack writer.
#include <cstring>

#include "mlfs/kernels.h"

namespace mlfs::kernels {

namespace {
template <typename T>
void transpose(size_t rows, size_t cols, const T* in, size_t ldi, T* out, size_t ldo) {
  constexpr size_t kTile = 32;  // tiles keep both sides cache-resident
  for (size_t r0 = 0; r0 < rows; r0 += kTile)
    for (size_t c0 = 0; c0 < cols; c0 += kTile)
      for (size_t r = r0; r < rows && r < r0 + kTile; ++r)
        for (size_t c = c0; c < cols && c < c0 + kTile; ++c) out[c * ldo + r] = in[r * ldi + c];
}
}  // namespace

void pack_kn_f32(size_t N, size_t K, const float* W, size_t ld_in, float* Wt) {
  transpose(N, K, W, ld_in, Wt, N);
}

void pack_kn_f16(size_t N, size_t K, const uint16_t* W, size_t ld_in, uint16_t* Wt) {
  transpose(N, K, W, ld_in, Wt, N);
}

void pack_p32k4_i8(size_t N, size_t K, const int8_t* W, size_t ld_in, int8_t* out) {
  std::memset(out, 0, packed_i8_size(N, K));
  const size_t ldw = packed_i8_ld(K);
  for (size_t n = 0; n < N; ++n)
    for (size_t k = 0; k < K; ++k)
      out[(n / kI8Panel) * ldw + (k / 4) * 4 * kI8Panel + (n % kI8Panel) * 4 + k % 4] = W[n * ld_in + k];
}

void pack_kn_q4(size_t N, size_t K, const uint8_t* q, size_t ld_in, uint8_t* out) {
  const size_t ldo = packed_q4_ld(N);
  std::memset(out, 0, K * ldo);
  for (size_t n = 0; n < N; ++n)
    for (size_t k = 0; k < K; ++k) {
      const auto nib = static_cast<uint8_t>(q[n * ld_in + k] & 15);
      out[k * ldo + n / 2] |= static_cast<uint8_t>(nib << (4 * (n % 2)));
    }
}

void transpose_f32(size_t rows, size_t cols, const float* in, size_t ldi, float* out, size_t ldo) {
  transpose(rows, cols, in, ldi, out, ldo);
}

}  // namespace mlfs::kernels
