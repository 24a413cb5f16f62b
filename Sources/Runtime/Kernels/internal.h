// Shared helpers of the kernel files (not part of the public API).
#ifndef LORAC_KERNELS_INTERNAL_H
#define LORAC_KERNELS_INTERNAL_H

#include <stdint.h>

#include "lorac_kernels.h"

// Hot loops are compiled for AVX-512, AVX2 and baseline x86-64; the loader picks one at run time.
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

#endif
