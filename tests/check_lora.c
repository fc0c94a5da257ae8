/* The LoRA strategy: Hugging Face PEFT names, shapes and parameter counts; a
 * no-op at step 0; the hook's gradients against finite differences; merge and
 * exact unmerge; frozen base weights; a few SGD steps lower the loss; errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "nn/model_internal.h"
#include "util/testutil.h"

#define GOLDEN "tests/golden/"

/* A fixed [B, T] batch of token ids below V. */
static void fill_ids(int32_t *ids, int64_t B, int64_t T, int64_t V)
{
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 7 + 3 + (i / T) * 5) % V);
}

/* Logits of the model for ids [B, T], without gradients, into a malloc'd buffer. */
static peft_adapter *attach(peft_model *m, const peft_lora_opts *o)
{
    peft_adapter *ad = NULL;
    peft_status st = peft_adapter_attach(m, "lora", NULL, o, &ad);
    ck_assert_msg(st == PEFT_OK, "attach lora: %s", peft_ctx_errmsg(peft_model_ctx(m)));
    return ad;
}

/* The trainable tensor called name (asserting it exists). */
static peft_tensor *param(peft_adapter *ad, const char *name)
{
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        const char *n;
        peft_tensor *t;
        TU_OK(peft_adapter_ctx(ad), peft_adapter_trainable(ad, i, &n, &t, NULL));
        if (!strcmp(n, name)) return t;
    }
    ck_abort_msg("no trainable tensor '%s'", name);
    return NULL;
}

/* Every lora_B gets N(0, std) values (B = 0 would hide A's part). */
static void randomize_B(peft_adapter *ad, float std)
{
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        const char *n;
        peft_tensor *t;
        TU_OK(peft_adapter_ctx(ad), peft_adapter_trainable(ad, i, &n, &t, NULL));
        if (strstr(n, ".lora_B.")) TU_OK(peft_adapter_ctx(ad), peft_tensor_init_normal(t, 0.0f, std));
    }
}

/* HF PEFT's count: sum over targeted projections of r * (in + out). */
static int64_t expected_count(peft_model *m, const char *targets, int r)
{
    int64_t n = 0;
    for (size_t i = 0; i < peft_model_n_linears(m); i++) {
        const char *name;
        peft_tensor *w;
        TU_OK(peft_model_ctx(m), peft_model_linear(m, i, &name, &w, NULL));
        if (peft_target_matches(targets, name)) n += r * (peft_tensor_dim(w, 0) + peft_tensor_dim(w, 1));
    }
    return n;
}

/* ---- api ---- */

START_TEST(api_defaults_and_registry)
{
    peft_lora_opts o = peft_lora_opts_default();
    ck_assert_uint_eq(o.struct_size, sizeof o);
    ck_assert_int_eq(o.r, 8);
    ck_assert_float_eq(o.alpha, 8.0f);
    ck_assert_float_eq(o.dropout, 0.0f);
    ck_assert_int_eq(o.use_rslora, 0);
    ck_assert_ptr_null(o.targets);
    peft_ctx *ctx = tu_ctx(1, 1);
    int found = 0;
    for (size_t i = 0; i < peft_strategy_count(ctx); i++) found += !strcmp(peft_strategy_name(ctx, i), "lora");
    ck_assert_int_eq(found, 1);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_errors)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_model *m = tu_load_model(ctx, GOLDEN "gpt2", 0);
    peft_adapter *ad = NULL;
    peft_lora_opts o = peft_lora_opts_default();
    o.targets = "xyz";
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad), PEFT_ERR_INVALID_ARG,
                   "lora: targets 'xyz' match no module of this model");
    ck_assert_ptr_null(ad);
    o.targets = "q_proj,v_proj"; /* Llama names on GPT-2 */
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad), PEFT_ERR_INVALID_ARG, "match no module");
    o = peft_lora_opts_default();
    o.r = 0;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad), PEFT_ERR_INVALID_ARG, "r = 0");
    o.r = -3;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad), PEFT_ERR_INVALID_ARG, "r = -3");
    o.r = 33; /* c_attn is [96, 32] */
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad), PEFT_ERR_INVALID_ARG,
                   "r = 33 exceeds min(in, out) = 32 of transformer.h.0.attn.c_attn (in 32, out 96)");
    o.r = 32; /* the limit itself is fine */
    TU_OK(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad));
    peft_adapter_destroy(ad);
    o = peft_lora_opts_default();
    const float bad_alpha[] = {NAN, INFINITY, 0.0f, -1.0f};
    for (size_t i = 0; i < 4; i++) {
        o.alpha = bad_alpha[i];
        TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad), PEFT_ERR_INVALID_ARG, "lora: alpha");
    }
    o = peft_lora_opts_default();
    const float bad_dropout[] = {1.0f, -0.1f, NAN};
    for (size_t i = 0; i < 3; i++) {
        o.dropout = bad_dropout[i];
        TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad), PEFT_ERR_INVALID_ARG, "lora: dropout");
    }
    o = peft_lora_opts_default();
    o.struct_size = sizeof o - 1;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "lora", NULL, &o, &ad), PEFT_ERR_INVALID_ARG,
                   "lora: options struct_size");
    /* a failed attach left nothing behind: the model takes a new adapter */
    ad = attach(m, NULL);
    TU_EXPECT_FAIL(ctx, peft_adapter_unmerge(ad), PEFT_ERR_STATE, "not merged");
    TU_OK(ctx, peft_adapter_merge(ad));
    TU_EXPECT_FAIL(ctx, peft_adapter_merge(ad), PEFT_ERR_STATE, "already merged");
    TU_OK(ctx, peft_adapter_unmerge(ad));
    TU_EXPECT_FAIL(ctx, peft_adapter_unmerge(ad), PEFT_ERR_STATE, "not merged");
    peft_adapter_destroy(ad);
    peft_model_destroy(m);

    /* a bf16 base trains through the hook but cannot be merged */
    m = tu_load_model(ctx, GOLDEN "gpt2/model.bf16.safetensors", 1);
    ad = attach(m, NULL);
    TU_EXPECT_FAIL(ctx, peft_adapter_merge(ad), PEFT_ERR_DTYPE, "only f32 weights can be merged");
    TU_EXPECT_FAIL(ctx, peft_adapter_unmerge(ad), PEFT_ERR_STATE, "not merged");
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- numerics ---- */

/* Names, shapes and init of a golden model's adapter, counts against r(in+out),
 * and logits at step 0 equal to the base model's bit for bit. */
static void check_attach(const char *dir, const char *targets, int r, const char *first, int64_t count)
{
    peft_ctx *ctx = tu_ctx(2, 3);
    peft_model *m = tu_load_model(ctx, dir, 0);
    const int64_t B = 2, T = 7, V = peft_model_get_config(m)->vocab_size;
    int32_t ids[14];
    fill_ids(ids, B, T, V);
    size_t n;
    float *base = tu_logits(ctx, m, ids, B, T, &n);
    peft_lora_opts o = peft_lora_opts_default();
    o.r = r;
    o.targets = targets;
    peft_adapter *ad = attach(m, &o);
    const char *eff = targets ? targets : strstr(dir, "gpt2") ? "c_attn" : "q_proj,v_proj";
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), count);
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), expected_count(m, eff, r));
    ck_assert_uint_eq(peft_adapter_n_groups(ad), 1);
    /* one A and one B per targeted projection, in model order, HF names */
    size_t k = 0;
    for (size_t i = 0; i < peft_model_n_linears(m); i++) {
        const char *lname, *na, *nb;
        peft_tensor *w, *A, *Bt;
        TU_OK(ctx, peft_model_linear(m, i, &lname, &w, NULL));
        if (!peft_target_matches(eff, lname)) continue;
        TU_OK(ctx, peft_adapter_trainable(ad, k++, &na, &A, NULL));
        TU_OK(ctx, peft_adapter_trainable(ad, k++, &nb, &Bt, NULL));
        char want[256];
        snprintf(want, sizeof want, "base_model.model.%s.lora_A.weight", lname);
        ck_assert_str_eq(na, want);
        snprintf(want, sizeof want, "base_model.model.%s.lora_B.weight", lname);
        ck_assert_str_eq(nb, want);
        const int64_t in = peft_tensor_dim(w, 1), out = peft_tensor_dim(w, 0);
        ck_assert_int_eq(peft_tensor_dim(A, 0), r);
        ck_assert_int_eq(peft_tensor_dim(A, 1), in);
        ck_assert_int_eq(peft_tensor_dim(Bt, 0), out);
        ck_assert_int_eq(peft_tensor_dim(Bt, 1), r);
        /* A ~ U(-1/sqrt(in), 1/sqrt(in)), not constant; B = 0 */
        const float *a = peft_tensor_data(A), *b = peft_tensor_data(Bt);
        double lim = 1.0 / sqrt((double)in), amax = 0;
        for (int64_t j = 0; j < r * in; j++) {
            ck_assert(fabs(a[j]) <= lim);
            if (fabs(a[j]) > amax) amax = fabs(a[j]);
        }
        ck_assert(amax > 0.5 * lim);
        for (int64_t j = 0; j < out * r; j++) ck_assert(b[j] == 0.0f);
        ck_assert(peft_tensor_requires_grad(A) && peft_tensor_requires_grad(Bt));
        ck_assert(!peft_tensor_requires_grad(w));
    }
    ck_assert_uint_eq(k, peft_adapter_n_trainable(ad));
    const char *n0;
    TU_OK(ctx, peft_adapter_trainable(ad, 0, &n0, NULL, NULL));
    ck_assert_str_eq(n0, first);
    size_t n2;
    float *step0 = tu_logits(ctx, m, ids, B, T, &n2);
    ck_assert_uint_eq(n, n2);
    ck_assert_msg(memcmp(base, step0, n * sizeof *base) == 0, "%s: logits at step 0 differ from the base", dir);
    free(step0);
    peft_adapter_destroy(ad);
    /* detached: back to the base model */
    step0 = tu_logits(ctx, m, ids, B, T, &n2);
    ck_assert(memcmp(base, step0, n * sizeof *base) == 0);
    free(step0);
    free(base);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_attach_golden)
{
    /* gpt2: 2 blocks, c_attn [96, 32]: 2 * 8 * (32 + 96) */
    check_attach(GOLDEN "gpt2", NULL, 8, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", 2048);
    /* llama (GQA 4/2 heads of 8): q [32, 32], v [16, 32]: 2 * 8 * (64 + 48) */
    check_attach(GOLDEN "llama", NULL, 8, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 1792);
    /* odd rank, every projection: q, k, v, o, gate, up, down */
    check_attach(GOLDEN "llama", "all-linear", 3, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                 2 * 3 * (64 + 48 + 48 + 64 + 80 + 80 + 80));
    check_attach(GOLDEN "gpt2", "c_attn,mlp.c_proj", 1, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
                 2 * 1 * (128 + 160));
}
END_TEST

START_TEST(numerics_counts_like_hf)
{
    peft_ctx *ctx = tu_ctx(2, 4);
    /* GPT-2 124M shapes: 12 blocks, C 768, c_attn [2304, 768]: 12 * 8 * (768 + 2304).
     * The count depends on shapes only, so the model is built by
     * peft_model_create's allocator without its random init (seconds for
     * 124M normals); the weights stay zero. */
    peft_model_config c = peft_model_config_default(PEFT_ARCH_GPT2);
    peft_model *m = NULL;
    TU_OK(ctx, peft__model_alloc(ctx, &c, NULL, NULL, &m));
    peft_lora_opts o = peft_lora_opts_default();
    o.targets = "c_attn";
    peft_adapter *ad = attach(m, &o);
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), 294912);
    ck_assert_uint_eq(peft_adapter_n_trainable(ad), 24);
    peft_adapter_destroy(ad);
    peft_model_destroy(m);

    /* Llama with GQA: C 64, 8 heads, 2 kv heads (k, v are [16, 64]), F 96, 3 blocks */
    c = peft_model_config_default(PEFT_ARCH_LLAMA);
    c.vocab_size = 64;
    c.n_ctx = 32;
    c.d_model = 64;
    c.n_layer = 3;
    c.n_head = 8;
    c.n_kv_head = 2;
    c.d_ff = 96;
    TU_OK(ctx, peft_model_create(ctx, &c, &m));
    o = peft_lora_opts_default();
    o.r = 4;
    ad = attach(m, &o); /* default q_proj,v_proj */
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), 3 * (4 * (64 + 64) + 4 * (64 + 16)));
    peft_adapter_destroy(ad);
    o.targets = "all-linear";
    ad = attach(m, &o);
    ck_assert_int_eq(peft_adapter_trainable_numel(ad),
                     3 * 4 * ((64 + 64) + 2 * (64 + 16) + (64 + 64) + 2 * (64 + 96) + (96 + 64)));
    ck_assert_uint_eq(peft_adapter_n_trainable(ad), 3 * 7 * 2);
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Merged logits equal the unmerged adapter's; unmerge restores W bit for bit;
 * the merged delta is s * B A with s = alpha / r or alpha / sqrt(r). */
static void check_merge(const char *dir, const char *targets, int r, float alpha, int rslora)
{
    peft_ctx *ctx = tu_ctx(2, 5);
    peft_model *m = tu_load_model(ctx, dir, 0);
    const int64_t B = 2, T = 6, V = peft_model_get_config(m)->vocab_size;
    int32_t ids[12];
    fill_ids(ids, B, T, V);
    size_t n;
    float *base = tu_logits(ctx, m, ids, B, T, &n);
    /* copies of every weight (and bias) of the model */
    const size_t L = peft_model_n_linears(m);
    float **orig = calloc(L, sizeof *orig);
    for (size_t i = 0; i < L; i++) {
        peft_tensor *w;
        TU_OK(ctx, peft_model_linear(m, i, NULL, &w, NULL));
        orig[i] = malloc(peft_tensor_nbytes(w));
        memcpy(orig[i], peft_tensor_data(w), peft_tensor_nbytes(w));
    }
    peft_lora_opts o = peft_lora_opts_default();
    o.r = r;
    o.alpha = alpha;
    o.use_rslora = rslora;
    o.targets = targets;
    peft_adapter *ad = attach(m, &o);
    randomize_B(ad, 0.2f);
    float *unmerged = tu_logits(ctx, m, ids, B, T, &n);
    ck_assert_msg(tu_max_rel_err(unmerged, base, n) > 1e-3, "%s: random B should change the logits", dir);
    TU_OK(ctx, peft_adapter_merge(ad));
    float *merged = tu_logits(ctx, m, ids, B, T, &n);
    double e = tu_max_rel_err(merged, unmerged, n);
    ck_assert_msg(e <= 1e-5, "%s: merged vs unmerged logits: relative error %g", dir, e);
    /* the delta of each weight is s * B A (s held as a float) */
    const double s = (float)(rslora ? alpha / sqrt((double)r) : (double)alpha / r);
    for (size_t i = 0; i < L; i++) {
        const char *lname;
        peft_tensor *w;
        TU_OK(ctx, peft_model_linear(m, i, &lname, &w, NULL));
        const float *wd = peft_tensor_data(w);
        const int64_t out = peft_tensor_dim(w, 0), in = peft_tensor_dim(w, 1);
        if (!peft_target_matches(targets, lname)) {
            ck_assert(memcmp(wd, orig[i], peft_tensor_nbytes(w)) == 0);
            continue;
        }
        char na[256], nb[256];
        snprintf(na, sizeof na, "base_model.model.%s.lora_A.weight", lname);
        snprintf(nb, sizeof nb, "base_model.model.%s.lora_B.weight", lname);
        const float *A = peft_tensor_data(param(ad, na)), *Bm = peft_tensor_data(param(ad, nb));
        double worst = 0;
        for (int64_t oi = 0; oi < out; oi++)
            for (int64_t ii = 0; ii < in; ii++) {
                double d = 0;
                for (int k = 0; k < r; k++) d += (double)Bm[oi * r + k] * A[k * in + ii];
                double want = orig[i][oi * in + ii] + s * d, got = wd[oi * in + ii];
                double err = fabs(got - want) / (fabs(want) + 1e-6);
                if (err > worst) worst = err;
            }
        ck_assert_msg(worst <= 1e-6, "%s %s: merged weight off by %g", dir, lname, worst);
    }
    TU_OK(ctx, peft_adapter_unmerge(ad));
    for (size_t i = 0; i < L; i++) {
        peft_tensor *w;
        TU_OK(ctx, peft_model_linear(m, i, NULL, &w, NULL));
        ck_assert_msg(memcmp(peft_tensor_data(w), orig[i], peft_tensor_nbytes(w)) == 0, "%s: weight %zu not restored",
                      dir, i);
    }
    float *again = tu_logits(ctx, m, ids, B, T, &n);
    ck_assert(memcmp(again, unmerged, n * sizeof *again) == 0);
    /* merge, then destroy: the merged weights stay (merge and unload) */
    TU_OK(ctx, peft_adapter_merge(ad));
    peft_adapter_destroy(ad);
    float *unloaded = tu_logits(ctx, m, ids, B, T, &n);
    ck_assert(memcmp(unloaded, merged, n * sizeof *unloaded) == 0);
    free(unloaded), free(again), free(merged), free(unmerged), free(base);
    for (size_t i = 0; i < L; i++) free(orig[i]);
    free(orig);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_merge_unmerge)
{
    check_merge(GOLDEN "gpt2", "c_attn", 8, 16.0f, 0);
    check_merge(GOLDEN "gpt2", "all-linear", 3, 5.0f, 1);
    check_merge(GOLDEN "llama", "q_proj,v_proj", 4, 8.0f, 0);
    check_merge(GOLDEN "llama", "all-linear", 5, 7.5f, 1);
}
END_TEST

/* Dropout acts on the LoRA branch only in peft_adapter_loss(training = 1). */
START_TEST(numerics_dropout_only_in_training)
{
    peft_ctx *ctx = tu_ctx(2, 6);
    peft_model *m = tu_load_model(ctx, GOLDEN "llama", 0);
    int32_t ids[16];
    fill_ids(ids, 2, 8, 96);
    peft_batch b = {.B = 2, .T = 8, .ids = ids};
    /* reference: no dropout */
    peft_lora_opts o = peft_lora_opts_default();
    peft_adapter *ad = attach(m, &o);
    randomize_B(ad, 0.3f);
    size_t nt = peft_adapter_n_trainable(ad);
    float **vals = calloc(nt, sizeof *vals);
    for (size_t i = 0; i < nt; i++) {
        peft_tensor *t;
        TU_OK(ctx, peft_adapter_trainable(ad, i, NULL, &t, NULL));
        vals[i] = malloc(peft_tensor_nbytes(t));
        memcpy(vals[i], peft_tensor_data(t), peft_tensor_nbytes(t));
    }
    peft_tensor *loss;
    float l_ref, l_eval, l_train, l_train2;
    TU_OK(ctx, peft_adapter_loss(ad, &b, 1, &loss));
    l_ref = ((float *)peft_tensor_data(loss))[0];
    peft_graph_release(ctx);
    peft_adapter_destroy(ad);
    /* same tensors, dropout 0.5 */
    o.dropout = 0.5f;
    ad = attach(m, &o);
    for (size_t i = 0; i < nt; i++) {
        peft_tensor *t;
        TU_OK(ctx, peft_adapter_trainable(ad, i, NULL, &t, NULL));
        memcpy(peft_tensor_data(t), vals[i], peft_tensor_nbytes(t));
    }
    TU_OK(ctx, peft_adapter_loss(ad, &b, 0, &loss));
    l_eval = ((float *)peft_tensor_data(loss))[0];
    peft_graph_release(ctx);
    TU_OK(ctx, peft_adapter_loss(ad, &b, 1, &loss));
    l_train = ((float *)peft_tensor_data(loss))[0];
    peft_graph_release(ctx);
    TU_OK(ctx, peft_adapter_loss(ad, &b, 1, &loss));
    l_train2 = ((float *)peft_tensor_data(loss))[0];
    peft_graph_release(ctx);
    ck_assert_float_eq(l_eval, l_ref);
    ck_assert(l_train != l_eval);
    ck_assert(l_train2 != l_train); /* a new mask each step */
    /* a plain forward (no adapter loss) never drops */
    double ls;
    int64_t cnt, cor;
    TU_OK(ctx, peft_adapter_eval(ad, &b, &ls, &cnt, &cor));
    ck_assert_double_eq_tol(ls / (double)cnt, l_ref, 1e-5 * fabs(l_ref));
    peft_adapter_destroy(ad);
    for (size_t i = 0; i < nt; i++) free(vals[i]);
    free(vals);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Only A and B receive gradients; the base stays without a gradient buffer. */
static void check_frozen(const char *dir)
{
    peft_ctx *ctx = tu_ctx(2, 7);
    peft_model *m = tu_load_model(ctx, dir, 0);
    const int64_t V = peft_model_get_config(m)->vocab_size;
    int32_t ids[16];
    fill_ids(ids, 2, 8, V);
    peft_batch b = {.B = 2, .T = 8, .ids = ids};
    peft_adapter *ad = attach(m, NULL);
    peft_tensor *loss;
    /* step 0: B = 0, so dL/dA = 0 exactly (as in PEFT) while dL/dB is not */
    TU_OK(ctx, peft_adapter_loss(ad, &b, 1, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        const char *name;
        peft_tensor *t;
        TU_OK(ctx, peft_adapter_trainable(ad, i, &name, &t, NULL));
        const float *g = peft_tensor_grad(t);
        ck_assert_ptr_nonnull(g);
        double s = 0;
        for (int64_t j = 0; j < peft_tensor_numel(t); j++) s += fabs(g[j]);
        if (strstr(name, "lora_A")) ck_assert_msg(s == 0, "%s: gradient %g at step 0", name, s);
        else ck_assert_msg(s > 0, "%s: zero gradient", name);
        peft_tensor_zero_grad(t);
    }
    randomize_B(ad, 0.1f);
    TU_OK(ctx, peft_adapter_loss(ad, &b, 1, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        const char *name;
        peft_tensor *t;
        TU_OK(ctx, peft_adapter_trainable(ad, i, &name, &t, NULL));
        const float *g = peft_tensor_grad(t);
        double s = 0;
        for (int64_t j = 0; j < peft_tensor_numel(t); j++) s += fabs(g[j]);
        ck_assert_msg(s > 0 && isfinite(s), "%s: gradient sum %g", name, s);
    }
    for (size_t i = 0; i < peft_model_n_params(m); i++) {
        const char *name;
        peft_tensor *p;
        TU_OK(ctx, peft_model_param(m, i, &name, &p));
        ck_assert_msg(!peft_tensor_requires_grad(p), "%s requires a gradient", name);
        ck_assert_msg(peft_tensor_grad(p) == NULL, "%s got a gradient", name);
    }
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_frozen_base)
{
    check_frozen(GOLDEN "gpt2");
    check_frozen(GOLDEN "llama");
}
END_TEST

/* Plain SGD written here (p -= lr * grad) on one fixed batch lowers the loss. */
START_TEST(numerics_sgd_lowers_loss)
{
    peft_ctx *ctx = tu_ctx(2, 8);
    const char *dir = tu_models_dir();
    char path[512];
    if (dir) snprintf(path, sizeof path, "%s/stories260K.bin", dir);
    peft_model *m = tu_load_model(ctx, dir ? path : GOLDEN "llama", 0);
    const int64_t B = 4, T = 32, V = peft_model_get_config(m)->vocab_size;
    int32_t *ids = malloc((size_t)(B * T) * sizeof *ids);
    fill_ids(ids, B, T, V);
    peft_batch b = {.B = B, .T = T, .ids = ids};
    peft_lora_opts o = peft_lora_opts_default();
    o.r = 4;
    o.targets = "q_proj,v_proj";
    peft_adapter *ad = attach(m, &o);
    float first = 0, last = 0;
    for (int step = 0; step < 12; step++) {
        peft_tensor *loss;
        float lv;
        TU_OK(ctx, peft_adapter_loss(ad, &b, 1, &loss));
        TU_OK(ctx, peft_backward(ctx, loss, &lv));
        if (step == 0) first = lv;
        last = lv;
        for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
            peft_tensor *t;
            TU_OK(ctx, peft_adapter_trainable(ad, i, NULL, &t, NULL));
            float *p = peft_tensor_data(t), *g = peft_tensor_grad(t);
            for (int64_t j = 0; j < peft_tensor_numel(t); j++) p[j] -= 0.5f * g[j];
            peft_tensor_zero_grad(t);
        }
    }
    ck_assert_msg(isfinite(last) && last < first - 0.05f, "loss %g -> %g", first, last);
    peft_adapter_destroy(ad);
    free(ids);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- grad: the hook of one projection against finite differences ---- */

typedef struct hook_arg {
    peft__linear *lin;
} hook_arg;

static peft_status fwd_hook(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    peft__linear *lin = ((hook_arg *)arg)->lin;
    return lin->hook(ctx, in[0], lin->w, lin->b, lin->hook_user, out);
}

static void check_hook_grad(const char *dir, const char *targets, int r, float alpha, int rslora, size_t which,
                            int64_t rows)
{
    peft_ctx *ctx = tu_ctx(2, 9);
    peft_model *m = tu_load_model(ctx, dir, 0);
    peft_lora_opts o = peft_lora_opts_default();
    o.r = r;
    o.alpha = alpha;
    o.use_rslora = rslora;
    o.targets = targets;
    peft_adapter *ad = attach(m, &o);
    randomize_B(ad, 0.5f);
    /* the which-th adapted projection */
    size_t seen = 0;
    peft__linear *lin = NULL;
    for (size_t i = 0; i < m->n_linears && !lin; i++)
        if (m->linears[i]->hook && seen++ == which) lin = m->linears[i];
    ck_assert_ptr_nonnull(lin);
    char na[256], nb[256];
    snprintf(na, sizeof na, "base_model.model.%s.lora_A.weight", lin->name);
    snprintf(nb, sizeof nb, "base_model.model.%s.lora_B.weight", lin->name);
    const int64_t xs[3] = {1, rows, lin->w->shape[1]};
    peft_tensor *x = tu_randn(ctx, 3, xs, 1.0f, 1);
    peft_tensor *in[3] = {x, param(ad, na), param(ad, nb)};
    hook_arg arg = {lin};
    char label[256];
    snprintf(label, sizeof label, "lora hook %s r %d", lin->name, r);
    tu_gradcheck(ctx, label, fwd_hook, in, 3, &arg, NULL);
    ck_assert_ptr_null(peft_tensor_grad(lin->w)); /* W stays frozen */
    /* the hook equals x W^T + b + s (x A^T) B^T computed here in double */
    peft_tensor *y;
    int prev = peft_set_grad_enabled(ctx, 0);
    TU_OK(ctx, fwd_hook(ctx, in, &arg, &y));
    const int64_t IN = lin->w->shape[1], OUT = lin->w->shape[0];
    const float *X = peft_tensor_data(x), *W = lin->w->data, *bb = lin->b ? lin->b->data : NULL;
    const float *A = peft_tensor_data(in[1]), *Bm = peft_tensor_data(in[2]), *Y = peft_tensor_data(y);
    const double s = rslora ? alpha / sqrt((double)r) : (double)alpha / r;
    double worst = 0, ymax = 1e-6;
    for (int64_t t = 0; t < rows; t++)
        for (int64_t oi = 0; oi < OUT; oi++) {
            double base = bb ? bb[oi] : 0, lora = 0;
            for (int64_t ii = 0; ii < IN; ii++) base += (double)X[t * IN + ii] * W[oi * IN + ii];
            for (int k = 0; k < r; k++) {
                double u = 0;
                for (int64_t ii = 0; ii < IN; ii++) u += (double)X[t * IN + ii] * A[k * IN + ii];
                lora += u * Bm[oi * r + k];
            }
            double want = base + s * lora;
            worst = fmax(worst, fabs(Y[t * OUT + oi] - want));
            ymax = fmax(ymax, fabs(want));
        }
    ck_assert_msg(worst / ymax <= 1e-5, "%s: hook output off by %g", label, worst / ymax);
    peft_graph_release(ctx);
    peft_set_grad_enabled(ctx, prev);
    peft_tensor_destroy(x);
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(grad_hook)
{
    check_hook_grad(GOLDEN "gpt2", "c_attn", 3, 6.0f, 0, 0, 5);      /* with a bias, s = 2 */
    check_hook_grad(GOLDEN "gpt2", "all-linear", 1, 8.0f, 0, 3, 2);  /* mlp.c_proj: in 128 */
    check_hook_grad(GOLDEN "llama", "v_proj", 5, 3.0f, 1, 1, 3);     /* GQA v [16, 32], rsLoRA */
    check_hook_grad(GOLDEN "llama", "down_proj", 8, 8.0f, 0, 0, 1);  /* s = 1: no scale op */
}
END_TEST

/* Gradients of the whole model's loss with respect to A and B. */
typedef struct model_arg {
    peft_model *m;
    peft_tensor *ids;
} model_arg;

static peft_status fwd_model(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    (void)ctx;
    (void)in;
    model_arg *a = arg;
    return peft_model_forward(a->m, a->ids, out, NULL);
}

START_TEST(grad_through_model)
{
    peft_ctx *ctx = tu_ctx(2, 10);
    peft_model *m = tu_load_model(ctx, GOLDEN "llama", 0);
    peft_lora_opts o = peft_lora_opts_default();
    o.r = 2;
    o.targets = "q_proj,down_proj";
    peft_adapter *ad = attach(m, &o);
    randomize_B(ad, 0.3f);
    int32_t v[6];
    fill_ids(v, 1, 6, 96);
    int64_t s[2] = {1, 6};
    model_arg arg = {m, tu_ids(ctx, 2, s, v)};
    peft_tensor *in[4];
    const char *names[4] = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                            "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
                            "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"};
    for (int i = 0; i < 4; i++) in[i] = param(ad, names[i]);
    tu_gradcheck_opts go = tu_gradcheck_defaults();
    go.max_checks = 16;
    /* float noise of a whole forward: a larger step and looser tolerances
     * than for one op (the hook itself is checked tightly above) */
    go.h = 3e-2;
    go.rtol = 5e-3;
    go.atol = 5e-4;
    tu_gradcheck(ctx, "lora through llama", fwd_model, in, 4, &arg, &go);
    peft_tensor_destroy(arg.ids);
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: the saved file has PEFT's keys and shapes and loads back ---- */

START_TEST(io_save_load)
{
    peft_ctx *ctx = tu_ctx(2, 11);
    peft_model *m = tu_load_model(ctx, GOLDEN "gpt2", 0);
    peft_adapter *ad = attach(m, NULL);
    randomize_B(ad, 0.2f);
    int32_t ids[12];
    fill_ids(ids, 2, 6, 96);
    size_t n;
    float *want = tu_logits(ctx, m, ids, 2, 6, &n);
    char tmpl[] = "/tmp/peft_lora_XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmpl);
    TU_OK(ctx, peft_adapter_save(ad, path));
    peft_adapter_destroy(ad);

    peft_safetensors *sf = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, path, &sf));
    ck_assert_uint_eq(peft_safetensors_count(sf), 4);
    const char *keys[4] = {"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
                           "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
                           "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight",
                           "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"};
    for (int i = 0; i < 4; i++) {
        size_t idx;
        int nd;
        int64_t shape[PEFT_MAX_DIMS];
        TU_OK(ctx, peft_safetensors_find(sf, keys[i], &idx));
        TU_OK(ctx, peft_safetensors_info(sf, idx, NULL, NULL, NULL, &nd, shape));
        ck_assert_int_eq(nd, 2);
        ck_assert_int_eq(shape[0], i % 2 ? 96 : 8);
        ck_assert_int_eq(shape[1], i % 2 ? 8 : 32);
    }
    peft_safetensors_close(sf);

    ad = attach(m, NULL);
    TU_OK(ctx, peft_adapter_load(ad, path));
    float *got = tu_logits(ctx, m, ids, 2, 6, &n);
    ck_assert(memcmp(got, want, n * sizeof *got) == 0);
    peft_adapter_destroy(ad);
    unlink(path);
    rmdir(tmpl);
    free(got), free(want);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *lora_suite(void)
{
    Suite *s = suite_create("lora");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_defaults_and_registry);
    tcase_add_test(tc, api_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_attach_golden);
    tcase_add_test(tc, numerics_counts_like_hf);
    tcase_add_test(tc, numerics_merge_unmerge);
    tcase_add_test(tc, numerics_dropout_only_in_training);
    tcase_add_test(tc, numerics_frozen_base);
    tcase_add_test(tc, numerics_sgd_lowers_loss);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_hook);
    tcase_add_test(tc, grad_through_model);
    suite_add_tcase(s, tc);
    tc = tcase_create("io");
    tcase_add_test(tc, io_save_load);
    suite_add_tcase(s, tc);
    return s;
}
