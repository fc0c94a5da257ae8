/* Binary elementwise ops with broadcasting (add, sub, mul), scale, bias add.
 *
 * Shapes align from the right; a dim of size 1 (or a missing one) broadcasts.
 * Fast paths: equal shapes, and b equal to a trailing block of a (the common
 * "[B,T,C] op [C]" case). Everything else goes through a strided 4-D walk.
 * Gradients of broadcast inputs are summed over the broadcast dims, in a
 * fixed order. */
#include <string.h>

#include "../internal.h"

typedef enum { BIN_ADD, BIN_SUB, BIN_MUL } bin_kind;

static const char *bin_name(bin_kind k)
{
    return k == BIN_ADD ? "peft_add" : k == BIN_SUB ? "peft_sub" : "peft_mul";
}

static inline float bin_apply(bin_kind k, float a, float b)
{
    return k == BIN_ADD ? a + b : k == BIN_SUB ? a - b : a * b;
}

/* 4-D padded view of a tensor broadcast to the output shape: stride 0 on broadcast dims. */
typedef struct bview {
    int64_t shape[4];
    int64_t stride[4];  /* data strides */
    int64_t gstride[4]; /* strides into the contiguous gradient buffer */
} bview;

static void make_bview(const peft_tensor *t, const int64_t *oshape, bview *v)
{
    int64_t cs[PEFT_MAX_DIMS];
    peft__contiguous_strides(t->ndim, t->shape, cs);
    int pad = 4 - t->ndim;
    for (int i = 0; i < 4; i++) {
        v->shape[i] = oshape[i];
        if (i < pad || t->shape[i - pad] == 1) {
            v->stride[i] = 0;
            v->gstride[i] = 0;
        } else {
            v->stride[i] = t->stride[i - pad];
            v->gstride[i] = cs[i - pad];
        }
    }
}

typedef struct bin_saved {
    bin_kind kind;
    int mode;   /* 0 same shape contiguous, 1 b is a trailing block, 2 general */
    int64_t n;  /* output numel */
    int64_t nb; /* numel of b (mode 1) */
    int64_t oshape[4];
} bin_saved;

typedef struct bin_arg {
    bin_kind kind;
    const float *a, *b;
    float *out;
    int64_t nb;
} bin_arg;

/* out[i] = A[i] OP B[i] in PEFT__VEC blocks (the output is a new tensor,
 * never overlapping the inputs), then the tail. */
#define BIN_SAME_LOOP(OP)                                                            \
    do {                                                                             \
        size_t i_ = begin;                                                           \
        for (; i_ + PEFT__VEC <= end; i_ += PEFT__VEC)                               \
            PEFT__IVDEP                                                              \
            for (size_t j_ = 0; j_ < PEFT__VEC; j_++) o[i_ + j_] = A[i_ + j_] OP B[i_ + j_]; \
        for (; i_ < end; i_++) o[i_] = A[i_] OP B[i_];                               \
    } while (0)

static void bin_same_range(void *p, size_t begin, size_t end)
{
    const bin_arg *a = p;
    const float *A = a->a, *B = a->b;
    float *o = a->out;
    switch (a->kind) {
    case BIN_ADD: BIN_SAME_LOOP(+); break;
    case BIN_SUB: BIN_SAME_LOOP(-); break;
    case BIN_MUL: BIN_SAME_LOOP(*); break;
    }
}

static void bin_trailing_range(void *p, size_t begin, size_t end)
{
    const bin_arg *a = p; /* range over rows of length nb */
    for (size_t r = begin; r < end; r++) {
        const float *ar = a->a + r * a->nb;
        float *o = a->out + r * a->nb;
        for (int64_t j = 0; j < a->nb; j++) o[j] = bin_apply(a->kind, ar[j], a->b[j]);
    }
}

static bool is_trailing_block(const peft_tensor *a, const peft_tensor *b)
{
    /* b's shape (leading 1s dropped) equals a's last dims, and both are contiguous */
    int lead = 0;
    while (lead < b->ndim - 1 && b->shape[lead] == 1) lead++;
    int k = b->ndim - lead;
    if (k > a->ndim) return false;
    for (int i = 0; i < k; i++)
        if (b->shape[lead + i] != a->shape[a->ndim - k + i]) return false;
    return peft__is_contiguous(a) && peft__is_contiguous(b);
}

/* One input's gradient for equal shapes: d[i] (+)= dout[i] * other[i] (mul)
 * or sign * dout[i] (add, sub; exact). d is the input's gradient buffer, so
 * it never overlaps dout or the data. */
typedef struct bin_grad_arg {
    const float *dout, *other; /* (n); other: the other input's data (mul) */
    float *d;                  /* (n) accumulated, or written when fresh */
    float sign;
    bool mul, fresh;
} bin_grad_arg;

#define BIN_GRAD_LOOP(OP, EXPR)                                                               \
    do {                                                                                      \
        size_t i_ = begin;                                                                    \
        for (; i_ + PEFT__VEC <= end; i_ += PEFT__VEC)                                        \
            PEFT__IVDEP                                                                       \
            for (size_t j_ = 0; j_ < PEFT__VEC; j_++) {                                       \
                const size_t i = i_ + j_;                                                     \
                d[i] OP EXPR;                                                                 \
            }                                                                                 \
        for (size_t i = i_; i < end; i++) d[i] OP EXPR;                                       \
    } while (0)

static void bin_grad_range(void *p, size_t begin, size_t end)
{
    const bin_grad_arg *a = p;
    const float *g = a->dout, *o = a->other;
    float *d = a->d;
    const float sign = a->sign;
    if (a->mul && a->fresh) BIN_GRAD_LOOP(=, g[i] * o[i]);
    else if (a->mul) BIN_GRAD_LOOP(+=, g[i] * o[i]);
    else if (a->fresh) BIN_GRAD_LOOP(=, sign * g[i]);
    else BIN_GRAD_LOOP(+=, sign * g[i]);
}

/* Both gradients in one pass over dout (a and b distinct tensors, both
 * buffers new or both existing): da (+)= dout * B or dout, db (+)= dout * A
 * or sign * dout. */
typedef struct bin_grad2_arg {
    const float *dout, *A, *B;
    float *da, *db;
    float sign;
    bool mul, fresh;
} bin_grad2_arg;

#define BIN_GRAD2_LOOP(OP, EA, EB)                                 \
    do {                                                           \
        size_t i_ = begin;                                         \
        for (; i_ + PEFT__VEC <= end; i_ += PEFT__VEC)             \
            PEFT__IVDEP                                            \
            for (size_t j_ = 0; j_ < PEFT__VEC; j_++) {            \
                const size_t i = i_ + j_;                          \
                da[i] OP EA;                                       \
                db[i] OP EB;                                       \
            }                                                      \
        for (size_t i = i_; i < end; i++) {                        \
            da[i] OP EA;                                           \
            db[i] OP EB;                                           \
        }                                                          \
    } while (0)

static void bin_grad2_range(void *p, size_t begin, size_t end)
{
    const bin_grad2_arg *a = p;
    const float *g = a->dout, *A = a->A, *B = a->B;
    float *da = a->da, *db = a->db;
    const float sign = a->sign;
    if (a->mul && a->fresh) BIN_GRAD2_LOOP(=, g[i] * B[i], g[i] * A[i]);
    else if (a->mul) BIN_GRAD2_LOOP(+=, g[i] * B[i], g[i] * A[i]);
    else if (a->fresh) BIN_GRAD2_LOOP(=, g[i], sign * g[i]);
    else BIN_GRAD2_LOOP(+=, g[i], sign * g[i]);
}

static peft_status bin_backward(peft_ctx *ctx, peft__node *node)
{
    const bin_saved *s = node->saved;
    peft_tensor *a = node->in[0], *b = node->in[1];
    const float *dout = node->out->grad;
    float *da = NULL, *db = NULL;
    peft_status st;
    const float sign_b = s->kind == BIN_SUB ? -1.0f : 1.0f;
    if (s->mode == 0 && a != b && peft__needs_grad(a) && peft__needs_grad(b)) {
        bin_grad2_arg g = {.dout = dout, .A = a->data, .B = b->data, .sign = sign_b, .mul = s->kind == BIN_MUL};
        bool fresh_a, fresh_b;
        if ((st = peft__grad_buffer_fresh(ctx, a, &g.da, &fresh_a)) != PEFT_OK) return st;
        if ((st = peft__grad_buffer_fresh(ctx, b, &g.db, &fresh_b)) != PEFT_OK) return st;
        /* one pass needs one mode for both: zero a lone new buffer */
        if (fresh_a != fresh_b) memset(fresh_a ? g.da : g.db, 0, (size_t)s->n * sizeof(float));
        g.fresh = fresh_a && fresh_b;
        peft__parallel_for(ctx, (size_t)s->n, 4096, bin_grad2_range, &g);
        return PEFT_OK;
    }
    if (s->mode == 0) {
        /* a's pass, then b's: when a and b are one tensor, the second call
         * finds the buffer a's pass wrote and accumulates into it */
        peft_tensor *in[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            if (!peft__needs_grad(in[k])) continue;
            bin_grad_arg g = {.dout = dout, .other = in[1 - k]->data, .sign = k ? sign_b : 1.0f,
                              .mul = s->kind == BIN_MUL};
            if ((st = peft__grad_buffer_fresh(ctx, in[k], &g.d, &g.fresh)) != PEFT_OK) return st;
            peft__parallel_for(ctx, (size_t)s->n, 4096, bin_grad_range, &g);
        }
        return PEFT_OK;
    }
    if (peft__needs_grad(a) && (st = peft__grad_buffer(ctx, a, &da)) != PEFT_OK) return st;
    if (peft__needs_grad(b) && (st = peft__grad_buffer(ctx, b, &db)) != PEFT_OK) return st;
    if (s->mode == 1) {
        const float *A = a->data, *B = b->data;
        int64_t rows = s->n / s->nb;
        for (int64_t r = 0; r < rows; r++) {
            const float *g = dout + r * s->nb, *ar = A + r * s->nb;
            if (da) {
                float *dar = da + r * s->nb;
                for (int64_t j = 0; j < s->nb; j++) dar[j] += s->kind == BIN_MUL ? g[j] * B[j] : g[j];
            }
            if (db)
                for (int64_t j = 0; j < s->nb; j++) db[j] += s->kind == BIN_MUL ? g[j] * ar[j] : sign_b * g[j];
        }
        return PEFT_OK;
    }
    bview va, vb;
    make_bview(a, s->oshape, &va);
    make_bview(b, s->oshape, &vb);
    const float *A = a->data, *B = b->data;
    int64_t i = 0;
    for (int64_t i0 = 0; i0 < s->oshape[0]; i0++)
        for (int64_t i1 = 0; i1 < s->oshape[1]; i1++)
            for (int64_t i2 = 0; i2 < s->oshape[2]; i2++)
                for (int64_t i3 = 0; i3 < s->oshape[3]; i3++, i++) {
                    float g = dout[i];
                    int64_t oa = i0 * va.stride[0] + i1 * va.stride[1] + i2 * va.stride[2] + i3 * va.stride[3];
                    int64_t ob = i0 * vb.stride[0] + i1 * vb.stride[1] + i2 * vb.stride[2] + i3 * vb.stride[3];
                    if (da) {
                        int64_t ga = i0 * va.gstride[0] + i1 * va.gstride[1] + i2 * va.gstride[2] + i3 * va.gstride[3];
                        da[ga] += s->kind == BIN_MUL ? g * B[ob] : g;
                    }
                    if (db) {
                        int64_t gb = i0 * vb.gstride[0] + i1 * vb.gstride[1] + i2 * vb.gstride[2] + i3 * vb.gstride[3];
                        db[gb] += s->kind == BIN_MUL ? g * A[oa] : sign_b * g;
                    }
                }
    return PEFT_OK;
}

static peft_status binary(peft_ctx *ctx, bin_kind kind, peft_tensor *a, peft_tensor *b, peft_tensor **out)
{
    const char *op = bin_name(kind);
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "a", a)) != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "b", b)) != PEFT_OK) return st;
    /* broadcast shape */
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t shape[PEFT_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[64], sb[64];
            return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)",
                              op, peft__shape_str(a, sa, sizeof sa), peft__shape_str(b, sb, sizeof sb), i,
                              (long long)da, (long long)db);
        }
        shape[i] = da > db ? da : db;
    }
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, nd, shape, &o)) != PEFT_OK) return st;
    bin_saved s = {.kind = kind, .n = peft_tensor_numel(o)};
    for (int i = 0; i < 4; i++) s.oshape[i] = i < 4 - nd ? 1 : shape[i - (4 - nd)];
    bin_arg arg = {kind, a->data, b->data, o->data, 0};
    if (peft_tensor_numel(a) == s.n && peft_tensor_numel(b) == s.n && peft__is_contiguous(a) &&
        peft__is_contiguous(b)) {
        s.mode = 0;
        peft__parallel_for(ctx, (size_t)s.n, 4096, bin_same_range, &arg);
    } else if (peft_tensor_numel(a) == s.n && is_trailing_block(a, b)) {
        s.mode = 1;
        s.nb = arg.nb = peft_tensor_numel(b);
        peft__parallel_for(ctx, (size_t)(s.n / s.nb), (size_t)(4096 / s.nb + 1), bin_trailing_range, &arg);
    } else {
        s.mode = 2;
        bview va, vb;
        make_bview(a, s.oshape, &va);
        make_bview(b, s.oshape, &vb);
        const float *A = a->data, *B = b->data;
        float *O = o->data;
        int64_t i = 0;
        for (int64_t i0 = 0; i0 < s.oshape[0]; i0++)
            for (int64_t i1 = 0; i1 < s.oshape[1]; i1++)
                for (int64_t i2 = 0; i2 < s.oshape[2]; i2++)
                    for (int64_t i3 = 0; i3 < s.oshape[3]; i3++)
                        O[i++] = bin_apply(kind,
                                           A[i0 * va.stride[0] + i1 * va.stride[1] + i2 * va.stride[2] + i3 * va.stride[3]],
                                           B[i0 * vb.stride[0] + i1 * vb.stride[1] + i2 * vb.stride[2] + i3 * vb.stride[3]]);
    }
    peft_tensor *in[2] = {a, b};
    if (peft__should_record(ctx, in, 2)) {
        bin_saved *saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        *saved = s;
        if ((st = peft__record(ctx, op, bin_backward, o, in, 2, saved)) != PEFT_OK) return st;
    }
    *out = o;
    return PEFT_OK;
}

peft_status peft_add(peft_ctx *ctx, peft_tensor *a, peft_tensor *b, peft_tensor **out)
{
    return binary(ctx, BIN_ADD, a, b, out);
}
peft_status peft_sub(peft_ctx *ctx, peft_tensor *a, peft_tensor *b, peft_tensor **out)
{
    return binary(ctx, BIN_SUB, a, b, out);
}
peft_status peft_mul(peft_ctx *ctx, peft_tensor *a, peft_tensor *b, peft_tensor **out)
{
    return binary(ctx, BIN_MUL, a, b, out);
}

/* ---- scale ---- */

typedef struct scale_arg {
    const float *x;
    float *out;
    float s;
} scale_arg;

static void scale_range(void *p, size_t begin, size_t end)
{
    const scale_arg *a = p;
    for (size_t i = begin; i < end; i++) a->out[i] = a->s * a->x[i];
}

static peft_status scale_backward(peft_ctx *ctx, peft__node *node)
{
    peft_tensor *x = node->in[0];
    float *dx;
    peft_status st = peft__grad_buffer(ctx, x, &dx);
    if (st != PEFT_OK) return st;
    const float s = *(const float *)node->saved;
    const float *dout = node->out->grad;
    int64_t n = peft_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) dx[i] += s * dout[i];
    return PEFT_OK;
}

peft_status peft_scale(peft_ctx *ctx, peft_tensor *x, float s, peft_tensor **out)
{
    static const char op[] = "peft_scale";
    peft_tensor *o;
    peft_status st = peft__unary_begin(ctx, op, x, out, &o);
    if (st != PEFT_OK) return st;
    scale_arg arg = {x->data, o->data, s};
    peft__parallel_for(ctx, (size_t)peft_tensor_numel(x), 4096, scale_range, &arg);
    if (peft__should_record(ctx, &x, 1)) {
        float *saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        *saved = s;
        if ((st = peft__record(ctx, op, scale_backward, o, &x, 1, saved)) != PEFT_OK) return st;
    }
    *out = o;
    return PEFT_OK;
}

/* ---- bias add ---- */

static peft_status bias_add_backward(peft_ctx *ctx, peft__node *node)
{
    peft_tensor *x = node->in[0], *b = node->in[1];
    const float *dout = node->out->grad;
    const int64_t N = peft__rows(x), C = peft__cols(x);
    peft_status st;
    if (peft__needs_grad(x)) {
        float *dx;
        if ((st = peft__grad_buffer(ctx, x, &dx)) != PEFT_OK) return st;
        for (int64_t i = 0; i < N * C; i++) dx[i] += dout[i];
    }
    if (peft__needs_grad(b)) {
        float *db;
        if ((st = peft__grad_buffer(ctx, b, &db)) != PEFT_OK) return st;
        peft__bias_grad(ctx, dout, N, C, db);
    }
    return PEFT_OK;
}

peft_status peft_bias_add(peft_ctx *ctx, peft_tensor *x, peft_tensor *b, peft_tensor **out)
{
    static const char op[] = "peft_bias_add";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "b", b)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "x", x)) != PEFT_OK) return st;
    if (b->ndim != 1 || b->shape[0] != peft__cols(x)) {
        char sx[64], sb[64];
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: bias %s does not match the last dim of x %s", op,
                          peft__shape_str(b, sb, sizeof sb), peft__shape_str(x, sx, sizeof sx));
    }
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, x->ndim, x->shape, &o)) != PEFT_OK) return st;
    memcpy(o->data, x->data, (size_t)peft_tensor_numel(x) * sizeof(float));
    peft__bias_add_rows(ctx, o->data, b->data, peft__rows(x), peft__cols(x));
    peft_tensor *in[2] = {x, b};
    if (peft__should_record(ctx, in, 2))
        if ((st = peft__record(ctx, op, bias_add_backward, o, in, 2, NULL)) != PEFT_OK) return st;
    *out = o;
    return PEFT_OK;
}
