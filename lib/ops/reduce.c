/* Reductions: sum / mean of all elements, and over one axis.
 * Sums accumulate in double in row-major order: the result does not depend on
 * the thread count. */
#include "../internal.h"

typedef struct reduce_saved {
    double scale; /* 1 for sum, 1/count for mean */
    int64_t outer, len, inner; /* axis reductions: [outer, len, inner] -> [outer, inner] */
} reduce_saved;

static peft_status all_backward(peft_ctx *ctx, peft__node *node)
{
    peft_tensor *x = node->in[0];
    const reduce_saved *s = node->saved;
    float *dx;
    peft_status st = peft__grad_buffer(ctx, x, &dx);
    if (st != PEFT_OK) return st;
    const float g = (float)(node->out->grad[0] * s->scale);
    int64_t n = peft_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) dx[i] += g;
    return PEFT_OK;
}

static peft_status reduce_all(peft_ctx *ctx, const char *op, peft_tensor *x, bool mean, peft_tensor **out)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "x", x)) != PEFT_OK) return st;
    const int64_t one = 1, n = peft_tensor_numel(x);
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, 1, &one, &o)) != PEFT_OK) return st;
    const float *xd = x->data;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) acc += xd[i];
    double scale = mean ? 1.0 / (double)n : 1.0;
    ((float *)o->data)[0] = (float)(acc * scale);
    if (peft__should_record(ctx, &x, 1)) {
        reduce_saved *s = peft__scratch(ctx, sizeof *s, op);
        if (!s) return PEFT_ERR_NOMEM;
        s->scale = scale;
        if ((st = peft__record(ctx, op, all_backward, o, &x, 1, s)) != PEFT_OK) return st;
    }
    *out = o;
    return PEFT_OK;
}

peft_status peft_sum(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    return reduce_all(ctx, "peft_sum", x, false, out);
}

peft_status peft_mean(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    return reduce_all(ctx, "peft_mean", x, true, out);
}

static peft_status axis_backward(peft_ctx *ctx, peft__node *node)
{
    peft_tensor *x = node->in[0];
    const reduce_saved *s = node->saved;
    float *dx;
    peft_status st = peft__grad_buffer(ctx, x, &dx);
    if (st != PEFT_OK) return st;
    const float *dout = node->out->grad;
    for (int64_t o = 0; o < s->outer; o++)
        for (int64_t l = 0; l < s->len; l++)
            for (int64_t i = 0; i < s->inner; i++)
                dx[(o * s->len + l) * s->inner + i] += (float)(dout[o * s->inner + i] * s->scale);
    return PEFT_OK;
}

static peft_status reduce_axis(peft_ctx *ctx, const char *op, peft_tensor *x, int axis, bool mean,
                               peft_tensor **out)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "x", x)) != PEFT_OK) return st;
    int ax = peft__axis(axis, x->ndim);
    if (ax < 0) {
        char sx[64];
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: axis %d is out of range for %s", op, axis,
                          peft__shape_str(x, sx, sizeof sx));
    }
    reduce_saved s = {0};
    s.outer = 1;
    s.inner = 1;
    for (int i = 0; i < ax; i++) s.outer *= x->shape[i];
    for (int i = ax + 1; i < x->ndim; i++) s.inner *= x->shape[i];
    s.len = x->shape[ax];
    s.scale = mean ? 1.0 / (double)s.len : 1.0;
    int64_t shape[PEFT_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++)
        if (i != ax) shape[nd++] = x->shape[i];
    if (nd == 0) shape[nd++] = 1;
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, nd, shape, &o)) != PEFT_OK) return st;
    const float *xd = x->data;
    float *od = o->data;
    for (int64_t oi = 0; oi < s.outer; oi++)
        for (int64_t i = 0; i < s.inner; i++) {
            double acc = 0.0;
            for (int64_t l = 0; l < s.len; l++) acc += xd[(oi * s.len + l) * s.inner + i];
            od[oi * s.inner + i] = (float)(acc * s.scale);
        }
    if (peft__should_record(ctx, &x, 1)) {
        reduce_saved *saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        *saved = s;
        if ((st = peft__record(ctx, op, axis_backward, o, &x, 1, saved)) != PEFT_OK) return st;
    }
    *out = o;
    return PEFT_OK;
}

peft_status peft_sum_axis(peft_ctx *ctx, peft_tensor *x, int axis, peft_tensor **out)
{
    return reduce_axis(ctx, "peft_sum_axis", x, axis, false, out);
}

peft_status peft_mean_axis(peft_ctx *ctx, peft_tensor *x, int axis, peft_tensor **out)
{
    return reduce_axis(ctx, "peft_mean_axis", x, axis, true, out);
}
