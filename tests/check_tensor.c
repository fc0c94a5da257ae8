/* Tensors: creation, shapes and errors, copies with dtype conversion, the
 * f16/bf16 conversions (exhaustive round trip), seeded init, gradients. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

START_TEST(api_create_and_shape)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    int64_t s[3] = {2, 3, 5};
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 3, s, &t));
    ck_assert_int_eq(peft_tensor_ndim(t), 3);
    ck_assert_int_eq(peft_tensor_dim(t, 0), 2);
    ck_assert_int_eq(peft_tensor_dim(t, -1), 5);
    ck_assert_int_eq(peft_tensor_dim(t, 3), 0);
    ck_assert_int_eq(peft_tensor_stride(t, 0), 15);
    ck_assert_int_eq(peft_tensor_stride(t, 2), 1);
    ck_assert_int_eq(peft_tensor_numel(t), 30);
    ck_assert_uint_eq(peft_tensor_nbytes(t), 120);
    ck_assert(peft_tensor_is_contiguous(t));
    const float *d = peft_tensor_data(t);
    for (int i = 0; i < 30; i++) ck_assert(d[i] == 0.0f); /* zero-filled */
    ck_assert_ptr_null(peft_tensor_grad(t));
    ck_assert_str_eq(peft_tensor_name(t), "");
    TU_OK(ctx, peft_tensor_set_name(t, "h.0.attn.c_attn.weight"));
    ck_assert_str_eq(peft_tensor_name(t), "h.0.attn.c_attn.weight");
    peft_tensor_destroy(t);
    peft_tensor_destroy(NULL);

    int64_t bad0[1] = {0}, big[4] = {1LL << 40, 1LL << 40, 1, 1}, five[5] = {1, 1, 1, 1, 1};
    TU_EXPECT_FAIL(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 1, bad0, &t), PEFT_ERR_INVALID_ARG, "dim 0 is 0");
    ck_assert_ptr_null(t);
    TU_EXPECT_FAIL(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 5, five, &t), PEFT_ERR_INVALID_ARG, "ndim 5");
    TU_EXPECT_FAIL(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 0, five, &t), PEFT_ERR_INVALID_ARG, "ndim 0");
    TU_EXPECT_FAIL(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 4, big, &t), PEFT_ERR_INVALID_ARG, "overflow");
    TU_EXPECT_FAIL(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 1, NULL, &t), PEFT_ERR_INVALID_ARG, "shape is NULL");
    TU_EXPECT_FAIL(ctx, peft_tensor_create(ctx, (peft_dtype)77, 1, s, &t), PEFT_ERR_DTYPE, "unknown dtype 77");
    TU_EXPECT_FAIL(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 1, s, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    ck_assert_int_eq(peft_tensor_create(NULL, PEFT_DTYPE_F32, 1, s, &t), PEFT_ERR_INVALID_ARG);
    /* blocked dtypes need whole blocks in the last dim */
    int64_t q[2] = {4, 48};
    TU_EXPECT_FAIL(ctx, peft_tensor_create(ctx, PEFT_DTYPE_Q8_0, 2, q, &t), PEFT_ERR_SHAPE, "multiple of the q8_0 block");
    q[1] = 64;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_Q8_0, 2, q, &t));
    ck_assert_uint_eq(peft_tensor_nbytes(t), 4 * 2 * 34);
    peft_tensor_destroy(t);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_dtype_table)
{
    ck_assert_str_eq(peft_dtype_name(PEFT_DTYPE_F32), "f32");
    ck_assert_str_eq(peft_dtype_name(PEFT_DTYPE_BF16), "bf16");
    ck_assert_str_eq(peft_dtype_name(PEFT_DTYPE_NF4), "nf4");
    ck_assert_str_eq(peft_dtype_name((peft_dtype)99), "?");
    ck_assert_uint_eq(peft_dtype_block_elems(PEFT_DTYPE_Q8_0), 32);
    ck_assert_uint_eq(peft_dtype_block_bytes(PEFT_DTYPE_Q8_0), 34);
    ck_assert_uint_eq(peft_dtype_block_bytes(PEFT_DTYPE_F16), 2);
    ck_assert_uint_eq(peft_dtype_block_elems((peft_dtype)99), 0);
}
END_TEST

START_TEST(api_wrap_and_copies)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    float buf[6] = {1, 2, 3, 4, 5, 6};
    int64_t s[2] = {2, 3};
    peft_tensor *t = NULL;
    TU_EXPECT_FAIL(ctx, peft_tensor_wrap(ctx, PEFT_DTYPE_F32, 2, s, NULL, &t), PEFT_ERR_INVALID_ARG, "data is NULL");
    TU_OK(ctx, peft_tensor_wrap(ctx, PEFT_DTYPE_F32, 2, s, buf, &t));
    ck_assert_ptr_eq(peft_tensor_data(t), buf);
    float out[6];
    TU_OK(ctx, peft_tensor_get_f32(t, out, 6));
    ck_assert(memcmp(out, buf, sizeof buf) == 0);
    TU_EXPECT_FAIL(ctx, peft_tensor_get_f32(t, out, 5), PEFT_ERR_SHAPE, "buffer has 5 elements, tensor has 6");
    /* through a transposed view: row-major order of the view */
    peft_tensor *v;
    TU_OK(ctx, peft_transpose(ctx, t, 0, 1, &v));
    TU_OK(ctx, peft_tensor_get_f32(v, out, 6));
    const float expect[6] = {1, 4, 2, 5, 3, 6};
    ck_assert(memcmp(out, expect, sizeof out) == 0);
    const float in[6] = {10, 40, 20, 50, 30, 60};
    TU_OK(ctx, peft_tensor_set_f32(v, in, 6));
    ck_assert(buf[1] == 20 && buf[3] == 40);
    peft_graph_release(ctx);
    /* conversions on copy */
    uint16_t h[6];
    TU_OK(ctx, peft_tensor_copy_out(t, h, PEFT_DTYPE_BF16, 6));
    ck_assert_uint_eq(h[0], 0x4120); /* 10.0 in bf16 */
    TU_OK(ctx, peft_tensor_copy_out(t, h, PEFT_DTYPE_F16, 6));
    ck_assert_uint_eq(h[0], 0x4900); /* 10.0 in f16 */
    int32_t ids[6] = {0};
    TU_EXPECT_FAIL(ctx, peft_tensor_copy_out(t, ids, PEFT_DTYPE_I32, 6), PEFT_ERR_DTYPE, "f32 and i32");
    float item;
    TU_EXPECT_FAIL(ctx, peft_tensor_item(t, &item), PEFT_ERR_SHAPE, "more than one element");
    TU_OK(ctx, peft_tensor_fill(t, 2.5f));
    ck_assert(buf[5] == 2.5f);
    peft_tensor_destroy(t);
    ck_assert(buf[0] == 2.5f); /* wrapped memory is not freed or touched */

    int32_t idv[4] = {3, -1, 7, 2}, back[4];
    int64_t s4[1] = {4};
    peft_tensor *it = tu_ids(ctx, 1, s4, idv);
    TU_OK(ctx, peft_tensor_copy_out(it, back, PEFT_DTYPE_I32, 4));
    ck_assert(memcmp(idv, back, sizeof back) == 0);
    TU_EXPECT_FAIL(ctx, peft_tensor_set_requires_grad(it, 1), PEFT_ERR_DTYPE, "only f32 tensors train");
    peft_tensor_destroy(it);
    peft_ctx_destroy(ctx);
}
END_TEST

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

START_TEST(numerics_half_conversions)
{
    /* known encodings */
    ck_assert_uint_eq(peft__f32_to_f16(1.0f), 0x3C00);
    ck_assert_uint_eq(peft__f32_to_f16(-2.0f), 0xC000);
    ck_assert_uint_eq(peft__f32_to_f16(65504.0f), 0x7BFF);
    ck_assert_uint_eq(peft__f32_to_f16(65519.0f), 0x7BFF);
    ck_assert_uint_eq(peft__f32_to_f16(65520.0f), 0x7C00); /* rounds to inf */
    ck_assert_uint_eq(peft__f32_to_f16(0x1.0p-24f), 0x0001); /* smallest subnormal */
    ck_assert_uint_eq(peft__f32_to_f16(0x1.0p-25f), 0x0000); /* tie to even: 0 */
    ck_assert_uint_eq(peft__f32_to_f16(0x1.8p-25f), 0x0001);
    ck_assert_uint_eq(peft__f32_to_f16(0x1.ffcp-15f), 0x0400); /* subnormal rounding carries into normal */
    ck_assert_uint_eq(peft__f32_to_f16(1.0f + 0x1.0p-11f), 0x3C00); /* tie to even (down) */
    ck_assert_uint_eq(peft__f32_to_f16(1.0f + 0x1.8p-10f), 0x3C02); /* tie to even (up) */
    ck_assert_uint_eq(peft__f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(peft__f32_to_f16(INFINITY), 0x7C00);
    ck_assert_uint_eq(peft__f32_to_f16(NAN) & 0x7C00, 0x7C00);
    ck_assert_uint_ne(peft__f32_to_f16(NAN) & 0x03FF, 0);
    ck_assert_uint_eq(peft__f32_to_bf16(1.0f), 0x3F80);
    ck_assert_uint_eq(peft__f32_to_bf16(1.0f + 0x1.0p-8f), 0x3F80);  /* tie to even */
    ck_assert_uint_eq(peft__f32_to_bf16(1.0f + 0x1.8p-7f), 0x3F82); /* tie to even (up) */
    ck_assert(isnan(peft__bf16_to_f32(peft__f32_to_bf16(NAN))));
    /* every f16 value survives f16 -> f32 -> f16; every bf16 likewise */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = peft__f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        ck_assert_msg(peft__f32_to_f16(f) == h, "f16 0x%04x -> %a -> 0x%04x", h, f, peft__f32_to_f16(f));
        float g = peft__bf16_to_f32((uint16_t)h);
        if (!isnan(g)) ck_assert_uint_eq(peft__f32_to_bf16(g), h);
    }
    /* f16 -> f32 values */
    ck_assert(peft__f16_to_f32(0x0001) == 0x1.0p-24f);
    ck_assert(peft__f16_to_f32(0x3555) == 0x1.554p-2f);
    ck_assert_uint_eq(bits(peft__f16_to_f32(0x8000)), 0x80000000u);
    /* f32 -> f16 picks the nearest representable value for random inputs */
    uint64_t s = 99;
    for (int i = 0; i < 100000; i++) {
        float x = (float)(((double)(peft__splitmix64(&s) >> 11) * 0x1.0p-53 - 0.5) * 1000.0);
        uint16_t h = peft__f32_to_f16(x);
        double e = fabs((double)peft__f16_to_f32(h) - x);
        double e1 = fabs((double)peft__f16_to_f32((uint16_t)(h + 1)) - x);
        double e0 = fabs((double)peft__f16_to_f32((uint16_t)(h - 1)) - x);
        ck_assert(e <= e1 && e <= e0);
    }
}
END_TEST

START_TEST(numerics_convert_tensor)
{
    peft_ctx *ctx = tu_ctx(1, 3);
    int64_t s[2] = {7, 9};
    peft_tensor *t = tu_randn(ctx, 2, s, 3.0f, 0), *h = NULL, *b = NULL, *back = NULL;
    TU_OK(ctx, peft_tensor_convert(t, PEFT_DTYPE_F16, &h));
    TU_OK(ctx, peft_tensor_convert(t, PEFT_DTYPE_BF16, &b));
    ck_assert_int_eq(peft_tensor_dtype(h), PEFT_DTYPE_F16);
    ck_assert_uint_eq(peft_tensor_nbytes(b), 126);
    TU_OK(ctx, peft_tensor_convert(h, PEFT_DTYPE_F32, &back));
    const float *x = peft_tensor_data(t), *y = peft_tensor_data(back);
    const uint16_t *hb = peft_tensor_data(b);
    for (int i = 0; i < 63; i++) {
        ck_assert_float_eq_tol(y[i], x[i], fabsf(x[i]) * 1e-3f + 1e-7f);
        ck_assert_uint_eq(hb[i], peft__f32_to_bf16(x[i]));
    }
    peft_tensor *q = NULL;
    TU_EXPECT_FAIL(ctx, peft_tensor_convert(t, PEFT_DTYPE_I32, &q), PEFT_ERR_DTYPE, "f32 to i32");
    TU_EXPECT_FAIL(ctx, peft_tensor_set_requires_grad(h, 1), PEFT_ERR_DTYPE, "this one is f16");
    peft_tensor_destroy(t), peft_tensor_destroy(h), peft_tensor_destroy(b), peft_tensor_destroy(back);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_init)
{
    peft_ctx *a = tu_ctx(1, 11), *b = tu_ctx(1, 11);
    int64_t s[2] = {64, 100};
    peft_tensor *ta = NULL, *tb = NULL;
    TU_OK(a, peft_tensor_create(a, PEFT_DTYPE_F32, 2, s, &ta));
    TU_OK(b, peft_tensor_create(b, PEFT_DTYPE_F32, 2, s, &tb));
    TU_OK(a, peft_tensor_init_kaiming_uniform(ta, sqrtf(5.0f), 0));
    TU_OK(b, peft_tensor_init_kaiming_uniform(tb, sqrtf(5.0f), 0));
    ck_assert(memcmp(peft_tensor_data(ta), peft_tensor_data(tb), 6400 * 4) == 0); /* same seed, same values */
    const float *x = peft_tensor_data(ta);
    float lo = 1, hi = -1;
    for (int i = 0; i < 6400; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    /* a = sqrt(5): bound 1/sqrt(fan_in) = 0.1 */
    ck_assert(lo >= -0.1f && hi <= 0.1f && lo < -0.095f && hi > 0.095f);
    TU_OK(a, peft_tensor_init_normal(ta, 1.0f, 0.5f));
    double m = 0, v = 0;
    for (int i = 0; i < 6400; i++) m += x[i];
    m /= 6400;
    for (int i = 0; i < 6400; i++) v += (x[i] - m) * (x[i] - m);
    v /= 6400;
    ck_assert_double_lt(fabs(m - 1.0), 0.03);
    ck_assert_double_lt(fabs(sqrt(v) - 0.5), 0.02);
    TU_OK(a, peft_tensor_init_uniform(ta, -2.0f, -1.0f));
    for (int i = 0; i < 6400; i++) ck_assert(x[i] >= -2.0f && x[i] < -1.0f);
    TU_EXPECT_FAIL(a, peft_tensor_init_normal(ta, 0.0f, NAN), PEFT_ERR_INVALID_ARG, "std nan");
    TU_EXPECT_FAIL(a, peft_tensor_init_uniform(ta, 1.0f, 0.0f), PEFT_ERR_INVALID_ARG, "bounds [1, 0)");
    peft_tensor_destroy(ta), peft_tensor_destroy(tb);
    peft_ctx_destroy(a), peft_ctx_destroy(b);
}
END_TEST

START_TEST(api_grad_buffers)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    int64_t s[1] = {4};
    peft_tensor *t = tu_randn(ctx, 1, s, 1.0f, 0);
    ck_assert_int_eq(peft_tensor_requires_grad(t), 0);
    TU_OK(ctx, peft_tensor_set_requires_grad(t, 1));
    ck_assert_int_eq(peft_tensor_requires_grad(t), 1);
    float *g = peft_tensor_grad(t);
    ck_assert_ptr_nonnull(g);
    g[2] = 5;
    peft_tensor_zero_grad(t);
    ck_assert(g[2] == 0.0f);
    float mine[4] = {1, 1, 1, 1};
    TU_OK(ctx, peft_tensor_set_grad_buffer(t, mine));
    ck_assert_ptr_eq(peft_tensor_grad(t), mine);
    peft_tensor_zero_grad(t);
    ck_assert(mine[3] == 0.0f);
    TU_OK(ctx, peft_tensor_set_requires_grad(t, 0));
    ck_assert_int_eq(peft_tensor_requires_grad(t), 0);
    peft_tensor *y;
    TU_OK(ctx, peft_scale(ctx, t, 2.0f, &y));
    TU_EXPECT_FAIL(ctx, peft_tensor_set_requires_grad(y, 1), PEFT_ERR_INVALID_ARG, "op outputs");
    peft_tensor_destroy(y); /* arena tensors: no-op */
    peft_graph_release(ctx);
    peft_tensor_destroy(t);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *tensor_suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_create_and_shape);
    tcase_add_test(tc, api_dtype_table);
    tcase_add_test(tc, api_wrap_and_copies);
    tcase_add_test(tc, api_grad_buffers);
    suite_add_tcase(s, tc);
    tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_half_conversions);
    tcase_add_test(tc, numerics_convert_tensor);
    tcase_add_test(tc, numerics_init);
    suite_add_tcase(s, tc);
    return s;
}
