// The decoding products' compute cost per 32-value q4_1 block, from an L2-resident weight: the
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

int main(int argc, char **argv) {
  double ghz = argc > 1 ? atof(argv[1]) : 3.55;
  int calls = argc > 2 ? atoi(argv[2]) : 1000;
  lc_set_threads(1);
  const int64_t shapes[][2] = {{576, 1536}, {1536, 576}};  // [N, K]: SmolLM2's ffn_down, ffn_up
  const struct { const char *name; int path; } paths[] = {
      {"avx512", LC_QUANT_AVX512}, {"vnni (int8)", LC_QUANT_VNNI}, {"avx2", LC_QUANT_AVX2}};
  for (int s = 0; s < 2; s++) {
    int64_t n = shapes[s][0], k = shapes[s][1], blocks = n * k / 32;
    uint8_t *w = malloc((size_t)blocks * 20);
    for (int64_t i = 0; i < blocks * 20; i++) w[i] = (uint8_t)next();
    for (int64_t b = 0; b < blocks; b++) {  // small positive d, negative m (finite values)
      w[20 * b] = 0, w[20 * b + 1] = 0x20, w[20 * b + 2] = 0, w[20 * b + 3] = 0xA0;
    }
    for (int m = 1; m <= 4; m += 3) {
      float *x = malloc(sizeof(float) * (size_t)(m * k)), *y = malloc(sizeof(float) * (size_t)(m * n));
      for (int64_t i = 0; i < m * k; i++) x[i] = (float)(next() >> 40) / (float)(1 << 24) - 0.5f;
      printf("q4_1 %lldx%lld m=%d:", (long long)n, (long long)k, m);
      for (int p = 0; p < 3; p++) {
        double best = 1e9;
        for (int c = 0; c < calls; c++) {
          double t0 = now();
          if (!lc_matmul_quantized_path(paths[p].path, LC_Q4_1, y, x, w, m, n, k)) break;
          double t = now() - t0;
          if (t < best) best = t;
        }
        if (best < 1e9) {
          printf("  %s %.2f ns (%.2f cycles)", paths[p].name, 1e9 * best / (double)blocks,
                 ghz * 1e9 * best / (double)blocks);
        }
      }
      printf("  per block\n");
      free(x), free(y);
    }
    free(w);
  }
  return 0;
}
