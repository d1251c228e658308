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

void pack_q4_panels(size_t N, size_t K, const uint8_t* q, size_t ld_q, const uint16_t* S, const uint16_t* Z,
                    size_t ld_s, uint8_t* out) {
  const size_t ldw = packed_q4_ld(K);
  std::memset(out, 0, packed_q4_size(N, K));
  for (size_t n = 0; n < N; ++n) {
    const size_t c = n % kQ4Panel;
    for (size_t g = 0; g < K / kQ4Group; ++g) {
      uint8_t* blk = out + (n / kQ4Panel) * ldw + g * kQ4BlockBytes;
      for (size_t j = 0; j < kQ4Group; ++j) {
        const size_t s = j / 8, t = j % 8;
        const auto nib = static_cast<uint8_t>(q[n * ld_q + g * kQ4Group + j] & 15);
        blk[s * 64 + c * 4 + t % 4] |= static_cast<uint8_t>(nib << (4 * (t / 4)));
      }
      std::memcpy(blk + 256 + 2 * c, &S[g * ld_s + n], 2);
      std::memcpy(blk + 288 + 2 * c, &Z[g * ld_s + n], 2);
    }
  }
}

float q4_weight(const uint8_t* Wq, size_t ldw, size_t k, size_t n) {
  const size_t c = n % kQ4Panel, j = k % kQ4Group, s = j / 8, t = j % 8;
  const uint8_t* blk = Wq + (n / kQ4Panel) * ldw + (k / kQ4Group) * kQ4BlockBytes;
  const int q = (blk[s * 64 + c * 4 + t % 4] >> (4 * (t / 4))) & 15;
  uint16_t sh, zh;
  std::memcpy(&sh, blk + 256 + 2 * c, 2);
  std::memcpy(&zh, blk + 288 + 2 * c, 2);
  return f16_to_f32_scalar(sh) * static_cast<float>(q) + f16_to_f32_scalar(zh);
}

void transpose_f32(size_t rows, size_t cols, const float* in, size_t ldi, float* out, size_t ldo) {
  transpose(rows, cols, in, ldi, out, ldo);
}

}  // namespace mlfs::kernels
