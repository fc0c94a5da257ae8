/* Fused output layer + cross-entropy: loss = mean CE(h W^T, targets).
 *
 * The [N, V] logits are never kept: forward computes them a block of rows at
 * a time (one sgemm per block), turns each row into its loss and, right away,
 * into its gradient (softmax - onehot) / count, which is the only [N, V]
 * buffer kept. Backward scales it by the upstream gradient and runs two
 * sgemms: dh += G W and, only if W trains, dW += G^T h. Unfused, the same
 * computation holds logits, log-probabilities and their gradient: three
 * [N, V] buffers (x 50257 for GPT-2). */
#include <math.h>
#include <string.h>

#include "row_kernels.h"

typedef struct lce_saved {
    float *G;       /* [N, V]: d(loss)/d(logits) for an upstream gradient of 1 */
    int64_t N, V, C;
} lce_saved;

typedef struct rows_arg {
    float *G;          /* block of logits in, gradient out: [rows, V] */
    const int32_t *tg; /* targets of the block */
    double *loss;      /* per-row loss (0 for ignored rows) */
    int64_t V;
    int32_t ignore;
    float inv_count;
} rows_arg;

/* Each row: stable log-sum-exp (exp(x - max) in f32, summed in double), the
 * row's loss, and the gradient softmax / count written over the logits (the
 * exps are kept in place and scaled by 1 / (sum * count)). Rows are
 * independent: any thread split gives the same bits. */
static void rows_range(void *p, size_t begin, size_t end)
{
    const rows_arg *a = p;
    for (size_t r = begin; r < end; r++) {
        float *row = a->G + r * (size_t)a->V;
        const int32_t t = a->tg[r];
        if (t == a->ignore) {
            memset(row, 0, (size_t)a->V * sizeof(float));
            a->loss[r] = 0.0;
            continue;
        }
        const float mx = peft__row_max(row, a->V), logit_t = row[t];
        peft__row_exp_shift(row, a->V, mx);
        const double sum = peft__row_sum(row, a->V);
        a->loss[r] = (double)mx + log(sum) - logit_t;
        const float scale = a->inv_count;
        peft__row_scale(row, a->V, (float)((double)scale / sum));
        row[t] -= scale;
    }
}

static peft_status lce_backward(peft_ctx *ctx, peft__node *node)
{
    const lce_saved *s = node->saved;
    peft_tensor *h = node->in[0], *w = node->in[1];
    const float g = node->out->grad[0];
    if (g != 1.0f) /* scale the stored gradient by the upstream one */
        peft__row_scale(s->G, s->N * s->V, g);
    peft_status st;
    if (peft__needs_grad(h)) {
        float *dh;
        bool fresh;
        if ((st = peft__grad_buffer_fresh(ctx, h, &dh, &fresh)) != PEFT_OK) return st;
        if ((st = peft__linear_rows_dx_grad(ctx, s->G, w, s->N, dh, fresh)) != PEFT_OK) return st;
    }
    if (peft__needs_grad(w)) { /* dW[V, C] += G^T h */
        float *dw;
        if ((st = peft__grad_buffer(ctx, w, &dw)) != PEFT_OK) return st;
        peft__sgemm(ctx, true, false, s->V, s->C, s->N, 1.0f, s->G, s->V, h->data, peft__row_stride(h), 1.0f, dw, s->C);
    }
    return PEFT_OK;
}

peft_status peft_linear_cross_entropy(peft_ctx *ctx, peft_tensor *h, peft_tensor *w, peft_tensor *targets,
                                      int32_t ignore_index, peft_tensor **out)
{
    static const char op[] = "peft_linear_cross_entropy";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "h", h)) != PEFT_OK) return st;
    if ((st = peft__check_input(ctx, op, "w", w)) != PEFT_OK) return st;
    if ((st = peft__check_input(ctx, op, "targets", targets)) != PEFT_OK) return st;
    char sh[64], sw[64], stg[64];
    if (w->ndim != 2 || w->shape[1] != peft__cols(h))
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: h %s and weight %s (expected [V, %lld])", op,
                          peft__shape_str(h, sh, sizeof sh), peft__shape_str(w, sw, sizeof sw), (long long)peft__cols(h));
    if (peft__needs_grad(w) && w->dtype != PEFT_DTYPE_F32)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: a %s weight cannot train", op, peft_dtype_name(w->dtype));
    if ((st = peft__check_contiguous(ctx, op, "w", w)) != PEFT_OK) return st;
    if ((st = peft__check_rows(ctx, op, "h", h)) != PEFT_OK) return st;
    const int64_t N = peft__rows(h), V = w->shape[0], C = w->shape[1];
    if (targets->dtype != PEFT_DTYPE_I32 || peft_tensor_numel(targets) != N || !peft__is_contiguous(targets))
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: targets %s %s must be contiguous i32 with one entry per row of h %s", op,
                          peft_dtype_name(targets->dtype), peft__shape_str(targets, stg, sizeof stg),
                          peft__shape_str(h, sh, sizeof sh));
    const int32_t *tg = targets->data;
    int64_t count = 0;
    for (int64_t i = 0; i < N; i++) {
        if (tg[i] == ignore_index) continue;
        if (tg[i] < 0 || tg[i] >= V)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: targets[%lld] = %d is out of range [0, %lld) and is not ignore_index (%d)",
                              op, (long long)i, tg[i], (long long)V, ignore_index);
        count++;
    }
    const int64_t one = 1;
    peft_tensor *loss;
    if ((st = peft__new_output(ctx, op, 1, &one, &loss)) != PEFT_OK) return st;
    peft_tensor *in[2] = {h, w};
    const bool record = peft__should_record(ctx, in, 2);
    size_t gbytes;
    if (!peft__mul_ok((size_t)N, (size_t)V * sizeof(float), &gbytes))
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %lld x %lld logits overflow", op, (long long)N, (long long)V);
    /* with the tape: one [N, V] gradient buffer, filled by one product over
     * every row (W is packed once, not once per block); without: blocks of
     * rows, rewound after */
    const int64_t block = record ? N : (N < 128 ? N : 128);
    size_t mark = peft_arena_mark(ctx->arena);
    float *G = peft__scratch(ctx, (size_t)block * (size_t)V * sizeof(float), op);
    double *row_loss = peft__scratch(ctx, (size_t)N * sizeof(double), op);
    if (!G || !row_loss) return PEFT_ERR_NOMEM;
    const float inv = count ? 1.0f / (float)count : 0.0f;
    for (int64_t r0 = 0; r0 < N; r0 += block) {
        const int64_t rows = N - r0 < block ? N - r0 : block;
        float *Gb = record ? G + r0 * V : G;
        const float *hb = (const float *)h->data + r0 * peft__row_stride(h);
        if ((st = peft__linear_rows(ctx, hb, peft__row_stride(h), w, rows, Gb, 0.0f)) != PEFT_OK) return st;
        rows_arg a = {Gb, tg + r0, row_loss + r0, V, ignore_index, inv};
        peft__parallel_for(ctx, (size_t)rows, 1, rows_range, &a);
    }
    double total = 0.0;
    for (int64_t i = 0; i < N; i++) total += row_loss[i];
    ((float *)loss->data)[0] = count ? (float)(total / (double)count) : 0.0f;
    if (!record) {
        peft_arena_rewind(ctx->arena, mark);
        *out = loss;
        return PEFT_OK;
    }
    lce_saved *s = peft__scratch(ctx, sizeof *s, op);
    if (!s) return PEFT_ERR_NOMEM;
    s->G = G;
    s->N = N;
    s->V = V;
    s->C = C;
    if ((st = peft__record(ctx, op, lce_backward, loss, in, 2, s)) != PEFT_OK) return st;
    *out = loss;
    return PEFT_OK;
}
