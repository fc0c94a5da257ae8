/* Matrix products through sgemm: peft_matmul (batched, with transposes) and
 * peft_linear (y = x W^T + b, with frozen f16/bf16 weights converted in
 * f32 tiles). Backward skips every product whose result nobody needs: a frozen
 * weight never costs a weight-gradient GEMM. */
#include <string.h>

#include "../internal.h"

/* ---- matmul ---- */

typedef struct matmul_saved {
    bool ta, tb, shared_b; /* shared_b: b is 2-D and used by every batch index */
    int64_t batch, M, N, K;
} matmul_saved;

static peft_status matmul_backward(peft_ctx *ctx, peft__node *node)
{
    const matmul_saved *s = node->saved;
    peft_tensor *a = node->in[0], *b = node->in[1];
    const float *A = a->data, *B = b->data, *dC = node->out->grad;
    const int64_t M = s->M, N = s->N, K = s->K;
    const int64_t lda = s->ta ? M : K, ldb = s->tb ? K : N;
    if (peft__needs_grad(a)) {
        float *dA;
        peft_status st = peft__grad_buffer(ctx, a, &dA);
        if (st != PEFT_OK) return st;
        for (int64_t i = 0; i < s->batch; i++) {
            const float *Bi = s->shared_b ? B : B + i * K * N;
            const float *dCi = dC + i * M * N;
            float *dAi = dA + i * M * K;
            if (!s->ta) /* dA[M,K] += dC op(B)^T */
                peft__sgemm(ctx, false, !s->tb, M, K, N, 1.0f, dCi, N, Bi, ldb, 1.0f, dAi, K);
            else /* dA[K,M] += op(B) dC^T */
                peft__sgemm(ctx, s->tb, true, K, M, N, 1.0f, Bi, ldb, dCi, N, 1.0f, dAi, M);
        }
    }
    if (peft__needs_grad(b)) {
        float *dB;
        peft_status st = peft__grad_buffer(ctx, b, &dB);
        if (st != PEFT_OK) return st;
        for (int64_t i = 0; i < s->batch; i++) {
            const float *Ai = A + i * M * K, *dCi = dC + i * M * N;
            float *dBi = s->shared_b ? dB : dB + i * K * N;
            if (!s->tb) /* dB[K,N] += op(A)^T dC */
                peft__sgemm(ctx, !s->ta, false, K, N, M, 1.0f, Ai, lda, dCi, N, 1.0f, dBi, N);
            else /* dB[N,K] += dC^T op(A) */
                peft__sgemm(ctx, true, s->ta, N, K, M, 1.0f, dCi, N, Ai, lda, 1.0f, dBi, K);
        }
    }
    return PEFT_OK;
}

peft_status peft_matmul(peft_ctx *ctx, peft_tensor *a, peft_tensor *b, int flags, peft_tensor **out)
{
    static const char op[] = "peft_matmul";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "a", a)) != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "b", b)) != PEFT_OK) return st;
    if (flags & ~(PEFT_TRANS_A | PEFT_TRANS_B))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: unknown flags 0x%x", op, flags);
    char sa[64], sb[64];
    if (a->ndim < 2 || b->ndim < 2)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: a %s and b %s need at least 2 dims", op,
                          peft__shape_str(a, sa, sizeof sa), peft__shape_str(b, sb, sizeof sb));
    if ((st = peft__check_contiguous(ctx, op, "a", a)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "b", b)) != PEFT_OK) return st;
    matmul_saved s = {.ta = (flags & PEFT_TRANS_A) != 0, .tb = (flags & PEFT_TRANS_B) != 0};
    int na = a->ndim, nb = b->ndim;
    s.M = s.ta ? a->shape[na - 1] : a->shape[na - 2];
    s.K = s.ta ? a->shape[na - 2] : a->shape[na - 1];
    int64_t kb = s.tb ? b->shape[nb - 1] : b->shape[nb - 2];
    s.N = s.tb ? b->shape[nb - 2] : b->shape[nb - 1];
    s.batch = 1;
    for (int i = 0; i < na - 2; i++) s.batch *= a->shape[i];
    s.shared_b = nb == 2;
    bool lead_ok = s.shared_b || nb == na;
    for (int i = 0; lead_ok && !s.shared_b && i < na - 2; i++) lead_ok = a->shape[i] == b->shape[i];
    if (kb != s.K || !lead_ok)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: a %s%s and b %s%s do not multiply", op,
                          peft__shape_str(a, sa, sizeof sa), s.ta ? "^T" : "", peft__shape_str(b, sb, sizeof sb),
                          s.tb ? "^T" : "");
    int64_t shape[PEFT_MAX_DIMS];
    for (int i = 0; i < na - 2; i++) shape[i] = a->shape[i];
    shape[na - 2] = s.M;
    shape[na - 1] = s.N;
    peft_tensor *c;
    if ((st = peft__new_output(ctx, op, na, shape, &c)) != PEFT_OK) return st;
    const float *A = a->data, *B = b->data;
    float *C = c->data;
    const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    if (s.shared_b && !s.ta) {
        /* rows of every batch index stack into one tall GEMM */
        peft__sgemm(ctx, false, s.tb, s.batch * s.M, s.N, s.K, 1.0f, A, lda, B, ldb, 0.0f, C, s.N);
    } else {
        for (int64_t i = 0; i < s.batch; i++)
            peft__sgemm(ctx, s.ta, s.tb, s.M, s.N, s.K, 1.0f, A + i * s.M * s.K, lda,
                        s.shared_b ? B : B + i * s.K * s.N, ldb, 0.0f, C + i * s.M * s.N, s.N);
    }
    peft_tensor *in[2] = {a, b};
    if (peft__should_record(ctx, in, 2)) {
        matmul_saved *saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        *saved = s;
        if ((st = peft__record(ctx, op, matmul_backward, c, in, 2, saved)) != PEFT_OK) return st;
    }
    *out = c;
    return PEFT_OK;
}

/* ---- linear ---- */

/* Rows of W converted per tile: about 256 KiB of f32. */
static int64_t tile_rows(int64_t in)
{
    int64_t r = (64 * 1024) / (in > 0 ? in : 1);
    return r < 1 ? 1 : r;
}

/* out[N, OC] (+)= x[N, C] W^T for any storage dtype of W [OC, C]. */
peft_status peft__linear_rows(peft_ctx *ctx, const float *x, int64_t ldx, const peft_tensor *w, int64_t N, float *out,
                              float beta)
{
    const int64_t OC = w->shape[0], C = w->shape[1];
    if (w->dtype == PEFT_DTYPE_F32) {
        peft__sgemm(ctx, false, true, N, OC, C, 1.0f, x, ldx, w->data, C, beta, out, OC);
        return PEFT_OK;
    }
    const int64_t tr = tile_rows(C);
    size_t mark = peft_arena_mark(ctx->arena);
    float *tile = peft__scratch(ctx, (size_t)(tr * C) * sizeof(float), "peft_linear");
    if (!tile) return PEFT_ERR_NOMEM;
    for (int64_t o0 = 0; o0 < OC; o0 += tr) {
        int64_t rows = OC - o0 < tr ? OC - o0 : tr;
        peft_status st = peft__to_f32(w->dtype, w->data, (size_t)(o0 * C), (size_t)(rows * C), tile);
        if (st != PEFT_OK) return peft__fail(ctx, st, "peft_linear: weight dtype %s", peft_dtype_name(w->dtype));
        peft__sgemm(ctx, false, true, N, rows, C, 1.0f, x, ldx, tile, C, beta, out + o0, OC);
    }
    peft_arena_rewind(ctx->arena, mark);
    return PEFT_OK;
}

/* dx[N, C] += dout[N, OC] W. */
peft_status peft__linear_rows_dx(peft_ctx *ctx, const float *dout, const peft_tensor *w, int64_t N, float *dx)
{
    const int64_t OC = w->shape[0], C = w->shape[1];
    if (w->dtype == PEFT_DTYPE_F32) {
        peft__sgemm(ctx, false, false, N, C, OC, 1.0f, dout, OC, w->data, C, 1.0f, dx, C);
        return PEFT_OK;
    }
    const int64_t tr = tile_rows(C);
    size_t mark = peft_arena_mark(ctx->arena);
    float *tile = peft__scratch(ctx, (size_t)(tr * C) * sizeof(float), "peft_linear backward");
    if (!tile) return PEFT_ERR_NOMEM;
    for (int64_t o0 = 0; o0 < OC; o0 += tr) {
        int64_t rows = OC - o0 < tr ? OC - o0 : tr;
        peft_status st = peft__to_f32(w->dtype, w->data, (size_t)(o0 * C), (size_t)(rows * C), tile);
        if (st != PEFT_OK) return peft__fail(ctx, st, "peft_linear: weight dtype %s", peft_dtype_name(w->dtype));
        peft__sgemm(ctx, false, false, N, C, rows, 1.0f, dout + o0, OC, tile, C, 1.0f, dx, C);
    }
    peft_arena_rewind(ctx->arena, mark);
    return PEFT_OK;
}

peft_status peft__linear_rows_dx_grad(peft_ctx *ctx, const float *dout, const peft_tensor *w, int64_t N, float *dx,
                                      bool fresh)
{
    const int64_t OC = w->shape[0], C = w->shape[1];
    if (fresh && w->dtype == PEFT_DTYPE_F32) {
        peft__sgemm(ctx, false, false, N, C, OC, 1.0f, dout, OC, w->data, C, 0.0f, dx, C);
        return PEFT_OK;
    }
    if (fresh) memset(dx, 0, (size_t)(N * C) * sizeof *dx);
    return peft__linear_rows_dx(ctx, dout, w, N, dx);
}

typedef struct bias_rows_arg {
    const float *dout;
    float *db;
    int64_t N, OC;
} bias_rows_arg;

/* db[o] += sum over rows of dout[:, o]; columns are split across threads and
 * each column is summed in row order, so the result is partition-independent. */
/* Columns in blocks of BIAS_COLS, each summed over the rows into a local
 * block that the -O2 vectoriser keeps in registers (db is read and written
 * once instead of once per row); each column still adds its rows in order,
 * so the result is the plain loop's. */
#define BIAS_COLS 64
static void bias_grad_range(void *p, size_t begin, size_t end)
{
    const bias_rows_arg *a = p;
    size_t o = begin;
    for (; o + BIAS_COLS <= end; o += BIAS_COLS) {
        float acc[BIAS_COLS];
        for (size_t j = 0; j < BIAS_COLS; j++) acc[j] = a->db[o + j];
        for (int64_t n = 0; n < a->N; n++) {
            const float *d = a->dout + n * a->OC + o;
            for (size_t j = 0; j < BIAS_COLS; j++) acc[j] += d[j];
        }
        for (size_t j = 0; j < BIAS_COLS; j++) a->db[o + j] = acc[j];
    }
    for (int64_t n = 0; n < a->N; n++) {
        const float *d = a->dout + n * a->OC;
        for (size_t c = o; c < end; c++) a->db[c] += d[c];
    }
}

void peft__bias_grad(peft_ctx *ctx, const float *dout, int64_t N, int64_t OC, float *db)
{
    bias_rows_arg a = {dout, db, N, OC};
    peft__parallel_for(ctx, (size_t)OC, 256, bias_grad_range, &a);
}

typedef struct bias_add_arg {
    float *out;
    const float *b;
    int64_t OC;
} bias_add_arg;

static void bias_add_range(void *p, size_t begin, size_t end)
{
    const bias_add_arg *a = p;
    const float *b = a->b;
    for (size_t n = begin; n < end; n++) {
        float *o = a->out + n * a->OC; /* an op output: never overlaps the bias */
        int64_t j = 0;
        for (; j + PEFT__VEC <= a->OC; j += PEFT__VEC)
            PEFT__IVDEP
            for (int64_t k = 0; k < PEFT__VEC; k++) o[j + k] += b[j + k];
        for (; j < a->OC; j++) o[j] += b[j];
    }
}

void peft__bias_add_rows(peft_ctx *ctx, float *out, const float *b, int64_t N, int64_t OC)
{
    bias_add_arg a = {out, b, OC};
    peft__parallel_for(ctx, (size_t)N, 64, bias_add_range, &a);
}

static peft_status linear_backward(peft_ctx *ctx, peft__node *node)
{
    peft_tensor *x = node->in[0], *w = node->in[1], *bias = node->in[2];
    const float *dout = node->out->grad;
    const int64_t OC = w->shape[0], C = w->shape[1];
    const int64_t N = peft__rows(x), ldx = peft__row_stride(x);
    peft_status st;
    if (peft__needs_grad(w)) { /* dW[OC, C] += dout^T x */
        float *dw;
        if ((st = peft__grad_buffer(ctx, w, &dw)) != PEFT_OK) return st;
        peft__sgemm(ctx, true, false, OC, C, N, 1.0f, dout, OC, x->data, ldx, 1.0f, dw, C);
    }
    if (peft__needs_grad(bias)) {
        float *db;
        if ((st = peft__grad_buffer(ctx, bias, &db)) != PEFT_OK) return st;
        peft__bias_grad(ctx, dout, N, OC, db);
    }
    if (peft__needs_grad(x)) {
        float *dx;
        bool fresh;
        if ((st = peft__grad_buffer_fresh(ctx, x, &dx, &fresh)) != PEFT_OK) return st;
        if ((st = peft__linear_rows_dx_grad(ctx, dout, w, N, dx, fresh)) != PEFT_OK) return st;
    }
    return PEFT_OK;
}

peft_status peft_linear(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, peft_tensor *bias, peft_tensor **out)
{
    static const char op[] = "peft_linear";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if ((st = peft__check_input(ctx, op, "w", w)) != PEFT_OK) return st;
    if (w->dtype != PEFT_DTYPE_F32 && w->dtype != PEFT_DTYPE_F16 && w->dtype != PEFT_DTYPE_BF16 &&
        w->dtype != PEFT_DTYPE_Q8_0)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: weight dtype %s is not supported", op, peft_dtype_name(w->dtype));
    char sx[64], sw[64], sb[64];
    if (w->ndim != 2 || peft__cols(x) != w->shape[1])
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: x %s and weight %s (expected [out, %lld])", op,
                          peft__shape_str(x, sx, sizeof sx), peft__shape_str(w, sw, sizeof sw),
                          (long long)peft__cols(x));
    if ((st = peft__check_contiguous(ctx, op, "w", w)) != PEFT_OK) return st;
    if ((st = peft__check_rows(ctx, op, "x", x)) != PEFT_OK) return st;
    if (bias) {
        if ((st = peft__check_f32(ctx, op, "bias", bias)) != PEFT_OK) return st;
        if (bias->ndim != 1 || bias->shape[0] != w->shape[0])
            return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: bias %s does not match weight %s", op,
                              peft__shape_str(bias, sb, sizeof sb), peft__shape_str(w, sw, sizeof sw));
    }
    if (peft__needs_grad(w) && w->dtype != PEFT_DTYPE_F32)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: a %s weight cannot train", op, peft_dtype_name(w->dtype));
    int64_t shape[PEFT_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = w->shape[0];
    peft_tensor *y;
    if ((st = peft__new_output(ctx, op, x->ndim, shape, &y)) != PEFT_OK) return st;
    const int64_t N = peft__rows(x);
    if ((st = peft__linear_rows(ctx, x->data, peft__row_stride(x), w, N, y->data, 0.0f)) != PEFT_OK) return st;
    if (bias) peft__bias_add_rows(ctx, y->data, bias->data, N, w->shape[0]);
    peft_tensor *in[3] = {x, w, bias};
    if (peft__should_record(ctx, in, 3))
        if ((st = peft__record(ctx, op, linear_backward, y, in, 3, NULL)) != PEFT_OK) return st;
    *out = y;
    return PEFT_OK;
}
