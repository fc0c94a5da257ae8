/* Memory of a step: intermediate gradients are recycled during backward
 * (without changing a bit of the result), a no-grad forward holds one block's
 * scratch, and destroying an optimizer does not stack a gradient copy on top
 * of its moments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/testutil.h"

/* A tiny model with every parameter trainable. */
static peft_model *tiny_model(peft_ctx *ctx, peft_arch arch, int64_t n_layer)
{
    peft_model_config c = peft_model_config_default(arch);
    c.vocab_size = 97;
    c.n_ctx = 32;
    c.d_model = 48;
    c.n_layer = n_layer;
    c.n_head = 4;
    c.n_kv_head = arch == PEFT_ARCH_LLAMA ? 2 : 4;
    c.d_ff = 80;
    peft_model *m = NULL;
    TU_OK(ctx, peft_model_create(ctx, &c, &m));
    return m;
}

static peft_tensor *random_ids(peft_ctx *ctx, int64_t B, int64_t T, int64_t V)
{
    int32_t *v = malloc((size_t)(B * T) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    for (int64_t i = 0; i < B * T; i++) v[i] = (int32_t)(peft_ctx_rand_u64(ctx) % (uint64_t)V);
    int64_t s[2] = {B, T};
    peft_tensor *ids = tu_ids(ctx, 2, s, v);
    free(v);
    return ids;
}

/* Fill every byte the arena has reserved with NaN bit patterns, so a
 * gradient buffer handed out without being zeroed would show. */
static void dirty_arena(peft_ctx *ctx)
{
    peft_arena *a = peft_ctx_arena(ctx);
    size_t n = peft_arena_reserved(a);
    ck_assert_uint_eq(peft_arena_used(a), 0);
    void *p = NULL;
    ck_assert_int_eq(peft_arena_alloc(a, n, &p), PEFT_OK);
    memset(p, 0xff, n);
    peft_arena_reset(a);
}

START_TEST(numerics_backward_recycles_gradients)
{
    /* x -> 2x -> ... (K times, with reshapes between) -> sum. Without
     * recycling backward keeps K + K/2 gradients of x's size; with it, a
     * couple at a time. */
    enum { K = 16, N = 4096 };
    peft_ctx *ctx = tu_ctx(1, 11);
    int64_t s1[1] = {N}, s2[2] = {64, 64};
    peft_tensor *x = tu_randn(ctx, 1, s1, 1, 1), *h = x, *loss;
    for (int k = 0; k < K; k++) {
        TU_OK(ctx, peft_scale(ctx, h, 2.0f, &h));
        if (k % 2 == 0) TU_OK(ctx, peft_reshape(ctx, h, k % 4 == 0 ? 2 : 1, k % 4 == 0 ? s2 : s1, &h));
    }
    TU_OK(ctx, peft_sum(ctx, h, &loss));
    peft_arena *a = peft_ctx_arena(ctx);
    const size_t forward_top = peft_arena_used(a), buf = (size_t)N * sizeof(float);
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    const size_t backward_extra = peft_arena_peak(a) - forward_top;
    ck_assert_msg(backward_extra <= 3 * buf, "backward needed %zu bytes over the forward's %zu (buffers of %zu)",
                  backward_extra, forward_top, buf);
    /* d(sum(2^K x))/dx = 2^K exactly */
    const float *g = peft_tensor_grad(x);
    for (int i = 0; i < N; i++) ck_assert_float_eq(g[i], 65536.0f);
    /* the same again on dirty memory: same bits, no new memory */
    const size_t reserved = peft_arena_reserved(a);
    peft_tensor_zero_grad(x);
    dirty_arena(ctx);
    h = x;
    for (int k = 0; k < K; k++) {
        TU_OK(ctx, peft_scale(ctx, h, 2.0f, &h));
        if (k % 2 == 0) TU_OK(ctx, peft_reshape(ctx, h, k % 4 == 0 ? 2 : 1, k % 4 == 0 ? s2 : s1, &h));
    }
    TU_OK(ctx, peft_sum(ctx, h, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    for (int i = 0; i < N; i++) ck_assert_float_eq(g[i], 65536.0f);
    ck_assert_uint_eq(peft_arena_reserved(a), reserved);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

/* All parameter gradients of one LM-loss backward, concatenated (malloc'd). */
static float *model_grads(peft_ctx *ctx, peft_model *m, peft_tensor *ids, size_t *n_out)
{
    size_t n = 0, np = peft_model_n_params(m);
    for (size_t i = 0; i < np; i++) {
        peft_tensor *t;
        TU_OK(ctx, peft_model_param(m, i, NULL, &t));
        peft_tensor_zero_grad(t);
        n += (size_t)peft_tensor_numel(t);
    }
    peft_tensor *loss;
    TU_OK(ctx, peft_model_lm_loss(m, ids, NULL, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    float *all = malloc(n * sizeof *all);
    ck_assert_ptr_nonnull(all);
    size_t off = 0;
    for (size_t i = 0; i < np; i++) {
        peft_tensor *t;
        TU_OK(ctx, peft_model_param(m, i, NULL, &t));
        const float *g = peft_tensor_grad(t);
        ck_assert_ptr_nonnull(g);
        memcpy(all + off, g, (size_t)peft_tensor_numel(t) * sizeof(float));
        off += (size_t)peft_tensor_numel(t);
    }
    *n_out = n;
    return all;
}

START_TEST(numerics_model_backward_bitwise_and_smaller)
{
    for (int arch = 0; arch < 2; arch++) {
        peft_ctx *ctx = tu_ctx(2, 21 + arch);
        peft_model *m = tiny_model(ctx, arch ? PEFT_ARCH_LLAMA : PEFT_ARCH_GPT2, 3);
        TU_OK(ctx, peft_model_set_trainable(m, 1));
        peft_tensor *ids = random_ids(ctx, 3, 17, 97);
        /* the forward alone: its arena top */
        peft_tensor *loss;
        TU_OK(ctx, peft_model_lm_loss(m, ids, NULL, &loss));
        const size_t forward_top = peft_arena_used(peft_ctx_arena(ctx));
        peft_graph_release(ctx);
        size_t n1, n2;
        float *g1 = model_grads(ctx, m, ids, &n1);
        /* every op output gets a gradient the size of its activation; held
         * to the end that roughly doubles the arena, recycled it adds little */
        const size_t peak = peft_arena_peak(peft_ctx_arena(ctx));
        ck_assert_msg(peak < forward_top + forward_top / 3, "%s: backward peak %zu, forward top %zu",
                      arch ? "llama" : "gpt2", peak, forward_top);
        dirty_arena(ctx);
        float *g2 = model_grads(ctx, m, ids, &n2);
        ck_assert_uint_eq(n1, n2);
        ck_assert_msg(memcmp(g1, g2, n1 * sizeof(float)) == 0, "gradients changed on a dirty arena");
        double sum = 0;
        for (size_t i = 0; i < n1; i++) {
            ck_assert(isfinite(g1[i]));
            sum += fabs(g1[i]);
        }
        ck_assert(sum > 0);
        free(g1), free(g2);
        peft_tensor_destroy(ids);
        peft_model_destroy(m);
        peft_ctx_destroy(ctx);
    }
}
END_TEST

START_TEST(numerics_nograd_forward_holds_one_block)
{
    for (int arch = 0; arch < 2; arch++) {
        peft_ctx *ctx = tu_ctx(2, 31 + arch);
        peft_model *m = tiny_model(ctx, arch ? PEFT_ARCH_LLAMA : PEFT_ARCH_GPT2, 8);
        peft_tensor *ids = random_ids(ctx, 2, 19, 97), *h;
        peft_arena *a = peft_ctx_arena(ctx);
        /* without gradients */
        int prev = peft_set_grad_enabled(ctx, 0);
        TU_OK(ctx, peft_model_forward_hidden(m, ids, &h));
        size_t n = (size_t)peft_tensor_numel(h);
        float *y0 = malloc(n * sizeof *y0);
        ck_assert_ptr_nonnull(y0);
        memcpy(y0, peft_tensor_data(h), n * sizeof *y0);
        const size_t peak_nograd = peft_arena_peak(a);
        peft_graph_release(ctx);
        peft_set_grad_enabled(ctx, prev);
        /* with gradients and a trainable model: every block's scratch stays */
        TU_OK(ctx, peft_model_set_trainable(m, 1));
        TU_OK(ctx, peft_model_forward_hidden(m, ids, &h));
        const size_t used_grad = peft_arena_used(a);
        ck_assert_msg(memcmp(y0, peft_tensor_data(h), n * sizeof *y0) == 0, "no-grad forward differs");
        peft_graph_release(ctx);
        /* 8 blocks recorded against one block plus two hand-off buffers */
        ck_assert_msg(peak_nograd * 3 < used_grad, "%s: no-grad peak %zu, recorded forward %zu",
                      arch ? "llama" : "gpt2", peak_nograd, used_grad);
        /* logits without gradients match too (the head runs after the blocks) */
        size_t nl;
        float *l0 = tu_logits(ctx, m, (const int32_t *)peft_tensor_data(ids), 2, 19, &nl);
        ck_assert(nl > 0 && isfinite(l0[0]) && isfinite(l0[nl - 1]));
        free(l0);
        free(y0);
        peft_tensor_destroy(ids);
        peft_model_destroy(m);
        peft_ctx_destroy(ctx);
    }
}
END_TEST

START_TEST(api_opt_destroy_does_not_raise_peak)
{
    /* parameters with caller-supplied gradients: finalize adds the flat
     * gradient and two moments; destroy hands every parameter a gradient of
     * its own again, which must not come on top of the moments */
    enum { P = 4, N = 1 << 16 };
    peft_ctx *ctx = tu_ctx(1, 41);
    int64_t s[1] = {N};
    peft_tensor *t[P];
    float *own = malloc((size_t)P * N * sizeof *own);
    ck_assert_ptr_nonnull(own);
    peft_opt_opts o = peft_opt_opts_default(PEFT_OPT_ADAMW);
    peft_opt *opt = NULL;
    TU_OK(ctx, peft_opt_create(ctx, &o, &opt));
    for (int i = 0; i < P; i++) {
        t[i] = tu_randn(ctx, 1, s, 1, 1);
        TU_OK(ctx, peft_tensor_set_grad_buffer(t[i], own + (size_t)i * N));
        TU_OK(ctx, peft_opt_add_param(opt, t[i], 0));
    }
    TU_OK(ctx, peft_opt_finalize(opt));
    float *g = peft_opt_grad(opt);
    for (size_t i = 0; i < (size_t)P * N; i++) g[i] = (float)(i % 7);
    const size_t peak = peft_ctx_bytes_peak(ctx);
    peft_opt_destroy(opt);
    ck_assert_uint_eq(peft_ctx_bytes_peak(ctx), peak);
    /* each parameter got its gradient back */
    for (int i = 0; i < P; i++) {
        const float *gi = peft_tensor_grad(t[i]);
        ck_assert_ptr_nonnull(gi);
        ck_assert(gi != own + (size_t)i * N);
        for (int j = 0; j < N; j += 997) ck_assert_float_eq(gi[j], (float)(((size_t)i * N + (size_t)j) % 7));
        peft_tensor_destroy(t[i]);
    }
    free(own);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *memory_suite(void)
{
    Suite *s = suite_create("memory");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_backward_recycles_gradients);
    tcase_add_test(tc, numerics_model_backward_bitwise_and_smaller);
    tcase_add_test(tc, numerics_nograd_forward_holds_one_block);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_opt_destroy_does_not_raise_peak);
    suite_add_tcase(s, tc);
    return s;
}
