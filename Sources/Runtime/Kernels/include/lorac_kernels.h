// lorac_kernels.h: the whole C API of lorac's CPU kernels.
//
// Conventions (every function):
// - Tensors are dense, row-major, 64-byte aligned where lorac allocates them. f32 is `float`,
//   i32 is `int32_t`. Data-movement kernels move 4-byte words and serve both.
// - Strided views: `rank`, `shape[rank]` (the output's shape) and per-operand `strides[rank]` in
//   elements; a stride of 0 broadcasts. rank <= LC_MAX_RANK.
// - Threads: loops are `#pragma omp parallel for schedule(static)` over rows; GEMM goes through
//   OpenBLAS `cblas_sgemm`, always single-threaded inside lorac's own parallel regions (`lc_sgemm`
//   splits each product), so one pool of OpenMP threads does all the work: no oversubscription.
//   Static schedules and fixed per-thread work make results bit-identical for a thread count.
// - Never: allocate memory (callers pass scratch), read files, or print. Kernels that can meet a
//   bad index return the flat position of the first bad index, else -1.
#ifndef LORAC_KERNELS_H
#define LORAC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define LC_MAX_RANK 16

// ---- threads --------------------------------------------------------------------------------
/// Sets the number of threads OpenMP loops and OpenBLAS use (n < 1: all cores).
void lc_set_threads(int n);
/// The thread count in force.
int lc_get_threads(void);
/// The number of cores the machine reports.
int lc_core_count(void);
/// A bit set of the vector extensions found at run time: 1 AVX2+FMA, 2 AVX-512F/BW, 4 AVX-512 VNNI,
/// 8 AVX-512 BF16. (What the CPU can run; which path runs is the caller's choice, passed per call.)
int lc_cpu_features(void);
/// Returns the heap's free memory to the system where the C library can (glibc's malloc_trim).
void lc_trim_heap(void);
/// Memory for large read-mostly buffers (packed weights): 2 MB aligned and advised to use
/// transparent huge pages; free it with free(). Null when out of memory.
void *lc_alloc_large(int64_t bytes);
/// Asks the kernel to reclaim the whole pages of [p, p + bytes) (Linux's MADV_PAGEOUT): a mapped
/// file's clean pages leave memory and are read again if touched; nothing is lost either way.
void lc_page_out(const void *p, int64_t bytes);

// ---- codes shared with Swift -----------------------------------------------------------------
// Every code Swift passes (op functions, dtypes, step kinds, kernel paths) is a named constant
// with an explicit value; Swift maps each of its cases to the constant by name in an exhaustive
// switch (Runtime's KernelCodes.swift) and checks its case count against the _COUNT constant.
// Add a code before _COUNT with the next value, and update the switches the static assertions
// in the .c files point at.

/// Unary functions (IR's UnaryOp).
enum lc_unary {
  LC_NEG = 0, LC_ABS = 1, LC_EXP = 2, LC_LOG = 3, LC_SQRT = 4, LC_RSQRT = 5, LC_RECIPROCAL = 6,
  LC_TANH = 7, LC_SIGMOID = 8, LC_RELU = 9, LC_SILU = 10, LC_SIN = 11, LC_COS = 12,
  LC_UNARY_COUNT = 13
};
/// Binary functions (IR's BinaryOp).
enum lc_binary {
  LC_ADD = 0, LC_SUB = 1, LC_MUL = 2, LC_DIV = 3, LC_MAX = 4, LC_MIN = 5, LC_POW = 6,
  LC_BINARY_COUNT = 7
};
/// Comparisons (IR's Comparison).
enum lc_compare {
  LC_EQ = 0, LC_NE = 1, LC_LT = 2, LC_LE = 3, LC_GT = 4, LC_GE = 5,
  LC_COMPARE_COUNT = 6
};
/// Reductions (IR's ReduceOp).
enum lc_reduce { LC_SUM = 0, LC_RMAX = 1, LC_MEAN = 2, LC_REDUCE_COUNT = 3 };
/// Element types (IR's DType): compute types and the storage types kernels read directly.
enum lc_dtype {
  LC_F32 = 0, LC_I32 = 1, LC_F16 = 2, LC_BF16 = 3, LC_Q8_0 = 4, LC_Q4_1 = 5, LC_Q4_K = 6,
  LC_Q6_K = 7,
  LC_DTYPE_COUNT = 8
};
_Static_assert(LC_UNARY_COUNT == LC_COS + 1, "LC_UNARY_COUNT follows the last unary code");
_Static_assert(LC_BINARY_COUNT == LC_POW + 1, "LC_BINARY_COUNT follows the last binary code");
_Static_assert(LC_COMPARE_COUNT == LC_GE + 1, "LC_COMPARE_COUNT follows the last comparison");
_Static_assert(LC_REDUCE_COUNT == LC_MEAN + 1, "LC_REDUCE_COUNT follows the last reduction");
_Static_assert(LC_DTYPE_COUNT == LC_Q6_K + 1, "LC_DTYPE_COUNT follows the last dtype");

// ---- elementwise ----------------------------------------------------------------------------

/// y[i] = f(x[i]), i < n.
void lc_unary_f32(int op, const float *x, float *y, int64_t n);
void lc_unary_i32(int op, const int32_t *x, int32_t *y, int64_t n);
/// out[idx] = a[idx . a_strides] <op> b[idx . b_strides] over `shape`.
void lc_binary_f32(int op, float *out, int rank, const int64_t *shape, const float *a,
                   const int64_t *a_strides, const float *b, const int64_t *b_strides);
/// i32 arithmetic wraps; division truncates toward zero and x / 0 == 0. pow is not defined.
void lc_binary_i32(int op, int32_t *out, int rank, const int64_t *shape, const int32_t *a,
                   const int64_t *a_strides, const int32_t *b, const int64_t *b_strides);
/// out = (a <op> b) ? 1 : 0.
void lc_compare_f32(int op, int32_t *out, int rank, const int64_t *shape, const float *a,
                    const int64_t *a_strides, const float *b, const int64_t *b_strides);
void lc_compare_i32(int op, int32_t *out, int rank, const int64_t *shape, const int32_t *a,
                    const int64_t *a_strides, const int32_t *b, const int64_t *b_strides);
/// out = c != 0 ? a : b over 4-byte words.
void lc_select_32(uint32_t *out, int rank, const int64_t *shape, const int32_t *c,
                  const int64_t *c_strides, const uint32_t *a, const int64_t *a_strides,
                  const uint32_t *b, const int64_t *b_strides);

// ---- data movement (4-byte words) -----------------------------------------------------------
/// out[idx] = in[idx . in_strides] over `shape` (transpose, broadcast, slice, dynamic slice).
void lc_copy_strided_32(uint32_t *out, int rank, const int64_t *shape, const uint32_t *in,
                        const int64_t *in_strides);
/// out[idx . out_strides] = in[idx] over `shape` (write into a box of a larger tensor).
void lc_scatter_strided_32(uint32_t *out, const int64_t *out_strides, int rank,
                           const int64_t *shape, const uint32_t *in);
/// Joins `count` operands viewed as [outer, widths[k] * inner] along the middle axis.
void lc_concat_32(uint32_t *out, int count, const uint32_t *const *inputs, const int64_t *widths,
                  int64_t outer, int64_t inner);
/// out[o, i, :] = table[o, idx[i], :] for table [outer, rows, inner]; returns -1 or the bad position.
int64_t lc_gather_32(uint32_t *out, const uint32_t *table, int64_t outer, int64_t rows,
                     int64_t inner, const int32_t *indices, int64_t count);
/// out = target; out[o, idx[i], :] += updates[o, i, :]; returns -1 or the bad position.
int64_t lc_scatter_add_f32(float *out, const float *target, int64_t outer, int64_t rows,
                           int64_t inner, const int32_t *indices, int64_t count,
                           const float *updates);
/// Gathers rows of a 2-D storage-typed table [rows, width] into f32 [count, width].
int64_t lc_gather_rows_dequantize(int dtype, float *out, const void *table, int64_t rows,
                                  int64_t width, const int32_t *indices, int64_t count);

// ---- conversions and generators -------------------------------------------------------------
/// Bytes of one row of `n` values (n a multiple of the block size).
int64_t lc_row_bytes(int dtype, int64_t n);
/// Decodes `n` values of `dtype` (n a multiple of the block size) into f32.
void lc_dequantize_row(int dtype, const void *src, float *dst, int64_t n);
/// Decodes `rows` rows of `width` values in parallel.
void lc_dequantize_rows(int dtype, const void *src, float *dst, int64_t rows, int64_t width);
/// f32 -> i32 truncating toward zero, clamped to the i32 range, NaN -> 0.
void lc_cast_f32_i32(const float *x, int32_t *y, int64_t n);
void lc_cast_i32_f32(const int32_t *x, float *y, int64_t n);
/// out[idx] = idx[axis] over `shape` (as f32 or i32).
void lc_iota_f32(float *out, int rank, const int64_t *shape, int axis);
void lc_iota_i32(int32_t *out, int rank, const int64_t *shape, int axis);
void lc_fill_32(uint32_t *out, uint32_t word, int64_t n);

// ---- reductions and normalisations ---------------------------------------------------------
/// Reduces the axes flagged in `reduced[rank]` of x (shape `shape`) into the dense out.
void lc_reduce_f32(int op, float *out, const float *x, int rank, const int64_t *shape,
                   const int *reduced);
void lc_reduce_i32(int op, int32_t *out, const int32_t *x, int rank, const int64_t *shape,
                   const int *reduced);
/// Softmax (log = 0) or log-softmax (log = 1) along the middle axis of x [outer, n, inner].
void lc_softmax_f32(float *out, const float *x, int64_t outer, int64_t n, int64_t inner,
                    int logarithm);

// ---- matrix products ------------------------------------------------------------------------
/// C = alpha op(A) op(B) + beta C, row-major, split across the OpenMP threads (each slice a
/// single-threaded cblas_sgemm; OpenBLAS itself always runs on one thread).
void lc_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc);
/// out[b] = op(a[b]) x op(w[b]) for each batch b: a [M,K] (or [K,M] with trans_a), w [K,N] (or
/// [N,K] with trans_b); a_batch_stride / w_batch_stride 0 broadcasts. Through cblas_sgemm, except
/// M <= 8 rows against w [N, K] when `path` (an lc_quant_path with an f32 row kernel, see
/// lc_quant_has_kernel) is above LC_QUANT_PORTABLE: then that path's row kernel.
void lc_matmul_f32(float *out, const float *a, const float *w, int64_t batches,
                   const int64_t *a_offsets, const int64_t *w_offsets, int64_t m, int64_t n,
                   int64_t k, int trans_a, int trans_b, int path);
/// out [M,N] = a [M,K] x w^T with w a storage-typed [N,K] matrix (rows of K values).
/// M <= 8 uses the hand-written dot products of `path` (lc_matmul_quantized_path) over the
/// blocks; larger M dequantizes `chunk` rows of w at a time into `scratch` (chunk * K floats) and
/// calls sgemm.
void lc_matmul_quantized(int path, int dtype, float *out, const float *a, const void *w,
                         int64_t m, int64_t n, int64_t k, float *scratch, int64_t chunk);
/// Bytes of the packed form of a bf16 weight for a product with N output columns over K.
int64_t lc_bf16_packed_bytes(int64_t n, int64_t k);
/// Bytes of scratch `lc_matmul_bf16_packed` needs for M rows over K (the rounded activations).
int64_t lc_bf16_scratch_bytes(int64_t m, int64_t k);
/// Packs bf16 w for `lc_matmul_bf16_packed`: with trans_b, w is [N, K] (the product is a w^T);
/// without, w is [K, N] (the product is a w).
void lc_bf16_pack(const uint16_t *w, int64_t n, int64_t k, int trans_b, uint16_t *packed);
/// out [M, N] = bf16(a) [M, K] x the packed weight, f32 sums of exact bf16 products; needs
/// avx512_bf16 (lc_cpu_features() & 8). Bit-identical across thread counts.
void lc_matmul_bf16_packed(float *out, const float *a, int64_t m, int64_t n, int64_t k,
                           const uint16_t *packed, void *scratch);
/// out [M,K] = a [M,N] x w with w a storage-typed [N,K] matrix used as stored (no transpose):
/// the input gradient through a quantized linear layer. Decodes `chunk` rows at a time.
void lc_matmul_quantized_nt(int dtype, float *out, const float *a, const void *w, int64_t m,
                            int64_t rows, int64_t k, float *scratch, int64_t chunk);
/// y[n] = dot(x, dequant(w[n, :])) for a storage-typed w [N,K]: the decoding kernel.
void lc_matvec_quantized(int dtype, float *y, const float *x, const void *w, int64_t n, int64_t k);
/// The plain reference loop of lc_matvec_quantized (dequantize a row, dot in f32).
void lc_matvec_quantized_reference(int dtype, float *y, const float *x, const void *w, int64_t n,
                                   int64_t k);
/// out [M,N] = a [M,K] x w^T for a storage-typed w [N,K] (any dtype) read once per 8 rows of a:
/// the decoding product for small M (a few sequences or draft tokens), on lc_quant_best_path.
/// Activations stay f32.
void lc_matmul_quantized_small(int dtype, float *out, const float *a, const void *w, int64_t m,
                               int64_t n, int64_t k);
/// Kernel paths of the storage-typed products. Executables pass the path their kernel plan chose
/// (Swift's `KernelPlan`); AUTO is lc_quant_best_path. VNNI (q8_0, q4_1) rounds the activations
/// to int8 per block of 32, as llama.cpp does; the others keep them f32.
enum lc_quant_path {
  LC_QUANT_AUTO = 0, LC_QUANT_PORTABLE = 1, LC_QUANT_AVX2 = 2, LC_QUANT_AVX512 = 3, LC_QUANT_VNNI = 4
};
/// Whether lorac has a kernel of `path` for dtype (on a CPU that runs the path): a fixed table.
int lc_quant_has_kernel(int path, int dtype);
/// The widest path with f32 activations (never VNNI) this CPU runs for dtype.
int lc_quant_best_path(int dtype);
/// lc_matmul_quantized_small on one path (for tests and measurements); returns 0 and writes nothing
/// when this CPU or build has no kernel of that path for dtype.
int lc_matmul_quantized_path(int path, int dtype, float *out, const float *a, const void *w,
                             int64_t m, int64_t n, int64_t k);

/// q4_1 or q8_0 weights [n, k] interleaved by groups of 16 rows for the int8-activation kernels
/// (the last group padded with zero rows): the bytes of the packed form (0 for other dtypes),
/// and the packer (returns 0 and writes nothing for other dtypes).
int64_t lc_interleaved_bytes(int dtype, int64_t n, int64_t k);
int lc_interleave(int dtype, const void *w, int64_t n, int64_t k, void *packed);
/// out [m, n] = a [m, k] x w^T on the interleaved form of a q4_1 or q8_0 w, each block of 32
/// activations as `digits` int8 digits times d_x = max|x| / 127: 1 is the int8 path (llama.cpp's
/// rounding), 3 is f32-accurate (per value error <= ~2^-24 max|x| of its block), on the VNNI
/// kernels where this CPU has avx512_vnni and on the AVX2 ones otherwise. Returns 0 and writes
/// nothing without AVX2 or for other dtypes or digit counts.
int lc_matmul_interleaved(int dtype, int digits, float *out, const float *a, const void *packed,
                          int64_t m, int64_t n, int64_t k);
/// lc_matmul_interleaved on one path: LC_QUANT_VNNI, LC_QUANT_AVX2 or LC_QUANT_AUTO (the widest
/// of the two this CPU runs); returns 0 and writes nothing when this CPU lacks that path. Both
/// paths round the activations to the same digits; only the order of the float sums differs.
int lc_matmul_interleaved_path(int path, int dtype, int digits, float *out, const float *a,
                               const void *packed, int64_t m, int64_t n, int64_t k);

/// Step kinds of an elementwise program (postfix; each step is a kind and an argument): push
/// input `argument`, push literal `argument`, apply unary op `argument` to the top, apply binary
/// op `argument` to the top two (the deeper one is the left operand).
enum lc_elementwise_step { LC_EW_INPUT = 0, LC_EW_LITERAL = 1, LC_EW_UNARY = 2, LC_EW_BINARY = 3 };
/// The deepest stack an elementwise program may use.
#define LC_EW_MAX_DEPTH 8
/// out[i] = program(inputs[0][i], inputs[1][i], ...) for i < n, one pass over blocks of 256
/// elements that stay in L1; each step rounds as the primitive kernel does (same results).
void lc_elementwise_f32(float *out, const int32_t *steps, int64_t count,
                        const float *const *inputs, const float *literals, int64_t n);

// ---- fused ops (fused.c) -------------------------------------------------------------------
/// y = x (mean(x^2) + eps)^(-1/2) w per row of x [rows, d].
void lc_rms_norm_f32(float *y, const float *x, const float *w, int64_t rows, int64_t d,
                     float eps);
/// dx of rms_norm for the result gradient g: r g w - x r^3 mean(g w x) per row.
void lc_rms_norm_grad_f32(float *dx, const float *x, const float *w, const float *g, int64_t rows,
                          int64_t d, float eps);
/// y = silu(gate) up elementwise.
void lc_swiglu_f32(float *y, const float *gate, const float *up, int64_t n);
/// The gradients of swiglu for g.
void lc_swiglu_grad_f32(float *dgate, float *dup, const float *gate, const float *up,
                        const float *g, int64_t n);
/// loss[row] = logsumexp(logits[row]) - logits[row, t] for t = targets[row] in 0..<v, else 0.
void lc_cross_entropy_f32(float *loss, const float *logits, const int32_t *targets, int64_t rows,
                          int64_t v);
/// grad[row] = g[row] (softmax(logits[row]) - onehot(t)), 0 for ignored targets or g[row] = 0.
void lc_cross_entropy_grad_f32(float *grad, const float *logits, const int32_t *targets,
                               const float *g, int64_t rows, int64_t v);

/// Floats of scratch lc_attention_f32 and lc_attention_grad_f32 need: 2 S T for each of `slots`
/// threads, and for one query row (S = 1) the partial results of its chunks of keys.
int64_t lc_attention_scratch_floats(int64_t batch, int64_t heads, int64_t rows, int64_t keys,
                                    int64_t width, int64_t slots);
/// out [B,H,S,D] = softmax(mask ? scale q k^T : -inf) v per (b, h) with k, v [B,G,T,D] (query
/// head h reads key/value head h / (H / G)); mask strides index [B,H,S,T] (0 where it
/// broadcasts). scratch holds lc_attention_scratch_floats. One query row (S = 1) with D = 64 and at
/// most 4 query heads per key/value head runs an AVX-512 loop when `path` (an lc_quant_path) is
/// LC_QUANT_AVX512 or above.
void lc_attention_f32(float *out, const float *q, const float *k, const float *v,
                      const int32_t *mask, const int64_t *mask_strides, int64_t batch,
                      int64_t heads, int64_t groups, int64_t rows, int64_t keys, int64_t width,
                      float scale, float *scratch, int64_t slots, int path);
/// The gradients (dq, dk, dv) of lc_attention_f32 for the result gradient g.
void lc_attention_grad_f32(float *dq, float *dk, float *dv, const float *q, const float *k,
                           const float *v, const int32_t *mask, const int64_t *mask_strides,
                           const float *g, int64_t batch, int64_t heads, int64_t groups,
                           int64_t rows, int64_t keys, int64_t width, float scale, float *scratch,
                           int64_t slots);

// ---- optimizer ------------------------------------------------------------------------------
/// One AdamW step (PyTorch's formulation, decoupled weight decay) on n elements:
/// g = grad * grad_scale; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// param -= lr (wd param + (m / bc1) / (sqrt(v / bc2) + eps)), with bc_k = 1 - b_k^step.
void lc_adamw_f32(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                  float beta1, float beta2, float epsilon, float weight_decay,
                  float bias_correction1, float bias_correction2, float grad_scale);
/// The sum of squares of n floats, accumulated in double (for global-norm clipping).
double lc_sum_squares_f32(const float *x, int64_t n);
/// sum[i] += x[i] for n floats (gradient accumulation over micro-batches).
void lc_accumulate_f32(float *sum, const float *x, int64_t n);

// ---- measurement ----------------------------------------------------------------------------
/// A bare cblas_sgemm call with OpenBLAS's own threads, out [M,N] = a [M,K] x w ([K,N], or [N,K] with trans_b): the
/// baseline lorac's GEMM path is measured against.
void lc_sgemm_baseline(const float *a, const float *w, float *out, int64_t m, int64_t n,
                       int64_t k, int trans_b);
/// Sums n floats with every core (a plain memory-read loop: the bandwidth baseline).
float lc_memory_read(const float *x, int64_t n);

// ---- positions ------------------------------------------------------------------------------
/// Rotary embedding of x [P, H, D] at positions[P]; pairs (k, k + D/2), or (2k, 2k + 1) when
/// interleaved; angle = position * theta^(-2k/D).
void lc_rope_f32(float *out, const float *x, const int32_t *positions, int64_t p, int64_t h,
                 int64_t d, double theta, int interleaved);

#endif
