/* peft_embedding: lookup against the naive copy, f16/bf16 tables, sparse and
 * deterministic gradients, errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

static peft_status fwd_embedding(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    return peft_embedding(ctx, in[0], (peft_tensor *)arg, out);
}

/* Random ids in [0, V), deterministic. */
static int32_t *rand_ids(int64_t n, int64_t V, uint64_t seed)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(peft__splitmix64(&seed) % (uint64_t)V);
    return ids;
}

START_TEST(numerics_lookup)
{
    /* {V, C, ids ndim, ids dims...} */
    const int64_t cases[][6] = {{7, 5, 2, 2, 3, 0}, {1, 1, 1, 4, 0, 0}, {50, 33, 3, 2, 5, 31}, {13, 200, 1, 1, 0, 0}};
    for (int threads = 1; threads <= 2; threads++) {
        peft_ctx *ctx = tu_ctx(threads, 11);
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            int64_t V = cases[c][0], C = cases[c][1];
            int nd = (int)cases[c][2];
            int64_t st[2] = {V, C};
            peft_tensor *table = tu_randn(ctx, 2, st, 1.0f, 0);
            int64_t N = 1;
            for (int i = 0; i < nd; i++) N *= cases[c][3 + i];
            int32_t *idv = rand_ids(N, V, 100 + c);
            peft_tensor *ids = tu_ids(ctx, nd, cases[c] + 3, idv);
            peft_tensor *o;
            TU_OK(ctx, peft_embedding(ctx, table, ids, &o));
            ck_assert_int_eq(peft_tensor_ndim(o), nd + 1);
            for (int i = 0; i < nd; i++) ck_assert_int_eq(peft_tensor_dim(o, i), cases[c][3 + i]);
            ck_assert_int_eq(peft_tensor_dim(o, -1), C);
            const float *T = peft_tensor_data(table), *O = peft_tensor_data(o);
            for (int64_t n = 0; n < N; n++)
                ck_assert_mem_eq(O + n * C, T + (int64_t)idv[n] * C, (size_t)C * sizeof(float));
            /* a frozen table records nothing */
            ck_assert_int_eq(peft_tensor_requires_grad(o), 0);
            free(idv);
            peft_graph_release(ctx);
            peft_tensor_destroy(table), peft_tensor_destroy(ids);
        }
        peft_ctx_destroy(ctx);
    }
}
END_TEST

START_TEST(numerics_half_table)
{
    peft_ctx *ctx = tu_ctx(2, 12);
    int64_t st[2] = {40, 70}, si[2] = {3, 17};
    peft_tensor *table = tu_randn(ctx, 2, st, 1.0f, 0);
    int32_t *idv = rand_ids(51, 40, 7);
    peft_tensor *ids = tu_ids(ctx, 2, si, idv);
    for (int d = 0; d < 2; d++) {
        peft_tensor *th, *t32, *o, *o32;
        TU_OK(ctx, peft_tensor_convert(table, d ? PEFT_DTYPE_BF16 : PEFT_DTYPE_F16, &th));
        TU_OK(ctx, peft_tensor_convert(th, PEFT_DTYPE_F32, &t32)); /* the same rounded values */
        TU_OK(ctx, peft_embedding(ctx, th, ids, &o));
        TU_OK(ctx, peft_embedding(ctx, t32, ids, &o32));
        ck_assert_mem_eq(peft_tensor_data(o), peft_tensor_data(o32), 51 * 70 * sizeof(float));
        peft_graph_release(ctx);
        peft_tensor_destroy(th), peft_tensor_destroy(t32);
    }
    free(idv);
    peft_tensor_destroy(table), peft_tensor_destroy(ids);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_row_strided_table)
{
    /* a column slice of a wider matrix: rows are strided but contiguous */
    peft_ctx *ctx = tu_ctx(1, 13);
    int64_t sw[2] = {6, 9}, si[1] = {5};
    peft_tensor *wide = tu_randn(ctx, 2, sw, 1.0f, 0);
    const int32_t idv[5] = {5, 0, 2, 2, 4};
    peft_tensor *ids = tu_ids(ctx, 1, si, idv);
    peft_tensor *table, *o;
    TU_OK(ctx, peft_slice(ctx, wide, 1, 2, 4, &table));
    TU_OK(ctx, peft_embedding(ctx, table, ids, &o));
    const float *W = peft_tensor_data(wide), *O = peft_tensor_data(o);
    for (int n = 0; n < 5; n++)
        for (int c = 0; c < 4; c++) ck_assert_float_eq(O[n * 4 + c], W[idv[n] * 9 + 2 + c]);
    peft_graph_release(ctx);
    peft_tensor_destroy(wide), peft_tensor_destroy(ids);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_embedding_shapes)
{
    peft_ctx *ctx = tu_ctx(2, 14);
    const int64_t cases[][4] = {{5, 3, 2, 4}, {1, 7, 1, 3}, {11, 1, 3, 5}, {9, 17, 2, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int64_t st[2] = {cases[c][0], cases[c][1]}, si[2] = {cases[c][2], cases[c][3]};
        peft_tensor *table = tu_randn(ctx, 2, st, 1.0f, 1);
        int32_t *idv = rand_ids(si[0] * si[1], st[0], 200 + c);
        peft_tensor *ids = tu_ids(ctx, 2, si, idv);
        tu_gradcheck(ctx, "embedding", fwd_embedding, &table, 1, ids, NULL);
        free(idv);
        peft_tensor_destroy(table), peft_tensor_destroy(ids);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_sparse_and_duplicates)
{
    peft_ctx *ctx = tu_ctx(1, 15);
    const int64_t V = 10, C = 4;
    int64_t st[2] = {V, C}, si[1] = {6};
    peft_tensor *table = tu_randn(ctx, 2, st, 1.0f, 1);
    const int32_t idv[6] = {3, 7, 3, 0, 3, 7};
    peft_tensor *ids = tu_ids(ctx, 1, si, idv);
    float dout[6 * 4];
    for (int i = 0; i < 24; i++) dout[i] = 0.25f * (float)(i + 1);
    peft_tensor *o;
    TU_OK(ctx, peft_embedding(ctx, table, ids, &o));
    ck_assert_int_eq(peft_tensor_requires_grad(o), 1);
    TU_OK(ctx, peft__backward_seeded(ctx, o, dout));
    const float *g = peft_tensor_grad(table);
    for (int64_t v = 0; v < V; v++) {
        for (int64_t c = 0; c < C; c++) {
            float want = 0.0f;
            for (int n = 0; n < 6; n++)
                if (idv[n] == v) want += dout[n * C + c];
            /* unused rows stay exactly zero; used rows sum their dout rows in order */
            ck_assert_float_eq(g[v * C + c], want);
        }
    }
    /* backward accumulates: a second pass doubles it */
    float first[40];
    memcpy(first, g, sizeof first);
    TU_OK(ctx, peft_embedding(ctx, table, ids, &o));
    TU_OK(ctx, peft__backward_seeded(ctx, o, dout));
    for (int i = 0; i < 40; i++) ck_assert_float_eq(g[i], 2.0f * first[i]);
    peft_tensor_destroy(table), peft_tensor_destroy(ids);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_threads_identical)
{
    /* many duplicates of a few ids, wide rows split across threads */
    const int64_t V = 30, C = 300, N = 500;
    float *grads[2];
    int32_t *idv = rand_ids(N, 5, 16); /* only ids 0..4 used */
    for (int t = 0; t < 2; t++) {
        peft_ctx *ctx = tu_ctx(t + 1, 17);
        int64_t st[2] = {V, C}, si[1] = {N};
        peft_tensor *table = tu_randn(ctx, 2, st, 1.0f, 1);
        peft_tensor *ids = tu_ids(ctx, 1, si, idv);
        float *dout = malloc((size_t)(N * C) * sizeof *dout);
        uint64_t s = 99;
        for (int64_t i = 0; i < N * C; i++) dout[i] = (float)((double)(peft__splitmix64(&s) >> 11) * 0x1.0p-53 - 0.5);
        peft_tensor *o;
        TU_OK(ctx, peft_embedding(ctx, table, ids, &o));
        TU_OK(ctx, peft__backward_seeded(ctx, o, dout));
        grads[t] = malloc((size_t)(V * C) * sizeof(float));
        memcpy(grads[t], peft_tensor_grad(table), (size_t)(V * C) * sizeof(float));
        for (int64_t i = 5 * C; i < V * C; i++) ck_assert_float_eq(grads[t][i], 0.0f);
        free(dout);
        peft_tensor_destroy(table), peft_tensor_destroy(ids);
        peft_ctx_destroy(ctx);
    }
    ck_assert_mem_eq(grads[0], grads[1], (size_t)(V * C) * sizeof(float));
    free(grads[0]), free(grads[1]), free(idv);
}
END_TEST

START_TEST(api_embedding_errors)
{
    peft_ctx *ctx = tu_ctx(1, 18);
    int64_t st[2] = {10, 4}, s1[1] = {10}, si[2] = {2, 3}, s4[4] = {1, 1, 2, 3}, sq[2] = {2, 64};
    peft_tensor *table = tu_randn(ctx, 2, st, 1.0f, 0), *vec = tu_randn(ctx, 1, s1, 1.0f, 0);
    const int32_t good[6] = {0, 1, 2, 3, 4, 9}, bad_hi[6] = {0, 1, 2, 3, 10, 5}, bad_lo[6] = {0, -1, 2, 3, 4, 5};
    peft_tensor *ids = tu_ids(ctx, 2, si, good), *hi = tu_ids(ctx, 2, si, bad_hi), *lo = tu_ids(ctx, 2, si, bad_lo);
    int32_t z[6] = {0};
    peft_tensor *ids4 = tu_ids(ctx, 4, s4, z);
    peft_tensor *fids = tu_randn(ctx, 2, si, 1.0f, 0), *o = NULL, *q = NULL, *tr;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_NF4, 2, sq, &q));

    ck_assert_int_eq(peft_embedding(NULL, table, ids, &o), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, table, ids, NULL), PEFT_ERR_INVALID_ARG, "peft_embedding: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, NULL, ids, &o), PEFT_ERR_INVALID_ARG, "peft_embedding: table is NULL");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, table, NULL, &o), PEFT_ERR_INVALID_ARG, "ids is NULL");
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, table, hi, &o), PEFT_ERR_INVALID_ARG,
                   "ids[4] = 10 is out of range [0, 10)");
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, table, lo, &o), PEFT_ERR_INVALID_ARG, "ids[1] = -1");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, table, fids, &o), PEFT_ERR_DTYPE, "ids are f32, expected i32");
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, vec, ids, &o), PEFT_ERR_SHAPE, "table [10] must be 2-D");
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, table, ids4, &o), PEFT_ERR_SHAPE, "too many dims");
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, q, ids, &o), PEFT_ERR_DTYPE, "table dtype");
    TU_OK(ctx, peft_transpose(ctx, ids, 0, 1, &tr));
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, table, tr, &o), PEFT_ERR_INVALID_ARG, "ids [3, 2] is not contiguous");
    peft_graph_release(ctx);
    peft_ctx *other = tu_ctx(1, 1);
    peft_tensor *ids_other = tu_ids(other, 2, si, good);
    TU_EXPECT_FAIL(ctx, peft_embedding(ctx, table, ids_other, &o), PEFT_ERR_INVALID_ARG, "another context");
    peft_tensor_destroy(ids_other);
    peft_ctx_destroy(other);

    peft_tensor_destroy(table), peft_tensor_destroy(vec), peft_tensor_destroy(ids), peft_tensor_destroy(hi);
    peft_tensor_destroy(lo), peft_tensor_destroy(ids4), peft_tensor_destroy(fids), peft_tensor_destroy(q);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *embedding_suite(void)
{
    Suite *s = suite_create("embedding");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_lookup);
    tcase_add_test(tc, numerics_half_table);
    tcase_add_test(tc, numerics_row_strided_table);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_embedding_shapes);
    tcase_add_test(tc, grad_sparse_and_duplicates);
    tcase_add_test(tc, grad_threads_identical);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_embedding_errors);
    suite_add_tcase(s, tc);
    return s;
}
