/* peft_sum / peft_mean (all elements) and peft_sum_axis / peft_mean_axis:
 * values against a double reference, output shapes, negative axes, double
 * accumulation, gradients, errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

typedef struct red_arg {
    int mean;
    int axis;
} red_arg;

static peft_status fwd_all(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    return ((red_arg *)arg)->mean ? peft_mean(ctx, in[0], out) : peft_sum(ctx, in[0], out);
}

static peft_status fwd_axis(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    const red_arg *r = arg;
    return r->mean ? peft_mean_axis(ctx, in[0], r->axis, out) : peft_sum_axis(ctx, in[0], r->axis, out);
}

typedef struct shape {
    int nd;
    int64_t s[4];
} shape;

static const shape shapes[] = {
    {1, {1}}, {1, {7}}, {2, {3, 5}}, {3, {2, 3, 4}}, {4, {2, 1, 3, 5}}, {2, {1, 9}}, {3, {5, 1, 1}}, {2, {37, 129}},
};

START_TEST(numerics_sum_mean_all)
{
    peft_ctx *ctx = tu_ctx(2, 21);
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        peft_tensor *x = tu_randn(ctx, shapes[c].nd, shapes[c].s, 1.0f, 1);
        const float *X = peft_tensor_data(x);
        int64_t n = peft_tensor_numel(x);
        double ref = 0;
        for (int64_t i = 0; i < n; i++) ref += X[i];
        for (int mean = 0; mean < 2; mean++) {
            peft_tensor *o;
            TU_OK(ctx, mean ? peft_mean(ctx, x, &o) : peft_sum(ctx, x, &o));
            ck_assert_int_eq(peft_tensor_ndim(o), 1);
            ck_assert_int_eq(peft_tensor_dim(o, 0), 1);
            float v;
            TU_OK(ctx, peft_tensor_item(o, &v));
            double want = mean ? ref / (double)n : ref;
            if (mean) ck_assert_double_le(fabs(v - want), 1e-6 * (1 + fabs(want)));
            else ck_assert_float_eq(v, (float)want); /* the same double sum, in the same order */
            red_arg ra = {mean, 0};
            tu_gradcheck(ctx, mean ? "mean" : "sum", fwd_all, &x, 1, &ra, NULL);
        }
        peft_graph_release(ctx);
        peft_tensor_destroy(x);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

/* Sums accumulate in double: 2^24 + 1000 ones is exact, where a float
 * accumulator would stay at 2^24. */
START_TEST(numerics_double_accumulation)
{
    peft_ctx *ctx = tu_ctx(1, 22);
    const int64_t s[1] = {1001}, s2[2] = {1001, 2};
    peft_tensor *x, *y, *o;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 1, s, &x));
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, s2, &y));
    TU_OK(ctx, peft_tensor_fill(x, 1.0f));
    TU_OK(ctx, peft_tensor_fill(y, 1.0f));
    ((float *)peft_tensor_data(x))[0] = 16777216.0f;
    ((float *)peft_tensor_data(y))[1] = 16777216.0f;
    float v;
    TU_OK(ctx, peft_sum(ctx, x, &o));
    TU_OK(ctx, peft_tensor_item(o, &v));
    ck_assert_float_eq(v, 16778216.0f);
    TU_OK(ctx, peft_sum_axis(ctx, y, 0, &o));
    ck_assert_float_eq(((float *)peft_tensor_data(o))[0], 1001.0f);
    ck_assert_float_eq(((float *)peft_tensor_data(o))[1], 16778216.0f);
    TU_OK(ctx, peft_mean(ctx, x, &o));
    TU_OK(ctx, peft_tensor_item(o, &v));
    ck_assert_float_eq_tol(v, (float)(16778216.0 / 1001.0), 1e-3f);
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(y);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_axis)
{
    peft_ctx *ctx = tu_ctx(2, 23);
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        const shape *sh = &shapes[c];
        peft_tensor *x = tu_randn(ctx, sh->nd, sh->s, 1.0f, 1);
        const float *X = peft_tensor_data(x);
        for (int axis = -sh->nd; axis < sh->nd; axis++)
            for (int mean = 0; mean < 2; mean++) {
                int ax = axis < 0 ? axis + sh->nd : axis;
                int64_t outer = 1, inner = 1, len = sh->s[ax];
                for (int i = 0; i < ax; i++) outer *= sh->s[i];
                for (int i = ax + 1; i < sh->nd; i++) inner *= sh->s[i];
                peft_tensor *o;
                TU_OK(ctx, mean ? peft_mean_axis(ctx, x, axis, &o) : peft_sum_axis(ctx, x, axis, &o));
                /* the axis is removed; a 1-D input gives [1] */
                if (sh->nd == 1) {
                    ck_assert_int_eq(peft_tensor_ndim(o), 1);
                    ck_assert_int_eq(peft_tensor_dim(o, 0), 1);
                } else {
                    ck_assert_int_eq(peft_tensor_ndim(o), sh->nd - 1);
                    for (int i = 0, j = 0; i < sh->nd; i++)
                        if (i != ax) ck_assert_int_eq(peft_tensor_dim(o, j++), sh->s[i]);
                }
                const float *O = peft_tensor_data(o);
                for (int64_t oi = 0; oi < outer; oi++)
                    for (int64_t i = 0; i < inner; i++) {
                        double acc = 0;
                        for (int64_t l = 0; l < len; l++) acc += X[(oi * len + l) * inner + i];
                        if (mean) acc /= (double)len;
                        ck_assert_msg(fabs(O[oi * inner + i] - acc) <= 1e-6 * (1 + fabs(acc)),
                                      "shape %zu axis %d mean %d: [%lld] %g vs %g", c, axis, mean,
                                      (long long)(oi * inner + i), O[oi * inner + i], acc);
                    }
            }
        peft_graph_release(ctx);
        peft_tensor_destroy(x);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_axis)
{
    peft_ctx *ctx = tu_ctx(2, 24);
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        const shape *sh = &shapes[c];
        peft_tensor *x = tu_randn(ctx, sh->nd, sh->s, 1.0f, 1);
        for (int axis = -sh->nd; axis < sh->nd; axis++)
            for (int mean = 0; mean < 2; mean++) {
                red_arg ra = {mean, axis};
                char label[64];
                snprintf(label, sizeof label, "shape %zu axis %d %s", c, axis, mean ? "mean" : "sum");
                tu_gradcheck(ctx, label, fwd_axis, &x, 1, &ra, NULL);
            }
        peft_tensor_destroy(x);
    }
    /* exact: d mean_axis / dx = 1/len, and a reduction of a reduction */
    const int64_t s[3] = {2, 5, 3};
    peft_tensor *x = tu_randn(ctx, 3, s, 1.0f, 1), *o, *l;
    TU_OK(ctx, peft_mean_axis(ctx, x, -2, &o));
    TU_OK(ctx, peft_sum_axis(ctx, o, 1, &o));
    TU_OK(ctx, peft_sum(ctx, o, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    for (int i = 0; i < 30; i++) ck_assert_float_eq_tol(peft_tensor_grad(x)[i], 0.2f, 1e-7f);
    /* a frozen input records nothing */
    peft_tensor_set_requires_grad(x, 0);
    TU_OK(ctx, peft_sum_axis(ctx, x, 0, &o));
    ck_assert_ptr_null(o->node);
    ck_assert_int_eq(peft_graph_size(ctx), 0);
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_errors)
{
    peft_ctx *ctx = tu_ctx(1, 25);
    const int64_t s[3] = {2, 3, 4};
    peft_tensor *x = tu_randn(ctx, 3, s, 1.0f, 0), *t;
    peft_tensor *o = x; /* must come back NULL */
    TU_EXPECT_FAIL(ctx, peft_sum_axis(ctx, x, 3, &o), PEFT_ERR_INVALID_ARG,
                   "peft_sum_axis: axis 3 is out of range for [2, 3, 4]");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_mean_axis(ctx, x, -4, &o), PEFT_ERR_INVALID_ARG,
                   "peft_mean_axis: axis -4 is out of range for [2, 3, 4]");
    TU_EXPECT_FAIL(ctx, peft_sum(ctx, NULL, &o), PEFT_ERR_INVALID_ARG, "peft_sum: x is NULL");
    TU_EXPECT_FAIL(ctx, peft_mean(ctx, x, NULL), PEFT_ERR_INVALID_ARG, "peft_mean: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_sum_axis(ctx, NULL, 0, &o), PEFT_ERR_INVALID_ARG, "peft_sum_axis: x is NULL");
    TU_OK(ctx, peft_transpose(ctx, x, 0, 2, &t));
    TU_EXPECT_FAIL(ctx, peft_sum(ctx, t, &o), PEFT_ERR_INVALID_ARG, "peft_sum: x [4, 3, 2] is not contiguous");
    TU_EXPECT_FAIL(ctx, peft_mean_axis(ctx, t, 0, &o), PEFT_ERR_INVALID_ARG, "not contiguous");
    const int32_t ids[2] = {0, 1};
    peft_tensor *i32 = tu_ids(ctx, 1, (const int64_t[]){2}, ids);
    TU_EXPECT_FAIL(ctx, peft_mean(ctx, i32, &o), PEFT_ERR_DTYPE, "peft_mean: x is i32, expected f32");
    ck_assert_int_eq(peft_sum(NULL, x, &o), PEFT_ERR_INVALID_ARG);
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(i32);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *reduce_suite(void)
{
    Suite *s = suite_create("reduce");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_sum_mean_all);
    tcase_add_test(tc, numerics_double_accumulation);
    tcase_add_test(tc, numerics_axis);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_axis);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_errors);
    suite_add_tcase(s, tc);
    return s;
}
