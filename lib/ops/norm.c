/* Normalisation over the last dim: LayerNorm and RMSNorm.
 *
 *   layernorm: y = (x - mean) * rstd * w + b,  rstd = 1/sqrt(var + eps)
 *              (biased variance, as torch.nn.LayerNorm)
 *   rmsnorm:   y = x * rstd * w,               rstd = 1/sqrt(mean(x^2) + eps)
 *              (Zhang & Sennrich 2019; Llama's RMSNorm)
 *
 * Both are one kernel with `center` telling whether the mean is subtracted.
 * Row statistics are computed in double (two passes for the variance, so a
 * large mean does not cancel the spread) and saved per row, like llm.c's
 * ln_mean / ln_rstd, so backward needs no second reduction over x.
 *
 * Threads: forward and dx split the N rows (each row is one thread's work);
 * dw/db split the C columns and sum each column over the rows in row order.
 * Neither depends on the partition, so results match for any thread count. */
#include <math.h>
#include <string.h>

#include "row_kernels.h"

typedef struct norm_saved {
    bool center;  /* layernorm (true) or rmsnorm (false) */
    int64_t N, C; /* rows, channels */
    double *mean; /* (N) row means; NULL for rmsnorm */
    double *rstd; /* (N) 1/sqrt(var + eps) or 1/sqrt(mean(x^2) + eps) */
} norm_saved;

/* Rows per thread chunk so that a chunk holds about 4096 elements. */
static size_t row_grain(int64_t C) { return (size_t)(4096 / (C > 0 ? C : 1) + 1); }

/* ---- row sums, written for the -O2 vectoriser (see PEFT__VEC): PEFT__VEC
 * lane sums in double, added in lane order at the end, so a row's result
 * depends only on the row. ---- */

/* sum of (x[c] - m)^2 over the row */
static double row_sumsq(const float *x, int64_t C, double m)
{
    double acc[PEFT__VEC] = {0};
    int64_t c = 0;
    for (; c + PEFT__VEC <= C; c += PEFT__VEC)
        for (int64_t j = 0; j < PEFT__VEC; j++) {
            const double d = x[c + j] - m;
            acc[j] += d * d;
        }
    double s = 0.0;
    for (int64_t j = 0; j < PEFT__VEC; j++) s += acc[j];
    for (; c < C; c++) {
        const double d = x[c] - m;
        s += d * d;
    }
    return s;
}

/* ---- forward ---- */

typedef struct norm_fwd_arg {
    bool center;
    int64_t C;
    double eps;
    const float *x; /* (N, C) */
    const float *w; /* (C) or NULL */
    const float *b; /* (C) or NULL */
    float *y;       /* (N, C) */
    double *mean;   /* (N) or NULL (not recording, or rmsnorm) */
    double *rstd;   /* (N) or NULL (not recording) */
} norm_fwd_arg;

/* y[c] = xhat * w + b with the factors that exist (the output is a new
 * tensor: no overlap with x, w or b). */
#define NORM_Y_LOOP(EXPR)                                                         \
    do {                                                                          \
        int64_t c_ = 0;                                                           \
        for (; c_ + PEFT__VEC <= C; c_ += PEFT__VEC)                              \
            PEFT__IVDEP                                                           \
            for (int64_t j_ = 0; j_ < PEFT__VEC; j_++) {                          \
                const int64_t c = c_ + j_;                                        \
                const float xhat = (float)((x_n[c] - m) * rs);                   \
                y_n[c] = EXPR;                                                    \
            }                                                                     \
        for (int64_t c = c_; c < C; c++) {                                        \
            const float xhat = (float)((x_n[c] - m) * rs);                       \
            y_n[c] = EXPR;                                                        \
        }                                                                         \
    } while (0)

static void norm_fwd_range(void *p, size_t begin, size_t end)
{
    const norm_fwd_arg *a = p;
    const int64_t C = a->C;
    const float *w = a->w, *b = a->b;
    for (size_t n = begin; n < end; n++) {
        const float *x_n = a->x + n * C;
        float *y_n = a->y + n * C;
        const double m = a->center ? peft__row_sum(x_n, C) / (double)C : 0.0;
        /* second pass around the mean: var for layernorm, mean(x^2) for rmsnorm */
        const double v = row_sumsq(x_n, C, m) / (double)C;
        const double rs = 1.0 / sqrt(v + a->eps);
        if (w && b) NORM_Y_LOOP(xhat * w[c] + b[c]);
        else if (w) NORM_Y_LOOP(xhat * w[c] + 0.0f);
        else if (b) NORM_Y_LOOP(xhat * 1.0f + b[c]);
        else NORM_Y_LOOP(xhat * 1.0f + 0.0f);
        if (a->mean) a->mean[n] = m;
        if (a->rstd) a->rstd[n] = rs;
    }
}

/* ---- backward ---- */

typedef struct norm_bwd_arg {
    const norm_saved *s;
    const float *x;    /* (N, C) */
    const float *w;    /* (C) or NULL */
    const float *dout; /* (N, C) */
    float *dx;         /* (N, C), accumulated (written when dx_fresh) */
    bool dx_fresh;     /* dx is a new uninitialised buffer */
    float *dw, *db;    /* (C) or NULL, accumulated */
    double *acc_w;     /* (C) double column sums for dw, or NULL */
    double *acc_b;     /* (C) double column sums for db, or NULL */
} norm_bwd_arg;

/* dx per row. With xhat = (x - mean) * rstd and g = dout * w:
 *   layernorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
 *   rmsnorm:   dx = rstd * (g - xhat * mean(g * xhat))
 * (the mean(g) term is the path through the row mean). */
/* One row of dx with the weight factor W(c) (w[c], or 1 without a weight,
 * as separate loops: a conditional load would stop the vectoriser). dx is
 * x's gradient buffer: never overlaps x, dout or w. */
#define NORM_DX_ROW(W)                                                                                       \
    do {                                                                                                     \
        double acc_g[PEFT__VEC] = {0}, acc_gx[PEFT__VEC] = {0};                                              \
        int64_t c = 0;                                                                                       \
        for (; c + PEFT__VEC <= C; c += PEFT__VEC)                                                           \
            for (int64_t j = 0; j < PEFT__VEC; j++) {                                                        \
                const double g = (double)dout_n[c + j] * W(c + j);                                           \
                acc_g[j] += g;                                                                               \
                acc_gx[j] += g * ((x_n[c + j] - m) * rs);                                                    \
            }                                                                                                \
        double sum_g = 0.0, sum_gx = 0.0;                                                                    \
        for (int64_t j = 0; j < PEFT__VEC; j++) {                                                            \
            sum_g += acc_g[j];                                                                               \
            sum_gx += acc_gx[j];                                                                             \
        }                                                                                                    \
        for (; c < C; c++) {                                                                                 \
            const double g = (double)dout_n[c] * W(c);                                                       \
            sum_g += g;                                                                                      \
            sum_gx += g * ((x_n[c] - m) * rs);                                                               \
        }                                                                                                    \
        const double mean_g = s->center ? sum_g / (double)C : 0.0, mean_gx = sum_gx / (double)C;             \
        if (a->dx_fresh) {                                                                                   \
            for (c = 0; c + PEFT__VEC <= C; c += PEFT__VEC)                                                  \
                PEFT__IVDEP                                                                                  \
                for (int64_t j = 0; j < PEFT__VEC; j++)                                                      \
                    dx_n[c + j] = (float)(rs * ((double)dout_n[c + j] * W(c + j) - mean_g -                  \
                                                ((x_n[c + j] - m) * rs) * mean_gx));                         \
            for (; c < C; c++)                                                                               \
                dx_n[c] = (float)(rs * ((double)dout_n[c] * W(c) - mean_g - ((x_n[c] - m) * rs) * mean_gx)); \
        } else {                                                                                             \
            for (c = 0; c + PEFT__VEC <= C; c += PEFT__VEC)                                                  \
                PEFT__IVDEP                                                                                  \
                for (int64_t j = 0; j < PEFT__VEC; j++)                                                      \
                    dx_n[c + j] += (float)(rs * ((double)dout_n[c + j] * W(c + j) - mean_g -                 \
                                                 ((x_n[c + j] - m) * rs) * mean_gx));                        \
            for (; c < C; c++)                                                                               \
                dx_n[c] += (float)(rs * ((double)dout_n[c] * W(c) - mean_g - ((x_n[c] - m) * rs) * mean_gx)); \
        }                                                                                                    \
    } while (0)
#define NORM_W(c) w[c]
#define NORM_ONE(c) 1.0f

static void norm_dx_range(void *p, size_t begin, size_t end)
{
    const norm_bwd_arg *a = p;
    const norm_saved *s = a->s;
    const int64_t C = s->C;
    const float *w = a->w;
    for (size_t n = begin; n < end; n++) {
        const float *x_n = a->x + n * C, *dout_n = a->dout + n * C;
        float *dx_n = a->dx + n * C;
        const double m = s->center ? s->mean[n] : 0.0, rs = s->rstd[n];
        if (w) NORM_DX_ROW(NORM_W);
        else NORM_DX_ROW(NORM_ONE);
    }
}

/* dw[c] += sum_n dout[n, c] * xhat[n, c]; db[c] += sum_n dout[n, c].
 * The range is over columns; rows are walked in order with double sums. */
static void norm_dwb_range(void *p, size_t begin, size_t end)
{
    const norm_bwd_arg *a = p;
    const norm_saved *s = a->s;
    const int64_t C = s->C;
    for (size_t c = begin; c < end; c++) {
        if (a->acc_w) a->acc_w[c] = 0.0;
        if (a->acc_b) a->acc_b[c] = 0.0;
    }
    double *acc_w = a->acc_w, *acc_b = a->acc_b; /* scratch: no overlap with x or dout */
    for (int64_t n = 0; n < s->N; n++) {
        const float *x_n = a->x + n * C, *dout_n = a->dout + n * C;
        const double m = s->center ? s->mean[n] : 0.0, rs = s->rstd[n];
        size_t c = begin;
        if (acc_w) {
            for (; c + PEFT__VEC <= end; c += PEFT__VEC)
                PEFT__IVDEP
                for (size_t j = 0; j < PEFT__VEC; j++)
                    acc_w[c + j] += (double)dout_n[c + j] * ((x_n[c + j] - m) * rs);
            for (; c < end; c++) acc_w[c] += (double)dout_n[c] * ((x_n[c] - m) * rs);
        }
        if (acc_b) {
            for (c = begin; c + PEFT__VEC <= end; c += PEFT__VEC)
                PEFT__IVDEP
                for (size_t j = 0; j < PEFT__VEC; j++) acc_b[c + j] += dout_n[c + j];
            for (; c < end; c++) acc_b[c] += dout_n[c];
        }
    }
    for (size_t c = begin; c < end; c++) {
        if (a->dw) a->dw[c] += (float)a->acc_w[c];
        if (a->db) a->db[c] += (float)a->acc_b[c];
    }
}

static peft_status norm_backward(peft_ctx *ctx, peft__node *node)
{
    const norm_saved *s = node->saved;
    peft_tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    norm_bwd_arg a = {.s = s, .x = x->data, .w = w ? w->data : NULL, .dout = node->out->grad};
    peft_status st;
    if (peft__needs_grad(x) && (st = peft__grad_buffer_fresh(ctx, x, &a.dx, &a.dx_fresh)) != PEFT_OK) return st;
    if (peft__needs_grad(w) && (st = peft__grad_buffer(ctx, w, &a.dw)) != PEFT_OK) return st;
    if (peft__needs_grad(b) && (st = peft__grad_buffer(ctx, b, &a.db)) != PEFT_OK) return st;
    if (a.dx) peft__parallel_for(ctx, (size_t)s->N, row_grain(s->C), norm_dx_range, &a);
    if (a.dw || a.db) {
        /* column sums in double: temporary, released before returning */
        size_t mark = peft_arena_mark(ctx->arena);
        size_t bytes = (size_t)s->C * sizeof(double);
        if (a.dw && !(a.acc_w = peft__scratch(ctx, bytes, node->op))) return PEFT_ERR_NOMEM;
        if (a.db && !(a.acc_b = peft__scratch(ctx, bytes, node->op))) return PEFT_ERR_NOMEM;
        peft__parallel_for(ctx, (size_t)s->C, 256, norm_dwb_range, &a);
        peft_arena_rewind(ctx->arena, mark);
    }
    return PEFT_OK;
}

/* ---- entry ---- */

static peft_status check_param(peft_ctx *ctx, const char *op, const char *arg, const peft_tensor *p,
                               const peft_tensor *x)
{
    peft_status st;
    if ((st = peft__check_f32(ctx, op, arg, p)) != PEFT_OK) return st;
    if (p->ndim != 1 || p->shape[0] != peft__cols(x)) {
        char sp[64], sx[64];
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %s %s does not match x %s (expected [%lld])", op, arg,
                          peft__shape_str(p, sp, sizeof sp), peft__shape_str(x, sx, sizeof sx),
                          (long long)peft__cols(x));
    }
    return peft__check_contiguous(ctx, op, arg, p);
}

static peft_status norm(peft_ctx *ctx, const char *op, bool center, peft_tensor *x, peft_tensor *w,
                        peft_tensor *b, float eps, peft_tensor **out)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "x", x)) != PEFT_OK) return st;
    if (w && (st = check_param(ctx, op, "w", w, x)) != PEFT_OK) return st;
    if (b && (st = check_param(ctx, op, "b", b, x)) != PEFT_OK) return st;
    if (!(eps >= 0.0f) || !isfinite(eps))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: eps %g must be finite and >= 0", op, (double)eps);
    const int64_t N = peft__rows(x), C = peft__cols(x);
    peft_tensor *y;
    if ((st = peft__new_output(ctx, op, x->ndim, x->shape, &y)) != PEFT_OK) return st;
    peft_tensor *in[3] = {x, w, b};
    const int n_in = center ? 3 : 2;
    const bool record = peft__should_record(ctx, in, n_in);
    norm_saved *saved = NULL;
    if (record) {
        saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        memset(saved, 0, sizeof *saved);
        saved->center = center;
        saved->N = N;
        saved->C = C;
        size_t bytes;
        if (!peft__mul_ok((size_t)N, sizeof(double), &bytes))
            return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %lld rows are too many", op, (long long)N);
        if (!(saved->rstd = peft__scratch(ctx, bytes, op))) return PEFT_ERR_NOMEM;
        if (center && !(saved->mean = peft__scratch(ctx, bytes, op))) return PEFT_ERR_NOMEM;
    }
    norm_fwd_arg a = {.center = center,
                      .C = C,
                      .eps = eps,
                      .x = x->data,
                      .w = w ? w->data : NULL,
                      .b = b ? b->data : NULL,
                      .y = y->data,
                      .mean = saved ? saved->mean : NULL,
                      .rstd = saved ? saved->rstd : NULL};
    peft__parallel_for(ctx, (size_t)N, row_grain(C), norm_fwd_range, &a);
    if (record && (st = peft__record(ctx, op, norm_backward, y, in, n_in, saved)) != PEFT_OK) return st;
    *out = y;
    return PEFT_OK;
}

peft_status peft_layernorm(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, peft_tensor *b, float eps,
                           peft_tensor **out)
{
    return norm(ctx, "peft_layernorm", true, x, w, b, eps, out);
}

peft_status peft_rmsnorm(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, float eps, peft_tensor **out)
{
    return norm(ctx, "peft_rmsnorm", false, x, w, NULL, eps, out);
}
