// Fused attention and its gradient: per (batch, head) a score block through cblas_sgemm, the
// mask and the softmax in place, and the value product through cblas_sgemm, so no [B, H, S, T]
// tensor and no copy of grouped key/value heads is ever formed.
//
// The forward pass stops at the last key slot any query row of the (batch, head) sees (a KV
// cache filled up to there): both products and the softmax span only those slots, so a decoding
// step costs in proportion to the tokens so far, not to the compiled context. The slots after
// contribute exact zeros, but OpenBLAS picks its kernel by the shape of a call (small-matrix,
// direct or packed, and the packed one splits long sums), so the same inputs in a larger cache
// may round differently (up to ~5e-6 relative, measured); the same call always gives the same bits.
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "internal.h"

extern int omp_get_thread_num(void);

/// The mask value of query row s, key t for (b, h), from strides over [B, H, S, T].
static inline int visible(const int32_t *mask, const int64_t *strides, int64_t b, int64_t h,
                          int64_t s, int64_t t) {
  return mask[b * strides[0] + h * strides[1] + s * strides[2] + t * strides[3]] != 0;
}

/// Turns scores [rows, stride] (already scaled) into probabilities in place over keys 0..<live:
/// masked keys get 0, rows with no visible key are all 0; keys live..<stride get 0 (the caller
/// passes the `live` of `live_keys`, so they are masked for every row).
///
/// The exponentials are a loop of their own (it vectorises) and are summed in key order after,
/// so every value and the sum are the ones of one fused scalar loop, bit for bit.
LC_CLONES static void masked_softmax(float *p, const int32_t *mask, const int64_t *strides,
                                     int64_t b, int64_t h, int64_t rows, int64_t live,
                                     int64_t stride) {
  for (int64_t s = 0; s < rows; s++) {
    float *row = p + s * stride;
    const int32_t *seen = mask + b * strides[0] + h * strides[1] + s * strides[2];
    int64_t step = strides[3];
    float m = -INFINITY;
    for (int64_t t = 0; t < live; t++) {
      float x = seen[t * step] != 0 ? row[t] : -INFINITY;
      row[t] = x;
      m = x > m ? x : m;
    }
    memset(row + live, 0, (size_t)(stride - live) * sizeof(float));
    if (m == -INFINITY) {
      memset(row, 0, (size_t)live * sizeof(float));
      continue;
    }
    for (int64_t t = 0; t < live; t++) row[t] = lc_exp(row[t] - m);
    float sum = 0.0f;
    for (int64_t t = 0; t < live; t++) sum += row[t];
    float inverse = 1.0f / sum;
    for (int64_t t = 0; t < live; t++) row[t] *= inverse;
  }
}

/// One past the last key slot that any query row of (b, h) sees; 0 when no row sees any.
///
/// Rows are scanned from the last (the one that sees most under a causal mask), each only down to
/// the bound found so far, so a causal or prefix mask costs about `keys` reads in all.
static int64_t live_keys(const int32_t *mask, const int64_t *strides, int64_t b, int64_t h,
                         int64_t rows, int64_t keys) {
  int64_t live = 0;
  for (int64_t s = rows - 1; s >= 0 && live < keys; s--) {
    const int32_t *seen = mask + b * strides[0] + h * strides[1] + s * strides[2];
    for (int64_t t = keys - 1; t >= live; t--) {
      if (seen[t * strides[3]] != 0) {
        live = t + 1;
        break;
      }
    }
  }
  return live;
}

/// P = softmax(mask ? scale q_h k_g^T : -inf) for one (b, h) into p [rows, keys], where no row
/// sees a key at or after `live`.
static void probabilities(float *p, const float *qh, const float *kg, const int32_t *mask,
                          const int64_t *strides, int64_t b, int64_t h, int64_t rows,
                          int64_t keys, int64_t live, int64_t width, float scale) {
  if (live > 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)live, (int)width, scale,
                qh, (int)width, kg, (int)width, 0.0f, p, (int)keys);
  }
  masked_softmax(p, mask, strides, b, h, rows, live, keys);
}

static int slots_to_use(int64_t slots) {
  int threads = lc_get_threads();
  return slots < threads ? (int)slots : threads;
}

void lc_attention_f32(float *out, const float *q, const float *k, const float *v,
                      const int32_t *mask, const int64_t *mask_strides, int64_t batch,
                      int64_t heads, int64_t groups, int64_t rows, int64_t keys, int64_t width,
                      float scale, float *scratch, int64_t slots) {
  int64_t per_group = heads / groups, tasks = batch * heads;
  int threads = slots_to_use(slots);
#pragma omp parallel for schedule(static) num_threads(threads) if (tasks > 1)
  for (int64_t task = 0; task < tasks; task++) {
    int64_t b = task / heads, h = task % heads, g = h / per_group;
    float *p = scratch + (int64_t)omp_get_thread_num() * 2 * rows * keys;
    const float *qh = q + task * rows * width;
    const float *kg = k + (b * groups + g) * keys * width;
    const float *vg = v + (b * groups + g) * keys * width;
    int64_t live = live_keys(mask, mask_strides, b, h, rows, keys);
    probabilities(p, qh, kg, mask, mask_strides, b, h, rows, keys, live, width, scale);
    if (live == 0) {
      memset(out + task * rows * width, 0, (size_t)(rows * width) * sizeof(float));
      continue;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)width, (int)live, 1.0f,
                p, (int)keys, vg, (int)width, 0.0f, out + task * rows * width, (int)width);
  }
}

/// ds = p (dp - sum_t p dp) per row, in place in dp.
LC_CLONES static void softmax_backward(float *dp, const float *p, int64_t rows, int64_t keys) {
  for (int64_t s = 0; s < rows; s++) {
    float *d = dp + s * keys;
    const float *pr = p + s * keys;
    float projection = 0.0f;
    for (int64_t t = 0; t < keys; t++) projection += pr[t] * d[t];
    for (int64_t t = 0; t < keys; t++) d[t] = pr[t] * (d[t] - projection);
  }
}

void lc_attention_grad_f32(float *dq, float *dk, float *dv, const float *q, const float *k,
                           const float *v, const int32_t *mask, const int64_t *mask_strides,
                           const float *g, int64_t batch, int64_t heads, int64_t groups,
                           int64_t rows, int64_t keys, int64_t width, float scale, float *scratch,
                           int64_t slots) {
  int64_t per_group = heads / groups, tasks = batch * groups;
  int threads = slots_to_use(slots);
  // One task per key/value head: it owns dk and dv of that head and dq of its query heads.
#pragma omp parallel for schedule(static) num_threads(threads) if (tasks > 1)
  for (int64_t task = 0; task < tasks; task++) {
    int64_t b = task / groups, group = task % groups;
    float *p = scratch + (int64_t)omp_get_thread_num() * 2 * rows * keys;
    float *dp = p + rows * keys;
    const float *kg = k + task * keys * width, *vg = v + task * keys * width;
    float *dkg = dk + task * keys * width, *dvg = dv + task * keys * width;
    memset(dkg, 0, (size_t)(keys * width) * sizeof(float));
    memset(dvg, 0, (size_t)(keys * width) * sizeof(float));
    for (int64_t h = group * per_group; h < (group + 1) * per_group; h++) {
      int64_t head = b * heads + h;
      const float *qh = q + head * rows * width, *gh = g + head * rows * width;
      probabilities(p, qh, kg, mask, mask_strides, b, h, rows, keys, keys, width, scale);
      // dv += p^T g; dp = g v^T.
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)keys, (int)width, (int)rows, 1.0f,
                  p, (int)keys, gh, (int)width, 1.0f, dvg, (int)width);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)keys, (int)width, 1.0f,
                  gh, (int)width, vg, (int)width, 0.0f, dp, (int)keys);
      softmax_backward(dp, p, rows, keys);
      // dq = scale ds k; dk += scale ds^T q.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)width, (int)keys,
                  scale, dp, (int)keys, kg, (int)width, 0.0f, dq + head * rows * width,
                  (int)width);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)keys, (int)width, (int)rows, scale,
                  dp, (int)keys, qh, (int)width, 1.0f, dkg, (int)width);
    }
  }
}
