// Matrix products on bf16 weights with avx512_bf16 dot products (the `--precision bf16` mode).
//
// out [M, N] = a [M, K] x op(w), w bf16. The weight is packed once, at compile time, into panels
// of 32 output columns: panel p holds, for each pair of K indices (2q, 2q+1), the 32 columns' two
// values side by side, which is the operand layout of vdpbf16ps. The activations are rounded to
// bf16 (round to nearest even) into a scratch buffer, pairs along K, one padded row per row of a.
// A 12 x 32 register tile accumulates in f32 over blocks of 256 K pairs, so each output is the
// same sum in the same order whatever the thread count: threads own whole column panels.
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

#define LC_BF16_NR 32
#define LC_BF16_MR 12
#define LC_BF16_KC 256

#define LC_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

static int64_t pairs_of(int64_t k) { return (k + 1) / 2; }

/// Row stride of the rounded activations in 4-byte pairs: 64-byte aligned and 64 bytes more, so
/// the tile's 12 rows never share one L1 set (at K = 49152 an unpadded stride is 24 x 4096 bytes).
static int64_t scratch_stride(int64_t k) { return (pairs_of(k) + 15) / 16 * 16 + 16; }

int64_t lc_bf16_packed_bytes(int64_t n, int64_t k) {
  return (n + LC_BF16_NR - 1) / LC_BF16_NR * LC_BF16_NR * pairs_of(k) * 4;
}

int64_t lc_bf16_scratch_bytes(int64_t m, int64_t k) { return m * scratch_stride(k) * 4 + 64; }

void lc_bf16_pack(const uint16_t *w, int64_t n, int64_t k, int trans_b, uint16_t *packed) {
  int64_t kp = pairs_of(k), panels = (n + LC_BF16_NR - 1) / LC_BF16_NR;
#pragma omp parallel for schedule(static) if (n * k > (1 << 16))
  for (int64_t p = 0; p < panels; p++) {
    uint16_t *dst = packed + p * kp * LC_BF16_NR * 2;
    int64_t c0 = p * LC_BF16_NR, columns = n - c0 < LC_BF16_NR ? n - c0 : LC_BF16_NR;
    if (columns < LC_BF16_NR || k % 2) memset(dst, 0, (size_t)(kp * LC_BF16_NR * 4));
    if (trans_b) {
      // Column j of the panel is row c0 + j of w: its pairs are consecutive 4-byte words.
      for (int64_t j = 0; j < columns; j++) {
        const uint16_t *row = w + (c0 + j) * k;
        for (int64_t q = 0; q < k / 2; q++) memcpy(dst + (q * LC_BF16_NR + j) * 2, row + 2 * q, 4);
        if (k % 2) dst[((k / 2) * LC_BF16_NR + j) * 2] = row[k - 1];
      }
    } else {
      // Pair q interleaves rows 2q and 2q + 1 of w over the panel's columns.
      for (int64_t index = 0; index < k; index++) {
        const uint16_t *row = w + index * n + c0;
        uint16_t *out = dst + (index / 2) * LC_BF16_NR * 2 + index % 2;
        for (int64_t j = 0; j < columns; j++) out[2 * j] = row[j];
      }
    }
  }
}

static uint16_t round_bf16(float value) {
  uint32_t bits;
  memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1);
  return (uint16_t)(bits >> 16);
}

/// c[i, 0..31] (+)= sum over `pairs` of a's pair i times b's pair, for i < mr (a compile-time
/// constant at each call, so the 2 * mr accumulators stay in registers).
LC_BF16_TARGET static inline __attribute__((always_inline)) void tile(
    int mr, const uint32_t *a, int64_t lda, const uint16_t *b, int64_t pairs, float *c,
    int64_t ldc, int accumulate, __mmask16 m0, __mmask16 m1) {
  __m512 acc[LC_BF16_MR][2];
  for (int i = 0; i < mr; i++) {
    acc[i][0] = accumulate ? _mm512_maskz_loadu_ps(m0, c + i * ldc) : _mm512_setzero_ps();
    acc[i][1] = accumulate ? _mm512_maskz_loadu_ps(m1, c + i * ldc + 16) : _mm512_setzero_ps();
  }
  // Unrolling this loop makes clang hoist broadcasts and spill accumulators (half the speed).
#pragma clang loop unroll(disable)
  for (int64_t q = 0; q < pairs; q++) {
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + q * LC_BF16_NR * 2);
    __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + q * LC_BF16_NR * 2 + 32);
    for (int i = 0; i < mr; i++) {
      __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i * lda + q]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  for (int i = 0; i < mr; i++) {
    _mm512_mask_storeu_ps(c + i * ldc, m0, acc[i][0]);
    _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc[i][1]);
  }
}

LC_BF16_TARGET static void tile_rows(int mr, const uint32_t *a, int64_t lda, const uint16_t *b,
                                     int64_t pairs, float *c, int64_t ldc, int accumulate,
                                     __mmask16 m0, __mmask16 m1) {
  switch (mr) {
#define LC_TILE(R)                                                                                 \
  case R: tile(R, a, lda, b, pairs, c, ldc, accumulate, m0, m1); break;
    LC_TILE(1) LC_TILE(2) LC_TILE(3) LC_TILE(4) LC_TILE(5) LC_TILE(6)
    LC_TILE(7) LC_TILE(8) LC_TILE(9) LC_TILE(10) LC_TILE(11) LC_TILE(12)
#undef LC_TILE
  }
}

/// Rounds rows [r0, r1) of a [M, K] to bf16 pairs at `stride` pairs per row (odd K: a zero pad).
LC_BF16_TARGET static void round_rows(const float *a, int64_t k, int64_t r0, int64_t r1,
                                      uint16_t *scratch, int64_t stride) {
  for (int64_t i = r0; i < r1; i++) {
    const float *row = a + i * k;
    uint16_t *dst = scratch + i * stride * 2;
    int64_t j = 0;
    for (; j + 32 <= k; j += 32) {
      __m512 lo = _mm512_loadu_ps(row + j), hi = _mm512_loadu_ps(row + j + 16);
      _mm512_storeu_si512(dst + j, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (; j < 2 * pairs_of(k); j++) dst[j] = j < k ? round_bf16(row[j]) : 0;
  }
}

LC_BF16_TARGET static void bf16_part(float *out, int64_t m, int64_t n, int64_t k,
                                     const uint16_t *packed, const uint32_t *rounded,
                                     int64_t stride, int64_t p0, int64_t p1) {
  int64_t kp = pairs_of(k);
  for (int64_t q0 = 0; q0 < kp; q0 += LC_BF16_KC) {
    int64_t pairs = kp - q0 < LC_BF16_KC ? kp - q0 : LC_BF16_KC;
    for (int64_t p = p0; p < p1; p++) {
      int64_t column = p * LC_BF16_NR, left = n - column;
      __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
      __mmask16 m1 = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
      const uint16_t *b = packed + (p * kp + q0) * LC_BF16_NR * 2;
      for (int64_t i = 0; i < m; i += LC_BF16_MR) {
        int mr = m - i < LC_BF16_MR ? (int)(m - i) : LC_BF16_MR;
        tile_rows(mr, rounded + i * stride + q0, stride, b, pairs, out + i * n + column, n, q0 > 0,
                  m0, m1);
      }
    }
  }
}

void lc_matmul_bf16_packed(float *out, const float *a, int64_t m, int64_t n, int64_t k,
                           const uint16_t *packed, void *scratch) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    memset(out, 0, (size_t)(m * n) * sizeof(float));
    return;
  }
  int64_t stride = scratch_stride(k), panels = (n + LC_BF16_NR - 1) / LC_BF16_NR;
  uint16_t *rounded = (uint16_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
  int threads = lc_get_threads();
  if (threads == 1 || m * n * k < (1 << 18)) {
    round_rows(a, k, 0, m, rounded, stride);
    bf16_part(out, m, n, k, packed, (const uint32_t *)rounded, stride, 0, panels);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), count = omp_get_num_threads();
    int64_t rows = (m + count - 1) / count, r0 = t * rows, r1 = r0 + rows < m ? r0 + rows : m;
    if (r0 < r1) round_rows(a, k, r0, r1, rounded, stride);
#pragma omp barrier
    int64_t per = (panels + count - 1) / count, p0 = t * per;
    int64_t p1 = p0 + per < panels ? p0 + per : panels;
    if (p0 < p1) bf16_part(out, m, n, k, packed, (const uint32_t *)rounded, stride, p0, p1);
  }
}
