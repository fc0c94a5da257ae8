/* Row kernels shared by the softmax-like kernels (attention tiles, the
 * fused cross-entropy, the norms), written for the -O2 vectoriser (see
 * PEFT__VEC in internal.h): lane-wise partial results in blocks of PEFT__VEC,
 * combined in lane order at the end, so a row's result depends only on the
 * row, never on the thread partition. */
#ifndef PEFT_ROW_KERNELS_H
#define PEFT_ROW_KERNELS_H

#include "../internal.h"

/* max of x[0..n), n >= 1 (max is exact: the lane split changes nothing). */
static inline float peft__row_max(const float *x, int64_t n)
{
    float mx = x[0];
    int64_t c = 0;
    if (n >= PEFT__VEC) {
        float lane[PEFT__VEC];
        for (int64_t j = 0; j < PEFT__VEC; j++) lane[j] = x[j];
        for (c = PEFT__VEC; c + PEFT__VEC <= n; c += PEFT__VEC)
            for (int64_t j = 0; j < PEFT__VEC; j++) lane[j] = x[c + j] > lane[j] ? x[c + j] : lane[j];
        for (int64_t j = 0; j < PEFT__VEC; j++) mx = lane[j] > mx ? lane[j] : mx;
    }
    for (; c < n; c++) mx = x[c] > mx ? x[c] : mx;
    return mx;
}

/* x[c] = exp(x[c] - m) in place, c < n. */
static inline void peft__row_exp_shift(float *x, int64_t n, float m)
{
    int64_t c = 0;
    for (; c + PEFT__VEC <= n; c += PEFT__VEC)
        for (int64_t j = 0; j < PEFT__VEC; j++) x[c + j] = peft__expf(x[c + j] - m);
    for (; c < n; c++) x[c] = peft__expf(x[c] - m);
}

/* x[c] *= f, c < n. */
static inline void peft__row_scale(float *x, int64_t n, float f)
{
    int64_t c = 0;
    for (; c + PEFT__VEC <= n; c += PEFT__VEC)
        for (int64_t j = 0; j < PEFT__VEC; j++) x[c + j] *= f;
    for (; c < n; c++) x[c] *= f;
}

/* sum of x[0..n) in double. */
static inline double peft__row_sum(const float *x, int64_t n)
{
    double acc[PEFT__VEC] = {0};
    int64_t c = 0;
    for (; c + PEFT__VEC <= n; c += PEFT__VEC)
        for (int64_t j = 0; j < PEFT__VEC; j++) acc[j] += x[c + j];
    double sum = 0.0;
    for (int64_t j = 0; j < PEFT__VEC; j++) sum += acc[j];
    for (; c < n; c++) sum += x[c];
    return sum;
}

#endif
