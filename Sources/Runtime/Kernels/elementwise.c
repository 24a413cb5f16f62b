// Elementwise kernels: unary, binary, compare, select, casts and generators.
#include "lorac_kernels.h"

#include <math.h>
#include <string.h>

#include "internal.h"

// The fused chains compute in place (an operand's block buffer is also the result's), which the
// vectoriser's overlap checks reject; each iteration reads element i before writing it, so
// vectorising is safe when the output is an input or apart from both.
#define LC_SIMD _Pragma("omp simd")

// ---- unary ----------------------------------------------------------------------------------

/// e^x over all of float's range without calls (so loops vectorise; libm's expf is a call per
/// value): lc_exp up to 88, e^(x - 1) e up to 88.72 (where lc_exp's 2^n would overflow), inf
/// past that, NaN for NaN.
static inline float exp_full(float x) {
  float high = lc_exp(x - 1.0f) * 2.71828183f;
  return x > 88.72284f ? INFINITY : x > 88.0f ? high : lc_exp(x);
}

// The switches below name every code of their enum; a new code must be added to them.
_Static_assert(LC_UNARY_COUNT == 13, "unary_f32_range names every lc_unary code");
_Static_assert(LC_BINARY_COUNT == 7, "binary_f32_row names every lc_binary code");
_Static_assert(LC_COMPARE_COUNT == 6, "LC_COMPARE names every lc_compare code");

LC_CLONES static void unary_f32_range(int op, const float *x, float *y, int64_t n) {
  switch (op) {
    case LC_NEG: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = -x[i]; break;
    case LC_ABS: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = fabsf(x[i]); break;
    case LC_EXP: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = exp_full(x[i]); break;
    case LC_LOG: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case LC_SQRT: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]); break;
    case LC_RSQRT: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = 1.0f / sqrtf(x[i]); break;
    case LC_RECIPROCAL: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = 1.0f / x[i]; break;
    case LC_TANH: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]); break;
    case LC_SIGMOID: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + exp_full(-x[i])); break;
    case LC_RELU: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
    case LC_SILU: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + exp_full(-x[i])); break;
    case LC_SIN: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = sinf(x[i]); break;
    case LC_COS: LC_SIMD for (int64_t i = 0; i < n; i++) y[i] = cosf(x[i]); break;
  }
}

void lc_unary_f32(int op, const float *x, float *y, int64_t n) {
  int64_t chunks = (n + LC_CHUNK - 1) / LC_CHUNK;
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t start = c * LC_CHUNK, end = start + LC_CHUNK < n ? start + LC_CHUNK : n;
    unary_f32_range(op, x + start, y + start, end - start);
  }
}

void lc_unary_i32(int op, const int32_t *x, int32_t *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t i = 0; i < n; i++) {
    int32_t v = x[i];
    switch (op) {
      case LC_NEG: y[i] = (int32_t)(0u - (uint32_t)v); break;
      case LC_ABS: y[i] = v < 0 ? (int32_t)(0u - (uint32_t)v) : v; break;
      case LC_RELU: y[i] = v > 0 ? v : 0; break;
      default: y[i] = 0; break;
    }
  }
}

// ---- binary, compare, select over strided views ---------------------------------------------

LC_CLONES static void binary_f32_row(int op, float *o, const float *a, int64_t sa, const float *b,
                                     int64_t sb, int64_t n) {
#define LC_LOOP(expr)                                                             \
  if (sa == 1 && sb == 1) {                                                       \
    LC_SIMD for (int64_t i = 0; i < n; i++) { float x = a[i], y = b[i]; o[i] = (expr); } \
  } else if (sa == 1 && sb == 0) {                                                \
    float y = b[0];                                                               \
    LC_SIMD for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = (expr); }    \
  } else if (sa == 0 && sb == 1) {                                                \
    float x = a[0];                                                               \
    LC_SIMD for (int64_t i = 0; i < n; i++) { float y = b[i]; o[i] = (expr); }    \
  } else {                                                                        \
    for (int64_t i = 0; i < n; i++) { float x = a[i * sa], y = b[i * sb]; o[i] = (expr); } \
  }
  switch (op) {
    case LC_ADD: LC_LOOP(x + y) break;
    case LC_SUB: LC_LOOP(x - y) break;
    case LC_MUL: LC_LOOP(x * y) break;
    case LC_DIV: LC_LOOP(x / y) break;
    case LC_MAX: LC_LOOP(x > y || isnan(x) ? x : y) break;
    case LC_MIN: LC_LOOP(x < y || isnan(x) ? x : y) break;
    case LC_POW: LC_LOOP(powf(x, y)) break;
  }
#undef LC_LOOP
}

static void binary_i32_row(int op, int32_t *o, const int32_t *a, int64_t sa, const int32_t *b,
                           int64_t sb, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    int32_t x = a[i * sa], y = b[i * sb];
    switch (op) {
      case LC_ADD: o[i] = (int32_t)((uint32_t)x + (uint32_t)y); break;
      case LC_SUB: o[i] = (int32_t)((uint32_t)x - (uint32_t)y); break;
      case LC_MUL: o[i] = (int32_t)((uint32_t)x * (uint32_t)y); break;
      case LC_DIV: o[i] = y == 0 ? 0 : (x == INT32_MIN && y == -1) ? INT32_MIN : x / y; break;
      case LC_MAX: o[i] = x > y ? x : y; break;
      case LC_MIN: o[i] = x < y ? x : y; break;
      default: o[i] = 0; break;
    }
  }
}

#define LC_COMPARE(x, y)                   \
  (op == LC_EQ   ? (x) == (y)              \
   : op == LC_NE ? (x) != (y)              \
   : op == LC_LT ? (x) < (y)               \
   : op == LC_LE ? (x) <= (y)              \
   : op == LC_GT ? (x) > (y)               \
                 : (x) >= (y))

void lc_binary_f32(int op, float *out, int rank, const int64_t *shape, const float *a,
                   const int64_t *a_strides, const float *b, const int64_t *b_strides) {
  const int64_t *strides[2] = {a_strides, b_strides};
  lc_view view;
  lc_view_init(&view, rank, shape, 2, strides);
  int64_t tasks = lc_view_tasks(&view);
#pragma omp parallel for schedule(static) if (view.total > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t offsets[2], first, count;
    int64_t o = lc_view_task(&view, t, offsets, &first, &count);
    binary_f32_row(op, out + o, a + offsets[0], view.strides[0][view.rank - 1], b + offsets[1],
                   view.strides[1][view.rank - 1], count);
  }
}

void lc_binary_i32(int op, int32_t *out, int rank, const int64_t *shape, const int32_t *a,
                   const int64_t *a_strides, const int32_t *b, const int64_t *b_strides) {
  const int64_t *strides[2] = {a_strides, b_strides};
  lc_view view;
  lc_view_init(&view, rank, shape, 2, strides);
  int64_t tasks = lc_view_tasks(&view);
#pragma omp parallel for schedule(static) if (view.total > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t offsets[2], first, count;
    int64_t o = lc_view_task(&view, t, offsets, &first, &count);
    binary_i32_row(op, out + o, a + offsets[0], view.strides[0][view.rank - 1], b + offsets[1],
                   view.strides[1][view.rank - 1], count);
  }
}

void lc_compare_f32(int op, int32_t *out, int rank, const int64_t *shape, const float *a,
                    const int64_t *a_strides, const float *b, const int64_t *b_strides) {
  const int64_t *strides[2] = {a_strides, b_strides};
  lc_view view;
  lc_view_init(&view, rank, shape, 2, strides);
  int64_t tasks = lc_view_tasks(&view);
#pragma omp parallel for schedule(static) if (view.total > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t offsets[2], first, count;
    int64_t o = lc_view_task(&view, t, offsets, &first, &count);
    int64_t sa = view.strides[0][view.rank - 1], sb = view.strides[1][view.rank - 1];
    const float *pa = a + offsets[0], *pb = b + offsets[1];
    for (int64_t i = 0; i < count; i++) out[o + i] = LC_COMPARE(pa[i * sa], pb[i * sb]);
  }
}

void lc_compare_i32(int op, int32_t *out, int rank, const int64_t *shape, const int32_t *a,
                    const int64_t *a_strides, const int32_t *b, const int64_t *b_strides) {
  const int64_t *strides[2] = {a_strides, b_strides};
  lc_view view;
  lc_view_init(&view, rank, shape, 2, strides);
  int64_t tasks = lc_view_tasks(&view);
#pragma omp parallel for schedule(static) if (view.total > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t offsets[2], first, count;
    int64_t o = lc_view_task(&view, t, offsets, &first, &count);
    int64_t sa = view.strides[0][view.rank - 1], sb = view.strides[1][view.rank - 1];
    const int32_t *pa = a + offsets[0], *pb = b + offsets[1];
    for (int64_t i = 0; i < count; i++) out[o + i] = LC_COMPARE(pa[i * sa], pb[i * sb]);
  }
}

void lc_select_32(uint32_t *out, int rank, const int64_t *shape, const int32_t *c,
                  const int64_t *c_strides, const uint32_t *a, const int64_t *a_strides,
                  const uint32_t *b, const int64_t *b_strides) {
  const int64_t *strides[3] = {c_strides, a_strides, b_strides};
  lc_view view;
  lc_view_init(&view, rank, shape, 3, strides);
  int64_t tasks = lc_view_tasks(&view);
#pragma omp parallel for schedule(static) if (view.total > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t offsets[3], first, count;
    int64_t o = lc_view_task(&view, t, offsets, &first, &count);
    int64_t sc = view.strides[0][view.rank - 1], sa = view.strides[1][view.rank - 1],
            sb = view.strides[2][view.rank - 1];
    const int32_t *pc = c + offsets[0];
    const uint32_t *pa = a + offsets[1], *pb = b + offsets[2];
    for (int64_t i = 0; i < count; i++) out[o + i] = pc[i * sc] != 0 ? pa[i * sa] : pb[i * sb];
  }
}

// ---- casts and generators -------------------------------------------------------------------

void lc_cast_f32_i32(const float *x, int32_t *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    y[i] = isnan(v) ? 0 : v >= 2147483647.0f ? INT32_MAX : v <= -2147483648.0f ? INT32_MIN : (int32_t)v;
  }
}

void lc_cast_i32_f32(const int32_t *x, float *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t i = 0; i < n; i++) y[i] = (float)x[i];
}

void lc_iota_f32(float *out, int rank, const int64_t *shape, int axis) {
  int64_t inner = 1, total = 1;
  for (int d = axis + 1; d < rank; d++) inner *= shape[d];
  for (int d = 0; d < rank; d++) total *= shape[d];
  for (int64_t i = 0; i < total; i++) out[i] = (float)((i / inner) % shape[axis]);
}

void lc_iota_i32(int32_t *out, int rank, const int64_t *shape, int axis) {
  int64_t inner = 1, total = 1;
  for (int d = axis + 1; d < rank; d++) inner *= shape[d];
  for (int d = 0; d < rank; d++) total *= shape[d];
  for (int64_t i = 0; i < total; i++) out[i] = (int32_t)((i / inner) % shape[axis]);
}

void lc_fill_32(uint32_t *out, uint32_t word, int64_t n) {
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t i = 0; i < n; i++) out[i] = word;
}

// ---- fused elementwise chains ---------------------------------------------------------------

#define LC_EW_BLOCK 256

/// One value on the evaluation stack of a block: its elements and stride (0 for a literal).
typedef struct {
  const float *p;
  int64_t stride;
} lc_ew_value;

void lc_elementwise_f32(float *out, const int32_t *steps, int64_t count,
                        const float *const *inputs, const float *literals, int64_t n) {
  int64_t blocks = (n + LC_EW_BLOCK - 1) / LC_EW_BLOCK;
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t block = 0; block < blocks; block++) {
    int64_t start = block * LC_EW_BLOCK;
    int64_t width = n - start < LC_EW_BLOCK ? n - start : LC_EW_BLOCK;
    // Stack entry d computes into buffer d; the last step writes straight into out.
    float buffers[LC_EW_MAX_DEPTH][LC_EW_BLOCK];
    lc_ew_value stack[LC_EW_MAX_DEPTH];
    int depth = 0;
    for (int64_t s = 0; s < count; s++) {
      int kind = steps[2 * s], argument = steps[2 * s + 1];
      int last = s == count - 1;
      switch (kind) {
        case LC_EW_INPUT:
          stack[depth++] = (lc_ew_value){inputs[argument] + start, 1};
          break;
        case LC_EW_LITERAL:
          stack[depth++] = (lc_ew_value){literals + argument, 0};
          break;
        case LC_EW_UNARY: {
          lc_ew_value x = stack[depth - 1];
          float *o = last ? out + start : buffers[depth - 1];
          if (x.stride == 0) {
            for (int64_t i = 0; i < width; i++) buffers[depth - 1][i] = x.p[0];
            x.p = buffers[depth - 1];
          }
          unary_f32_range(argument, x.p, o, width);
          stack[depth - 1] = (lc_ew_value){o, 1};
          break;
        }
        case LC_EW_BINARY: {
          lc_ew_value a = stack[depth - 2], b = stack[depth - 1];
          float *o = last ? out + start : buffers[depth - 2];
          binary_f32_row(argument, o, a.p, a.stride, b.p, b.stride, width);
          stack[depth - 2] = (lc_ew_value){o, 1};
          depth--;
          break;
        }
      }
    }
    // A program that is a lone operand or literal: copy it.
    if (count > 0 && steps[2 * (count - 1)] <= LC_EW_LITERAL) {
      for (int64_t i = 0; i < width; i++) out[start + i] = stack[0].p[i * stack[0].stride];
    }
  }
}
