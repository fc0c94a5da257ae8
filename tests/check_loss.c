/* peft_cross_entropy: against a double log-softmax reference and hand values,
 * ignore_index, stability, thread independence, gradients, errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

#define IGN (-100)

typedef struct ce_arg {
    peft_tensor *targets;
    int32_t ignore;
    int64_t slice_len; /* > 0: use logits[..., 1 : 1 + slice_len] (strided rows) */
} ce_arg;

static peft_status fwd_ce(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    const ce_arg *a = arg;
    peft_tensor *logits = in[0];
    if (a->slice_len > 0) {
        peft_status st = peft_slice(ctx, logits, -1, 1, a->slice_len, &logits);
        if (st != PEFT_OK) return st;
    }
    return peft_cross_entropy(ctx, logits, a->targets, a->ignore, out);
}

/* The mean of -log_softmax(x_n)[t_n] over counted rows, all in double. */
static double ce_reference(const float *x, int64_t ldx, const int32_t *t, int64_t N, int64_t V, int32_t ignore)
{
    double total = 0.0;
    int64_t count = 0;
    for (int64_t n = 0; n < N; n++) {
        if (t[n] == ignore) continue;
        const float *x_n = x + n * ldx;
        double m = -INFINITY, s = 0.0;
        for (int64_t j = 0; j < V; j++) m = fmax(m, x_n[j]);
        for (int64_t j = 0; j < V; j++) s += exp((double)x_n[j] - m);
        total += -((double)x_n[t[n]] - m - log(s));
        count++;
    }
    return count ? total / (double)count : 0.0;
}

/* Random targets in [0, V) with roughly every `ign_every`-th one ignored (0: none). */
static int32_t *rand_targets(int64_t N, int64_t V, int ign_every, uint64_t seed)
{
    int32_t *t = malloc((size_t)N * sizeof *t);
    for (int64_t n = 0; n < N; n++) {
        t[n] = (int32_t)(peft__splitmix64(&seed) % (uint64_t)V);
        if (ign_every && n % ign_every == 1) t[n] = IGN;
    }
    return t;
}

static float loss_value(peft_tensor *loss)
{
    float v = NAN;
    ck_assert_int_eq(peft_tensor_item(loss, &v), PEFT_OK);
    return v;
}

START_TEST(numerics_vs_reference)
{
    peft_ctx *ctx = tu_ctx(2, 31);
    /* {ndim, dims...(leading), V} */
    const int64_t cases[][4] = {{2, 1, 2, 0}, {2, 7, 5, 0}, {3, 3, 11, 97}, {2, 130, 1000, 0}, {3, 2, 1, 3}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int nd = (int)cases[c][0];
        int64_t shape[3] = {cases[c][1], cases[c][2], cases[c][3]};
        int64_t N = nd == 2 ? shape[0] : shape[0] * shape[1], V = shape[nd - 1];
        peft_tensor *x = tu_randn(ctx, nd, shape, 3.0f, 0);
        for (int ign = 0; ign <= 3; ign += 3) {
            int32_t *tv = rand_targets(N, V, ign, 300 + c);
            peft_tensor *t = tu_ids(ctx, nd - 1, shape, tv), *loss;
            TU_OK(ctx, peft_cross_entropy(ctx, x, t, IGN, &loss));
            ck_assert_int_eq(peft_tensor_numel(loss), 1);
            double ref = ce_reference(peft_tensor_data(x), V, tv, N, V, IGN);
            ck_assert_msg(fabs(loss_value(loss) - ref) <= 1e-6 * fmax(1.0, fabs(ref)), "case %zu: %.9g vs %.9g", c,
                          (double)loss_value(loss), ref);
            peft_graph_release(ctx);
            free(tv);
            peft_tensor_destroy(t);
        }
        peft_tensor_destroy(x);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_hand_values)
{
    peft_ctx *ctx = tu_ctx(1, 32);
    int64_t s2[2] = {1, 2}, s1[1] = {1};
    peft_tensor *x = tu_randn(ctx, 2, s2, 1.0f, 1);
    const int32_t t0 = 0;
    peft_tensor *t = tu_ids(ctx, 1, s1, &t0), *loss;
    /* logits [0, 0], target 0: ln 2; dlogits = softmax - onehot = [-1/2, 1/2] */
    const float zeros[2] = {0.0f, 0.0f};
    TU_OK(ctx, peft_tensor_set_f32(x, zeros, 2));
    TU_OK(ctx, peft_cross_entropy(ctx, x, t, IGN, &loss));
    float v;
    TU_OK(ctx, peft_backward(ctx, loss, &v));
    ck_assert_float_eq_tol(v, (float)M_LN2, 1e-7f);
    ck_assert_float_eq_tol(peft_tensor_grad(x)[0], -0.5f, 1e-7f);
    ck_assert_float_eq_tol(peft_tensor_grad(x)[1], 0.5f, 1e-7f);

    /* huge logits stay finite: [1000, 0] target 1 -> 1000; [1000, 1000] -> ln 2 */
    const float big[2] = {1000.0f, 0.0f}, same[2] = {1000.0f, 1000.0f};
    const int32_t t1 = 1;
    peft_tensor *tt1 = tu_ids(ctx, 1, s1, &t1);
    TU_OK(ctx, peft_tensor_set_f32(x, big, 2));
    peft_tensor_zero_grad(x);
    TU_OK(ctx, peft_cross_entropy(ctx, x, tt1, IGN, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, &v));
    ck_assert_float_eq_tol(v, 1000.0f, 1e-3f);
    ck_assert_float_eq_tol(peft_tensor_grad(x)[0], 1.0f, 1e-6f);
    ck_assert_float_eq_tol(peft_tensor_grad(x)[1], -1.0f, 1e-6f);
    TU_OK(ctx, peft_tensor_set_f32(x, same, 2));
    TU_OK(ctx, peft_cross_entropy(ctx, x, t, IGN, &loss));
    TU_OK(ctx, peft_tensor_item(loss, &v));
    ck_assert_float_eq_tol(v, (float)M_LN2, 1e-6f);
    peft_graph_release(ctx);

    /* a 1-D logits row takes a single target; V = 1 is always a zero loss */
    int64_t s3[1] = {3};
    peft_tensor *row = tu_randn(ctx, 1, s3, 1.0f, 0), *one;
    const float r3[3] = {1.0f, 2.0f, 3.0f};
    TU_OK(ctx, peft_tensor_set_f32(row, r3, 3));
    TU_OK(ctx, peft_cross_entropy(ctx, row, tt1, IGN, &loss));
    double want = log(exp(1.0) + exp(2.0) + exp(3.0)) - 2.0;
    ck_assert_float_eq_tol(loss_value(loss), (float)want, 1e-6f);
    TU_OK(ctx, peft_cross_entropy(ctx, row, tt1, 1, &loss)); /* ignore_index may be a valid class */
    ck_assert_float_eq(loss_value(loss), 0.0f);
    int64_t s41[2] = {4, 1}, s4[1] = {4};
    const int32_t z4[4] = {0, 0, 0, 0};
    peft_tensor *t4 = tu_ids(ctx, 1, s4, z4);
    one = tu_randn(ctx, 2, s41, 5.0f, 0);
    TU_OK(ctx, peft_cross_entropy(ctx, one, t4, IGN, &loss));
    ck_assert_float_eq(loss_value(loss), 0.0f);
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(t), peft_tensor_destroy(tt1), peft_tensor_destroy(row);
    peft_tensor_destroy(t4), peft_tensor_destroy(one);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_ignore_index)
{
    peft_ctx *ctx = tu_ctx(1, 33);
    int64_t sx[2] = {5, 6}, st[1] = {5};
    peft_tensor *x = tu_randn(ctx, 2, sx, 2.0f, 1);
    /* rows 1 and 3 ignored (ignore_index 2, a valid class here) */
    const int32_t tv[5] = {0, 2, 5, 2, 1};
    peft_tensor *t = tu_ids(ctx, 1, st, tv), *loss;
    TU_OK(ctx, peft_cross_entropy(ctx, x, t, 2, &loss));
    double ref = ce_reference(peft_tensor_data(x), 6, tv, 5, 6, 2);
    float v;
    TU_OK(ctx, peft_backward(ctx, loss, &v));
    ck_assert_double_lt(fabs(v - ref), 1e-6);
    const float *g = peft_tensor_grad(x), *X = peft_tensor_data(x);
    for (int n = 0; n < 5; n++) {
        double m = -INFINITY, s = 0.0;
        for (int j = 0; j < 6; j++) m = fmax(m, X[n * 6 + j]);
        for (int j = 0; j < 6; j++) s += exp(X[n * 6 + j] - m);
        for (int j = 0; j < 6; j++) {
            double want = tv[n] == 2 ? 0.0 : (exp(X[n * 6 + j] - m) / s - (j == tv[n])) / 3.0;
            if (tv[n] == 2) ck_assert_float_eq(g[n * 6 + j], 0.0f); /* exactly untouched */
            else ck_assert_double_lt(fabs(g[n * 6 + j] - want), 1e-6);
        }
    }

    /* all ignored: loss 0 and a zero gradient */
    const int32_t all[5] = {IGN, IGN, IGN, IGN, IGN};
    peft_tensor *ta = tu_ids(ctx, 1, st, all);
    peft_tensor_zero_grad(x);
    TU_OK(ctx, peft_cross_entropy(ctx, x, ta, IGN, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, &v));
    ck_assert_float_eq(v, 0.0f);
    for (int i = 0; i < 30; i++) ck_assert_float_eq(g[i], 0.0f);
    peft_tensor_destroy(x), peft_tensor_destroy(t), peft_tensor_destroy(ta);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_threads_identical)
{
    const int64_t N = 301, V = 517;
    int64_t sx[2] = {N, V};
    int32_t *tv = rand_targets(N, V, 5, 34);
    float val[2], *grad[2];
    for (int k = 0; k < 2; k++) {
        peft_ctx *ctx = tu_ctx(k + 1, 35);
        peft_tensor *x = tu_randn(ctx, 2, sx, 4.0f, 1);
        peft_tensor *t = tu_ids(ctx, 1, sx, tv), *loss;
        TU_OK(ctx, peft_cross_entropy(ctx, x, t, IGN, &loss));
        TU_OK(ctx, peft_backward(ctx, loss, &val[k]));
        grad[k] = malloc((size_t)(N * V) * sizeof(float));
        memcpy(grad[k], peft_tensor_grad(x), (size_t)(N * V) * sizeof(float));
        peft_tensor_destroy(x), peft_tensor_destroy(t);
        peft_ctx_destroy(ctx);
    }
    ck_assert_mem_eq(&val[0], &val[1], sizeof(float));
    ck_assert_mem_eq(grad[0], grad[1], (size_t)(N * V) * sizeof(float));
    free(grad[0]), free(grad[1]), free(tv);
}
END_TEST

START_TEST(grad_ce_shapes)
{
    peft_ctx *ctx = tu_ctx(2, 36);
    /* {ndim, dims..., ignore every k-th (0: none), slice_len} */
    const int64_t cases[][6] = {{2, 3, 5, 0, 0, 0}, {3, 2, 3, 7, 3, 0}, {2, 4, 1, 0, 0, 0}, {3, 1, 1, 33, 0, 0},
                                {2, 5, 9, 2, 6, 0}, {1, 6, 0, 0, 0, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int nd = (int)cases[c][0];
        int64_t shape[3] = {cases[c][1], cases[c][2], cases[c][3]};
        int ign = (int)cases[c][nd + 1];
        int64_t slice_len = cases[c][nd + 2];
        int64_t N = 1, V = slice_len ? slice_len : shape[nd - 1];
        for (int i = 0; i < nd - 1; i++) N *= shape[i];
        peft_tensor *x = tu_randn(ctx, nd, shape, 1.5f, 1);
        int32_t *tv = rand_targets(N, V, ign, 400 + c);
        int64_t one = 1;
        peft_tensor *t = nd == 1 ? tu_ids(ctx, 1, &one, tv) : tu_ids(ctx, nd - 1, shape, tv);
        ce_arg a = {t, IGN, slice_len};
        tu_gradcheck(ctx, "cross_entropy", fwd_ce, &x, 1, &a, NULL);
        if (slice_len) { /* the sliced-off columns get no gradient */
            const float *g = peft_tensor_grad(x);
            for (int64_t n = 0; n < N; n++) {
                ck_assert_float_eq(g[n * shape[nd - 1]], 0.0f);
                for (int64_t j = 1 + slice_len; j < shape[nd - 1]; j++) ck_assert_float_eq(g[n * shape[nd - 1] + j], 0.0f);
            }
        }
        free(tv);
        peft_tensor_destroy(x), peft_tensor_destroy(t);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_scaled_upstream)
{
    /* backward scales by dloss: d(3 * loss) = 3 * d(loss) */
    peft_ctx *ctx = tu_ctx(1, 37);
    int64_t sx[2] = {4, 7}, st[1] = {4};
    peft_tensor *x = tu_randn(ctx, 2, sx, 1.0f, 1);
    const int32_t tv[4] = {6, 0, 3, IGN};
    peft_tensor *t = tu_ids(ctx, 1, st, tv), *loss, *scaled;
    TU_OK(ctx, peft_cross_entropy(ctx, x, t, IGN, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    float g1[28];
    memcpy(g1, peft_tensor_grad(x), sizeof g1);
    peft_tensor_zero_grad(x);
    TU_OK(ctx, peft_cross_entropy(ctx, x, t, IGN, &loss));
    TU_OK(ctx, peft_scale(ctx, loss, 3.0f, &scaled));
    TU_OK(ctx, peft_backward(ctx, scaled, NULL));
    for (int i = 0; i < 28; i++) ck_assert_float_eq_tol(peft_tensor_grad(x)[i], 3.0f * g1[i], 1e-6f);
    peft_tensor_destroy(x), peft_tensor_destroy(t);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_ce_errors)
{
    peft_ctx *ctx = tu_ctx(1, 38);
    int64_t sx[3] = {2, 3, 5}, st[2] = {2, 3}, sbad[2] = {3, 2}, s6[1] = {6};
    peft_tensor *x = tu_randn(ctx, 3, sx, 1.0f, 0), *o = NULL, *tr;
    const int32_t good[6] = {0, 1, 2, 3, 4, IGN}, bad[6] = {0, 1, 2, 3, 5, 0}, neg[6] = {0, -1, 2, 3, 4, 0};
    peft_tensor *t = tu_ids(ctx, 2, st, good), *tb = tu_ids(ctx, 2, st, bad), *tn = tu_ids(ctx, 2, st, neg);
    peft_tensor *tflat = tu_ids(ctx, 1, s6, good), *tswap = tu_ids(ctx, 2, sbad, good);
    peft_tensor *tf = tu_randn(ctx, 2, st, 1.0f, 0);
    ck_assert_int_eq(peft_cross_entropy(NULL, x, t, IGN, &o), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, x, t, IGN, NULL), PEFT_ERR_INVALID_ARG,
                   "peft_cross_entropy: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, NULL, t, IGN, &o), PEFT_ERR_INVALID_ARG, "logits is NULL");
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, x, NULL, IGN, &o), PEFT_ERR_INVALID_ARG, "targets is NULL");
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, x, tb, IGN, &o), PEFT_ERR_INVALID_ARG,
                   "targets[4] = 5 is out of range [0, 5) and is not ignore_index (-100)");
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, x, tn, IGN, &o), PEFT_ERR_INVALID_ARG, "targets[1] = -1");
    /* the same value is fine once it is the ignore_index */
    TU_OK(ctx, peft_cross_entropy(ctx, x, tn, -1, &o));
    o = NULL;
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, x, tflat, IGN, &o), PEFT_ERR_SHAPE,
                   "targets [6] do not match the leading dims of logits [2, 3, 5]");
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, x, tswap, IGN, &o), PEFT_ERR_SHAPE, "targets [3, 2] do not match");
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, x, tf, IGN, &o), PEFT_ERR_DTYPE, "targets are f32, expected i32");
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, t, t, IGN, &o), PEFT_ERR_DTYPE, "logits is i32, expected f32");
    ck_assert_ptr_null(o);
    TU_OK(ctx, peft_transpose(ctx, tswap, 0, 1, &tr));
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, x, tr, IGN, &o), PEFT_ERR_INVALID_ARG, "targets [2, 3] is not contiguous");
    TU_OK(ctx, peft_transpose(ctx, x, 1, 2, &tr)); /* [2, 5, 3]: rows are not contiguous */
    int64_t s25[2] = {2, 5};
    int32_t z10[10] = {0};
    peft_tensor *t25 = tu_ids(ctx, 2, s25, z10);
    TU_EXPECT_FAIL(ctx, peft_cross_entropy(ctx, tr, t25, IGN, &o), PEFT_ERR_INVALID_ARG, "needs contiguous rows");
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(t), peft_tensor_destroy(tb), peft_tensor_destroy(tn);
    peft_tensor_destroy(tflat), peft_tensor_destroy(tswap), peft_tensor_destroy(tf), peft_tensor_destroy(t25);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *loss_suite(void)
{
    Suite *s = suite_create("loss");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_vs_reference);
    tcase_add_test(tc, numerics_hand_values);
    tcase_add_test(tc, numerics_ignore_index);
    tcase_add_test(tc, numerics_threads_identical);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_ce_shapes);
    tcase_add_test(tc, grad_scaled_upstream);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_ce_errors);
    suite_add_tcase(s, tc);
    return s;
}
