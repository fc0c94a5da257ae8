/* The IA3 strategy: PEFT's names, shapes and defaults; a no-op at step 0; the
 * hook's gradients for output and input scaling; merge and exact unmerge;
 * frozen base weights; a few SGD steps lower the loss; errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "nn/model_internal.h"
#include "util/testutil.h"

#define GOLDEN "tests/golden/"

static void fill_ids(int32_t *ids, int64_t B, int64_t T, int64_t V)
{
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 7 + 3 + (i / T) * 5) % V);
}

static peft_adapter *attach(peft_model *m, const peft_ia3_opts *o)
{
    peft_adapter *ad = NULL;
    peft_status st = peft_adapter_attach(m, "ia3", NULL, o, &ad);
    ck_assert_msg(st == PEFT_OK, "attach ia3: %s", peft_ctx_errmsg(peft_model_ctx(m)));
    return ad;
}

/* Every vector gets 1 + N(0, std). */
static void randomize(peft_adapter *ad, float std)
{
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        peft_tensor *t;
        TU_OK(peft_adapter_ctx(ad), peft_adapter_trainable(ad, i, NULL, &t, NULL));
        TU_OK(peft_adapter_ctx(ad), peft_tensor_init_normal(t, 1.0f, std));
    }
}

/* ---- api ---- */

START_TEST(api_defaults_and_errors)
{
    peft_ia3_opts o = peft_ia3_opts_default();
    ck_assert_uint_eq(o.struct_size, sizeof o);
    ck_assert_ptr_null(o.targets);
    ck_assert_ptr_null(o.feedforward);
    peft_ctx *ctx = tu_ctx(1, 1);
    int found = 0;
    for (size_t i = 0; i < peft_strategy_count(ctx); i++) found += !strcmp(peft_strategy_name(ctx, i), "ia3");
    ck_assert_int_eq(found, 1);
    peft_model *m = tu_load_model(ctx, GOLDEN "llama", 0);
    peft_adapter *ad = NULL;
    o.targets = "c_attn";
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "ia3", NULL, &o, &ad), PEFT_ERR_INVALID_ARG,
                   "ia3: targets 'c_attn' match no module of this model");
    ck_assert_ptr_null(ad);
    o.targets = "";
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "ia3", NULL, &o, &ad), PEFT_ERR_INVALID_ARG, "match no module");
    o.targets = "k_proj,v_proj";
    o.feedforward = "down_proj"; /* PEFT: feedforward must be a subset of the targets */
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "ia3", NULL, &o, &ad), PEFT_ERR_INVALID_ARG,
                   "ia3: feedforward module model.layers.0.mlp.down_proj is not among the targets 'k_proj,v_proj'");
    o = peft_ia3_opts_default();
    o.struct_size = 4;
    TU_EXPECT_FAIL(ctx, peft_adapter_attach(m, "ia3", NULL, &o, &ad), PEFT_ERR_INVALID_ARG, "ia3: options struct_size 4");
    /* targets without feedforward: the default feed-forward set applies to targeted modules only */
    o = peft_ia3_opts_default();
    o.targets = "k_proj";
    ad = attach(m, &o);
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), 2 * 16);
    TU_EXPECT_FAIL(ctx, peft_adapter_unmerge(ad), PEFT_ERR_STATE, "not merged");
    TU_OK(ctx, peft_adapter_merge(ad));
    TU_EXPECT_FAIL(ctx, peft_adapter_merge(ad), PEFT_ERR_STATE, "already merged");
    TU_OK(ctx, peft_adapter_unmerge(ad));
    TU_EXPECT_FAIL(ctx, peft_adapter_unmerge(ad), PEFT_ERR_STATE, "not merged");
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    /* a bf16 base cannot be merged (and nothing changes) */
    m = tu_load_model(ctx, GOLDEN "llama/model.bf16.safetensors", 1);
    ad = attach(m, NULL);
    TU_EXPECT_FAIL(ctx, peft_adapter_merge(ad), PEFT_ERR_DTYPE, "only f32 weights can be merged");
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- numerics ---- */

typedef struct want_vec {
    const char *name;
    int64_t rows, cols; /* [out, 1] (output scaling) or [1, in] (feed-forward) */
} want_vec;

static void check_attach(const char *dir, const peft_ia3_opts *o, const want_vec *want, size_t n_want, int64_t count)
{
    peft_ctx *ctx = tu_ctx(2, 3);
    peft_model *m = tu_load_model(ctx, dir, 0);
    const int64_t B = 2, T = 7, V = peft_model_get_config(m)->vocab_size;
    int32_t ids[14];
    fill_ids(ids, B, T, V);
    size_t n;
    float *base = tu_logits(ctx, m, ids, B, T, &n);
    peft_adapter *ad = attach(m, o);
    ck_assert_int_eq(peft_adapter_trainable_numel(ad), count);
    ck_assert_uint_eq(peft_adapter_n_trainable(ad), n_want);
    for (size_t i = 0; i < n_want; i++) {
        const char *name;
        peft_tensor *t;
        TU_OK(ctx, peft_adapter_trainable(ad, i, &name, &t, NULL));
        ck_assert_str_eq(name, want[i].name);
        ck_assert_int_eq(peft_tensor_ndim(t), 2);
        ck_assert_int_eq(peft_tensor_dim(t, 0), want[i].rows);
        ck_assert_int_eq(peft_tensor_dim(t, 1), want[i].cols);
        const float *d = peft_tensor_data(t);
        for (int64_t j = 0; j < peft_tensor_numel(t); j++) ck_assert(d[j] == 1.0f);
    }
    size_t n2;
    float *step0 = tu_logits(ctx, m, ids, B, T, &n2);
    ck_assert_uint_eq(n, n2);
    ck_assert_msg(memcmp(base, step0, n * sizeof *base) == 0, "%s: logits at step 0 differ from the base", dir);
    free(step0);
    free(base);
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_attach_golden)
{
    /* gpt2 defaults: c_attn scaled at its output [96], mlp.c_proj at its input [128] */
    const want_vec g[] = {
        {"base_model.model.transformer.h.0.attn.c_attn.ia3_l", 96, 1},
        {"base_model.model.transformer.h.0.mlp.c_proj.ia3_l", 1, 128},
        {"base_model.model.transformer.h.1.attn.c_attn.ia3_l", 96, 1},
        {"base_model.model.transformer.h.1.mlp.c_proj.ia3_l", 1, 128},
    };
    check_attach(GOLDEN "gpt2", NULL, g, 4, 2 * (96 + 128));
    /* llama defaults (GQA): k, v [16] at the output, down_proj [48] at the input */
    const want_vec l[] = {
        {"base_model.model.model.layers.0.self_attn.k_proj.ia3_l", 16, 1},
        {"base_model.model.model.layers.0.self_attn.v_proj.ia3_l", 16, 1},
        {"base_model.model.model.layers.0.mlp.down_proj.ia3_l", 1, 48},
        {"base_model.model.model.layers.1.self_attn.k_proj.ia3_l", 16, 1},
        {"base_model.model.model.layers.1.self_attn.v_proj.ia3_l", 16, 1},
        {"base_model.model.model.layers.1.mlp.down_proj.ia3_l", 1, 48},
    };
    check_attach(GOLDEN "llama", NULL, l, 6, 2 * (16 + 16 + 48));
    /* explicit lists: q at the output, up_proj as feed-forward (input [32]) */
    peft_ia3_opts o = peft_ia3_opts_default();
    o.targets = "q_proj,up_proj";
    o.feedforward = "up_proj";
    const want_vec e[] = {
        {"base_model.model.model.layers.0.self_attn.q_proj.ia3_l", 32, 1},
        {"base_model.model.model.layers.0.mlp.up_proj.ia3_l", 1, 32},
        {"base_model.model.model.layers.1.self_attn.q_proj.ia3_l", 32, 1},
        {"base_model.model.model.layers.1.mlp.up_proj.ia3_l", 1, 32},
    };
    check_attach(GOLDEN "llama", &o, e, 4, 2 * (32 + 32));
}
END_TEST

/* Index of the model parameter "<module>.<what>". */
static size_t param_index(peft_model *m, const char *module, const char *what)
{
    char want[160];
    snprintf(want, sizeof want, "%s.%s", module, what);
    for (size_t i = 0; i < peft_model_n_params(m); i++) {
        const char *pn;
        TU_OK(peft_model_ctx(m), peft_model_param(m, i, &pn, NULL));
        if (!strcmp(pn, want)) return i;
    }
    ck_abort_msg("no parameter %s", want);
    return 0;
}

/* Merged logits equal the unmerged adapter's; unmerge restores W and b bit for bit. */
static void check_merge(const char *dir, const peft_ia3_opts *o)
{
    peft_ctx *ctx = tu_ctx(2, 5);
    peft_model *m = tu_load_model(ctx, dir, 0);
    const int64_t B = 2, T = 6, V = peft_model_get_config(m)->vocab_size;
    int32_t ids[12];
    fill_ids(ids, B, T, V);
    const size_t np = peft_model_n_params(m);
    float **orig = calloc(np, sizeof *orig);
    for (size_t i = 0; i < np; i++) {
        peft_tensor *p;
        TU_OK(ctx, peft_model_param(m, i, NULL, &p));
        orig[i] = malloc(peft_tensor_nbytes(p));
        memcpy(orig[i], peft_tensor_data(p), peft_tensor_nbytes(p));
    }
    peft_adapter *ad = attach(m, o);
    randomize(ad, 0.3f);
    size_t n;
    float *unmerged = tu_logits(ctx, m, ids, B, T, &n);
    TU_OK(ctx, peft_adapter_merge(ad));
    float *merged = tu_logits(ctx, m, ids, B, T, &n);
    double e = tu_max_rel_err(merged, unmerged, n);
    ck_assert_msg(e <= 1e-5, "%s: merged vs unmerged logits: relative error %g", dir, e);
    /* each targeted weight is scaled by rows or columns; the bias of an output-scaled one too */
    for (size_t i = 0; i < peft_model_n_linears(m); i++) {
        const char *lname;
        peft_tensor *w, *b;
        TU_OK(ctx, peft_model_linear(m, i, &lname, &w, &b));
        const size_t pi = param_index(m, lname, "weight");
        const float *W = peft_tensor_data(w), *W0 = orig[pi];
        const int64_t OC = peft_tensor_dim(w, 0), C = peft_tensor_dim(w, 1);
        peft_tensor *l = NULL;
        for (size_t k = 0; k < peft_adapter_n_trainable(ad); k++) {
            const char *tn;
            peft_tensor *t;
            TU_OK(ctx, peft_adapter_trainable(ad, k, &tn, &t, NULL));
            char want[256];
            snprintf(want, sizeof want, "base_model.model.%s.ia3_l", lname);
            if (!strcmp(tn, want)) l = t;
        }
        if (!l) {
            ck_assert(memcmp(W, W0, peft_tensor_nbytes(w)) == 0);
            continue;
        }
        const float *ld = peft_tensor_data(l);
        const bool ff = peft_tensor_dim(l, 0) == 1;
        for (int64_t oi = 0; oi < OC; oi++)
            for (int64_t ii = 0; ii < C; ii++)
                ck_assert(W[oi * C + ii] == W0[oi * C + ii] * (ff ? ld[ii] : ld[oi]));
        if (b) {
            const float *bd = peft_tensor_data(b), *b0 = orig[param_index(m, lname, "bias")];
            for (int64_t oi = 0; oi < OC; oi++) ck_assert(bd[oi] == (ff ? b0[oi] : b0[oi] * ld[oi]));
        }
    }
    TU_OK(ctx, peft_adapter_unmerge(ad));
    for (size_t i = 0; i < np; i++) {
        const char *pn;
        peft_tensor *p;
        TU_OK(ctx, peft_model_param(m, i, &pn, &p));
        ck_assert_msg(memcmp(peft_tensor_data(p), orig[i], peft_tensor_nbytes(p)) == 0, "%s: %s not restored", dir, pn);
    }
    float *again = tu_logits(ctx, m, ids, B, T, &n);
    ck_assert(memcmp(again, unmerged, n * sizeof *again) == 0);
    peft_adapter_destroy(ad);
    free(again), free(merged), free(unmerged);
    for (size_t i = 0; i < np; i++) free(orig[i]);
    free(orig);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_merge_unmerge)
{
    check_merge(GOLDEN "gpt2", NULL);
    check_merge(GOLDEN "llama", NULL);
    peft_ia3_opts o = peft_ia3_opts_default();
    o.targets = "all-linear";
    o.feedforward = "c_fc,mlp.c_proj"; /* GPT-2: c_fc with a bias, scaled at its input */
    check_merge(GOLDEN "gpt2", &o);
}
END_TEST

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
    peft_adapter *ad = attach(m, NULL);
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

/* ---- grad ---- */

typedef struct hook_arg {
    peft__linear *lin;
} hook_arg;

static peft_status fwd_hook(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out)
{
    peft__linear *lin = ((hook_arg *)arg)->lin;
    return lin->hook(ctx, in[0], lin->w, lin->b, lin->hook_user, out);
}

/* The hook of projection `module` against finite differences (x and l) and
 * against l ⊙ (x W^T + b) or (l ⊙ x) W^T + b computed here in double. */
static void check_hook_grad(const char *dir, const peft_ia3_opts *o, const char *module, int64_t rows)
{
    peft_ctx *ctx = tu_ctx(2, 9);
    peft_model *m = tu_load_model(ctx, dir, 0);
    peft_adapter *ad = attach(m, o);
    randomize(ad, 0.5f);
    peft__linear *lin = NULL;
    for (size_t i = 0; i < m->n_linears; i++)
        if (!strcmp(m->linears[i]->name, module)) lin = m->linears[i];
    ck_assert_ptr_nonnull(lin);
    ck_assert_ptr_nonnull(lin->hook);
    peft_tensor *l = NULL;
    char want[256];
    snprintf(want, sizeof want, "base_model.model.%s.ia3_l", module);
    for (size_t k = 0; k < peft_adapter_n_trainable(ad); k++) {
        const char *tn;
        peft_tensor *t;
        TU_OK(ctx, peft_adapter_trainable(ad, k, &tn, &t, NULL));
        if (!strcmp(tn, want)) l = t;
    }
    ck_assert_ptr_nonnull(l);
    const int64_t IN = lin->w->shape[1], OUT = lin->w->shape[0];
    const int64_t xs[3] = {2, rows, IN};
    peft_tensor *x = tu_randn(ctx, 3, xs, 1.0f, 1);
    peft_tensor *in[2] = {x, l};
    hook_arg arg = {lin};
    tu_gradcheck(ctx, module, fwd_hook, in, 2, &arg, NULL);
    ck_assert_ptr_null(peft_tensor_grad(lin->w));
    peft_tensor *y;
    int prev = peft_set_grad_enabled(ctx, 0);
    TU_OK(ctx, fwd_hook(ctx, in, &arg, &y));
    const bool ff = peft_tensor_dim(l, 0) == 1;
    const float *X = peft_tensor_data(x), *W = lin->w->data, *bb = lin->b ? lin->b->data : NULL;
    const float *L = peft_tensor_data(l), *Y = peft_tensor_data(y);
    double worst = 0, ymax = 1e-6;
    for (int64_t t = 0; t < 2 * rows; t++)
        for (int64_t oi = 0; oi < OUT; oi++) {
            double acc = 0;
            for (int64_t ii = 0; ii < IN; ii++) acc += (double)X[t * IN + ii] * W[oi * IN + ii] * (ff ? L[ii] : 1.0f);
            double wantv = ff ? acc + (bb ? bb[oi] : 0) : (acc + (bb ? bb[oi] : 0)) * L[oi];
            worst = fmax(worst, fabs(Y[t * OUT + oi] - wantv));
            ymax = fmax(ymax, fabs(wantv));
        }
    ck_assert_msg(worst / ymax <= 1e-5, "%s: hook output off by %g", module, worst / ymax);
    peft_graph_release(ctx);
    peft_set_grad_enabled(ctx, prev);
    peft_tensor_destroy(x);
    peft_adapter_destroy(ad);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(grad_hook)
{
    check_hook_grad(GOLDEN "gpt2", NULL, "transformer.h.1.attn.c_attn", 3);     /* output, with a bias */
    check_hook_grad(GOLDEN "gpt2", NULL, "transformer.h.0.mlp.c_proj", 5);      /* input, with a bias */
    check_hook_grad(GOLDEN "llama", NULL, "model.layers.1.self_attn.v_proj", 1); /* output, GQA [16] */
    check_hook_grad(GOLDEN "llama", NULL, "model.layers.0.mlp.down_proj", 4);   /* input [48] */
}
END_TEST

/* ---- io ---- */

START_TEST(io_save_load)
{
    peft_ctx *ctx = tu_ctx(2, 11);
    peft_model *m = tu_load_model(ctx, GOLDEN "llama", 0);
    peft_adapter *ad = attach(m, NULL);
    randomize(ad, 0.2f);
    int32_t ids[12];
    fill_ids(ids, 2, 6, 96);
    size_t n;
    float *want = tu_logits(ctx, m, ids, 2, 6, &n);
    char tmpl[] = "/tmp/peft_ia3_XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmpl);
    TU_OK(ctx, peft_adapter_save(ad, path));
    peft_adapter_destroy(ad);
    peft_safetensors *sf = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, path, &sf));
    ck_assert_uint_eq(peft_safetensors_count(sf), 6);
    size_t idx;
    int nd;
    int64_t shape[PEFT_MAX_DIMS];
    TU_OK(ctx, peft_safetensors_find(sf, "base_model.model.model.layers.1.mlp.down_proj.ia3_l", &idx));
    TU_OK(ctx, peft_safetensors_info(sf, idx, NULL, NULL, NULL, &nd, shape));
    ck_assert(nd == 2 && shape[0] == 1 && shape[1] == 48);
    TU_OK(ctx, peft_safetensors_find(sf, "base_model.model.model.layers.0.self_attn.k_proj.ia3_l", &idx));
    TU_OK(ctx, peft_safetensors_info(sf, idx, NULL, NULL, NULL, &nd, shape));
    ck_assert(nd == 2 && shape[0] == 16 && shape[1] == 1);
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

Suite *ia3_suite(void)
{
    Suite *s = suite_create("ia3");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_defaults_and_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_attach_golden);
    tcase_add_test(tc, numerics_merge_unmerge);
    tcase_add_test(tc, numerics_frozen_base);
    tcase_add_test(tc, numerics_sgd_lowers_loss);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_hook);
    suite_add_tcase(s, tc);
    tc = tcase_create("io");
    tcase_add_test(tc, io_save_load);
    suite_add_tcase(s, tc);
    return s;
}
