/* peft_dropout: identity cases, mask statistics and scaling, reproducibility
 * (same seed, any thread count), gradients, errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

typedef struct drop_arg {
    float p;
    uint64_t seed;
} drop_arg;

/* The gradient checker calls the forward many times; reseeding the context
 * before each call gives every call the same mask, so the op is a fixed
 * linear map of x that finite differences can see. */
static peft_status fwd_dropout(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    const drop_arg *a = arg;
    peft_ctx_seed(ctx, a->seed);
    return peft_dropout(ctx, in[0], a->p, 1, out);
}

/* Dropout of x (n elements) with the context seeded to `seed`, into a malloc'd copy. */
static float *run_dropout(peft_ctx *ctx, peft_tensor *x, float p, uint64_t seed)
{
    peft_tensor *o;
    TU_OK(ctx, peft_ctx_seed(ctx, seed));
    TU_OK(ctx, peft_dropout(ctx, x, p, 1, &o));
    size_t n = (size_t)peft_tensor_numel(x);
    float *copy = malloc(n * sizeof *copy);
    memcpy(copy, peft_tensor_data(o), n * sizeof *copy);
    peft_graph_release(ctx);
    return copy;
}

START_TEST(numerics_identity)
{
    peft_ctx *ctx = tu_ctx(1, 21);
    int64_t s[2] = {3, 5};
    peft_tensor *x = tu_randn(ctx, 2, s, 1.0f, 1), *o = NULL;
    uint64_t before[4], after[4];
    TU_OK(ctx, peft_ctx_rng_state(ctx, before));
    TU_OK(ctx, peft_dropout(ctx, x, 0.5f, 0, &o));
    ck_assert_ptr_eq(o, x);
    TU_OK(ctx, peft_dropout(ctx, x, 0.0f, 1, &o));
    ck_assert_ptr_eq(o, x);
    /* the identity draws nothing from the PRNG */
    TU_OK(ctx, peft_ctx_rng_state(ctx, after));
    ck_assert_mem_eq(before, after, sizeof before);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_statistics)
{
    peft_ctx *ctx = tu_ctx(2, 22);
    const int64_t n = 100000;
    peft_tensor *x = tu_randn(ctx, 1, &n, 1.0f, 0);
    const float *X = peft_tensor_data(x);
    const float ps[3] = {0.1f, 0.5f, 0.9f};
    for (int k = 0; k < 3; k++) {
        float p = ps[k];
        float *y = run_dropout(ctx, x, p, 1000 + (uint64_t)k);
        const float scale = (float)(1.0 / (1.0 - (double)p));
        int64_t kept = 0;
        for (int64_t i = 0; i < n; i++) {
            if (y[i] != 0.0f) {
                kept++;
                ck_assert_float_eq(y[i], X[i] * scale);
            }
        }
        /* binomial sd of the kept fraction is at most 0.0016 here: allow ~6 sd */
        double frac = (double)kept / (double)n;
        ck_assert_msg(fabs(frac - (1.0 - p)) < 0.01, "p %.2f: kept %.4f", (double)p, frac);
        free(y);
    }
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_reproducible)
{
    const int64_t n = 50001; /* odd: uneven thread ranges */
    float *y[2];
    for (int t = 0; t < 2; t++) {
        peft_ctx *ctx = tu_ctx(t + 1, 23);
        peft_tensor *x = tu_randn(ctx, 1, &n, 1.0f, 0);
        y[t] = run_dropout(ctx, x, 0.3f, 77);
        /* the same seed gives the same mask; the next call draws a new one */
        float *again = run_dropout(ctx, x, 0.3f, 77);
        ck_assert_mem_eq(y[t], again, (size_t)n * sizeof(float));
        peft_tensor *o1, *o2;
        TU_OK(ctx, peft_ctx_seed(ctx, 77));
        TU_OK(ctx, peft_dropout(ctx, x, 0.3f, 1, &o1));
        TU_OK(ctx, peft_dropout(ctx, x, 0.3f, 1, &o2));
        ck_assert_int_ne(memcmp(peft_tensor_data(o1), peft_tensor_data(o2), (size_t)n * sizeof(float)), 0);
        peft_graph_release(ctx);
        free(again);
        peft_tensor_destroy(x);
        peft_ctx_destroy(ctx);
    }
    /* 1 and 2 threads: bit for bit */
    ck_assert_mem_eq(y[0], y[1], (size_t)n * sizeof(float));
    free(y[0]), free(y[1]);
}
END_TEST

START_TEST(grad_dropout_shapes)
{
    peft_ctx *ctx = tu_ctx(2, 24);
    const int64_t shapes[][3] = {{1, 1, 7}, {2, 3, 5}, {3, 1, 13}};
    const float ps[3] = {0.25f, 0.5f, 0.8f};
    for (size_t c = 0; c < 3; c++) {
        peft_tensor *x = tu_randn(ctx, 3, shapes[c], 1.0f, 1);
        drop_arg a = {ps[c], 31 + c};
        tu_gradcheck(ctx, "dropout", fwd_dropout, &x, 1, &a, NULL);
        peft_tensor_destroy(x);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_mask_recomputed)
{
    /* dx = dout * scale exactly where the forward kept, exactly 0 elsewhere,
     * on a size large enough to be split across threads */
    peft_ctx *ctx = tu_ctx(2, 25);
    const int64_t n = 20011;
    peft_tensor *x = tu_randn(ctx, 1, &n, 1.0f, 1);
    float *dout = malloc((size_t)n * sizeof *dout);
    for (int64_t i = 0; i < n; i++) dout[i] = 1.0f + (float)(i % 7);
    peft_tensor *o;
    TU_OK(ctx, peft_dropout(ctx, x, 0.4f, 1, &o));
    float *y = malloc((size_t)n * sizeof *y);
    memcpy(y, peft_tensor_data(o), (size_t)n * sizeof *y);
    TU_OK(ctx, peft__backward_seeded(ctx, o, dout));
    const float scale = (float)(1.0 / 0.6), *g = peft_tensor_grad(x), *X = peft_tensor_data(x);
    for (int64_t i = 0; i < n; i++) {
        bool kept = y[i] != 0.0f || X[i] == 0.0f;
        float want = kept ? dout[i] * scale : 0.0f;
        ck_assert_float_eq(g[i], want);
    }
    free(dout), free(y);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_dropout_errors)
{
    peft_ctx *ctx = tu_ctx(1, 26);
    int64_t s[2] = {4, 6}, si[1] = {3};
    peft_tensor *x = tu_randn(ctx, 2, s, 1.0f, 0), *o = NULL, *t;
    const int32_t ids[3] = {1, 2, 3};
    peft_tensor *ix = tu_ids(ctx, 1, si, ids);
    ck_assert_int_eq(peft_dropout(NULL, x, 0.5f, 1, &o), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_dropout(ctx, x, 0.5f, 1, NULL), PEFT_ERR_INVALID_ARG, "peft_dropout: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_dropout(ctx, NULL, 0.5f, 1, &o), PEFT_ERR_INVALID_ARG, "peft_dropout: x is NULL");
    TU_EXPECT_FAIL(ctx, peft_dropout(ctx, x, 1.0f, 1, &o), PEFT_ERR_INVALID_ARG, "p = 1 is not in [0, 1)");
    TU_EXPECT_FAIL(ctx, peft_dropout(ctx, x, -0.1f, 1, &o), PEFT_ERR_INVALID_ARG, "p = -0.1 is not in [0, 1)");
    TU_EXPECT_FAIL(ctx, peft_dropout(ctx, x, NAN, 1, &o), PEFT_ERR_INVALID_ARG, "is not in [0, 1)");
    /* p is checked even when the call would be the identity */
    TU_EXPECT_FAIL(ctx, peft_dropout(ctx, x, 2.0f, 0, &o), PEFT_ERR_INVALID_ARG, "p = 2");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_dropout(ctx, ix, 0.5f, 1, &o), PEFT_ERR_DTYPE, "x is i32, expected f32");
    TU_OK(ctx, peft_transpose(ctx, x, 0, 1, &t));
    TU_EXPECT_FAIL(ctx, peft_dropout(ctx, t, 0.5f, 1, &o), PEFT_ERR_INVALID_ARG, "x [6, 4] is not contiguous");
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(ix);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *dropout_suite(void)
{
    Suite *s = suite_create("dropout");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_identity);
    tcase_add_test(tc, numerics_statistics);
    tcase_add_test(tc, numerics_reproducible);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_dropout_shapes);
    tcase_add_test(tc, grad_mask_recomputed);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_dropout_errors);
    suite_add_tcase(s, tc);
    return s;
}
