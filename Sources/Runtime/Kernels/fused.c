// Fused kernels: RMSNorm, SwiGLU and softmax cross-entropy, each with its gradient. One pass (or
// two, for the row statistics) over memory where the primitive sequences make five to ten.
#include <math.h>
#include <string.h>

#include "internal.h"

// ---- RMSNorm --------------------------------------------------------------------------------

LC_CLONES static void rms_norm_row(float *y, const float *x, const float *w, int64_t d, float eps) {
  float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
  for (int64_t j = 0; j < d; j++) squares += x[j] * x[j];
  float r = 1.0f / sqrtf(squares / (float)d + eps);
  for (int64_t j = 0; j < d; j++) y[j] = x[j] * r * w[j];
}

void lc_rms_norm_f32(float *y, const float *x, const float *w, int64_t rows, int64_t d,
                     float eps) {
#pragma omp parallel for schedule(static) if (rows * d > LC_PARALLEL_MIN)
  for (int64_t row = 0; row < rows; row++) rms_norm_row(y + row * d, x + row * d, w, d, eps);
}

LC_CLONES static void rms_norm_grad_row(float *dx, const float *x, const float *w,
                                        const float *g, int64_t d, float eps) {
  float squares = 0.0f, projection = 0.0f;
#pragma omp simd reduction(+ : squares, projection)
  for (int64_t j = 0; j < d; j++) {
    squares += x[j] * x[j];
    projection += g[j] * w[j] * x[j];
  }
  float r = 1.0f / sqrtf(squares / (float)d + eps);
  // dx = r g w - x r^3 mean(g w x).
  float c = r * r * r * projection / (float)d;
  for (int64_t j = 0; j < d; j++) dx[j] = r * g[j] * w[j] - x[j] * c;
}

void lc_rms_norm_grad_f32(float *dx, const float *x, const float *w, const float *g, int64_t rows,
                          int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (rows * d > LC_PARALLEL_MIN)
  for (int64_t row = 0; row < rows; row++) {
    rms_norm_grad_row(dx + row * d, x + row * d, w, g + row * d, d, eps);
  }
}

// ---- SwiGLU ---------------------------------------------------------------------------------

LC_CLONES static void swiglu_range(float *y, const float *gate, const float *up, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = gate[i] / (1.0f + lc_exp(-gate[i])) * up[i];
}

void lc_swiglu_f32(float *y, const float *gate, const float *up, int64_t n) {
  int64_t chunks = (n + LC_CHUNK - 1) / LC_CHUNK;
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t start = c * LC_CHUNK, end = start + LC_CHUNK < n ? start + LC_CHUNK : n;
    swiglu_range(y + start, gate + start, up + start, end - start);
  }
}

LC_CLONES static void swiglu_grad_range(float *dgate, float *dup, const float *gate,
                                        const float *up, const float *g, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float s = 1.0f / (1.0f + lc_exp(-gate[i]));
    // d silu(a)/da = s (1 + a (1 - s)).
    dgate[i] = g[i] * up[i] * s * (1.0f + gate[i] * (1.0f - s));
    dup[i] = g[i] * gate[i] * s;
  }
}

void lc_swiglu_grad_f32(float *dgate, float *dup, const float *gate, const float *up,
                        const float *g, int64_t n) {
  int64_t chunks = (n + LC_CHUNK - 1) / LC_CHUNK;
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t start = c * LC_CHUNK, end = start + LC_CHUNK < n ? start + LC_CHUNK : n;
    swiglu_grad_range(dgate + start, dup + start, gate + start, up + start, g + start,
                      end - start);
  }
}

// ---- softmax cross-entropy ------------------------------------------------------------------

/// The row's maximum and sum of e^(x - max).
LC_CLONES static void row_statistics(const float *x, int64_t v, float *maximum, float *sum) {
  // Sixteen running maxima (a max reduction does not vectorise when NaNs must be honoured).
  float lanes[16];
  for (int l = 0; l < 16; l++) lanes[l] = -INFINITY;
  int64_t j = 0;
  for (; j + 16 <= v; j += 16) {
    for (int l = 0; l < 16; l++) lanes[l] = x[j + l] > lanes[l] ? x[j + l] : lanes[l];
  }
  float m = -INFINITY;
  for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
  for (; j < v; j++) m = x[j] > m ? x[j] : m;
  // Sixteen running sums in a fixed order, like the maxima: a single float sum over a 49152-word
  // row loses ~1e-4 of the loss, and `omp simd reduction` left the order (and so the result) to
  // the vectoriser, which sanitizer builds skip.
  float sums[16] = {0};
  j = 0;
  for (; j + 16 <= v; j += 16) {
    for (int l = 0; l < 16; l++) sums[l] += lc_exp(x[j + l] - m);
  }
  float s = 0.0f;
  for (int l = 0; l < 16; l++) s += sums[l];
  for (; j < v; j++) s += lc_exp(x[j] - m);
  *maximum = m;
  *sum = s;
}

void lc_cross_entropy_f32(float *loss, const float *logits, const int32_t *targets, int64_t rows,
                          int64_t v) {
#pragma omp parallel for schedule(static) if (rows * v > LC_PARALLEL_MIN)
  for (int64_t row = 0; row < rows; row++) {
    int32_t t = targets[row];
    if (t < 0 || t >= v) {
      loss[row] = 0.0f;
      continue;
    }
    const float *x = logits + row * v;
    float m, s;
    row_statistics(x, v, &m, &s);
    loss[row] = m + logf(s) - x[t];
  }
}

LC_CLONES static void cross_entropy_grad_row(float *out, const float *x, int64_t v, float m,
                                             float scale) {
  for (int64_t j = 0; j < v; j++) out[j] = lc_exp(x[j] - m) * scale;
}

void lc_cross_entropy_grad_f32(float *grad, const float *logits, const int32_t *targets,
                               const float *g, int64_t rows, int64_t v) {
#pragma omp parallel for schedule(static) if (rows * v > LC_PARALLEL_MIN)
  for (int64_t row = 0; row < rows; row++) {
    int32_t t = targets[row];
    float *out = grad + row * v;
    // Ignored rows and rows the loss does not weigh (padding, prompts) need no exponentials.
    if (t < 0 || t >= v || g[row] == 0.0f) {
      memset(out, 0, (size_t)v * sizeof(float));
      continue;
    }
    const float *x = logits + row * v;
    float m, s;
    row_statistics(x, v, &m, &s);
    cross_entropy_grad_row(out, x, v, m, g[row] / s);
    out[t] -= g[row];
  }
}
