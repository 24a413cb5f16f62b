// Data movement over 4-byte words: strided copies, concat, gather and scatter.
#include <string.h>

#include "internal.h"

void lc_copy_strided_32(uint32_t *out, int rank, const int64_t *shape, const uint32_t *in,
                        const int64_t *in_strides) {
  const int64_t *strides[1] = {in_strides};
  lc_view view;
  lc_view_init(&view, rank, shape, 1, strides);
  int64_t tasks = lc_view_tasks(&view);
  int64_t stride = view.strides[0][view.rank - 1];
#pragma omp parallel for schedule(static) if (view.total > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t offset, first, count;
    int64_t o = lc_view_task(&view, t, &offset, &first, &count);
    const uint32_t *source = in + offset;
    if (stride == 1) {
      memcpy(out + o, source, (size_t)count * 4);
    } else {
      for (int64_t i = 0; i < count; i++) out[o + i] = source[i * stride];
    }
  }
}

void lc_scatter_strided_32(uint32_t *out, const int64_t *out_strides, int rank,
                           const int64_t *shape, const uint32_t *in) {
  const int64_t *strides[1] = {out_strides};
  lc_view view;
  lc_view_init(&view, rank, shape, 1, strides);
  int64_t tasks = lc_view_tasks(&view);
  int64_t stride = view.strides[0][view.rank - 1];
#pragma omp parallel for schedule(static) if (view.total > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t offset, first, count;
    int64_t i0 = lc_view_task(&view, t, &offset, &first, &count);
    uint32_t *target = out + offset;
    for (int64_t i = 0; i < count; i++) target[i * stride] = in[i0 + i];
  }
}

void lc_concat_32(uint32_t *out, int count, const uint32_t *const *inputs, const int64_t *widths,
                  int64_t outer, int64_t inner) {
  int64_t total = 0;
  for (int k = 0; k < count; k++) total += widths[k];
#pragma omp parallel for schedule(static) if (outer * total * inner > LC_PARALLEL_MIN)
  for (int64_t o = 0; o < outer; o++) {
    uint32_t *row = out + o * total * inner;
    for (int k = 0; k < count; k++) {
      int64_t size = widths[k] * inner;
      memcpy(row, inputs[k] + o * size, (size_t)size * 4);
      row += size;
    }
  }
}

int64_t lc_gather_32(uint32_t *out, const uint32_t *table, int64_t outer, int64_t rows,
                     int64_t inner, const int32_t *indices, int64_t count) {
  for (int64_t i = 0; i < count; i++) {
    if (indices[i] < 0 || indices[i] >= rows) return i;
  }
#pragma omp parallel for schedule(static) if (outer * count * inner > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < outer * count; t++) {
    int64_t o = t / count, i = t % count;
    memcpy(out + t * inner, table + (o * rows + indices[i]) * inner, (size_t)inner * 4);
  }
  return -1;
}

int64_t lc_scatter_add_f32(float *out, const float *target, int64_t outer, int64_t rows,
                           int64_t inner, const int32_t *indices, int64_t count,
                           const float *updates) {
  for (int64_t i = 0; i < count; i++) {
    if (indices[i] < 0 || indices[i] >= rows) return i;
  }
  if (out != target) memcpy(out, target, (size_t)(outer * rows * inner) * 4);
  // Parallel over `outer` and over columns of `inner`, so no two threads touch one element and
  // repeated indices accumulate in index order (deterministic).
  int64_t columns = (inner + 255) / 256;
#pragma omp parallel for schedule(static) if (outer * count * inner > LC_PARALLEL_MIN)
  for (int64_t t = 0; t < outer * columns; t++) {
    int64_t o = t / columns, c0 = (t % columns) * 256;
    int64_t c1 = c0 + 256 < inner ? c0 + 256 : inner;
    for (int64_t i = 0; i < count; i++) {
      float *row = out + (o * rows + indices[i]) * inner;
      const float *update = updates + (o * count + i) * inner;
      for (int64_t c = c0; c < c1; c++) row[c] += update[c];
    }
  }
  return -1;
}

int64_t lc_gather_rows_dequantize(int dtype, float *out, const void *table, int64_t rows,
                                  int64_t width, const int32_t *indices, int64_t count) {
  for (int64_t i = 0; i < count; i++) {
    if (indices[i] < 0 || indices[i] >= rows) return i;
  }
  int64_t row_bytes = lc_row_bytes(dtype, width);
#pragma omp parallel for schedule(static) if (count * width > LC_PARALLEL_MIN)
  for (int64_t i = 0; i < count; i++) {
    lc_dequantize_row(dtype, (const uint8_t *)table + indices[i] * row_bytes, out + i * width,
                      width);
  }
  return -1;
}
