/* Models against PyTorch: tiny GPT-2 and Llama fixtures made by
 * tests/golden/gen.py (logits, hidden states, loss and every gradient), in
 * every file format and dtype the loader reads; save/load round trips; and
 * errors for files that disagree with their config. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "util/testutil.h"

#define GOLDEN "tests/golden/"

/* Expected tensor `name` from <dir>/expected.safetensors into a malloc'd buffer. */
static float *expected(peft_ctx *ctx, const char *dir, const char *name, size_t *n)
{
    char path[512];
    snprintf(path, sizeof path, GOLDEN "%s/expected.safetensors", dir);
    peft_safetensors *st = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    size_t idx;
    TU_OK(ctx, peft_safetensors_find(st, name, &idx));
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_safetensors_load(st, idx, PEFT_DTYPE_COUNT, &t));
    *n = (size_t)peft_tensor_numel(t);
    float *buf = malloc(*n * sizeof *buf);
    if (peft_tensor_dtype(t) == PEFT_DTYPE_I32) {
        TU_OK(ctx, peft_tensor_copy_out(t, buf, PEFT_DTYPE_I32, *n));
    } else {
        TU_OK(ctx, peft_tensor_get_f32(t, buf, *n));
    }
    peft_tensor_destroy(t);
    peft_safetensors_close(st);
    return buf;
}

static peft_tensor *batch_ids(peft_ctx *ctx, const char *dir)
{
    size_t n;
    int32_t *ids = (int32_t *)expected(ctx, dir, "input_ids", &n);
    ck_assert_uint_eq(n, 16);
    int64_t s[2] = {2, 8};
    peft_tensor *t = tu_ids(ctx, 2, s, ids);
    free(ids);
    return t;
}

/* logits of the fixture batch compared with expected[name] */
static double logits_err(peft_ctx *ctx, peft_model *m, const char *dir, const char *name)
{
    peft_tensor *ids = batch_ids(ctx, dir), *logits;
    int prev = peft_set_grad_enabled(ctx, 0);
    TU_OK(ctx, peft_model_forward(m, ids, &logits, NULL));
    size_t n;
    float *want = expected(ctx, dir, name, &n);
    ck_assert_int_eq(peft_tensor_numel(logits), (int64_t)n);
    double err = tu_max_rel_err(peft_tensor_data(logits), want, n);
    free(want);
    peft_graph_release(ctx);
    peft_set_grad_enabled(ctx, prev);
    peft_tensor_destroy(ids);
    return err;
}

static void check_everything(const char *dir)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    char path[256];
    snprintf(path, sizeof path, GOLDEN "%s", dir);
    peft_model *m = tu_load_model(ctx, path, 0);
    const peft_model_config *c = peft_model_get_config(m);
    peft_tensor *ids = batch_ids(ctx, dir);
    /* forward with hidden states */
    peft_tensor *logits, *hidden[8];
    TU_OK(ctx, peft_model_forward(m, ids, &logits, hidden));
    size_t n;
    float *want = expected(ctx, dir, "logits", &n);
    double e = tu_max_rel_err(peft_tensor_data(logits), want, n);
    ck_assert_msg(e <= 1e-4, "%s logits: relative error %g", dir, e);
    free(want);
    for (int64_t l = 0; l < c->n_layer; l++) {
        char name[32];
        snprintf(name, sizeof name, "hidden.%lld", (long long)l);
        want = expected(ctx, dir, name, &n);
        e = tu_max_rel_err(peft_tensor_data(hidden[l]), want, n);
        ck_assert_msg(e <= 1e-4, "%s %s: relative error %g", dir, name, e);
        free(want);
    }
    peft_graph_release(ctx);
    /* loss and every gradient */
    TU_OK(ctx, peft_model_set_trainable(m, 1));
    peft_tensor *loss;
    TU_OK(ctx, peft_model_lm_loss(m, ids, NULL, &loss));
    float lv;
    TU_OK(ctx, peft_backward(ctx, loss, &lv));
    want = expected(ctx, dir, "loss", &n);
    ck_assert_msg(fabs(lv - want[0]) <= 1e-4 * fabs(want[0]), "%s loss %.7f vs %.7f", dir, lv, want[0]);
    free(want);
    size_t checked = 0;
    for (size_t i = 0; i < peft_model_n_params(m); i++) {
        const char *pname;
        peft_tensor *p;
        TU_OK(ctx, peft_model_param(m, i, &pname, &p));
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", pname);
        want = expected(ctx, dir, gname, &n);
        ck_assert_int_eq(peft_tensor_numel(p), (int64_t)n);
        const float *g = peft_tensor_grad(p);
        ck_assert_ptr_nonnull(g);
        float *got = malloc(n * sizeof *got);
        bool conv1d = strstr(pname, "c_attn.weight") || strstr(pname, "c_proj.weight") || strstr(pname, "c_fc.weight");
        if (conv1d) { /* fixtures hold the HF [in, out] layout; we hold [out, in] */
            int64_t R = peft_tensor_dim(p, 0), C = peft_tensor_dim(p, 1);
            for (int64_t r = 0; r < R; r++)
                for (int64_t cc = 0; cc < C; cc++) got[cc * R + r] = g[r * C + cc];
        } else {
            memcpy(got, g, n * sizeof *got);
        }
        e = tu_max_rel_err(got, want, n);
        ck_assert_msg(e <= 1e-3, "%s grad of %s: relative error %g", dir, pname, e);
        free(got), free(want);
        checked++;
    }
    ck_assert_uint_gt(checked, 10);
    peft_tensor_destroy(ids);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_gpt2_against_torch) { check_everything("gpt2"); }
END_TEST
START_TEST(numerics_llama_against_torch) { check_everything("llama"); }
END_TEST
START_TEST(numerics_llama_tied_against_torch) { check_everything("llama-tied"); }
END_TEST

START_TEST(io_every_format_and_dtype)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    static const struct {
        const char *path, *dir, *logits;
        int keep;
        double tol;
    } cases[] = {
        {GOLDEN "gpt2-sharded", "gpt2", "logits", 0, 1e-4},
        {GOLDEN "gpt2/model.safetensors", "gpt2", "logits", 0, 1e-4},
        {GOLDEN "gpt2/model.f16.safetensors", "gpt2", "logits_f16", 0, 1e-4},
        {GOLDEN "gpt2/model.f16.safetensors", "gpt2", "logits_f16", 1, 1e-4},
        {GOLDEN "gpt2/model.bf16.safetensors", "gpt2", "logits_bf16", 1, 1e-4},
        {GOLDEN "llama/model.f16.safetensors", "llama", "logits_f16", 1, 1e-4},
        {GOLDEN "llama/model.bf16.safetensors", "llama", "logits_bf16", 0, 1e-4},
        {GOLDEN "llama-tied/model.bf16.safetensors", "llama-tied", "logits_bf16", 1, 1e-4},
        {GOLDEN "llama/model.gguf", "llama", "logits", 0, 1e-4},
        {GOLDEN "llama/model.q8_0.gguf", "llama", "logits_q8_0", 0, 1e-4},
        {GOLDEN "llama/model.q8_0.gguf", "llama", "logits_q8_0", 1, 1e-4}, /* kept as q8_0 blocks */
        {GOLDEN "llama/model.bin", "llama", "logits", 0, 1e-4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        peft_model *m = tu_load_model(ctx, cases[i].path, cases[i].keep);
        double e = logits_err(ctx, m, cases[i].dir, cases[i].logits);
        ck_assert_msg(e <= cases[i].tol, "%s (keep %d): logits error %g", cases[i].path, cases[i].keep, e);
        peft_model_destroy(m);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_save_load_round_trip)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    const char *dirs[] = {"gpt2", "llama"};
    for (int d = 0; d < 2; d++) {
        char path[256], tmpl[] = "/tmp/peft_model_XXXXXX";
        snprintf(path, sizeof path, GOLDEN "%s", dirs[d]);
        peft_model *m = tu_load_model(ctx, path, 0);
        ck_assert_ptr_nonnull(mkdtemp(tmpl));
        char out[512];
        snprintf(out, sizeof out, "%s/saved", tmpl);
        TU_OK(ctx, peft_model_save(m, out));
        peft_model *m2 = tu_load_model(ctx, out, 0);
        ck_assert_uint_eq(peft_model_n_params(m), peft_model_n_params(m2));
        for (size_t i = 0; i < peft_model_n_params(m); i++) {
            peft_tensor *a, *b;
            const char *na, *nb;
            TU_OK(ctx, peft_model_param(m, i, &na, &a));
            TU_OK(ctx, peft_model_param(m2, i, &nb, &b));
            ck_assert_str_eq(na, nb);
            ck_assert(memcmp(peft_tensor_data(a), peft_tensor_data(b), peft_tensor_nbytes(a)) == 0);
        }
        ck_assert_double_le(logits_err(ctx, m2, dirs[d], "logits"), 1e-4);
        peft_model_destroy(m), peft_model_destroy(m2);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpl);
        ck_assert_int_eq(system(cmd), 0);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

/* Copy a fixture directory and damage its config, then expect a clear error. */
static void expect_config_error(const char *json_edit, peft_status code, const char *needle)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    char tmpl[] = "/tmp/peft_badcfg_XXXXXX", cmd[1024];
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(cmd, sizeof cmd, "cp " GOLDEN "gpt2/model.safetensors %s/ && sed '%s' " GOLDEN "gpt2/config.json > %s/config.json",
             tmpl, json_edit, tmpl);
    ck_assert_int_eq(system(cmd), 0);
    peft_model *m = NULL;
    TU_EXPECT_FAIL(ctx, peft_model_load(ctx, tmpl, NULL, &m), code, needle);
    ck_assert_ptr_null(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpl);
    ck_assert_int_eq(system(cmd), 0);
    peft_ctx_destroy(ctx);
}

START_TEST(io_bad_checkpoints)
{
    /* a config that disagrees with the tensors */
    expect_config_error("s/\"n_embd\": 32/\"n_embd\": 64/", PEFT_ERR_SHAPE, "transformer.wte.weight' has shape [96, 32]");
    expect_config_error("s/\"n_layer\": 2/\"n_layer\": 3/", PEFT_ERR_FORMAT, "transformer.h.2.ln_1.weight' is missing");
    expect_config_error("s/\"model_type\": \"gpt2\"/\"model_type\": \"bert\"/", PEFT_ERR_UNSUPPORTED, "model_type \"bert\"");
    expect_config_error("s/\"n_head\": 4/\"n_head\": 5/", PEFT_ERR_INVALID_ARG, "not a multiple of n_head 5");
    expect_config_error("s/\"vocab_size\": 96/\"vocab_size\": \"x\"/", PEFT_ERR_FORMAT, "\"vocab_size\" is missing or not an integer");
    expect_config_error("s/{/[/", PEFT_ERR_FORMAT, "not a JSON object");

    peft_ctx *ctx = tu_ctx(1, 1);
    peft_model *m = NULL;
    TU_EXPECT_FAIL(ctx, peft_model_load(ctx, "/nonexistent/model", NULL, &m), PEFT_ERR_IO, "/nonexistent/model");
    TU_EXPECT_FAIL(ctx, peft_model_load(ctx, GOLDEN "README.md", NULL, &m), PEFT_ERR_FORMAT, "not a model file");
    TU_EXPECT_FAIL(ctx, peft_model_load(ctx, "tests", NULL, &m), PEFT_ERR_FORMAT, "without config.json");
    /* a truncated GGUF copy */
    char tmpl[] = "/tmp/peft_trunc_XXXXXX", cmd[1024], file[600];
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(file, sizeof file, "%s/model.gguf", tmpl);
    snprintf(cmd, sizeof cmd, "head -c 20000 " GOLDEN "llama/model.gguf > %s", file);
    ck_assert_int_eq(system(cmd), 0);
    peft_status st = peft_model_load(ctx, file, NULL, &m);
    ck_assert_msg(st == PEFT_ERR_FORMAT || st == PEFT_ERR_IO, "truncated gguf: %s", peft_status_name(st));
    ck_assert_ptr_nonnull(strstr(peft_ctx_errmsg(ctx), file));
    snprintf(file, sizeof file, "%s/model.bin", tmpl);
    snprintf(cmd, sizeof cmd, "head -c 5000 " GOLDEN "llama/model.bin > %s", file);
    ck_assert_int_eq(system(cmd), 0);
    st = peft_model_load(ctx, file, NULL, &m);
    ck_assert_msg(st == PEFT_ERR_FORMAT || st == PEFT_ERR_IO, "truncated llama2.c: %s", peft_status_name(st));
    /* a GGUF of an architecture we do not build, and one whose tensor disagrees with its metadata */
    const char *archs[2] = {"bert", "llama"};
    for (int k = 0; k < 2; k++) {
        peft_gguf_writer *w = NULL;
        TU_OK(ctx, peft_gguf_writer_create(ctx, &w));
        TU_OK(ctx, peft_gguf_writer_add_str(w, "general.architecture", archs[k]));
        char key[64];
        const char *keys[] = {"context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count"};
        const uint32_t vals[] = {16, 8, 1, 16, 2};
        for (int i = 0; i < 5; i++) {
            snprintf(key, sizeof key, "%s.%s", archs[k], keys[i]);
            TU_OK(ctx, peft_gguf_writer_add_u32(w, key, vals[i]));
        }
        snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", archs[k]);
        TU_OK(ctx, peft_gguf_writer_add_f32(w, key, 1e-5f));
        int64_t se[2] = {32, 6}, sq[2] = {8, 8}; /* the embedding should be [32, 8] */
        peft_tensor *emb = tu_randn(ctx, 2, se, 1, 0), *q = tu_randn(ctx, 2, sq, 1, 0);
        TU_OK(ctx, peft_gguf_writer_add_tensor(w, "token_embd.weight", emb, PEFT_DTYPE_F32));
        TU_OK(ctx, peft_gguf_writer_add_tensor(w, "blk.0.attn_q.weight", q, PEFT_DTYPE_F32));
        snprintf(file, sizeof file, "%s/arch.gguf", tmpl);
        TU_OK(ctx, peft_gguf_writer_write(w, file));
        peft_gguf_writer_destroy(w);
        peft_tensor_destroy(emb), peft_tensor_destroy(q);
        if (k == 0) {
            TU_EXPECT_FAIL(ctx, peft_model_load(ctx, file, NULL, &m), PEFT_ERR_UNSUPPORTED, "architecture \"bert\"");
        } else {
            TU_EXPECT_FAIL(ctx, peft_model_load(ctx, file, NULL, &m), PEFT_ERR_SHAPE,
                           "tensor 'model.embed_tokens.weight' has shape [32, 6], the config needs [32, 8]");
        }
        ck_assert_ptr_null(m);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpl);
    ck_assert_int_eq(system(cmd), 0);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_model_config_errors)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_model_config c = peft_model_config_default(PEFT_ARCH_LLAMA);
    c.n_kv_head = 4; /* 9 heads */
    peft_model *m = NULL;
    TU_EXPECT_FAIL(ctx, peft_model_create(ctx, &c, &m), PEFT_ERR_INVALID_ARG, "n_head 9 is not a multiple of n_kv_head 4");
    c = peft_model_config_default(PEFT_ARCH_GPT2);
    c.vocab_size = 0;
    TU_EXPECT_FAIL(ctx, peft_model_create(ctx, &c, &m), PEFT_ERR_INVALID_ARG, "vocab_size = 0");
    c = peft_model_config_default(PEFT_ARCH_GPT2);
    c.struct_size = 8;
    TU_EXPECT_FAIL(ctx, peft_model_create(ctx, &c, &m), PEFT_ERR_INVALID_ARG, "struct_size");
    TU_EXPECT_FAIL(ctx, peft_model_create(ctx, NULL, &m), PEFT_ERR_INVALID_ARG, "cfg is NULL");
    /* a small random model: parameter count and a sequence longer than the context */
    c = peft_model_config_default(PEFT_ARCH_GPT2);
    c.vocab_size = 50, c.n_ctx = 8, c.d_model = 16, c.n_layer = 2, c.n_head = 2, c.n_kv_head = 2, c.d_ff = 64;
    TU_OK(ctx, peft_model_create(ctx, &c, &m));
    /* wte + wpe + L * (ln 2*2C + attn 3C*C+3C + C*C+C + mlp C*F+F + F*C+C) + ln_f 2C */
    int64_t C = 16, F = 64, L = 2, V = 50;
    int64_t expect = V * C + 8 * C + L * (4 * C + 3 * C * C + 3 * C + C * C + C + C * F + F + F * C + C) + 2 * C;
    ck_assert_int_eq(peft_model_numel(m), expect);
    int32_t ids[10] = {0};
    int64_t s[2] = {1, 10};
    peft_tensor *t = tu_ids(ctx, 2, s, ids), *logits;
    TU_EXPECT_FAIL(ctx, peft_model_forward(m, t, &logits, NULL), PEFT_ERR_SHAPE, "longer than the model's context 8");
    int32_t bad[2] = {1, 77};
    int64_t s2[2] = {1, 2};
    peft_tensor *tb = tu_ids(ctx, 2, s2, bad);
    TU_EXPECT_FAIL(ctx, peft_model_forward(m, tb, &logits, NULL), PEFT_ERR_INVALID_ARG, "= 77 is out of range");
    peft_graph_release(ctx);
    peft_tensor_destroy(t), peft_tensor_destroy(tb);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Greedy generation with the cache equals re-running the whole sequence. */
START_TEST(numerics_generate_matches_full_forward)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    const char *dirs[] = {GOLDEN "gpt2", GOLDEN "llama"};
    for (int d = 0; d < 2; d++) {
        peft_model *m = tu_load_model(ctx, dirs[d], 0);
        int32_t seq[24] = {1, 17, 42, 5};
        size_t n = 0;
        peft_sample_opts o = peft_sample_opts_default();
        o.max_new = 12;
        o.stop_at_eos = 0;
        TU_OK(ctx, peft_model_generate(m, seq, 4, &o, seq + 4, 12, &n));
        ck_assert_uint_eq(n, 12);
        /* every generated token is the argmax of a full forward over its prefix */
        int prev = peft_set_grad_enabled(ctx, 0);
        for (int t = 4; t < 16; t++) {
            int64_t s[2] = {1, t};
            peft_tensor *ids = tu_ids(ctx, 2, s, seq), *logits;
            TU_OK(ctx, peft_model_forward(m, ids, &logits, NULL));
            const float *lg = (const float *)peft_tensor_data(logits) + (t - 1) * 96;
            int best = 0;
            for (int v = 1; v < 96; v++)
                if (lg[v] > lg[best]) best = v;
            ck_assert_int_eq(best, seq[t]);
            peft_graph_release(ctx);
            peft_tensor_destroy(ids);
        }
        peft_set_grad_enabled(ctx, prev);
        /* sampling is seeded */
        int32_t a[8], b[8];
        size_t na, nb;
        o.temperature = 1.0f, o.top_k = 20, o.top_p = 0.9f, o.seed = 5, o.max_new = 8;
        TU_OK(ctx, peft_model_generate(m, seq, 4, &o, a, 8, &na));
        TU_OK(ctx, peft_model_generate(m, seq, 4, &o, b, 8, &nb));
        ck_assert_uint_eq(na, nb);
        ck_assert(memcmp(a, b, na * sizeof *a) == 0);
        o.top_p = 0.0f;
        TU_EXPECT_FAIL(ctx, peft_model_generate(m, seq, 4, &o, a, 8, &na), PEFT_ERR_INVALID_ARG, "top_p 0");
        peft_model_destroy(m);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

/* The real stories260K model: the llama2.c and GGUF files give the same logits. */
START_TEST(numerics_stories260k_bin_equals_gguf)
{
    const char *dir = tu_models_dir();
    if (!dir) {
        printf("skip: ../shared/models is absent\n");
        return;
    }
    peft_ctx *ctx = tu_ctx(2, 1);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/stories260K.bin", dir);
    snprintf(b, sizeof b, "%s/stories260K.gguf", dir);
    peft_model *ma = tu_load_model(ctx, a, 0), *mb = tu_load_model(ctx, b, 0);
    ck_assert_ptr_nonnull(peft_model_tokenizer(ma));
    ck_assert_ptr_nonnull(peft_model_tokenizer(mb));
    int32_t ids[16] = {1, 403, 407, 261, 378, 11, 300, 301, 302, 303, 304, 305, 306, 307, 308, 2};
    int64_t s2[2] = {1, 16};
    peft_tensor *t = tu_ids(ctx, 2, s2, ids), *la, *lb;
    int prev = peft_set_grad_enabled(ctx, 0);
    TU_OK(ctx, peft_model_forward(ma, t, &la, NULL));
    TU_OK(ctx, peft_model_forward(mb, t, &lb, NULL));
    ck_assert_double_le(tu_max_rel_err(peft_tensor_data(la), peft_tensor_data(lb), 16 * 512), 1e-6);
    /* the model predicts sensible text: after "Once upon a time" comes "," (id 432) */
    const float *row = (const float *)peft_tensor_data(la) + 4 * 512;
    int best = 0;
    for (int v = 1; v < 512; v++)
        if (row[v] > row[best]) best = v;
    ck_assert_int_eq(best, 432);
    peft_graph_release(ctx);
    peft_set_grad_enabled(ctx, prev);
    peft_tensor_destroy(t);
    peft_model_destroy(ma), peft_model_destroy(mb);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_gpt2_against_torch);
    tcase_add_test(tc, numerics_llama_against_torch);
    tcase_add_test(tc, numerics_llama_tied_against_torch);
    tcase_add_test(tc, numerics_generate_matches_full_forward);
    tcase_add_test(tc, numerics_stories260k_bin_equals_gguf);
    suite_add_tcase(s, tc);
    tc = tcase_create("io");
    tcase_add_test(tc, io_every_format_and_dtype);
    tcase_add_test(tc, io_save_load_round_trip);
    tcase_add_test(tc, io_bad_checkpoints);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_model_config_errors);
    suite_add_tcase(s, tc);
    return s;
}
