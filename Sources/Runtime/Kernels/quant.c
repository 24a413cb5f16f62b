// Storage dtypes: row decoding, and dot products that read quantized blocks directly.
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

// ---- dot products over quantized rows -------------------------------------------------------

/// dot(x, dequant(row)) one decoded block at a time (the reference, and the fallback).
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

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// q8_0: per block, d * dot(x, q) with q widened to floats, 8 lanes at a time.
__attribute__((target("avx2,fma,f16c"))) static float dot_q8_0_avx2(const float *x,
                                                                     const uint8_t *row,
                                                                     int64_t k) {
  __m256 total = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / 32; b++) {
    const uint8_t *block = row + 34 * b;
    const float *xb = x + 32 * b;
    __m256 d = _mm256_set1_ps(_cvtsh_ss(load16(block)));
    __m256 acc = _mm256_setzero_ps();
    for (int j = 0; j < 32; j += 8) {
      __m128i q8 = _mm_loadl_epi64((const __m128i *)(block + 2 + j));
      __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
      acc = _mm256_fmadd_ps(q, _mm256_loadu_ps(xb + j), acc);
    }
    total = _mm256_fmadd_ps(acc, d, total);
  }
  return hsum256(total);
}

/// q4_1: per block, d * dot(x, q) + m * sum(x), nibbles widened to floats.
__attribute__((target("avx2,fma,f16c"))) static float dot_q4_1_avx2(const float *x,
                                                                     const uint8_t *row,
                                                                     int64_t k) {
  __m256 total = _mm256_setzero_ps();
  __m256 mins = _mm256_setzero_ps();
  const __m128i low_mask = _mm_set1_epi8(0xF);
  for (int64_t b = 0; b < k / 32; b++) {
    const uint8_t *block = row + 20 * b;
    const float *xb = x + 32 * b;
    __m128i bytes = _mm_loadu_si128((const __m128i *)(block + 4));
    __m128i low = _mm_and_si128(bytes, low_mask);
    __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_mask);
    __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
    __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
    __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(low));
    __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(low, 8)));
    __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(high));
    __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(high, 8)));
    __m256 acc = _mm256_mul_ps(q0, x0);
    acc = _mm256_fmadd_ps(q1, x1, acc);
    acc = _mm256_fmadd_ps(q2, x2, acc);
    acc = _mm256_fmadd_ps(q3, x3, acc);
    __m256 sum = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
    total = _mm256_fmadd_ps(acc, _mm256_set1_ps(_cvtsh_ss(load16(block))), total);
    mins = _mm256_fmadd_ps(sum, _mm256_set1_ps(_cvtsh_ss(load16(block + 2))), mins);
  }
  return hsum256(_mm256_add_ps(total, mins));
}
#endif

typedef float (*lc_dot_fn)(const float *, const uint8_t *, int64_t);

static lc_dot_fn fast_dot(int dtype) {
#if defined(__x86_64__)
  if (lc_cpu_features() & 1) {
    if (dtype == LC_Q8_0) return dot_q8_0_avx2;
    if (dtype == LC_Q4_1) return dot_q4_1_avx2;
  }
#endif
  (void)dtype;
  return 0;
}

void lc_matvec_quantized_reference(int dtype, float *y, const float *x, const void *w, int64_t n,
                                   int64_t k) {
  int64_t row_bytes = lc_row_bytes(dtype, k);
  for (int64_t r = 0; r < n; r++) y[r] = dot_reference(dtype, x, (const uint8_t *)w + r * row_bytes, k);
}

void lc_matvec_quantized(int dtype, float *y, const float *x, const void *w, int64_t n, int64_t k) {
  int64_t row_bytes = lc_row_bytes(dtype, k);
  lc_dot_fn dot = fast_dot(dtype);
#pragma omp parallel for schedule(static) if (n * k > LC_PARALLEL_MIN)
  for (int64_t r = 0; r < n; r++) {
    const uint8_t *row = (const uint8_t *)w + r * row_bytes;
    y[r] = dot ? dot(x, row, k) : dot_reference(dtype, x, row, k);
  }
}
