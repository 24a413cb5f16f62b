// Fused attention and its gradient: per (batch, head) a score block through cblas_sgemm, the
// mask and the softmax in place, and the value product through cblas_sgemm, so no [B, H, S, T]
// tensor and no copy of grouped key/value heads is ever formed.
//
// Query rows are taken in blocks of 32, and each block's products, softmax and gradient run over
// only the keys its rows see: up to the last key slot any of them sees (a KV cache filled up to
// there; a causal mask's diagonal). A decoding step costs in proportion to the tokens so far, not
// to the compiled context, and a causal 128 x 128 block computes 5/8 of its scores. The slots past
// a block's last contribute exact zeros, but OpenBLAS picks its kernel by the shape of a call
// (small-matrix, direct or packed, and the packed one splits long sums), so the same inputs in a
// cache of another size may round differently (up to ~5e-6 relative, measured); the same call
// always gives the same bits.
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "internal.h"

extern int omp_get_thread_num(void);

/// Turns the scores [rows, stride] of query rows s0.. (already scaled) into probabilities in place
/// over keys 0..<live:
/// masked keys get 0, rows with no visible key are all 0; keys live..<stride get 0 (the caller
/// passes the `live` of `live_keys`, so they are masked for every row).
///
/// The exponentials are a loop of their own (it vectorises) and are summed in key order after,
/// so every value and the sum are the ones of one fused scalar loop, bit for bit.
LC_CLONES static void masked_softmax(float *p, const int32_t *mask, const int64_t *strides,
                                     int64_t b, int64_t h, int64_t s0, int64_t rows, int64_t live,
                                     int64_t stride) {
  for (int64_t s = 0; s < rows; s++) {
    float *row = p + s * stride;
    const int32_t *seen = mask + b * strides[0] + h * strides[1] + (s0 + s) * strides[2];
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

/// One past the last key slot that any query row r0..<r1 of (b, h) sees; 0 when none sees any.
///
/// Rows are scanned from the last (the one that sees most under a causal mask), each only down to
/// the bound found so far, so a causal or prefix mask costs about `keys` reads in all.
static int64_t live_keys(const int32_t *mask, const int64_t *strides, int64_t b, int64_t h,
                         int64_t r0, int64_t r1, int64_t keys) {
  int64_t live = 0;
  for (int64_t s = r1 - 1; s >= r0 && live < keys; s--) {
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

/// P = softmax(mask ? scale q_h k_g^T : -inf) for query rows s0..<s0 + rows of one (b, h) into
/// p [rows, stride], where none of those rows sees a key at or after `live`.
static void probabilities(float *p, const float *qh, const float *kg, const int32_t *mask,
                          const int64_t *strides, int64_t b, int64_t h, int64_t s0, int64_t rows,
                          int64_t stride, int64_t live, int64_t width, float scale) {
  if (live > 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)live, (int)width, scale,
                qh, (int)width, kg, (int)width, 0.0f, p, (int)stride);
  }
  masked_softmax(p, mask, strides, b, h, s0, rows, live, stride);
}

/// Query rows per block: each block's products run over only the keys its rows see, so a causal
/// mask over S rows computes about (S/32 + 1) / (2 S/32) of the full score matrix (5/8 at 128).
#define LC_ATTENTION_ROWS 32

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
    for (int64_t r0 = 0; r0 < rows; r0 += LC_ATTENTION_ROWS) {
      int64_t count = rows - r0 < LC_ATTENTION_ROWS ? rows - r0 : LC_ATTENTION_ROWS;
      int64_t live = live_keys(mask, mask_strides, b, h, r0, r0 + count, keys);
      float *pb = p + r0 * keys, *ob = out + (task * rows + r0) * width;
      probabilities(pb, qh + r0 * width, kg, mask, mask_strides, b, h, r0, count, keys, live,
                    width, scale);
      if (live == 0) {
        memset(ob, 0, (size_t)(count * width) * sizeof(float));
        continue;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)count, (int)width, (int)live,
                  1.0f, pb, (int)keys, vg, (int)width, 0.0f, ob, (int)width);
    }
  }
}

/// ds = p (dp - sum_t p dp) per row over keys 0..<live (rows `stride` apart), in place in dp.
LC_CLONES static void softmax_backward(float *dp, const float *p, int64_t rows, int64_t live,
                                       int64_t stride) {
  for (int64_t s = 0; s < rows; s++) {
    float *d = dp + s * stride;
    const float *pr = p + s * stride;
    float projection = 0.0f;
    for (int64_t t = 0; t < live; t++) projection += pr[t] * d[t];
    for (int64_t t = 0; t < live; t++) d[t] = pr[t] * (d[t] - projection);
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
      for (int64_t r0 = 0; r0 < rows; r0 += LC_ATTENTION_ROWS) {
        int64_t count = rows - r0 < LC_ATTENTION_ROWS ? rows - r0 : LC_ATTENTION_ROWS;
        int64_t live = live_keys(mask, mask_strides, b, h, r0, r0 + count, keys);
        const float *qb = qh + r0 * width, *gb = gh + r0 * width;
        float *pb = p + r0 * keys, *dpb = dp + r0 * keys, *dqb = dq + (head * rows + r0) * width;
        if (live == 0) {
          memset(dqb, 0, (size_t)(count * width) * sizeof(float));
          continue;
        }
        probabilities(pb, qb, kg, mask, mask_strides, b, h, r0, count, keys, live, width, scale);
        // dv += p^T g; dp = g v^T (keys 0..<live: the others see none of these rows).
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)live, (int)width, (int)count,
                    1.0f, pb, (int)keys, gb, (int)width, 1.0f, dvg, (int)width);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)count, (int)live, (int)width,
                    1.0f, gb, (int)width, vg, (int)width, 0.0f, dpb, (int)keys);
        softmax_backward(dpb, pb, count, live, keys);
        // dq = scale ds k; dk += scale ds^T q.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)count, (int)width, (int)live,
                    scale, dpb, (int)keys, kg, (int)width, 0.0f, dqb, (int)width);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)live, (int)width, (int)count,
                    scale, dpb, (int)keys, qb, (int)width, 1.0f, dkg, (int)width);
      }
    }
  }
}
