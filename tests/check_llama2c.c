/* llama2.c checkpoints: synthetic v0/v1 files whose every float says where
 * it came from, the real stories260K.bin against stories260K.gguf, and
 * corrupted headers and sizes. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "util/testutil.h"

static char g_dir[64];

static void dir_setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/peft_l2c_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static void dir_teardown(void)
{
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(g_dir);
}

static const char *tmp_path(const char *name)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    return p;
}

/* ---- a synthetic checkpoint writer (independent of the reader) ---- */

typedef struct cfg {
    int32_t dim, hidden, layers, heads, kv_heads, vocab, seq; /* vocab as stored (v0: sign = sharing) */
} cfg;

/* Segment ids, used to tag every float: value = seg*100000 + layer*1000 + j. */
enum { EMB = 1, ATT_NORM, WQ, WK, WV, WO, FFN_NORM, W1, W2, W3, FINAL, FREQ_R, FREQ_I, CLS };

typedef struct fbuf {
    unsigned char *p;
    size_t len, cap;
} fbuf;

static void put(fbuf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_i32(fbuf *b, int32_t v) { put(b, &v, 4); }

/* One segment: `layers` consecutive arrays of n floats. */
static void put_seg(fbuf *b, int seg, int layers, size_t n)
{
    for (int l = 0; l < layers; l++)
        for (size_t j = 0; j < n; j++) {
            float v = (float)(seg * 100000 + l * 1000 + (int)j);
            put(b, &v, 4);
        }
}

static void put_weights(fbuf *b, const cfg *c, int version, int shared)
{
    size_t E = (size_t)c->dim, F = (size_t)c->hidden, V = (size_t)abs(c->vocab);
    size_t D = E / (size_t)c->heads, KV = D * (size_t)c->kv_heads;
    int L = c->layers;
    if (version == 0) {
        put_seg(b, EMB, 1, V * E);
        put_seg(b, ATT_NORM, L, E);
        put_seg(b, WQ, L, E * E);
        put_seg(b, WK, L, KV * E);
        put_seg(b, WV, L, KV * E);
        put_seg(b, WO, L, E * E);
        put_seg(b, FFN_NORM, L, E);
        put_seg(b, W1, L, F * E);
        put_seg(b, W2, L, E * F);
        put_seg(b, W3, L, F * E);
        put_seg(b, FINAL, 1, E);
        put_seg(b, FREQ_R, 1, (size_t)c->seq * D / 2);
        put_seg(b, FREQ_I, 1, (size_t)c->seq * D / 2);
    } else {
        put_seg(b, ATT_NORM, L, E);
        put_seg(b, FFN_NORM, L, E);
        put_seg(b, FINAL, 1, E);
        put_seg(b, EMB, 1, V * E);
        put_seg(b, WQ, L, E * E);
        put_seg(b, WK, L, KV * E);
        put_seg(b, WV, L, KV * E);
        put_seg(b, WO, L, E * E);
        put_seg(b, W1, L, F * E);
        put_seg(b, W2, L, E * F);
        put_seg(b, W3, L, F * E);
    }
    if (!shared) put_seg(b, CLS, 1, V * E);
}

static void put_header(fbuf *b, const cfg *c, int version, int shared_flag)
{
    if (version == 1) {
        put_i32(b, 0x616b3432);
        put_i32(b, 1);
    }
    const int32_t h[7] = {c->dim, c->hidden, c->layers, c->heads, c->kv_heads, c->vocab, c->seq};
    for (int i = 0; i < 7; i++) put_i32(b, h[i]);
    if (version == 1) {
        unsigned char flag = (unsigned char)shared_flag;
        put(b, &flag, 1);
        while (b->len < 256) put(b, "", 1);
    }
}

static void spit(const char *path, const fbuf *b)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b->p, 1, b->len, f), b->len);
    fclose(f);
}

static const cfg k_small = {8, 12, 2, 4, 2, 7, 3}; /* D = 2, KV = 4 */

/* The tag of the tensor named `name`: its segment and layer. */
static void expected_tag(const char *name, int *seg, int *layer)
{
    static const struct {
        const char *suffix;
        int seg;
    } map[] = {{"input_layernorm.weight", ATT_NORM},
               {"self_attn.q_proj.weight", WQ},
               {"self_attn.k_proj.weight", WK},
               {"self_attn.v_proj.weight", WV},
               {"self_attn.o_proj.weight", WO},
               {"post_attention_layernorm.weight", FFN_NORM},
               {"mlp.gate_proj.weight", W1},
               {"mlp.down_proj.weight", W2},
               {"mlp.up_proj.weight", W3}};
    *layer = 0;
    if (strcmp(name, "model.embed_tokens.weight") == 0) {
        *seg = EMB;
        return;
    }
    if (strcmp(name, "model.norm.weight") == 0) {
        *seg = FINAL;
        return;
    }
    if (strcmp(name, "lm_head.weight") == 0) {
        *seg = CLS;
        return;
    }
    int n = 0;
    ck_assert_int_eq(sscanf(name, "model.layers.%d.%n", layer, &n), 1);
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (strcmp(name + n, map[i].suffix) == 0) {
            *seg = map[i].seg;
            return;
        }
    ck_abort_msg("unexpected tensor name %s", name);
}

static void check_synthetic(int version, int shared)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base = peft_ctx_bytes_allocated(ctx);
    cfg c = k_small;
    if (version == 0 && !shared) c.vocab = -c.vocab;
    fbuf b = {0};
    put_header(&b, &c, version, shared);
    put_weights(&b, &c, version, shared);
    const char *path = tmp_path("m.bin");
    spit(path, &b);
    free(b.p);

    peft_llama2c *m = NULL;
    TU_OK(ctx, peft_llama2c_open(ctx, path, &m));
    peft_llama2c_config k;
    TU_OK(ctx, peft_llama2c_get_config(m, &k));
    ck_assert_int_eq(k.version, version);
    ck_assert_int_eq(k.dim, 8);
    ck_assert_int_eq(k.hidden_dim, 12);
    ck_assert_int_eq(k.n_layers, 2);
    ck_assert_int_eq(k.n_heads, 4);
    ck_assert_int_eq(k.n_kv_heads, 2);
    ck_assert_int_eq(k.vocab_size, 7);
    ck_assert_int_eq(k.seq_len, 3);
    ck_assert_int_eq(k.shared_classifier, shared);
    size_t n = peft_llama2c_n_tensors(m);
    ck_assert_uint_eq(n, 2 + 9 * 2 + (shared ? 0 : 1));

    static const char *const order[] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                                        "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm",
                                        "mlp.gate_proj", "mlp.down_proj", "mlp.up_proj"};
    static const int64_t shapes[9][2] = {{8, 1}, {8, 8}, {4, 8}, {4, 8}, {8, 8}, {8, 1}, {12, 8}, {8, 12}, {12, 8}};
    for (size_t i = 0; i < n; i++) {
        peft_llama2c_tensor_info info;
        TU_OK(ctx, peft_llama2c_get_tensor_info(m, i, &info));
        char want[96];
        int64_t r = 0, cc = 0;
        if (i == 0) {
            snprintf(want, sizeof want, "model.embed_tokens.weight");
            r = 7, cc = 8;
        } else if (i < 1 + 18) {
            size_t l = (i - 1) / 9, kk = (i - 1) % 9;
            snprintf(want, sizeof want, "model.layers.%zu.%s.weight", l, order[kk]);
            r = shapes[kk][0], cc = shapes[kk][1];
        } else if (i == 19) {
            snprintf(want, sizeof want, "model.norm.weight");
            r = 8, cc = 1;
        } else {
            snprintf(want, sizeof want, "lm_head.weight");
            r = 7, cc = 8;
        }
        ck_assert_str_eq(info.name, want);
        ck_assert_int_eq(info.ndim, cc == 1 ? 1 : 2);
        ck_assert_int_eq(info.shape[0], r);
        ck_assert_int_eq(info.numel, r * cc);
        size_t idx;
        TU_OK(ctx, peft_llama2c_find_tensor(m, want, &idx));
        ck_assert_uint_eq(idx, i);

        peft_tensor *t = NULL;
        TU_OK(ctx, peft_llama2c_load_tensor(m, i, PEFT_DTYPE_F32, &t));
        ck_assert_int_eq(peft_tensor_ndim(t), info.ndim);
        ck_assert_int_eq(peft_tensor_dim(t, 0), r);
        ck_assert_str_eq(peft_tensor_name(t), want);
        int seg, layer;
        expected_tag(want, &seg, &layer);
        const float *v = peft_tensor_data(t);
        for (int64_t j = 0; j < r * cc; j++)
            ck_assert_msg(v[j] == (float)(seg * 100000 + layer * 1000 + (int)j), "%s[%lld] = %g", want,
                          (long long)j, v[j]);
        peft_tensor_destroy(t);
        /* other storage dtypes */
        TU_OK(ctx, peft_llama2c_load_tensor(m, i, PEFT_DTYPE_BF16, &t));
        ck_assert_uint_eq(((uint16_t *)peft_tensor_data(t))[r * cc - 1],
                          peft__f32_to_bf16((float)(seg * 100000 + layer * 1000 + (int)(r * cc - 1))));
        peft_tensor_destroy(t);
    }
    peft_llama2c_close(m);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}

START_TEST(io_synthetic_v0_shared) { check_synthetic(0, 1); }
END_TEST
START_TEST(io_synthetic_v0_unshared) { check_synthetic(0, 0); }
END_TEST
START_TEST(io_synthetic_v1_shared) { check_synthetic(1, 1); }
END_TEST
START_TEST(io_synthetic_v1_unshared) { check_synthetic(1, 0); }
END_TEST

/* Write a header for c and the weights of k_small (with the classifier when
 * the header says unshared), plus `delta` extra (or fewer) bytes, and expect
 * open to fail with code and needle. */
static void expect_bad(peft_ctx *ctx, const cfg *c, int version, int shared_flag, long delta, peft_status code,
                       const char *needle)
{
    fbuf b = {0};
    put_header(&b, c, version, shared_flag);
    int shared = version == 0 ? c->vocab > 0 : shared_flag != 0;
    put_weights(&b, &k_small, version, shared);
    if (delta > 0)
        for (long i = 0; i < delta; i++) put(&b, "\0", 1);
    else
        b.len -= (size_t)(-delta);
    const char *path = tmp_path("bad.bin");
    spit(path, &b);
    free(b.p);
    peft_llama2c *m = (peft_llama2c *)0x1;
    peft_status st = peft_llama2c_open(ctx, path, &m);
    ck_assert_msg(st == code, "%s: expected %s, got %s (%s)", needle, peft_status_name(code), peft_status_name(st),
                  peft_ctx_errmsg(ctx));
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(peft_ctx_errmsg(ctx), path) != NULL, "message '%s' does not name the file",
                  peft_ctx_errmsg(ctx));
    ck_assert_msg(strstr(peft_ctx_errmsg(ctx), needle) != NULL, "message '%s' lacks '%s'", peft_ctx_errmsg(ctx),
                  needle);
}

START_TEST(io_corrupt_headers)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base = peft_ctx_bytes_allocated(ctx);
    cfg c;
    c = k_small, c.dim = -8;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "header dim is -8 (must be > 0)");
    c = k_small, c.layers = 0;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "header n_layers is 0");
    c = k_small, c.hidden = -1;
    expect_bad(ctx, &c, 1, 1, 0, PEFT_ERR_FORMAT, "header hidden_dim is -1");
    c = k_small, c.seq = 0;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "header seq_len is 0");
    c = k_small, c.vocab = 0;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "header vocab_size is 0");
    c = k_small, c.vocab = INT32_MIN;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "vocab_size is -2147483648");
    c = k_small, c.vocab = -7;
    expect_bad(ctx, &c, 1, 0, 0, PEFT_ERR_FORMAT, "header vocab_size is -7"); /* v1 has a flag instead */
    c = k_small, c.heads = 3;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "dim 8 is not a multiple of n_heads 3");
    c = k_small, c.kv_heads = 3;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "n_heads 4 is not a multiple of n_kv_heads 3");
    c = k_small, c.kv_heads = 8;
    expect_bad(ctx, &c, 1, 1, 0, PEFT_ERR_FORMAT, "n_heads 4 is not a multiple of n_kv_heads 8");
    c = k_small, c.heads = 8, c.kv_heads = 8;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "head size dim/n_heads = 1 is odd");
    c = k_small, c.dim = 1 << 30, c.hidden = 1 << 30, c.layers = 1 << 30, c.heads = 1 << 10, c.kv_heads = 1;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "header sizes overflow");
    /* sizes that do not match the header */
    expect_bad(ctx, &k_small, 0, 0, -4, PEFT_ERR_FORMAT, "implies");
    expect_bad(ctx, &k_small, 0, 0, 4, PEFT_ERR_FORMAT, "implies");
    expect_bad(ctx, &k_small, 1, 1, -1, PEFT_ERR_FORMAT, "v1, shared classifier) implies");
    expect_bad(ctx, &k_small, 1, 0, 3, PEFT_ERR_FORMAT, "v1, unshared classifier) implies");
    /* a v0 file with a classifier but a positive vocab_size: a hint */
    expect_bad(ctx, &k_small, 0, 0, 7 * 8 * 4, PEFT_ERR_FORMAT, "needs a negative vocab_size");
    c = k_small, c.dim = 64;
    expect_bad(ctx, &c, 0, 0, 0, PEFT_ERR_FORMAT, "(dim=64 hidden_dim=12");
    /* v1 specifics */
    expect_bad(ctx, &k_small, 1, 2, 0, PEFT_ERR_FORMAT, "shared_classifier is 2");
    fbuf b = {0};
    put_i32(&b, 0x616b3432), put_i32(&b, 2);
    while (b.len < 300) put(&b, "\0", 1);
    const char *path = tmp_path("v2.bin");
    spit(path, &b);
    b.len = 0;
    peft_llama2c *m = NULL;
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, path, &m), PEFT_ERR_UNSUPPORTED, "version 2 (int8-quantized)");
    put_i32(&b, 0x616b3432), put_i32(&b, 7);
    while (b.len < 300) put(&b, "\0", 1);
    spit(path, &b);
    b.len = 0;
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, path, &m), PEFT_ERR_FORMAT, "unknown llama2.c format version 7");
    put_i32(&b, 0x616b3432), put_i32(&b, 1);
    spit(path, &b);
    b.len = 0;
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, path, &m), PEFT_ERR_FORMAT, "too small for a llama2.c v1 header");
    put_i32(&b, 8), put_i32(&b, 12);
    spit(path, &b);
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, path, &m), PEFT_ERR_FORMAT, "too small for a llama2.c header (28)");
    b.len = 0;
    spit(path, &b);
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, path, &m), PEFT_ERR_FORMAT, "file is 0 bytes");
    put(&b, "GGUF", 4), put_i32(&b, 3);
    while (b.len < 64) put(&b, "\0", 1);
    spit(path, &b);
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, path, &m), PEFT_ERR_FORMAT, "this is a GGUF file");
    free(b.p);
    ck_assert_ptr_null(m);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Random header mutations: open succeeds or fails cleanly, and whatever
 * opens loads every tensor (memory safety under SAN=1). */
START_TEST(io_header_mutations)
{
    peft_ctx *ctx = tu_ctx(1, 5);
    size_t base = peft_ctx_bytes_allocated(ctx);
    int opened = 0;
    for (int it = 0; it < 600; it++) {
        int version = it % 2;
        fbuf b = {0};
        put_header(&b, &k_small, version, 1);
        put_weights(&b, &k_small, version, 1);
        size_t hb = version ? 40 : 28;
        int flips = 1 + (int)(peft_ctx_rand_u64(ctx) % 3);
        for (int f = 0; f < flips; f++) {
            uint64_t r = peft_ctx_rand_u64(ctx);
            size_t at = (size_t)(r % hb);
            b.p[at] = (r >> 32) & 1 ? (uint8_t)(r >> 40) : (uint8_t)(b.p[at] ^ (1u << ((r >> 40) % 8)));
        }
        if (peft_ctx_rand_u64(ctx) % 4 == 0) b.len -= (size_t)(peft_ctx_rand_u64(ctx) % b.len);
        const char *path = tmp_path("mut.bin");
        spit(path, &b);
        free(b.p);
        peft_llama2c *m = NULL;
        peft_status st = peft_llama2c_open(ctx, path, &m);
        ck_assert_msg(st == PEFT_OK || st == PEFT_ERR_FORMAT || st == PEFT_ERR_UNSUPPORTED, "iteration %d: %s (%s)",
                      it, peft_status_name(st), peft_ctx_errmsg(ctx));
        if (st != PEFT_OK) continue;
        opened++;
        for (size_t i = 0; i < peft_llama2c_n_tensors(m); i++) {
            peft_tensor *t = NULL;
            TU_OK(ctx, peft_llama2c_load_tensor(m, i, PEFT_DTYPE_F32, &t));
            peft_tensor_destroy(t);
        }
        peft_llama2c_close(m);
    }
    ck_assert_int_gt(opened, 0);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_misuse)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base = peft_ctx_bytes_allocated(ctx);
    peft_llama2c *m = NULL;
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, NULL, &m), PEFT_ERR_INVALID_ARG, "path is NULL");
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, "x", NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    const char *missing = tmp_path("missing.bin");
    TU_EXPECT_FAIL(ctx, peft_llama2c_open(ctx, missing, &m), PEFT_ERR_IO, missing);
    peft_llama2c_close(NULL);
    ck_assert_uint_eq(peft_llama2c_n_tensors(NULL), 0);

    fbuf b = {0};
    put_header(&b, &k_small, 0, 1);
    put_weights(&b, &k_small, 0, 1);
    const char *path = tmp_path("ok.bin");
    spit(path, &b);
    free(b.p);
    TU_OK(ctx, peft_llama2c_open(ctx, path, &m));
    size_t idx;
    peft_llama2c_tensor_info info;
    peft_tensor *t = (peft_tensor *)0x1;
    TU_EXPECT_FAIL(ctx, peft_llama2c_find_tensor(m, "lm_head.weight", &idx), PEFT_ERR_NOT_FOUND,
                   "no tensor 'lm_head.weight'");
    TU_EXPECT_FAIL(ctx, peft_llama2c_find_tensor(m, NULL, &idx), PEFT_ERR_INVALID_ARG, "NULL");
    TU_EXPECT_FAIL(ctx, peft_llama2c_get_tensor_info(m, 20, &info), PEFT_ERR_INVALID_ARG, "index 20 out of range");
    TU_EXPECT_FAIL(ctx, peft_llama2c_get_config(m, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    TU_EXPECT_FAIL(ctx, peft_llama2c_load_tensor(m, 20, PEFT_DTYPE_F32, &t), PEFT_ERR_INVALID_ARG, "out of range");
    ck_assert_ptr_null(t);
    TU_EXPECT_FAIL(ctx, peft_llama2c_load_tensor(m, 0, PEFT_DTYPE_I32, &t), PEFT_ERR_DTYPE, "cannot be loaded as i32");
    TU_EXPECT_FAIL(ctx, peft_llama2c_load_tensor(m, 0, PEFT_DTYPE_Q8_0, &t), PEFT_ERR_SHAPE, "last dim 8");
    TU_EXPECT_FAIL(ctx, peft_llama2c_load_tensor(m, 0, (peft_dtype)-1, &t), PEFT_ERR_INVALID_ARG, "unknown dtype");
    peft_llama2c_close(m);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- the real checkpoint against the GGUF conversion ---- */

static const char *model_path(const char *name, char *buf, size_t size)
{
    const char *dir = tu_models_dir();
    if (!dir) return NULL;
    snprintf(buf, size, "%s/%s", dir, name);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* The GGUF name of an HF Llama tensor name. */
static void gguf_name(const char *hf, char *out, size_t size)
{
    static const struct {
        const char *hf, *gguf;
    } map[] = {{"input_layernorm.weight", "attn_norm.weight"},
               {"self_attn.q_proj.weight", "attn_q.weight"},
               {"self_attn.k_proj.weight", "attn_k.weight"},
               {"self_attn.v_proj.weight", "attn_v.weight"},
               {"self_attn.o_proj.weight", "attn_output.weight"},
               {"post_attention_layernorm.weight", "ffn_norm.weight"},
               {"mlp.gate_proj.weight", "ffn_gate.weight"},
               {"mlp.down_proj.weight", "ffn_down.weight"},
               {"mlp.up_proj.weight", "ffn_up.weight"}};
    if (strcmp(hf, "model.embed_tokens.weight") == 0) {
        snprintf(out, size, "token_embd.weight");
        return;
    }
    if (strcmp(hf, "model.norm.weight") == 0) {
        snprintf(out, size, "output_norm.weight");
        return;
    }
    int layer, n = 0;
    ck_assert_int_eq(sscanf(hf, "model.layers.%d.%n", &layer, &n), 1);
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (strcmp(hf + n, map[i].hf) == 0) {
            snprintf(out, size, "blk.%d.%s", layer, map[i].gguf);
            return;
        }
    ck_abort_msg("no GGUF name for %s", hf);
}

static int tensors_equal(const peft_tensor *a, const peft_tensor *b)
{
    if (peft_tensor_ndim(a) != peft_tensor_ndim(b)) return 0;
    for (int d = 0; d < peft_tensor_ndim(a); d++)
        if (peft_tensor_dim(a, d) != peft_tensor_dim(b, d)) return 0;
    return memcmp(peft_tensor_data(a), peft_tensor_data(b), peft_tensor_nbytes(a)) == 0;
}

START_TEST(io_stories260k_bin)
{
    char pb[512], pg[512];
    const char *bin = model_path("stories260K.bin", pb, sizeof pb);
    const char *gguf = model_path("stories260K.gguf", pg, sizeof pg);
    if (!bin || !gguf) {
        printf("llama2c: skipping io_stories260k_bin: shared models directory not found\n");
        return;
    }
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base = peft_ctx_bytes_allocated(ctx);
    peft_llama2c *m = NULL;
    TU_OK(ctx, peft_llama2c_open(ctx, bin, &m));
    peft_llama2c_config c;
    TU_OK(ctx, peft_llama2c_get_config(m, &c));
    ck_assert_int_eq(c.version, 0);
    ck_assert_int_eq(c.dim, 64);
    ck_assert_int_eq(c.hidden_dim, 172);
    ck_assert_int_eq(c.n_layers, 5);
    ck_assert_int_eq(c.n_heads, 8);
    ck_assert_int_eq(c.n_kv_heads, 4);
    ck_assert_int_eq(c.vocab_size, 512);
    ck_assert_int_eq(c.seq_len, 512);
    ck_assert_int_eq(c.shared_classifier, 1);
    ck_assert_uint_eq(peft_llama2c_n_tensors(m), 47);
    peft_llama2c_tensor_info info;
    TU_OK(ctx, peft_llama2c_get_tensor_info(m, 0, &info));
    ck_assert_uint_eq(info.file_offset, 28);

    peft_gguf *g = NULL;
    TU_OK(ctx, peft_gguf_open(ctx, gguf, &g));
    int64_t total = 0;
    for (size_t i = 0; i < peft_llama2c_n_tensors(m); i++) {
        TU_OK(ctx, peft_llama2c_get_tensor_info(m, i, &info));
        total += info.numel;
        char gn[64];
        gguf_name(info.name, gn, sizeof gn);
        size_t gi;
        TU_OK(ctx, peft_gguf_find_tensor(g, gn, &gi));
        peft_tensor *a = NULL, *b = NULL;
        TU_OK(ctx, peft_llama2c_load_tensor(m, i, PEFT_DTYPE_F32, &a));
        TU_OK(ctx, peft_gguf_load_tensor(g, gi, PEFT_DTYPE_F32, &b));
        ck_assert_msg(tensors_equal(a, b), "%s differs from %s", info.name, gn);
        if (strcmp(gn, "token_embd.weight") == 0) {
            /* the GGUF's separate output.weight is the tied classifier */
            peft_tensor *o = NULL;
            TU_OK(ctx, peft_gguf_find_tensor(g, "output.weight", &gi));
            TU_OK(ctx, peft_gguf_load_tensor(g, gi, PEFT_DTYPE_F32, &o));
            ck_assert(tensors_equal(a, o));
            peft_tensor_destroy(o);
        }
        peft_tensor_destroy(a);
        peft_tensor_destroy(b);
    }
    ck_assert_int_eq(total, 260032); /* the unique parameters */
    size_t idx;
    TU_OK(ctx, peft_llama2c_find_tensor(m, "model.layers.4.self_attn.k_proj.weight", &idx));
    peft_tensor *k = NULL;
    TU_OK(ctx, peft_llama2c_load_tensor(m, idx, PEFT_DTYPE_Q8_0, &k));
    ck_assert_int_eq(peft_tensor_dim(k, 0), 32);
    ck_assert_int_eq(peft_tensor_dim(k, 1), 64);
    peft_tensor_destroy(k);
    TU_OK(ctx, peft_llama2c_find_tensor(m, "model.layers.0.mlp.down_proj.weight", &idx));
    TU_EXPECT_FAIL(ctx, peft_llama2c_load_tensor(m, idx, PEFT_DTYPE_Q8_0, &k), PEFT_ERR_SHAPE, "last dim 172");
    peft_gguf_close(g);
    peft_llama2c_close(m);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *llama2c_suite(void)
{
    Suite *s = suite_create("llama2c");
    TCase *api = tcase_create("api");
    tcase_add_checked_fixture(api, dir_setup, dir_teardown);
    tcase_add_test(api, api_misuse);
    suite_add_tcase(s, api);
    TCase *io = tcase_create("io");
    tcase_add_checked_fixture(io, dir_setup, dir_teardown);
    tcase_add_test(io, io_synthetic_v0_shared);
    tcase_add_test(io, io_synthetic_v0_unshared);
    tcase_add_test(io, io_synthetic_v1_shared);
    tcase_add_test(io, io_synthetic_v1_unshared);
    tcase_add_test(io, io_corrupt_headers);
    tcase_add_test(io, io_header_mutations);
    tcase_add_test(io, io_stories260k_bin);
    suite_add_tcase(s, io);
    return s;
}
