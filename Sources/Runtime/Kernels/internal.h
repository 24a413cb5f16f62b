// Shared helpers of the kernel files (not part of the public API).
#ifndef LORAC_KERNELS_INTERNAL_H
#define LORAC_KERNELS_INTERNAL_H

#include <stdint.h>

#include "lorac_kernels.h"

// Hot loops are compiled for AVX-512, AVX2 and baseline x86-64; the loader picks one at run time.
// Not under ThreadSanitizer: clang instruments the clones' ifunc resolvers, which the loader runs
// before TSan is initialised, so every binary crashed at startup (the loops are the same source
// in every clone, so TSan checks them as well in their baseline form).
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LC_NO_CLONES
#endif
#endif
#if defined(__x86_64__) && !defined(LC_NO_CLONES)
#define LC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LC_CLONES
#endif

// Elements per parallel task, and the size below which a loop stays on one thread.
#define LC_CHUNK 4096
#define LC_PARALLEL_MIN 32768

/// An output index space with up to 3 strided operands, simplified: size-1 dimensions dropped and
/// dimensions merged where every operand is contiguous across them.
typedef struct {
  int rank;
  int operands;
  int64_t shape[LC_MAX_RANK];
  int64_t strides[3][LC_MAX_RANK];
  int64_t total;
  int64_t chunks_per_row;
} lc_view;

static inline void lc_view_init(lc_view *view, int rank, const int64_t *shape, int operands,
                                const int64_t *const *strides) {
  view->operands = operands;
  view->rank = 0;
  view->total = 1;
  for (int d = 0; d < rank; d++) {
    view->total *= shape[d];
    if (shape[d] == 1) continue;
    int r = view->rank;
    int merge = r > 0;
    for (int k = 0; k < operands && merge; k++) {
      merge = view->strides[k][r - 1] == strides[k][d] * shape[d];
    }
    if (merge) {
      view->shape[r - 1] *= shape[d];
      for (int k = 0; k < operands; k++) view->strides[k][r - 1] = strides[k][d];
    } else {
      view->shape[r] = shape[d];
      for (int k = 0; k < operands; k++) view->strides[k][r] = strides[k][d];
      view->rank = r + 1;
    }
  }
  if (view->rank == 0) {
    view->rank = 1;
    view->shape[0] = 1;
    for (int k = 0; k < operands; k++) view->strides[k][0] = 0;
  }
  int64_t inner = view->shape[view->rank - 1];
  view->chunks_per_row = (inner + LC_CHUNK - 1) / LC_CHUNK;
}

/// The number of tasks: rows (all but the innermost dimension) times chunks of a row.
static inline int64_t lc_view_tasks(const lc_view *view) {
  return view->total / view->shape[view->rank - 1] * view->chunks_per_row;
}

/// For task `t`: each operand's element offset, the first inner index and the count; returns the
/// output offset (the output is dense).
static inline int64_t lc_view_task(const lc_view *view, int64_t t, int64_t *offsets,
                                   int64_t *first, int64_t *count) {
  int64_t inner = view->shape[view->rank - 1];
  int64_t row = t / view->chunks_per_row;
  *first = (t % view->chunks_per_row) * LC_CHUNK;
  *count = inner - *first < LC_CHUNK ? inner - *first : LC_CHUNK;
  for (int k = 0; k < view->operands; k++) offsets[k] = *first * view->strides[k][view->rank - 1];
  int64_t rest = row;
  for (int d = view->rank - 2; d >= 0; d--) {
    int64_t index = rest % view->shape[d];
    rest /= view->shape[d];
    for (int k = 0; k < view->operands; k++) offsets[k] += index * view->strides[k][d];
  }
  return row * inner + *first;
}

/// e^x without branches or calls, so loops over it vectorise (Cephes' expf polynomial, ~1 ulp):
/// x = n ln2 + r, |r| <= ln2/2, e^x = 2^n e^r. Inputs below -87.33 (e^x under FLT_MIN, and -inf)
/// give 0; inputs above 88 give e^88 (callers pass x <= 0, or the argument of a sigmoid, where
/// that is exact to float precision).
static inline float lc_exp(float x) {
  float clamped = x > 88.0f ? 88.0f : x;
  clamped = clamped < -87.33654f ? -87.33654f : clamped;
  // Round-to-nearest by the 1.5 * 2^23 trick: the integer lands in the low mantissa bits.
  union { float f; int32_t i; } shifter = {.f = clamped * 1.44269504088896341f + 12582912.0f};
  float n = shifter.f - 12582912.0f;
  int32_t exponent = shifter.i - 0x4B400000;
  float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union { int32_t i; float f; } scale = {.i = (exponent + 127) << 23};
  return x < -87.33654f ? 0.0f : p * scale.f;
}

#endif
