// The decoding products' compute cost per 32-value q4_1 or q8_0 block, from an L2-resident weight: the
// fastest of many single calls, so a shared machine's interruptions drop out (a median does
// not). Prints nanoseconds per block and cycles at --ghz (Zen 4 here ran AVX-512 at ~3.55).
// Benchmarks/quant-cycles/run builds and runs it; see docs/runtime.md for what it measured.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lorac_kernels.h"

void openblas_set_num_threads(int n) { (void)n; }  // threads.c's only OpenBLAS call

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t state = 3;
static uint64_t next(void) {  // SplitMix64
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// One product on path `path` (stored layout) or, with `digits` > 0, on the interleaved form.
static int product(int path, int digits, int dtype, float *y, const float *x, const void *w,
                   const void *packed, int64_t m, int64_t n, int64_t k) {
  if (digits == 0) return lc_matmul_quantized_path(path, dtype, y, x, w, m, n, k);
  return lc_matmul_interleaved_path(path, dtype, digits, y, x, packed, m, n, k);
}

int main(int argc, char **argv) {
  double ghz = argc > 1 ? atof(argv[1]) : 3.55;
  int calls = argc > 2 ? atoi(argv[2]) : 1000;
  lc_set_threads(1);
  const int64_t shapes[][2] = {{576, 1536}, {1536, 576}};  // [N, K]: SmolLM2's ffn_down, ffn_up
  // Stored-layout paths (digits 0), then the interleaved form's (x16) with three or one digits.
  const struct { const char *name; int path, digits; } paths[] = {
      {"avx512", LC_QUANT_AVX512, 0}, {"vnni (int8)", LC_QUANT_VNNI, 0},
      {"avx2", LC_QUANT_AVX2, 0},     {"x16 vnni", LC_QUANT_VNNI, 3},
      {"x16 vnni (int8)", LC_QUANT_VNNI, 1}, {"x16 avx2", LC_QUANT_AVX2, 3},
      {"x16 avx2 (int8)", LC_QUANT_AVX2, 1}};
  const int count = (int)(sizeof(paths) / sizeof(paths[0]));
  const struct { const char *name; int dtype, bytes; } types[] = {{"q4_1", LC_Q4_1, 20},
                                                                   {"q8_0", LC_Q8_0, 34}};
  for (int d = 0; d < 2; d++) {
    for (int s = 0; s < 2; s++) {
      int64_t n = shapes[s][0], k = shapes[s][1], blocks = n * k / 32;
      int bytes = types[d].bytes, dtype = types[d].dtype;
      uint8_t *w = malloc((size_t)blocks * bytes);
      uint8_t *packed = malloc((size_t)lc_interleaved_bytes(dtype, n, k));
      for (int64_t i = 0; i < blocks * bytes; i++) w[i] = (uint8_t)next();
      for (int64_t b = 0; b < blocks; b++) {  // small positive d, negative m (finite values)
        w[bytes * b] = 0, w[bytes * b + 1] = 0x20;
        if (dtype == LC_Q4_1) w[bytes * b + 2] = 0, w[bytes * b + 3] = 0xA0;
      }
      lc_interleave(dtype, w, n, k, packed);
      for (int m = 1; m <= 4; m += 3) {
        float *x = malloc(sizeof(float) * (size_t)(m * k));
        float *y = malloc(sizeof(float) * (size_t)(m * n));
        for (int64_t i = 0; i < m * k; i++) x[i] = (float)(next() >> 40) / (float)(1 << 24) - 0.5f;
        printf("%s %lldx%lld m=%d, ns (cycles) per block:\n", types[d].name, (long long)n,
               (long long)k, m);
        for (int p = 0; p < count; p++) {
          double best = 1e9;
          for (int c = 0; c < calls; c++) {
            double t0 = now();
            if (!product(paths[p].path, paths[p].digits, dtype, y, x, w, packed, m, n, k)) break;
            double t = now() - t0;
            if (t < best) best = t;
          }
          if (best < 1e9) {
            printf("  %-16s %.2f (%.2f)\n", paths[p].name, 1e9 * best / (double)blocks,
                   ghz * 1e9 * best / (double)blocks);
          }
        }
        free(x), free(y);
      }
      free(w), free(packed);
    }
  }
  return 0;
}
