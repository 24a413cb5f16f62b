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
// always gives the same bits. One query row (a decoding step) takes its own path,
// `attention_one_row`.
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

/// Keys per chunk of a one-query-row attention (a decoding step): a fixed count, so the chunks,
/// and the bits of the result, do not depend on the thread count.
#define LC_DECODE_KEYS 128

/// One query row of head h over keys t0..<t1, unnormalised: partial[0..<width] = sum_t
/// e^(s_t - m) v_t, partial[width] = m (the largest visible score; -inf if none is visible),
/// partial[width + 1] = sum_t e^(s_t - m); p holds the chunk's scores meanwhile.
LC_CLONES static void attend_chunk(float *partial, const float *qh, const float *kg,
                                   const float *vg, const int32_t *seen, int64_t step, int64_t t0,
                                   int64_t t1, int64_t width, float scale, float *p) {
  float m = -INFINITY;
  for (int64_t t = t0; t < t1; t++) {
    float score = -INFINITY;
    if (seen[t * step] != 0) {
      const float *key = kg + t * width;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < width; j++) dot += qh[j] * key[j];
      score = scale * dot;
    }
    p[t - t0] = score;
    m = score > m ? score : m;
  }
  float *o = partial, sum = 0.0f;
  for (int64_t j = 0; j < width; j++) o[j] = 0.0f;
  if (m != -INFINITY) {
    for (int64_t t = t0; t < t1; t++) {
      float weight = lc_exp(p[t - t0] - m);
      sum += weight;
      if (weight == 0.0f) continue;
      const float *value = vg + t * width;
#pragma omp simd
      for (int64_t j = 0; j < width; j++) o[j] += weight * value[j];
    }
  }
  partial[width] = m;
  partial[width + 1] = sum;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define LC_AVX512F __attribute__((target("avx512f,avx512dq,avx2,fma")))

/// `attend_chunk` for all `P` query heads of a group at once, on 64-wide heads: each key and value
/// row is loaded once into four registers for every head, and the heads' value sums stay in
/// registers over the chunk (no store-to-load chain through memory per key).
static inline __attribute__((always_inline)) LC_AVX512F void attend_chunk_64(
    const int P, float *const *partials, const float *const *queries,
    const int32_t *const *seen, int64_t step, const float *kg, const float *vg, int64_t t0,
    int64_t t1, float scale) {
  float p[4][LC_DECODE_KEYS], m[4];
  __m512 q[4][4];
  for (int h = 0; h < P; h++) {
    m[h] = -INFINITY;
    for (int i = 0; i < 4; i++) q[h][i] = _mm512_loadu_ps(queries[h] + 16 * i);
  }
  for (int64_t t = t0; t < t1; t++) {
    const float *key = kg + t * 64;
    __m512 k0 = _mm512_loadu_ps(key), k1 = _mm512_loadu_ps(key + 16);
    __m512 k2 = _mm512_loadu_ps(key + 32), k3 = _mm512_loadu_ps(key + 48);
    for (int h = 0; h < P; h++) {
      float score = -INFINITY;
      if (seen[h][t * step] != 0) {
        __m512 low = _mm512_fmadd_ps(q[h][1], k1, _mm512_mul_ps(q[h][0], k0));
        __m512 high = _mm512_fmadd_ps(q[h][3], k3, _mm512_mul_ps(q[h][2], k2));
        score = scale * _mm512_reduce_add_ps(_mm512_add_ps(low, high));
      }
      p[h][t - t0] = score;
      m[h] = score > m[h] ? score : m[h];
    }
  }
  float sums[4];
  __m512 o[4][4];
  for (int h = 0; h < P; h++) {
    sums[h] = 0.0f;
    for (int i = 0; i < 4; i++) o[h][i] = _mm512_setzero_ps();
    for (int64_t t = 0; t < t1 - t0; t++) {
      float weight = m[h] == -INFINITY ? 0.0f : lc_exp(p[h][t] - m[h]);
      p[h][t] = weight;
      sums[h] += weight;
    }
  }
  for (int64_t t = t0; t < t1; t++) {
    const float *value = vg + t * 64;
    __m512 v0 = _mm512_loadu_ps(value), v1 = _mm512_loadu_ps(value + 16);
    __m512 v2 = _mm512_loadu_ps(value + 32), v3 = _mm512_loadu_ps(value + 48);
    for (int h = 0; h < P; h++) {
      __m512 w = _mm512_set1_ps(p[h][t - t0]);
      o[h][0] = _mm512_fmadd_ps(w, v0, o[h][0]);
      o[h][1] = _mm512_fmadd_ps(w, v1, o[h][1]);
      o[h][2] = _mm512_fmadd_ps(w, v2, o[h][2]);
      o[h][3] = _mm512_fmadd_ps(w, v3, o[h][3]);
    }
  }
  for (int h = 0; h < P; h++) {
    for (int i = 0; i < 4; i++) _mm512_storeu_ps(partials[h] + 16 * i, o[h][i]);
    partials[h][64] = m[h];
    partials[h][65] = sums[h];
  }
}

/// One chunk of a group of 1-4 query heads on 64-wide heads.
LC_AVX512F static void attend_group_chunk_64(int P, float *const *partials,
                                             const float *const *queries,
                                             const int32_t *const *seen, int64_t step,
                                             const float *kg, const float *vg, int64_t t0,
                                             int64_t t1, float scale) {
  switch (P) {
    case 1: attend_chunk_64(1, partials, queries, seen, step, kg, vg, t0, t1, scale); break;
    case 2: attend_chunk_64(2, partials, queries, seen, step, kg, vg, t0, t1, scale); break;
    case 3: attend_chunk_64(3, partials, queries, seen, step, kg, vg, t0, t1, scale); break;
    default: attend_chunk_64(4, partials, queries, seen, step, kg, vg, t0, t1, scale); break;
  }
}
#endif

/// The floats of a one-query-row attention's scratch after the `slots` per-thread score buffers
/// (2 T each, the size every attention plans): each (batch, head)'s last visible key (as int64,
/// two floats each), then a partial result (width + 2) per chunk of every (batch, head).
static int64_t one_row_extra(int64_t batch, int64_t heads, int64_t keys, int64_t width) {
  int64_t chunks = (keys + LC_DECODE_KEYS - 1) / LC_DECODE_KEYS;
  return 2 * batch * heads + batch * heads * chunks * (width + 2);
}

int64_t lc_attention_scratch_floats(int64_t batch, int64_t heads, int64_t rows, int64_t keys,
                                    int64_t width, int64_t slots) {
  return slots * 2 * rows * keys + (rows == 1 ? one_row_extra(batch, heads, keys, width) : 0);
}

/// Attention of one query row per (batch, head) (a decoding step), by chunks of keys: each task
/// is one chunk of one key/value head for every query head of its group, so the chunk's keys and
/// values come from memory once and stay in L2 for the group's other heads, and a long cache
/// splits across threads even when there are fewer key/value heads than threads; the chunks of a
/// head are then merged in order (flash-decoding). Its partials live in the planned scratch
/// (`lc_attention_scratch_floats`).
///
/// Measured on a SmolLM2 step at position 1024 (1 thread): per-head cblas_sgemm pairs took 4.3-4.9
/// ms of 8.5-9.2; this, with the cache on huge pages, ~2.8 ms of 6.7 (reading the f32 cache once
/// at 25 GB/s: ~1.9 ms).
static void attention_one_row(float *out, const float *q, const float *k, const float *v,
                              const int32_t *mask, const int64_t *strides, int64_t batch,
                              int64_t heads, int64_t groups, int64_t keys, int64_t width,
                              float scale, float *scratch, int64_t slots, int threads,
                              int path) {
  int64_t per_group = heads / groups, stride = width + 2;
  // The keys each (batch, head) sees end at live[b * heads + h]; heads share a mask row when
  // its head stride is 0 (a decoding step's mask), scanned once per batch row then.
  int64_t *live = (int64_t *)(scratch + slots * 2 * keys), most = 0;
  float *partials = (float *)(live + batch * heads);
  for (int64_t b = 0; b < batch; b++) {
    for (int64_t h = 0; h < heads; h++) {
      int64_t *it = live + b * heads + h;
      *it = h > 0 && strides[1] == 0 ? it[-1] : live_keys(mask, strides, b, h, 0, 1, keys);
      most = *it > most ? *it : most;
    }
  }
  if (most == 0) {
    // No key visible to any head: every row is zeros, as in the general path.
    memset(out, 0, (size_t)(batch * heads * width) * sizeof(float));
    return;
  }
  // Chunks up to the last key any head sees (not the cache's size): the work and the bits are
  // those of the keys in use.
  int64_t chunks = (most + LC_DECODE_KEYS - 1) / LC_DECODE_KEYS;
  int64_t tasks = batch * groups * chunks;
#if defined(__x86_64__)
  int fast = width == 64 && per_group <= 4 && path >= LC_QUANT_AVX512 && (lc_cpu_features() & 2);
#else
  (void)path;
#endif
#pragma omp parallel num_threads(threads) if (tasks > 1)
  {
    float *p = scratch + (int64_t)omp_get_thread_num() * 2 * keys;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; task++) {
      int64_t c = task % chunks, bg = task / chunks, b = bg / groups, g = bg % groups;
      int64_t t0 = c * LC_DECODE_KEYS, t1 = t0 + LC_DECODE_KEYS < keys ? t0 + LC_DECODE_KEYS : keys;
      const float *kg = k + bg * keys * width, *vg = v + bg * keys * width;
#if defined(__x86_64__)
      if (fast) {
        // One pass over the chunk for the whole group, up to the last key any of its heads
        // sees (each head's mask still applies to every key).
        float *group_partials[4];
        const float *queries[4];
        const int32_t *seen[4];
        int64_t end = t0;
        for (int64_t i = 0; i < per_group; i++) {
          int64_t h = g * per_group + i;
          group_partials[i] = partials + ((b * heads + h) * chunks + c) * stride;
          queries[i] = q + (b * heads + h) * width;
          seen[i] = mask + b * strides[0] + h * strides[1];
          end = live[b * heads + h] > end ? live[b * heads + h] : end;
        }
        attend_group_chunk_64((int)per_group, group_partials, queries, seen, strides[3], kg, vg,
                              t0, end < t1 ? end : t1, scale);
        continue;
      }
#endif
      for (int64_t h = g * per_group; h < (g + 1) * per_group; h++) {
        const int32_t *seen = mask + b * strides[0] + h * strides[1];
        float *partial = partials + ((b * heads + h) * chunks + c) * stride;
        int64_t end = live[b * heads + h] < t1 ? live[b * heads + h] : t1;
        attend_chunk(partial, q + (b * heads + h) * width, kg, vg, seen, strides[3], t0,
                     end > t0 ? end : t0, width, scale, p);
      }
    }
#pragma omp for schedule(static)
    for (int64_t head = 0; head < batch * heads; head++) {
      const float *first = partials + head * chunks * stride;
      float m = -INFINITY, sum = 0.0f, *o = out + head * width;
      for (int64_t c = 0; c < chunks; c++) {
        m = first[c * stride + width] > m ? first[c * stride + width] : m;
      }
      for (int64_t j = 0; j < width; j++) o[j] = 0.0f;
      if (m == -INFINITY) continue;
      for (int64_t c = 0; c < chunks; c++) {
        const float *partial = first + c * stride;
        if (partial[width] == -INFINITY) continue;
        float factor = lc_exp(partial[width] - m);
        sum += factor * partial[width + 1];
        for (int64_t j = 0; j < width; j++) o[j] += factor * partial[j];
      }
      float inverse = 1.0f / sum;
      for (int64_t j = 0; j < width; j++) o[j] *= inverse;
    }
  }
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
                      float scale, float *scratch, int64_t slots, int path) {
  int64_t per_group = heads / groups, tasks = batch * heads;
  int threads = slots_to_use(slots);
  if (rows == 1) {
    attention_one_row(out, q, k, v, mask, mask_strides, batch, heads, groups, keys, width, scale,
                      scratch, slots, threads, path);
    return;
  }
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
