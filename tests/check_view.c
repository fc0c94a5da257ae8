/* Views and shape ops: peft_reshape, peft_transpose, peft_slice,
 * peft_contiguous, peft_concat, peft_split. Values, shared storage, gradients
 * through chains of views, errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

/* A long-lived f32 tensor holding 0, 1, 2, ... (exact in float). */
static peft_tensor *arange(peft_ctx *ctx, int nd, const int64_t *shape, int requires_grad)
{
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, nd, shape, &t));
    float *d = peft_tensor_data(t);
    for (int64_t i = 0; i < peft_tensor_numel(t); i++) d[i] = (float)i;
    if (requires_grad) TU_OK(ctx, peft_tensor_set_requires_grad(t, 1));
    return t;
}

static float *values(const peft_tensor *t)
{
    size_t n = (size_t)peft_tensor_numel(t);
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(peft_tensor_get_f32(t, v, n), PEFT_OK);
    return v;
}

static void assert_shape(const peft_tensor *t, int nd, const int64_t *shape)
{
    ck_assert_int_eq(peft_tensor_ndim(t), nd);
    for (int i = 0; i < nd; i++)
        ck_assert_msg(peft_tensor_dim(t, i) == shape[i], "dim %d is %lld, expected %lld", i,
                      (long long)peft_tensor_dim(t, i), (long long)shape[i]);
}

/* ---- reshape ---- */

START_TEST(numerics_reshape)
{
    peft_ctx *ctx = tu_ctx(1, 31);
    const int64_t s[3] = {2, 3, 4};
    peft_tensor *x = arange(ctx, 3, s, 0), *v;
    const float *X = peft_tensor_data(x);
    const struct {
        int nd;
        int64_t in[4], want[4];
    } cases[] = {
        {2, {6, 4}, {6, 4}},       {1, {-1}, {24}},          {3, {4, -1, 2}, {4, 3, 2}},
        {2, {24, 1}, {24, 1}},     {4, {1, 2, 1, 12}, {1, 2, 1, 12}}, {4, {2, 2, -1, 3}, {2, 2, 2, 3}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        TU_OK(ctx, peft_reshape(ctx, x, cases[c].nd, cases[c].in, &v));
        assert_shape(v, cases[c].nd, cases[c].want);
        ck_assert(peft_tensor_is_contiguous(v));
        ck_assert_ptr_eq(peft_tensor_data(v), peft_tensor_data(x)); /* a view: no copy */
        float *V = values(v);
        for (int i = 0; i < 24; i++) ck_assert_float_eq(V[i], X[i]);
        free(V);
    }
    /* writes through the view land in the base */
    TU_OK(ctx, peft_reshape(ctx, x, 2, (const int64_t[]){4, 6}, &v));
    ((float *)peft_tensor_data(v))[7] = -1.0f;
    ck_assert_float_eq(X[7], -1.0f);
    /* a slice along the first axis is contiguous, so it can be reshaped */
    peft_tensor *sl;
    TU_OK(ctx, peft_slice(ctx, x, 0, 1, 1, &sl));
    TU_OK(ctx, peft_reshape(ctx, sl, 1, (const int64_t[]){-1}, &v));
    assert_shape(v, 1, (const int64_t[]){12});
    ck_assert_ptr_eq(peft_tensor_data(v), X + 12);
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_reshape_errors)
{
    peft_ctx *ctx = tu_ctx(1, 32);
    const int64_t s[3] = {2, 3, 4};
    peft_tensor *x = arange(ctx, 3, s, 0), *t, *o = x;
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 2, (const int64_t[]){5, 5}, &o), PEFT_ERR_SHAPE,
                   "peft_reshape: [2, 3, 4] has 24 elements, the new shape 25");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 2, (const int64_t[]){5, -1}, &o), PEFT_ERR_SHAPE,
                   "24 elements do not divide into the given dims");
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 2, (const int64_t[]){-1, -1}, &o), PEFT_ERR_INVALID_ARG, "dim 1 is -1");
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 2, (const int64_t[]){0, 24}, &o), PEFT_ERR_INVALID_ARG, "dim 0 is 0");
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 0, s, &o), PEFT_ERR_INVALID_ARG, "ndim 0");
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 5, (const int64_t[]){1, 2, 3, 4, 1}, &o), PEFT_ERR_INVALID_ARG, "ndim 5");
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 2, NULL, &o), PEFT_ERR_INVALID_ARG, "peft_reshape: ndim 2");
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, NULL, 1, s, &o), PEFT_ERR_INVALID_ARG, "peft_reshape: x is NULL");
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 1, s, NULL), PEFT_ERR_INVALID_ARG, "peft_reshape: out is NULL");
    /* dims whose product overflows are a mismatch, not undefined behaviour */
    const int64_t big = (int64_t)1 << 62;
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 3, (const int64_t[]){big, big, 4}, &o), PEFT_ERR_SHAPE,
                   "peft_reshape: [2, 3, 4] has 24 elements, the new shape more than that");
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, x, 3, (const int64_t[]){big, -1, 4}, &o), PEFT_ERR_SHAPE,
                   "[2, 3, 4] has 24 elements, the new shape more than that");
    /* a non-contiguous view cannot be reshaped */
    TU_OK(ctx, peft_transpose(ctx, x, 0, 2, &t));
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, t, 1, (const int64_t[]){24}, &o), PEFT_ERR_INVALID_ARG,
                   "peft_reshape: x [4, 3, 2] is not contiguous (make it so with peft_contiguous)");
    TU_OK(ctx, peft_slice(ctx, x, 2, 1, 2, &t));
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, t, 1, (const int64_t[]){12}, &o), PEFT_ERR_INVALID_ARG, "not contiguous");
    /* blocked storage: the last dim must stay a whole number of blocks */
    peft_tensor *q;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_Q8_0, 2, (const int64_t[]){2, 64}, &q));
    TU_OK(ctx, peft_reshape(ctx, q, 2, (const int64_t[]){4, 32}, &o));
    TU_EXPECT_FAIL(ctx, peft_reshape(ctx, q, 2, (const int64_t[]){8, 16}, &o), PEFT_ERR_SHAPE,
                   "peft_reshape: last dim 16 is not a multiple of the q8_0 block (32)");
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(q);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- transpose ---- */

START_TEST(numerics_transpose)
{
    peft_ctx *ctx = tu_ctx(1, 33);
    const int64_t s[3] = {2, 3, 4};
    peft_tensor *x = arange(ctx, 3, s, 0), *v, *w;
    const float *X = peft_tensor_data(x);
    /* (0, 2) and (-1, -3) are the same swap */
    const int axes[2][2] = {{0, 2}, {-1, -3}};
    for (int k = 0; k < 2; k++) {
        TU_OK(ctx, peft_transpose(ctx, x, axes[k][0], axes[k][1], &v));
        assert_shape(v, 3, (const int64_t[]){4, 3, 2});
        ck_assert_int_eq(peft_tensor_stride(v, 0), 1);
        ck_assert_int_eq(peft_tensor_stride(v, 1), 4);
        ck_assert_int_eq(peft_tensor_stride(v, 2), 12);
        ck_assert(!peft_tensor_is_contiguous(v));
        ck_assert_ptr_eq(peft_tensor_data(v), peft_tensor_data(x));
        float *V = values(v);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++)
                for (int l = 0; l < 2; l++) ck_assert_float_eq(V[(i * 3 + j) * 2 + l], X[(l * 3 + j) * 4 + i]);
        free(V);
    }
    /* transposing back gives the base layout; the same axis twice is the identity */
    TU_OK(ctx, peft_transpose(ctx, v, 0, 2, &w));
    assert_shape(w, 3, s);
    ck_assert(peft_tensor_is_contiguous(w));
    TU_OK(ctx, peft_transpose(ctx, x, 1, 1, &w));
    assert_shape(w, 3, s);
    ck_assert(peft_tensor_is_contiguous(w));
    /* views share storage: a write to the base shows through, and a write
     * through a strided view lands at the right base positions */
    TU_OK(ctx, peft_transpose(ctx, x, 1, 2, &v)); /* [2, 4, 3] */
    ((float *)peft_tensor_data(x))[1 * 12 + 2 * 4 + 3] = 100.0f;
    float *V = values(v);
    ck_assert_float_eq(V[(1 * 4 + 3) * 3 + 2], 100.0f);
    free(V);
    float src[24];
    for (int i = 0; i < 24; i++) src[i] = (float)(1000 + i);
    TU_OK(ctx, peft_tensor_set_f32(v, src, 24));
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++) ck_assert_float_eq(X[b * 12 + j * 4 + i], src[(b * 4 + i) * 3 + j]);
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- slice ---- */

START_TEST(numerics_slice)
{
    peft_ctx *ctx = tu_ctx(1, 34);
    const int64_t s[3] = {4, 5, 6};
    peft_tensor *x = arange(ctx, 3, s, 0), *v, *w;
    const float *X = peft_tensor_data(x);
    /* middle axis */
    TU_OK(ctx, peft_slice(ctx, x, 1, 1, 3, &v));
    assert_shape(v, 3, (const int64_t[]){4, 3, 6});
    ck_assert_ptr_eq(peft_tensor_data(v), X + 6);
    ck_assert_int_eq(peft_tensor_stride(v, 0), 30);
    float *V = values(v);
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 6; c++) ck_assert_float_eq(V[(a * 3 + b) * 6 + c], X[a * 30 + (b + 1) * 6 + c]);
    free(V);
    /* negative axis, last positions */
    TU_OK(ctx, peft_slice(ctx, x, -1, 2, 4, &v));
    assert_shape(v, 3, (const int64_t[]){4, 5, 4});
    ck_assert_ptr_eq(peft_tensor_data(v), X + 2);
    V = values(v);
    for (int a = 0; a < 20; a++)
        for (int c = 0; c < 4; c++) ck_assert_float_eq(V[a * 4 + c], X[a * 6 + c + 2]);
    free(V);
    /* the whole axis; a slice of a slice; a slice of a transpose */
    TU_OK(ctx, peft_slice(ctx, x, 0, 0, 4, &v));
    ck_assert(peft_tensor_is_contiguous(v));
    TU_OK(ctx, peft_slice(ctx, x, 2, 1, 4, &v));
    TU_OK(ctx, peft_slice(ctx, v, 2, 2, 2, &w)); /* columns 3..4 */
    ck_assert_ptr_eq(peft_tensor_data(w), X + 3);
    V = values(w);
    for (int a = 0; a < 20; a++)
        for (int c = 0; c < 2; c++) ck_assert_float_eq(V[a * 2 + c], X[a * 6 + c + 3]);
    free(V);
    TU_OK(ctx, peft_transpose(ctx, x, 0, 2, &v));  /* [6, 5, 4] */
    TU_OK(ctx, peft_slice(ctx, v, 0, 4, 2, &w));   /* base columns 4..5 */
    TU_OK(ctx, peft_slice(ctx, w, -1, 1, 3, &w));  /* base rows 1..3 of axis 0 */
    assert_shape(w, 3, (const int64_t[]){2, 5, 3});
    V = values(w);
    for (int c = 0; c < 2; c++)
        for (int b = 0; b < 5; b++)
            for (int a = 0; a < 3; a++)
                ck_assert_float_eq(V[(c * 5 + b) * 3 + a], X[(a + 1) * 30 + b * 6 + c + 4]);
    free(V);
    /* an i32 tensor slices too */
    const int32_t ids[6] = {1, 2, 3, 4, 5, 6};
    peft_tensor *t = tu_ids(ctx, 2, (const int64_t[]){2, 3}, ids);
    TU_OK(ctx, peft_slice(ctx, t, 1, 1, 2, &v));
    int32_t got[4];
    TU_OK(ctx, peft_tensor_copy_out(v, got, PEFT_DTYPE_I32, 4));
    const int32_t want[4] = {2, 3, 5, 6};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(got[i], want[i]);
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(t);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_transpose_slice_errors)
{
    peft_ctx *ctx = tu_ctx(1, 35);
    const int64_t s[3] = {4, 5, 6};
    peft_tensor *x = arange(ctx, 3, s, 0), *o = x;
    TU_EXPECT_FAIL(ctx, peft_transpose(ctx, x, 0, 3, &o), PEFT_ERR_INVALID_ARG,
                   "peft_transpose: axes (0, 3) out of range for [4, 5, 6]");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_transpose(ctx, x, -4, 1, &o), PEFT_ERR_INVALID_ARG, "axes (-4, 1) out of range");
    TU_EXPECT_FAIL(ctx, peft_transpose(ctx, NULL, 0, 1, &o), PEFT_ERR_INVALID_ARG, "peft_transpose: x is NULL");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, 1, 4, 2, &o), PEFT_ERR_INVALID_ARG,
                   "peft_slice: start 4, length 2 is outside axis 1 of [4, 5, 6]");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, 1, 0, 6, &o), PEFT_ERR_INVALID_ARG, "start 0, length 6 is outside axis 1");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, 1, 5, 1, &o), PEFT_ERR_INVALID_ARG, "start 5, length 1 is outside");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, 1, 2, 0, &o), PEFT_ERR_INVALID_ARG, "start 2, length 0 is outside");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, -2, -1, 2, &o), PEFT_ERR_INVALID_ARG, "start -1, length 2 is outside axis -2");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, 3, 0, 1, &o), PEFT_ERR_INVALID_ARG,
                   "peft_slice: axis 3 out of range for [4, 5, 6]");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, -4, 0, 1, &o), PEFT_ERR_INVALID_ARG, "axis -4 out of range");
    /* an end past INT64_MAX is reported, not computed */
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, 0, 1, INT64_MAX, &o), PEFT_ERR_INVALID_ARG,
                   "start 1, length 9223372036854775807 is outside axis 0");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, x, 0, 0, 1, NULL), PEFT_ERR_INVALID_ARG, "peft_slice: out is NULL");
    peft_tensor *q;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_Q8_0, 2, (const int64_t[]){2, 32}, &q));
    TU_EXPECT_FAIL(ctx, peft_transpose(ctx, q, 0, 1, &o), PEFT_ERR_DTYPE, "q8_0 tensors cannot be viewed");
    TU_EXPECT_FAIL(ctx, peft_slice(ctx, q, 0, 0, 1, &o), PEFT_ERR_DTYPE, "q8_0 tensors cannot be sliced");
    TU_EXPECT_FAIL(ctx, peft_contiguous(ctx, q, &o), PEFT_ERR_DTYPE, "peft_contiguous: x is q8_0");
    TU_EXPECT_FAIL(ctx, peft_contiguous(ctx, NULL, &o), PEFT_ERR_INVALID_ARG, "peft_contiguous: x is NULL");
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(q);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- contiguous ---- */

START_TEST(numerics_contiguous)
{
    peft_ctx *ctx = tu_ctx(2, 36);
    const int64_t s[3] = {3, 4, 5};
    peft_tensor *x = arange(ctx, 3, s, 0), *v, *c;
    /* already contiguous: x itself */
    TU_OK(ctx, peft_contiguous(ctx, x, &c));
    ck_assert_ptr_eq(c, x);
    /* a strided view: a fresh contiguous copy with the same logical values */
    TU_OK(ctx, peft_transpose(ctx, x, 0, 1, &v));
    TU_OK(ctx, peft_slice(ctx, v, 2, 1, 3, &v)); /* [4, 3, 3] */
    TU_OK(ctx, peft_contiguous(ctx, v, &c));
    assert_shape(c, 3, (const int64_t[]){4, 3, 3});
    ck_assert(peft_tensor_is_contiguous(c));
    ck_assert_ptr_ne(peft_tensor_data(c), peft_tensor_data(x));
    float *V = values(v);
    const float *C = peft_tensor_data(c);
    for (int i = 0; i < 36; i++) ck_assert_float_eq(C[i], V[i]);
    free(V);
    /* the copy does not alias the base */
    ((float *)peft_tensor_data(x))[1] = -5.0f;
    ck_assert_float_eq(C[0], 1.0f); /* c[0,0,0] = x[0,0,1] */
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- gradients through chains of views ---- */

typedef peft_status (*chain_fn)(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);

/* [3,4,5] -> transpose(0,2) [5,4,3] -> slice(1, 1, 2) [5,2,3] -> contiguous */
static peft_status chain_a(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    peft_tensor *t;
    peft_status st;
    if ((st = peft_transpose(ctx, x, 0, 2, &t)) != PEFT_OK) return st;
    if ((st = peft_slice(ctx, t, 1, 1, 2, &t)) != PEFT_OK) return st;
    return peft_contiguous(ctx, t, out);
}

/* slice -> transpose -> slice, returned as a strided view */
static peft_status chain_b(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    peft_tensor *t;
    peft_status st;
    if ((st = peft_slice(ctx, x, -1, 1, 3, &t)) != PEFT_OK) return st;  /* [3,4,3] */
    if ((st = peft_transpose(ctx, t, -1, -3, &t)) != PEFT_OK) return st; /* [3,4,3] swapped */
    return peft_slice(ctx, t, 1, 2, 2, out);  /* [3,2,3] */
}

/* reshape -> transpose -> contiguous -> reshape(-1) -> mul with a slice of x:
 * values matter, not just positions */
static peft_status chain_c(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    peft_tensor *t, *u;
    peft_status st;
    if ((st = peft_reshape(ctx, x, 2, (const int64_t[]){12, 5}, &t)) != PEFT_OK) return st;
    if ((st = peft_transpose(ctx, t, 0, 1, &t)) != PEFT_OK) return st; /* [5,12] */
    if ((st = peft_contiguous(ctx, t, &t)) != PEFT_OK) return st;
    if ((st = peft_reshape(ctx, t, 1, (const int64_t[]){-1}, &t)) != PEFT_OK) return st; /* [60] */
    if ((st = peft_slice(ctx, t, 0, 10, 20, &u)) != PEFT_OK) return st;
    if ((st = peft_slice(ctx, t, 0, 25, 20, &t)) != PEFT_OK) return st; /* overlaps u */
    return peft_mul(ctx, t, u, out);
}

/* views of an op output (not a leaf): scale -> transpose -> slice -> add to itself */
static peft_status chain_d(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    peft_tensor *t, *u;
    peft_status st;
    if ((st = peft_scale(ctx, x, 1.5f, &t)) != PEFT_OK) return st;
    if ((st = peft_transpose(ctx, t, 1, 2, &t)) != PEFT_OK) return st; /* [3,5,4] */
    if ((st = peft_slice(ctx, t, 2, 0, 3, &u)) != PEFT_OK) return st;
    if ((st = peft_slice(ctx, t, 2, 1, 3, &t)) != PEFT_OK) return st;
    return peft_mul(ctx, t, u, out);
}

/* a slice of a transpose, made contiguous, summed */
static peft_status chain_e(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    peft_tensor *t;
    peft_status st;
    if ((st = peft_transpose(ctx, x, 0, 1, &t)) != PEFT_OK) return st;
    if ((st = peft_slice(ctx, t, 0, 1, 2, &t)) != PEFT_OK) return st;
    if ((st = peft_contiguous(ctx, t, &t)) != PEFT_OK) return st;
    return peft_sum(ctx, t, out);
}

static peft_status fwd_chain(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    return (*(chain_fn *)arg)(ctx, in[0], out);
}

START_TEST(grad_view_chains)
{
    peft_ctx *ctx = tu_ctx(2, 37);
    const int64_t s[3] = {3, 4, 5};
    peft_tensor *x = tu_randn(ctx, 3, s, 1.0f, 1);
    chain_fn chains[] = {chain_a, chain_b, chain_c, chain_d, chain_e};
    tu_gradcheck_opts o = tu_gradcheck_defaults();
    o.max_checks = 60; /* every element */
    for (size_t c = 0; c < sizeof chains / sizeof *chains; c++) {
        char label[32];
        snprintf(label, sizeof label, "chain %c", (char)('a' + c));
        tu_gradcheck(ctx, label, fwd_chain, &x, 1, &chains[c], &o);
    }
    /* 4-D: the same chain on [2,3,4,5] */
    const int64_t s4[4] = {2, 3, 4, 5};
    peft_tensor *y = tu_randn(ctx, 4, s4, 1.0f, 1);
    chain_fn c4 = chain_a;
    tu_gradcheck(ctx, "4-D chain a", fwd_chain, &y, 1, &c4, NULL);
    peft_tensor_destroy(y);
    /* exact: sum(contiguous(slice(transpose(x)))) has gradient 1 where the
     * slice covers x (x[:, 1:3, :]) and 0 elsewhere */
    peft_tensor *l;
    peft_tensor_zero_grad(x);
    TU_OK(ctx, chain_e(ctx, x, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    const float *g = peft_tensor_grad(x);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 4; b++)
            for (int k = 0; k < 5; k++)
                ck_assert_float_eq(g[(a * 4 + b) * 5 + k], (b == 1 || b == 2) ? 1.0f : 0.0f);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- concat ---- */

typedef struct cat_arg {
    int n, axis;
    int view; /* 1: in[1] enters as a transpose of its last two dims, in[2] as a slice */
} cat_arg;

static peft_status fwd_concat(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    const cat_arg *c = arg;
    peft_tensor *xs[8];
    peft_status st;
    for (int k = 0; k < c->n; k++) xs[k] = in[k];
    if (c->view) {
        if ((st = peft_transpose(ctx, in[1], -1, -2, &xs[1])) != PEFT_OK) return st;
        if ((st = peft_slice(ctx, in[2], 0, 1, peft_tensor_dim(in[2], 0) - 1, &xs[2])) != PEFT_OK) return st;
    }
    return peft_concat(ctx, xs, c->n, c->axis, out);
}

/* Reference: walk the output, find the input owning each position. */
static void check_concat(peft_tensor *const *xs, int n, int axis, const peft_tensor *out)
{
    int nd = peft_tensor_ndim(xs[0]);
    int a = axis < 0 ? axis + nd : axis;
    int64_t outer = 1, inner = 1, len = 0;
    for (int i = 0; i < a; i++) outer *= peft_tensor_dim(xs[0], i);
    for (int i = a + 1; i < nd; i++) inner *= peft_tensor_dim(xs[0], i);
    for (int k = 0; k < n; k++) len += peft_tensor_dim(xs[k], a);
    ck_assert_int_eq(peft_tensor_ndim(out), nd);
    ck_assert_int_eq(peft_tensor_dim(out, a), len);
    ck_assert(peft_tensor_is_contiguous(out));
    const float *O = peft_tensor_data(out);
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        int64_t lk = peft_tensor_dim(xs[k], a);
        float *V = values(xs[k]);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t l = 0; l < lk; l++)
                for (int64_t i = 0; i < inner; i++)
                    ck_assert_float_eq(O[(o * len + off + l) * inner + i], V[(o * lk + l) * inner + i]);
        free(V);
        off += lk;
    }
}

START_TEST(numerics_concat)
{
    peft_ctx *ctx = tu_ctx(2, 38);
    /* along each axis of [2,3,4]-like inputs with different lengths on that axis */
    for (int axis = -3; axis < 3; axis++) {
        int a = axis < 0 ? axis + 3 : axis;
        const int64_t lens[3] = {1, 3, 2};
        peft_tensor *xs[3];
        for (int k = 0; k < 3; k++) {
            int64_t s[3] = {2, 3, 4};
            s[a] = lens[k];
            xs[k] = tu_randn(ctx, 3, s, 1.0f, 0);
        }
        peft_tensor *o;
        TU_OK(ctx, peft_concat(ctx, xs, 3, axis, &o));
        check_concat(xs, 3, axis, o);
        ck_assert_ptr_null(o->node); /* nothing requires a gradient */
        for (int k = 0; k < 3; k++) peft_tensor_destroy(xs[k]);
    }
    /* strided inputs: a transpose and a slice next to a plain tensor */
    const int64_t s1[2] = {5, 3}, s2[2] = {3, 7}, s3[2] = {3, 2};
    peft_tensor *p = tu_randn(ctx, 2, s1, 1.0f, 0), *q = tu_randn(ctx, 2, s2, 1.0f, 0), *r = tu_randn(ctx, 2, s3, 1.0f, 0);
    peft_tensor *xs[3], *o;
    TU_OK(ctx, peft_transpose(ctx, p, 0, 1, &xs[0])); /* [3,5] */
    TU_OK(ctx, peft_slice(ctx, q, 1, 2, 4, &xs[1]));  /* [3,4] */
    xs[2] = r;
    TU_OK(ctx, peft_concat(ctx, xs, 3, 1, &o));
    assert_shape(o, 2, (const int64_t[]){3, 11});
    check_concat(xs, 3, 1, o);
    /* one input: a copy, not the same storage */
    TU_OK(ctx, peft_concat(ctx, xs, 1, 0, &o));
    check_concat(xs, 1, 0, o);
    ck_assert_ptr_ne(peft_tensor_data(o), peft_tensor_data(p));
    /* many inputs (more than a tape node holds), 1-D and 4-D */
    peft_tensor *many[7];
    for (int k = 0; k < 7; k++) many[k] = tu_randn(ctx, 1, (const int64_t[]){k + 1}, 1.0f, 0);
    TU_OK(ctx, peft_concat(ctx, many, 7, 0, &o));
    assert_shape(o, 1, (const int64_t[]){28});
    check_concat(many, 7, 0, o);
    for (int k = 0; k < 7; k++) peft_tensor_destroy(many[k]);
    const int64_t a4[4] = {2, 1, 3, 2}, b4[4] = {2, 1, 3, 5};
    peft_tensor *x4[2] = {tu_randn(ctx, 4, a4, 1.0f, 0), tu_randn(ctx, 4, b4, 1.0f, 0)};
    TU_OK(ctx, peft_concat(ctx, x4, 2, -1, &o));
    check_concat(x4, 2, -1, o);
    peft_graph_release(ctx);
    peft_tensor_destroy(x4[0]), peft_tensor_destroy(x4[1]);
    peft_tensor_destroy(p), peft_tensor_destroy(q), peft_tensor_destroy(r);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_concat)
{
    peft_ctx *ctx = tu_ctx(2, 39);
    /* three inputs along each axis */
    for (int axis = -3; axis < 3; axis++) {
        int a = axis < 0 ? axis + 3 : axis;
        peft_tensor *in[3];
        for (int k = 0; k < 3; k++) {
            int64_t s[3] = {2, 3, 4};
            s[a] = k + 1;
            in[k] = tu_randn(ctx, 3, s, 1.0f, 1);
        }
        cat_arg ca = {3, axis, 0};
        tu_gradcheck(ctx, "concat", fwd_concat, in, 3, &ca, NULL);
        for (int k = 0; k < 3; k++) peft_tensor_destroy(in[k]);
    }
    /* strided inputs: in[1] transposed, in[2] sliced inside the forward */
    {
        peft_tensor *in[3] = {tu_randn(ctx, 2, (const int64_t[]){3, 4}, 1.0f, 1),
                              tu_randn(ctx, 2, (const int64_t[]){5, 3}, 1.0f, 1),
                              tu_randn(ctx, 2, (const int64_t[]){4, 2}, 1.0f, 1)};
        cat_arg ca = {3, 1, 1}; /* [3,4] | [3,5] | [3,2] */
        tu_gradcheck(ctx, "concat of views", fwd_concat, in, 3, &ca, NULL);
        for (int k = 0; k < 3; k++) peft_tensor_destroy(in[k]);
    }
    /* six inputs (more than the node keeps), two of them frozen */
    peft_tensor *in[6];
    for (int k = 0; k < 6; k++) in[k] = tu_randn(ctx, 2, (const int64_t[]){2 + k % 3, 3}, 1.0f, k != 1 && k != 4);
    cat_arg ca = {6, 0, 0};
    tu_gradcheck(ctx, "concat of 6", fwd_concat, in, 6, &ca, NULL);
    ck_assert_ptr_null(peft_tensor_grad(in[1]));
    ck_assert_ptr_null(peft_tensor_grad(in[4]));
    /* exact: d sum(concat(x, y, x)) = 2 for x, 1 for y (the same input twice adds) */
    peft_tensor *xs[3] = {in[0], in[2], in[0]}, *o, *l;
    peft_tensor_zero_grad(in[0]);
    peft_tensor_zero_grad(in[2]);
    TU_OK(ctx, peft_concat(ctx, xs, 3, 0, &o));
    TU_OK(ctx, peft_sum(ctx, o, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    for (int i = 0; i < 6; i++) ck_assert_float_eq(peft_tensor_grad(in[0])[i], 2.0f);
    for (int i = 0; i < 12; i++) ck_assert_float_eq(peft_tensor_grad(in[2])[i], 1.0f);
    for (int k = 0; k < 6; k++) peft_tensor_destroy(in[k]);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_concat_errors)
{
    peft_ctx *ctx = tu_ctx(1, 40), *other = tu_ctx(1, 41);
    peft_tensor *a = tu_randn(ctx, 2, (const int64_t[]){2, 3}, 1, 0), *b = tu_randn(ctx, 2, (const int64_t[]){4, 3}, 1, 0);
    peft_tensor *c = tu_randn(ctx, 3, (const int64_t[]){2, 3, 1}, 1, 0), *f = tu_randn(other, 2, (const int64_t[]){2, 3}, 1, 0);
    const int32_t ids[3] = {0, 1, 2};
    peft_tensor *i32 = tu_ids(ctx, 2, (const int64_t[]){1, 3}, ids);
    peft_tensor *o = a;
    peft_tensor *ab[2] = {a, b};
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, ab, 2, 1, &o), PEFT_ERR_SHAPE,
                   "peft_concat: xs[1] [4, 3] does not match xs[0] [2, 3] outside axis 1");
    ck_assert_ptr_null(o);
    TU_OK(ctx, peft_concat(ctx, ab, 2, 0, &o)); /* fine along axis 0 */
    assert_shape(o, 2, (const int64_t[]){6, 3});
    peft_tensor *ac[2] = {a, c};
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, ac, 2, 0, &o), PEFT_ERR_SHAPE, "xs[1] [2, 3, 1] does not match xs[0] [2, 3]");
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, ab, 2, 2, &o), PEFT_ERR_INVALID_ARG,
                   "peft_concat: axis 2 out of range for xs[0] [2, 3]");
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, ab, 2, -3, &o), PEFT_ERR_INVALID_ARG, "axis -3 out of range");
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, ab, 0, 0, &o), PEFT_ERR_INVALID_ARG, "peft_concat: need at least one input");
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, NULL, 2, 0, &o), PEFT_ERR_INVALID_ARG, "xs NULL");
    peft_tensor *an[2] = {a, NULL};
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, an, 2, 0, &o), PEFT_ERR_INVALID_ARG, "peft_concat: xs[1] is NULL");
    peft_tensor *af[2] = {a, f};
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, af, 2, 0, &o), PEFT_ERR_INVALID_ARG, "xs[1] belongs to another context");
    peft_tensor *ai[2] = {a, i32};
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, ai, 2, 0, &o), PEFT_ERR_DTYPE, "peft_concat: xs[1] is i32, expected f32");
    TU_EXPECT_FAIL(ctx, peft_concat(ctx, ab, 2, 0, NULL), PEFT_ERR_INVALID_ARG, "peft_concat: out is NULL");
    ck_assert_int_eq(peft_concat(NULL, ab, 2, 0, &o), PEFT_ERR_INVALID_ARG);
    peft_graph_release(ctx);
    peft_tensor_destroy(a), peft_tensor_destroy(b), peft_tensor_destroy(c), peft_tensor_destroy(f),
        peft_tensor_destroy(i32);
    peft_ctx_destroy(ctx);
    peft_ctx_destroy(other);
}
END_TEST

/* ---- split ---- */

START_TEST(numerics_split)
{
    peft_ctx *ctx = tu_ctx(1, 42);
    const int64_t s[3] = {3, 7, 2};
    peft_tensor *x = arange(ctx, 3, s, 0), *outs[3];
    const float *X = peft_tensor_data(x);
    const int64_t sizes[3] = {2, 4, 1};
    for (int axis = 1; axis >= -2; axis -= 3) { /* 1 and its negative twin -2 */
        TU_OK(ctx, peft_split(ctx, x, axis, 3, sizes, outs));
        int64_t off = 0;
        for (int k = 0; k < 3; k++) {
            assert_shape(outs[k], 3, (const int64_t[]){3, sizes[k], 2});
            ck_assert_ptr_eq(peft_tensor_data(outs[k]), X + off * 2); /* views into x */
            ck_assert_int_eq(peft_tensor_stride(outs[k], 0), 14);
            float *V = values(outs[k]);
            for (int a = 0; a < 3; a++)
                for (int l = 0; l < sizes[k]; l++)
                    for (int c = 0; c < 2; c++)
                        ck_assert_float_eq(V[(a * sizes[k] + l) * 2 + c], X[a * 14 + (off + l) * 2 + c]);
            free(V);
            off += sizes[k];
        }
    }
    /* the parts joined again give x back */
    peft_tensor *o;
    TU_OK(ctx, peft_concat(ctx, outs, 3, 1, &o));
    for (int i = 0; i < 42; i++) ck_assert_float_eq(((float *)peft_tensor_data(o))[i], X[i]);
    /* one part: a view of everything */
    TU_OK(ctx, peft_split(ctx, x, 0, 1, (const int64_t[]){3}, outs));
    assert_shape(outs[0], 3, s);
    ck_assert_ptr_eq(peft_tensor_data(outs[0]), X);
    /* a split of a strided view, writes through a part reach the base */
    peft_tensor *t;
    TU_OK(ctx, peft_transpose(ctx, x, 0, 2, &t)); /* [2,7,3] */
    TU_OK(ctx, peft_split(ctx, t, -1, 2, (const int64_t[]){1, 2}, outs));
    assert_shape(outs[1], 3, (const int64_t[]){2, 7, 2});
    TU_OK(ctx, peft_tensor_fill(outs[1], -1.0f));
    for (int a = 0; a < 3; a++)
        for (int i = 0; i < 14; i++) ck_assert_float_eq(X[a * 14 + i], a == 0 ? (float)i : -1.0f);
    /* f16 storage splits too (views need no f32) */
    peft_tensor *h;
    TU_OK(ctx, peft_tensor_convert(x, PEFT_DTYPE_F16, &h));
    TU_OK(ctx, peft_split(ctx, h, 0, 2, (const int64_t[]){2, 1}, outs));
    float v2[14];
    TU_OK(ctx, peft_tensor_get_f32(outs[1], v2, 14));
    for (int i = 0; i < 14; i++) ck_assert_float_eq(v2[i], -1.0f);
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(h);
    peft_ctx_destroy(ctx);
}
END_TEST

typedef struct split_arg {
    int axis;
    int64_t sizes[3];
} split_arg;

/* split into three, join them back in the order 2, 0, 1 */
static peft_status fwd_split_perm(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    const split_arg *s = arg;
    peft_tensor *p[3];
    peft_status st;
    if ((st = peft_split(ctx, in[0], s->axis, 3, s->sizes, p)) != PEFT_OK) return st;
    peft_tensor *perm[3] = {p[2], p[0], p[1]};
    return peft_concat(ctx, perm, 3, s->axis, out);
}

/* split into two equal halves of a transpose, multiply them (values matter) */
static peft_status fwd_split_mul(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    (void)arg;
    peft_tensor *t, *p[2];
    peft_status st;
    if ((st = peft_transpose(ctx, in[0], 0, 1, &t)) != PEFT_OK) return st; /* [6,4] */
    if ((st = peft_split(ctx, t, 0, 2, (const int64_t[]){3, 3}, p)) != PEFT_OK) return st;
    return peft_mul(ctx, p[0], p[1], out);
}

START_TEST(grad_split)
{
    peft_ctx *ctx = tu_ctx(2, 43);
    const int64_t s[3] = {3, 6, 4};
    peft_tensor *x = tu_randn(ctx, 3, s, 1.0f, 1);
    const split_arg args[] = {{0, {1, 1, 1}}, {1, {2, 3, 1}}, {-1, {1, 2, 1}}, {-2, {4, 1, 1}}};
    for (size_t c = 0; c < sizeof args / sizeof *args; c++)
        tu_gradcheck(ctx, "split/concat", fwd_split_perm, &x, 1, (void *)&args[c], NULL);
    peft_tensor *y = tu_randn(ctx, 2, (const int64_t[]){4, 6}, 1.0f, 1);
    tu_gradcheck(ctx, "split/mul", fwd_split_mul, &y, 1, NULL, NULL);
    /* exact: only the part that is used gets a gradient */
    peft_tensor *p[3], *l;
    peft_tensor_zero_grad(x);
    TU_OK(ctx, peft_split(ctx, x, 1, 3, (const int64_t[]){2, 3, 1}, p));
    TU_OK(ctx, peft_contiguous(ctx, p[1], &p[1]));
    TU_OK(ctx, peft_sum(ctx, p[1], &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    const float *g = peft_tensor_grad(x);
    for (int a = 0; a < 3; a++)
        for (int r = 0; r < 6; r++)
            for (int c = 0; c < 4; c++) ck_assert_float_eq(g[(a * 6 + r) * 4 + c], (r >= 2 && r < 5) ? 1.0f : 0.0f);
    peft_tensor_destroy(x), peft_tensor_destroy(y);
    peft_ctx_destroy(ctx);
}
END_TEST

static void assert_all_null(peft_tensor **outs, int n)
{
    for (int k = 0; k < n; k++) ck_assert_msg(outs[k] == NULL, "outs[%d] was left set", k);
}

START_TEST(api_split_errors)
{
    peft_ctx *ctx = tu_ctx(1, 44);
    const int64_t s[2] = {2, 5};
    peft_tensor *x = arange(ctx, 2, s, 0), *outs[3];
#define PREFILL() (outs[0] = outs[1] = outs[2] = x)
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, 1, 3, (const int64_t[]){1, 2, 1}, outs), PEFT_ERR_SHAPE,
                   "peft_split: 3 sizes add up to 4, not 5, the length of axis 1 of [2, 5]");
    assert_all_null(outs, 3);
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, -1, 3, (const int64_t[]){1, 4, 1}, outs), PEFT_ERR_SHAPE,
                   "3 sizes add up to more than 5, the length of axis -1 of [2, 5]");
    assert_all_null(outs, 3);
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, 1, 3, (const int64_t[]){INT64_MAX, INT64_MAX, 2}, outs), PEFT_ERR_SHAPE,
                   "add up to more than 5");
    assert_all_null(outs, 3);
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, 1, 3, (const int64_t[]){2, 0, 3}, outs), PEFT_ERR_INVALID_ARG,
                   "peft_split: sizes[1] is 0 (must be > 0)");
    assert_all_null(outs, 3);
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, 1, 3, (const int64_t[]){6, -1, 0}, outs), PEFT_ERR_INVALID_ARG,
                   "sizes[1] is -1");
    assert_all_null(outs, 3);
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, 2, 3, (const int64_t[]){1, 1, 0}, outs), PEFT_ERR_INVALID_ARG,
                   "peft_split: axis 2 out of range for [2, 5]");
    assert_all_null(outs, 3);
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, 1, 3, NULL, outs), PEFT_ERR_INVALID_ARG, "peft_split: sizes is NULL");
    assert_all_null(outs, 3);
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, NULL, 1, 3, (const int64_t[]){1, 1, 3}, outs), PEFT_ERR_INVALID_ARG,
                   "peft_split: x is NULL");
    assert_all_null(outs, 3);
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, 1, 0, (const int64_t[]){5}, outs), PEFT_ERR_INVALID_ARG,
                   "peft_split: n is 0");
    TU_EXPECT_FAIL(ctx, peft_split(ctx, x, 1, 1, (const int64_t[]){5}, NULL), PEFT_ERR_INVALID_ARG,
                   "peft_split: outs is NULL");
    ck_assert_int_eq(peft_split(NULL, x, 1, 1, (const int64_t[]){5}, outs), PEFT_ERR_INVALID_ARG);
    peft_tensor *q;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_Q8_0, 2, (const int64_t[]){2, 32}, &q));
    PREFILL();
    TU_EXPECT_FAIL(ctx, peft_split(ctx, q, 0, 2, (const int64_t[]){1, 1}, outs), PEFT_ERR_DTYPE,
                   "peft_split: q8_0 tensors cannot be split");
    assert_all_null(outs, 2);
#undef PREFILL
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(q);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Running out of scratch part-way leaves no partial outputs. The arena is
 * filled so that only m view handles fit. */
START_TEST(api_split_nomem_leaves_nothing)
{
    peft_ctx_opts co = peft_ctx_opts_default();
    co.n_threads = 1;
    co.arena_limit = 4096;
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(&co, &ctx), PEFT_OK);
    peft_tensor *x = arange(ctx, 2, (const int64_t[]){2, 6}, 0), *outs[3];
    const size_t handle = (sizeof(peft_tensor) + PEFT__ALIGN - 1) / PEFT__ALIGN * PEFT__ALIGN;
    for (size_t m = 0; m <= 3; m++) {
        peft_graph_release(ctx); /* rewinds the arena */
        void *fill;
        TU_OK(ctx, peft_arena_alloc(peft_ctx_arena(ctx), 4096 - m * handle, &fill));
        outs[0] = outs[1] = outs[2] = x;
        peft_status st = peft_split(ctx, x, 1, 3, (const int64_t[]){1, 2, 3}, outs);
        if (m < 3) {
            ck_assert_int_eq(st, PEFT_ERR_NOMEM);
            ck_assert_ptr_nonnull(strstr(peft_ctx_errmsg(ctx), "peft_slice"));
            assert_all_null(outs, 3);
        } else {
            ck_assert_int_eq(st, PEFT_OK);
            for (int k = 0; k < 3; k++) ck_assert_ptr_nonnull(outs[k]);
        }
    }
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *view_suite(void)
{
    Suite *s = suite_create("view");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_reshape);
    tcase_add_test(tc, numerics_transpose);
    tcase_add_test(tc, numerics_slice);
    tcase_add_test(tc, numerics_contiguous);
    tcase_add_test(tc, numerics_concat);
    tcase_add_test(tc, numerics_split);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_view_chains);
    tcase_add_test(tc, grad_concat);
    tcase_add_test(tc, grad_split);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_reshape_errors);
    tcase_add_test(tc, api_transpose_slice_errors);
    tcase_add_test(tc, api_concat_errors);
    tcase_add_test(tc, api_split_errors);
    tcase_add_test(tc, api_split_nomem_leaves_nothing);
    suite_add_tcase(s, tc);
    return s;
}
