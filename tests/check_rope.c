/* peft_rope: both pair conventions against explicit rotations in double,
 * the HF (rotate-half) / GGUF (interleaved) equivalence of formats.md §3.5,
 * gradients (also through a strided view), thread independence, errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

/* Rotate every head of x (B*T rows of H*D, row stride ld) at positions pos0+t,
 * written out with explicit pair indices and angles in double. */
static void ref_rope(const float *x, int64_t ld, int64_t B, int64_t T, int H, int D, int n_rot,
                     peft_rope_mode mode, double theta, int64_t pos0, double *y)
{
    const int64_t C = (int64_t)H * D;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float *x_bt = x + (b * T + t) * ld;
            double *y_bt = y + (b * T + t) * C;
            for (int64_t j = 0; j < C; j++) y_bt[j] = x_bt[j];
            for (int h = 0; h < H; h++)
                for (int i = 0; i < n_rot / 2; i++) {
                    int a = mode == PEFT_ROPE_INTERLEAVED ? 2 * i : i;
                    int c = mode == PEFT_ROPE_INTERLEAVED ? 2 * i + 1 : i + n_rot / 2;
                    double ang = (double)(pos0 + t) * pow(theta, -2.0 * i / n_rot);
                    double x0 = x_bt[h * D + a], x1 = x_bt[h * D + c];
                    y_bt[h * D + a] = x0 * cos(ang) - x1 * sin(ang);
                    y_bt[h * D + c] = x0 * sin(ang) + x1 * cos(ang);
                }
        }
}

static double max_err_vs(const float *got, const double *want, size_t n)
{
    double md = 0, mb = 1e-6;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs(got[i] - want[i]));
        mb = fmax(mb, fabs(want[i]));
    }
    return md / mb;
}

typedef struct rope_arg {
    int n_head, n_rot;
    peft_rope_mode mode;
    float theta;
    int64_t pos0;
    int64_t slice_start, slice_len; /* > 0: rope a slice of the last dim of in[0] */
} rope_arg;

static peft_status fwd_rope(peft_ctx *ctx, peft_tensor **in, void *p, peft_tensor **out)
{
    const rope_arg *a = p;
    peft_tensor *x = in[0];
    if (a->slice_len > 0) {
        peft_status st = peft_slice(ctx, x, -1, a->slice_start, a->slice_len, &x);
        if (st != PEFT_OK) return st;
    }
    return peft_rope(ctx, x, a->n_head, a->mode, a->theta, a->n_rot, a->pos0, out);
}

typedef struct rope_case {
    int64_t B, T;
    int H, D, n_rot;
    peft_rope_mode mode;
    int64_t pos0;
    float theta;
} rope_case;

static const rope_case cases[] = {
    {1, 1, 1, 2, 0, PEFT_ROPE_INTERLEAVED, 0, 10000.0f},
    {1, 1, 1, 2, 0, PEFT_ROPE_HALF, 3, 10000.0f},
    {2, 7, 3, 6, 0, PEFT_ROPE_HALF, 5, 10000.0f},
    {2, 7, 3, 6, 0, PEFT_ROPE_INTERLEAVED, 5, 10000.0f},
    {2, 5, 2, 8, 4, PEFT_ROPE_INTERLEAVED, 3, 10000.0f}, /* partial rotation */
    {2, 5, 2, 10, 6, PEFT_ROPE_HALF, 1, 10000.0f},
    {1, 9, 4, 16, 0, PEFT_ROPE_HALF, 100, 500000.0f},  /* llama-3 theta */
    {3, 4, 1, 64, 0, PEFT_ROPE_INTERLEAVED, 2040, 10000.0f}, /* far positions */
    {1, 3, 2, 70, 0, PEFT_ROPE_HALF, 2, 10000.0f},            /* half 35: vector blocks and a tail */
    {2, 3, 2, 72, 40, PEFT_ROPE_HALF, 0, 10000.0f},           /* partial, half 20 */
};

START_TEST(numerics_rope_reference)
{
    peft_ctx *ctx = tu_ctx(2, 11);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const rope_case *c = &cases[ci];
        const int64_t C = (int64_t)c->H * c->D;
        const int n_rot = c->n_rot ? c->n_rot : c->D;
        for (int strided = 0; strided < 2; strided++) {
            /* strided: x is the middle third of a [B, T, 3C] tensor */
            int64_t shape[3] = {c->B, c->T, strided ? 3 * C : C};
            peft_tensor *base = tu_randn(ctx, 3, shape, 1.0f, 0), *x = base, *y;
            if (strided) TU_OK(ctx, peft_slice(ctx, base, 2, C, C, &x));
            TU_OK(ctx, peft_rope(ctx, x, c->H, c->mode, c->theta, c->n_rot, c->pos0, &y));
            ck_assert(peft_tensor_is_contiguous(y));
            ck_assert_int_eq(peft_tensor_numel(y), c->B * c->T * C);
            size_t n = (size_t)(c->B * c->T * C);
            double *ref = malloc(n * sizeof *ref);
            ref_rope(peft_tensor_data(x), peft_tensor_stride(x, 1), c->B, c->T, c->H, c->D, n_rot, c->mode,
                     c->theta, c->pos0, ref);
            double err = max_err_vs(peft_tensor_data(y), ref, n);
            ck_assert_msg(err < 2e-6, "case %zu strided %d: error %g", ci, strided, err);
            free(ref);
            peft_graph_release(ctx);
            peft_tensor_destroy(base);
        }
    }
    peft_ctx_destroy(ctx);
}
END_TEST

/* At position 0 nothing turns; a rotation keeps each pair's length. */
START_TEST(numerics_rope_identity_and_norm)
{
    peft_ctx *ctx = tu_ctx(1, 12);
    int64_t shape[3] = {1, 6, 16};
    peft_tensor *x = tu_randn(ctx, 3, shape, 1.0f, 0), *y;
    TU_OK(ctx, peft_rope(ctx, x, 2, PEFT_ROPE_HALF, 10000.0f, 0, 0, &y));
    const float *X = peft_tensor_data(x), *Y = peft_tensor_data(y);
    for (int j = 0; j < 16; j++) ck_assert_float_eq(Y[j], X[j]); /* row t = 0 */
    for (int t = 0; t < 6; t++)
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 4; i++) {
                const float *x_p = X + t * 16 + h * 8, *y_p = Y + t * 16 + h * 8;
                double nx = hypot(x_p[i], x_p[i + 4]), ny = hypot(y_p[i], y_p[i + 4]);
                ck_assert_double_lt(fabs(nx - ny), 1e-5 * (1 + nx));
            }
    peft_graph_release(ctx);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

/* formats.md §3.5: with q rows permuted per head (GGUF row j*D+2i+c <- HF row
 * j*D+c*h+i, h = D/2), INTERLEAVED on the permuted tensor is the same
 * computation as HALF on the HF one, element for element. */
START_TEST(numerics_rope_hf_gguf_equivalence)
{
    peft_ctx *ctx = tu_ctx(1, 13);
    const int H = 3, D = 8, h2 = D / 2;
    int64_t shape[3] = {2, 5, H * D};
    peft_tensor *x_hf = tu_randn(ctx, 3, shape, 1.0f, 0), *x_gg = tu_randn(ctx, 3, shape, 1.0f, 0);
    const float *hf = peft_tensor_data(x_hf);
    float *gg = peft_tensor_data(x_gg);
    for (int n = 0; n < 10; n++)
        for (int j = 0; j < H; j++)
            for (int i = 0; i < h2; i++)
                for (int c = 0; c < 2; c++) gg[n * H * D + j * D + 2 * i + c] = hf[n * H * D + j * D + c * h2 + i];
    peft_tensor *y_hf, *y_gg;
    TU_OK(ctx, peft_rope(ctx, x_hf, H, PEFT_ROPE_HALF, 10000.0f, 0, 7, &y_hf));
    TU_OK(ctx, peft_rope(ctx, x_gg, H, PEFT_ROPE_INTERLEAVED, 10000.0f, 0, 7, &y_gg));
    const float *yh = peft_tensor_data(y_hf), *yg = peft_tensor_data(y_gg);
    for (int n = 0; n < 10; n++)
        for (int j = 0; j < H; j++)
            for (int i = 0; i < h2; i++)
                for (int c = 0; c < 2; c++)
                    ck_assert_float_eq(yg[n * H * D + j * D + 2 * i + c], yh[n * H * D + j * D + c * h2 + i]);
    peft_graph_release(ctx);
    peft_tensor_destroy(x_hf), peft_tensor_destroy(x_gg);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_rope)
{
    peft_ctx *ctx = tu_ctx(2, 14);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const rope_case *c = &cases[ci];
        const int64_t C = (int64_t)c->H * c->D;
        int64_t shape[3] = {c->B, c->T, C};
        peft_tensor *x = tu_randn(ctx, 3, shape, 1.0f, 1);
        rope_arg a = {c->H, c->n_rot, c->mode, c->theta, c->pos0, 0, 0};
        tu_gradcheck(ctx, "rope", fwd_rope, &x, 1, &a, NULL);
        peft_tensor_destroy(x);
        /* the same through a strided view: x is the last C columns of [B, T, C+3] */
        shape[2] = C + 3;
        x = tu_randn(ctx, 3, shape, 1.0f, 1);
        a.slice_start = 3;
        a.slice_len = C;
        tu_gradcheck(ctx, "rope of a slice", fwd_rope, &x, 1, &a, NULL);
        /* columns outside the slice get no gradient */
        const float *g = peft_tensor_grad(x);
        for (int64_t r = 0; r < c->B * c->T; r++)
            for (int j = 0; j < 3; j++) ck_assert_float_eq(g[r * (C + 3) + j], 0.0f);
        peft_tensor_destroy(x);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

/* The backward is the exact inverse rotation: for dout = y (= R x), dx = x. */
START_TEST(grad_rope_is_inverse_rotation)
{
    peft_ctx *ctx = tu_ctx(1, 15);
    int64_t shape[3] = {2, 9, 12};
    peft_tensor *x = tu_randn(ctx, 3, shape, 1.0f, 1), *y;
    TU_OK(ctx, peft_rope(ctx, x, 2, PEFT_ROPE_INTERLEAVED, 10000.0f, 4, 30, &y));
    float dout[216];
    memcpy(dout, peft_tensor_data(y), sizeof dout);
    TU_OK(ctx, peft__backward_seeded(ctx, y, dout));
    ck_assert_double_lt(tu_max_rel_err(peft_tensor_grad(x), peft_tensor_data(x), 216), 1e-6);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

static void run_threads(int n_threads, float *y_out, float *dx_out, size_t n)
{
    peft_ctx *ctx = tu_ctx(n_threads, 16);
    int64_t shape[3] = {4, 64, 128};
    peft_tensor *x = tu_randn(ctx, 3, shape, 1.0f, 1), *y;
    TU_OK(ctx, peft_rope(ctx, x, 4, PEFT_ROPE_HALF, 10000.0f, 24, 17, &y));
    memcpy(y_out, peft_tensor_data(y), n * sizeof(float));
    float *dout = malloc(n * sizeof *dout);
    for (size_t i = 0; i < n; i++) dout[i] = (float)i / (float)n - 0.5f;
    TU_OK(ctx, peft__backward_seeded(ctx, y, dout));
    memcpy(dx_out, peft_tensor_grad(x), n * sizeof(float));
    free(dout);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_rope_threads_identical)
{
    const size_t n = 4 * 64 * 128;
    float *y1 = malloc(n * 4), *y2 = malloc(n * 4), *d1 = malloc(n * 4), *d2 = malloc(n * 4);
    run_threads(1, y1, d1, n);
    run_threads(2, y2, d2, n);
    ck_assert(memcmp(y1, y2, n * 4) == 0);
    ck_assert(memcmp(d1, d2, n * 4) == 0);
    free(y1), free(y2), free(d1), free(d2);
}
END_TEST

START_TEST(api_rope_errors)
{
    peft_ctx *ctx = tu_ctx(1, 17);
    int64_t s3[3] = {2, 4, 12}, s1[1] = {12}, s_odd[3] = {1, 3, 10};
    peft_tensor *x = tu_randn(ctx, 3, s3, 1, 0), *v = tu_randn(ctx, 1, s1, 1, 0);
    peft_tensor *odd = tu_randn(ctx, 3, s_odd, 1, 0), *o = NULL;
    const peft_rope_mode I = PEFT_ROPE_INTERLEAVED;
    ck_assert_int_eq(peft_rope(NULL, x, 2, I, 1e4f, 0, 0, &o), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, I, 1e4f, 0, 0, NULL), PEFT_ERR_INVALID_ARG, "peft_rope: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, NULL, 2, I, 1e4f, 0, 0, &o), PEFT_ERR_INVALID_ARG, "peft_rope: x is NULL");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, v, 1, I, 1e4f, 0, 0, &o), PEFT_ERR_SHAPE, "x [12] needs at least 2 dims");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 5, I, 1e4f, 0, 0, &o), PEFT_ERR_SHAPE,
                   "peft_rope: n_head 5 does not divide the last dim of x [2, 4, 12]");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 0, I, 1e4f, 0, 0, &o), PEFT_ERR_SHAPE, "n_head 0");
    /* D = 5 is odd: pairs do not fit */
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, odd, 2, I, 1e4f, 0, 0, &o), PEFT_ERR_INVALID_ARG,
                   "rope dims 5 with head size 5");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, odd, 2, I, 1e4f, 0, 0, &o), PEFT_ERR_INVALID_ARG, "x [1, 3, 10], 2 heads");
    TU_OK(ctx, peft_rope(ctx, odd, 2, I, 1e4f, 4, 0, &o)); /* but 4 of the 5 dims can turn */
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, I, 1e4f, 8, 0, &o), PEFT_ERR_INVALID_ARG, "rope dims 8 with head size 6");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, I, 1e4f, 3, 0, &o), PEFT_ERR_INVALID_ARG, "need an even count");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, I, 1e4f, -2, 0, &o), PEFT_ERR_INVALID_ARG, "rope dims -2");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, PEFT_ROPE_NONE, 1e4f, 0, 0, &o), PEFT_ERR_INVALID_ARG, "rope mode 0");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, (peft_rope_mode)9, 1e4f, 0, 0, &o), PEFT_ERR_INVALID_ARG, "rope mode 9");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, I, 0.0f, 0, 0, &o), PEFT_ERR_INVALID_ARG, "theta 0");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, I, NAN, 0, 0, &o), PEFT_ERR_INVALID_ARG, "theta");
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, x, 2, I, 1e4f, 0, -1, &o), PEFT_ERR_INVALID_ARG, "start position -1");
    ck_assert_ptr_null(o);
    peft_tensor *t;
    TU_OK(ctx, peft_transpose(ctx, x, 0, 2, &t));
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, t, 2, I, 1e4f, 0, 0, &o), PEFT_ERR_INVALID_ARG, "needs contiguous rows");
    int64_t si[3] = {2, 4, 12};
    int32_t ids[96] = {0};
    peft_tensor *xi = tu_ids(ctx, 3, si, ids);
    TU_EXPECT_FAIL(ctx, peft_rope(ctx, xi, 2, I, 1e4f, 0, 0, &o), PEFT_ERR_DTYPE, "expected f32");
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(v), peft_tensor_destroy(odd), peft_tensor_destroy(xi);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *rope_suite(void)
{
    Suite *s = suite_create("rope");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_rope_reference);
    tcase_add_test(tc, numerics_rope_identity_and_norm);
    tcase_add_test(tc, numerics_rope_hf_gguf_equivalence);
    tcase_add_test(tc, numerics_rope_threads_identical);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_rope);
    tcase_add_test(tc, grad_rope_is_inverse_rotation);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_rope_errors);
    suite_add_tcase(s, tc);
    return s;
}
