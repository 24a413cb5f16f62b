// AdamW over one tensor (called once per trainable tensor).
#include <math.h>

#include "internal.h"

void lc_adamw_f32(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                  float beta1, float beta2, float epsilon, float weight_decay,
                  float bias_correction1, float bias_correction2, float grad_scale) {
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t i = 0; i < n; i++) {
    float g = grad[i] * grad_scale;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    float m_hat = m[i] / bias_correction1;
    float v_hat = v[i] / bias_correction2;
    param[i] -= lr * (weight_decay * param[i] + m_hat / (sqrtf(v_hat) + epsilon));
  }
}

double lc_sum_squares_f32(const float *x, int64_t n) {
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n > LC_PARALLEL_MIN)
  for (int64_t i = 0; i < n; i++) total += (double)x[i] * x[i];
  return total;
}

void lc_accumulate_f32(float *sum, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > LC_PARALLEL_MIN)
  for (int64_t i = 0; i < n; i++) sum[i] += x[i];
}
