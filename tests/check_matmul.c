/* peft_matmul and peft_linear: against the naive reference, gradients against
 * finite differences, frozen weights, f16/bf16 weights, errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

typedef struct mm_arg {
    int flags;
} mm_arg;

static peft_status fwd_matmul(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    return peft_matmul(ctx, in[0], in[1], ((mm_arg *)arg)->flags, out);
}

static peft_status fwd_linear(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    (void)arg;
    return peft_linear(ctx, in[0], in[1], in[2], out);
}

START_TEST(numerics_sgemm_vs_reference)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    const int64_t dims[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 9}, {64, 1, 31}, {5, 129, 65}};
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int64_t M = dims[d][0], N = dims[d][1], K = dims[d][2];
                float *A = malloc((size_t)(M * K) * 4), *B = malloc((size_t)(K * N) * 4);
                float *C = malloc((size_t)(M * N) * 4), *R = malloc((size_t)(M * N) * 4);
                for (int64_t i = 0; i < M * K; i++) A[i] = (float)peft_ctx_rand_normal(ctx);
                for (int64_t i = 0; i < K * N; i++) B[i] = (float)peft_ctx_rand_normal(ctx);
                for (int64_t i = 0; i < M * N; i++) C[i] = R[i] = (float)peft_ctx_rand_normal(ctx);
                peft__sgemm(ctx, ta, tb, M, N, K, 0.5f, A, ta ? M : K, B, tb ? K : N, 1.0f, C, N);
                peft__sgemm_ref(ta, tb, M, N, K, 0.5f, A, ta ? M : K, B, tb ? K : N, 1.0f, R, N);
                ck_assert_double_lt(tu_max_rel_err(C, R, (size_t)(M * N)), 1e-5);
                free(A), free(B), free(C), free(R);
            }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_matmul_shapes)
{
    peft_ctx *ctx = tu_ctx(2, 2);
    /* {batch dims..., M, K, N, shared_b} */
    const int64_t cases[][5] = {{1, 3, 4, 5, 0}, {2, 3, 7, 5, 0}, {3, 5, 1, 2, 1}, {2, 1, 9, 3, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int flags = 0; flags < 4; flags++) {
            int64_t Bt = cases[c][0], M = cases[c][1], K = cases[c][2], N = cases[c][3];
            int shared = (int)cases[c][4];
            int64_t sa[3] = {Bt, (flags & PEFT_TRANS_A) ? K : M, (flags & PEFT_TRANS_A) ? M : K};
            int64_t sb3[3] = {Bt, (flags & PEFT_TRANS_B) ? N : K, (flags & PEFT_TRANS_B) ? K : N};
            peft_tensor *a = tu_randn(ctx, 3, sa, 1.0f, 1);
            peft_tensor *b = shared ? tu_randn(ctx, 2, sb3 + 1, 1.0f, 1) : tu_randn(ctx, 3, sb3, 1.0f, 1);
            peft_tensor *in[2] = {a, b};
            mm_arg arg = {flags};
            tu_gradcheck(ctx, "matmul", fwd_matmul, in, 2, &arg, NULL);
            /* forward against the reference */
            peft_tensor *o;
            TU_OK(ctx, peft_matmul(ctx, a, b, flags, &o));
            float *ref = calloc((size_t)(Bt * M * N), 4);
            for (int64_t i = 0; i < Bt; i++)
                peft__sgemm_ref(flags & PEFT_TRANS_A, flags & PEFT_TRANS_B, M, N, K, 1.0f,
                                (float *)peft_tensor_data(a) + i * M * K, (flags & PEFT_TRANS_A) ? M : K,
                                (float *)peft_tensor_data(b) + (shared ? 0 : i * K * N), (flags & PEFT_TRANS_B) ? K : N,
                                0.0f, ref + i * M * N, N);
            ck_assert_double_lt(tu_max_rel_err(peft_tensor_data(o), ref, (size_t)(Bt * M * N)), 1e-5);
            free(ref);
            peft_graph_release(ctx);
            peft_tensor_destroy(a);
            peft_tensor_destroy(b);
        }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_linear)
{
    peft_ctx *ctx = tu_ctx(2, 3);
    const int64_t shapes[][4] = {{1, 1, 3, 2}, {2, 3, 5, 7}, {1, 7, 13, 1}};
    for (size_t c = 0; c < 3; c++) {
        int64_t sx[3] = {shapes[c][0], shapes[c][1], shapes[c][2]}, sw[2] = {shapes[c][3], shapes[c][2]};
        peft_tensor *x = tu_randn(ctx, 3, sx, 1.0f, 1);
        peft_tensor *w = tu_randn(ctx, 2, sw, 0.5f, 1);
        peft_tensor *b = tu_randn(ctx, 1, sw, 0.5f, 1);
        peft_tensor *in[3] = {x, w, b};
        tu_gradcheck(ctx, "linear", fwd_linear, in, 3, NULL, NULL);
        in[2] = NULL;
        tu_gradcheck(ctx, "linear without bias", fwd_linear, in, 3, NULL, NULL);
        peft_tensor_destroy(x), peft_tensor_destroy(w), peft_tensor_destroy(b);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_frozen_weight_untouched)
{
    peft_ctx *ctx = tu_ctx(1, 4);
    int64_t sx[2] = {4, 6}, sw[2] = {3, 6};
    peft_tensor *x = tu_randn(ctx, 2, sx, 1.0f, 1);
    peft_tensor *w = tu_randn(ctx, 2, sw, 1.0f, 0);
    peft_tensor *y, *loss;
    TU_OK(ctx, peft_linear(ctx, x, w, NULL, &y));
    TU_OK(ctx, peft_sum(ctx, y, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    ck_assert_ptr_null(peft_tensor_grad(w)); /* no gradient was ever made */
    /* dx = column sums of W */
    const float *W = peft_tensor_data(w), *dx = peft_tensor_grad(x);
    for (int j = 0; j < 6; j++) {
        float s = W[j] + W[6 + j] + W[12 + j];
        ck_assert_float_eq_tol(dx[j], s, 1e-5f);
    }
    peft_tensor_destroy(x), peft_tensor_destroy(w);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_linear_half_weights)
{
    peft_ctx *ctx = tu_ctx(2, 5);
    /* 70 x 1000 forces several conversion tiles */
    int64_t sx[2] = {5, 1000}, sw[2] = {70, 1000};
    peft_tensor *x = tu_randn(ctx, 2, sx, 1.0f, 1);
    peft_tensor *w = tu_randn(ctx, 2, sw, 0.1f, 0);
    for (int d = 0; d < 2; d++) {
        peft_dtype dt = d ? PEFT_DTYPE_BF16 : PEFT_DTYPE_F16;
        peft_tensor *wh, *w32, *y, *y32;
        TU_OK(ctx, peft_tensor_convert(w, dt, &wh));
        TU_OK(ctx, peft_tensor_convert(wh, PEFT_DTYPE_F32, &w32)); /* the same rounded values in f32 */
        TU_OK(ctx, peft_linear(ctx, x, wh, NULL, &y));
        TU_OK(ctx, peft_linear(ctx, x, w32, NULL, &y32));
        ck_assert_double_lt(tu_max_rel_err(peft_tensor_data(y), peft_tensor_data(y32), 350), 1e-5);
        /* backward through the frozen half weight reaches x */
        peft_tensor *loss;
        TU_OK(ctx, peft_sum(ctx, y, &loss));
        peft_tensor_zero_grad(x);
        TU_OK(ctx, peft_backward(ctx, loss, NULL));
        float *dx = malloc(5000 * 4);
        memcpy(dx, peft_tensor_grad(x), 5000 * 4);
        TU_OK(ctx, peft_linear(ctx, x, w32, NULL, &y32));
        TU_OK(ctx, peft_sum(ctx, y32, &loss));
        peft_tensor_zero_grad(x);
        TU_OK(ctx, peft_backward(ctx, loss, NULL));
        ck_assert_double_lt(tu_max_rel_err(dx, peft_tensor_grad(x), 5000), 1e-5);
        free(dx);
        peft_tensor_destroy(wh), peft_tensor_destroy(w32);
    }
    peft_tensor_destroy(x), peft_tensor_destroy(w);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_matmul_errors)
{
    peft_ctx *ctx = tu_ctx(1, 6);
    int64_t s23[2] = {2, 3}, s45[2] = {4, 5}, s3[1] = {3}, s234[3] = {2, 3, 4}, s334[3] = {3, 3, 4};
    peft_tensor *a = tu_randn(ctx, 2, s23, 1, 0), *b = tu_randn(ctx, 2, s45, 1, 0), *v = tu_randn(ctx, 1, s3, 1, 0);
    peft_tensor *c = tu_randn(ctx, 3, s234, 1, 0), *d = tu_randn(ctx, 3, s334, 1, 0), *o = NULL;
    TU_EXPECT_FAIL(ctx, peft_matmul(ctx, a, b, 0, &o), PEFT_ERR_SHAPE, "[2, 3] and b [4, 5]");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_matmul(ctx, NULL, b, 0, &o), PEFT_ERR_INVALID_ARG, "peft_matmul: a is NULL");
    TU_EXPECT_FAIL(ctx, peft_matmul(ctx, a, v, 0, &o), PEFT_ERR_SHAPE, "need at least 2 dims");
    TU_EXPECT_FAIL(ctx, peft_matmul(ctx, c, d, PEFT_TRANS_B, &o), PEFT_ERR_SHAPE, "do not multiply");
    TU_EXPECT_FAIL(ctx, peft_matmul(ctx, a, b, 8, &o), PEFT_ERR_INVALID_ARG, "unknown flags");
    TU_EXPECT_FAIL(ctx, peft_linear(ctx, a, b, NULL, &o), PEFT_ERR_SHAPE, "peft_linear: x [2, 3] and weight [4, 5]");
    peft_tensor *t;
    TU_OK(ctx, peft_transpose(ctx, c, 0, 2, &t));
    TU_EXPECT_FAIL(ctx, peft_matmul(ctx, t, a, 0, &o), PEFT_ERR_INVALID_ARG, "not contiguous");
    peft_graph_release(ctx);
    peft_tensor_destroy(a), peft_tensor_destroy(b), peft_tensor_destroy(v), peft_tensor_destroy(c),
        peft_tensor_destroy(d);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *matmul_suite(void)
{
    Suite *s = suite_create("matmul");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_sgemm_vs_reference);
    tcase_add_test(tc, numerics_linear_half_weights);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_matmul_shapes);
    tcase_add_test(tc, grad_linear);
    tcase_add_test(tc, grad_frozen_weight_untouched);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_matmul_errors);
    suite_add_tcase(s, tc);
    return s;
}
