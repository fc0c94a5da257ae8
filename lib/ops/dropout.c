/* Inverted dropout: out[i] = keep(i) ? x[i] / (1 - p) : 0.
 *
 * The mask is never stored. Each call draws one 64-bit seed from the context
 * PRNG and element i is kept when the counter-based hash peft__hash64(seed, i)
 * clears a threshold, so backward recomputes exactly the same mask from the
 * seed, and the mask is the same for any thread partition. */
#include "../internal.h"

typedef struct dropout_mask {
    uint64_t seed;
    uint64_t threshold; /* keep when the top 53 hash bits are >= threshold (= p * 2^53) */
    float scale;        /* 1 / (1 - p) */
} dropout_mask;

static inline bool dropout_keep(const dropout_mask *m, size_t i)
{
    return (peft__hash64(m->seed, (uint64_t)i) >> 11) >= m->threshold;
}

typedef struct dropout_arg {
    dropout_mask mask;
    const float *src; /* x in forward, dout in backward */
    float *dst;       /* out in forward (overwritten), dx in backward (accumulated) */
    bool accumulate;
} dropout_arg;

static void dropout_range(void *p, size_t begin, size_t end)
{
    const dropout_arg *a = p;
    const float scale = a->mask.scale;
    if (a->accumulate) {
        for (size_t i = begin; i < end; i++)
            if (dropout_keep(&a->mask, i)) a->dst[i] += a->src[i] * scale;
    } else {
        for (size_t i = begin; i < end; i++) a->dst[i] = dropout_keep(&a->mask, i) ? a->src[i] * scale : 0.0f;
    }
}

static peft_status dropout_backward(peft_ctx *ctx, peft__node *node)
{
    peft_tensor *x = node->in[0];
    float *dx;
    peft_status st = peft__grad_buffer(ctx, x, &dx);
    if (st != PEFT_OK) return st;
    dropout_arg a = {*(const dropout_mask *)node->saved, node->out->grad, dx, true};
    peft__parallel_for(ctx, (size_t)peft_tensor_numel(x), 4096, dropout_range, &a);
    return PEFT_OK;
}

peft_status peft_dropout(peft_ctx *ctx, peft_tensor *x, float p, int training, peft_tensor **out)
{
    static const char op[] = "peft_dropout";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if (!(p >= 0.0f && p < 1.0f)) /* also rejects NaN */
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: p = %g is not in [0, 1)", op, (double)p);
    if (!training || p == 0.0f) { /* identity: no copy, no node, no PRNG draw */
        *out = x;
        return PEFT_OK;
    }
    if ((st = peft__check_contiguous(ctx, op, "x", x)) != PEFT_OK) return st;
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, x->ndim, x->shape, &o)) != PEFT_OK) return st;
    dropout_mask m;
    m.seed = peft_ctx_rand_u64(ctx);
    m.threshold = (uint64_t)((double)p * 0x1.0p53); /* p < 1, so below 2^53 */
    m.scale = (float)(1.0 / (1.0 - (double)p));
    dropout_arg a = {m, x->data, o->data, false};
    peft__parallel_for(ctx, (size_t)peft_tensor_numel(x), 4096, dropout_range, &a);
    if (peft__should_record(ctx, &x, 1)) {
        dropout_mask *saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        *saved = m;
        if ((st = peft__record(ctx, op, dropout_backward, o, &x, 1, saved)) != PEFT_OK) return st;
    }
    *out = o;
    return PEFT_OK;
}
