/* peft_add / peft_sub / peft_mul with broadcasting (all three code paths:
 * equal shapes, b a trailing block of a, general strided walk), peft_scale,
 * peft_bias_add: forward against a naive reference, gradients against finite
 * differences, frozen inputs, errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

enum { K_ADD, K_SUB, K_MUL };
static const char *const kind_name[] = {"add", "sub", "mul"};

typedef struct bin_case {
    int kind;
    int trans_a, trans_b; /* use the transpose of the last two dims (a strided view) */
} bin_case;

static peft_status run_bin(peft_ctx *ctx, int kind, peft_tensor *a, peft_tensor *b, peft_tensor **out)
{
    return kind == K_ADD ? peft_add(ctx, a, b, out) : kind == K_SUB ? peft_sub(ctx, a, b, out)
                                                                    : peft_mul(ctx, a, b, out);
}

static peft_status fwd_bin(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    const bin_case *c = arg;
    peft_tensor *a = in[0], *b = in[1];
    peft_status st;
    if (c->trans_a && (st = peft_transpose(ctx, a, -1, -2, &a)) != PEFT_OK) return st;
    if (c->trans_b && (st = peft_transpose(ctx, b, -1, -2, &b)) != PEFT_OK) return st;
    return run_bin(ctx, c->kind, a, b, out);
}

/* Logical (row-major) values of any tensor, strided or not. Caller frees. */
static float *values(const peft_tensor *t)
{
    size_t n = (size_t)peft_tensor_numel(t);
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(peft_tensor_get_f32(t, v, n), PEFT_OK);
    return v;
}

/* Naive broadcasting reference: for every output index, find the a and b
 * elements by aligning shapes from the right (size-1 dims repeat). */
static float *ref_binary(int kind, const peft_tensor *a, const peft_tensor *b, int *ond, int64_t *oshape)
{
    int na = peft_tensor_ndim(a), nb = peft_tensor_ndim(b), nd = na > nb ? na : nb;
    int64_t sa[4], sb[4], ca[4], cb[4];
    for (int d = 0; d < nd; d++) {
        sa[d] = d < nd - na ? 1 : peft_tensor_dim(a, d - (nd - na));
        sb[d] = d < nd - nb ? 1 : peft_tensor_dim(b, d - (nd - nb));
        oshape[d] = sa[d] > sb[d] ? sa[d] : sb[d];
    }
    *ond = nd;
    int64_t n = 1;
    for (int d = nd - 1; d >= 0; d--) {
        ca[d] = d == nd - 1 ? 1 : ca[d + 1] * sa[d + 1];
        cb[d] = d == nd - 1 ? 1 : cb[d + 1] * sb[d + 1];
        n *= oshape[d];
    }
    float *va = values(a), *vb = values(b), *o = malloc((size_t)n * sizeof *o);
    ck_assert_ptr_nonnull(o);
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, ia = 0, ib = 0;
        for (int d = nd - 1; d >= 0; d--) {
            int64_t idx = rem % oshape[d];
            rem /= oshape[d];
            if (sa[d] != 1) ia += idx * ca[d];
            if (sb[d] != 1) ib += idx * cb[d];
        }
        o[i] = kind == K_ADD ? va[ia] + vb[ib] : kind == K_SUB ? va[ia] - vb[ib] : va[ia] * vb[ib];
    }
    free(va);
    free(vb);
    return o;
}

/* The path the op chose, read from its saved state (bin_saved in
 * elementwise.c starts with {kind, mode}): 0 same shape, 1 trailing block,
 * 2 general. Only valid on a recorded output. */
static int bin_mode(const peft_tensor *out)
{
    ck_assert_ptr_nonnull(out->node);
    return ((const int *)out->node->saved)[1];
}

typedef struct shape_case {
    int nda;
    int64_t sa[4];
    int ndb;
    int64_t sb[4];
    int trans_a, trans_b;
    int mode; /* the path expected */
} shape_case;

static const shape_case cases[] = {
    /* 0: equal shapes (a leading 1 is still "equal") */
    {1, {7}, 1, {7}, 0, 0, 0},
    {2, {3, 5}, 2, {3, 5}, 0, 0, 0},
    {3, {2, 3, 4}, 3, {2, 3, 4}, 0, 0, 0},
    {2, {1, 6}, 1, {6}, 0, 0, 0},
    {2, {3, 2000}, 2, {3, 2000}, 0, 0, 0}, /* large enough to split over threads */
    /* 1: b is a trailing block of a */
    {3, {2, 3, 5}, 1, {5}, 0, 0, 1},
    {3, {2, 3, 5}, 2, {3, 5}, 0, 0, 1},
    {2, {4, 5}, 2, {1, 5}, 0, 0, 1},
    {3, {2, 3, 5}, 3, {1, 1, 5}, 0, 0, 1},
    {2, {600, 17}, 1, {17}, 0, 0, 1}, /* many rows: threaded */
    /* 2: general broadcasting and strided inputs */
    {3, {2, 1, 4}, 2, {3, 1}, 0, 0, 2},
    {1, {5}, 3, {2, 3, 5}, 0, 0, 2}, /* a is the broadcast one */
    {2, {3, 1}, 2, {1, 4}, 0, 0, 2},
    {4, {2, 3, 1, 5}, 3, {3, 4, 1}, 0, 0, 2},
    {1, {1}, 2, {3, 4}, 0, 0, 2},
    {3, {2, 4, 3}, 1, {4}, 1, 0, 2},  /* a^T [2,3,4] (strided) + [4] */
    {2, {3, 4}, 2, {4, 3}, 0, 1, 2},  /* [3,4] + b^T */
    {2, {5, 3}, 2, {5, 3}, 1, 1, 2},  /* both strided, same shape */
    {3, {2, 5, 3}, 2, {5, 1}, 1, 1, 2}, /* a^T [2,3,5] + b^T [1,5] */
};

START_TEST(numerics_binary_vs_reference)
{
    peft_ctx *ctx = tu_ctx(2, 11);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int kind = 0; kind < 3; kind++) {
            const shape_case *sc = &cases[c];
            peft_tensor *in[2] = {tu_randn(ctx, sc->nda, sc->sa, 1.0f, 1), tu_randn(ctx, sc->ndb, sc->sb, 1.0f, 1)};
            bin_case bc = {kind, sc->trans_a, sc->trans_b};
            peft_tensor *out = NULL, *a = in[0], *b = in[1];
            TU_OK(ctx, fwd_bin(ctx, in, &bc, &out));
            if (sc->trans_a) TU_OK(ctx, peft_transpose(ctx, in[0], -1, -2, &a));
            if (sc->trans_b) TU_OK(ctx, peft_transpose(ctx, in[1], -1, -2, &b));
            int nd;
            int64_t oshape[4];
            float *ref = ref_binary(kind, a, b, &nd, oshape);
            ck_assert_int_eq(peft_tensor_ndim(out), nd);
            for (int d = 0; d < nd; d++) ck_assert_int_eq(peft_tensor_dim(out, d), oshape[d]);
            ck_assert(peft_tensor_is_contiguous(out));
            size_t n = (size_t)peft_tensor_numel(out);
            const float *o = peft_tensor_data(out);
            for (size_t i = 0; i < n; i++)
                ck_assert_msg(o[i] == ref[i], "case %zu %s: out[%zu] %g vs %g", c, kind_name[kind], i, o[i], ref[i]);
            ck_assert_msg(bin_mode(out) == sc->mode, "case %zu: path %d, expected %d", c, bin_mode(out), sc->mode);
            free(ref);
            peft_graph_release(ctx);
            peft_tensor_destroy(in[0]);
            peft_tensor_destroy(in[1]);
        }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_binary_all_paths)
{
    peft_ctx *ctx = tu_ctx(2, 12);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int kind = 0; kind < 3; kind++) {
            const shape_case *sc = &cases[c];
            peft_tensor *in[2] = {tu_randn(ctx, sc->nda, sc->sa, 1.0f, 1), tu_randn(ctx, sc->ndb, sc->sb, 1.0f, 1)};
            bin_case bc = {kind, sc->trans_a, sc->trans_b};
            char label[64];
            snprintf(label, sizeof label, "case %zu %s", c, kind_name[kind]);
            tu_gradcheck(ctx, label, fwd_bin, in, 2, &bc, NULL);
            peft_tensor_destroy(in[0]);
            peft_tensor_destroy(in[1]);
        }
    peft_ctx_destroy(ctx);
}
END_TEST

/* The gradient of a broadcast input is the output gradient summed over the
 * broadcast dims: check it exactly on a small case, in every path. */
START_TEST(grad_broadcast_is_summed)
{
    peft_ctx *ctx = tu_ctx(1, 13);
    const int64_t s234[3] = {2, 3, 4}, s4[1] = {4}, s31[2] = {3, 1};
    /* path 1: [2,3,4] + [4]: db[j] = 6 */
    peft_tensor *a = tu_randn(ctx, 3, s234, 1.0f, 1), *b = tu_randn(ctx, 1, s4, 1.0f, 1), *o, *l;
    TU_OK(ctx, peft_add(ctx, a, b, &o));
    ck_assert_int_eq(bin_mode(o), 1);
    TU_OK(ctx, peft_sum(ctx, o, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    for (int j = 0; j < 4; j++) ck_assert_float_eq(peft_tensor_grad(b)[j], 6.0f);
    for (int j = 0; j < 24; j++) ck_assert_float_eq(peft_tensor_grad(a)[j], 1.0f);
    /* path 2: [2,3,4] - [3,1]: db[i] = -8 */
    peft_tensor *c = tu_randn(ctx, 2, s31, 1.0f, 1);
    peft_tensor_zero_grad(a);
    TU_OK(ctx, peft_sub(ctx, a, c, &o));
    ck_assert_int_eq(bin_mode(o), 2);
    TU_OK(ctx, peft_sum(ctx, o, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    for (int j = 0; j < 3; j++) ck_assert_float_eq(peft_tensor_grad(c)[j], -8.0f);
    for (int j = 0; j < 24; j++) ck_assert_float_eq(peft_tensor_grad(a)[j], 1.0f);
    /* mul, path 2: d(sum a*c)/dc[i] = sum of a over the rows i of every batch */
    peft_tensor_zero_grad(c);
    TU_OK(ctx, peft_mul(ctx, a, c, &o));
    TU_OK(ctx, peft_sum(ctx, o, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    const float *A = peft_tensor_data(a);
    for (int i = 0; i < 3; i++) {
        double s = 0;
        for (int bt = 0; bt < 2; bt++)
            for (int j = 0; j < 4; j++) s += A[bt * 12 + i * 4 + j];
        ck_assert_float_eq_tol(peft_tensor_grad(c)[i], (float)s, 1e-5f);
    }
    peft_tensor_destroy(a), peft_tensor_destroy(b), peft_tensor_destroy(c);
    peft_ctx_destroy(ctx);
}
END_TEST

/* x * x (the same tensor twice) gets both contributions; backward accumulates
 * across calls; a frozen input never gets a gradient buffer. */
START_TEST(grad_same_input_frozen_and_accumulate)
{
    peft_ctx *ctx = tu_ctx(1, 14);
    const int64_t s[2] = {3, 5}, s5[1] = {5};
    peft_tensor *x = tu_randn(ctx, 2, s, 1.0f, 1);
    peft_tensor *in[2] = {x, x};
    bin_case bc = {K_MUL, 0, 0};
    tu_gradcheck(ctx, "x*x", fwd_bin, in, 2, &bc, NULL);
    peft_tensor *o, *l;
    peft_tensor_zero_grad(x);
    TU_OK(ctx, peft_mul(ctx, x, x, &o));
    TU_OK(ctx, peft_sum(ctx, o, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    const float *X = peft_tensor_data(x);
    for (int i = 0; i < 15; i++) ck_assert_float_eq_tol(peft_tensor_grad(x)[i], 2 * X[i], 1e-6f);
    /* a second backward adds */
    TU_OK(ctx, peft_mul(ctx, x, x, &o));
    TU_OK(ctx, peft_sum(ctx, o, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    for (int i = 0; i < 15; i++) ck_assert_float_eq_tol(peft_tensor_grad(x)[i], 4 * X[i], 1e-6f);
    /* frozen b in every path: only a's gradient is computed */
    const int64_t *sb[3] = {s, s5, s5};
    const int ndb[3] = {2, 1, 1};
    for (int p = 0; p < 3; p++) {
        peft_tensor *b = tu_randn(ctx, ndb[p], sb[p], 1.0f, 0), *a = x;
        if (p == 2) TU_OK(ctx, peft_reshape(ctx, x, 2, (const int64_t[]){5, 3}, &a));
        if (p == 2) TU_OK(ctx, peft_transpose(ctx, a, 0, 1, &a)); /* [3,5] strided: general path */
        peft_tensor *in2[2] = {x, b};
        bin_case bm = {K_MUL, 0, 0};
        if (p < 2) tu_gradcheck(ctx, "frozen b", fwd_bin, in2, 2, &bm, NULL);
        TU_OK(ctx, peft_mul(ctx, a, b, &o));
        ck_assert_int_eq(bin_mode(o), p);
        TU_OK(ctx, peft_sum(ctx, o, &l));
        TU_OK(ctx, peft_backward(ctx, l, NULL));
        ck_assert_ptr_null(peft_tensor_grad(b));
        peft_tensor_destroy(b);
    }
    /* no recording while gradients are off */
    int prev = peft_set_grad_enabled(ctx, 0);
    TU_OK(ctx, peft_add(ctx, x, x, &o));
    ck_assert_int_eq(peft_graph_size(ctx), 0);
    ck_assert_ptr_null(o->node);
    peft_set_grad_enabled(ctx, prev);
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

/* A chain of op outputs, so backward meets new (fresh) gradient buffers that
 * kernels write instead of accumulating, next to existing ones: both inputs
 * new, one new and one existing, a == b, then activations and a norm on new
 * buffers. Rows of 37 cover the vector blocks and their tails. */
static peft_status fwd_fresh_chain(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    (void)arg;
    peft_tensor *t1, *t2, *t3, *m, *a, *s, *q, *g, *d;
    PEFT__TRY(peft_scale(ctx, in[0], 1.0f, &t1));
    PEFT__TRY(peft_scale(ctx, in[1], 0.5f, &t2));
    PEFT__TRY(peft_scale(ctx, in[1], 1.5f, &t3));
    PEFT__TRY(peft_mul(ctx, t1, t3, &m)); /* both gradients new */
    PEFT__TRY(peft_add(ctx, m, t2, &a));  /* m's new, t2's exists by then (from the sub) */
    PEFT__TRY(peft_silu(ctx, a, &s));
    PEFT__TRY(peft_mul(ctx, s, s, &q)); /* one tensor twice */
    PEFT__TRY(peft_gelu(ctx, q, &g));
    PEFT__TRY(peft_sub(ctx, g, t2, &d)); /* both new */
    return peft_layernorm(ctx, d, NULL, NULL, 1e-5f, out); /* (relu's kink would trouble the differences) */
}

START_TEST(grad_fresh_buffers)
{
    peft_ctx *ctx = tu_ctx(2, 16);
    const int64_t shapes[][2] = {{3, 37}, {2, 16}, {1, 5}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        peft_tensor *in[2] = {tu_randn(ctx, 2, shapes[c], 1.0f, 1), tu_randn(ctx, 2, shapes[c], 1.0f, 1)};
        /* leave NaN in the arena, so a new buffer read before written shows */
        const size_t nf = (size_t)1 << 18;
        float *dirty = peft__scratch(ctx, nf * sizeof(float), "test");
        ck_assert_ptr_nonnull(dirty);
        for (size_t i = 0; i < nf; i++) dirty[i] = NAN;
        peft_graph_release(ctx);
        tu_gradcheck(ctx, "fresh chain", fwd_fresh_chain, in, 2, NULL, NULL);
        peft_tensor_destroy(in[0]);
        peft_tensor_destroy(in[1]);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

typedef struct scale_arg {
    float s;
} scale_arg;

static peft_status fwd_scale(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    return peft_scale(ctx, in[0], ((scale_arg *)arg)->s, out);
}

static peft_status fwd_bias(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    (void)arg;
    return peft_bias_add(ctx, in[0], in[1], out);
}

START_TEST(numerics_scale_and_bias)
{
    peft_ctx *ctx = tu_ctx(2, 15);
    const int64_t shapes[][3] = {{1, 1, 1}, {2, 3, 5}, {1, 7, 13}, {3, 300, 11}};
    const float scales[] = {-1.5f, 0.0f, 3.0f};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        peft_tensor *x = tu_randn(ctx, 3, shapes[c], 1.0f, 1);
        peft_tensor *b = tu_randn(ctx, 1, &shapes[c][2], 1.0f, 1);
        const float *X = peft_tensor_data(x), *B = peft_tensor_data(b);
        int64_t n = peft_tensor_numel(x), C = shapes[c][2];
        for (size_t k = 0; k < 3; k++) {
            peft_tensor *o;
            TU_OK(ctx, peft_scale(ctx, x, scales[k], &o));
            ck_assert_int_eq(peft_tensor_ndim(o), 3);
            for (int64_t i = 0; i < n; i++) ck_assert_float_eq(((float *)peft_tensor_data(o))[i], scales[k] * X[i]);
            scale_arg sa = {scales[k]};
            tu_gradcheck(ctx, "scale", fwd_scale, &x, 1, &sa, NULL);
        }
        peft_tensor *o;
        TU_OK(ctx, peft_bias_add(ctx, x, b, &o));
        for (int d = 0; d < 3; d++) ck_assert_int_eq(peft_tensor_dim(o, d), shapes[c][d]);
        for (int64_t i = 0; i < n; i++) ck_assert_float_eq(((float *)peft_tensor_data(o))[i], X[i] + B[i % C]);
        peft_tensor *in[2] = {x, b};
        tu_gradcheck(ctx, "bias_add", fwd_bias, in, 2, NULL, NULL);
        /* frozen bias: only x */
        peft_tensor_set_requires_grad(b, 0);
        peft_tensor_zero_grad(x);
        tu_gradcheck(ctx, "bias_add frozen b", fwd_bias, in, 2, NULL, NULL);
        peft_graph_release(ctx);
        peft_tensor_destroy(x), peft_tensor_destroy(b);
    }
    /* bias gradient is the column sum of dout, exactly */
    const int64_t s[2] = {4, 3};
    peft_tensor *x = tu_randn(ctx, 2, s, 1.0f, 0), *b = tu_randn(ctx, 1, &s[1], 1.0f, 1), *o, *l;
    TU_OK(ctx, peft_bias_add(ctx, x, b, &o));
    TU_OK(ctx, peft_sum(ctx, o, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    for (int j = 0; j < 3; j++) ck_assert_float_eq(peft_tensor_grad(b)[j], 4.0f);
    ck_assert_ptr_null(peft_tensor_grad(x));
    peft_tensor_destroy(x), peft_tensor_destroy(b);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_errors)
{
    peft_ctx *ctx = tu_ctx(1, 16), *other = tu_ctx(1, 17);
    const int64_t s23[2] = {2, 3}, s4[1] = {4}, s234[3] = {2, 3, 4}, s331[3] = {3, 3, 1}, s15[2] = {1, 5};
    peft_tensor *a = tu_randn(ctx, 2, s23, 1, 0), *b = tu_randn(ctx, 1, s4, 1, 0);
    peft_tensor *c = tu_randn(ctx, 3, s234, 1, 0), *d = tu_randn(ctx, 3, s331, 1, 0);
    peft_tensor *f = tu_randn(other, 2, s23, 1, 0), *e = tu_randn(ctx, 2, s15, 1, 0);
    const int32_t ids[2] = {1, 2};
    peft_tensor *i32 = tu_ids(ctx, 1, (const int64_t[]){2}, ids);
    peft_tensor *o = (peft_tensor *)&o; /* anything non-NULL: must come back NULL */
    TU_EXPECT_FAIL(ctx, peft_add(ctx, a, b, &o), PEFT_ERR_SHAPE,
                   "peft_add: shapes [2, 3] and [4] do not broadcast (dim 1: 3 vs 4)");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_sub(ctx, b, a, &o), PEFT_ERR_SHAPE, "peft_sub: shapes [4] and [2, 3] do not broadcast");
    TU_EXPECT_FAIL(ctx, peft_mul(ctx, c, d, &o), PEFT_ERR_SHAPE,
                   "peft_mul: shapes [2, 3, 4] and [3, 3, 1] do not broadcast (dim 0: 2 vs 3)");
    TU_EXPECT_FAIL(ctx, peft_add(ctx, NULL, b, &o), PEFT_ERR_INVALID_ARG, "peft_add: a is NULL");
    TU_EXPECT_FAIL(ctx, peft_mul(ctx, a, NULL, &o), PEFT_ERR_INVALID_ARG, "peft_mul: b is NULL");
    TU_EXPECT_FAIL(ctx, peft_add(ctx, a, a, NULL), PEFT_ERR_INVALID_ARG, "peft_add: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_sub(ctx, a, f, &o), PEFT_ERR_INVALID_ARG, "peft_sub: b belongs to another context");
    TU_EXPECT_FAIL(ctx, peft_add(ctx, i32, i32, &o), PEFT_ERR_DTYPE, "peft_add: a is i32, expected f32");
    ck_assert_int_eq(peft_add(NULL, a, a, &o), PEFT_ERR_INVALID_ARG);
    /* scale */
    peft_tensor *t;
    TU_OK(ctx, peft_transpose(ctx, a, 0, 1, &t));
    TU_EXPECT_FAIL(ctx, peft_scale(ctx, t, 2.0f, &o), PEFT_ERR_INVALID_ARG, "peft_scale: x [3, 2] is not contiguous");
    TU_EXPECT_FAIL(ctx, peft_scale(ctx, NULL, 2.0f, &o), PEFT_ERR_INVALID_ARG, "peft_scale: x is NULL");
    TU_EXPECT_FAIL(ctx, peft_scale(ctx, a, 2.0f, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    /* bias_add */
    TU_EXPECT_FAIL(ctx, peft_bias_add(ctx, a, b, &o), PEFT_ERR_SHAPE,
                   "peft_bias_add: bias [4] does not match the last dim of x [2, 3]");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_bias_add(ctx, a, e, &o), PEFT_ERR_SHAPE, "bias [1, 5] does not match");
    TU_EXPECT_FAIL(ctx, peft_bias_add(ctx, t, a, &o), PEFT_ERR_INVALID_ARG, "x [3, 2] is not contiguous");
    TU_EXPECT_FAIL(ctx, peft_bias_add(ctx, c, NULL, &o), PEFT_ERR_INVALID_ARG, "peft_bias_add: b is NULL");
    TU_EXPECT_FAIL(ctx, peft_bias_add(ctx, c, i32, &o), PEFT_ERR_DTYPE, "b is i32");
    peft_graph_release(ctx);
    peft_tensor_destroy(a), peft_tensor_destroy(b), peft_tensor_destroy(c), peft_tensor_destroy(d);
    peft_tensor_destroy(e), peft_tensor_destroy(f), peft_tensor_destroy(i32);
    peft_ctx_destroy(ctx);
    peft_ctx_destroy(other);
}
END_TEST

Suite *elementwise_suite(void)
{
    Suite *s = suite_create("elementwise");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_binary_vs_reference);
    tcase_add_test(tc, numerics_scale_and_bias);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_binary_all_paths);
    tcase_add_test(tc, grad_broadcast_is_summed);
    tcase_add_test(tc, grad_same_input_frozen_and_accumulate);
    tcase_add_test(tc, grad_fresh_buffers);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_errors);
    suite_add_tcase(s, tc);
    return s;
}
