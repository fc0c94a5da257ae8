/* Rotary position embedding: peft_rope, and the rotation kernel that
 * peft_attention reuses (one implementation for both).
 *
 * Within each head of D dims the first n_rot dims form n_rot/2 pairs; pair i
 * at position p turns by p * theta^(-2i/n_rot):
 *   x0' = x0 cos - x1 sin,   x1' = x0 sin + x1 cos.
 * INTERLEAVED pairs (x[2i], x[2i+1]) (Meta / llama.cpp "norm"); HALF pairs
 * (x[i], x[i + n_rot/2]) (Hugging Face rotate_half / "neox"). The angles are
 * computed once per position in double into a (cos, sin) table in the arena;
 * backward turns the gradient by the opposite angle, which is the transpose
 * of the rotation. */
#include <math.h>
#include <stdio.h>

#include "../internal.h"

peft_status peft__rope_check(peft_ctx *ctx, const char *op, peft_rope_mode mode, int D, int n_rot, float theta,
                             int *n_rot_out)
{
    if (mode != PEFT_ROPE_INTERLEAVED && mode != PEFT_ROPE_HALF)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                          "%s: rope mode %d (expected PEFT_ROPE_INTERLEAVED or PEFT_ROPE_HALF)", op, (int)mode);
    if (!(theta > 0.0f) || !isfinite(theta))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: rope theta %g must be positive and finite", op,
                          (double)theta);
    int r = n_rot == 0 ? D : n_rot;
    if (r <= 0 || r > D || r % 2 != 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                          "%s: rope dims %d with head size %d (need an even count in (0, %d]%s)", op, r, D, D,
                          n_rot == 0 ? "; an odd head size needs explicit rope dims" : "");
    *n_rot_out = r;
    return PEFT_OK;
}

/* ---- the (cos, sin) table ---- */

typedef struct table_arg {
    float *cs; /* [n_pos, n_rot] */
    int64_t pos0;
    int n_rot;
    double log_theta;
} table_arg;

static void table_range(void *p, size_t begin, size_t end)
{
    const table_arg *a = p;
    const int half = a->n_rot / 2;
    for (size_t r = begin; r < end; r++) {
        const double pos = (double)(a->pos0 + (int64_t)r);
        float *cs_p = a->cs + r * (size_t)a->n_rot;
        for (int i = 0; i < half; i++) {
            /* theta^(-2i/n_rot) */
            double inv_freq = exp(-2.0 * i / a->n_rot * a->log_theta);
            double ang = pos * inv_freq;
            cs_p[2 * i] = (float)cos(ang);
            cs_p[2 * i + 1] = (float)sin(ang);
        }
    }
}

float *peft__rope_table(peft_ctx *ctx, int64_t pos0, int64_t n_pos, int n_rot, float theta, const char *what)
{
    size_t n, bytes;
    if (n_pos <= 0 || !peft__mul_ok((size_t)n_pos, (size_t)n_rot, &n) || !peft__mul_ok(n, sizeof(float), &bytes)) {
        peft__fail(ctx, PEFT_ERR_SHAPE, "%s: rope table of %lld positions is too large", what, (long long)n_pos);
        return NULL;
    }
    float *cs = peft__scratch(ctx, bytes, what);
    if (!cs) return NULL;
    table_arg a = {cs, pos0, n_rot, log((double)theta)};
    peft__parallel_for(ctx, (size_t)n_pos, 64, table_range, &a);
    return cs;
}

/* ---- the rotation kernel ---- */

/* One row of n_head heads. dst == src is fine without PEFT__ROPE_ACCUM: each
 * pair is read before it is written. */
static void rope_row(peft_rope_mode mode, int n_head, int D, int n_rot, const float *cs_t, float *dst,
                     const float *src, unsigned flags)
{
    const int half = n_rot / 2;
    const bool accum = (flags & PEFT__ROPE_ACCUM) != 0;
    const float sgn = (flags & PEFT__ROPE_INVERSE) ? -1.0f : 1.0f;
    /* index of the second member of pair i, relative to the first */
    const int step = mode == PEFT_ROPE_INTERLEAVED ? 1 : half;
    const int stride = mode == PEFT_ROPE_INTERLEAVED ? 2 : 1;
    for (int h = 0; h < n_head; h++) {
        const float *x_h = src + (size_t)h * D;
        float *y_h = dst + (size_t)h * D;
        int i = 0;
        if (mode != PEFT_ROPE_INTERLEAVED) {
            /* pairs (i, i + half): blocks for the -O2 vectoriser, the same
             * arithmetic as the loop below. Each pair is read and written by
             * its own iteration only, so dst == src is fine here too. */
            for (; i + PEFT__VEC <= half; i += PEFT__VEC)
                PEFT__IVDEP
                for (int j = 0; j < PEFT__VEC; j++) {
                    const float c = cs_t[2 * (i + j)], s = sgn * cs_t[2 * (i + j) + 1];
                    const float x0 = x_h[i + j], x1 = x_h[i + j + half];
                    const float r0 = x0 * c - x1 * s, r1 = x0 * s + x1 * c;
                    y_h[i + j] = accum ? y_h[i + j] + r0 : r0;
                    y_h[i + j + half] = accum ? y_h[i + j + half] + r1 : r1;
                }
        }
        for (; i < half; i++) {
            const int i0 = i * stride, i1 = i0 + step;
            const float c = cs_t[2 * i], s = sgn * cs_t[2 * i + 1];
            const float x0 = x_h[i0], x1 = x_h[i1];
            const float r0 = x0 * c - x1 * s, r1 = x0 * s + x1 * c;
            if (accum) {
                y_h[i0] += r0;
                y_h[i1] += r1;
            } else {
                y_h[i0] = r0;
                y_h[i1] = r1;
            }
        }
        if (dst == src && !accum) continue;
        for (int j = n_rot; j < D; j++) y_h[j] = accum ? y_h[j] + x_h[j] : x_h[j];
    }
}

typedef struct rows_arg {
    peft_rope_mode mode;
    int n_head, D, n_rot;
    const float *cs;
    float *dst;
    const float *src;
    int64_t ldd, lds, T;
    unsigned flags;
} rows_arg;

static void rows_range(void *p, size_t begin, size_t end)
{
    const rows_arg *a = p;
    for (size_t n = begin; n < end; n++) { /* row n = (b, t) */
        const int64_t t = (int64_t)n % a->T;
        rope_row(a->mode, a->n_head, a->D, a->n_rot, a->cs + t * a->n_rot, a->dst + (int64_t)n * a->ldd,
                 a->src + (int64_t)n * a->lds, a->flags);
    }
}

void peft__rope_rows(peft_ctx *ctx, peft_rope_mode mode, int n_head, int D, int n_rot, const float *cs,
                     float *dst, int64_t ldd, const float *src, int64_t lds, int64_t B, int64_t T,
                     unsigned flags)
{
    PEFT_ASSERT(!(flags & PEFT__ROPE_ACCUM) || dst != src);
    rows_arg a = {mode, n_head, D, n_rot, cs, dst, src, ldd, lds, T, flags};
    size_t row_work = (size_t)n_head * (size_t)D;
    size_t grain = row_work >= 4096 ? 1 : 4096 / row_work;
    peft__parallel_for(ctx, (size_t)(B * T), grain, rows_range, &a);
}

/* ---- peft_rope ---- */

typedef struct rope_saved {
    peft_rope_mode mode;
    int n_head, D, n_rot;
    int64_t B, T;    /* B: all leading dims before T */
    const float *cs; /* [T, n_rot] */
} rope_saved;

/* out = R x  =>  dx += R^T dout, the rotation by the opposite angle. */
static peft_status rope_backward(peft_ctx *ctx, peft__node *node)
{
    const rope_saved *s = node->saved;
    peft_tensor *x = node->in[0];
    float *dx;
    peft_status st = peft__grad_buffer(ctx, x, &dx);
    if (st != PEFT_OK) return st;
    const int64_t C = (int64_t)s->n_head * s->D;
    peft__rope_rows(ctx, s->mode, s->n_head, s->D, s->n_rot, s->cs, dx, C, node->out->grad, C, s->B, s->T,
                    PEFT__ROPE_INVERSE | PEFT__ROPE_ACCUM);
    return PEFT_OK;
}

peft_status peft_rope(peft_ctx *ctx, peft_tensor *x, int n_head, peft_rope_mode mode, float theta, int n_rot,
                      int64_t pos0, peft_tensor **out)
{
    static const char op[] = "peft_rope";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    char sx[64];
    if (x->ndim < 2)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: x %s needs at least 2 dims ([B, T, H*D])", op,
                          peft__shape_str(x, sx, sizeof sx));
    if ((st = peft__check_rows(ctx, op, "x", x)) != PEFT_OK) return st;
    const int64_t C = peft__cols(x), T = x->shape[x->ndim - 2];
    if (n_head <= 0 || C % n_head != 0)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: n_head %d does not divide the last dim of x %s", op, n_head,
                          peft__shape_str(x, sx, sizeof sx));
    if (C / n_head > INT32_MAX)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: head size of x %s is too large", op,
                          peft__shape_str(x, sx, sizeof sx));
    const int D = (int)(C / n_head);
    int r;
    if ((st = peft__rope_check(ctx, op, mode, D, n_rot, theta, &r)) != PEFT_OK) {
        /* add the shape to the message */
        char msg[PEFT__ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "%s", peft_ctx_errmsg(ctx));
        return peft__fail(ctx, st, "%s (x %s, %d heads)", msg, peft__shape_str(x, sx, sizeof sx), n_head);
    }
    if (pos0 < 0 || pos0 > INT64_MAX - T)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: start position %lld is out of range", op, (long long)pos0);

    peft_tensor *y;
    if ((st = peft__new_output(ctx, op, x->ndim, x->shape, &y)) != PEFT_OK) return st;
    const bool record = peft__should_record(ctx, &x, 1);
    size_t mark = peft_arena_mark(ctx->arena);
    rope_saved *saved = NULL;
    if (record && !(saved = peft__scratch(ctx, sizeof *saved, op))) return PEFT_ERR_NOMEM;
    float *cs = peft__rope_table(ctx, pos0, T, r, theta, op); /* [T, r] */
    if (!cs) return PEFT_ERR_NOMEM;
    const int64_t B = peft__rows(x) / T;
    peft__rope_rows(ctx, mode, n_head, D, r, cs, y->data, C, x->data, peft__row_stride(x), B, T, 0);
    if (record) {
        *saved = (rope_saved){mode, n_head, D, r, B, T, cs};
        if ((st = peft__record(ctx, op, rope_backward, y, &x, 1, saved)) != PEFT_OK) return st;
    } else {
        peft_arena_rewind(ctx->arena, mark); /* the table is only needed by backward */
    }
    *out = y;
    return PEFT_OK;
}
