// Thread settings and CPU feature detection.
#include "lorac_kernels.h"

#include <unistd.h>

#include "internal.h"

// Declared here rather than through omp.h / cblas.h so the target needs no extra include paths
// (Swift's clang ships no omp.h; see the team's toolchain notes).
extern void omp_set_num_threads(int);
extern int omp_get_max_threads(void);
extern void openblas_set_num_threads(int);

static int lc_threads = 0;

int lc_core_count(void) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? (int)cores : 1;
}

void lc_set_threads(int n) {
  if (n < 1) n = lc_core_count();
  lc_threads = n;
  // OpenMP owns every thread: OpenBLAS runs single-threaded inside lorac's own parallel loops
  // (lc_sgemm splits each product), so OpenBLAS's workers never compete with OpenMP's spinning
  // ones for the cores.
  omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

int lc_get_threads(void) {
  if (lc_threads == 0) lc_set_threads(0);
  return lc_threads;
}

int lc_cpu_features(void) {
  static int cached = -1;
  if (cached >= 0) return cached;
  __builtin_cpu_init();
  int features = 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) features |= 1;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) features |= 2;
  if (__builtin_cpu_supports("avx512vnni")) features |= 4;
  if (__builtin_cpu_supports("avx512bf16")) features |= 8;
  cached = features;
  return features;
}

LC_CLONES static float sum_range(const float *x, int64_t n) {
  float lanes[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; j++) lanes[j] += x[i + j];
  }
  float total = 0;
  for (int j = 0; j < 16; j++) total += lanes[j];
  for (; i < n; i++) total += x[i];
  return total;
}

float lc_memory_read(const float *x, int64_t n) {
  int threads = lc_get_threads();
  float partial[256] = {0};
  if (threads > 256) threads = 256;
  int64_t per = (n + threads - 1) / threads;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < threads; t++) {
    int64_t start = t * per, end = start + per < n ? start + per : n;
    partial[t] = start < end ? sum_range(x + start, end - start) : 0;
  }
  float total = 0;
  for (int t = 0; t < threads; t++) total += partial[t];
  return total;
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif

void lc_trim_heap(void) {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

void *lc_alloc_large(int64_t bytes) {
  // 2 MB aligned, and asked for transparent huge pages where the kernel leaves them to madvise:
  // a stream over 4 KB pages misses the TLB every 4 KB (from DRAM, ~20-24 GB/s of reading on one
  // of this machine's cores against ~31 GB/s over 2 MB pages).
  const int64_t huge = 2 << 20;
  int64_t size = (bytes + huge - 1) / huge * huge;
  void *p = 0;
  if (posix_memalign(&p, (size_t)huge, (size_t)(size > 0 ? size : huge)) != 0) return 0;
#if defined(MADV_HUGEPAGE)
  madvise(p, (size_t)(size > 0 ? size : huge), MADV_HUGEPAGE);
#endif
  return p;
}

void lc_page_out(const void *p, int64_t bytes) {
#if defined(MADV_PAGEOUT)
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)p + page - 1) / page * page, end = ((uintptr_t)p + bytes) / page * page;
  if (end > start) madvise((void *)start, end - start, MADV_PAGEOUT);
#else
  (void)p, (void)bytes;
#endif
}
