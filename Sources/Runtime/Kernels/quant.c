// Storage dtypes: row decoding, and dot products that read quantized blocks directly.
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        e++;
        mantissa <<= 1;
      } while ((mantissa & 0x400) == 0);
      bits = sign | (uint32_t)(127 - 15 - e) << 23 | (mantissa & 0x3FF) << 13;
    }
  } else if (exponent == 31) {
    bits = sign | 0x7F800000u | mantissa << 13;
  } else {
    bits = sign | (exponent - 15 + 127) << 23 | mantissa << 13;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static inline uint16_t load16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

_Static_assert(LC_DTYPE_COUNT == 8, "block_size, block_bytes and lc_dequantize_row name every dtype");

static int block_size(int dtype) {
  switch (dtype) {
    case LC_Q8_0: case LC_Q4_1: return 32;
    case LC_Q4_K: case LC_Q6_K: return 256;
    default: return 1;
  }
}

static int block_bytes(int dtype) {
  switch (dtype) {
    case LC_F32: case LC_I32: return 4;
    case LC_F16: case LC_BF16: return 2;
    case LC_Q8_0: return 34;
    case LC_Q4_1: return 20;
    case LC_Q4_K: return 144;
    case LC_Q6_K: return 210;
    default: return 0;
  }
}

int64_t lc_row_bytes(int dtype, int64_t n) { return n / block_size(dtype) * block_bytes(dtype); }

/// Decodes one block of `dtype` (block_size values) into out.
static void decode_block(int dtype, const uint8_t *b, float *out) {
  switch (dtype) {
    case LC_Q8_0: {
      float d = half_to_float(load16(b));
      for (int j = 0; j < 32; j++) out[j] = (float)(int8_t)b[2 + j] * d;
      break;
    }
    case LC_Q4_1: {
      float d = half_to_float(load16(b)), m = half_to_float(load16(b + 2));
      for (int j = 0; j < 16; j++) {
        out[j] = (float)(b[4 + j] & 0xF) * d + m;
        out[j + 16] = (float)(b[4 + j] >> 4) * d + m;
      }
      break;
    }
    case LC_Q4_K: {
      float d = half_to_float(load16(b)), dmin = half_to_float(load16(b + 2));
      const uint8_t *scales = b + 4, *q = b + 16;
      for (int c = 0; c < 4; c++) {
        float sc[2], mn[2];
        for (int s = 0; s < 2; s++) {
          int j = 2 * c + s;
          if (j < 4) {
            sc[s] = scales[j] & 63;
            mn[s] = scales[j + 4] & 63;
          } else {
            sc[s] = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
            mn[s] = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
          }
        }
        for (int l = 0; l < 32; l++) {
          out[64 * c + l] = d * sc[0] * (float)(q[32 * c + l] & 0xF) - dmin * mn[0];
          out[64 * c + 32 + l] = d * sc[1] * (float)(q[32 * c + l] >> 4) - dmin * mn[1];
        }
      }
      break;
    }
    case LC_Q6_K: {
      float d = half_to_float(load16(b + 208));
      for (int n = 0; n < 2; n++) {
        const uint8_t *low = b + 64 * n, *high = b + 128 + 32 * n;
        const int8_t *s = (const int8_t *)(b + 192 + 8 * n);
        float *o = out + 128 * n;
        for (int l = 0; l < 32; l++) {
          int i = l / 16;
          int q1 = ((low[l] & 0xF) | ((high[l] >> 0) & 3) << 4) - 32;
          int q2 = ((low[l + 32] & 0xF) | ((high[l] >> 2) & 3) << 4) - 32;
          int q3 = ((low[l] >> 4) | ((high[l] >> 4) & 3) << 4) - 32;
          int q4 = ((low[l + 32] >> 4) | ((high[l] >> 6) & 3) << 4) - 32;
          o[l] = d * s[i] * q1;
          o[l + 32] = d * s[i + 2] * q2;
          o[l + 64] = d * s[i + 4] * q3;
          o[l + 96] = d * s[i + 6] * q4;
        }
      }
      break;
    }
  }
}

#if defined(__x86_64__)
/// q8_0 rows: 32 int8 values times the block's scale, 8 lanes at a time.
__attribute__((target("avx2,fma,f16c"))) static void decode_q8_0_avx2(const uint8_t *src,
                                                                       float *dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *block = src + 34 * b;
    __m256 d = _mm256_set1_ps(_cvtsh_ss((uint16_t)(block[0] | block[1] << 8)));
    for (int j = 0; j < 32; j += 8) {
      __m128i q8 = _mm_loadl_epi64((const __m128i *)(block + 2 + j));
      _mm256_storeu_ps(dst + 32 * b + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), d));
    }
  }
}

/// q4_1 rows: low nibbles are values 0..15 of a block, high nibbles 16..31; x = q d + m.
__attribute__((target("avx2,fma,f16c"))) static void decode_q4_1_avx2(const uint8_t *src,
                                                                       float *dst, int64_t blocks) {
  const __m128i mask = _mm_set1_epi8(0xF);
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *block = src + 20 * b;
    __m256 d = _mm256_set1_ps(_cvtsh_ss((uint16_t)(block[0] | block[1] << 8)));
    __m256 m = _mm256_set1_ps(_cvtsh_ss((uint16_t)(block[2] | block[3] << 8)));
    __m128i bytes = _mm_loadu_si128((const __m128i *)(block + 4));
    __m128i low = _mm_and_si128(bytes, mask);
    __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    float *out = dst + 32 * b;
    _mm256_storeu_ps(out, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(low)), d, m));
    _mm256_storeu_ps(out + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(low, 8))), d, m));
    _mm256_storeu_ps(out + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(high)), d, m));
    _mm256_storeu_ps(out + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(high, 8))), d, m));
  }
}
#endif

void lc_dequantize_row(int dtype, const void *source, float *dst, int64_t n) {
  const uint8_t *src = source;
#if defined(__x86_64__)
  if ((dtype == LC_Q8_0 || dtype == LC_Q4_1) && (lc_cpu_features() & 1)) {
    if (dtype == LC_Q8_0) decode_q8_0_avx2(src, dst, n / 32); else decode_q4_1_avx2(src, dst, n / 32);
    return;
  }
#endif
  switch (dtype) {
    case LC_F32: memcpy(dst, src, (size_t)n * 4); return;
    case LC_I32:
      for (int64_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, src + 4 * i, 4);
        dst[i] = (float)v;
      }
      return;
    case LC_F16:
      for (int64_t i = 0; i < n; i++) dst[i] = half_to_float(load16(src + 2 * i));
      return;
    case LC_BF16:
      for (int64_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)load16(src + 2 * i) << 16;
        memcpy(dst + i, &bits, 4);
      }
      return;
    default: {
      int size = block_size(dtype), bytes = block_bytes(dtype);
      for (int64_t b = 0; b < n / size; b++) decode_block(dtype, src + b * bytes, dst + b * size);
    }
  }
}

void lc_dequantize_rows(int dtype, const void *src, float *dst, int64_t rows, int64_t width) {
  int64_t row_bytes = lc_row_bytes(dtype, width);
#pragma omp parallel for schedule(static) if (rows * width > LC_PARALLEL_MIN)
  for (int64_t r = 0; r < rows; r++) {
    lc_dequantize_row(dtype, (const uint8_t *)src + r * row_bytes, dst + r * width, width);
  }
}

// ---- matrix-vector and small-M products over stored blocks ----------------------------------
//
// out[i, r] = dot(a[i, :], dequant(w[r, :])) for up to LC_SMALL_M rows i of activations at once,
// reading each weight block once for all of them. Activations stay f32 (never quantized).
// Every output is computed by one thread in a fixed operation order that depends only on k (not
// on the thread count or on how rows are split), so results are bit-identical for given inputs on
// one path.

/// dot(x, dequant(row)) one decoded block at a time (the reference).
static float dot_reference(int dtype, const float *x, const uint8_t *row, int64_t k) {
  int size = block_size(dtype), bytes = block_bytes(dtype);
  float block[256];
  float sum = 0;
  for (int64_t b = 0; b < k / size; b++) {
    lc_dequantize_row(dtype, row + b * bytes, block, size);
    float partial = 0;
    for (int j = 0; j < size; j++) partial += x[b * size + j] * block[j];
    sum += partial;
  }
  return sum;
}

void lc_matvec_quantized_reference(int dtype, float *y, const float *x, const void *w, int64_t n,
                                   int64_t k) {
  int64_t row_bytes = lc_row_bytes(dtype, k);
  for (int64_t r = 0; r < n; r++) y[r] = dot_reference(dtype, x, (const uint8_t *)w + r * row_bytes, k);
}

// Blocks of 32 values whose activations are prepared at a time: 64 blocks (8 KB) per activation
// row, so LC_SMALL_M rows of prepared activations stay within L2 beside the streamed weights.
#define PREP_BLOCKS 64
#define LC_SMALL_M 8

/// One call's shape, shared by every path.
typedef struct {
  int dtype, m;
  const float *a;         // [m, k]
  const uint8_t *w;       // [n, row_bytes]
  float *out;             // [m, n]
  int64_t n, k, row_bytes;
} lc_qjob;

/// A kernel: rows [r0, r1) of the weight, blocks [b0, b0 + blocks) of k (in 32-value units for
/// q8_0/q4_1, whole storage blocks otherwise); adds into out when `accumulate`.
/// `prep` holds the activations prepared by the path's prepare function for these blocks.
typedef void (*lc_qrows_fn)(const lc_qjob *job, const float *prep, int64_t r0, int64_t r1,
                            int64_t b0, int64_t blocks, int accumulate);
typedef void (*lc_qprep_fn)(const lc_qjob *job, float *prep, int64_t b0, int64_t blocks);

// q4_1 activations are prepared per block of 32 as [x_lo - x_hi / 16 (16), x_hi / 16 (16)],
// with the block sums after the chunk's blocks: with c = byte (lo + 16 hi) the block's dot is
//   sum_j lo_j x_lo_j + hi_j x_hi_j = sum_j lo_j (x_lo_j - x_hi_j / 16) + c_j (x_hi_j / 16),
// so one byte -> float conversion serves both nibbles (no shift), and the min term is m * sum(x).
// Scaling by 1/16 is exact; the subtraction rounds once per activation, an error of the size of
// the dot product's own rounding.
#define PREP_ROW (PREP_BLOCKS * 33)
#define PREP_SUMS (PREP_BLOCKS * 32)

static void q4_1_prepare(const lc_qjob *job, float *prep, int64_t b0, int64_t blocks) {
  for (int i = 0; i < job->m; i++) {
    for (int64_t b = 0; b < blocks; b++) {
      const float *x = job->a + i * job->k + 32 * (b0 + b);
      float *p = prep + i * PREP_ROW + 32 * b;
      float sum = 0;
      for (int j = 0; j < 16; j++) {
        float high = x[16 + j] * 0.0625f;
        p[j] = x[j] - high;
        p[16 + j] = high;
      }
      for (int j = 0; j < 32; j++) sum += x[j];
      prep[i * PREP_ROW + PREP_SUMS + b] = sum;
    }
  }
}

/// q4_k's min term needs the sum of each 32 activations (8 per 256-value block).
static void sums32_prepare(const lc_qjob *job, float *prep, int64_t b0, int64_t blocks) {
  for (int i = 0; i < job->m; i++) {
    for (int64_t g = 0; g < 8 * blocks; g++) {
      const float *x = job->a + i * job->k + 256 * b0 + 32 * g;
      float sum = 0;
      for (int j = 0; j < 32; j++) sum += x[j];
      prep[i * PREP_ROW + PREP_SUMS + g] = sum;
    }
  }
}

/// Other types read the activations as they are (prep points into a).
static void plain_prepare(const lc_qjob *job, float *prep, int64_t b0, int64_t blocks) {
  (void)job, (void)prep, (void)b0, (void)blocks;
}

// ---- portable: decode a block, dot it with every activation row ----

// Eight partial sums per block let the compiler vectorise the dot product (one running sum is
// a chain of dependent adds, 4x slower); compiled like the elementwise loops for each ISA level.
LC_CLONES static void rows_portable(const lc_qjob *job, const float *prep, int64_t r0,
                                    int64_t r1, int64_t b0, int64_t blocks, int accumulate) {
  (void)prep;
  int size = block_size(job->dtype), bytes = block_bytes(job->dtype);
  float block[256];
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t *row = job->w + r * job->row_bytes;
    float sums[LC_SMALL_M] = {0};
    // Elementwise types (size 1) come as one unit of k values, decoded 256 at a time.
    int64_t units = size == 1 ? (job->k + 255) / 256 : b0 + blocks;
    for (int64_t b = size == 1 ? 0 : b0; b < units; b++) {
      int count = size;
      if (size == 1) {
        count = job->k - 256 * b < 256 ? (int)(job->k - 256 * b) : 256;
        lc_dequantize_row(job->dtype, row + b * 256 * bytes, block, count);
      } else {
        decode_block(job->dtype, row + b * bytes, block);
      }
      for (int i = 0; i < job->m; i++) {
        const float *x = job->a + i * job->k + b * (size == 1 ? 256 : size);
        float lanes[8] = {0};
        int j = 0;
        for (; j + 8 <= count; j += 8) {
          for (int l = 0; l < 8; l++) lanes[l] += x[j + l] * block[j + l];
        }
        float partial = 0;
        for (int l = 0; l < 8; l++) partial += lanes[l];
        for (; j < count; j++) partial += x[j] * block[j];
        sums[i] += partial;
      }
    }
    for (int i = 0; i < job->m; i++) {
      float *o = job->out + i * job->n + r;
      *o = accumulate ? *o + sums[i] : sums[i];
    }
  }
}

/// The interleaved layouts of q4_1 and q8_0 (see the VNNI section): bytes of one group of 16 rows
/// by one block of 32 values, of a whole packed matrix, and the packer.
static int64_t interleaved_block_bytes(int dtype) { return dtype == LC_Q4_1 ? 320 : 544; }

int64_t lc_interleaved_bytes(int dtype, int64_t n, int64_t k) {
  if (dtype != LC_Q4_1 && dtype != LC_Q8_0) return 0;
  return (n + 15) / 16 * (k / 32) * interleaved_block_bytes(dtype);
}

int lc_interleave(int dtype, const void *w, int64_t n, int64_t k, void *packed) {
  if (dtype != LC_Q4_1 && dtype != LC_Q8_0) return 0;
  int64_t blocks = k / 32, groups = (n + 15) / 16, size = interleaved_block_bytes(dtype);
  int64_t row_bytes = lc_row_bytes(dtype, k);
#pragma omp parallel for schedule(static) if (n * k > LC_PARALLEL_MIN)
  for (int64_t g = 0; g < groups; g++) {
    for (int64_t b = 0; b < blocks; b++) {
      uint8_t *out = (uint8_t *)packed + size * (g * blocks + b);
      // Padding rows: zero scales and values (q8_0's bytes are stored flipped, w + 128).
      int header = dtype == LC_Q4_1 ? 64 : 32;
      memset(out, 0, header);
      memset(out + header, dtype == LC_Q8_0 ? 0x80 : 0, size - header);
      for (int j = 0; j < 16 && 16 * g + j < n; j++) {
        const uint8_t *block = (const uint8_t *)w + (16 * g + j) * row_bytes + block_bytes(dtype) * b;
        memcpy(out + 2 * j, block, 2);
        if (dtype == LC_Q8_0) {
          for (int v = 0; v < 32; v++) out[32 + 64 * (v / 4) + 4 * j + v % 4] = block[2 + v] ^ 0x80;
          continue;
        }
        memcpy(out + 32 + 2 * j, block + 2, 2);
        uint8_t v[32];
        for (int i = 0; i < 16; i++) v[i] = block[4 + i] & 0xF, v[16 + i] = block[4 + i] >> 4;
        for (int c = 0; c < 4; c++) {
          for (int t = 0; t < 4; t++) {
            out[64 + 64 * c + 4 * j + t] = (uint8_t)(v[8 * c + t] | v[8 * c + 4 + t] << 4);
          }
        }
      }
    }
  }
  return 1;
}

#if defined(__x86_64__)
#define LC_AVX2 __attribute__((target("avx2,fma,f16c")))
#define LC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

// Each tile is one weight row against M activation rows. Rows are walked in memory order: tiles
// of several interleaved rows were 2-3x slower from DRAM (the prefetchers follow one stream far
// better than several short ones), so latency is covered by two accumulator sets instead, one
// for even and one for odd blocks.

/// Stores (or adds) the sums of accumulator sets A and B into out[i, r].
#define STORE_ROW(M, reduce)                                                                   \
  for (int i = 0; i < (M); i++) {                                                              \
    float v = reduce;                                                                          \
    float *o = job->out + i * job->n + r;                                                      \
    *o = accumulate ? *o + v : v;                                                              \
  }

/// Runs body(b, acc) over blocks [first, last): even offsets into A, odd into B.
#define PAIRED(first, last, body)                                                              \
  {                                                                                            \
    int64_t b_ = (first);                                                                      \
    for (; b_ + 1 < (last); b_ += 2) {                                                         \
      body(b_, A);                                                                             \
      body(b_ + 1, B);                                                                         \
    }                                                                                          \
    if (b_ < (last)) body(b_, A);                                                              \
  }

// ---- AVX2 ----

LC_AVX2 INLINE float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// q8_0, AVX2: per block and activation row, d * dot(q, x) with q widened to floats.
LC_AVX2 INLINE void q8_0_row_avx2(const lc_qjob *job, const float *prep, int M, int64_t r,
                                  int64_t b0, int64_t blocks, int accumulate) {
  (void)prep;
  __m256 A[LC_SMALL_M], B[LC_SMALL_M];
  for (int i = 0; i < M; i++) A[i] = B[i] = _mm256_setzero_ps();
  const uint8_t *row = job->w + r * job->row_bytes;
#define Q8_0_AVX2(b, acc)                                                                      \
  {                                                                                            \
    const uint8_t *block = row + 34 * (b);                                                     \
    __m256 d = _mm256_set1_ps(_cvtsh_ss(load16(block)));                                       \
    __m256 q[4];                                                                               \
    for (int j = 0; j < 4; j++) {                                                              \
      q[j] = _mm256_cvtepi32_ps(                                                               \
          _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(block + 2 + 8 * j))));        \
    }                                                                                          \
    for (int i = 0; i < M; i++) {                                                              \
      const float *x = job->a + i * job->k + 32 * (b);                                         \
      __m256 p = _mm256_mul_ps(q[0], _mm256_loadu_ps(x));                                      \
      for (int j = 1; j < 4; j++) p = _mm256_fmadd_ps(q[j], _mm256_loadu_ps(x + 8 * j), p);    \
      acc[i] = _mm256_fmadd_ps(p, d, acc[i]);                                                  \
    }                                                                                          \
  }
  PAIRED(b0, b0 + blocks, Q8_0_AVX2)
#undef Q8_0_AVX2
  STORE_ROW(M, hsum256(_mm256_add_ps(A[i], B[i])))
}

/// q4_1, AVX2: per block, d * (lo . x_lo' + c . x_hi') on the prepared activations, plus
/// m * sum(x) accumulated separately.
LC_AVX2 INLINE void q4_1_row_avx2(const lc_qjob *job, const float *prep, int M, int64_t r,
                                  int64_t b0, int64_t blocks, int accumulate) {
  __m256 A[LC_SMALL_M], B[LC_SMALL_M];
  float mins[LC_SMALL_M];
  const __m256i low = _mm256_set1_epi32(0xF);
  for (int i = 0; i < M; i++) A[i] = B[i] = _mm256_setzero_ps(), mins[i] = 0;
  const uint8_t *row = job->w + r * job->row_bytes + 20 * b0;
#define Q4_1_AVX2(b, acc)                                                                      \
  {                                                                                            \
    const uint8_t *block = row + 20 * (b);                                                     \
    __m256 d = _mm256_set1_ps(_cvtsh_ss(load16(block)));                                       \
    float m = _cvtsh_ss(load16(block + 2));                                                    \
    __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(block + 4)));          \
    __m256i c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(block + 12)));         \
    __m256 lo0 = _mm256_cvtepi32_ps(_mm256_and_si256(c0, low));                                \
    __m256 lo1 = _mm256_cvtepi32_ps(_mm256_and_si256(c1, low));                                \
    __m256 all0 = _mm256_cvtepi32_ps(c0), all1 = _mm256_cvtepi32_ps(c1);                       \
    for (int i = 0; i < M; i++) {                                                              \
      const float *p = prep + i * PREP_ROW + 32 * (b);                                         \
      __m256 s = _mm256_mul_ps(lo0, _mm256_loadu_ps(p));                                       \
      s = _mm256_fmadd_ps(lo1, _mm256_loadu_ps(p + 8), s);                                     \
      s = _mm256_fmadd_ps(all0, _mm256_loadu_ps(p + 16), s);                                   \
      s = _mm256_fmadd_ps(all1, _mm256_loadu_ps(p + 24), s);                                   \
      acc[i] = _mm256_fmadd_ps(s, d, acc[i]);                                                  \
      mins[i] += m * prep[i * PREP_ROW + PREP_SUMS + (b)];                                     \
    }                                                                                          \
  }
  PAIRED(0, blocks, Q4_1_AVX2)
#undef Q4_1_AVX2
  STORE_ROW(M, hsum256(_mm256_add_ps(A[i], B[i])) + mins[i])
}

/// f32, f16 and bf16 rows, AVX2: 8 values converted per step (F16C for f16, a shift for bf16),
/// the k % 8 tail one value at a time.
LC_AVX2 INLINE __m256 load8_avx2(int dtype, const uint8_t *p) {
  if (dtype == LC_F32) return _mm256_loadu_ps((const float *)p);
  __m128i h = _mm_loadu_si128((const __m128i *)p);
  if (dtype == LC_F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

LC_AVX2 INLINE float load1_avx2(int dtype, const uint8_t *p) {
  if (dtype == LC_F32) return *(const float *)p;
  if (dtype == LC_F16) return _cvtsh_ss(load16(p));
  uint32_t bits = (uint32_t)load16(p) << 16;
  float value;
  memcpy(&value, &bits, 4);
  return value;
}

LC_AVX2 INLINE void elementwise_row_avx2(const lc_qjob *job, const float *prep, int M, int64_t r,
                                         int64_t b0, int64_t blocks, int accumulate) {
  (void)prep, (void)b0, (void)blocks;  // one unit: the whole row
  __m256 A[LC_SMALL_M], B[LC_SMALL_M];
  float tails[LC_SMALL_M];
  int size = job->dtype == LC_F32 ? 4 : 2;
  for (int i = 0; i < M; i++) A[i] = B[i] = _mm256_setzero_ps(), tails[i] = 0;
  const uint8_t *row = job->w + r * job->row_bytes;
  int64_t steps = job->k / 8;
#define ELEMENTWISE_AVX2(step, acc)                                                            \
  {                                                                                            \
    int64_t s = 8 * (step);                                                                    \
    __m256 v = load8_avx2(job->dtype, row + size * s);                                         \
    for (int i = 0; i < M; i++) {                                                              \
      acc[i] = _mm256_fmadd_ps(v, _mm256_loadu_ps(job->a + i * job->k + s), acc[i]);           \
    }                                                                                          \
  }
  PAIRED(0, steps, ELEMENTWISE_AVX2)
#undef ELEMENTWISE_AVX2
  for (int64_t s = 8 * steps; s < job->k; s++) {
    float w = load1_avx2(job->dtype, row + size * s);
    for (int i = 0; i < M; i++) tails[i] += w * job->a[i * job->k + s];
  }
  STORE_ROW(M, hsum256(_mm256_add_ps(A[i], B[i])) + tails[i])
}

// ---- AVX-512 ----

/// q8_0, AVX-512: 16 lanes per half block; d converted straight into a broadcast.
LC_AVX512 INLINE void q8_0_row_avx512(const lc_qjob *job, const float *prep, int M, int64_t r,
                                      int64_t b0, int64_t blocks, int accumulate) {
  (void)prep;
  __m512 A[LC_SMALL_M], B[LC_SMALL_M];
  for (int i = 0; i < M; i++) A[i] = B[i] = _mm512_setzero_ps();
  const uint8_t *row = job->w + r * job->row_bytes;
#define Q8_0_AVX512(b, acc)                                                                    \
  {                                                                                            \
    const uint8_t *block = row + 34 * (b);                                                     \
    __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16((short)load16(block)));                       \
    __m512 q0 = _mm512_cvtepi32_ps(                                                            \
        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(block + 2))));                  \
    __m512 q1 = _mm512_cvtepi32_ps(                                                            \
        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(block + 18))));                 \
    for (int i = 0; i < M; i++) {                                                              \
      const float *x = job->a + i * job->k + 32 * (b);                                         \
      __m512 p = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16),                                  \
                                 _mm512_mul_ps(q0, _mm512_loadu_ps(x)));                       \
      acc[i] = _mm512_fmadd_ps(p, d, acc[i]);                                                  \
    }                                                                                          \
  }
  PAIRED(b0, b0 + blocks, Q8_0_AVX512)
#undef Q8_0_AVX512
  STORE_ROW(M, _mm512_reduce_add_ps(_mm512_add_ps(A[i], B[i])))
}

/// Word positions (mod 64) of d (lanes 0-15) and m (lanes 16-31) of 16 consecutive q4_1 blocks:
/// block j's header is at words 10j and 10j + 1.
static const int16_t q4_1_header_words[32] = {0,  10, 20, 30, 40, 50, 60, 6,  16, 26, 36,
                                              46, 56, 2,  12, 22, 1,  11, 21, 31, 41, 51,
                                              61, 7,  17, 27, 37, 47, 57, 3,  13, 23};

/// The load masks of a group of `count` <= 16 consecutive q4_1 blocks' headers: which words of
/// its five 64-byte pieces to read (never past the group's last block) and which lanes to keep.
/// Every row of a call has the same groups, so these are computed once per call, not per group.
typedef struct {
  int count;
  __mmask32 load[5], keep;
} q4_1_group;

static q4_1_group q4_1_group_of(int count) {
  q4_1_group g = {count, {0}, (__mmask32)(((1u << count) - 1) * 0x10001u)};
  for (int i = 0; i < 5; i++) {
    int left = 10 * count - 32 * i;
    g.load[i] = left >= 32 ? 0xFFFFFFFFu : left <= 0 ? 0 : (__mmask32)((1u << left) - 1);
  }
  return g;
}

/// The d and m of a group of q4_1 blocks as two vectors (lanes past the group zero): up to five
/// loads (plain ones for a whole group: its 320 bytes are all in the row) and three word
/// permutes, instead of a scalar f16 conversion per block and value.
LC_AVX512 INLINE void q4_1_headers_avx512(const uint8_t *blocks, const q4_1_group *g, __m512 *d,
                                          __m512 *m) {
  const __m512i words = _mm512_loadu_si512(q4_1_header_words);
  int whole = g->count == 16;
#define Q4_1_PIECE(i)                                                                          \
  (whole ? _mm512_loadu_si512(blocks + 64 * (i))                                               \
         : _mm512_maskz_loadu_epi16(g->load[i], blocks + 64 * (i)))
  // Blocks 0-6 lie in words 0-63, 7-12 in 64-127, 13-15 in 128-159. A short group (the tail of
  // a row, e.g. 2 of SmolLM2's 18 blocks) skips the loads and permutes it does not need.
  __m512i t = _mm512_permutex2var_epi16(Q4_1_PIECE(0), words, Q4_1_PIECE(1));
  if (g->count > 7) {
    __m512i high = _mm512_permutex2var_epi16(Q4_1_PIECE(2), words, Q4_1_PIECE(3));
    t = _mm512_mask_blend_epi16(0x1F801F80u, t, high);
  }
  if (g->count > 13) {
    t = _mm512_mask_blend_epi16(0xE000E000u, t, _mm512_permutexvar_epi16(words, Q4_1_PIECE(4)));
  }
#undef Q4_1_PIECE
  // Lanes of blocks past `count` hold other bytes (maybe an f16 NaN): zero them.
  if (!whole) t = _mm512_maskz_mov_epi16(g->keep, t);
  *d = _mm512_cvtph_ps(_mm512_castsi512_si256(t));
  *m = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(t, 1));
}

/// The groups of 16 blocks of a row's [b0, b0 + blocks), worked out once per call. The kernels
/// decode group g + 1's headers before multiplying group g's blocks: a decode's chain (loads,
/// permutes, conversion) is long, and blocks that wait for their scale stall the accumulator
/// chains behind them (decoding in place cost 0.4-0.8 cycles per block on Zen 4).
typedef struct {
  q4_1_group full, tail;
  int64_t groups;
} q4_1_groups;

static q4_1_groups q4_1_groups_of(int64_t blocks) {
  q4_1_groups g = {q4_1_group_of(16), q4_1_group_of((int)(blocks - 16 * ((blocks - 1) / 16))),
                   (blocks + 15) / 16};
  return g;
}

/// Decodes group `index` of a row (nothing past the last).
LC_AVX512 INLINE void q4_1_decode_group(const uint8_t *row, const q4_1_groups *g, int64_t index,
                                        __m512 *d, __m512 *m) {
  if (index >= g->groups) return;
  q4_1_headers_avx512(row + 320 * index, index + 1 < g->groups ? &g->full : &g->tail, d, m);
}

/// q4_1, AVX-512, on the prepared activations. Per block: bytes widened once; the low nibble
/// becomes a float through a 16-entry permute (which ignores the high bits, so no mask), the
/// whole byte through one conversion; 3 FMAs per activation row, no horizontal sum.
LC_AVX512 INLINE void q4_1_row_avx512(const lc_qjob *job, const float *prep, int M, int64_t r,
                                      int64_t b0, const q4_1_groups *g, int accumulate) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 A[LC_SMALL_M], B[LC_SMALL_M], mins[LC_SMALL_M];
  for (int i = 0; i < M; i++) A[i] = B[i] = mins[i] = _mm512_setzero_ps();
  const uint8_t *row = job->w + r * job->row_bytes + 20 * b0;
  float scales[16];
  __m512 d, m, next_d, next_m;
  q4_1_decode_group(row, g, 0, &d, &m);
  for (int64_t group = 0; group < g->groups; group++) {
    int64_t c0 = 16 * group;
    int count = group + 1 < g->groups ? 16 : g->tail.count;
    _mm512_storeu_ps(scales, d);
    q4_1_decode_group(row, g, group + 1, &next_d, &next_m);
    for (int i = 0; i < M; i++) {
      // Lanes past `count` are zero in both m and the masked sums.
      __m512 sums = _mm512_maskz_loadu_ps((__mmask16)((1u << count) - 1),
                                          prep + i * PREP_ROW + PREP_SUMS + c0);
      mins[i] = _mm512_fmadd_ps(m, sums, mins[i]);
    }
#define Q4_1_AVX512(j, acc)                                                                    \
  {                                                                                            \
    const uint8_t *qs = row + 20 * (c0 + (j)) + 4;                                             \
    __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qs));                    \
    __m512 lo = _mm512_permutexvar_ps(c, iota), all = _mm512_cvtepi32_ps(c);                   \
    __m512 scale = _mm512_set1_ps(scales[j]);                                                  \
    for (int i = 0; i < M; i++) {                                                              \
      const float *p = prep + i * PREP_ROW + 32 * (c0 + (j));                                  \
      __m512 s = _mm512_fmadd_ps(all, _mm512_loadu_ps(p + 16),                                 \
                                 _mm512_mul_ps(lo, _mm512_loadu_ps(p)));                       \
      acc[i] = _mm512_fmadd_ps(s, scale, acc[i]);                                              \
    }                                                                                          \
  }
    PAIRED(0, count, Q4_1_AVX512)
#undef Q4_1_AVX512
    d = next_d, m = next_m;
  }
  STORE_ROW(M, _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(A[i], B[i]), mins[i])))
}

/// f32, f16 and bf16 rows, AVX-512: 16 values converted per step (a masked tail for k % 16).
LC_AVX512 INLINE __m512 load16_avx512(int dtype, const uint8_t *p, __mmask16 k) {
  if (dtype == LC_F32) return _mm512_maskz_loadu_ps(k, p);
  __m256i h = _mm256_maskz_loadu_epi16(k, p);
  if (dtype == LC_F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

LC_AVX512 INLINE void elementwise_row_avx512(const lc_qjob *job, const float *prep, int M,
                                             int64_t r, int64_t b0, int64_t blocks,
                                             int accumulate) {
  (void)prep, (void)b0, (void)blocks;  // one unit: the whole row
  __m512 A[LC_SMALL_M], B[LC_SMALL_M];
  int size = job->dtype == LC_F32 ? 4 : 2;
  for (int i = 0; i < M; i++) A[i] = B[i] = _mm512_setzero_ps();
  const uint8_t *row = job->w + r * job->row_bytes;
  int64_t steps = (job->k + 15) / 16;
#define ELEMENTWISE_AVX512(step, acc)                                                          \
  {                                                                                            \
    int64_t s = 16 * (step);                                                                   \
    __mmask16 k = job->k - s >= 16 ? 0xFFFF : (__mmask16)((1u << (job->k - s)) - 1);           \
    __m512 v = load16_avx512(job->dtype, row + size * s, k);                                   \
    for (int i = 0; i < M; i++) {                                                              \
      acc[i] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, job->a + i * job->k + s), acc[i]);  \
    }                                                                                          \
  }
  PAIRED(0, steps, ELEMENTWISE_AVX512)
#undef ELEMENTWISE_AVX512
  STORE_ROW(M, _mm512_reduce_add_ps(_mm512_add_ps(A[i], B[i])))
}

/// The 6-bit scales and mins of a q4_k block as floats: d * sc[0..7], then dmin * m[0..7].
LC_AVX512 INLINE void q4_k_scales_avx512(const uint8_t *block, float *out) {
  const uint8_t *s = block + 4;
  int32_t v[16];
  for (int j = 0; j < 4; j++) {
    v[j] = s[j] & 63;
    v[8 + j] = s[j + 4] & 63;
    v[4 + j] = (s[j + 8] & 0xF) | ((s[j] >> 6) << 4);
    v[12 + j] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
  }
  __m512 dd = _mm512_cvtph_ps(_mm256_set_m128i(_mm_set1_epi16((short)load16(block + 2)),
                                               _mm_set1_epi16((short)load16(block))));
  _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(v)), dd));
}

/// q4_k, AVX-512: per 32-value sub-block, (d sc) * dot(nibbles, x) with the nibbles widened and
/// converted (a permute for the low one, a shift and a conversion for the high one), and the
/// min term dmin * m * sum(x) once per block from the prepared sums.
LC_AVX512 INLINE void q4_k_row_avx512(const lc_qjob *job, const float *prep, int M, int64_t r,
                                      int64_t b0, int64_t blocks, int accumulate) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 A[LC_SMALL_M], B[LC_SMALL_M];
  __m256 mins[LC_SMALL_M];
  for (int i = 0; i < M; i++) A[i] = B[i] = _mm512_setzero_ps(), mins[i] = _mm256_setzero_ps();
  const uint8_t *row = job->w + r * job->row_bytes + 144 * b0;
#define Q4_K_AVX512(b, acc)                                                                    \
  {                                                                                            \
    const uint8_t *block = row + 144 * (b);                                                    \
    float scales[16];                                                                          \
    q4_k_scales_avx512(block, scales);                                                         \
    __m256 mn = _mm256_loadu_ps(scales + 8);                                                   \
    for (int i = 0; i < M; i++) {                                                              \
      mins[i] = _mm256_fmadd_ps(mn, _mm256_loadu_ps(prep + i * PREP_ROW + PREP_SUMS + 8 * (b)), \
                                mins[i]);                                                      \
    }                                                                                          \
    for (int c = 0; c < 4; c++) {                                                              \
      __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(block + 16 + 32 * c))); \
      __m512i q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(block + 32 + 32 * c))); \
      __m512 lo0 = _mm512_permutexvar_ps(q0, iota), lo1 = _mm512_permutexvar_ps(q1, iota);     \
      __m512 hi0 = _mm512_cvtepi32_ps(_mm512_srli_epi32(q0, 4));                               \
      __m512 hi1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(q1, 4));                               \
      __m512 sl = _mm512_set1_ps(scales[2 * c]), sh = _mm512_set1_ps(scales[2 * c + 1]);       \
      for (int i = 0; i < M; i++) {                                                            \
        const float *x = job->a + i * job->k + 256 * (b0 + (b)) + 64 * c;                      \
        __m512 pl = _mm512_fmadd_ps(lo1, _mm512_loadu_ps(x + 16),                              \
                                    _mm512_mul_ps(lo0, _mm512_loadu_ps(x)));                   \
        __m512 ph = _mm512_fmadd_ps(hi1, _mm512_loadu_ps(x + 48),                              \
                                    _mm512_mul_ps(hi0, _mm512_loadu_ps(x + 32)));              \
        acc[i] = _mm512_fmadd_ps(ph, sh, _mm512_fmadd_ps(pl, sl, acc[i]));                     \
      }                                                                                        \
    }                                                                                          \
  }
  PAIRED(0, blocks, Q4_K_AVX512)
#undef Q4_K_AVX512
  STORE_ROW(M, _mm512_reduce_add_ps(_mm512_add_ps(A[i], B[i])) - hsum256(mins[i]))
}

/// q6_k, AVX-512: 16 values at a time per 16-value sub-block, 6-bit values assembled from the
/// low and high bit planes in 32-bit lanes, minus 32, converted, scaled by d * scale.
LC_AVX512 INLINE void q6_k_row_avx512(const lc_qjob *job, const float *prep, int M, int64_t r,
                                      int64_t b0, int64_t blocks, int accumulate) {
  (void)prep;
  __m512 A[LC_SMALL_M], B[LC_SMALL_M];
  for (int i = 0; i < M; i++) A[i] = B[i] = _mm512_setzero_ps();
  const uint8_t *row = job->w + r * job->row_bytes + 210 * b0;
  const __m512i low4 = _mm512_set1_epi32(0xF), two = _mm512_set1_epi32(3);
  const __m512i bias = _mm512_set1_epi32(32);
#define Q6_K_AVX512(b, acc)                                                                    \
  {                                                                                            \
    const uint8_t *block = row + 210 * (b);                                                    \
    float scales[16];                                                                          \
    __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16((short)load16(block + 208)));                 \
    __m512i s8 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(block + 192)));         \
    _mm512_storeu_ps(scales, _mm512_mul_ps(d, _mm512_cvtepi32_ps(s8)));                         \
    for (int n = 0; n < 2; n++) {                                                              \
      for (int h = 0; h < 2; h++) {                                                            \
        int l = 16 * h;                                                                        \
        const __m128i *low = (const __m128i *)(block + 64 * n + l);                            \
        __m512i lw = _mm512_cvtepu8_epi32(_mm_loadu_si128(low));                               \
        __m512i l2 = _mm512_cvtepu8_epi32(_mm_loadu_si128(low + 2));                           \
        __m512i hw = _mm512_cvtepu8_epi32(                                                     \
            _mm_loadu_si128((const __m128i *)(block + 128 + 32 * n + l)));                     \
        __m512 q[4];                                                                           \
        q[0] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_or_si512(_mm512_and_si512(lw, low4), \
            _mm512_slli_epi32(_mm512_and_si512(hw, two), 4)), bias));                          \
        q[1] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_or_si512(_mm512_and_si512(l2, low4), \
            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hw, 2), two), 4)), bias));    \
        q[2] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_or_si512(_mm512_srli_epi32(lw, 4),   \
            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hw, 4), two), 4)), bias));    \
        q[3] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_or_si512(_mm512_srli_epi32(l2, 4),   \
            _mm512_slli_epi32(_mm512_srli_epi32(hw, 6), 4)), bias));                           \
        for (int i = 0; i < M; i++) {                                                          \
          const float *x = job->a + i * job->k + 256 * (b0 + (b)) + 128 * n + l;               \
          for (int g = 0; g < 4; g++) {                                                        \
            acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(q[g], _mm512_loadu_ps(x + 32 * g)),         \
                                     _mm512_set1_ps(scales[8 * n + h + 2 * g]), acc[i]);        \
          }                                                                                    \
        }                                                                                      \
      }                                                                                        \
    }                                                                                          \
  }
  PAIRED(0, blocks, Q6_K_AVX512)
#undef Q6_K_AVX512
  STORE_ROW(M, _mm512_reduce_add_ps(_mm512_add_ps(A[i], B[i])))
}

// ---- AVX-512 VNNI: int8 activations (llama.cpp's scheme) ----
//
// The activations of each block of 32 become d_x q_x with d_x = max|x| / 127 and q_x = round(x
// / d_x) in int8, so a block's dot product is integer vpdpbusd work and one float scale d_w d_x:
// about half the instructions per weight byte of widening the weights to floats, enough to come
// near memory bandwidth. The price is the activations' rounding: |x - d_x q_x| <= d_x / 2 per
// value, so a result moves by at most sum_b (max|x_b| / 254) sum_j |w_bj|. vpdpbusd multiplies
// unsigned by signed bytes: q4_1's nibbles are the unsigned side (its min term m sum(x) uses the
// exact sum of x); q8_0's weights are flipped to w + 128 and each block's integer sum starts at
// -128 sum(q_x), so it stays exact.
//
// A prepared row holds the chunk's int8 values in its first PREP_BLOCKS * 32 bytes, d_x at float
// PREP_SCALES, sum(x) at PREP_SUMS and (q8_0) each block pair's starting sums, 16 int32 lanes
// with -128 sum(q_x) in lane 0 (first block) and lane 8 (second), at float PREP_BIAS. q4_1 stores each group of four
// blocks a-d as [a0-15 b0-15 c0-15 d0-15 | a16-31 b16-31 c16-31 d16-31], the order in which one
// dword permute lays out the blocks' nibble bytes (q4_1 blocks are 5 dwords: header, 16 bytes).
#define PREP_SCALES (PREP_BLOCKS * 8)
#define PREP_BIAS (PREP_BLOCKS * 16)
#define LC_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

/// Quantizes blocks [b0, b0 + blocks) of every activation row (`quads`: q4_1's order).
LC_VNNI INLINE void int8_prepare(const lc_qjob *job, float *prep, int64_t b0, int64_t blocks,
                                 int quads) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int i = 0; i < job->m; i++) {
    float *p = prep + i * PREP_ROW;
    int8_t *q = (int8_t *)p;
    for (int64_t b = 0; b < blocks; b++) {
      const float *x = job->a + i * job->k + 32 * (b0 + b);
      __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
      __m512 magnitude = _mm512_max_ps(_mm512_andnot_ps(sign, x0), _mm512_andnot_ps(sign, x1));
      float amax = _mm512_reduce_max_ps(magnitude);
      float d = amax / 127.0f, inverse = amax > 0 ? 127.0f / amax : 0.0f;
      __m512 scale = _mm512_set1_ps(inverse);
      __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, scale));
      __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, scale));
      int8_t *lo = quads ? q + 128 * (b / 4) + 16 * (b % 4) : q + 32 * b;
      int8_t *hi = quads ? lo + 64 : lo + 16;
      _mm_storeu_si128((__m128i *)lo, _mm512_cvtsepi32_epi8(q0));
      _mm_storeu_si128((__m128i *)hi, _mm512_cvtsepi32_epi8(q1));
      p[PREP_SCALES + b] = d;
      p[PREP_SUMS + b] = _mm512_reduce_add_ps(_mm512_add_ps(x0, x1));
      if (!quads) {
        int32_t *bias = (int32_t *)(p + PREP_BIAS) + 16 * (b / 2);
        if (b % 2 == 0) _mm512_storeu_si512(bias, _mm512_setzero_si512());
        bias[8 * (b % 2)] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
      }
    }
  }
}

LC_VNNI static void q4_1_int8_prepare(const lc_qjob *job, float *prep, int64_t b0,
                                      int64_t blocks) {
  int8_prepare(job, prep, b0, blocks, 1);
}

LC_VNNI static void q8_0_int8_prepare(const lc_qjob *job, float *prep, int64_t b0,
                                      int64_t blocks) {
  int8_prepare(job, prep, b0, blocks, 0);
}

// ---- q4_1 and q8_0 interleaved by 16 rows, x int8 activations ----
//
// The stored layouts spend most of the VNNI kernels' instructions gathering each block's bytes and
// spreading one block's scale over the lanes that hold it, and end every row with a horizontal
// sum. Packed once at load, a group of 16 rows puts row j in dword lane j instead, per block of
// 32 values: q4_1 as 16 f16 d, 16 f16 m, then four 64-byte chunks, chunk c's byte 4j + t holding
// row j's value 8c + t in its low nibble and 8c + 4 + t in its high one; q8_0 as 16 f16 d, then
// eight 64-byte chunks, chunk c's byte 4j + t holding row j's value 4c + t flipped to w + 128.
// A chunk is one vpdpbusd per nibble (the high ones masked in place, so 16 times their value)
// against four activations broadcast, for 16 rows at once; a block's scales (and q4_1's
// minimums) are one vector each, and the 16 results are stored as one. The int8 activations and
// their per-block d_x, sum(x) and -128 sum(q_x) are those of the stored-layout paths; only the
// order of the float sums differs.

// f32-accurate activations for the interleaved kernels: each value of a block of 32 as three int8
// digits, x ~ d_x (q0 + q1 / 254 + q2 / 254^2) with d_x = max|x| / 127 (q0 as on the int8 path,
// q1 and q2 the rounded remainders, each within [-127, 127]). Per value the error is at most
// d_x / (2 * 254^2) ~ 2^-24 max|x| of its block (plus 2^-23 |x| from rounding d_x and its
// inverse): block floating point with 24 bits against the block's largest value, so a value
// 1000 times smaller than it keeps ~14 bits (f32 keeps 24 for every value). A block's dot moves
// by at most ~2^-24 max|x_b| sum|w_b|, at three vpdpbusd per weight chunk instead of the float
// conversions of the stored-layout kernels.
// A prepared row holds, per block b of the chunk, digit j of value v at byte 96 b + 32 j + v,
// d_x at float PREP_DIGIT_SCALES + b, (q8_0) -128 sum(q_j) at int32 PREP_DIGIT_BIAS + 3 b + j,
// and sum(x) at float PREP_SUMS + b.
#define PREP_DIGIT_SCALES (PREP_BLOCKS * 24)
#define PREP_DIGIT_BIAS (PREP_BLOCKS * 25)
#define DIGIT_BASE 254.0f

LC_VNNI static void digits_prepare(const lc_qjob *job, float *prep, int64_t b0, int64_t blocks) {
  const __m512 sign = _mm512_set1_ps(-0.0f), base = _mm512_set1_ps(DIGIT_BASE);
  for (int i = 0; i < job->m; i++) {
    float *p = prep + i * PREP_ROW;
    int32_t *bias = (int32_t *)(p + PREP_DIGIT_BIAS);
    for (int64_t b = 0; b < blocks; b++) {
      const float *x = job->a + i * job->k + 32 * (b0 + b);
      __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
      __m512 magnitude = _mm512_max_ps(_mm512_andnot_ps(sign, x0), _mm512_andnot_ps(sign, x1));
      float amax = _mm512_reduce_max_ps(magnitude);
      float inverse = amax > 0 ? 127.0f / amax : 0.0f;
      __m512 t0 = _mm512_mul_ps(x0, _mm512_set1_ps(inverse));
      __m512 t1 = _mm512_mul_ps(x1, _mm512_set1_ps(inverse));
      int8_t *q = (int8_t *)p + 96 * b;
      for (int j = 0; j < 3; j++) {
        // Rounded to nearest; the remainder t - q is exact and |t - q| <= 1/2.
        __m512i q0 = _mm512_cvtps_epi32(t0), q1 = _mm512_cvtps_epi32(t1);
        _mm_storeu_si128((__m128i *)(q + 32 * j), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(q + 32 * j + 16), _mm512_cvtsepi32_epi8(q1));
        bias[3 * b + j] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        t0 = _mm512_mul_ps(_mm512_sub_ps(t0, _mm512_cvtepi32_ps(q0)), base);
        t1 = _mm512_mul_ps(_mm512_sub_ps(t1, _mm512_cvtepi32_ps(q1)), base);
      }
      p[PREP_DIGIT_SCALES + b] = amax / 127.0f;
      p[PREP_SUMS + b] = _mm512_reduce_add_ps(_mm512_add_ps(x0, x1));
    }
  }
}

/// The digits' integer dots as one float per row: q0 + (q1 + q2 / 254) / 254.
LC_VNNI INLINE __m512 combine_digits(const __m512i *dot, int digits) {
  __m512 value = _mm512_cvtepi32_ps(dot[0]);
  if (digits == 1) return value;
  const __m512 step = _mm512_set1_ps(1.0f / DIGIT_BASE);
  __m512 rest = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[2]), step, _mm512_cvtepi32_ps(dot[1]));
  return _mm512_fmadd_ps(rest, step, value);
}

/// One q4_1 block of a group against one activation row's `digits` digit arrays (8 dwords
/// apart): the dot of each of the 16 rows, before the block's scale.
LC_VNNI INLINE __m512 q4_1x_block(const uint8_t *chunks, const int32_t *x, int digits) {
  const __m512i low = _mm512_set1_epi8(0x0F), high = _mm512_set1_epi8((char)0xF0);
  __m512i lo[3], hi[3];
  for (int j = 0; j < digits; j++) lo[j] = hi[j] = _mm512_setzero_si512();
  for (int c = 0; c < 4; c++) {
    __m512i bytes = _mm512_loadu_si512(chunks + 64 * c);
    __m512i l = _mm512_and_si512(bytes, low), h = _mm512_and_si512(bytes, high);
    for (int j = 0; j < digits; j++) {
      lo[j] = _mm512_dpbusd_epi32(lo[j], l, _mm512_set1_epi32(x[8 * j + 2 * c]));
      hi[j] = _mm512_dpbusd_epi32(hi[j], h, _mm512_set1_epi32(x[8 * j + 2 * c + 1]));
    }
  }
  // hi is 16 times the high nibbles' dot (at most 4 * 4 * 240 * 128 in magnitude): exact.
  for (int j = 0; j < digits; j++) lo[j] = _mm512_add_epi32(lo[j], _mm512_srai_epi32(hi[j], 4));
  return combine_digits(lo, digits);
}

/// One q8_0 block of a group from its starting sums -128 sum(q_j) (`bias[j]`); one digit runs as
/// two chains of four chunks, three as three of eight.
LC_VNNI INLINE __m512 q8_0x_block(const uint8_t *chunks, const int32_t *x, const int32_t *bias,
                                  int digits) {
  __m512i dot[3];
  if (digits == 1) {
    __m512i even = _mm512_set1_epi32(bias[0]), odd = _mm512_setzero_si512();
    for (int c = 0; c < 8; c += 2) {
      even = _mm512_dpbusd_epi32(even, _mm512_loadu_si512(chunks + 64 * c), _mm512_set1_epi32(x[c]));
      odd = _mm512_dpbusd_epi32(odd, _mm512_loadu_si512(chunks + 64 * c + 64),
                                _mm512_set1_epi32(x[c + 1]));
    }
    dot[0] = _mm512_add_epi32(even, odd);
    return combine_digits(dot, 1);
  }
  for (int j = 0; j < 3; j++) dot[j] = _mm512_set1_epi32(bias[j]);
  for (int c = 0; c < 8; c++) {
    __m512i w = _mm512_loadu_si512(chunks + 64 * c);
    for (int j = 0; j < 3; j++) dot[j] = _mm512_dpbusd_epi32(dot[j], w, _mm512_set1_epi32(x[8 * j + c]));
  }
  return combine_digits(dot, 3);
}

/// Rows [r0, r1) (whole groups of 16 from r0; r1 may cut the last) of an interleaved weight,
/// blocks [b0, b0 + blocks), on activations prepared as `digits` int8 digits (1: the int8 path's
/// layout; 3: digits_prepare's). Each activation row walks the group's blocks on its own: a
/// group's span of blocks is read from DRAM by the first and from L1/L2 by the rest.
LC_VNNI INLINE void rows_interleaved(const lc_qjob *job, const float *prep, int64_t r0, int64_t r1,
                                     int64_t b0, int64_t blocks, int accumulate, int dtype,
                                     int digits) {
  int64_t total = job->k / 32, size = interleaved_block_bytes(dtype);
  int scales = digits == 1 ? PREP_SCALES : PREP_DIGIT_SCALES;
  for (int64_t r = r0; r < r1; r += 16) {
    const uint8_t *group = job->w + size * ((r / 16) * total + b0);
    __mmask16 live = r1 - r >= 16 ? 0xFFFF : (__mmask16)((1u << (r1 - r)) - 1);
    for (int i = 0; i < job->m; i++) {
      const float *p = prep + i * PREP_ROW;
      const int32_t *x = (const int32_t *)p;
      const int32_t *bias = (const int32_t *)(p + (digits == 1 ? PREP_BIAS : PREP_DIGIT_BIAS));
      // Two sets of accumulators (even and odd blocks) hide the FMA latency.
      __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      __m512 mins[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *block = group + size * b;
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)block));
        __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(p[scales + b]));
        __m512 dot;
        if (dtype == LC_Q4_1) {
          __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(block + 32)));
          mins[b & 1] = _mm512_fmadd_ps(m, _mm512_set1_ps(p[PREP_SUMS + b]), mins[b & 1]);
          dot = q4_1x_block(block + 64, x + 8 * digits * b, digits);
        } else {
          const int32_t *start = digits == 1 ? bias + 16 * (b / 2) + 8 * (b % 2) : bias + 3 * b;
          dot = q8_0x_block(block + 32, x + 8 * digits * b, start, digits);
        }
        acc[b & 1] = _mm512_fmadd_ps(dot, scale, acc[b & 1]);
      }
      __m512 v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(mins[0], mins[1]));
      float *o = job->out + i * job->n + r;
      if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, o));
      _mm512_mask_storeu_ps(o, live, v);
    }
  }
}

#define ROWS_INTERLEAVED(name, dtype, digits)                                                  \
  LC_VNNI static void name(const lc_qjob *job, const float *prep, int64_t r0, int64_t r1,      \
                           int64_t b0, int64_t blocks, int accumulate) {                       \
    rows_interleaved(job, prep, r0, r1, b0, blocks, accumulate, dtype, digits);                \
  }
ROWS_INTERLEAVED(rows_q4_1x_int8, LC_Q4_1, 1)
ROWS_INTERLEAVED(rows_q8_0x_int8, LC_Q8_0, 1)
ROWS_INTERLEAVED(rows_q4_1x_digits, LC_Q4_1, 3)
ROWS_INTERLEAVED(rows_q8_0x_digits, LC_Q8_0, 3)
#undef ROWS_INTERLEAVED

// ---- the interleaved layouts on AVX2 (no VNNI) ----
//
// The same packed form and the same int8 digits of the activations as above, with vpdpbusd's
// work done by vpmaddubsw (u8 x s8 pairs into int16) and vpmaddwd (int16 pairs into int32). A
// 256-bit half of each 64-byte chunk holds 8 rows, so a group of 16 is walked as two halves of 8.
// q4_1: a pair of nibble products is at most 2 * 15 * 127 = 3810, so one block's eight pairs (4
// chunks, low and high nibbles) add up in int16 (<= 30480) before one vpmaddwd. q8_0: the weights
// are flipped back to signed; |w| against x carrying w's sign (llama.cpp's trick) keeps a pair
// within 2 * 128 * 127, but two pairs would not fit int16, so each chunk has its own vpmaddwd.

LC_AVX2 INLINE float hmax256(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// digits_prepare (three digits) and the int8 path's layout (one) on AVX2: digit j of block b at
/// bytes 32 (digits b + j), d_x at PREP_DIGIT_SCALES (PREP_SCALES for one digit), sum(x) at
/// PREP_SUMS. The digits equal the AVX-512 preparation's (the same f32 operations and rounding);
/// the starting sums of the VNNI q8_0 kernels are not needed here.
LC_AVX2 INLINE void digits_prepare_avx2(const lc_qjob *job, float *prep, int64_t b0,
                                        int64_t blocks, int digits) {
  const __m256 sign = _mm256_set1_ps(-0.0f), base = _mm256_set1_ps(DIGIT_BASE);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int scales = digits == 1 ? PREP_SCALES : PREP_DIGIT_SCALES;
  for (int i = 0; i < job->m; i++) {
    float *p = prep + i * PREP_ROW;
    for (int64_t b = 0; b < blocks; b++) {
      const float *x = job->a + i * job->k + 32 * (b0 + b);
      __m256 v[4], t[4];
      for (int l = 0; l < 4; l++) v[l] = _mm256_loadu_ps(x + 8 * l);
      __m256 magnitude = _mm256_max_ps(
          _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
          _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
      float amax = hmax256(magnitude);
      float inverse = amax > 0 ? 127.0f / amax : 0.0f;
      for (int l = 0; l < 4; l++) t[l] = _mm256_mul_ps(v[l], _mm256_set1_ps(inverse));
      int8_t *q = (int8_t *)p + 32 * digits * b;
      for (int j = 0; j < digits; j++) {
        // Rounded to nearest; the remainder t - q is exact and |t - q| <= 1/2.
        __m256i n[4];
        for (int l = 0; l < 4; l++) n[l] = _mm256_cvtps_epi32(t[l]);
        __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(n[0], n[1]),
                                           _mm256_packs_epi32(n[2], n[3]));
        _mm256_storeu_si256((__m256i *)(q + 32 * j), _mm256_permutevar8x32_epi32(bytes, order));
        for (int l = 0; l < 4; l++) {
          t[l] = _mm256_mul_ps(_mm256_sub_ps(t[l], _mm256_cvtepi32_ps(n[l])), base);
        }
      }
      p[scales + b] = amax / 127.0f;
      p[PREP_SUMS + b] =
          hsum256(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3])));
    }
  }
}

LC_AVX2 static void int8_prepare_avx2(const lc_qjob *job, float *prep, int64_t b0,
                                      int64_t blocks) {
  digits_prepare_avx2(job, prep, b0, blocks, 1);
}

LC_AVX2 static void digits3_prepare_avx2(const lc_qjob *job, float *prep, int64_t b0,
                                         int64_t blocks) {
  digits_prepare_avx2(job, prep, b0, blocks, 3);
}

/// The digits' integer dots as one float per row: q0 + (q1 + q2 / 254) / 254.
LC_AVX2 INLINE __m256 combine_digits_avx2(const __m256i *dot, int digits) {
  __m256 value = _mm256_cvtepi32_ps(dot[0]);
  if (digits == 1) return value;
  const __m256 step = _mm256_set1_ps(1.0f / DIGIT_BASE);
  __m256 rest = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[2]), step, _mm256_cvtepi32_ps(dot[1]));
  return _mm256_fmadd_ps(rest, step, value);
}

// The kernels below work on two "slots" at a time (or one): a slot is one activation row against
// one half (8 rows) of a group. Two activation rows on one half share each chunk's decoding;
// one activation row takes both halves in one pass, so the whole 64-byte chunks are consumed as
// they stream in (a pass per half left DRAM idle while the second half read its group from L1/L2:
// 0.3-0.5 of the read rate on 576 x 1536, whose groups are 15 KB). A slot's arithmetic is the
// same in every pairing, so results do not depend on M.

/// One q4_1 block of 8 rows per slot (`chunks[s]`: the slot's half's first chunk, 64 bytes apart;
/// `shared`: both slots read the same half) against each slot's digit arrays (`x[s]`, digits 8
/// dwords apart): each slot's dot before the block's scale, into dot[s].
LC_AVX2 INLINE void q4_1x_block_avx2(const uint8_t *const *chunks, const int32_t *const *x,
                                     int slots, int shared, int digits, __m256 *dot) {
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256i sums[2][3];
  for (int c = 0; c < 4; c++) {
    __m256i lo, hi;
    for (int s = 0; s < slots; s++) {
      if (s == 0 || !shared) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(chunks[s] + 64 * c));
        lo = _mm256_and_si256(bytes, low);
        hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
      }
      for (int j = 0; j < digits; j++) {
        __m256i l = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(x[s][8 * j + 2 * c]));
        __m256i h = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(x[s][8 * j + 2 * c + 1]));
        __m256i both = _mm256_add_epi16(l, h);
        sums[s][j] = c == 0 ? both : _mm256_add_epi16(sums[s][j], both);
      }
    }
  }
  for (int s = 0; s < slots; s++) {
    __m256i total[3];
    for (int j = 0; j < digits; j++) total[j] = _mm256_madd_epi16(sums[s][j], ones);
    dot[s] = combine_digits_avx2(total, digits);
  }
}

/// One q8_0 block of 8 rows per slot (`chunks` as above, eight of them).
LC_AVX2 INLINE void q8_0x_block_avx2(const uint8_t *const *chunks, const int32_t *const *x,
                                     int slots, int shared, int digits, __m256 *dot) {
  const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
  __m256i totals[2][3];
  for (int c = 0; c < 8; c++) {
    __m256i w, magnitude;
    for (int s = 0; s < slots; s++) {
      if (s == 0 || !shared) {
        w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(chunks[s] + 64 * c)), flip);
        magnitude = _mm256_abs_epi8(w);  // -128 stays 0x80: 128 as the unsigned operand
      }
      for (int j = 0; j < digits; j++) {
        __m256i signed_x = _mm256_sign_epi8(_mm256_set1_epi32(x[s][8 * j + c]), w);
        __m256i pairs = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, signed_x), ones);
        totals[s][j] = c == 0 ? pairs : _mm256_add_epi32(totals[s][j], pairs);
      }
    }
  }
  for (int s = 0; s < slots; s++) dot[s] = combine_digits_avx2(totals[s], digits);
}

/// Slots (activation row row[s], half half[s] of the group) over the chunk's blocks; stores
/// each slot's 8 results (at out row row[s], columns r + 8 half[s]) where mask[s] is set.
LC_AVX2 INLINE void slots_avx2(const lc_qjob *job, const float *prep, int slots, int shared,
                               const int *row, const int *half, const __m256i *mask,
                               const uint8_t *group, int64_t r, int64_t blocks, int accumulate,
                               int dtype, int digits) {
  int64_t size = interleaved_block_bytes(dtype);
  int scales = digits == 1 ? PREP_SCALES : PREP_DIGIT_SCALES;
  const float *p[2];
  const int32_t *x[2];
  const uint8_t *chunks[2];
  // Two sets of accumulators per slot (even and odd blocks) hide the FMA latency.
  __m256 acc[2][2], mins[2][2];
  for (int s = 0; s < slots; s++) {
    p[s] = prep + row[s] * PREP_ROW;
    acc[s][0] = acc[s][1] = mins[s][0] = mins[s][1] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < blocks; b++) {
    const uint8_t *block = group + size * b;
    __m256 dot[2];
    for (int s = 0; s < slots; s++) {
      x[s] = (const int32_t *)p[s] + 8 * digits * b;
      chunks[s] = block + (dtype == LC_Q4_1 ? 64 : 32) + 32 * half[s];
    }
    if (dtype == LC_Q4_1) {
      for (int s = 0; s < slots; s++) {
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + 32 + 16 * half[s])));
        mins[s][b & 1] = _mm256_fmadd_ps(m, _mm256_set1_ps(p[s][PREP_SUMS + b]), mins[s][b & 1]);
      }
      q4_1x_block_avx2(chunks, x, slots, shared, digits, dot);
    } else {
      q8_0x_block_avx2(chunks, x, slots, shared, digits, dot);
    }
    for (int s = 0; s < slots; s++) {
      __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + 16 * half[s])));
      __m256 scale = _mm256_mul_ps(d, _mm256_set1_ps(p[s][scales + b]));
      acc[s][b & 1] = _mm256_fmadd_ps(dot[s], scale, acc[s][b & 1]);
    }
  }
  for (int s = 0; s < slots; s++) {
    __m256 v = _mm256_add_ps(_mm256_add_ps(acc[s][0], acc[s][1]),
                             _mm256_add_ps(mins[s][0], mins[s][1]));
    float *o = job->out + row[s] * job->n + r + 8 * half[s];
    if (accumulate) v = _mm256_add_ps(v, _mm256_maskload_ps(o, mask[s]));
    _mm256_maskstore_ps(o, mask[s], v);
  }
}

/// rows_interleaved on AVX2: rows [r0, r1) (r0 a multiple of 16) a group at a time; activation
/// rows two at a time per half, a last one over both halves at once.
LC_AVX2 INLINE void rows_interleaved_avx2(const lc_qjob *job, const float *prep, int64_t r0,
                                          int64_t r1, int64_t b0, int64_t blocks,
                                          int accumulate, int dtype, int digits) {
  int64_t total = job->k / 32, size = interleaved_block_bytes(dtype);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t r = r0; r < r1; r += 16) {
    const uint8_t *group = job->w + size * ((r / 16) * total + b0);
    int halves = r1 - r > 8 ? 2 : 1;
    __m256i mask[2];
    for (int h = 0; h < halves; h++) {
      int64_t live = r1 - r - 8 * h;
      mask[h] = _mm256_cmpgt_epi32(_mm256_set1_epi32(live >= 8 ? 8 : (int)live), lanes);
    }
    int i = 0;
    for (; i + 2 <= job->m; i += 2) {
      for (int h = 0; h < halves; h++) {
        int row[2] = {i, i + 1}, half[2] = {h, h};
        __m256i masks[2] = {mask[h], mask[h]};
        slots_avx2(job, prep, 2, 1, row, half, masks, group, r, blocks, accumulate, dtype, digits);
      }
    }
    if (i < job->m) {
      int row[2] = {i, i}, half[2] = {0, 1};
      if (halves == 2) {
        slots_avx2(job, prep, 2, 0, row, half, mask, group, r, blocks, accumulate, dtype, digits);
      } else {
        slots_avx2(job, prep, 1, 0, row, half, mask, group, r, blocks, accumulate, dtype, digits);
      }
    }
  }
}

#define ROWS_INTERLEAVED_AVX2(name, dtype, digits)                                             \
  LC_AVX2 static void name(const lc_qjob *job, const float *prep, int64_t r0, int64_t r1,      \
                           int64_t b0, int64_t blocks, int accumulate) {                       \
    rows_interleaved_avx2(job, prep, r0, r1, b0, blocks, accumulate, dtype, digits);           \
  }
ROWS_INTERLEAVED_AVX2(rows_q4_1x_int8_avx2, LC_Q4_1, 1)
ROWS_INTERLEAVED_AVX2(rows_q8_0x_int8_avx2, LC_Q8_0, 1)
ROWS_INTERLEAVED_AVX2(rows_q4_1x_digits_avx2, LC_Q4_1, 3)
ROWS_INTERLEAVED_AVX2(rows_q8_0x_digits_avx2, LC_Q8_0, 3)
#undef ROWS_INTERLEAVED_AVX2

/// For block pair j of a group of 16: lanes 0-7 take scale 2j, lanes 8-15 scale 2j + 1.
static const int32_t pair_lanes[8][16] = {
#define PAIR(j) {2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j + 1, 2 * j + 1, \
                 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1}
    PAIR(0), PAIR(1), PAIR(2), PAIR(3), PAIR(4), PAIR(5), PAIR(6), PAIR(7)
#undef PAIR
};

/// For block quad j of a group of 16: lanes 4t..4t+3 take scale 4j + t.
static const int32_t quad_lanes[4][16] = {
#define QUAD(j) {4 * j, 4 * j, 4 * j, 4 * j, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j + 1, \
                 4 * j + 2, 4 * j + 2, 4 * j + 2, 4 * j + 2, 4 * j + 3, 4 * j + 3, 4 * j + 3, 4 * j + 3}
    QUAD(0), QUAD(1), QUAD(2), QUAD(3)
#undef QUAD
};

/// The nibble bytes of up to four q4_1 blocks: dwords 1-4, 6-9, 11-14, 16-19 of 80 bytes.
static const int32_t quad_nibble_dwords[16] = {1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19};

/// q4_1 x int8 activations, four blocks at a time: two masked loads and one permute gather their
/// 64 nibble bytes; per activation row two vpdpbusd (low nibbles, then high), one conversion and
/// one FMA with the lanes' d_w d_x; the min term m sum(x) once per 16 blocks.
LC_VNNI INLINE void q4_1_row_vnni(const lc_qjob *job, const float *prep, int M, int64_t r,
                                  int64_t b0, const q4_1_groups *g, int accumulate) {
  __m512 A[LC_SMALL_M], B[LC_SMALL_M], mins[LC_SMALL_M];
  for (int i = 0; i < M; i++) A[i] = B[i] = mins[i] = _mm512_setzero_ps();
  const uint8_t *row = job->w + r * job->row_bytes + 20 * b0;
  const __m512i gather = _mm512_loadu_si512(quad_nibble_dwords), low = _mm512_set1_epi8(0x0F);
  __m512 d, m, next_d, next_m;
  q4_1_decode_group(row, g, 0, &d, &m);
  for (int64_t group = 0; group < g->groups; group++) {
    int64_t c0 = 16 * group;
    int count = group + 1 < g->groups ? 16 : g->tail.count;
    __mmask16 live = (__mmask16)((1u << count) - 1);
    __m512 scales[LC_SMALL_M];
    q4_1_decode_group(row, g, group + 1, &next_d, &next_m);
    for (int i = 0; i < M; i++) {
      const float *p = prep + i * PREP_ROW;
      scales[i] = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(live, p + PREP_SCALES + c0));
      mins[i] = _mm512_fmadd_ps(m, _mm512_maskz_loadu_ps(live, p + PREP_SUMS + c0), mins[i]);
    }
    for (int j = 0; 4 * j < count; j++) {
      // Dwords past the last block load as zero, so absent blocks' nibbles are zero.
      int words = 5 * (count - 4 * j < 4 ? count - 4 * j : 4);
      const uint8_t *quad = row + 20 * (c0 + 4 * j);
      __m512i z0 = _mm512_maskz_loadu_epi32(words >= 16 ? 0xFFFF : (__mmask16)((1u << words) - 1),
                                            quad);
      __m512i z1 = _mm512_maskz_loadu_epi32(words > 16 ? (__mmask16)((1u << (words - 16)) - 1) : 0,
                                            quad + 64);
      __m512i bytes = _mm512_permutex2var_epi32(z0, gather, z1);
      __m512i lo = _mm512_and_si512(bytes, low);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low);
      __m512i lanes = _mm512_loadu_si512(quad_lanes[j]);
      for (int i = 0; i < M; i++) {
        const uint8_t *x = (const uint8_t *)(prep + i * PREP_ROW) + 128 * ((c0 + 4 * j) / 4);
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(x));
        dot = _mm512_dpbusd_epi32(dot, hi, _mm512_loadu_si512(x + 64));
        __m512 scale = _mm512_permutexvar_ps(lanes, scales[i]);
        if (j & 1) {
          B[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, B[i]);
        } else {
          A[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, A[i]);
        }
      }
    }
    d = next_d, m = next_m;
  }
  STORE_ROW(M, _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(A[i], B[i]), mins[i])))
}

/// q8_0 x int8 activations, two blocks at a time: vpdpbusd(w + 128, q_x) from -128 sum(q_x).
LC_VNNI INLINE void q8_0_row_vnni(const lc_qjob *job, const float *prep, int M, int64_t r,
                                  int64_t b0, int64_t blocks, int accumulate) {
  __m512 A[LC_SMALL_M], B[LC_SMALL_M];
  for (int i = 0; i < M; i++) A[i] = B[i] = _mm512_setzero_ps();
  const uint8_t *row = job->w + r * job->row_bytes + 34 * b0;
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  for (int64_t c0 = 0; c0 < blocks; c0 += 16) {
    int count = blocks - c0 < 16 ? (int)(blocks - c0) : 16;
    __mmask16 live = (__mmask16)((1u << count) - 1);
    float dw[16] = {0};
    for (int j = 0; j < count; j++) dw[j] = _cvtsh_ss(load16(row + 34 * (c0 + j)));
    __m512 d = _mm512_loadu_ps(dw), scales[LC_SMALL_M];
    for (int i = 0; i < M; i++) {
      scales[i] = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(live, prep + i * PREP_ROW + PREP_SCALES + c0));
    }
    for (int j = 0; 2 * j < count; j++) {
      const uint8_t *block = row + 34 * (c0 + 2 * j);
      __m256i wa = _mm256_loadu_si256((const __m256i *)(block + 2));
      // A lone last block pairs with zero bytes: flipped to 128 against whatever q_x follows, so
      // its lanes are masked off below instead.
      __m256i wb = 2 * j + 1 < count ? _mm256_loadu_si256((const __m256i *)(block + 36))
                                     : _mm256_setzero_si256();
      __m512i w = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(wa), wb, 1), flip);
      __mmask16 keep = 2 * j + 1 < count ? 0xFFFF : 0x00FF;
      __m512i lanes = _mm512_loadu_si512(pair_lanes[j]);
      for (int i = 0; i < M; i++) {
        const float *p = prep + i * PREP_ROW;
        const uint8_t *x = (const uint8_t *)p + 32 * (c0 + 2 * j);
        __m512i start = _mm512_loadu_si512((const int32_t *)(p + PREP_BIAS) + 8 * (c0 + 2 * j));
        __m512i dot = _mm512_dpbusd_epi32(start, w, _mm512_loadu_si512(x));
        __m512 scale = _mm512_maskz_permutexvar_ps(keep, lanes, scales[i]);
        if (j & 1) {
          B[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, B[i]);
        } else {
          A[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, A[i]);
        }
      }
    }
  }
  STORE_ROW(M, _mm512_reduce_add_ps(_mm512_add_ps(A[i], B[i])))
}

/// Instantiates a rows function of a row kernel for every m <= LC_SMALL_M (constant M lets the
/// compiler keep the accumulators in registers).
/// (q4_1's kernels take the row's groups of 16 blocks, worked out once, in place of `blocks`.)
#define ROWS_CASE(row_fn, M, span)                                                             \
  case M:                                                                                      \
    for (int64_t r = r0; r < r1; r++) row_fn(job, prep, M, r, b0, span, accumulate);           \
    break;
#define ROWS_SWITCH(row_fn, span)                                                              \
  switch (job->m) {                                                                            \
    ROWS_CASE(row_fn, 1, span)                                                                 \
    ROWS_CASE(row_fn, 2, span)                                                                 \
    ROWS_CASE(row_fn, 3, span)                                                                 \
    ROWS_CASE(row_fn, 4, span)                                                                 \
    ROWS_CASE(row_fn, 5, span)                                                                 \
    ROWS_CASE(row_fn, 6, span)                                                                 \
    ROWS_CASE(row_fn, 7, span)                                                                 \
    ROWS_CASE(row_fn, 8, span)                                                                 \
  }
#define ROWS_FN(name, row_fn, target)                                                          \
  target static void name(const lc_qjob *job, const float *prep, int64_t r0, int64_t r1,      \
                          int64_t b0, int64_t blocks, int accumulate) {                        \
    ROWS_SWITCH(row_fn, blocks)                                                                \
  }
#define ROWS_FN_Q4_1(name, row_fn, target)                                                     \
  target static void name(const lc_qjob *job, const float *prep, int64_t r0, int64_t r1,      \
                          int64_t b0, int64_t blocks, int accumulate) {                        \
    q4_1_groups groups = q4_1_groups_of(blocks);                                               \
    ROWS_SWITCH(row_fn, &groups)                                                               \
  }

ROWS_FN(rows_q8_0_avx2, q8_0_row_avx2, LC_AVX2)
ROWS_FN(rows_q4_1_avx2, q4_1_row_avx2, LC_AVX2)
ROWS_FN(rows_elementwise_avx2, elementwise_row_avx2, LC_AVX2)
ROWS_FN(rows_q8_0_avx512, q8_0_row_avx512, LC_AVX512)
ROWS_FN_Q4_1(rows_q4_1_avx512, q4_1_row_avx512, LC_AVX512)
ROWS_FN(rows_elementwise_avx512, elementwise_row_avx512, LC_AVX512)
ROWS_FN(rows_q4_k_avx512, q4_k_row_avx512, LC_AVX512)
ROWS_FN(rows_q6_k_avx512, q6_k_row_avx512, LC_AVX512)
ROWS_FN_Q4_1(rows_q4_1_vnni, q4_1_row_vnni, LC_VNNI)
ROWS_FN(rows_q8_0_vnni, q8_0_row_vnni, LC_VNNI)
#endif

/// The kernel of `path` for dtype on a CPU with `features` (lc_cpu_features bits; 0 when that
/// path has none), and its activation preparation.
static lc_qrows_fn path_kernel_on(int features, int path, int dtype, lc_qprep_fn *prepare) {
  *prepare = plain_prepare;
  if (path == LC_QUANT_PORTABLE) return rows_portable;
#if defined(__x86_64__)
  if (path == LC_QUANT_VNNI && (features & 6) == 6) {
    if (dtype == LC_Q4_1) *prepare = q4_1_int8_prepare;
    if (dtype == LC_Q4_1) return rows_q4_1_vnni;
    if (dtype == LC_Q8_0) *prepare = q8_0_int8_prepare;
    if (dtype == LC_Q8_0) return rows_q8_0_vnni;
  }
  if (path == LC_QUANT_AVX512 && (features & 2)) {
    if (dtype == LC_Q4_1) *prepare = q4_1_prepare;
    if (dtype == LC_Q8_0) return rows_q8_0_avx512;
    if (dtype == LC_Q4_1) return rows_q4_1_avx512;
    if (dtype == LC_F32 || dtype == LC_F16 || dtype == LC_BF16) return rows_elementwise_avx512;
    if (dtype == LC_Q4_K) *prepare = sums32_prepare;
    if (dtype == LC_Q4_K) return rows_q4_k_avx512;
    if (dtype == LC_Q6_K) return rows_q6_k_avx512;
  }
  if (path == LC_QUANT_AVX2 && (features & 1)) {
    if (dtype == LC_Q4_1) *prepare = q4_1_prepare;
    if (dtype == LC_Q8_0) return rows_q8_0_avx2;
    if (dtype == LC_Q4_1) return rows_q4_1_avx2;
    if (dtype == LC_F32 || dtype == LC_F16 || dtype == LC_BF16) return rows_elementwise_avx2;
  }
#else
  (void)features, (void)dtype;
#endif
  return 0;
}

/// The kernel of `path` for dtype on this CPU.
static lc_qrows_fn path_kernel(int path, int dtype, lc_qprep_fn *prepare) {
  return path_kernel_on(lc_cpu_features(), path, dtype, prepare);
}

int lc_quant_has_kernel(int path, int dtype) {
  lc_qprep_fn prepare;
  return path_kernel_on(1 | 2 | 4, path, dtype, &prepare) != 0;
}

int lc_quant_best_path(int dtype) {
  lc_qprep_fn prepare;
  for (int path = LC_QUANT_AVX512; path > LC_QUANT_PORTABLE; path--) {
    if (path_kernel(path, dtype, &prepare)) return path;
  }
  return LC_QUANT_PORTABLE;
}

extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

/// Splits the rows (in runs of 16, so no two threads write one cache line of out) across the
/// threads; each thread prepares its own activations per k-chunk (cheap beside the weights).
static void run_job(const lc_qjob *job, lc_qrows_fn kernel, lc_qprep_fn prepare) {
  // Kernel blocks: 32 values for q8_0 / q4_1, storage blocks for k-quants, one unit of the whole
  // row for elementwise types.
  int size = block_size(job->dtype);
  int64_t blocks = size == 1 ? 1 : job->k / (size == 256 ? 256 : 32);
  int64_t chunk = kernel == rows_portable        ? blocks
                  : size == 32                    ? PREP_BLOCKS
                  : job->dtype == LC_Q4_K         ? PREP_BLOCKS / 8
                                                  : blocks;
  int64_t tiles = (job->n + 15) / 16;
  int parallel = job->n * job->k * job->m > LC_PARALLEL_MIN && tiles > 1;
#pragma omp parallel if (parallel)
  {
    int t = omp_get_thread_num(), count = omp_get_num_threads();
    int64_t per = (tiles + count - 1) / count;
    int64_t r0 = 16 * t * per, r1 = 16 * (t + 1) * per < job->n ? 16 * (t + 1) * per : job->n;
    if (r0 < r1) {
      float prep[LC_SMALL_M * PREP_ROW];
      for (int64_t b0 = 0; b0 < blocks; b0 += chunk) {
        int64_t count_blocks = blocks - b0 < chunk ? blocks - b0 : chunk;
        prepare(job, prep, b0, count_blocks);
        kernel(job, prep, r0, r1, b0, count_blocks, b0 > 0);
      }
    }
  }
}

/// out [m, n] = a [m, k] x w^T by `kernel` on w (stored or interleaved), LC_SMALL_M activation
/// rows per pass over w; zeros when k is 0.
static void run_rows(int dtype, lc_qrows_fn kernel, lc_qprep_fn prepare, float *out,
                     const float *a, const void *w, int64_t m, int64_t n, int64_t k) {
  if (k == 0) {
    for (int64_t i = 0; i < m * n; i++) out[i] = 0;
    return;
  }
  for (int64_t i0 = 0; i0 < m; i0 += LC_SMALL_M) {
    lc_qjob job = {dtype, m - i0 < LC_SMALL_M ? (int)(m - i0) : LC_SMALL_M, a + i0 * k,
                   (const uint8_t *)w, out + i0 * n, n, k, lc_row_bytes(dtype, k)};
    run_job(&job, kernel, prepare);
  }
}

int lc_matmul_quantized_path(int path, int dtype, float *out, const float *a, const void *w,
                             int64_t m, int64_t n, int64_t k) {
  if (path == LC_QUANT_AUTO) path = lc_quant_best_path(dtype);
  lc_qprep_fn prepare;
  lc_qrows_fn kernel = path_kernel(path, dtype, &prepare);
  if (!kernel) return 0;
  run_rows(dtype, kernel, prepare, out, a, w, m, n, k);
  return 1;
}

int lc_matmul_interleaved_path(int path, int dtype, int digits, float *out, const float *a,
                               const void *packed, int64_t m, int64_t n, int64_t k) {
#if defined(__x86_64__)
  int features = lc_cpu_features();
  if (path == LC_QUANT_AUTO) path = (features & 6) == 6 ? LC_QUANT_VNNI : LC_QUANT_AVX2;
  if (dtype != LC_Q4_1 && dtype != LC_Q8_0) return 0;
  if (digits != 1 && digits != 3) return 0;
  lc_qrows_fn kernel;
  lc_qprep_fn prepare;
  if (path == LC_QUANT_VNNI && (features & 6) == 6) {
    kernel = dtype == LC_Q4_1 ? (digits == 1 ? rows_q4_1x_int8 : rows_q4_1x_digits)
                              : (digits == 1 ? rows_q8_0x_int8 : rows_q8_0x_digits);
    // One digit: q8_0's int8 preparation serves both (q4_1 ignores its starting sums).
    prepare = digits == 3 ? digits_prepare : q8_0_int8_prepare;
  } else if (path == LC_QUANT_AVX2 && (features & 1)) {
    kernel = dtype == LC_Q4_1 ? (digits == 1 ? rows_q4_1x_int8_avx2 : rows_q4_1x_digits_avx2)
                              : (digits == 1 ? rows_q8_0x_int8_avx2 : rows_q8_0x_digits_avx2);
    prepare = digits == 3 ? digits3_prepare_avx2 : int8_prepare_avx2;
  } else {
    return 0;
  }
  run_rows(dtype, kernel, prepare, out, a, packed, m, n, k);
  return 1;
#else
  (void)path, (void)dtype, (void)digits, (void)out, (void)a, (void)packed, (void)m, (void)n;
  (void)k;
  return 0;
#endif
}

int lc_matmul_interleaved(int dtype, int digits, float *out, const float *a, const void *packed,
                          int64_t m, int64_t n, int64_t k) {
  return lc_matmul_interleaved_path(LC_QUANT_AUTO, dtype, digits, out, a, packed, m, n, k);
}

void lc_matmul_quantized_small(int dtype, float *out, const float *a, const void *w, int64_t m,
                               int64_t n, int64_t k) {
  lc_matmul_quantized_path(LC_QUANT_AUTO, dtype, out, a, w, m, n, k);
}

void lc_matvec_quantized(int dtype, float *y, const float *x, const void *w, int64_t n, int64_t k) {
  lc_matmul_quantized_path(LC_QUANT_AUTO, dtype, y, x, w, 1, n, k);
}
