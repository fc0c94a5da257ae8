/* Cross-entropy of logits against integer targets, mean over the counted rows.
 *
 * logits: (N, V) seen as rows (rows may be strided); targets: (N) i32.
 *   loss_n = lse_n - x[n, t_n],  lse_n = log sum_j exp(x[n, j])
 *   loss   = sum over counted n of loss_n / count      (0 when count is 0)
 *   dx[n, j] = (exp(x[n, j] - lse_n) - [j == t_n]) * dloss / count
 * Forward keeps only lse_n per row (not the softmax): backward recomputes the
 * probabilities from the logits, which costs one exp per element but no
 * N x V buffer.
 *
 * The row kernels work on a chunk of a row at a time (a running max and sum,
 * rescaled when the max grows), so a fused "lm-head + cross-entropy" op can
 * feed them vocabulary chunks without materialising a full row of logits. */
#include <math.h>
#include <string.h>

#include "../internal.h"

/* ---- row kernels ---- */

/* Running log-sum-exp of a row fed in chunks: max m and sum of exp(x - m).
 * exp is taken in float (x - m <= 0, no overflow), the sum kept in double. */
typedef struct lse_acc {
    float max;
    double sum;
} lse_acc;

static inline void lse_acc_init(lse_acc *a)
{
    a->max = -INFINITY;
    a->sum = 0.0;
}

static void lse_acc_chunk(lse_acc *a, const float *x, int64_t n)
{
    float m = a->max;
    for (int64_t j = 0; j < n; j++)
        if (x[j] > m) m = x[j];
    if (m == -INFINITY) return; /* nothing but -inf so far: contributes exp(-inf) = 0 */
    if (m > a->max && a->sum > 0.0) a->sum *= exp((double)a->max - (double)m);
    a->max = m;
    double s = 0.0;
    for (int64_t j = 0; j < n; j++) s += (double)expf(x[j] - m);
    a->sum += s;
}

static inline float lse_acc_value(const lse_acc *a)
{
    return (float)((double)a->max + log(a->sum)); /* -inf for an all -inf row */
}

/* dx[j] += g * (softmax_j - [j0 + j == target]) for a chunk of n logits that
 * starts at column j0 of its row; lse is the whole row's log-sum-exp. */
static void ce_grad_chunk(float *dx, const float *x, int64_t n, int64_t j0, int32_t target, float lse, float g)
{
    for (int64_t j = 0; j < n; j++) dx[j] += g * expf(x[j] - lse);
    int64_t t = (int64_t)target - j0;
    if (t >= 0 && t < n) dx[t] -= g;
}

/* ---- the op ---- */

typedef struct ce_saved {
    const int32_t *tgt; /* (N) target, or -1 for an ignored row (a copy) */
    const float *lse;   /* (N) per-row log-sum-exp; unset on ignored rows */
    int64_t N, V, ldx;  /* ldx: elements between logit rows */
    int64_t count;      /* rows that count */
} ce_saved;

typedef struct ce_fwd_arg {
    const float *x; /* (N, V) with row stride ldx */
    const int32_t *tgt;
    float *lse;     /* (N) */
    double *loss_n; /* (N) 0 on ignored rows */
    int64_t V, ldx;
} ce_fwd_arg;

static void ce_fwd_range(void *p, size_t begin, size_t end)
{
    const ce_fwd_arg *a = p;
    for (size_t n = begin; n < end; n++) {
        if (a->tgt[n] < 0) {
            a->loss_n[n] = 0.0;
            continue;
        }
        const float *x_n = a->x + n * (size_t)a->ldx;
        lse_acc acc;
        lse_acc_init(&acc);
        lse_acc_chunk(&acc, x_n, a->V);
        a->lse[n] = lse_acc_value(&acc);
        a->loss_n[n] = (double)acc.max + log(acc.sum) - (double)x_n[a->tgt[n]];
    }
}

typedef struct ce_bwd_arg {
    const ce_saved *s;
    const float *x;
    float *dx; /* (N, V) contiguous */
    float g;   /* dloss / count */
} ce_bwd_arg;

static void ce_bwd_range(void *p, size_t begin, size_t end)
{
    const ce_bwd_arg *a = p;
    const ce_saved *s = a->s;
    for (size_t n = begin; n < end; n++)
        if (s->tgt[n] >= 0)
            ce_grad_chunk(a->dx + n * (size_t)s->V, a->x + n * (size_t)s->ldx, s->V, 0, s->tgt[n], s->lse[n], a->g);
}

static size_t ce_grain(int64_t V) { return (size_t)(32768 / V + 1); }

static peft_status cross_entropy_backward(peft_ctx *ctx, peft__node *node)
{
    const ce_saved *s = node->saved;
    peft_tensor *logits = node->in[0];
    if (s->count == 0) return PEFT_OK; /* every row ignored: the gradient is zero */
    float *dx;
    peft_status st = peft__grad_buffer(ctx, logits, &dx);
    if (st != PEFT_OK) return st;
    ce_bwd_arg a = {s, logits->data, dx, (float)((double)node->out->grad[0] / (double)s->count)};
    peft__parallel_for(ctx, (size_t)s->N, ce_grain(s->V), ce_bwd_range, &a);
    return PEFT_OK;
}

/* Targets must have the logits' leading shape; a 1-D logits row takes one target. */
static bool targets_match(const peft_tensor *logits, const peft_tensor *targets)
{
    if (logits->ndim == 1) return peft_tensor_numel(targets) == 1;
    if (targets->ndim != logits->ndim - 1) return false;
    for (int i = 0; i < targets->ndim; i++)
        if (targets->shape[i] != logits->shape[i]) return false;
    return true;
}

peft_status peft_cross_entropy(peft_ctx *ctx, peft_tensor *logits, peft_tensor *targets, int32_t ignore_index,
                               peft_tensor **out)
{
    static const char op[] = "peft_cross_entropy";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "logits", logits)) != PEFT_OK) return st;
    if ((st = peft__check_input(ctx, op, "targets", targets)) != PEFT_OK) return st;
    if (targets->dtype != PEFT_DTYPE_I32)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: targets are %s, expected i32", op,
                          peft_dtype_name(targets->dtype));
    char sl[64], stg[64];
    if (!targets_match(logits, targets))
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: targets %s do not match the leading dims of logits %s", op,
                          peft__shape_str(targets, stg, sizeof stg), peft__shape_str(logits, sl, sizeof sl));
    if ((st = peft__check_rows(ctx, op, "logits", logits)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "targets", targets)) != PEFT_OK) return st;
    const int64_t N = peft__rows(logits), V = peft__cols(logits);
    if (V > INT32_MAX)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: vocabulary %lld does not fit i32 targets", op, (long long)V);

    /* validate every target before any work */
    const int32_t *t_in = targets->data;
    int64_t count = 0;
    for (int64_t n = 0; n < N; n++) {
        int32_t t = t_in[n];
        if (t == ignore_index) continue;
        if (t < 0 || t >= V)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                              "%s: targets[%lld] = %d is out of range [0, %lld) and is not ignore_index (%d)", op,
                              (long long)n, (int)t, (long long)V, (int)ignore_index);
        count++;
    }

    const int64_t one = 1;
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, 1, &one, &o)) != PEFT_OK) return st;
    /* everything past the mark is only kept when backward needs it */
    const size_t mark = peft_arena_mark(ctx->arena);
    int32_t *tgt = peft__scratch(ctx, (size_t)N * sizeof *tgt, op);   /* (N) ignored -> -1 */
    float *lse = peft__scratch(ctx, (size_t)N * sizeof *lse, op);      /* (N) */
    double *loss_n = peft__scratch(ctx, (size_t)N * sizeof *loss_n, op); /* (N) */
    if (!tgt || !lse || !loss_n) return PEFT_ERR_NOMEM;
    for (int64_t n = 0; n < N; n++) tgt[n] = t_in[n] == ignore_index ? -1 : t_in[n];
    const int64_t ldx = peft__row_stride(logits);
    ce_fwd_arg fa = {logits->data, tgt, lse, loss_n, V, ldx};
    peft__parallel_for(ctx, (size_t)N, ce_grain(V), ce_fwd_range, &fa);
    /* the mean is summed in row order, whatever the thread count */
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) total += loss_n[n];
    ((float *)o->data)[0] = count > 0 ? (float)(total / (double)count) : 0.0f;

    if (peft__should_record(ctx, &logits, 1)) {
        ce_saved *saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        *saved = (ce_saved){tgt, lse, N, V, ldx, count};
        peft_tensor *in[2] = {logits, targets};
        if ((st = peft__record(ctx, op, cross_entropy_backward, o, in, 2, saved)) != PEFT_OK) return st;
    } else {
        peft_arena_rewind(ctx->arena, mark);
    }
    *out = o;
    return PEFT_OK;
}
