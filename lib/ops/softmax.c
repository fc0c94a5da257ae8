/* Softmax and log-softmax over the last dim.
 *
 * Stability: every row subtracts its max before exponentiating, so exp never
 * overflows and the largest term is exactly 1; the sum of exponentials is
 * accumulated in double. Backward uses the saved output y (the op's output
 * tensor, which lives in the arena until the graph is released):
 *   softmax:     dx = y * (dy - sum(dy * y))
 *   log_softmax: dx = dy - exp(y) * sum(dy)
 * Rows are split across threads; each row is reduced by one thread in order,
 * so results do not depend on the thread count. */
#include <math.h>

#include "../internal.h"

typedef struct softmax_arg {
    bool log;
    int64_t C;
    const float *x;    /* (N, C) forward input */
    const float *y;    /* (N, C) forward output (backward) */
    const float *dout; /* (N, C) backward */
    float *out;        /* (N, C) forward: y; backward: dx (accumulated) */
} softmax_arg;

/* Rows per thread chunk so that a chunk holds about 4096 elements. */
static size_t row_grain(int64_t C) { return (size_t)(4096 / (C > 0 ? C : 1) + 1); }

static void softmax_fwd_range(void *p, size_t begin, size_t end)
{
    const softmax_arg *a = p;
    const int64_t C = a->C;
    for (size_t n = begin; n < end; n++) {
        const float *x_n = a->x + n * C;
        float *y_n = a->out + n * C;
        float mx = x_n[0];
        for (int64_t c = 1; c < C; c++) mx = x_n[c] > mx ? x_n[c] : mx;
        double sum = 0.0;
        if (a->log) {
            for (int64_t c = 0; c < C; c++) sum += exp((double)x_n[c] - mx);
            const double lse = log(sum); /* log-sum-exp of the shifted row, >= 0 */
            for (int64_t c = 0; c < C; c++) y_n[c] = (float)((double)x_n[c] - mx - lse);
        } else {
            /* keep the exponentials in y, then normalise in place */
            for (int64_t c = 0; c < C; c++) {
                float e = expf(x_n[c] - mx);
                y_n[c] = e;
                sum += e;
            }
            const double inv = 1.0 / sum;
            for (int64_t c = 0; c < C; c++) y_n[c] = (float)(y_n[c] * inv);
        }
    }
}

static void softmax_bwd_range(void *p, size_t begin, size_t end)
{
    const softmax_arg *a = p;
    const int64_t C = a->C;
    for (size_t n = begin; n < end; n++) {
        const float *y_n = a->y + n * C, *dout_n = a->dout + n * C;
        float *dx_n = a->out + n * C;
        double s = 0.0;
        if (a->log) {
            for (int64_t c = 0; c < C; c++) s += dout_n[c];
            for (int64_t c = 0; c < C; c++) dx_n[c] += (float)(dout_n[c] - exp((double)y_n[c]) * s);
        } else {
            for (int64_t c = 0; c < C; c++) s += (double)dout_n[c] * y_n[c];
            for (int64_t c = 0; c < C; c++) dx_n[c] += (float)(y_n[c] * (dout_n[c] - s));
        }
    }
}

static peft_status softmax_backward_common(peft_ctx *ctx, peft__node *node, bool log_form)
{
    peft_tensor *x = node->in[0];
    float *dx;
    peft_status st = peft__grad_buffer(ctx, x, &dx);
    if (st != PEFT_OK) return st;
    const int64_t C = peft__cols(x);
    softmax_arg a = {log_form, C, x->data, node->out->data, node->out->grad, dx};
    peft__parallel_for(ctx, (size_t)peft__rows(x), row_grain(C), softmax_bwd_range, &a);
    return PEFT_OK;
}

static peft_status softmax_backward(peft_ctx *ctx, peft__node *node)
{
    return softmax_backward_common(ctx, node, false);
}

static peft_status log_softmax_backward(peft_ctx *ctx, peft__node *node)
{
    return softmax_backward_common(ctx, node, true);
}

static peft_status softmax(peft_ctx *ctx, bool log_form, peft_tensor *x, peft_tensor **out)
{
    const char *op = log_form ? "peft_log_softmax" : "peft_softmax";
    peft_tensor *y;
    peft_status st = peft__unary_begin(ctx, op, x, out, &y);
    if (st != PEFT_OK) return st;
    const int64_t C = peft__cols(x);
    softmax_arg a = {log_form, C, x->data, NULL, NULL, y->data};
    peft__parallel_for(ctx, (size_t)peft__rows(x), row_grain(C), softmax_fwd_range, &a);
    if (peft__should_record(ctx, &x, 1) &&
        (st = peft__record(ctx, op, log_form ? log_softmax_backward : softmax_backward, y, &x, 1, NULL)) !=
            PEFT_OK)
        return st;
    *out = y;
    return PEFT_OK;
}

peft_status peft_softmax(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    return softmax(ctx, false, x, out);
}

peft_status peft_log_softmax(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    return softmax(ctx, true, x, out);
}
