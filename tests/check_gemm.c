/* The own AVX-512 GEMM (lib/ops/gemm.c) against the double-precision
 * reference: every transpose pair, edge sizes around the register tile
 * (12 x 32) and the cache blocks (KC 256, MC 1056, NC 512), leading dimensions
 * wider than the matrix, narrow products (N < 16, computed transposed), alpha/beta, beta 0 over NaN, one and two threads, and
 * calls from inside a parallel region. Skips (and says so) on CPUs without
 * AVX-512F, where OpenBLAS does every product. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

static void fill(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((int32_t)(seed >> 8) % 2001) / 1000.0f - 1.0f;
    }
}

/* Run one product through peft__sgemm and the reference; return the max
 * error relative to the largest |reference| entry. */
static double check_one(peft_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                        int64_t pad)
{
    int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    size_t na = (size_t)((ta ? K : M) * lda), nb = (size_t)((tb ? N : K) * ldb), nc = (size_t)(M * ldc);
    float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B);
    float *C = malloc(nc * sizeof *C), *R = malloc(nc * sizeof *R);
    fill(A, na, (uint32_t)(M * 31 + K));
    fill(B, nb, (uint32_t)(N * 17 + K));
    fill(C, nc, 99u);
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++) C[i] = NAN; /* beta 0 must not read C */
    memcpy(R, C, nc * sizeof *R);
    peft__sgemm(ctx, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    peft__sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    double worst = 0.0, scale = 1e-6;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) scale = fmax(scale, fabs(R[i * ldc + j]));
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double d = fabs((double)C[i * ldc + j] - R[i * ldc + j]);
            if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
        }
        /* the padding between rows is never written */
        for (int64_t j = N; j < ldc && i + 1 < M; j++)
            if (memcmp(&C[i * ldc + j], &R[i * ldc + j], sizeof(float)) != 0) worst = INFINITY;
    }
    free(A), free(B), free(C), free(R);
    return worst / scale;
}

static bool own_gemm(peft_ctx *ctx)
{
    if (ctx->gemm) return true;
    fprintf(stderr, "check_gemm: no AVX-512F on this CPU, own GEMM not exercised (OpenBLAS path only)\n");
    return false;
}

START_TEST(numerics_shapes_and_transposes)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    if (!own_gemm(ctx)) { peft_ctx_destroy(ctx); return; }
    static const int64_t sizes[] = {1, 5, 12, 13, 31, 32, 33, 100};
    size_t ns = sizeof sizes / sizeof *sizes;
    for (int t = 0; t < 4; t++)
        for (size_t a = 0; a < ns; a++)
            for (size_t b = 0; b < ns; b++) {
                int64_t M = sizes[a], N = sizes[b], K = sizes[(a + b) % ns];
                double e = check_one(ctx, t & 1, t & 2, M, N, K, 0.75f, 0.5f, (a + b) % 3);
                ck_assert_msg(e < 1e-5, "ta %d tb %d M %ld N %ld K %ld: rel err %g", t & 1, !!(t & 2), (long)M,
                              (long)N, (long)K, e);
            }
    peft_ctx_destroy(ctx);
}
END_TEST

/* Sizes that cross every cache block: K over KC = 256, N
 * over NC = 512 (twice), M over MC = 1056, on one and two threads, with beta 0 (C full of NaN) and 1. */
START_TEST(numerics_blocks_threads)
{
    static const int64_t shapes[][3] = {{257, 1030, 300}, {130, 64, 513}, {1000, 40, 70}, {37, 1100, 260},
                                        {700, 8, 300}, {1500, 1, 40}, {40, 15, 9}, {2200, 48, 20}};
    for (int threads = 1; threads <= 2; threads++) {
        peft_ctx *ctx = tu_ctx(threads, 1);
        if (!own_gemm(ctx)) { peft_ctx_destroy(ctx); return; }
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int t = 0; t < 4; t++)
                for (int bz = 0; bz < 2; bz++) {
                    double e = check_one(ctx, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f,
                                         bz ? 1.0f : 0.0f, 3);
                    ck_assert_msg(e < 1e-5, "threads %d shape %zu ta %d tb %d beta %d: rel err %g", threads, s,
                                  t & 1, !!(t & 2), bz, e);
                }
        peft_ctx_destroy(ctx);
    }
}
END_TEST

/* One and two threads give the same bits: the split never changes the order
 * of a sum. */
START_TEST(numerics_thread_count_invariant)
{
    int64_t M = 301, N = 517, K = 700;
    float *A = malloc((size_t)(M * K) * sizeof *A), *B = malloc((size_t)(K * N) * sizeof *B);
    float *C1 = calloc((size_t)(M * N), sizeof *C1), *C2 = calloc((size_t)(M * N), sizeof *C2);
    fill(A, (size_t)(M * K), 3);
    fill(B, (size_t)(K * N), 4);
    peft_ctx *c1 = tu_ctx(1, 1), *c2 = tu_ctx(2, 1);
    peft__sgemm(c1, false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C1, N);
    peft__sgemm(c2, false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C2, N);
    ck_assert(memcmp(C1, C2, (size_t)(M * N) * sizeof *C1) == 0);
    peft_ctx_destroy(c1), peft_ctx_destroy(c2);
    free(A), free(B), free(C1), free(C2);
}
END_TEST

typedef struct nested_arg {
    peft_ctx *ctx;
    double worst[8];
} nested_arg;

static void nested_range(void *p, size_t begin, size_t end)
{
    nested_arg *a = p;
    for (size_t i = begin; i < end; i++)
        a->worst[i] = check_one(a->ctx, i & 1, i & 2, 64 + (int64_t)i, 64, 64 + 3 * (int64_t)i, 1.0f, 1.0f, 1);
}

/* Products issued from inside a parallel region run on the calling worker,
 * each on its own workspace (attention calls GEMMs this way). */
START_TEST(numerics_nested_in_parallel_region)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    if (!own_gemm(ctx)) { peft_ctx_destroy(ctx); return; }
    nested_arg a = {.ctx = ctx};
    for (int rep = 0; rep < 20; rep++) {
        peft__parallel_for(ctx, 8, 1, nested_range, &a);
        for (int i = 0; i < 8; i++) ck_assert_msg(a.worst[i] < 1e-5, "part %d: rel err %g", i, a.worst[i]);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

/* PEFT_GEMM_OPENBLAS gives a context without the own GEMM; bad values are refused. */
START_TEST(api_backend_option)
{
    peft_ctx_opts o = peft_ctx_opts_default();
    o.gemm = PEFT_GEMM_OPENBLAS;
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_OK);
    ck_assert_ptr_null(ctx->gemm);
    ck_assert(check_one(ctx, true, false, 40, 50, 60, 1.0f, 0.0f, 0) < 1e-5);
    peft_ctx_destroy(ctx);
    o.gemm = 7;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_ERR_INVALID_ARG);
    ck_assert_ptr_null(ctx);
}
END_TEST

Suite *gemm_suite(void)
{
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("numerics");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, numerics_shapes_and_transposes);
    tcase_add_test(tc, numerics_blocks_threads);
    tcase_add_test(tc, numerics_thread_count_invariant);
    tcase_add_test(tc, numerics_nested_in_parallel_region);
    suite_add_tcase(s, tc);
    TCase *api = tcase_create("api");
    tcase_add_test(api, api_backend_option);
    suite_add_tcase(s, api);
    return s;
}
