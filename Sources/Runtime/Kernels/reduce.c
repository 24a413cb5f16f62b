// Reductions, softmax and rotary embeddings.
#include <math.h>

#include "internal.h"

/// The reduction's shape split into kept and reduced dimensions with their strides in x.
typedef struct {
  int kept_rank, reduced_rank;
  int64_t kept_shape[LC_MAX_RANK], kept_strides[LC_MAX_RANK];
  int64_t reduced_shape[LC_MAX_RANK], reduced_strides[LC_MAX_RANK];
  int64_t outputs, reduced_count;
  int trailing, leading;  // the reduced axes are exactly the innermost / outermost ones
} lc_reduction;

static void reduction_init(lc_reduction *r, int rank, const int64_t *shape, const int *reduced) {
  int64_t stride = 1, strides[LC_MAX_RANK];
  for (int d = rank - 1; d >= 0; d--) {
    strides[d] = stride;
    stride *= shape[d];
  }
  r->kept_rank = r->reduced_rank = 0;
  r->outputs = r->reduced_count = 1;
  int last_kept = -1, first_kept = rank, last_reduced = -1, first_reduced = rank;
  for (int d = 0; d < rank; d++) {
    if (reduced[d]) {
      r->reduced_shape[r->reduced_rank] = shape[d];
      r->reduced_strides[r->reduced_rank++] = strides[d];
      r->reduced_count *= shape[d];
      if (d < first_reduced) first_reduced = d;
      last_reduced = d;
    } else {
      r->kept_shape[r->kept_rank] = shape[d];
      r->kept_strides[r->kept_rank++] = strides[d];
      r->outputs *= shape[d];
      if (d < first_kept) first_kept = d;
      last_kept = d;
    }
  }
  r->trailing = last_kept < first_reduced;
  r->leading = last_reduced < first_kept;
}

static inline int64_t kept_offset(const lc_reduction *r, int64_t o) {
  int64_t offset = 0;
  for (int d = r->kept_rank - 1; d >= 0; d--) {
    offset += (o % r->kept_shape[d]) * r->kept_strides[d];
    o /= r->kept_shape[d];
  }
  return offset;
}

static inline int64_t reduced_offset(const lc_reduction *r, int64_t i) {
  int64_t offset = 0;
  for (int d = r->reduced_rank - 1; d >= 0; d--) {
    offset += (i % r->reduced_shape[d]) * r->reduced_strides[d];
    i /= r->reduced_shape[d];
  }
  return offset;
}

_Static_assert(LC_REDUCE_COUNT == 3, "LC_REDUCE_BODY handles every lc_reduce code");

// One body for f32 (accumulating in double) and i32 (in int64, wrapped to 32 bits at the end).
#define LC_REDUCE_BODY(T, ACC, LOWEST)                                                         \
  lc_reduction r;                                                                              \
  reduction_init(&r, rank, shape, reduced);                                                    \
  int64_t n = r.reduced_count;                                                                 \
  if (r.leading && !r.trailing) {                                                              \
    /* x is [n, outputs]: accumulate rows into columns, parallel over column blocks. */        \
    int64_t blocks = (r.outputs + 255) / 256;                                                  \
    _Pragma("omp parallel for schedule(static) if (n * r.outputs > LC_PARALLEL_MIN)")         \
    for (int64_t b = 0; b < blocks; b++) {                                                     \
      int64_t j0 = b * 256, j1 = j0 + 256 < r.outputs ? j0 + 256 : r.outputs;                   \
      ACC acc[256];                                                                            \
      for (int64_t j = j0; j < j1; j++) acc[j - j0] = op == LC_RMAX ? (ACC)(LOWEST) : 0;        \
      for (int64_t i = 0; i < n; i++) {                                                        \
        const T *row = x + i * r.outputs;                                                      \
        if (op == LC_RMAX) {                                                                   \
          for (int64_t j = j0; j < j1; j++) acc[j - j0] = row[j] > acc[j - j0] || row[j] != row[j] ? row[j] : acc[j - j0]; \
        } else {                                                                               \
          for (int64_t j = j0; j < j1; j++) acc[j - j0] += row[j];                             \
        }                                                                                      \
      }                                                                                        \
      for (int64_t j = j0; j < j1; j++) out[j] = (T)(op == LC_MEAN ? acc[j - j0] / n : acc[j - j0]); \
    }                                                                                          \
    return;                                                                                    \
  }                                                                                            \
  _Pragma("omp parallel for schedule(static) if (n * r.outputs > LC_PARALLEL_MIN)")           \
  for (int64_t o = 0; o < r.outputs; o++) {                                                    \
    const T *base = x + (r.trailing ? o * n : kept_offset(&r, o));                             \
    ACC acc = op == LC_RMAX ? (ACC)(LOWEST) : 0;                                               \
    if (r.trailing) {                                                                          \
      if (op == LC_RMAX) {                                                                     \
        for (int64_t i = 0; i < n; i++) acc = base[i] > acc || base[i] != base[i] ? base[i] : acc; \
      } else {                                                                                 \
        for (int64_t i = 0; i < n; i++) acc += base[i];                                        \
      }                                                                                        \
    } else {                                                                                   \
      for (int64_t i = 0; i < n; i++) {                                                        \
        T v = base[reduced_offset(&r, i)];                                                     \
        if (op == LC_RMAX) acc = v > acc || v != v ? v : acc; else acc += v;                   \
      }                                                                                        \
    }                                                                                          \
    out[o] = (T)(op == LC_MEAN ? acc / n : acc);                                               \
  }

void lc_reduce_f32(int op, float *out, const float *x, int rank, const int64_t *shape,
                   const int *reduced) {
  LC_REDUCE_BODY(float, double, -INFINITY)
}

void lc_reduce_i32(int op, int32_t *out, const int32_t *x, int rank, const int64_t *shape,
                   const int *reduced) {
  // Sums wrap like i32 arithmetic: accumulate in int64 and keep the low 32 bits.
  lc_reduction r;
  reduction_init(&r, rank, shape, reduced);
#pragma omp parallel for schedule(static) if (r.reduced_count * r.outputs > LC_PARALLEL_MIN)
  for (int64_t o = 0; o < r.outputs; o++) {
    int64_t base = kept_offset(&r, o);
    int64_t acc = op == LC_RMAX ? INT32_MIN : 0;
    for (int64_t i = 0; i < r.reduced_count; i++) {
      int64_t v = x[base + reduced_offset(&r, i)];
      acc = op == LC_RMAX ? (v > acc ? v : acc) : acc + v;
    }
    out[o] = (int32_t)(uint32_t)(uint64_t)acc;
  }
}

void lc_softmax_f32(float *out, const float *x, int64_t outer, int64_t n, int64_t inner,
                    int logarithm) {
#pragma omp parallel for schedule(static) if (outer * n * inner > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < outer * inner; t++) {
    int64_t o = t / inner, j = t % inner;
    const float *row = x + o * n * inner + j;
    float *result = out + o * n * inner + j;
    float maximum = -INFINITY;
    for (int64_t i = 0; i < n; i++) maximum = row[i * inner] > maximum ? row[i * inner] : maximum;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += exp((double)row[i * inner] - maximum);
    if (logarithm) {
      double shift = maximum + log(sum);
      for (int64_t i = 0; i < n; i++) result[i * inner] = (float)(row[i * inner] - shift);
    } else {
      for (int64_t i = 0; i < n; i++) {
        result[i * inner] = (float)(exp((double)row[i * inner] - maximum) / sum);
      }
    }
  }
}

/// Slots of the per-thread table of recent positions' cos/sin in `lc_rope_f32` (a batch of
/// sequences repeats positions 0..S-1, so training recomputes each angle once per thread).
#define LC_ROPE_SLOTS 32
#define LC_ROPE_MAX_HALF 64

void lc_rope_f32(float *out, const float *x, const int32_t *positions, int64_t p, int64_t h,
                 int64_t d, double theta, int interleaved) {
  int64_t half = d / 2;
  int cached = half <= LC_ROPE_MAX_HALF;
#pragma omp parallel if (p * h * d > LC_PARALLEL_MIN)
  {
    double frequency[LC_ROPE_MAX_HALF];
    double cosines[LC_ROPE_SLOTS][LC_ROPE_MAX_HALF], sines[LC_ROPE_SLOTS][LC_ROPE_MAX_HALF];
    int64_t slot_position[LC_ROPE_SLOTS];
    for (int slot = 0; slot < LC_ROPE_SLOTS; slot++) slot_position[slot] = INT64_MIN;
    for (int64_t k = 0; cached && k < half; k++) frequency[k] = pow(theta, -2.0 * (double)k / (double)d);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < p; i++) {
      double position = positions[i];
      int slot = (int)((uint32_t)positions[i] % LC_ROPE_SLOTS);
      if (cached && slot_position[slot] != positions[i]) {
        for (int64_t k = 0; k < half; k++) {
          double angle = position * frequency[k];
          cosines[slot][k] = cos(angle);
          sines[slot][k] = sin(angle);
        }
        slot_position[slot] = positions[i];
      }
      for (int64_t k = 0; k < half; k++) {
        double c, s;
        if (cached) {
          c = cosines[slot][k];
          s = sines[slot][k];
        } else {
          double angle = position * pow(theta, -2.0 * (double)k / (double)d);
          c = cos(angle);
          s = sin(angle);
        }
        int64_t first = interleaved ? 2 * k : k, second = interleaved ? 2 * k + 1 : k + half;
        for (int64_t j = 0; j < h; j++) {
          const float *v = x + (i * h + j) * d;
          float *result = out + (i * h + j) * d;
          double a = v[first], b = v[second];
          result[first] = (float)(a * c - b * s);
          result[second] = (float)(a * s + b * c);
        }
      }
    }
  }
}
