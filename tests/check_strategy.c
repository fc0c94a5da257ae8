/* Strategies and the adapter: registration (built-ins and a host strategy),
 * trainable-parameter counts against their formulas, hooks, heads, errors. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util/testutil.h"

#define GOLDEN "tests/golden/"

static peft_model *load(peft_ctx *ctx, const char *path) { return tu_load_model(ctx, path, 0); }

static int64_t count_matching(const peft_model *m, const char *suffix)
{
    int64_t n = 0;
    for (size_t i = 0; i < peft_model_n_params(m); i++) {
        const char *name;
        peft_tensor *t;
        peft_model_param(m, i, &name, &t);
        size_t l = strlen(name), k = strlen(suffix);
        if (l >= k && !strcmp(name + l - k, suffix)) n += peft_tensor_numel(t);
    }
    return n;
}

START_TEST(api_builtins_registered)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    const char *want[] = {"full", "lora", "ia3", "bitfit", "dense", "feature"};
    ck_assert_uint_ge(peft_strategy_count(ctx), 6);
    for (size_t w = 0; w < 6; w++) {
        bool found = false;
        for (size_t i = 0; i < peft_strategy_count(ctx); i++) found |= !strcmp(peft_strategy_name(ctx, i), want[w]);
        ck_assert_msg(found, "built-in %s is not registered", want[w]);
    }
    peft_strategy dup = {sizeof(peft_strategy), "lora", NULL, NULL, NULL, NULL, NULL, NULL};
    TU_EXPECT_FAIL(ctx, peft_strategy_register(ctx, &dup), PEFT_ERR_INVALID_ARG, "needs a name (1..63 bytes) and attach");
    peft_ctx_destroy(ctx);
}
END_TEST

/* A host strategy: trains only the final norm (+ the head for classification). */
static int detached;
static peft_status mine_attach(peft_adapter *ad, const void *opts)
{
    (void)opts;
    peft_tensor *t;
    peft_model *m = peft_adapter_model(ad);
    const char *name = peft_model_get_config(m)->arch == PEFT_ARCH_GPT2 ? "transformer.ln_f.weight" : "model.norm.weight";
    peft_status st = peft_model_find_param(m, name, &t);
    if (st == PEFT_OK) st = peft_adapter_add_param(ad, name, t, 0);
    return st;
}
static void mine_detach(peft_adapter *ad)
{
    (void)ad;
    detached++;
}

START_TEST(api_host_strategy)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_strategy s = {sizeof(peft_strategy), "final-norm", "only the final norm", mine_attach, NULL, NULL, NULL, mine_detach};
    TU_OK(ctx, peft_strategy_register(ctx, &s));
    TU_EXPECT_FAIL(ctx, peft_strategy_register(ctx, &s), PEFT_ERR_INVALID_ARG, "\"final-norm\" is already registered");
    peft_model *m = load(ctx, GOLDEN "llama");
    peft_adapter *ad = NULL;
    TU_OK(ctx, peft_adapter_attach(m, "final-norm", NULL, NULL, &ad));
    ck_assert_str_eq(peft_adapter_strategy(ad), "final-norm");
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), 32);
    peft_adapter *second = NULL;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, NULL, &second), PEFT_ERR_STATE, "already has an adapter");
    TU_EXPECT_FAIL(ctx, peft_adapter_merge(ad), PEFT_ERR_UNSUPPORTED, "cannot merge");
    detached = 0;
    peft_adapter_destroy(ad);
    ck_assert_int_eq(detached, 1);
    /* destroy froze the base again */
    peft_tensor *t;
    TU_OK(ctx, peft_model_find_param(m, "model.norm.weight", &t));
    ck_assert_int_eq(peft_tensor_requires_grad(t), 0);
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "nope", NULL, NULL, &ad), PEFT_ERR_NOT_FOUND, "no strategy called \"nope\"");
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_trainable_counts)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_model *g = load(ctx, GOLDEN "gpt2"), *l = load(ctx, GOLDEN "llama");
    const int64_t C = 32, L = 2, V = 96;
    peft_adapter *ad;
    /* full: everything */
    TU_OK(ctx, peft_adapter_attach(g, "full", NULL, NULL, &ad));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), peft_model_numel(g));
    peft_adapter_destroy(ad);
    /* full, top block only: block 1 + ln_f (GPT-2's head is tied to wte, which stays frozen) */
    peft_full_opts fo = peft_full_opts_default();
    fo.top_blocks = 1;
    TU_OK(ctx, peft_adapter_attach(g, "full", NULL, &fo, &ad));
    int64_t block = 4 * C + 3 * C * C + 3 * C + C * C + C + 4 * C * C + 4 * C + 4 * C * C + C;
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), block + 2 * C);
    peft_adapter_destroy(ad);
    /* bitfit on GPT-2: every bias */
    TU_OK(ctx, peft_adapter_attach(g, "bitfit", NULL, NULL, &ad));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), count_matching(g, ".bias"));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), L * (C + 3 * C + C + C + 4 * C + C) + C);
    peft_adapter_destroy(ad);
    /* bitfit on Llama (no biases): the norm gains */
    TU_OK(ctx, peft_adapter_attach(l, "bitfit", NULL, NULL, &ad));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), (2 * L + 1) * C);
    peft_adapter_destroy(ad);
    /* dense, LM: depth 1 width W: C*W + W + W*C + C */
    peft_dense_opts dop = peft_dense_opts_default();
    dop.width = 16;
    TU_OK(ctx, peft_adapter_attach(l, "dense", NULL, &dop, &ad));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), C * 16 + 16 + 16 * C + C);
    peft_adapter_destroy(ad);
    /* feature, LM: a trainable copy of the output layer */
    TU_OK(ctx, peft_adapter_attach(l, "feature", NULL, NULL, &ad));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), V * C);
    peft_adapter_destroy(ad);
    /* classification heads: linear C*K + K for every strategy, on top of what the strategy trains */
    peft_task task = peft_task_default(PEFT_TASK_CLASSIFY);
    task.n_classes = 3;
    TU_OK(ctx, peft_adapter_attach(l, "feature", &task, NULL, &ad));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), C * 3 + 3);
    peft_adapter_destroy(ad);
    dop.depth = 2;
    TU_OK(ctx, peft_adapter_attach(l, "dense", &task, &dop, &ad));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), (C * 16 + 16) + (16 * 16 + 16) + (16 * 3 + 3));
    peft_adapter_destroy(ad);
    TU_OK(ctx, peft_adapter_attach(l, "bitfit", &task, NULL, &ad));
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), (2 * L + 1) * C + C * 3 + 3);
    peft_adapter_destroy(ad);
    peft_model_destroy(g), peft_model_destroy(l);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_task_and_option_errors)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_model *m = load(ctx, GOLDEN "gpt2");
    peft_adapter *ad = NULL;
    peft_task t = peft_task_default(PEFT_TASK_CLASSIFY);
    t.n_classes = 1;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "full", &t, NULL, &ad), PEFT_ERR_INVALID_ARG, "n_classes 1");
    t = peft_task_default(PEFT_TASK_CLASSIFY);
    t.feature_layer = 7;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "full", &t, NULL, &ad), PEFT_ERR_INVALID_ARG, "feature_layer 7");
    peft_full_opts fo = peft_full_opts_default();
    fo.top_blocks = 9;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "full", NULL, &fo, &ad), PEFT_ERR_INVALID_ARG, "top_blocks 9");
    fo.struct_size = 3;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "full", NULL, &fo, &ad), PEFT_ERR_INVALID_ARG, "struct_size 3");
    peft_dense_opts dop = peft_dense_opts_default();
    dop.dropout = 1.5f;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "dense", NULL, &dop, &ad), PEFT_ERR_INVALID_ARG, "dropout 1.5");
    dop = peft_dense_opts_default();
    dop.activation = (peft_activation)9;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "dense", NULL, &dop, &ad), PEFT_ERR_INVALID_ARG, "activation 9");
    ck_assert_ptr_null(ad);
    dop.activation = PEFT_ACT_RELU;
    TU_OK(ctx, peft_adapter_attach(m, "dense", NULL, &dop, &ad));
    peft_adapter_destroy(ad);
    ad = NULL;
    /* a failed attach leaves nothing behind: a later attach works */
    TU_OK(ctx, peft_adapter_attach(m, "bitfit", NULL, NULL, &ad));
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_targets_match_like_hf)
{
    ck_assert(peft_target_matches("c_attn", "transformer.h.0.attn.c_attn"));
    ck_assert(!peft_target_matches("attn", "transformer.h.0.attn.c_attn"));
    ck_assert(peft_target_matches("q_proj,v_proj", "model.layers.3.self_attn.v_proj"));
    ck_assert(!peft_target_matches("q_proj,v_proj", "model.layers.3.self_attn.k_proj"));
    ck_assert(peft_target_matches("mlp.c_proj", "transformer.h.1.mlp.c_proj"));
    ck_assert(!peft_target_matches("mlp.c_proj", "transformer.h.1.attn.c_proj"));
    ck_assert(peft_target_matches("all-linear", "anything"));
    ck_assert(peft_target_matches(" q_proj , k_proj ", "model.layers.0.self_attn.k_proj"));
    ck_assert(!peft_target_matches(NULL, "x"));
}
END_TEST

/* Classification: pooling picks the right token; the head sees it. */
START_TEST(numerics_pooling)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_model *m = load(ctx, GOLDEN "llama");
    peft_task t = peft_task_default(PEFT_TASK_CLASSIFY);
    t.n_classes = 2;
    peft_adapter *ad;
    TU_OK(ctx, peft_adapter_attach(m, "feature", &t, NULL, &ad));
    /* row 0 has 5 real tokens then padding; scoring it alone (T = 5) must agree */
    int32_t ids[2 * 8] = {1, 5, 9, 13, 17, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
    int32_t mask[2 * 8] = {1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    int32_t labels[2] = {0, 1};
    peft_batch b = {2, 8, ids, mask, NULL, labels, NULL, 0};
    float out2[4], out1[2];
    TU_OK(ctx, peft_adapter_classify(ad, &b, out2));
    peft_batch b1 = {1, 5, ids, NULL, NULL, labels, NULL, 0};
    TU_OK(ctx, peft_adapter_classify(ad, &b1, out1));
    ck_assert_float_eq_tol(out2[0], out1[0], 1e-5f);
    ck_assert_float_eq_tol(out2[1], out1[1], 1e-5f);
    int32_t bad_labels[2] = {0, 2};
    peft_batch bb = {2, 8, ids, mask, NULL, bad_labels, NULL, 0};
    peft_tensor *loss;
    TU_EXPECT_FAIL(ctx, peft_adapter_loss(ad, &bb, 1, &loss), PEFT_ERR_INVALID_ARG, "labels[1] = 2 is outside the 2 classes");
    int32_t holes[2 * 8] = {1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    peft_batch bh = {2, 8, ids, holes, NULL, labels, NULL, 0};
    TU_EXPECT_FAIL(ctx, peft_adapter_loss(ad, &bh, 1, &loss), PEFT_ERR_INVALID_ARG, "padding before a real token");
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *strategy_suite(void)
{
    Suite *s = suite_create("strategy");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_builtins_registered);
    tcase_add_test(tc, api_host_strategy);
    tcase_add_test(tc, api_task_and_option_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_trainable_counts);
    tcase_add_test(tc, numerics_targets_match_like_hf);
    tcase_add_test(tc, numerics_pooling);
    suite_add_tcase(s, tc);
    return s;
}
