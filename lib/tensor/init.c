/* Seeded initialisation from the context PRNG. Elements are drawn in
 * row-major order, so the same seed always fills a tensor the same way. */
#include <math.h>

#include "../internal.h"

static peft_status check_init(peft_tensor *t, const char *fn)
{
    if (!t) return PEFT_ERR_INVALID_ARG;
    if (t->dtype != PEFT_DTYPE_F32)
        return peft__fail(t->ctx, PEFT_ERR_DTYPE, "%s: tensor is %s, expected f32", fn, peft_dtype_name(t->dtype));
    if (!peft__is_contiguous(t))
        return peft__fail(t->ctx, PEFT_ERR_INVALID_ARG, "%s: tensor is not contiguous", fn);
    return PEFT_OK;
}

peft_status peft_tensor_init_normal(peft_tensor *t, float mean, float std)
{
    peft_status st = check_init(t, "peft_tensor_init_normal");
    if (st != PEFT_OK) return st;
    if (!isfinite(mean) || !isfinite(std) || std < 0)
        return peft__fail(t->ctx, PEFT_ERR_INVALID_ARG, "peft_tensor_init_normal: mean %g, std %g", mean, std);
    float *x = t->data;
    int64_t n = peft_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(mean + std * peft_ctx_rand_normal(t->ctx));
    return PEFT_OK;
}

peft_status peft_tensor_init_uniform(peft_tensor *t, float lo, float hi)
{
    peft_status st = check_init(t, "peft_tensor_init_uniform");
    if (st != PEFT_OK) return st;
    if (!isfinite(lo) || !isfinite(hi) || hi < lo)
        return peft__fail(t->ctx, PEFT_ERR_INVALID_ARG, "peft_tensor_init_uniform: bounds [%g, %g)", lo, hi);
    float *x = t->data;
    int64_t n = peft_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - (double)lo) * peft_ctx_rand_uniform(t->ctx));
    return PEFT_OK;
}

peft_status peft_tensor_init_kaiming_uniform(peft_tensor *t, float a, int64_t fan_in)
{
    if (!t) return PEFT_ERR_INVALID_ARG;
    if (fan_in == 0) fan_in = t->shape[t->ndim - 1];
    if (fan_in < 0 || !isfinite(a))
        return peft__fail(t->ctx, PEFT_ERR_INVALID_ARG, "peft_tensor_init_kaiming_uniform: a %g, fan_in %lld", a,
                          (long long)fan_in);
    double bound = sqrt(6.0 / ((1.0 + (double)a * a) * (double)fan_in));
    return peft_tensor_init_uniform(t, (float)-bound, (float)bound);
}
