/* The fused output layer + cross-entropy against the unfused ops, its
 * gradients against finite differences, and its memory behaviour. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

typedef struct lce_arg {
    peft_tensor *targets;
    int32_t ignore;
} lce_arg;

static peft_status fwd_fused(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    lce_arg *a = arg;
    return peft_linear_cross_entropy(ctx, in[0], in[1], a->targets, a->ignore, out);
}

static peft_status fwd_unfused(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    lce_arg *a = arg;
    peft_tensor *logits;
    peft_status st = peft_linear(ctx, in[0], in[1], NULL, &logits);
    if (st != PEFT_OK) return st;
    return peft_cross_entropy(ctx, logits, a->targets, a->ignore, out);
}

START_TEST(numerics_matches_unfused)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    /* N = 70 rows crosses the 64-row block; V = 37, C = 9 are odd */
    const int64_t shapes[][3] = {{1, 5, 3}, {2, 35, 9}, {70, 37, 9}};
    for (int c = 0; c < 3; c++) {
        int64_t N = shapes[c][0] * (c == 1 ? 1 : 1), V = shapes[c][1], C = shapes[c][2];
        int64_t sh[2] = {N, C}, sw[2] = {V, C};
        peft_tensor *h = tu_randn(ctx, 2, sh, 1.0f, 1), *w = tu_randn(ctx, 2, sw, 0.5f, 1);
        int32_t *t = malloc((size_t)N * sizeof *t);
        for (int64_t i = 0; i < N; i++) t[i] = i % 4 == 3 ? -100 : (int32_t)((i * 7) % V);
        peft_tensor *tg = tu_ids(ctx, 1, &N, t);
        lce_arg a = {tg, -100};
        peft_tensor *in[2] = {h, w}, *l1, *l2;
        TU_OK(ctx, fwd_fused(ctx, in, &a, &l1));
        TU_OK(ctx, peft_backward(ctx, l1, NULL));
        float *gh = malloc((size_t)(N * C) * 4), *gw = malloc((size_t)(V * C) * 4);
        memcpy(gh, peft_tensor_grad(h), (size_t)(N * C) * 4);
        memcpy(gw, peft_tensor_grad(w), (size_t)(V * C) * 4);
        float v1, v2;
        peft_tensor_zero_grad(h), peft_tensor_zero_grad(w);
        TU_OK(ctx, fwd_fused(ctx, in, &a, &l1));
        TU_OK(ctx, peft_tensor_item(l1, &v1));
        peft_graph_release(ctx);
        TU_OK(ctx, fwd_unfused(ctx, in, &a, &l2));
        TU_OK(ctx, peft_tensor_item(l2, &v2));
        TU_OK(ctx, peft_backward(ctx, l2, NULL));
        ck_assert_float_eq_tol(v1, v2, 1e-5f * fabsf(v2));
        ck_assert_double_lt(tu_max_rel_err(gh, peft_tensor_grad(h), (size_t)(N * C)), 1e-5);
        ck_assert_double_lt(tu_max_rel_err(gw, peft_tensor_grad(w), (size_t)(V * C)), 1e-5);
        free(gh), free(gw), free(t);
        tu_gradcheck(ctx, "linear_cross_entropy", fwd_fused, in, 2, &a, NULL);
        peft_tensor_destroy(h), peft_tensor_destroy(w), peft_tensor_destroy(tg);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_frozen_and_half_weights)
{
    peft_ctx *ctx = tu_ctx(2, 2);
    int64_t sh[2] = {6, 64}, sw[2] = {50, 64}, N = 6;
    peft_tensor *h = tu_randn(ctx, 2, sh, 1.0f, 1), *w = tu_randn(ctx, 2, sw, 0.3f, 0), *wb;
    TU_OK(ctx, peft_tensor_convert(w, PEFT_DTYPE_BF16, &wb));
    int32_t t[6] = {1, 2, 3, 4, 5, 6};
    peft_tensor *tg = tu_ids(ctx, 1, &N, t), *l;
    /* a frozen weight gets no gradient; h still does */
    TU_OK(ctx, peft_linear_cross_entropy(ctx, h, w, tg, -100, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    ck_assert_ptr_null(peft_tensor_grad(w));
    float s = 0;
    for (int i = 0; i < 6 * 64; i++) s += fabsf(peft_tensor_grad(h)[i]);
    ck_assert_float_gt(s, 0);
    /* a bf16 weight gives the same as its f32 values */
    peft_tensor *wf;
    TU_OK(ctx, peft_tensor_convert(wb, PEFT_DTYPE_F32, &wf));
    float a, b;
    peft_set_grad_enabled(ctx, 0);
    TU_OK(ctx, peft_linear_cross_entropy(ctx, h, wb, tg, -100, &l));
    TU_OK(ctx, peft_tensor_item(l, &a));
    TU_OK(ctx, peft_linear_cross_entropy(ctx, h, wf, tg, -100, &l));
    TU_OK(ctx, peft_tensor_item(l, &b));
    ck_assert_float_eq_tol(a, b, 1e-6f * fabsf(b));
    peft_set_grad_enabled(ctx, 1);
    peft_graph_release(ctx);
    /* without gradients only one 64-row block of logits is ever allocated (a fresh context
     * so that the arena's high-water mark is this call's) */
    peft_ctx *c2 = tu_ctx(1, 3);
    int64_t sbig[2] = {512, 64}, N2 = 512;
    peft_tensor *hb = tu_randn(c2, 2, sbig, 1.0f, 0), *w2 = tu_randn(c2, 2, sw, 0.3f, 0), *l2;
    int32_t *t2 = calloc(512, sizeof *t2);
    peft_tensor *tg2 = tu_ids(c2, 1, &N2, t2);
    TU_OK(c2, peft_linear_cross_entropy(c2, hb, w2, tg2, -100, &l2));
    ck_assert_uint_lt(peft_arena_peak(peft_ctx_arena(c2)), (size_t)512 * 50 * 4 / 2);
    peft_graph_release(c2);
    peft_tensor_destroy(w2);
    /* all ignored: loss 0 */
    int32_t ig[6] = {-100, -100, -100, -100, -100, -100};
    peft_tensor *tgi = tu_ids(ctx, 1, &N, ig);
    TU_OK(ctx, peft_linear_cross_entropy(ctx, h, w, tgi, -100, &l));
    TU_OK(ctx, peft_tensor_item(l, &a));
    ck_assert(a == 0.0f);
    peft_graph_release(ctx);
    /* errors */
    int32_t bad[6] = {1, 2, 3, 99, 5, 6};
    peft_tensor *tgb = tu_ids(ctx, 1, &N, bad), *o = NULL;
    TU_EXPECT_FAIL(ctx, peft_linear_cross_entropy(ctx, h, w, tgb, -100, &o), PEFT_ERR_INVALID_ARG, "targets[3] = 99 is out of range");
    int64_t s5[1] = {5};
    peft_tensor *tg5 = tu_ids(ctx, 1, s5, t);
    TU_EXPECT_FAIL(ctx, peft_linear_cross_entropy(ctx, h, w, tg5, -100, &o), PEFT_ERR_SHAPE, "one entry per row");
    int64_t swrong[2] = {50, 32};
    peft_tensor *wrong = tu_randn(ctx, 2, swrong, 1.0f, 0);
    TU_EXPECT_FAIL(ctx, peft_linear_cross_entropy(ctx, h, wrong, tg, -100, &o), PEFT_ERR_SHAPE, "expected [V, 64]");
    peft_tensor_destroy(wrong);
    ck_assert_ptr_null(o);
    free(t2);
    peft_tensor_destroy(h), peft_tensor_destroy(w), peft_tensor_destroy(wb), peft_tensor_destroy(wf);
    peft_tensor_destroy(tg), peft_tensor_destroy(tgi);
    peft_tensor_destroy(tgb), peft_tensor_destroy(tg5);
    peft_tensor_destroy(hb), peft_tensor_destroy(tg2);
    peft_ctx_destroy(c2);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *linear_ce_suite(void)
{
    Suite *s = suite_create("linear_ce");
    TCase *tc = tcase_create("grad");
    tcase_add_test(tc, numerics_matches_unfused);
    suite_add_tcase(s, tc);
    tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_frozen_and_half_weights);
    suite_add_tcase(s, tc);
    return s;
}
