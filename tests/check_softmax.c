/* peft_softmax and peft_log_softmax: against a naive double reference, large
 * and -inf inputs, gradients against finite differences, errors, and
 * thread-count invariance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

static peft_status fwd_softmax(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    return *(int *)arg ? peft_log_softmax(ctx, in[0], out) : peft_softmax(ctx, in[0], out);
}

/* Naive double reference (shifted by the row max, as any sane reference is). */
static void ref_softmax(bool log_form, const float *x, int64_t N, int64_t C, double *y)
{
    for (int64_t n = 0; n < N; n++) {
        const float *x_n = x + n * C;
        double mx = -INFINITY, s = 0;
        for (int64_t c = 0; c < C; c++) mx = fmax(mx, x_n[c]);
        for (int64_t c = 0; c < C; c++) s += exp(x_n[c] - mx);
        for (int64_t c = 0; c < C; c++)
            y[n * C + c] = log_form ? x_n[c] - mx - log(s) : exp(x_n[c] - mx) / s;
    }
}

static const int64_t shapes[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 5, 33}};
static const int shape_ndim[] = {2, 2, 3};
static const int64_t *shape_of(size_t i) { return shapes[i] + (3 - shape_ndim[i]); }

START_TEST(numerics_vs_reference)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    for (size_t sh = 0; sh < 3; sh++)
        for (int lg = 0; lg < 2; lg++)
            for (int big = 0; big < 2; big++) {
                const int nd = shape_ndim[sh];
                const int64_t C = shape_of(sh)[nd - 1];
                /* big: logits around 1000 with spread 30: exp(x) would overflow */
                peft_tensor *x = tu_randn(ctx, nd, shape_of(sh), big ? 30.0f : 2.0f, 0);
                if (big) {
                    float *X = peft_tensor_data(x);
                    for (int64_t i = 0; i < peft_tensor_numel(x); i++) X[i] += 1000.0f;
                }
                peft_tensor *y;
                TU_OK(ctx, fwd_softmax(ctx, &x, &lg, &y));
                const int64_t n = peft_tensor_numel(x), N = n / C;
                ck_assert_int_eq(peft_tensor_numel(y), n);
                double *ref = malloc((size_t)n * sizeof *ref);
                ref_softmax(lg, peft_tensor_data(x), N, C, ref);
                const float *Y = peft_tensor_data(y);
                for (int64_t i = 0; i < n; i++) {
                    ck_assert(isfinite(Y[i]));
                    ck_assert_msg(fabs(Y[i] - ref[i]) <= 1e-6 + 2e-6 * fabs(ref[i]),
                                  "%s shape %zu big %d: y[%lld] = %.9g, expected %.9g", lg ? "log_softmax" : "softmax",
                                  sh, big, (long long)i, Y[i], ref[i]);
                }
                if (!lg) /* rows sum to 1 */
                    for (int64_t r = 0; r < N; r++) {
                        double s = 0;
                        for (int64_t c = 0; c < C; c++) s += Y[r * C + c];
                        ck_assert_double_lt(fabs(s - 1.0), 1e-6);
                    }
                free(ref);
                peft_graph_release(ctx);
                peft_tensor_destroy(x);
            }
    peft_ctx_destroy(ctx);
}
END_TEST

/* Masked entries (-inf) get probability exactly 0 and log-probability -inf;
 * a single-column row has probability 1. */
START_TEST(numerics_masked_and_trivial)
{
    peft_ctx *ctx = tu_ctx(1, 2);
    const int64_t shape[2] = {2, 3};
    const float xs[6] = {0.0f, -INFINITY, 1.0f, 5.0f, 5.0f, 5.0f};
    peft_tensor *x, *y, *ly;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, shape, &x));
    TU_OK(ctx, peft_tensor_set_f32(x, xs, 6));
    TU_OK(ctx, peft_softmax(ctx, x, &y));
    TU_OK(ctx, peft_log_softmax(ctx, x, &ly));
    const float *Y = peft_tensor_data(y), *L = peft_tensor_data(ly);
    ck_assert_float_eq(Y[1], 0.0f);
    ck_assert(isinf(L[1]) && L[1] < 0);
    ck_assert_float_eq_tol(Y[0], (float)(1.0 / (1.0 + exp(1.0))), 1e-7f);
    ck_assert_float_eq_tol(Y[2], (float)(exp(1.0) / (1.0 + exp(1.0))), 1e-7f);
    for (int c = 3; c < 6; c++) {
        ck_assert_float_eq_tol(Y[c], 1.0f / 3.0f, 1e-7f);
        ck_assert_float_eq_tol(L[c], (float)-log(3.0), 1e-6f);
    }
    const int64_t one[2] = {4, 1};
    peft_tensor *x1 = tu_randn(ctx, 2, one, 10.0f, 0), *y1, *l1;
    TU_OK(ctx, peft_softmax(ctx, x1, &y1));
    TU_OK(ctx, peft_log_softmax(ctx, x1, &l1));
    for (int i = 0; i < 4; i++) {
        ck_assert_float_eq(((float *)peft_tensor_data(y1))[i], 1.0f);
        ck_assert_float_eq(((float *)peft_tensor_data(l1))[i], 0.0f);
    }
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(x1);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_softmax)
{
    peft_ctx *ctx = tu_ctx(2, 3);
    for (size_t sh = 0; sh < 3; sh++)
        for (int lg = 0; lg < 2; lg++) {
            peft_tensor *x = tu_randn(ctx, shape_ndim[sh], shape_of(sh), 1.5f, 1);
            tu_gradcheck(ctx, lg ? "log_softmax" : "softmax", fwd_softmax, &x, 1, &lg, NULL);
            peft_tensor_destroy(x);
        }
    peft_ctx_destroy(ctx);
}
END_TEST

/* The softmax Jacobian rows sum to 0: with dout = 1 everywhere, dx = 0; for
 * log_softmax, dx = 1 - C * softmax. Also checks accumulation (+=). */
START_TEST(grad_closed_forms)
{
    peft_ctx *ctx = tu_ctx(1, 4);
    const int64_t shape[2] = {3, 5};
    peft_tensor *x = tu_randn(ctx, 2, shape, 1.0f, 1), *y, *loss, *p;
    TU_OK(ctx, peft_softmax(ctx, x, &y));
    TU_OK(ctx, peft_sum(ctx, y, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    for (int i = 0; i < 15; i++) ck_assert_float_eq_tol(peft_tensor_grad(x)[i], 0.0f, 1e-7f);
    TU_OK(ctx, peft_log_softmax(ctx, x, &y));
    TU_OK(ctx, peft_sum(ctx, y, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    float dx[15];
    memcpy(dx, peft_tensor_grad(x), sizeof dx);
    TU_OK(ctx, peft_softmax(ctx, x, &p));
    for (int i = 0; i < 15; i++)
        ck_assert_float_eq_tol(dx[i], 1.0f - 5.0f * ((float *)peft_tensor_data(p))[i], 1e-6f);
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_errors)
{
    peft_ctx *ctx = tu_ctx(1, 5);
    const int64_t s37[2] = {3, 7}, s2[1] = {2};
    peft_tensor *x = tu_randn(ctx, 2, s37, 1.0f, 0), *t, *o = NULL;
    const int32_t ids[2] = {0, 1};
    peft_tensor *iv = tu_ids(ctx, 1, s2, ids);
    TU_OK(ctx, peft_transpose(ctx, x, 0, 1, &t));
    ck_assert_int_eq(peft_softmax(NULL, x, &o), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_softmax(ctx, NULL, &o), PEFT_ERR_INVALID_ARG, "peft_softmax: x is NULL");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_log_softmax(ctx, NULL, &o), PEFT_ERR_INVALID_ARG, "peft_log_softmax: x is NULL");
    TU_EXPECT_FAIL(ctx, peft_softmax(ctx, x, NULL), PEFT_ERR_INVALID_ARG, "peft_softmax: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_softmax(ctx, t, &o), PEFT_ERR_INVALID_ARG, "peft_softmax: x [7, 3] is not contiguous");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_log_softmax(ctx, t, &o), PEFT_ERR_INVALID_ARG,
                   "peft_log_softmax: x [7, 3] is not contiguous");
    TU_EXPECT_FAIL(ctx, peft_log_softmax(ctx, iv, &o), PEFT_ERR_DTYPE, "peft_log_softmax: x is i32, expected f32");
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(iv);
    peft_ctx_destroy(ctx);
}
END_TEST

static void run_threads(int n_threads, int lg, float *y, float *dx, int64_t N, int64_t C)
{
    peft_ctx *ctx = tu_ctx(n_threads, 123);
    if (n_threads > 1) ck_assert_ptr_nonnull(ctx->pool);
    const int64_t shape[2] = {N, C};
    peft_tensor *x = tu_randn(ctx, 2, shape, 3.0f, 1), *o;
    float *dout = malloc((size_t)(N * C) * sizeof *dout);
    for (int64_t i = 0; i < N * C; i++) dout[i] = (float)peft_ctx_rand_normal(ctx);
    TU_OK(ctx, fwd_softmax(ctx, &x, &lg, &o));
    memcpy(y, peft_tensor_data(o), (size_t)(N * C) * 4);
    TU_OK(ctx, peft__backward_seeded(ctx, o, dout));
    memcpy(dx, peft_tensor_grad(x), (size_t)(N * C) * 4);
    free(dout);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_threads_bitwise)
{
    const int64_t N = 67, C = 257;
    for (int lg = 0; lg < 2; lg++) {
        float *y1 = malloc((size_t)(N * C) * 4), *y2 = malloc((size_t)(N * C) * 4);
        float *d1 = malloc((size_t)(N * C) * 4), *d2 = malloc((size_t)(N * C) * 4);
        run_threads(1, lg, y1, d1, N, C);
        run_threads(2, lg, y2, d2, N, C);
        ck_assert_msg(memcmp(y1, y2, (size_t)(N * C) * 4) == 0, "forward differs between 1 and 2 threads");
        ck_assert_msg(memcmp(d1, d2, (size_t)(N * C) * 4) == 0, "backward differs between 1 and 2 threads");
        free(y1), free(y2), free(d1), free(d2);
    }
}
END_TEST

Suite *softmax_suite(void)
{
    Suite *s = suite_create("softmax");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_vs_reference);
    tcase_add_test(tc, numerics_masked_and_trivial);
    tcase_add_test(tc, numerics_threads_bitwise);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_softmax);
    tcase_add_test(tc, grad_closed_forms);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_errors);
    suite_add_tcase(s, tc);
    return s;
}
