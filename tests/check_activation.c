/* peft_gelu, peft_silu, peft_relu: known values, a naive double reference,
 * gradients against finite differences, errors, and thread-count invariance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

typedef peft_status (*act_fn)(peft_ctx *, peft_tensor *, peft_tensor **);

static const struct {
    const char *name;
    act_fn fn;
} acts[] = {{"gelu", peft_gelu}, {"silu", peft_silu}, {"relu", peft_relu}};
#define N_ACTS (sizeof acts / sizeof *acts)

/* The reference formulas, in double. */
static double ref_act(size_t k, double x)
{
    switch (k) {
    case 0: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case 1: return x / (1.0 + exp(-x));
    default: return x > 0 ? x : 0.0;
    }
}

static peft_status fwd_act(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    return acts[*(size_t *)arg].fn(ctx, in[0], out);
}

static const int64_t shapes[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 5, 33}};
static const int shape_ndim[] = {2, 2, 3};
/* shapes[] padded at the front; the real shape starts at 3 - ndim */
static const int64_t *shape_of(size_t i) { return shapes[i] + (3 - shape_ndim[i]); }

START_TEST(numerics_known_values)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    const float xs[] = {1.0f, -1.0f, 0.0f, 3.0f, -3.0f, 0.5f, -20.0f, 20.0f, -200.0f};
    const int64_t n = sizeof xs / sizeof *xs;
    peft_tensor *x;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 1, &n, &x));
    TU_OK(ctx, peft_tensor_set_f32(x, xs, (size_t)n));
    peft_tensor *g, *s, *r;
    TU_OK(ctx, peft_gelu(ctx, x, &g));
    TU_OK(ctx, peft_silu(ctx, x, &s));
    TU_OK(ctx, peft_relu(ctx, x, &r));
    const float *G = peft_tensor_data(g), *S = peft_tensor_data(s), *R = peft_tensor_data(r);
    /* GPT-2 gelu_new values */
    ck_assert_float_eq_tol(G[0], 0.8411920f, 1e-6f);
    ck_assert_float_eq_tol(G[1], -0.1588080f, 1e-6f);
    ck_assert_float_eq(G[2], 0.0f);
    ck_assert_float_eq_tol(G[3], 2.9963627f, 1e-6f);
    ck_assert_float_eq_tol(G[4], -0.0036373f, 1e-6f);
    ck_assert_float_eq_tol(G[5], 0.3457140f, 1e-6f);
    ck_assert_float_eq_tol(G[6], 0.0f, 1e-6f); /* saturated tails: no NaN */
    ck_assert_float_eq_tol(G[7], 20.0f, 1e-5f);
    ck_assert_float_eq_tol(S[0], 0.7310586f, 1e-6f);
    ck_assert_float_eq_tol(S[1], -0.2689414f, 1e-6f);
    ck_assert_float_eq(S[2], 0.0f);
    ck_assert_float_eq_tol(S[6], -20.0f / (1.0f + expf(20.0f)), 1e-9f);
    ck_assert_float_eq_tol(S[7], 20.0f, 1e-5f);
    for (int64_t i = 0; i < n; i++) ck_assert_float_eq(R[i], xs[i] > 0 ? xs[i] : 0.0f);
    /* huge negative input: expf(200) overflows, silu's limit 0 is still exact (no NaN) */
    ck_assert(isfinite(S[8]) && isfinite(G[8]));
    ck_assert_float_eq(S[8], 0.0f);
    ck_assert_float_eq(G[8], 0.0f);
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_vs_reference)
{
    peft_ctx *ctx = tu_ctx(2, 2);
    for (size_t sh = 0; sh < 3; sh++) {
        peft_tensor *x = tu_randn(ctx, shape_ndim[sh], shape_of(sh), 3.0f, 0);
        const float *X = peft_tensor_data(x);
        int64_t n = peft_tensor_numel(x);
        for (size_t k = 0; k < N_ACTS; k++) {
            peft_tensor *y;
            TU_OK(ctx, acts[k].fn(ctx, x, &y));
            ck_assert_int_eq(peft_tensor_ndim(y), shape_ndim[sh]);
            for (int d = 0; d < shape_ndim[sh]; d++) ck_assert_int_eq(peft_tensor_dim(y, d), shape_of(sh)[d]);
            const float *Y = peft_tensor_data(y);
            for (int64_t i = 0; i < n; i++) {
                double ref = ref_act(k, X[i]);
                ck_assert_msg(fabs(Y[i] - ref) <= 1e-6 + 2e-6 * fabs(ref), "%s(%g) = %.9g, expected %.9g",
                              acts[k].name, X[i], Y[i], ref);
            }
            /* no input requires a gradient: nothing recorded */
            ck_assert_int_eq(peft_tensor_requires_grad(y), 0);
        }
        peft_graph_release(ctx);
        peft_tensor_destroy(x);
    }
    ck_assert_uint_eq(peft_graph_size(ctx), 0);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Push values out of [-0.1, 0.1] so the finite-difference stencil never
 * crosses ReLU's kink. */
static void away_from_zero(peft_tensor *x)
{
    float *X = peft_tensor_data(x);
    for (int64_t i = 0; i < peft_tensor_numel(x); i++) X[i] += X[i] >= 0 ? 0.1f : -0.1f;
}

START_TEST(grad_activations)
{
    peft_ctx *ctx = tu_ctx(2, 3);
    for (size_t sh = 0; sh < 3; sh++)
        for (size_t k = 0; k < N_ACTS; k++) {
            peft_tensor *x = tu_randn(ctx, shape_ndim[sh], shape_of(sh), 1.5f, 1);
            away_from_zero(x);
            tu_gradcheck(ctx, acts[k].name, fwd_act, &x, 1, &k, NULL);
            peft_tensor_destroy(x);
        }
    peft_ctx_destroy(ctx);
}
END_TEST

/* Backward accumulates: two uses of the same input add their gradients, and
 * relu's gradient is exactly dout where x > 0 and 0 elsewhere. */
START_TEST(grad_accumulates)
{
    peft_ctx *ctx = tu_ctx(1, 4);
    const int64_t shape[2] = {3, 5};
    peft_tensor *x = tu_randn(ctx, 2, shape, 1.0f, 1);
    away_from_zero(x);
    peft_tensor *a, *b, *s, *loss;
    TU_OK(ctx, peft_relu(ctx, x, &a));
    TU_OK(ctx, peft_relu(ctx, x, &b));
    TU_OK(ctx, peft_add(ctx, a, b, &s));
    TU_OK(ctx, peft_sum(ctx, s, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    const float *X = peft_tensor_data(x), *dX = peft_tensor_grad(x);
    for (int i = 0; i < 15; i++) ck_assert_float_eq(dX[i], X[i] > 0 ? 2.0f : 0.0f);
    /* gelu'(0) = 0.5, silu'(0) = 0.5 */
    peft_tensor_zero_grad(x);
    float zeros[15] = {0};
    TU_OK(ctx, peft_tensor_set_f32(x, zeros, 15));
    TU_OK(ctx, peft_gelu(ctx, x, &a));
    TU_OK(ctx, peft_silu(ctx, x, &b));
    TU_OK(ctx, peft_add(ctx, a, b, &s));
    TU_OK(ctx, peft_sum(ctx, s, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    for (int i = 0; i < 15; i++) ck_assert_float_eq_tol(dX[i], 1.0f, 1e-7f);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_errors)
{
    peft_ctx *ctx = tu_ctx(1, 5);
    const int64_t s37[2] = {3, 7}, s2[1] = {2};
    /* o starts as a non-NULL sentinel so the tests see failures reset it */
    peft_tensor *x = tu_randn(ctx, 2, s37, 1.0f, 0), *t, *o = (peft_tensor *)&o;
    const int32_t ids[2] = {0, 1};
    peft_tensor *iv = tu_ids(ctx, 1, s2, ids);
    TU_OK(ctx, peft_transpose(ctx, x, 0, 1, &t));
    ck_assert_int_eq(peft_gelu(NULL, x, &o), PEFT_ERR_INVALID_ARG);
    const char *names[] = {"peft_gelu", "peft_silu", "peft_relu"};
    for (size_t k = 0; k < N_ACTS; k++) {
        char msg[128];
        o = (peft_tensor *)&o;
        snprintf(msg, sizeof msg, "%s: x is NULL", names[k]);
        TU_EXPECT_FAIL(ctx, acts[k].fn(ctx, NULL, &o), PEFT_ERR_INVALID_ARG, msg);
        ck_assert_ptr_null(o);
        snprintf(msg, sizeof msg, "%s: out is NULL", names[k]);
        TU_EXPECT_FAIL(ctx, acts[k].fn(ctx, x, NULL), PEFT_ERR_INVALID_ARG, msg);
        o = (peft_tensor *)&o;
        snprintf(msg, sizeof msg, "%s: x [7, 3] is not contiguous", names[k]);
        TU_EXPECT_FAIL(ctx, acts[k].fn(ctx, t, &o), PEFT_ERR_INVALID_ARG, msg);
        ck_assert_ptr_null(o);
        snprintf(msg, sizeof msg, "%s: x is i32, expected f32", names[k]);
        TU_EXPECT_FAIL(ctx, acts[k].fn(ctx, iv, &o), PEFT_ERR_DTYPE, msg);
    }
    /* a tensor of another context */
    peft_ctx *other = tu_ctx(1, 6);
    TU_EXPECT_FAIL(other, peft_relu(other, x, &o), PEFT_ERR_INVALID_ARG, "peft_relu: x belongs to another context");
    peft_ctx_destroy(other);
    /* a contiguous copy of the transposed view works */
    peft_tensor *c;
    TU_OK(ctx, peft_contiguous(ctx, t, &c));
    TU_OK(ctx, peft_gelu(ctx, c, &o));
    ck_assert_int_eq(peft_tensor_dim(o, 0), 7);
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_tensor_destroy(iv);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Forward output and input gradient of every activation, on a context with
 * `n_threads` threads; x and dout come from fixed seeds. */
static void run_threads(int n_threads, size_t k, float *y, float *dx, int64_t n)
{
    peft_ctx *ctx = tu_ctx(n_threads, 77);
    if (n_threads > 1) ck_assert_ptr_nonnull(ctx->pool); /* the work is really split */
    const int64_t shape[2] = {64, 301};
    ck_assert_int_eq(n, 64 * 301);
    peft_tensor *x = tu_randn(ctx, 2, shape, 2.0f, 1);
    float *dout = malloc((size_t)n * sizeof *dout);
    for (int64_t i = 0; i < n; i++) dout[i] = (float)peft_ctx_rand_normal(ctx);
    peft_tensor *o;
    TU_OK(ctx, acts[k].fn(ctx, x, &o));
    memcpy(y, peft_tensor_data(o), (size_t)n * sizeof *y);
    TU_OK(ctx, peft__backward_seeded(ctx, o, dout));
    memcpy(dx, peft_tensor_grad(x), (size_t)n * sizeof *dx);
    free(dout);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_threads_bitwise)
{
    const int64_t n = 64 * 301;
    for (size_t k = 0; k < N_ACTS; k++) {
        float *y1 = malloc((size_t)n * 4), *y2 = malloc((size_t)n * 4);
        float *d1 = malloc((size_t)n * 4), *d2 = malloc((size_t)n * 4);
        run_threads(1, k, y1, d1, n);
        run_threads(2, k, y2, d2, n);
        ck_assert_msg(memcmp(y1, y2, (size_t)n * 4) == 0, "%s forward differs between 1 and 2 threads", acts[k].name);
        ck_assert_msg(memcmp(d1, d2, (size_t)n * 4) == 0, "%s backward differs between 1 and 2 threads", acts[k].name);
        free(y1), free(y2), free(d1), free(d2);
    }
}
END_TEST

/* NaN propagates through the exp-based kernels (and is no undefined behaviour under UBSan). */
START_TEST(numerics_nan_propagates)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    int64_t n = 3;
    float v[3] = {NAN, 1.0f, -INFINITY};
    peft_tensor *x = NULL, *g, *s;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 1, &n, &x));
    TU_OK(ctx, peft_tensor_set_f32(x, v, 3));
    TU_OK(ctx, peft_gelu(ctx, x, &g));
    TU_OK(ctx, peft_silu(ctx, x, &s));
    const float *G = peft_tensor_data(g), *S = peft_tensor_data(s);
    ck_assert(isnan(G[0]) && isnan(S[0]));
    ck_assert(isfinite(G[1]) && isfinite(S[1]));
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *activation_suite(void)
{
    Suite *s = suite_create("activation");
    TCase *tn = tcase_create("nan");
    tcase_add_test(tn, numerics_nan_propagates);
    suite_add_tcase(s, tn);
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_known_values);
    tcase_add_test(tc, numerics_vs_reference);
    tcase_add_test(tc, numerics_threads_bitwise);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_activations);
    tcase_add_test(tc, grad_accumulates);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_errors);
    suite_add_tcase(s, tc);
    return s;
}
