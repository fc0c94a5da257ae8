/* Autograd: recording rules, accumulation, no-grad scope, graph release,
 * shared inputs (diamonds), and failures that still release the graph. */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

START_TEST(api_recording_rules)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    int64_t s[2] = {2, 3};
    peft_tensor *frozen = tu_randn(ctx, 2, s, 1, 0), *w = tu_randn(ctx, 2, s, 1, 1), *y;
    /* nothing requires a gradient: no node */
    TU_OK(ctx, peft_scale(ctx, frozen, 2, &y));
    ck_assert_uint_eq(peft_graph_size(ctx), 0);
    ck_assert_int_eq(peft_tensor_requires_grad(y), 0);
    /* one input requires a gradient: a node */
    TU_OK(ctx, peft_add(ctx, frozen, w, &y));
    ck_assert_uint_eq(peft_graph_size(ctx), 1);
    ck_assert_int_eq(peft_tensor_requires_grad(y), 1);
    /* no-grad scope */
    int prev = peft_set_grad_enabled(ctx, 0);
    ck_assert_int_eq(prev, 1);
    ck_assert_int_eq(peft_grad_enabled(ctx), 0);
    TU_OK(ctx, peft_mul(ctx, w, w, &y));
    ck_assert_uint_eq(peft_graph_size(ctx), 1);
    peft_tensor *loss;
    TU_OK(ctx, peft_sum(ctx, y, &loss));
    TU_EXPECT_FAIL(ctx, peft_backward(ctx, loss, NULL), PEFT_ERR_STATE, "was not recorded");
    ck_assert_uint_eq(peft_graph_size(ctx), 0); /* released even on failure */
    peft_set_grad_enabled(ctx, prev);
    /* backward needs a scalar */
    TU_OK(ctx, peft_mul(ctx, w, w, &y));
    TU_EXPECT_FAIL(ctx, peft_backward(ctx, y, NULL), PEFT_ERR_SHAPE, "is not a scalar");
    TU_EXPECT_FAIL(ctx, peft_backward(ctx, NULL, NULL), PEFT_ERR_INVALID_ARG, "loss is NULL");
    ck_assert_int_eq(peft_backward(NULL, y, NULL), PEFT_ERR_INVALID_ARG);
    peft_tensor_destroy(frozen), peft_tensor_destroy(w);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_accumulate_and_release)
{
    peft_ctx *ctx = tu_ctx(1, 2);
    int64_t s[1] = {5};
    peft_tensor *x = tu_randn(ctx, 1, s, 1, 1), *y, *z, *loss;
    const float *xd = peft_tensor_data(x), *g = peft_tensor_grad(x);
    for (int rep = 1; rep <= 3; rep++) {
        /* L = sum(x*x + x): dL/dx = 2x + 1, accumulated rep times */
        TU_OK(ctx, peft_mul(ctx, x, x, &y));
        TU_OK(ctx, peft_add(ctx, y, x, &z));
        TU_OK(ctx, peft_sum(ctx, z, &loss));
        ck_assert_uint_eq(peft_graph_size(ctx), 3);
        float lv = 0;
        TU_OK(ctx, peft_backward(ctx, loss, &lv));
        double expect = 0;
        for (int i = 0; i < 5; i++) expect += (double)xd[i] * xd[i] + xd[i];
        ck_assert_float_eq_tol(lv, expect, 1e-5);
        ck_assert_uint_eq(peft_graph_size(ctx), 0);
        ck_assert_uint_eq(peft_arena_used(peft_ctx_arena(ctx)), 0);
        for (int i = 0; i < 5; i++) ck_assert_float_eq_tol(g[i], rep * (2 * xd[i] + 1), 1e-5);
    }
    peft_tensor_zero_grad(x);
    for (int i = 0; i < 5; i++) ck_assert(g[i] == 0.0f);
    /* release without backward */
    TU_OK(ctx, peft_mul(ctx, x, x, &y));
    peft_graph_release(ctx);
    ck_assert_uint_eq(peft_graph_size(ctx), 0);
    ck_assert_uint_eq(peft_arena_used(peft_ctx_arena(ctx)), 0);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_frozen_gets_no_gradient)
{
    peft_ctx *ctx = tu_ctx(1, 3);
    int64_t sx[2] = {4, 3}, sw[2] = {3, 3};
    peft_tensor *x = tu_randn(ctx, 2, sx, 1, 1), *w1 = tu_randn(ctx, 2, sw, 1, 0), *w2 = tu_randn(ctx, 2, sw, 1, 1);
    peft_tensor *h, *y, *loss;
    TU_OK(ctx, peft_linear(ctx, x, w1, NULL, &h));
    TU_OK(ctx, peft_linear(ctx, h, w2, NULL, &y));
    TU_OK(ctx, peft_mean(ctx, y, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    ck_assert_ptr_null(peft_tensor_grad(w1));
    ck_assert_ptr_nonnull(peft_tensor_grad(w2));
    float nz = 0;
    for (int i = 0; i < 9; i++) nz += fabsf(peft_tensor_grad(w2)[i]);
    ck_assert_float_gt(nz, 0);
    peft_tensor_destroy(x), peft_tensor_destroy(w1), peft_tensor_destroy(w2);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_backward_failure_releases)
{
    /* an arena too small for the backward pass: NOMEM, graph released, no leak (ASan) */
    peft_ctx_opts o = peft_ctx_opts_default();
    o.n_threads = 1;
    o.arena_limit = 4 * 1024;
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_OK);
    int64_t s[1] = {256};
    peft_tensor *x = tu_randn(ctx, 1, s, 1, 1), *y, *z, *loss;
    TU_OK(ctx, peft_scale(ctx, x, 2, &y));
    TU_OK(ctx, peft_scale(ctx, y, 3, &z));
    TU_OK(ctx, peft_sum(ctx, z, &loss));
    peft_status st = peft_backward(ctx, loss, NULL);
    ck_assert_int_eq(st, PEFT_ERR_NOMEM);
    ck_assert_ptr_nonnull(strstr(peft_ctx_errmsg(ctx), "backward"));
    ck_assert_uint_eq(peft_graph_size(ctx), 0);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *autograd_suite(void)
{
    Suite *s = suite_create("autograd");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_recording_rules);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, numerics_accumulate_and_release);
    tcase_add_test(tc, numerics_frozen_gets_no_gradient);
    tcase_add_test(tc, numerics_backward_failure_releases);
    suite_add_tcase(s, tc);
    return s;
}
