/* GGUF reader and writer, Q8_0 blocks: the real stories260K / GPT-2 vocab
 * files, writer round trips, layout, corrupted files, API misuse. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "util/testutil.h"

/* ---- a per-test temporary directory ---- */

static char g_dir[64];

static void dir_setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/peft_gguf_XXXXXX");
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
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, name);
    return p[k];
}

static int dir_entries(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static unsigned char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return b;
}

static void spit(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* ---- a byte builder for hand-made files ---- */

typedef struct bb {
    unsigned char *p;
    size_t len, cap;
} bb;

static void bb_bytes(bb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void bb_u8(bb *b, uint8_t v) { bb_bytes(b, &v, 1); }
static void bb_u32(bb *b, uint32_t v) { bb_bytes(b, &v, 4); } /* test hosts are little-endian */
static void bb_u64(bb *b, uint64_t v) { bb_bytes(b, &v, 8); }
static void bb_str(bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_bytes(b, s, strlen(s));
}
static void bb_pad(bb *b, size_t a)
{
    while (b->len % a) bb_u8(b, 0);
}
static void bb_zeros(bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++) bb_u8(b, 0);
}
static void bb_header(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb_bytes(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void bb_kv_u32(bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, PEFT_GGUF_UINT32);
    bb_u32(b, v);
}
static void bb_tinfo(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

/* Open the bytes as a file: it must fail with `code`, and the message must
 * name the file and contain `needle`. */
static void expect_open_fails(peft_ctx *ctx, bb *b, const char *name, peft_status code, const char *needle)
{
    const char *path = tmp_path(name);
    spit(path, b->p, b->len);
    peft_gguf *g = (peft_gguf *)0x1;
    peft_status st = peft_gguf_open(ctx, path, &g);
    ck_assert_msg(st == code, "%s: expected %s, got %s (%s)", name, peft_status_name(code), peft_status_name(st),
                  peft_ctx_errmsg(ctx));
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(peft_ctx_errmsg(ctx), path) != NULL, "%s: message '%s' does not name the file", name,
                  peft_ctx_errmsg(ctx));
    ck_assert_msg(strstr(peft_ctx_errmsg(ctx), needle) != NULL, "%s: message '%s' lacks '%s'", name,
                  peft_ctx_errmsg(ctx), needle);
    free(b->p);
    memset(b, 0, sizeof *b);
}

static char *model_path(const char *name)
{
    const char *dir = tu_models_dir();
    if (!dir) return NULL;
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (access(p, R_OK) != 0) return NULL;
    return p;
}

/* ---- api ---- */

START_TEST(api_misuse)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    peft_gguf *g = NULL;
    TU_EXPECT_FAIL(ctx, peft_gguf_open(ctx, NULL, &g), PEFT_ERR_INVALID_ARG, "path is NULL");
    TU_EXPECT_FAIL(ctx, peft_gguf_open(ctx, "x", NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    const char *missing = tmp_path("missing.gguf");
    TU_EXPECT_FAIL(ctx, peft_gguf_open(ctx, missing, &g), PEFT_ERR_IO, missing);
    ck_assert_ptr_null(g);
    TU_EXPECT_FAIL(ctx, peft_gguf_open(ctx, g_dir, &g), PEFT_ERR_IO, "not a regular file");
    peft_gguf_close(NULL);
    ck_assert_uint_eq(peft_gguf_n_keys(NULL), 0);
    ck_assert_uint_eq(peft_gguf_n_tensors(NULL), 0);
    ck_assert_ptr_null(peft_gguf_key_name(NULL, 0));
    ck_assert_str_eq(peft_gguf_type_name(PEFT_GGUF_STRING), "str");
    ck_assert_str_eq(peft_gguf_type_name((peft_gguf_type)77), "?");
    ck_assert_str_eq(peft_ggml_type_name(PEFT_GGML_TYPE_Q8_0), "Q8_0");
    ck_assert_str_eq(peft_ggml_type_name(12), "Q4_K");
    ck_assert_ptr_null(peft_ggml_type_name(4));
    ck_assert_ptr_null(peft_ggml_type_name(1000));

    /* a small file for lookups */
    peft_gguf_writer *w = NULL;
    TU_OK(ctx, peft_gguf_writer_create(ctx, &w));
    TU_OK(ctx, peft_gguf_writer_add_str(w, "general.architecture", "llama"));
    TU_OK(ctx, peft_gguf_writer_add_f32(w, "eps", 1e-5f));
    const int32_t ids[3] = {7, 8, 9};
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "ids", PEFT_GGUF_INT32, ids, 3));
    int64_t shape[2] = {2, 3};
    peft_tensor *t = tu_randn(ctx, 2, shape, 1.0f, 0);
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "w", t, PEFT_DTYPE_F32));
    const char *path = tmp_path("small.gguf");
    TU_OK(ctx, peft_gguf_writer_write(w, path));
    peft_gguf_writer_destroy(w);
    TU_OK(ctx, peft_gguf_open(ctx, path, &g));

    size_t idx;
    int64_t iv;
    double dv;
    int bv;
    const char *s;
    size_t len;
    float fv;
    TU_EXPECT_FAIL(ctx, peft_gguf_find_key(g, "nope", &idx), PEFT_ERR_NOT_FOUND, "no key 'nope'");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_int(g, "nope", &iv), PEFT_ERR_NOT_FOUND, path);
    TU_EXPECT_FAIL(ctx, peft_gguf_get_int(g, "eps", &iv), PEFT_ERR_DTYPE, "is f32, not an integer");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_bool(g, "eps", &bv), PEFT_ERR_DTYPE, "not a bool");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_str(g, "eps", &s, &len), PEFT_ERR_DTYPE, "not a string");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_float(g, "general.architecture", &dv), PEFT_ERR_DTYPE, "not a number");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_arr(g, "eps", NULL, NULL), PEFT_ERR_DTYPE, "not an array");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_arr_str(g, "ids", 0, &s, &len), PEFT_ERR_DTYPE, "array of i32, not of strings");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_arr_int(g, "ids", 3, &iv), PEFT_ERR_INVALID_ARG, "index 3 out of range");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_arr_f32(g, "ids", (size_t)-1, &fv), PEFT_ERR_INVALID_ARG, "out of range");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_int(g, NULL, &iv), PEFT_ERR_INVALID_ARG, "key is NULL");
    TU_EXPECT_FAIL(ctx, peft_gguf_get_int(g, "ids", NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    ck_assert_ptr_null(peft_gguf_key_name(g, 3));
    ck_assert_int_eq(peft_gguf_key_type(g, 3), PEFT_GGUF_TYPE_COUNT);
    /* integers convert to float; floats never to integers */
    TU_OK(ctx, peft_gguf_get_arr_f32(g, "ids", 2, &fv));
    ck_assert_float_eq(fv, 9.0f);

    peft_gguf_tensor_info info;
    peft_tensor *out = (peft_tensor *)0x1;
    TU_EXPECT_FAIL(ctx, peft_gguf_get_tensor_info(g, 1, &info), PEFT_ERR_INVALID_ARG, "tensor index 1 out of range");
    TU_EXPECT_FAIL(ctx, peft_gguf_find_tensor(g, "v", &idx), PEFT_ERR_NOT_FOUND, "no tensor 'v'");
    TU_EXPECT_FAIL(ctx, peft_gguf_load_tensor(g, 5, PEFT_DTYPE_F32, &out), PEFT_ERR_INVALID_ARG, "out of range");
    ck_assert_ptr_null(out);
    TU_EXPECT_FAIL(ctx, peft_gguf_load_tensor(g, 0, PEFT_DTYPE_I32, &out), PEFT_ERR_DTYPE, "cannot be loaded as i32");
    TU_EXPECT_FAIL(ctx, peft_gguf_load_tensor(g, 0, PEFT_DTYPE_Q8_0, &out), PEFT_ERR_SHAPE, "not a multiple of 32");
    TU_EXPECT_FAIL(ctx, peft_gguf_load_tensor(g, 0, (peft_dtype)99, &out), PEFT_ERR_INVALID_ARG, "unknown dtype");
    peft_gguf_close(g);
    peft_tensor_destroy(t);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_writer_misuse)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    peft_gguf_writer *w = NULL;
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_create(ctx, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    TU_OK(ctx, peft_gguf_writer_create(ctx, &w));
    TU_OK(ctx, peft_gguf_writer_add_u32(w, "a", 1));
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_u32(w, "a", 2), PEFT_ERR_INVALID_ARG, "duplicate key 'a'");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_str(w, "", "x"), PEFT_ERR_INVALID_ARG, "key length 0");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_str(w, NULL, "x"), PEFT_ERR_INVALID_ARG, "key is NULL");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_str(w, "b", NULL), PEFT_ERR_INVALID_ARG, "value is NULL");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_bool(w, "b", 2), PEFT_ERR_INVALID_ARG, "must be 0 or 1");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_u32(w, "general.alignment", 48), PEFT_ERR_INVALID_ARG, "power of two");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_u64(w, "general.alignment", 64), PEFT_ERR_INVALID_ARG, "must be a u32");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_arr(w, "c", PEFT_GGUF_STRING, NULL, 0), PEFT_ERR_INVALID_ARG,
                   "not a numeric or bool type");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_arr(w, "c", PEFT_GGUF_UINT8, NULL, 2), PEFT_ERR_INVALID_ARG,
                   "data is NULL");
    const uint8_t bools[2] = {1, 3};
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_arr(w, "c", PEFT_GGUF_BOOL, bools, 2), PEFT_ERR_INVALID_ARG,
                   "bool element 1 is 3");
    const char *strs[2] = {"x", NULL};
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_arr_str(w, "c", strs, NULL, 2), PEFT_ERR_INVALID_ARG, "strs[1] is NULL");

    int64_t shape[2] = {2, 48};
    peft_tensor *t = tu_randn(ctx, 2, shape, 1.0f, 0);
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "t", t, PEFT_DTYPE_F16));
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor(w, "t", t, PEFT_DTYPE_F32), PEFT_ERR_INVALID_ARG,
                   "duplicate tensor name 't'");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor(w, "", t, PEFT_DTYPE_F32), PEFT_ERR_INVALID_ARG, "is 0 bytes");
    char long_name[80];
    memset(long_name, 'n', 64);
    long_name[64] = '\0';
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor(w, long_name, t, PEFT_DTYPE_F32), PEFT_ERR_INVALID_ARG,
                   "must be 1..63");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor(w, "q", t, PEFT_DTYPE_Q8_0), PEFT_ERR_SHAPE,
                   "not a multiple of the Q8_0 block size 32");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor(w, "i", t, PEFT_DTYPE_I32), PEFT_ERR_DTYPE, "cannot convert f32");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor(w, "n", t, PEFT_DTYPE_NF4), PEFT_ERR_DTYPE, "cannot store as nf4");
    const int64_t ne[1] = {64};
    uint8_t raw[36] = {0};
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor_raw(w, "r", 2, 1, ne, raw, 35), PEFT_ERR_SHAPE,
                   "35 bytes given, a Q4_0 tensor of this shape has 36");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor_raw(w, "r", 4, 1, ne, raw, 36), PEFT_ERR_INVALID_ARG,
                   "retired or of unknown size");
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_add_tensor_raw(w, "r", 2, 5, ne, raw, 36), PEFT_ERR_INVALID_ARG,
                   "n_dims 5");

    /* a failed write leaves nothing behind */
    char bad_path[300];
    snprintf(bad_path, sizeof bad_path, "%s/no/such/dir/x.gguf", g_dir);
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_write(w, bad_path), PEFT_ERR_IO, bad_path);
    ck_assert_int_eq(dir_entries(), 0);
    TU_EXPECT_FAIL(ctx, peft_gguf_writer_write(w, ""), PEFT_ERR_INVALID_ARG, "path");

    /* the earlier errors did not corrupt the writer: it still writes a valid file */
    const char *path = tmp_path("ok.gguf");
    TU_OK(ctx, peft_gguf_writer_write(w, path));
    peft_gguf *g = NULL;
    TU_OK(ctx, peft_gguf_open(ctx, path, &g));
    ck_assert_uint_eq(peft_gguf_n_keys(g), 1);
    ck_assert_uint_eq(peft_gguf_n_tensors(g), 1);
    peft_gguf_close(g);
    ck_assert_int_eq(dir_entries(), 1); /* no temporary file left */
    peft_gguf_writer_destroy(w);
    peft_gguf_writer_destroy(NULL);
    peft_tensor_destroy(t);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- out of memory: fail the N-th allocation for N = 0, 1, ... ---- */

START_TEST(api_out_of_memory)
{
    tu_oom o = {-1};
    peft_ctx *ctx = tu_oom_ctx(&o);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    const char *toks[3] = {"a", "bb", "ccc"};
    const float v[4] = {1, 2, 3, 4};
    int64_t shape[2] = {2, 32};
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, shape, &t));
    const char *path = tmp_path("oom.gguf");
    const size_t with_t = peft_ctx_bytes_allocated(ctx);
    /* the writer: every step either succeeds or fails with NOMEM, never leaks */
    int done = 0;
    for (long n = 0; !done && n < 200; n++) {
        peft_gguf_writer *w = NULL;
        o.countdown = n;
        peft_status st = peft_gguf_writer_create(ctx, &w);
        if (st == PEFT_OK) st = peft_gguf_writer_add_str(w, "general.architecture", "llama");
        if (st == PEFT_OK) st = peft_gguf_writer_add_arr_str(w, "toks", toks, NULL, 3);
        if (st == PEFT_OK) st = peft_gguf_writer_add_arr(w, "v", PEFT_GGUF_FLOAT32, v, 4);
        if (st == PEFT_OK) st = peft_gguf_writer_add_tensor(w, "t", t, PEFT_DTYPE_F16);
        if (st == PEFT_OK) st = peft_gguf_writer_add_tensor(w, "q", t, PEFT_DTYPE_Q8_0);
        if (st == PEFT_OK) st = peft_gguf_writer_write(w, path);
        o.countdown = -1;
        ck_assert_msg(st == PEFT_OK || st == PEFT_ERR_NOMEM, "writer, allocation %ld: %s (%s)", n,
                      peft_status_name(st), peft_ctx_errmsg(ctx));
        done = st == PEFT_OK;
        peft_gguf_writer_destroy(w);
        ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), with_t);
    }
    ck_assert(done);
    /* the reader and a load */
    done = 0;
    for (long n = 0; !done && n < 200; n++) {
        peft_gguf *g = NULL;
        peft_tensor *r = NULL;
        o.countdown = n;
        peft_status st = peft_gguf_open(ctx, path, &g);
        if (st == PEFT_OK) st = peft_gguf_load_tensor(g, 1, PEFT_DTYPE_F32, &r);
        o.countdown = -1;
        ck_assert_msg(st == PEFT_OK || st == PEFT_ERR_NOMEM, "reader, allocation %ld: %s (%s)", n,
                      peft_status_name(st), peft_ctx_errmsg(ctx));
        done = st == PEFT_OK;
        peft_tensor_destroy(r);
        peft_gguf_close(g);
        ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), with_t);
    }
    ck_assert(done);
    peft_tensor_destroy(t);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- numerics: Q8_0 ---- */

static float block_scale(const unsigned char *blk)
{
    return peft__f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
}

START_TEST(numerics_q8_0_known_values)
{
    /* x_j = j - 16: amax 16, d = 16/127, 1/d = 7.9375 exactly */
    float x[64];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    /* second block: ties round away from zero (roundf) with d = 1 */
    for (int j = 0; j < 32; j++) x[32 + j] = 0.0f;
    x[32] = 127.0f;
    x[33] = 2.5f;
    x[34] = -2.5f;
    x[35] = 0.5f;
    x[36] = -126.5f;
    unsigned char q[68];
    peft__q8_0_quantize(x, 64, q);
    ck_assert_uint_eq(q[0] | q[1] << 8, peft__f32_to_f16(16.0f / 127.0f));
    for (int j = 0; j < 32; j++) {
        int8_t v;
        memcpy(&v, q + 2 + j, 1);
        ck_assert_int_eq(v, (int)roundf((float)(j - 16) * 7.9375f));
    }
    int8_t c[5];
    memcpy(c, q + 34 + 2, 5);
    ck_assert_uint_eq(q[34] | q[35] << 8, 0x3C00); /* fp16 1.0 */
    ck_assert_int_eq(c[0], 127);
    ck_assert_int_eq(c[1], 3);
    ck_assert_int_eq(c[2], -3);
    ck_assert_int_eq(c[3], 1);
    ck_assert_int_eq(c[4], -127);
    /* an all-zero block: d = 0, codes 0, dequantized to exact zeros */
    float z[32] = {0}, back[32];
    unsigned char qz[34];
    memset(qz, 0xAB, sizeof qz);
    peft__q8_0_quantize(z, 32, qz);
    for (int j = 0; j < 34; j++) ck_assert_uint_eq(qz[j], 0);
    peft__q8_0_to_f32(qz, 0, 32, back);
    for (int j = 0; j < 32; j++) ck_assert_float_eq(back[j], 0.0f);
    /* non-finite inputs do not trigger undefined behaviour */
    z[3] = NAN;
    z[4] = INFINITY;
    peft__q8_0_quantize(z, 32, qz);
}
END_TEST

START_TEST(numerics_q8_0_error_bound)
{
    peft_ctx *ctx = tu_ctx(1, 7);
    const size_t n = 32 * 37;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *part = malloc(n * sizeof *part);
    unsigned char *q = malloc(n / 32 * 34);
    for (size_t i = 0; i < n; i++) {
        double s = (i / 32) % 3 == 0 ? 1e-3 : ((i / 32) % 3 == 1 ? 1.0 : 300.0);
        x[i] = (float)(peft_ctx_rand_normal(ctx) * s);
    }
    peft__q8_0_quantize(x, n, q);
    peft__q8_0_to_f32(q, 0, n, y);
    for (size_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float d = amax / 127.0f, d16 = block_scale(q + b * 34);
        /* rounding to the code costs at most d/2; storing d as fp16 shifts
         * each value by |q| * |d - d16| <= 127 * |d - d16| */
        double bound = 0.5 * d + 127.0 * fabs((double)d - d16) + 1e-6 * amax;
        for (int j = 0; j < 32; j++) {
            double err = fabs((double)x[b * 32 + j] - y[b * 32 + j]);
            ck_assert_msg(err <= bound, "block %zu elem %d: |%g - %g| = %g > %g", b, j, x[b * 32 + j],
                          y[b * 32 + j], err, bound);
        }
    }
    /* dequantizing any sub-range equals the slice of the full result */
    const size_t ranges[][2] = {{0, 1}, {5, 20}, {31, 2}, {33, 64}, {40, 900}, {n - 7, 7}};
    for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++) {
        peft__q8_0_to_f32(q, ranges[r][0], ranges[r][1], part);
        ck_assert_int_eq(memcmp(part, y + ranges[r][0], ranges[r][1] * sizeof(float)), 0);
    }
    free(x), free(y), free(part), free(q);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: the writer, round trips ---- */

START_TEST(io_writer_round_trip)
{
    peft_ctx *ctx = tu_ctx(1, 3);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    peft_gguf_writer *w = NULL;
    TU_OK(ctx, peft_gguf_writer_create(ctx, &w));
    TU_OK(ctx, peft_gguf_writer_add_u8(w, "k.u8", 200));
    TU_OK(ctx, peft_gguf_writer_add_i8(w, "k.i8", -100));
    TU_OK(ctx, peft_gguf_writer_add_u16(w, "k.u16", 60000));
    TU_OK(ctx, peft_gguf_writer_add_i16(w, "k.i16", -30000));
    TU_OK(ctx, peft_gguf_writer_add_u32(w, "k.u32", 4000000000u));
    TU_OK(ctx, peft_gguf_writer_add_i32(w, "k.i32", -2000000000));
    TU_OK(ctx, peft_gguf_writer_add_u64(w, "k.u64", 123456789012345ULL));
    TU_OK(ctx, peft_gguf_writer_add_u64(w, "k.u64big", 0x8000000000000005ULL));
    TU_OK(ctx, peft_gguf_writer_add_i64(w, "k.i64", -4611686018427387904LL));
    TU_OK(ctx, peft_gguf_writer_add_f32(w, "k.f32", 1.5f));
    TU_OK(ctx, peft_gguf_writer_add_f64(w, "k.f64", 1e-300));
    TU_OK(ctx, peft_gguf_writer_add_bool(w, "k.bool", 1));
    TU_OK(ctx, peft_gguf_writer_add_str(w, "k.str", "hello"));
    TU_OK(ctx, peft_gguf_writer_add_str(w, "k.empty", ""));
    const uint8_t a_u8[3] = {1, 2, 255};
    const int16_t a_i16[2] = {-1, 32767};
    const uint32_t a_u32[2] = {0xFFFFFFFFu, 5};
    const int64_t a_i64[2] = {INT64_MIN, INT64_MAX};
    const float a_f32[3] = {0.25f, -3.0f, 1e30f};
    const double a_f64[2] = {3.141592653589793, -0.0};
    const uint8_t a_bool[3] = {0, 1, 1};
    const char *a_str[4] = {"a", "", "ccc", "nul\0in"};
    const size_t a_len[4] = {1, 0, 3, 6};
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "a.u8", PEFT_GGUF_UINT8, a_u8, 3));
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "a.i16", PEFT_GGUF_INT16, a_i16, 2));
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "a.u32", PEFT_GGUF_UINT32, a_u32, 2));
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "a.i64", PEFT_GGUF_INT64, a_i64, 2));
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "a.f32", PEFT_GGUF_FLOAT32, a_f32, 3));
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "a.f64", PEFT_GGUF_FLOAT64, a_f64, 2));
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "a.bool", PEFT_GGUF_BOOL, a_bool, 3));
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "a.none", PEFT_GGUF_FLOAT32, NULL, 0));
    TU_OK(ctx, peft_gguf_writer_add_arr_str(w, "a.str", a_str, a_len, 4));
    TU_OK(ctx, peft_gguf_writer_add_arr_str(w, "a.str0", NULL, NULL, 0));

    /* tensors of every storage type, odd shapes */
    int64_t s_f32[2] = {3, 5}, s_f16[3] = {2, 1, 7}, s_bf16[1] = {9}, s_q8[2] = {3, 64}, s_i32[1] = {4};
    peft_tensor *t_f32 = tu_randn(ctx, 2, s_f32, 1.0f, 0), *t_f16 = tu_randn(ctx, 3, s_f16, 2.0f, 0);
    peft_tensor *t_bf16 = tu_randn(ctx, 1, s_bf16, 3.0f, 0), *t_q8 = tu_randn(ctx, 2, s_q8, 0.5f, 0);
    const int32_t ids[4] = {-7, 0, 1, 2147483647};
    peft_tensor *t_i32 = tu_ids(ctx, 1, s_i32, ids);
    peft_tensor *t_f16src = NULL;
    TU_OK(ctx, peft_tensor_convert(t_bf16, PEFT_DTYPE_F16, &t_f16src));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "t.f32", t_f32, PEFT_DTYPE_F32));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "t.f16", t_f16, PEFT_DTYPE_F16));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "t.bf16", t_bf16, PEFT_DTYPE_BF16));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "t.q8_0", t_q8, PEFT_DTYPE_Q8_0));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "t.i32", t_i32, PEFT_DTYPE_I32));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "t.f16same", t_f16src, PEFT_DTYPE_F16)); /* raw copy path */
    /* a strided view (transpose) is gathered in row-major order */
    peft_tensor *view = NULL;
    size_t before_view = peft_ctx_bytes_allocated(ctx);
    TU_OK(ctx, peft_transpose(ctx, t_f32, 0, 1, &view));
    base_ += peft_ctx_bytes_allocated(ctx) - before_view; /* the scratch arena keeps its memory */
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "t.view", view, PEFT_DTYPE_F32));
    uint8_t q40[2 * 18];
    for (size_t i = 0; i < sizeof q40; i++) q40[i] = (uint8_t)(i * 7);
    const int64_t ne_q40[2] = {32, 2};
    TU_OK(ctx, peft_gguf_writer_add_tensor_raw(w, "t.q4_0", 2, 2, ne_q40, q40, sizeof q40));

    const char *path = tmp_path("rt.gguf");
    TU_OK(ctx, peft_gguf_writer_write(w, path));
    TU_OK(ctx, peft_gguf_writer_write(w, path)); /* overwriting works */
    peft_gguf_writer_destroy(w);
    ck_assert_int_eq(dir_entries(), 1);

    peft_gguf *g = NULL;
    TU_OK(ctx, peft_gguf_open(ctx, path, &g));
    ck_assert_uint_eq(peft_gguf_version(g), 3);
    ck_assert_uint_eq(peft_gguf_alignment(g), 32);
    /* keys in order, with their types */
    static const char *const keys[] = {"k.u8",  "k.i8",   "k.u16",  "k.i16",  "k.u32",  "k.i32",  "k.u64",
                                       "k.u64big", "k.i64", "k.f32", "k.f64", "k.bool", "k.str", "k.empty",
                                       "a.u8",  "a.i16",  "a.u32",  "a.i64",  "a.f32",  "a.f64",  "a.bool",
                                       "a.none", "a.str", "a.str0"};
    static const peft_gguf_type types[] = {
        PEFT_GGUF_UINT8,  PEFT_GGUF_INT8,   PEFT_GGUF_UINT16, PEFT_GGUF_INT16,   PEFT_GGUF_UINT32, PEFT_GGUF_INT32,
        PEFT_GGUF_UINT64, PEFT_GGUF_UINT64, PEFT_GGUF_INT64,  PEFT_GGUF_FLOAT32, PEFT_GGUF_FLOAT64, PEFT_GGUF_BOOL,
        PEFT_GGUF_STRING, PEFT_GGUF_STRING};
    ck_assert_uint_eq(peft_gguf_n_keys(g), 24);
    for (size_t i = 0; i < 24; i++) {
        ck_assert_str_eq(peft_gguf_key_name(g, i), keys[i]);
        ck_assert_int_eq(peft_gguf_key_type(g, i), i < 14 ? types[i] : PEFT_GGUF_ARRAY);
        size_t idx = 99;
        TU_OK(ctx, peft_gguf_find_key(g, keys[i], &idx));
        ck_assert_uint_eq(idx, i);
    }
    int64_t iv;
    double dv;
    int bv;
    const char *s;
    size_t len;
    TU_OK(ctx, peft_gguf_get_int(g, "k.u8", &iv));
    ck_assert_int_eq(iv, 200);
    TU_OK(ctx, peft_gguf_get_int(g, "k.i8", &iv));
    ck_assert_int_eq(iv, -100);
    TU_OK(ctx, peft_gguf_get_int(g, "k.u16", &iv));
    ck_assert_int_eq(iv, 60000);
    TU_OK(ctx, peft_gguf_get_int(g, "k.i16", &iv));
    ck_assert_int_eq(iv, -30000);
    TU_OK(ctx, peft_gguf_get_int(g, "k.u32", &iv));
    ck_assert_int_eq(iv, 4000000000LL);
    TU_OK(ctx, peft_gguf_get_int(g, "k.i32", &iv));
    ck_assert_int_eq(iv, -2000000000);
    TU_OK(ctx, peft_gguf_get_int(g, "k.u64", &iv));
    ck_assert_int_eq(iv, 123456789012345LL);
    TU_EXPECT_FAIL(ctx, peft_gguf_get_int(g, "k.u64big", &iv), PEFT_ERR_DTYPE, "does not fit int64");
    TU_OK(ctx, peft_gguf_get_float(g, "k.u64big", &dv));
    ck_assert_double_eq(dv, (double)0x8000000000000005ULL);
    TU_OK(ctx, peft_gguf_get_int(g, "k.i64", &iv));
    ck_assert_int_eq(iv, -4611686018427387904LL);
    TU_OK(ctx, peft_gguf_get_float(g, "k.f32", &dv));
    ck_assert_double_eq(dv, 1.5);
    TU_OK(ctx, peft_gguf_get_float(g, "k.f64", &dv));
    ck_assert_double_eq(dv, 1e-300);
    TU_OK(ctx, peft_gguf_get_float(g, "k.i16", &dv));
    ck_assert_double_eq(dv, -30000.0);
    TU_OK(ctx, peft_gguf_get_bool(g, "k.bool", &bv));
    ck_assert_int_eq(bv, 1);
    TU_OK(ctx, peft_gguf_get_str(g, "k.str", &s, &len));
    ck_assert_str_eq(s, "hello");
    ck_assert_uint_eq(len, 5);
    TU_OK(ctx, peft_gguf_get_str(g, "k.empty", &s, NULL));
    ck_assert_str_eq(s, "");

    peft_gguf_type et;
    size_t count;
    const void *raw;
    size_t nbytes;
    TU_OK(ctx, peft_gguf_get_arr(g, "a.u8", &et, &count));
    ck_assert_int_eq(et, PEFT_GGUF_UINT8);
    ck_assert_uint_eq(count, 3);
    TU_OK(ctx, peft_gguf_get_arr_int(g, "a.u8", 2, &iv));
    ck_assert_int_eq(iv, 255);
    TU_OK(ctx, peft_gguf_get_arr_int(g, "a.i16", 0, &iv));
    ck_assert_int_eq(iv, -1);
    TU_OK(ctx, peft_gguf_get_arr_int(g, "a.u32", 0, &iv));
    ck_assert_int_eq(iv, 0xFFFFFFFFLL);
    TU_OK(ctx, peft_gguf_get_arr_int(g, "a.i64", 0, &iv));
    ck_assert(iv == INT64_MIN);
    TU_OK(ctx, peft_gguf_get_arr_int(g, "a.i64", 1, &iv));
    ck_assert(iv == INT64_MAX);
    float fv;
    for (size_t i = 0; i < 3; i++) {
        TU_OK(ctx, peft_gguf_get_arr_f32(g, "a.f32", i, &fv));
        ck_assert_float_eq(fv, a_f32[i]);
    }
    TU_OK(ctx, peft_gguf_get_arr_f32(g, "a.f64", 0, &fv));
    ck_assert_float_eq(fv, (float)3.141592653589793);
    TU_EXPECT_FAIL(ctx, peft_gguf_get_arr_int(g, "a.f32", 0, &iv), PEFT_ERR_DTYPE, "not of integers");
    TU_OK(ctx, peft_gguf_get_arr_data(g, "a.f64", &raw, &nbytes));
    ck_assert_uint_eq(nbytes, sizeof a_f64);
    ck_assert_int_eq(memcmp(raw, a_f64, nbytes), 0);
    TU_OK(ctx, peft_gguf_get_arr_data(g, "a.bool", &raw, &nbytes));
    ck_assert_uint_eq(nbytes, 3);
    ck_assert_int_eq(memcmp(raw, a_bool, 3), 0);
    TU_OK(ctx, peft_gguf_get_arr(g, "a.none", &et, &count));
    ck_assert_uint_eq(count, 0);
    TU_EXPECT_FAIL(ctx, peft_gguf_get_arr_data(g, "a.str", &raw, &nbytes), PEFT_ERR_DTYPE, "not of numbers or bools");
    TU_OK(ctx, peft_gguf_get_arr(g, "a.str", &et, &count));
    ck_assert_int_eq(et, PEFT_GGUF_STRING);
    ck_assert_uint_eq(count, 4);
    for (size_t i = 0; i < 4; i++) {
        TU_OK(ctx, peft_gguf_get_arr_str(g, "a.str", i, &s, &len));
        ck_assert_uint_eq(len, a_len[i]);
        ck_assert_int_eq(memcmp(s, a_str[i], len), 0);
    }
    TU_OK(ctx, peft_gguf_get_arr(g, "a.str0", &et, &count));
    ck_assert_uint_eq(count, 0);

    /* tensors: info, layout, values */
    ck_assert_uint_eq(peft_gguf_n_tensors(g), 8);
    static const char *const tnames[] = {"t.f32", "t.f16", "t.bf16", "t.q8_0", "t.i32", "t.f16same", "t.view", "t.q4_0"};
    static const uint32_t ttypes[] = {0, 1, 30, 8, 26, 1, 0, 2};
    uint64_t expect_off = 0;
    for (size_t i = 0; i < 8; i++) {
        peft_gguf_tensor_info info;
        size_t idx;
        TU_OK(ctx, peft_gguf_get_tensor_info(g, i, &info));
        ck_assert_str_eq(info.name, tnames[i]);
        TU_OK(ctx, peft_gguf_find_tensor(g, tnames[i], &idx));
        ck_assert_uint_eq(idx, i);
        ck_assert_uint_eq(info.ggml_type, ttypes[i]);
        ck_assert_str_eq(info.type_name, peft_ggml_type_name(ttypes[i]));
        ck_assert_uint_eq(info.offset, expect_off);
        ck_assert_uint_eq(info.file_offset, peft_gguf_data_offset(g) + expect_off);
        expect_off += (info.nbytes + 31) / 32 * 32;
        const void *d;
        TU_OK(ctx, peft_gguf_tensor_data(g, i, &d, &nbytes));
        ck_assert_uint_eq(nbytes, info.nbytes);
    }
    ck_assert_uint_eq(peft_gguf_data_offset(g) % 32, 0);
    ck_assert_uint_eq(peft_gguf_file_size(g), peft_gguf_data_offset(g) + expect_off); /* last tensor padded too */

    peft_gguf_tensor_info info;
    TU_OK(ctx, peft_gguf_get_tensor_info(g, 1, &info));
    ck_assert_int_eq(info.n_dims, 3);
    ck_assert_int_eq(info.ne[0], 7);
    ck_assert_int_eq(info.ne[1], 1);
    ck_assert_int_eq(info.ne[2], 2);
    ck_assert_int_eq(info.ne[3], 1);
    ck_assert_int_eq(info.numel, 14);
    ck_assert_uint_eq(info.nbytes, 28);
    TU_OK(ctx, peft_gguf_get_tensor_info(g, 3, &info));
    ck_assert_uint_eq(info.nbytes, 3 * 2 * 34);

    peft_tensor *r = NULL;
    float ref[256];
    /* f32: identical bits, PyTorch shape, named */
    TU_OK(ctx, peft_gguf_load_tensor(g, 0, PEFT_DTYPE_F32, &r));
    ck_assert_int_eq(peft_tensor_ndim(r), 2);
    ck_assert_int_eq(peft_tensor_dim(r, 0), 3);
    ck_assert_int_eq(peft_tensor_dim(r, 1), 5);
    ck_assert_str_eq(peft_tensor_name(r), "t.f32");
    ck_assert_int_eq(memcmp(peft_tensor_data(r), peft_tensor_data(t_f32), 15 * 4), 0);
    peft_tensor_destroy(r);
    /* the transposed view: [5, 3] with element (i, j) = t_f32(j, i) */
    TU_OK(ctx, peft_gguf_load_tensor(g, 6, PEFT_DTYPE_F32, &r));
    ck_assert_int_eq(peft_tensor_dim(r, 0), 5);
    ck_assert_int_eq(peft_tensor_dim(r, 1), 3);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 3; j++)
            ck_assert_float_eq(((float *)peft_tensor_data(r))[i * 3 + j], ((float *)peft_tensor_data(t_f32))[j * 5 + i]);
    peft_tensor_destroy(r);
    /* f16: stored bits are the rounded input; loads as f16 (raw) or f32 */
    TU_OK(ctx, peft_gguf_load_tensor(g, 1, PEFT_DTYPE_F16, &r));
    ck_assert_int_eq(peft_tensor_dtype(r), PEFT_DTYPE_F16);
    ck_assert_int_eq(peft_tensor_ndim(r), 3);
    ck_assert_int_eq(peft_tensor_dim(r, 0), 2);
    ck_assert_int_eq(peft_tensor_dim(r, 2), 7);
    for (int i = 0; i < 14; i++)
        ck_assert_uint_eq(((uint16_t *)peft_tensor_data(r))[i],
                          peft__f32_to_f16(((float *)peft_tensor_data(t_f16))[i]));
    peft_tensor_destroy(r);
    TU_OK(ctx, peft_gguf_load_tensor(g, 1, PEFT_DTYPE_F32, &r));
    for (int i = 0; i < 14; i++)
        ck_assert_float_eq(((float *)peft_tensor_data(r))[i],
                           peft__f16_to_f32(peft__f32_to_f16(((float *)peft_tensor_data(t_f16))[i])));
    peft_tensor_destroy(r);
    TU_OK(ctx, peft_gguf_load_tensor(g, 5, PEFT_DTYPE_F16, &r));
    ck_assert_int_eq(memcmp(peft_tensor_data(r), peft_tensor_data(t_f16src), 9 * 2), 0);
    peft_tensor_destroy(r);
    /* bf16 */
    TU_OK(ctx, peft_gguf_load_tensor(g, 2, PEFT_DTYPE_BF16, &r));
    for (int i = 0; i < 9; i++)
        ck_assert_uint_eq(((uint16_t *)peft_tensor_data(r))[i],
                          peft__f32_to_bf16(((float *)peft_tensor_data(t_bf16))[i]));
    peft_tensor_destroy(r);
    TU_OK(ctx, peft_gguf_load_tensor(g, 2, PEFT_DTYPE_F32, &r));
    for (int i = 0; i < 9; i++)
        ck_assert_float_eq(((float *)peft_tensor_data(r))[i],
                           peft__bf16_to_f32(peft__f32_to_bf16(((float *)peft_tensor_data(t_bf16))[i])));
    peft_tensor_destroy(r);
    /* q8_0: raw blocks equal the reference quantizer; f32 equals dequantized */
    unsigned char qref[3 * 2 * 34];
    peft__q8_0_quantize(peft_tensor_data(t_q8), 192, qref);
    TU_OK(ctx, peft_gguf_load_tensor(g, 3, PEFT_DTYPE_Q8_0, &r));
    ck_assert_int_eq(peft_tensor_dtype(r), PEFT_DTYPE_Q8_0);
    ck_assert_int_eq(peft_tensor_dim(r, 0), 3);
    ck_assert_int_eq(peft_tensor_dim(r, 1), 64);
    ck_assert_uint_eq(peft_tensor_nbytes(r), sizeof qref);
    ck_assert_int_eq(memcmp(peft_tensor_data(r), qref, sizeof qref), 0);
    peft_tensor_destroy(r);
    TU_OK(ctx, peft_gguf_load_tensor(g, 3, PEFT_DTYPE_F32, &r));
    peft__q8_0_to_f32(qref, 0, 192, ref);
    ck_assert_int_eq(memcmp(peft_tensor_data(r), ref, 192 * 4), 0);
    peft_tensor_destroy(r);
    TU_OK(ctx, peft_gguf_load_tensor(g, 3, PEFT_DTYPE_BF16, &r));
    for (int i = 0; i < 192; i++)
        ck_assert_uint_eq(((uint16_t *)peft_tensor_data(r))[i], peft__f32_to_bf16(ref[i]));
    peft_tensor_destroy(r);
    /* i32 */
    TU_OK(ctx, peft_gguf_load_tensor(g, 4, PEFT_DTYPE_I32, &r));
    ck_assert_int_eq(memcmp(peft_tensor_data(r), ids, sizeof ids), 0);
    peft_tensor_destroy(r);
    /* a type libpeft cannot decode: a clear error naming tensor and type */
    TU_EXPECT_FAIL(ctx, peft_gguf_load_tensor(g, 7, PEFT_DTYPE_F32, &r), PEFT_ERR_UNSUPPORTED,
                   "tensor 't.q4_0' has ggml type Q4_0");
    const void *d;
    TU_OK(ctx, peft_gguf_tensor_data(g, 7, &d, &nbytes));
    ck_assert_uint_eq(nbytes, sizeof q40);
    ck_assert_int_eq(memcmp(d, q40, sizeof q40), 0);
    peft_gguf_close(g);

    /* the same file loads f32 data as q8_0 exactly like the quantizer */
    TU_OK(ctx, peft_gguf_writer_create(ctx, &w));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "x", t_q8, PEFT_DTYPE_F32));
    TU_OK(ctx, peft_gguf_writer_write(w, path));
    peft_gguf_writer_destroy(w);
    TU_OK(ctx, peft_gguf_open(ctx, path, &g));
    TU_OK(ctx, peft_gguf_load_tensor(g, 0, PEFT_DTYPE_Q8_0, &r));
    ck_assert_int_eq(memcmp(peft_tensor_data(r), qref, sizeof qref), 0);
    peft_tensor_destroy(r);
    peft_gguf_close(g);

    peft_graph_release(ctx);
    peft_tensor_destroy(t_f32), peft_tensor_destroy(t_f16), peft_tensor_destroy(t_bf16);
    peft_tensor_destroy(t_q8), peft_tensor_destroy(t_i32), peft_tensor_destroy(t_f16src);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_writer_alignment_and_v2)
{
    peft_ctx *ctx = tu_ctx(1, 4);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    peft_gguf_writer *w = NULL;
    TU_OK(ctx, peft_gguf_writer_create(ctx, &w));
    TU_OK(ctx, peft_gguf_writer_add_u32(w, "general.alignment", 64));
    int64_t s1[1] = {3}, s2[2] = {5, 7};
    peft_tensor *a = tu_randn(ctx, 1, s1, 1.0f, 0), *b = tu_randn(ctx, 2, s2, 1.0f, 0);
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "a", a, PEFT_DTYPE_F32));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "b", b, PEFT_DTYPE_F32));
    const char *path = tmp_path("al.gguf");
    TU_OK(ctx, peft_gguf_writer_write(w, path));
    peft_gguf_writer_destroy(w);
    peft_gguf *g = NULL;
    TU_OK(ctx, peft_gguf_open(ctx, path, &g));
    ck_assert_uint_eq(peft_gguf_alignment(g), 64);
    ck_assert_uint_eq(peft_gguf_data_offset(g) % 64, 0);
    peft_gguf_tensor_info info;
    TU_OK(ctx, peft_gguf_get_tensor_info(g, 1, &info));
    ck_assert_uint_eq(info.offset, 64);
    ck_assert_uint_eq(peft_gguf_file_size(g), peft_gguf_data_offset(g) + 64 + 192);
    peft_gguf_close(g);

    /* GGUF v2 has the same little-endian layout: patch the version */
    size_t n;
    unsigned char *bytes = slurp(path, &n);
    bytes[4] = 2;
    const char *p2 = tmp_path("v2.gguf");
    spit(p2, bytes, n);
    TU_OK(ctx, peft_gguf_open(ctx, p2, &g));
    ck_assert_uint_eq(peft_gguf_version(g), 2);
    peft_tensor *r = NULL;
    TU_OK(ctx, peft_gguf_load_tensor(g, 1, PEFT_DTYPE_F32, &r));
    ck_assert_int_eq(memcmp(peft_tensor_data(r), peft_tensor_data(b), 35 * 4), 0);
    peft_tensor_destroy(r);
    peft_gguf_close(g);
    free(bytes);
    peft_tensor_destroy(a), peft_tensor_destroy(b);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: corrupted files ---- */

START_TEST(io_truncated_everywhere)
{
    peft_ctx *ctx = tu_ctx(1, 5);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    peft_gguf_writer *w = NULL;
    TU_OK(ctx, peft_gguf_writer_create(ctx, &w));
    TU_OK(ctx, peft_gguf_writer_add_str(w, "general.architecture", "llama"));
    TU_OK(ctx, peft_gguf_writer_add_u32(w, "n", 7));
    const char *toks[3] = {"<s>", "ab", "c"};
    TU_OK(ctx, peft_gguf_writer_add_arr_str(w, "toks", toks, NULL, 3));
    const float sc[3] = {0, -1, -2};
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "scores", PEFT_GGUF_FLOAT32, sc, 3));
    int64_t s[2] = {2, 32};
    peft_tensor *t = tu_randn(ctx, 2, s, 1.0f, 0);
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "w0", t, PEFT_DTYPE_Q8_0));
    int64_t s2[2] = {3, 5};
    peft_tensor *t2 = tu_randn(ctx, 2, s2, 1.0f, 0);
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "w1", t2, PEFT_DTYPE_F16)); /* 30 bytes: padded */
    const char *path = tmp_path("full.gguf");
    TU_OK(ctx, peft_gguf_writer_write(w, path));
    peft_gguf_writer_destroy(w);
    peft_tensor_destroy(t);
    peft_tensor_destroy(t2);
    size_t n;
    unsigned char *bytes = slurp(path, &n);
    peft_gguf *g = NULL;
    TU_OK(ctx, peft_gguf_open(ctx, path, &g));
    peft_gguf_tensor_info info;
    TU_OK(ctx, peft_gguf_get_tensor_info(g, 1, &info));
    size_t data_end = (size_t)(info.file_offset + info.nbytes);
    peft_gguf_close(g);
    ck_assert_uint_gt(n, data_end); /* the last tensor is padded */
    /* every prefix that cuts into the header, metadata or tensor data is rejected */
    const char *tp = tmp_path("trunc.gguf");
    for (size_t len = 0; len < data_end; len++) {
        spit(tp, bytes, len);
        peft_status st = peft_gguf_open(ctx, tp, &g);
        ck_assert_msg(st == PEFT_ERR_FORMAT, "truncated at %zu: %s (%s)", len, peft_status_name(st),
                      peft_ctx_errmsg(ctx));
        ck_assert_ptr_null(g);
        ck_assert_ptr_nonnull(strstr(peft_ctx_errmsg(ctx), tp));
    }
    free(bytes);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_corrupt_header_and_metadata)
{
    peft_ctx *ctx = tu_ctx(1, 6);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    bb b = {0};
    bb_bytes(&b, "GGUX", 4), bb_u32(&b, 3), bb_u64(&b, 0), bb_u64(&b, 0);
    expect_open_fails(ctx, &b, "magic.gguf", PEFT_ERR_FORMAT, "bad magic");
    bb_bytes(&b, "GG", 2);
    expect_open_fails(ctx, &b, "tiny.gguf", PEFT_ERR_FORMAT, "too small");
    bb_header(&b, 1, 0, 0);
    expect_open_fails(ctx, &b, "v1.gguf", PEFT_ERR_FORMAT, "version 1 is not supported");
    bb_header(&b, 0x03000000u, 0, 0);
    expect_open_fails(ctx, &b, "be.gguf", PEFT_ERR_FORMAT, "byte-swapped");
    bb_header(&b, 4, 0, 0);
    expect_open_fails(ctx, &b, "v4.gguf", PEFT_ERR_FORMAT, "unsupported GGUF version 4");
    bb_header(&b, 0, 0, 0);
    expect_open_fails(ctx, &b, "v0.gguf", PEFT_ERR_FORMAT, "unsupported GGUF version 0");
    /* counts the file cannot hold */
    bb_header(&b, 3, 1000000, 0);
    bb_zeros(&b, 256);
    expect_open_fails(ctx, &b, "ntensors.gguf", PEFT_ERR_FORMAT, "header claims 1000000 tensors");
    bb_header(&b, 3, 0, 1ULL << 60);
    bb_zeros(&b, 256);
    expect_open_fails(ctx, &b, "nkv.gguf", PEFT_ERR_FORMAT, "key/values");
    bb_header(&b, 3, UINT64_MAX, UINT64_MAX);
    expect_open_fails(ctx, &b, "nmax.gguf", PEFT_ERR_FORMAT, "header claims");
    /* a key longer than the file */
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 1000), bb_bytes(&b, "abcdefgh", 8), bb_u32(&b, 4), bb_u32(&b, 1);
    expect_open_fails(ctx, &b, "keylen.gguf", PEFT_ERR_FORMAT, "key of length 1000");
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, UINT64_MAX), bb_zeros(&b, 16);
    expect_open_fails(ctx, &b, "keylen2.gguf", PEFT_ERR_FORMAT, "runs past the end");
    /* a string value longer than the file */
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "s"), bb_u32(&b, PEFT_GGUF_STRING), bb_u64(&b, 1ULL << 40), bb_bytes(&b, "xy", 2);
    expect_open_fails(ctx, &b, "strlen.gguf", PEFT_ERR_FORMAT, "string value of length 1099511627776");
    /* huge array counts */
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "arr"), bb_u32(&b, PEFT_GGUF_ARRAY), bb_u32(&b, PEFT_GGUF_UINT32), bb_u64(&b, 1ULL << 62);
    bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "arrcount.gguf", PEFT_ERR_FORMAT, "array of 4611686018427387904 u32 elements");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "arr"), bb_u32(&b, PEFT_GGUF_ARRAY), bb_u32(&b, PEFT_GGUF_STRING), bb_u64(&b, 1ULL << 62);
    bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "arrstr.gguf", PEFT_ERR_FORMAT, "array of 4611686018427387904 strings");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "arr"), bb_u32(&b, PEFT_GGUF_ARRAY), bb_u32(&b, PEFT_GGUF_STRING), bb_u64(&b, 2);
    bb_str(&b, "ok"), bb_u64(&b, 50), bb_bytes(&b, "short", 5);
    expect_open_fails(ctx, &b, "arrstr2.gguf", PEFT_ERR_FORMAT, "string 1 of length 50");
    /* duplicate key */
    bb_header(&b, 3, 0, 3);
    bb_kv_u32(&b, "a.b", 1), bb_kv_u32(&b, "c", 2), bb_kv_u32(&b, "a.b", 3);
    expect_open_fails(ctx, &b, "dupkey.gguf", PEFT_ERR_FORMAT, "duplicate key 'a.b' (entries 0 and 2)");
    /* illegal types and values */
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "nest"), bb_u32(&b, PEFT_GGUF_ARRAY), bb_u32(&b, PEFT_GGUF_ARRAY), bb_u64(&b, 1);
    bb_u32(&b, PEFT_GGUF_UINT8), bb_u64(&b, 1), bb_u8(&b, 1);
    expect_open_fails(ctx, &b, "nested.gguf", PEFT_ERR_FORMAT, "nested arrays");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "t"), bb_u32(&b, 13), bb_u64(&b, 0);
    expect_open_fails(ctx, &b, "vtype.gguf", PEFT_ERR_FORMAT, "invalid value type 13");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "t"), bb_u32(&b, PEFT_GGUF_ARRAY), bb_u32(&b, 77), bb_u64(&b, 0);
    expect_open_fails(ctx, &b, "etype.gguf", PEFT_ERR_FORMAT, "invalid array element type 77");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "flag"), bb_u32(&b, PEFT_GGUF_BOOL), bb_u8(&b, 2), bb_zeros(&b, 8);
    expect_open_fails(ctx, &b, "bool.gguf", PEFT_ERR_FORMAT, "bool value 2");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "flags"), bb_u32(&b, PEFT_GGUF_ARRAY), bb_u32(&b, PEFT_GGUF_BOOL), bb_u64(&b, 3);
    bb_u8(&b, 0), bb_u8(&b, 1), bb_u8(&b, 9);
    expect_open_fails(ctx, &b, "boolarr.gguf", PEFT_ERR_FORMAT, "bool element 2 is 9");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, ""), bb_u32(&b, PEFT_GGUF_UINT8), bb_u8(&b, 1), bb_zeros(&b, 8);
    expect_open_fails(ctx, &b, "emptykey.gguf", PEFT_ERR_FORMAT, "empty key");
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 3), bb_bytes(&b, "a\0b", 3), bb_u32(&b, PEFT_GGUF_UINT8), bb_u8(&b, 1), bb_zeros(&b, 8);
    expect_open_fails(ctx, &b, "nulkey.gguf", PEFT_ERR_FORMAT, "contains a NUL byte");
    bb_header(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 48), bb_zeros(&b, 8);
    expect_open_fails(ctx, &b, "align48.gguf", PEFT_ERR_FORMAT, "general.alignment is 48");
    bb_header(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 0), bb_zeros(&b, 8);
    expect_open_fails(ctx, &b, "align0.gguf", PEFT_ERR_FORMAT, "power of two");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "general.alignment"), bb_u32(&b, PEFT_GGUF_UINT64), bb_u64(&b, 64);
    expect_open_fails(ctx, &b, "align64.gguf", PEFT_ERR_FORMAT, "general.alignment has type u64");
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_); /* failed opens free everything */
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_corrupt_tensor_infos)
{
    peft_ctx *ctx = tu_ctx(1, 8);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    bb b = {0};
    const uint64_t ne32[1] = {32}, ne8[1] = {8};
    /* a valid two-tensor file first, to be sure the builder is right */
    bb_header(&b, 3, 2, 0);
    bb_tinfo(&b, "a", 1, ne8, 0, 0), bb_tinfo(&b, "b", 1, ne8, 0, 32);
    bb_pad(&b, 32), bb_zeros(&b, 64);
    const char *ok_path = tmp_path("ok.gguf");
    spit(ok_path, b.p, b.len);
    free(b.p);
    memset(&b, 0, sizeof b);
    peft_gguf *g = NULL;
    TU_OK(ctx, peft_gguf_open(ctx, ok_path, &g));
    peft_gguf_close(g);

    bb_header(&b, 3, 2, 0);
    bb_tinfo(&b, "a", 1, ne8, 0, 0), bb_tinfo(&b, "a", 1, ne8, 0, 32);
    bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "duptensor.gguf", PEFT_ERR_FORMAT, "duplicate tensor name 'a' (tensors 0 and 1)");
    const uint64_t ne5[5] = {2, 2, 2, 2, 2};
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 5, ne5, 0, 0), bb_pad(&b, 32), bb_zeros(&b, 128);
    expect_open_fails(ctx, &b, "ndims5.gguf", PEFT_ERR_FORMAT, "n_dims is 5");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 0, ne5, 0, 0), bb_pad(&b, 32), bb_zeros(&b, 128);
    expect_open_fails(ctx, &b, "ndims0.gguf", PEFT_ERR_FORMAT, "n_dims is 0");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne8, 99, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "type99.gguf", PEFT_ERR_FORMAT, "unknown ggml type 99");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne8, 4, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "type4.gguf", PEFT_ERR_FORMAT, "unknown ggml type 4");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne32, 40, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "type40.gguf", PEFT_ERR_UNSUPPORTED, "NVFP4");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne8, 0, 4), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "misaligned.gguf", PEFT_ERR_FORMAT, "offset 4 is not a multiple of the alignment 32");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne8, 0, 1024), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "outside.gguf", PEFT_ERR_FORMAT, "lies outside the file");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne8, 0, 0xFFFFFFFFFFFFFFE0ULL), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "outside2.gguf", PEFT_ERR_FORMAT, "lies outside the file");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne8, 0, 0), bb_pad(&b, 32), bb_zeros(&b, 31);
    expect_open_fails(ctx, &b, "short.gguf", PEFT_ERR_FORMAT, "data of 32 bytes at offset 0 lies outside");
    const uint64_t ne31[2] = {31, 2};
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "q", 2, ne31, 8, 0), bb_pad(&b, 32), bb_zeros(&b, 128);
    expect_open_fails(ctx, &b, "q8ne0.gguf", PEFT_ERR_FORMAT, "ne[0] = 31 is not a multiple of the Q8_0 block size 32");
    const uint64_t big[2] = {1ULL << 32, 1ULL << 32};
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "huge", 2, big, 0, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "numel.gguf", PEFT_ERR_FORMAT, "element count overflows");
    const uint64_t big2[2] = {1ULL << 31, 1ULL << 31};
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "huge", 2, big2, 28 /* F64 */, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "nbytes.gguf", PEFT_ERR_FORMAT, "byte size overflows");
    const uint64_t neg[1] = {1ULL << 63};
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "neg", 1, neg, 0, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "negdim.gguf", PEFT_ERR_FORMAT, "too large");
    const uint64_t zero[2] = {4, 0};
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "z", 2, zero, 0, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "zerodim.gguf", PEFT_ERR_FORMAT, "dimension 1 is 0");
    bb_header(&b, 3, 2, 0);
    bb_tinfo(&b, "a", 1, ne32, 0, 0), bb_tinfo(&b, "b", 1, ne8, 0, 96);
    bb_pad(&b, 32), bb_zeros(&b, 128);
    expect_open_fails(ctx, &b, "overlap.gguf", PEFT_ERR_FORMAT, "tensors 'a' and 'b' overlap");
    bb_header(&b, 3, 2, 0);
    bb_tinfo(&b, "a", 1, ne8, 0, 0), bb_tinfo(&b, "b", 1, ne8, 0, 0);
    bb_pad(&b, 32), bb_zeros(&b, 128);
    expect_open_fails(ctx, &b, "overlap2.gguf", PEFT_ERR_FORMAT, "overlap");
    char name64[65];
    memset(name64, 'x', 64);
    name64[64] = '\0';
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, name64, 1, ne8, 0, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "name64.gguf", PEFT_ERR_FORMAT, "name is 64 bytes long (at most 63 allowed)");
    bb_header(&b, 3, 1, 0);
    bb_tinfo(&b, "", 1, ne8, 0, 0), bb_pad(&b, 32), bb_zeros(&b, 64);
    expect_open_fails(ctx, &b, "noname.gguf", PEFT_ERR_FORMAT, "empty name");
    /* out-of-order data with a gap is accepted (only overlap is an error) */
    bb_header(&b, 3, 2, 0);
    bb_tinfo(&b, "a", 1, ne8, 0, 64), bb_tinfo(&b, "b", 1, ne8, 0, 0);
    bb_pad(&b, 32), bb_zeros(&b, 96);
    const char *p = tmp_path("gap.gguf");
    spit(p, b.p, b.len);
    free(b.p);
    TU_OK(ctx, peft_gguf_open(ctx, p, &g));
    peft_gguf_close(g);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Random byte mutations of a valid file: open either succeeds or fails
 * cleanly with FORMAT/UNSUPPORTED, and whatever opens can be fully read.
 * Under SAN=1 this checks that no input makes the reader touch memory
 * outside the mapping. */
START_TEST(io_mutations)
{
    peft_ctx *ctx = tu_ctx(1, 11);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    peft_gguf_writer *w = NULL;
    TU_OK(ctx, peft_gguf_writer_create(ctx, &w));
    TU_OK(ctx, peft_gguf_writer_add_str(w, "general.architecture", "llama"));
    TU_OK(ctx, peft_gguf_writer_add_u32(w, "general.alignment", 32));
    const char *toks[4] = {"<s>", "ab", "", "cde"};
    TU_OK(ctx, peft_gguf_writer_add_arr_str(w, "toks", toks, NULL, 4));
    const int16_t v16[3] = {1, -2, 3};
    TU_OK(ctx, peft_gguf_writer_add_arr(w, "v16", PEFT_GGUF_INT16, v16, 3));
    TU_OK(ctx, peft_gguf_writer_add_bool(w, "flag", 1));
    int64_t s1[2] = {2, 32}, s2[1] = {5};
    peft_tensor *t1 = tu_randn(ctx, 2, s1, 1.0f, 0), *t2 = tu_randn(ctx, 1, s2, 1.0f, 0);
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "q", t1, PEFT_DTYPE_Q8_0));
    TU_OK(ctx, peft_gguf_writer_add_tensor(w, "h", t2, PEFT_DTYPE_BF16));
    const char *path = tmp_path("base.gguf");
    TU_OK(ctx, peft_gguf_writer_write(w, path));
    peft_gguf_writer_destroy(w);
    peft_tensor_destroy(t1), peft_tensor_destroy(t2);
    size_t n;
    unsigned char *orig = slurp(path, &n);
    unsigned char *buf = malloc(n);
    const char *mp = tmp_path("mut.gguf");
    int opened = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(buf, orig, n);
        int flips = 1 + (int)(peft_ctx_rand_u64(ctx) % 4);
        for (int f = 0; f < flips; f++) {
            /* mostly the metadata (where parsing happens), sometimes anywhere */
            size_t limit = (peft_ctx_rand_u64(ctx) % 4) ? 200 : n;
            size_t at = (size_t)(peft_ctx_rand_u64(ctx) % limit);
            uint64_t r = peft_ctx_rand_u64(ctx);
            buf[at] = (r & 1) ? (uint8_t)(r >> 8) : (uint8_t)(buf[at] ^ (1u << ((r >> 8) % 8)));
        }
        size_t len = (peft_ctx_rand_u64(ctx) % 8) ? n : (size_t)(peft_ctx_rand_u64(ctx) % n);
        spit(mp, buf, len);
        peft_gguf *g = NULL;
        peft_status st = peft_gguf_open(ctx, mp, &g);
        ck_assert_msg(st == PEFT_OK || st == PEFT_ERR_FORMAT || st == PEFT_ERR_UNSUPPORTED, "iteration %d: %s (%s)",
                      it, peft_status_name(st), peft_ctx_errmsg(ctx));
        if (st != PEFT_OK) continue;
        opened++;
        for (size_t k = 0; k < peft_gguf_n_keys(g); k++) {
            const char *key = peft_gguf_key_name(g, k);
            peft_gguf_type et;
            size_t count;
            if (peft_gguf_get_arr(g, key, &et, &count) != PEFT_OK) continue;
            for (size_t i = 0; i < count && i < 64; i++) {
                const char *s;
                size_t sl;
                int64_t iv;
                float fv;
                if (et == PEFT_GGUF_STRING) {
                    TU_OK(ctx, peft_gguf_get_arr_str(g, key, i, &s, &sl));
                    if (sl) ck_assert_int_ge((unsigned char)s[sl - 1], 0); /* touch the last byte */
                } else {
                    (void)peft_gguf_get_arr_int(g, key, i, &iv);
                    (void)peft_gguf_get_arr_f32(g, key, i, &fv);
                }
            }
        }
        for (size_t i = 0; i < peft_gguf_n_tensors(g); i++) {
            peft_tensor *t = NULL;
            if (peft_gguf_load_tensor(g, i, PEFT_DTYPE_F32, &t) == PEFT_OK) peft_tensor_destroy(t);
        }
        peft_gguf_close(g);
    }
    ck_assert_int_gt(opened, 0);
    free(orig), free(buf);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: the real files ---- */

START_TEST(io_stories260k_gguf)
{
    const char *path = model_path("stories260K.gguf");
    if (!path) {
        printf("gguf: skipping io_stories260k_gguf: shared models directory not found\n");
        return;
    }
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    peft_gguf *g = NULL;
    TU_OK(ctx, peft_gguf_open(ctx, path, &g));
    ck_assert_uint_eq(peft_gguf_version(g), 3);
    ck_assert_uint_eq(peft_gguf_n_keys(g), 19);
    ck_assert_uint_eq(peft_gguf_n_tensors(g), 48);
    ck_assert_uint_eq(peft_gguf_alignment(g), 32);
    ck_assert_uint_eq(peft_gguf_data_offset(g), 14176);
    ck_assert_uint_eq(peft_gguf_file_size(g), 1185376);
    const char *s;
    size_t len;
    int64_t v;
    double eps;
    TU_OK(ctx, peft_gguf_get_str(g, "general.architecture", &s, &len));
    ck_assert_str_eq(s, "llama");
    ck_assert_uint_eq(len, 5);
    TU_OK(ctx, peft_gguf_get_str(g, "tokenizer.ggml.model", &s, &len));
    ck_assert_str_eq(s, "llama");
    TU_OK(ctx, peft_gguf_get_int(g, "llama.embedding_length", &v));
    ck_assert_int_eq(v, 64);
    TU_OK(ctx, peft_gguf_get_int(g, "llama.attention.head_count_kv", &v));
    ck_assert_int_eq(v, 4);
    TU_OK(ctx, peft_gguf_get_int(g, "llama.attention.head_count", &v));
    ck_assert_int_eq(v, 8);
    TU_OK(ctx, peft_gguf_get_int(g, "llama.block_count", &v));
    ck_assert_int_eq(v, 5);
    TU_OK(ctx, peft_gguf_get_int(g, "llama.feed_forward_length", &v));
    ck_assert_int_eq(v, 172);
    TU_OK(ctx, peft_gguf_get_int(g, "llama.context_length", &v));
    ck_assert_int_eq(v, 2048);
    TU_OK(ctx, peft_gguf_get_int(g, "tokenizer.ggml.seperator_token_id", &v));
    ck_assert_int_eq(v, 4294967295LL);
    TU_OK(ctx, peft_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &eps));
    ck_assert_double_eq(eps, (double)1e-5f);
    peft_gguf_type et;
    size_t count;
    TU_OK(ctx, peft_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &count));
    ck_assert_int_eq(et, PEFT_GGUF_STRING);
    ck_assert_uint_eq(count, 512);
    TU_OK(ctx, peft_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0, &s, &len));
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(memcmp(s, "<unk>", 5), 0);
    TU_OK(ctx, peft_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3, &s, &len));
    ck_assert_int_eq(memcmp(s, "<0x00>", len), 0);
    float score;
    TU_OK(ctx, peft_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &count));
    ck_assert_int_eq(et, PEFT_GGUF_FLOAT32);
    ck_assert_uint_eq(count, 512);
    TU_OK(ctx, peft_gguf_get_arr_f32(g, "tokenizer.ggml.scores", 511, &score));
    ck_assert_float_eq(score, -252.0f);
    TU_OK(ctx, peft_gguf_get_arr_int(g, "tokenizer.ggml.token_type", 1, &v));
    ck_assert_int_eq(v, 3); /* BOS is a control token */
    for (size_t i = 0; i < peft_gguf_n_keys(g); i++) ck_assert_ptr_nonnull(peft_gguf_key_name(g, i));

    size_t idx;
    peft_gguf_tensor_info info;
    TU_OK(ctx, peft_gguf_find_tensor(g, "token_embd.weight", &idx));
    TU_OK(ctx, peft_gguf_get_tensor_info(g, idx, &info));
    ck_assert_str_eq(info.type_name, "F32");
    ck_assert_int_eq(info.n_dims, 2);
    ck_assert_int_eq(info.ne[0], 64);
    ck_assert_int_eq(info.ne[1], 512);
    ck_assert_uint_eq(info.file_offset, 14176 + info.offset);
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_gguf_load_tensor(g, idx, PEFT_DTYPE_F32, &t));
    ck_assert_int_eq(peft_tensor_ndim(t), 2);
    ck_assert_int_eq(peft_tensor_dim(t, 0), 512);
    ck_assert_int_eq(peft_tensor_dim(t, 1), 64);
    peft_tensor_destroy(t);
    TU_OK(ctx, peft_gguf_find_tensor(g, "blk.4.ffn_down.weight", &idx));
    TU_OK(ctx, peft_gguf_load_tensor(g, idx, PEFT_DTYPE_F32, &t));
    ck_assert_int_eq(peft_tensor_dim(t, 0), 64);
    ck_assert_int_eq(peft_tensor_dim(t, 1), 172);
    peft_tensor_destroy(t);
    /* output.weight is a copy of token_embd.weight */
    size_t a, b;
    const void *da, *db;
    size_t na, nb;
    TU_OK(ctx, peft_gguf_find_tensor(g, "output.weight", &a));
    TU_OK(ctx, peft_gguf_find_tensor(g, "token_embd.weight", &b));
    TU_OK(ctx, peft_gguf_tensor_data(g, a, &da, &na));
    TU_OK(ctx, peft_gguf_tensor_data(g, b, &db, &nb));
    ck_assert_uint_eq(na, nb);
    ck_assert_int_eq(memcmp(da, db, na), 0);
    int64_t total = 0;
    for (size_t i = 0; i < peft_gguf_n_tensors(g); i++) {
        TU_OK(ctx, peft_gguf_get_tensor_info(g, i, &info));
        total += info.numel;
    }
    ck_assert_int_eq(total, 292800);
    peft_gguf_close(g);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_gpt2_vocab_gguf)
{
    const char *path = model_path("ggml-vocab-gpt-2.gguf");
    if (!path) {
        printf("gguf: skipping io_gpt2_vocab_gguf: shared models directory not found\n");
        return;
    }
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base_ = peft_ctx_bytes_allocated(ctx);
    peft_gguf *g = NULL;
    TU_OK(ctx, peft_gguf_open(ctx, path, &g));
    ck_assert_uint_eq(peft_gguf_n_tensors(g), 0);
    ck_assert_uint_eq(peft_gguf_n_keys(g), 16);
    const char *s;
    size_t len, count;
    peft_gguf_type et;
    int64_t v;
    TU_OK(ctx, peft_gguf_get_str(g, "general.architecture", &s, &len));
    ck_assert_str_eq(s, "gpt2");
    TU_OK(ctx, peft_gguf_get_str(g, "tokenizer.ggml.pre", &s, &len));
    ck_assert_str_eq(s, "gpt-2");
    TU_OK(ctx, peft_gguf_get_int(g, "gpt2.embedding_length", &v));
    ck_assert_int_eq(v, 768);
    TU_OK(ctx, peft_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v));
    ck_assert_int_eq(v, 50256);
    TU_OK(ctx, peft_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &count));
    ck_assert_int_eq(et, PEFT_GGUF_STRING);
    ck_assert_uint_eq(count, 50257);
    TU_OK(ctx, peft_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &count));
    ck_assert_uint_eq(count, 50000);
    TU_OK(ctx, peft_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 50256, &s, &len));
    ck_assert_uint_eq(len, 13);
    ck_assert_int_eq(memcmp(s, "<|endoftext|>", 13), 0);
    TU_OK(ctx, peft_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0, &s, &len));
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(s[0], '!');
    TU_OK(ctx, peft_gguf_get_arr_str(g, "tokenizer.ggml.merges", 0, &s, &len));
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(memcmp(s, "\xC4\xA0 t", 4), 0);
    /* every token is reachable and non-empty */
    size_t bytes = 0;
    for (size_t i = 0; i < 50257; i++) {
        TU_OK(ctx, peft_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len));
        ck_assert_uint_gt(len, 0);
        bytes += len;
    }
    ck_assert_uint_gt(bytes, 50257);
    peft_gguf_close(g);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *api = tcase_create("api");
    tcase_add_checked_fixture(api, dir_setup, dir_teardown);
    tcase_add_test(api, api_misuse);
    tcase_add_test(api, api_writer_misuse);
    tcase_add_test(api, api_out_of_memory);
    suite_add_tcase(s, api);
    TCase *num = tcase_create("numerics");
    tcase_add_test(num, numerics_q8_0_known_values);
    tcase_add_test(num, numerics_q8_0_error_bound);
    suite_add_tcase(s, num);
    TCase *io = tcase_create("io");
    tcase_add_checked_fixture(io, dir_setup, dir_teardown);
    tcase_add_test(io, io_writer_round_trip);
    tcase_add_test(io, io_writer_alignment_and_v2);
    tcase_add_test(io, io_truncated_everywhere);
    tcase_add_test(io, io_corrupt_header_and_metadata);
    tcase_add_test(io, io_corrupt_tensor_infos);
    tcase_add_test(io, io_mutations);
    tcase_add_test(io, io_stories260k_gguf);
    tcase_add_test(io, io_gpt2_vocab_gguf);
    suite_add_tcase(s, io);
    return s;
}
