// Matrix products: f32 through OpenBLAS, storage-typed weights through decoding.
#include <cblas.h>

#include "internal.h"

extern void openblas_set_num_threads(int);

void lc_matmul_f32(float *out, const float *a, const float *w, int64_t batches,
                   const int64_t *a_offsets, const int64_t *w_offsets, int64_t m, int64_t n,
                   int64_t k, int trans_a, int trans_b) {
  int64_t lda = trans_a ? m : k, ldw = trans_b ? k : n;
  enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  enum CBLAS_TRANSPOSE tw = trans_b ? CblasTrans : CblasNoTrans;
  int threads = lc_get_threads();
  if (m == 1 && !trans_a) {
    // A vector times a matrix: sgemv reads the matrix once; sgemm at M = 1 is 2.5-5x slower.
    for (int64_t b = 0; b < batches; b++) {
      // y[n] = sum_k a[k] w[k, n] (w [K,N]) or sum_k a[k] w[n, k] (w [N,K], trans_b).
      cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, (int)(trans_b ? n : k),
                  (int)(trans_b ? k : n), 1.0f, w + w_offsets[b], (int)ldw, a + a_offsets[b], 1,
                  0.0f, out + b * n, 1);
    }
    return;
  }
  if (batches >= 2 * threads && threads > 1 && m * n * k < (1 << 21)) {
    // Many small products: one per thread, each single-threaded in OpenBLAS (no
    // oversubscription: OpenBLAS inside an OpenMP region at full width is 5-15% slower).
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < batches; b++) {
      cblas_sgemm(CblasRowMajor, ta, tw, (int)m, (int)n, (int)k, 1.0f, a + a_offsets[b], (int)lda,
                  w + w_offsets[b], (int)ldw, 0.0f, out + b * m * n, (int)n);
    }
    openblas_set_num_threads(threads);
    return;
  }
  for (int64_t b = 0; b < batches; b++) {
    cblas_sgemm(CblasRowMajor, ta, tw, (int)m, (int)n, (int)k, 1.0f, a + a_offsets[b], (int)lda,
                w + w_offsets[b], (int)ldw, 0.0f, out + b * m * n, (int)n);
  }
}

void lc_matmul_quantized(int dtype, float *out, const float *a, const void *w, int64_t m,
                         int64_t n, int64_t k, float *scratch, int64_t chunk) {
  if (m <= 4 || chunk <= 0) {
    for (int64_t i = 0; i < m; i++) lc_matvec_quantized(dtype, out + i * n, a + i * k, w, n, k);
    return;
  }
  int64_t row_bytes = lc_row_bytes(dtype, k);
  for (int64_t n0 = 0; n0 < n; n0 += chunk) {
    int64_t rows = n - n0 < chunk ? n - n0 : chunk;
    lc_dequantize_rows(dtype, (const uint8_t *)w + n0 * row_bytes, scratch, rows, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)rows, (int)k, 1.0f, a,
                (int)k, scratch, (int)k, 0.0f, out + n0, (int)n);
  }
}

void lc_sgemm_baseline(const float *a, const float *w, float *out, int64_t m, int64_t n,
                       int64_t k, int trans_b) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n,
              (int)k, 1.0f, a, (int)k, w, trans_b ? (int)k : (int)n, 0.0f, out, (int)n);
}

void lc_matmul_quantized_nt(int dtype, float *out, const float *a, const void *w, int64_t m,
                            int64_t rows, int64_t k, float *scratch, int64_t chunk) {
  int64_t row_bytes = lc_row_bytes(dtype, k);
  for (int64_t n0 = 0; n0 < rows; n0 += chunk) {
    int64_t count = rows - n0 < chunk ? rows - n0 : chunk;
    lc_dequantize_rows(dtype, (const uint8_t *)w + n0 * row_bytes, scratch, count, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)k, (int)count, 1.0f,
                a + n0, (int)rows, scratch, (int)k, n0 == 0 ? 0.0f : 1.0f, out, (int)k);
  }
}
