/* peft_layernorm and peft_rmsnorm: against a naive double reference (with and
 * without w/b, with a large mean), gradients against finite differences,
 * frozen weights, errors, and thread-count invariance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

#define EPS 1e-5f

typedef struct norm_arg {
    bool rms;
    float eps;
} norm_arg;

/* in: x, w (or NULL), b (or NULL; ignored for rmsnorm) */
static peft_status fwd_norm(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    const norm_arg *a = arg;
    return a->rms ? peft_rmsnorm(ctx, in[0], in[1], a->eps, out)
                  : peft_layernorm(ctx, in[0], in[1], in[2], a->eps, out);
}

/* The textbook formulas in double: y (N, C). */
static void ref_norm(bool rms, const float *x, const float *w, const float *b, double eps, int64_t N, int64_t C,
                     double *y)
{
    for (int64_t n = 0; n < N; n++) {
        const float *x_n = x + n * C;
        double m = 0, v = 0;
        if (!rms) {
            for (int64_t c = 0; c < C; c++) m += x_n[c];
            m /= C;
        }
        for (int64_t c = 0; c < C; c++) v += (x_n[c] - m) * (x_n[c] - m);
        v /= C;
        for (int64_t c = 0; c < C; c++)
            y[n * C + c] = (x_n[c] - m) / sqrt(v + eps) * (w ? w[c] : 1.0) + (b && !rms ? b[c] : 0.0);
    }
}

static const int64_t shapes[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 5, 33}};
static const int shape_ndim[] = {2, 2, 3};
static const int64_t *shape_of(size_t i) { return shapes[i] + (3 - shape_ndim[i]); }

static void add_offset(peft_tensor *x, float off)
{
    float *X = peft_tensor_data(x);
    for (int64_t i = 0; i < peft_tensor_numel(x); i++) X[i] += off;
}

START_TEST(numerics_vs_reference)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    for (size_t sh = 0; sh < 3; sh++)
        for (int rms = 0; rms < 2; rms++)
            for (int with_wb = 0; with_wb < 2; with_wb++)
                for (int shifted = 0; shifted < 2; shifted++) {
                    const int64_t *shape = shape_of(sh);
                    const int nd = shape_ndim[sh];
                    const int64_t C = shape[nd - 1];
                    peft_tensor *x = tu_randn(ctx, nd, shape, 1.0f, 0);
                    /* a mean far from 0 (layernorm must not lose the spread to cancellation) */
                    if (shifted) add_offset(x, rms ? 3.0f : 1000.0f);
                    peft_tensor *w = with_wb ? tu_randn(ctx, 1, &C, 1.0f, 0) : NULL;
                    peft_tensor *b = with_wb ? tu_randn(ctx, 1, &C, 1.0f, 0) : NULL;
                    peft_tensor *y;
                    if (rms) TU_OK(ctx, peft_rmsnorm(ctx, x, w, EPS, &y));
                    else TU_OK(ctx, peft_layernorm(ctx, x, w, b, EPS, &y));
                    int64_t n = peft_tensor_numel(x), rows = n / C;
                    ck_assert_int_eq(peft_tensor_numel(y), n);
                    ck_assert_int_eq(peft_tensor_dim(y, nd - 1), C);
                    double *ref = malloc((size_t)n * sizeof *ref);
                    ref_norm(rms, peft_tensor_data(x), w ? peft_tensor_data(w) : NULL,
                             b ? peft_tensor_data(b) : NULL, EPS, rows, C, ref);
                    const float *Y = peft_tensor_data(y);
                    for (int64_t i = 0; i < n; i++)
                        ck_assert_msg(fabs(Y[i] - ref[i]) <= 2e-6 + 2e-6 * fabs(ref[i]),
                                      "%s shape %zu w/b %d shifted %d: y[%lld] = %.9g, expected %.9g",
                                      rms ? "rmsnorm" : "layernorm", sh, with_wb, shifted, (long long)i, Y[i],
                                      ref[i]);
                    free(ref);
                    peft_graph_release(ctx);
                    peft_tensor_destroy(x), peft_tensor_destroy(w), peft_tensor_destroy(b);
                }
    peft_ctx_destroy(ctx);
}
END_TEST

/* With eps = 0 and no w/b, layernorm rows have mean 0 and (biased) variance 1,
 * and rmsnorm rows have mean square 1. */
START_TEST(numerics_row_statistics)
{
    peft_ctx *ctx = tu_ctx(1, 2);
    const int64_t shape[2] = {4, 257};
    peft_tensor *x = tu_randn(ctx, 2, shape, 3.0f, 0), *y, *r;
    add_offset(x, 5.0f);
    TU_OK(ctx, peft_layernorm(ctx, x, NULL, NULL, 0.0f, &y));
    TU_OK(ctx, peft_rmsnorm(ctx, x, NULL, 0.0f, &r));
    const float *Y = peft_tensor_data(y), *R = peft_tensor_data(r);
    for (int n = 0; n < 4; n++) {
        double m = 0, v = 0, ms = 0;
        for (int c = 0; c < 257; c++) m += Y[n * 257 + c];
        m /= 257;
        for (int c = 0; c < 257; c++) {
            v += (Y[n * 257 + c] - m) * (Y[n * 257 + c] - m);
            ms += (double)R[n * 257 + c] * R[n * 257 + c];
        }
        ck_assert_double_lt(fabs(m), 1e-6);
        ck_assert_double_lt(fabs(v / 257 - 1.0), 1e-5);
        ck_assert_double_lt(fabs(ms / 257 - 1.0), 1e-5);
    }
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_norms)
{
    peft_ctx *ctx = tu_ctx(2, 3);
    for (size_t sh = 0; sh < 3; sh++)
        for (int rms = 0; rms < 2; rms++)
            for (int with_wb = 0; with_wb < 2; with_wb++) {
                const int64_t *shape = shape_of(sh);
                const int nd = shape_ndim[sh];
                const int64_t C = shape[nd - 1];
                peft_tensor *x = tu_randn(ctx, nd, shape, 1.0f, 1);
                if (rms) add_offset(x, 0.5f); /* keep the [1,1] rms row off x = 0 */
                peft_tensor *w = with_wb ? tu_randn(ctx, 1, &C, 1.0f, 1) : NULL;
                peft_tensor *b = with_wb && !rms ? tu_randn(ctx, 1, &C, 1.0f, 1) : NULL;
                peft_tensor *in[3] = {x, w, b};
                norm_arg a = {rms != 0, EPS};
                char label[64];
                snprintf(label, sizeof label, "%s shape %zu w/b %d", rms ? "rmsnorm" : "layernorm", sh, with_wb);
                tu_gradcheck(ctx, label, fwd_norm, in, 3, &a, NULL);
                /* the same with a large eps, where the eps terms matter */
                a.eps = 0.5f;
                tu_gradcheck(ctx, label, fwd_norm, in, 3, &a, NULL);
                peft_tensor_destroy(x), peft_tensor_destroy(w), peft_tensor_destroy(b);
            }
    peft_ctx_destroy(ctx);
}
END_TEST

/* A frozen w gets no gradient (grad stays NULL) while x and b still get theirs;
 * a frozen x with a trainable w gets none either. */
START_TEST(grad_frozen_weight)
{
    peft_ctx *ctx = tu_ctx(1, 4);
    const int64_t shape[2] = {3, 7}, C = 7;
    for (int rms = 0; rms < 2; rms++) {
        peft_tensor *x = tu_randn(ctx, 2, shape, 1.0f, 1);
        peft_tensor *w = tu_randn(ctx, 1, &C, 1.0f, 0);
        peft_tensor *b = rms ? NULL : tu_randn(ctx, 1, &C, 1.0f, 1);
        peft_tensor *in[3] = {x, w, b};
        norm_arg a = {rms != 0, EPS};
        tu_gradcheck(ctx, rms ? "rmsnorm frozen w" : "layernorm frozen w", fwd_norm, in, 3, &a, NULL);
        ck_assert_ptr_null(peft_tensor_grad(w));
        ck_assert_ptr_nonnull(peft_tensor_grad(x));
        /* db is the column sum of dout: check it exactly against a fresh backward */
        if (!rms) {
            peft_tensor *y, *loss;
            peft_tensor_zero_grad(b);
            TU_OK(ctx, peft_layernorm(ctx, x, w, b, EPS, &y));
            TU_OK(ctx, peft_sum(ctx, y, &loss));
            TU_OK(ctx, peft_backward(ctx, loss, NULL));
            for (int c = 0; c < 7; c++) ck_assert_float_eq(peft_tensor_grad(b)[c], 3.0f);
            ck_assert_ptr_null(peft_tensor_grad(w));
        }
        /* frozen x, trainable w: only w gets a gradient */
        peft_tensor *x2 = tu_randn(ctx, 2, shape, 1.0f, 0);
        peft_tensor *w2 = tu_randn(ctx, 1, &C, 1.0f, 1);
        peft_tensor *in2[3] = {x2, w2, NULL};
        tu_gradcheck(ctx, rms ? "rmsnorm frozen x" : "layernorm frozen x", fwd_norm, in2, 3, &a, NULL);
        ck_assert_ptr_null(peft_tensor_grad(x2));
        ck_assert_ptr_nonnull(peft_tensor_grad(w2));
        /* nothing trainable: no node is recorded */
        peft_tensor *y;
        TU_OK(ctx, rms ? peft_rmsnorm(ctx, x2, w, EPS, &y) : peft_layernorm(ctx, x2, w, NULL, EPS, &y));
        ck_assert_int_eq(peft_tensor_requires_grad(y), 0);
        ck_assert_uint_eq(peft_graph_size(ctx), 0);
        peft_graph_release(ctx);
        peft_tensor_destroy(x), peft_tensor_destroy(w), peft_tensor_destroy(b);
        peft_tensor_destroy(x2), peft_tensor_destroy(w2);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_errors)
{
    peft_ctx *ctx = tu_ctx(1, 5);
    const int64_t s37[2] = {3, 7}, s5[1] = {5}, s7[1] = {7}, s17[2] = {1, 7};
    peft_tensor *x = tu_randn(ctx, 2, s37, 1.0f, 0), *w5 = tu_randn(ctx, 1, s5, 1.0f, 0);
    peft_tensor *w7 = tu_randn(ctx, 1, s7, 1.0f, 0), *w17 = tu_randn(ctx, 2, s17, 1.0f, 0);
    peft_tensor *t, *o = NULL;
    TU_OK(ctx, peft_transpose(ctx, x, 0, 1, &t));
    ck_assert_int_eq(peft_layernorm(NULL, x, NULL, NULL, EPS, &o), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_layernorm(ctx, NULL, w7, NULL, EPS, &o), PEFT_ERR_INVALID_ARG,
                   "peft_layernorm: x is NULL");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_rmsnorm(ctx, NULL, NULL, EPS, &o), PEFT_ERR_INVALID_ARG, "peft_rmsnorm: x is NULL");
    TU_EXPECT_FAIL(ctx, peft_layernorm(ctx, x, NULL, NULL, EPS, NULL), PEFT_ERR_INVALID_ARG,
                   "peft_layernorm: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_layernorm(ctx, x, w5, NULL, EPS, &o), PEFT_ERR_SHAPE,
                   "peft_layernorm: w [5] does not match x [3, 7] (expected [7])");
    TU_EXPECT_FAIL(ctx, peft_layernorm(ctx, x, w7, w5, EPS, &o), PEFT_ERR_SHAPE,
                   "peft_layernorm: b [5] does not match x [3, 7] (expected [7])");
    TU_EXPECT_FAIL(ctx, peft_layernorm(ctx, x, w17, NULL, EPS, &o), PEFT_ERR_SHAPE,
                   "peft_layernorm: w [1, 7] does not match x [3, 7]");
    TU_EXPECT_FAIL(ctx, peft_rmsnorm(ctx, x, w5, EPS, &o), PEFT_ERR_SHAPE,
                   "peft_rmsnorm: w [5] does not match x [3, 7] (expected [7])");
    /* x^T is [7, 3]: not contiguous, whatever w says */
    TU_EXPECT_FAIL(ctx, peft_layernorm(ctx, t, NULL, NULL, EPS, &o), PEFT_ERR_INVALID_ARG,
                   "peft_layernorm: x [7, 3] is not contiguous");
    TU_EXPECT_FAIL(ctx, peft_rmsnorm(ctx, t, NULL, EPS, &o), PEFT_ERR_INVALID_ARG,
                   "peft_rmsnorm: x [7, 3] is not contiguous");
    /* one row of a transposed [7, 2]: [1, 7] with stride 2 along the last dim */
    const int64_t s72[2] = {7, 2};
    peft_tensor *m = tu_randn(ctx, 2, s72, 1.0f, 0), *mt, *row;
    TU_OK(ctx, peft_transpose(ctx, m, 0, 1, &mt));
    TU_OK(ctx, peft_slice(ctx, mt, 0, 1, 1, &row));
    TU_EXPECT_FAIL(ctx, peft_rmsnorm(ctx, row, w7, EPS, &o), PEFT_ERR_INVALID_ARG,
                   "peft_rmsnorm: x [1, 7] is not contiguous");
    TU_EXPECT_FAIL(ctx, peft_layernorm(ctx, x, NULL, NULL, -1.0f, &o), PEFT_ERR_INVALID_ARG,
                   "peft_layernorm: eps -1 must be finite and >= 0");
    TU_EXPECT_FAIL(ctx, peft_rmsnorm(ctx, x, NULL, NAN, &o), PEFT_ERR_INVALID_ARG, "peft_rmsnorm: eps");
    const int32_t ids[7] = {0};
    peft_tensor *wi = tu_ids(ctx, 1, s7, ids);
    TU_EXPECT_FAIL(ctx, peft_layernorm(ctx, x, wi, NULL, EPS, &o), PEFT_ERR_DTYPE, "peft_layernorm: w is i32");
    /* 1-D input is one row */
    TU_OK(ctx, peft_layernorm(ctx, w7, w7, w7, EPS, &o));
    ck_assert_int_eq(peft_tensor_ndim(o), 1);
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(w5), peft_tensor_destroy(w7), peft_tensor_destroy(w17);
    peft_tensor_destroy(m), peft_tensor_destroy(wi);
    peft_ctx_destroy(ctx);
}
END_TEST

/* y, dx, dw, db of a layernorm (rms = 0) or rmsnorm on a context with n_threads. */
static void run_threads(int n_threads, bool rms, float *out /* y | dx | dw | db */, int64_t N, int64_t C)
{
    peft_ctx *ctx = tu_ctx(n_threads, 99);
    if (n_threads > 1) ck_assert_ptr_nonnull(ctx->pool);
    const int64_t shape[2] = {N, C};
    peft_tensor *x = tu_randn(ctx, 2, shape, 2.0f, 1);
    add_offset(x, 0.7f);
    peft_tensor *w = tu_randn(ctx, 1, &C, 1.0f, 1), *b = tu_randn(ctx, 1, &C, 1.0f, 1);
    float *dout = malloc((size_t)(N * C) * sizeof *dout);
    for (int64_t i = 0; i < N * C; i++) dout[i] = (float)peft_ctx_rand_normal(ctx);
    peft_tensor *y;
    if (rms) TU_OK(ctx, peft_rmsnorm(ctx, x, w, EPS, &y));
    else TU_OK(ctx, peft_layernorm(ctx, x, w, b, EPS, &y));
    memcpy(out, peft_tensor_data(y), (size_t)(N * C) * 4);
    TU_OK(ctx, peft__backward_seeded(ctx, y, dout));
    memcpy(out + N * C, peft_tensor_grad(x), (size_t)(N * C) * 4);
    memcpy(out + 2 * N * C, peft_tensor_grad(w), (size_t)C * 4);
    memcpy(out + 2 * N * C + C, peft_tensor_grad(b), (size_t)C * 4);
    free(dout);
    peft_tensor_destroy(x), peft_tensor_destroy(w), peft_tensor_destroy(b);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_threads_bitwise)
{
    /* 61 rows of 601: both the row split and the column split (grain 256) cut */
    const int64_t N = 61, C = 601, total = 2 * N * C + 2 * C;
    for (int rms = 0; rms < 2; rms++) {
        float *r1 = calloc((size_t)total, 4), *r2 = calloc((size_t)total, 4);
        run_threads(1, rms, r1, N, C);
        run_threads(2, rms, r2, N, C);
        ck_assert_msg(memcmp(r1, r2, (size_t)(N * C) * 4) == 0, "forward differs");
        ck_assert_msg(memcmp(r1 + N * C, r2 + N * C, (size_t)(N * C) * 4) == 0, "dx differs");
        ck_assert_msg(memcmp(r1 + 2 * N * C, r2 + 2 * N * C, (size_t)(2 * C) * 4) == 0, "dw/db differ");
        free(r1), free(r2);
    }
}
END_TEST

Suite *norm_suite(void)
{
    Suite *s = suite_create("norm");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_vs_reference);
    tcase_add_test(tc, numerics_row_statistics);
    tcase_add_test(tc, numerics_threads_bitwise);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_norms);
    tcase_add_test(tc, grad_frozen_weight);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_errors);
    suite_add_tcase(s, tc);
    return s;
}
