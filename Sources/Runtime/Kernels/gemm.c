// Matrix products: f32 through OpenBLAS, storage-typed weights through decoding.
#include <cblas.h>

#include "internal.h"

extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

/// C[M,N] = alpha op(A) op(B) + beta C (row-major) on every thread: the columns of C (or its rows,
/// when N is narrow) are split into one slice per thread, each a single-threaded cblas_sgemm.
void lc_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc) {
  enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  int threads = lc_get_threads();
  if (threads == 1 || m * n * k < (1 << 18)) {
    cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb,
                beta, c, (int)ldc);
    return;
  }
  int split_rows = n < 64 * threads && m >= n;
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), count = omp_get_num_threads();
    if (split_rows) {
      int64_t per = (m + count - 1) / count, r0 = t * per, r1 = r0 + per < m ? r0 + per : m;
      if (r0 < r1) {
        const float *a_slice = trans_a ? a + r0 : a + r0 * lda;
        cblas_sgemm(CblasRowMajor, ta, tb, (int)(r1 - r0), (int)n, (int)k, alpha, a_slice,
                    (int)lda, b, (int)ldb, beta, c + r0 * ldc, (int)ldc);
      }
    } else {
      // Slices of whole 16-column groups keep the kernel's vector tiles full.
      int64_t groups = (n + 15) / 16, per = (groups + count - 1) / count;
      int64_t c0 = t * per * 16, c1 = (t + 1) * per * 16 < n ? (t + 1) * per * 16 : n;
      if (c0 < c1) {
        const float *b_slice = trans_b ? b + c0 * ldb : b + c0;
        cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)(c1 - c0), (int)k, alpha, a, (int)lda,
                    b_slice, (int)ldb, beta, c + c0, (int)ldc);
      }
    }
  }
}

void lc_matmul_f32(float *out, const float *a, const float *w, int64_t batches,
                   const int64_t *a_offsets, const int64_t *w_offsets, int64_t m, int64_t n,
                   int64_t k, int trans_a, int trans_b, int path) {
  int64_t lda = trans_a ? m : k, ldw = trans_b ? k : n;
  enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  enum CBLAS_TRANSPOSE tw = trans_b ? CblasTrans : CblasNoTrans;
  if (m <= 8 && !trans_a && trans_b && path > LC_QUANT_PORTABLE) {
    // Few rows against w [N, K] (decoding on f32 weights): the hand-written row kernel reads w
    // once for all rows at close to memory bandwidth, where sgemv reaches about half of it.
    for (int64_t b = 0; b < batches; b++) {
      lc_matmul_quantized_path(path, LC_F32, out + b * m * n, a + a_offsets[b], w + w_offsets[b],
                               m, n, k);
    }
    return;
  }
  if (m == 1 && !trans_a) {
    // A vector times a matrix: sgemv reads the matrix once; sgemm at M = 1 is 2.5-5x slower.
    // Split the outputs across threads, each a single-threaded sgemv.
    for (int64_t b = 0; b < batches; b++) {
      const float *x = a + a_offsets[b], *matrix = w + w_offsets[b];
      float *y = out + b * n;
      if (trans_b) {
        // y[j] = sum_k x[k] w[j, k]: rows of w split across threads.
#pragma omp parallel for schedule(static) if (n * k > (1 << 16))
        for (int64_t j0 = 0; j0 < n; j0 += 256) {
          int64_t rows = n - j0 < 256 ? n - j0 : 256;
          cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)k, 1.0f, matrix + j0 * ldw,
                      (int)ldw, x, 1, 0.0f, y + j0, 1);
        }
      } else {
        // y[j] = sum_k x[k] w[k, j]: columns of w split across threads.
#pragma omp parallel for schedule(static) if (n * k > (1 << 16))
        for (int64_t j0 = 0; j0 < n; j0 += 256) {
          int64_t columns = n - j0 < 256 ? n - j0 : 256;
          cblas_sgemv(CblasRowMajor, CblasTrans, (int)k, (int)columns, 1.0f, matrix + j0, (int)ldw,
                      x, 1, 0.0f, y + j0, 1);
        }
      }
    }
    return;
  }
  if (batches >= lc_get_threads() && m * n * k < (1 << 21)) {
    // Many small products: one per thread.
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < batches; b++) {
      cblas_sgemm(CblasRowMajor, ta, tw, (int)m, (int)n, (int)k, 1.0f, a + a_offsets[b], (int)lda,
                  w + w_offsets[b], (int)ldw, 0.0f, out + b * m * n, (int)n);
    }
    return;
  }
  for (int64_t b = 0; b < batches; b++) {
    lc_sgemm(trans_a, trans_b, m, n, k, 1.0f, a + a_offsets[b], lda, w + w_offsets[b], ldw, 0.0f,
             out + b * m * n, n);
  }
}

void lc_matmul_quantized(int path, int dtype, float *out, const float *a, const void *w,
                         int64_t m, int64_t n, int64_t k, float *scratch, int64_t chunk) {
  if (m <= 8 || chunk <= 0) {
    // Few rows (decoding): one pass over the blocks serves every row, on `path`.
    lc_matmul_quantized_path(path, dtype, out, a, w, m, n, k);
    return;
  }
  int64_t row_bytes = lc_row_bytes(dtype, k);
  for (int64_t n0 = 0; n0 < n; n0 += chunk) {
    int64_t rows = n - n0 < chunk ? n - n0 : chunk;
    lc_dequantize_rows(dtype, (const uint8_t *)w + n0 * row_bytes, scratch, rows, k);
    lc_sgemm(0, 1, m, rows, k, 1.0f, a, k, scratch, k, 0.0f, out + n0, n);
  }
}

extern void openblas_set_num_threads(int);

void lc_sgemm_baseline(const float *a, const float *w, float *out, int64_t m, int64_t n,
                       int64_t k, int trans_b) {
  // The baseline is OpenBLAS's own threading at the same thread count.
  openblas_set_num_threads(lc_get_threads());
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n,
              (int)k, 1.0f, a, (int)k, w, trans_b ? (int)k : (int)n, 0.0f, out, (int)n);
  openblas_set_num_threads(1);
}

void lc_matmul_quantized_nt(int dtype, float *out, const float *a, const void *w, int64_t m,
                            int64_t rows, int64_t k, float *scratch, int64_t chunk) {
  int64_t row_bytes = lc_row_bytes(dtype, k);
  for (int64_t n0 = 0; n0 < rows; n0 += chunk) {
    int64_t count = rows - n0 < chunk ? rows - n0 : chunk;
    lc_dequantize_rows(dtype, (const uint8_t *)w + n0 * row_bytes, scratch, count, k);
    lc_sgemm(0, 0, m, k, count, 1.0f, a + n0, rows, scratch, k, n0 == 0 ? 0.0f : 1.0f, out, k);
  }
}
