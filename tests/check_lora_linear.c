/* The fused LoRA projection against finite differences and against the
 * composition of plain ops. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/testutil.h"

typedef struct ll_arg {
    float scale;
    int use_xl;
} ll_arg;

/* in: x, w, bias, A, B, xl */
static peft_status fwd(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    ll_arg *a = arg;
    return peft_lora_linear(ctx, in[0], a->use_xl ? in[5] : NULL, in[1], in[2], in[3], in[4], a->scale, out);
}

static peft_status composed(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    ll_arg *a = arg;
    peft_tensor *base, *u, *v, *us;
    peft_status st = peft_linear(ctx, in[0], in[1], in[2], &base);
    if (st == PEFT_OK) st = peft_linear(ctx, a->use_xl ? in[5] : in[0], in[3], NULL, &u);
    if (st == PEFT_OK) st = peft_scale(ctx, u, a->scale, &us);
    if (st == PEFT_OK) st = peft_linear(ctx, us, in[4], NULL, &v);
    if (st == PEFT_OK) st = peft_add(ctx, base, v, out);
    return st;
}

START_TEST(grad_lora_linear)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    const int64_t dims[][4] = {{1, 3, 4, 1}, {5, 7, 6, 2}, {9, 16, 12, 3}}; /* N, in, out, r */
    for (int c = 0; c < 3; c++)
        for (int variant = 0; variant < 2; variant++) {
            int64_t N = dims[c][0], I = dims[c][1], O = dims[c][2], R = dims[c][3];
            int64_t sx[2] = {N, I}, sw[2] = {O, I}, sa[2] = {R, I}, sb[2] = {O, R};
            peft_tensor *in[6] = {tu_randn(ctx, 2, sx, 1, 1), tu_randn(ctx, 2, sw, 0.5f, variant), tu_randn(ctx, 1, &O, 0.5f, 1),
                                  tu_randn(ctx, 2, sa, 0.5f, 1), tu_randn(ctx, 2, sb, 0.5f, 1), tu_randn(ctx, 2, sx, 1, 1)};
            ll_arg a = {variant ? 2.0f : 0.75f, variant};
            tu_gradcheck(ctx, "lora_linear", fwd, in, 6, &a, NULL);
            /* equals the composition */
            peft_tensor *y1, *y2;
            peft_set_grad_enabled(ctx, 0);
            TU_OK(ctx, fwd(ctx, in, &a, &y1));
            TU_OK(ctx, composed(ctx, in, &a, &y2));
            ck_assert_double_lt(tu_max_rel_err(peft_tensor_data(y1), peft_tensor_data(y2), (size_t)(N * O)), 1e-5);
            peft_graph_release(ctx);
            peft_set_grad_enabled(ctx, 1);
            for (int i = 0; i < 6; i++) peft_tensor_destroy(in[i]);
        }
    /* the frozen base weight never gets a gradient */
    int64_t sx[2] = {4, 8}, sw[2] = {6, 8}, sa[2] = {2, 8}, sb[2] = {6, 2};
    peft_tensor *x = tu_randn(ctx, 2, sx, 1, 0), *w = tu_randn(ctx, 2, sw, 1, 0), *A = tu_randn(ctx, 2, sa, 1, 1),
                *B = tu_randn(ctx, 2, sb, 1, 1), *y, *l;
    TU_OK(ctx, peft_lora_linear(ctx, x, NULL, w, NULL, A, B, 1.0f, &y));
    TU_OK(ctx, peft_sum(ctx, y, &l));
    TU_OK(ctx, peft_backward(ctx, l, NULL));
    ck_assert_ptr_null(peft_tensor_grad(w));
    ck_assert_ptr_null(peft_tensor_grad(x));
    /* shape errors */
    peft_tensor *o = NULL;
    TU_EXPECT_FAIL(ctx, peft_lora_linear(ctx, x, NULL, w, NULL, B, A, 1.0f, &o), PEFT_ERR_SHAPE, "do not fit");
    ck_assert_ptr_null(o);
    peft_tensor_destroy(x), peft_tensor_destroy(w), peft_tensor_destroy(A), peft_tensor_destroy(B);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *lora_linear_suite(void)
{
    Suite *s = suite_create("lora_linear");
    TCase *tc = tcase_create("grad");
    tcase_add_test(tc, grad_lora_linear);
    suite_add_tcase(s, tc);
    return s;
}
