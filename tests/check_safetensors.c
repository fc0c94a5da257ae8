/* safetensors: round trips bit for bit, conversions, metadata, sharded sets,
 * hand-corrupted files (each refused with PEFT_ERR_FORMAT and a message saying
 * what is wrong), I/O errors and the atomic writer. Every file is written by
 * the test itself in a mkdtemp directory. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "util/testutil.h"

/* ---- temp directories and raw files ---- */

static char *tmp_dir(void)
{
    char *d = strdup("/tmp/peft-st-XXXXXX");
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Remove a flat directory made by tmp_dir and free its name. */
static void rm_dir(char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = path_in(dir, e->d_name);
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

static void write_bytes(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    if (n) ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* [u64 LE declared_len][header bytes][data]: the header length may lie. */
static void write_st_raw(const char *path, uint64_t declared_len, const char *header, const void *data,
                         size_t data_len)
{
    size_t hl = strlen(header), n = 8 + hl + data_len;
    unsigned char *buf = malloc(n);
    for (int b = 0; b < 8; b++) buf[b] = (unsigned char)(declared_len >> (8 * b));
    memcpy(buf + 8, header, hl);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    write_bytes(path, buf, n);
    free(buf);
}

static void write_st(const char *path, const char *header, const void *data, size_t data_len)
{
    write_st_raw(path, strlen(header), header, data, data_len);
}

/* Fill a tensor's storage with random bits (NaN payloads, subnormals... all of
 * them must survive a same-dtype round trip). */
static void fill_bits(peft_ctx *ctx, peft_tensor *t)
{
    unsigned char *p = peft_tensor_data(t);
    size_t n = peft_tensor_nbytes(t);
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)peft_ctx_rand_u64(ctx);
}

static peft_tensor *make(peft_ctx *ctx, peft_dtype dt, int ndim, const int64_t *shape)
{
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_tensor_create(ctx, dt, ndim, shape, &t));
    fill_bits(ctx, t);
    return t;
}

/* The bytes of t in row-major order (t may be a strided view). */
static unsigned char *logical_bytes(const peft_tensor *t)
{
    size_t es = peft_dtype_block_bytes(peft_tensor_dtype(t)), n = (size_t)peft_tensor_numel(t);
    unsigned char *out = malloc(n * es), *base = peft_tensor_data(t);
    int nd = peft_tensor_ndim(t);
    int64_t idx[PEFT_MAX_DIMS] = {0};
    for (size_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int k = 0; k < nd; k++) off += idx[k] * peft_tensor_stride(t, k);
        memcpy(out + i * es, base + off * (int64_t)es, es);
        for (int k = nd - 1; k >= 0; k--) {
            if (++idx[k] < peft_tensor_dim(t, k)) break;
            idx[k] = 0;
        }
    }
    return out;
}

static void expect_same(peft_safetensors *st, const char *name, const peft_tensor *ref)
{
    peft_ctx *ctx = ref->ctx;
    size_t ix = 0;
    TU_OK(ctx, peft_safetensors_find(st, name, &ix));
    peft_tensor *got = NULL;
    TU_OK(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_COUNT, &got));
    ck_assert_int_eq(peft_tensor_dtype(got), peft_tensor_dtype(ref));
    ck_assert_int_eq(peft_tensor_ndim(got), peft_tensor_ndim(ref));
    for (int k = 0; k < peft_tensor_ndim(ref); k++) ck_assert_int_eq(peft_tensor_dim(got, k), peft_tensor_dim(ref, k));
    ck_assert(peft_tensor_is_contiguous(got));
    unsigned char *want = logical_bytes(ref);
    ck_assert_msg(memcmp(peft_tensor_data(got), want, peft_tensor_nbytes(got)) == 0, "tensor '%s' differs", name);
    free(want);
    peft_tensor_destroy(got);
}

/* ---- io: round trips ---- */

START_TEST(io_roundtrip_all_dtypes)
{
    peft_ctx *ctx = tu_ctx(1, 11);
    char *dir = tmp_dir(), *path = path_in(dir, "rt.safetensors");
    const int64_t s35[2] = {3, 5}, s7[1] = {7}, s234[3] = {2, 3, 4}, s5[1] = {5}, s1119[4] = {1, 1, 1, 9},
                  s1[1] = {1}, s46[2] = {4, 6}, s33[2] = {3, 3};
    peft_tensor *t[8];
    t[0] = make(ctx, PEFT_DTYPE_F32, 2, s35);
    t[1] = make(ctx, PEFT_DTYPE_F16, 1, s7);
    t[2] = make(ctx, PEFT_DTYPE_BF16, 3, s234);
    t[3] = make(ctx, PEFT_DTYPE_I32, 1, s5);
    t[4] = make(ctx, PEFT_DTYPE_F32, 4, s1119);
    t[5] = make(ctx, PEFT_DTYPE_F16, 1, s1);
    peft_tensor *base_f16 = make(ctx, PEFT_DTYPE_F16, 2, s46), *base_i32 = make(ctx, PEFT_DTYPE_I32, 2, s33);
    /* strided views are written in logical row-major order */
    TU_OK(ctx, peft_transpose(ctx, base_f16, 0, 1, &t[6]));
    TU_OK(ctx, peft_slice(ctx, base_i32, 1, 1, 2, &t[7]));
    ck_assert(!peft_tensor_is_contiguous(t[6]));
    ck_assert(!peft_tensor_is_contiguous(t[7]));
    size_t base_bytes = peft_ctx_bytes_allocated(ctx); /* the views grew the arena */
    const char *names[8] = {"w.f32", "b.f16", "x.bf16", "ids", "deep", "one", "view.T", "view.slice"};
    const char *keys[3] = {"format", "note", "unicode"};
    const char *vals[3] = {"pt", "quote \" backslash \\ newline \n tab \t end", "h\xc3\xa9llo \xe2\x82\xac"};
    TU_OK(ctx, peft_safetensors_save(ctx, path, 8, names, t, 3, keys, vals));

    /* the header is padded to 8 bytes and 4-byte dtypes come first */
    size_t flen;
    unsigned char *raw = read_bytes(path, &flen);
    uint64_t N = 0;
    for (int b = 0; b < 8; b++) N |= (uint64_t)raw[b] << (8 * b);
    ck_assert_uint_eq(N % 8, 0);
    ck_assert_int_eq(raw[8], '{');
    ck_assert_int_eq(raw[8 + N - 1] == ' ' || raw[8 + N - 1] == '}', 1);
    free(raw);

    peft_safetensors *st = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    ck_assert_uint_eq(peft_safetensors_count(st), 8);
    for (int i = 0; i < 8; i++) expect_same(st, names[i], t[i]);
    ck_assert_str_eq(peft_safetensors_metadata(st, "format"), "pt");
    ck_assert_str_eq(peft_safetensors_metadata(st, "note"), vals[1]);
    ck_assert_str_eq(peft_safetensors_metadata(st, "unicode"), vals[2]);
    ck_assert_ptr_null(peft_safetensors_metadata(st, "absent"));
    ck_assert_ptr_null(peft_safetensors_metadata(st, NULL));

    /* info: dtype, dtype string, rank, shape; the listing is in data order,
     * 4-byte dtypes first */
    const char *nm, *ds;
    peft_dtype dt;
    int nd;
    int64_t sh[4];
    size_t ix;
    TU_OK(ctx, peft_safetensors_find(st, "x.bf16", &ix));
    TU_OK(ctx, peft_safetensors_info(st, ix, &nm, &dt, &ds, &nd, sh));
    ck_assert_str_eq(nm, "x.bf16");
    ck_assert_int_eq(dt, PEFT_DTYPE_BF16);
    ck_assert_str_eq(ds, "BF16");
    ck_assert_int_eq(nd, 3);
    ck_assert_int_eq(sh[0], 2);
    ck_assert_int_eq(sh[1], 3);
    ck_assert_int_eq(sh[2], 4);
    ck_assert_int_eq(sh[3], 0);
    TU_OK(ctx, peft_safetensors_info(st, 0, &nm, NULL, NULL, NULL, NULL));
    ck_assert_str_eq(nm, "w.f32");
    TU_OK(ctx, peft_safetensors_info(st, 4, &nm, NULL, &ds, NULL, NULL));
    ck_assert_str_eq(nm, "b.f16");
    TU_OK(ctx, peft_safetensors_info(st, 0, NULL, NULL, NULL, NULL, NULL));
    TU_EXPECT_FAIL(ctx, peft_safetensors_info(st, 8, &nm, NULL, NULL, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "index 8 out of range (8 tensors)");
    TU_EXPECT_FAIL(ctx, peft_safetensors_find(st, "missing.weight", &ix), PEFT_ERR_NOT_FOUND,
                   "no tensor 'missing.weight'");
    peft_tensor *none = NULL;
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, 99, PEFT_DTYPE_F32, &none), PEFT_ERR_INVALID_ARG, "out of range");
    ck_assert_ptr_null(none);
    peft_safetensors_close(st);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_bytes); /* nothing leaked */

    peft_graph_release(ctx);
    for (int i = 0; i < 6; i++) peft_tensor_destroy(t[i]);
    peft_tensor_destroy(base_f16);
    peft_tensor_destroy(base_i32);
    free(path);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_empty_and_metadata_only)
{
    peft_ctx *ctx = tu_ctx(1, 12);
    char *dir = tmp_dir(), *path = path_in(dir, "e.safetensors");
    TU_OK(ctx, peft_safetensors_save(ctx, path, 0, NULL, NULL, 0, NULL, NULL));
    peft_safetensors *st = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    ck_assert_uint_eq(peft_safetensors_count(st), 0);
    size_t ix;
    TU_EXPECT_FAIL(ctx, peft_safetensors_find(st, "a", &ix), PEFT_ERR_NOT_FOUND, "no tensor 'a'");
    peft_safetensors_close(st);
    const char *k = "k", *v = "v";
    TU_OK(ctx, peft_safetensors_save(ctx, path, 0, NULL, NULL, 1, &k, &v));
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    ck_assert_str_eq(peft_safetensors_metadata(st, "k"), "v");
    peft_safetensors_close(st);
    free(path);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_load_conversions)
{
    peft_ctx *ctx = tu_ctx(1, 13);
    char *dir = tmp_dir(), *path = path_in(dir, "c.safetensors");
    const int64_t s[2] = {5, 7};
    peft_tensor *f = tu_randn(ctx, 2, s, 3.0f, 0), *h = NULL, *b = NULL;
    float *fv = peft_tensor_data(f);
    fv[0] = 1e-7f, fv[1] = 70000.0f, fv[2] = -0.0f; /* f16 subnormal, f16 overflow, signed zero */
    TU_OK(ctx, peft_tensor_convert(f, PEFT_DTYPE_F16, &h));
    TU_OK(ctx, peft_tensor_convert(f, PEFT_DTYPE_BF16, &b));
    int32_t iv[3] = {7, -8, 2147483647};
    const int64_t s3[1] = {3};
    peft_tensor *ids = tu_ids(ctx, 1, s3, iv);
    const char *names[4] = {"f", "h", "b", "ids"};
    peft_tensor *ts[4] = {f, h, b, ids};
    TU_OK(ctx, peft_safetensors_save(ctx, path, 4, names, ts, 0, NULL, NULL));
    peft_safetensors *st = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    size_t i_f, i_h, i_b, i_ids;
    TU_OK(ctx, peft_safetensors_find(st, "f", &i_f));
    TU_OK(ctx, peft_safetensors_find(st, "h", &i_h));
    TU_OK(ctx, peft_safetensors_find(st, "b", &i_b));
    TU_OK(ctx, peft_safetensors_find(st, "ids", &i_ids));
    peft_tensor *o;
    /* f32 -> f16 / bf16 round to nearest even like the tensor conversions */
    TU_OK(ctx, peft_safetensors_load(st, i_f, PEFT_DTYPE_F16, &o));
    ck_assert_int_eq(peft_tensor_dtype(o), PEFT_DTYPE_F16);
    ck_assert_mem_eq(peft_tensor_data(o), peft_tensor_data(h), 35 * 2);
    peft_tensor_destroy(o);
    TU_OK(ctx, peft_safetensors_load(st, i_f, PEFT_DTYPE_BF16, &o));
    ck_assert_mem_eq(peft_tensor_data(o), peft_tensor_data(b), 35 * 2);
    peft_tensor_destroy(o);
    /* f16 / bf16 -> f32 exactly; f16 -> bf16 through f32 */
    TU_OK(ctx, peft_safetensors_load(st, i_h, PEFT_DTYPE_F32, &o));
    const uint16_t *hv = peft_tensor_data(h), *bv = peft_tensor_data(b);
    for (int k = 0; k < 35; k++) {
        float want = peft__f16_to_f32(hv[k]), got = ((float *)peft_tensor_data(o))[k];
        ck_assert(memcmp(&want, &got, 4) == 0);
    }
    peft_tensor_destroy(o);
    TU_OK(ctx, peft_safetensors_load(st, i_b, PEFT_DTYPE_F32, &o));
    for (int k = 0; k < 35; k++) ck_assert(((float *)peft_tensor_data(o))[k] == peft__bf16_to_f32(bv[k]));
    peft_tensor_destroy(o);
    TU_OK(ctx, peft_safetensors_load(st, i_h, PEFT_DTYPE_BF16, &o));
    for (int k = 0; k < 35; k++)
        ck_assert_uint_eq(((uint16_t *)peft_tensor_data(o))[k], peft__f32_to_bf16(peft__f16_to_f32(hv[k])));
    peft_tensor_destroy(o);
    TU_OK(ctx, peft_safetensors_load(st, i_ids, PEFT_DTYPE_I32, &o));
    ck_assert_mem_eq(peft_tensor_data(o), iv, sizeof iv);
    peft_tensor_destroy(o);
    /* float <-> int and quantized targets are refused, naming the tensor */
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, i_f, PEFT_DTYPE_I32, &o), PEFT_ERR_DTYPE,
                   "tensor 'f' is F32 and cannot be loaded as i32");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, i_ids, PEFT_DTYPE_F32, &o), PEFT_ERR_DTYPE,
                   "tensor 'ids' is I32 and cannot be loaded as f32");
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, i_f, PEFT_DTYPE_Q8_0, &o), PEFT_ERR_DTYPE, "as q8_0");
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, i_f, (peft_dtype)99, &o), PEFT_ERR_INVALID_ARG, "unknown dtype");
    peft_safetensors_close(st);
    peft_tensor_destroy(f), peft_tensor_destroy(h), peft_tensor_destroy(b), peft_tensor_destroy(ids);
    free(path);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

/* A file from an independent writer (this test's raw bytes) with dtypes and
 * shapes our writer never produces. */
START_TEST(io_foreign_dtypes_and_shapes)
{
    peft_ctx *ctx = tu_ctx(1, 14);
    char *dir = tmp_dir(), *path = path_in(dir, "f.safetensors");
    unsigned char data[128];
    size_t o = 0;
    const int64_t i64[3] = {1, -2, 2147483647}, i64big[2] = {5, (int64_t)1 << 40};
    for (int k = 0; k < 3; k++)
        for (int b = 0; b < 8; b++) data[o++] = (unsigned char)((uint64_t)i64[k] >> (8 * b)); /* [0,24) */
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < 8; b++) data[o++] = (unsigned char)((uint64_t)i64big[k] >> (8 * b)); /* [24,40) */
    double d = 0.5;
    memcpy(data + o, &d, 8), o += 8;                 /* f64 [40,48) */
    float sc = 2.5f, five[2] = {1.0f, -1.0f};
    memcpy(data + o, &sc, 4), o += 4;                /* scalar [48,52) */
    memcpy(data + o, five, 8), o += 8;               /* five dims [52,60) */
    data[o++] = 1, data[o++] = 2, data[o++] = 3;     /* u8 [60,63) */
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"i64\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]},"
        "\"i64big\":{\"data_offsets\":[24,40],\"dtype\":\"I64\",\"shape\":[2]},"
        "\"f64\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[40,48]},"
        "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[48,52]},"
        "\"empty\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[52,52]},"
        "\"five\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[52,60]},"
        "\"u8\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[60,63]}}   \n\t ";
    write_st(path, hdr, data, o);
    peft_safetensors *st = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    ck_assert_uint_eq(peft_safetensors_count(st), 7);
    size_t ix;
    peft_tensor *t = NULL;
    peft_dtype dt;
    const char *ds;
    int nd;
    int64_t sh[4];

    TU_OK(ctx, peft_safetensors_find(st, "i64", &ix));
    TU_OK(ctx, peft_safetensors_info(st, ix, NULL, &dt, &ds, &nd, sh));
    ck_assert_int_eq(dt, PEFT_DTYPE_COUNT);
    ck_assert_str_eq(ds, "I64");
    TU_OK(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_COUNT, &t));
    ck_assert_int_eq(peft_tensor_dtype(t), PEFT_DTYPE_I32);
    const int32_t want[3] = {1, -2, 2147483647};
    ck_assert_mem_eq(peft_tensor_data(t), want, sizeof want);
    peft_tensor_destroy(t);

    TU_OK(ctx, peft_safetensors_find(st, "i64big", &ix));
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_I32, &t), PEFT_ERR_DTYPE,
                   "tensor 'i64big': element 1 = 1099511627776 does not fit in i32");
    TU_OK(ctx, peft_safetensors_find(st, "f64", &ix));
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_F32, &t), PEFT_ERR_DTYPE,
                   "tensor 'f64' has dtype F64");
    TU_OK(ctx, peft_safetensors_find(st, "u8", &ix));
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_COUNT, &t), PEFT_ERR_DTYPE, "tensor 'u8' has dtype U8");

    TU_OK(ctx, peft_safetensors_find(st, "scalar", &ix));
    TU_OK(ctx, peft_safetensors_info(st, ix, NULL, &dt, NULL, &nd, sh));
    ck_assert_int_eq(nd, 0);
    ck_assert_int_eq(sh[0], 0);
    TU_OK(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_COUNT, &t));
    ck_assert_int_eq(peft_tensor_ndim(t), 1);
    ck_assert_int_eq(peft_tensor_dim(t, 0), 1);
    ck_assert(((float *)peft_tensor_data(t))[0] == 2.5f);
    peft_tensor_destroy(t);

    TU_OK(ctx, peft_safetensors_find(st, "empty", &ix));
    TU_OK(ctx, peft_safetensors_info(st, ix, NULL, NULL, NULL, &nd, sh));
    ck_assert_int_eq(nd, 2);
    ck_assert_int_eq(sh[0], 2);
    ck_assert_int_eq(sh[1], 0);
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_COUNT, &t), PEFT_ERR_SHAPE,
                   "tensor 'empty' has no elements");
    TU_OK(ctx, peft_safetensors_find(st, "five", &ix));
    TU_OK(ctx, peft_safetensors_info(st, ix, NULL, NULL, NULL, &nd, sh));
    ck_assert_int_eq(nd, 5);
    ck_assert_int_eq(sh[3], 1);
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_COUNT, &t), PEFT_ERR_SHAPE,
                   "tensor 'five' has 5 dims");
    ck_assert_str_eq(peft_safetensors_metadata(st, "format"), "pt");
    peft_safetensors_close(st);
    free(path);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: corrupted files ---- */

/* Two tensors: a f32 [2] at [0,8), b f16 [3] at [8,14). */
#define ENT_A "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
#define ENT_B(off) "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":" off "}"

typedef struct bad_case {
    const char *header;
    size_t data_len;
    const char *needle;
} bad_case;

START_TEST(io_corrupt_headers)
{
    peft_ctx *ctx = tu_ctx(1, 15);
    char *dir = tmp_dir(), *path = path_in(dir, "bad.safetensors");
    unsigned char data[64] = {0};
    /* the base case is valid */
    write_st(path, "{" ENT_A "," ENT_B("[8,14]") "}", data, 14);
    peft_safetensors *st = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    peft_safetensors_close(st);

    const bad_case cases[] = {
        {"{\"a\":", 0, "not a valid JSON object"},
        {"{\"a\":{} x}", 0, "not a valid JSON object"},
        {"[1, 2]", 0, "does not start with '{'"},
        {"{" ENT_A "," ENT_B("[8,14]") "} {}", 14, "not a valid JSON object"},
        {"{\"a\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a': unknown dtype 'F128'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
         "tensor 'a': shape entry 0 is -2, not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,8]}}", 8, "shape entry 1 is 1.5"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "shape entry 0 is \"2\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
         "number '2.0' at byte 29 is not a plain non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8e0]}}", 8, "number '8e0'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551616]}}", 8,
         "data_offsets entry 1.8446744073709552e+19 is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "shape is not an array"},
        {"{\"a\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype is 5, not a string"},
        {"{" ENT_A "," ENT_B("[4,10]") "}", 10, "tensor 'b': data_offsets [4, 10] overlap the previous tensor"},
        {"{" ENT_A "," ENT_B("[10,16]") "}", 16, "tensor 'b': data_offsets [10, 16] leave a gap after byte 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}", 10, "leave a gap after byte 0"},
        {"{" ENT_A "," ENT_B("[14,8]") "}", 14, "tensor 'b': data_offsets [14, 8]: end before begin"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
         "data_offsets [0, 8] hold 8 bytes but shape [3] of F32 needs 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", 8,
         "tensor 'a': shape [1099511627776, 1099511627776]: size overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,1073741824],\"data_offsets\":[0,8]}}", 8,
         "size overflows"}, /* numel fits, numel * 32 bits does not */
        {"{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 1, "not a whole number of bytes"},
        {"{" ENT_A "," ENT_B("[8,14]") "}", 17, "3 trailing bytes after the last tensor"},
        {"{" ENT_A "," ENT_A "}", 8, "duplicate tensor name 'a'"},
        {"{\"__metadata__\":{\"k\":1}," ENT_A "}", 8, "__metadata__ value of 'k' is 1, not a string"},
        {"{\"__metadata__\":{\"k\":{\"x\":\"y\"}}," ENT_A "}", 8, "value of 'k' is an object"},
        {"{\"__metadata__\":[\"k\"]," ENT_A "}", 8, "__metadata__ is not an object"},
        {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," ENT_A "}", 8, "duplicate __metadata__ key 'k'"},
        {"{\"__metadata__\":{},\"__metadata__\":{}," ENT_A "}", 8, "duplicate tensor name '__metadata__'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", 8,
         "tensor 'a': unknown field 'extra'"},
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         "duplicate field 'dtype'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "tensor 'a': missing field 'data_offsets'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8, "not an array of two integers"},
        {"{\"a\":7}", 0, "tensor 'a': entry is not an object"},
        {"{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "invalid UTF-8 at byte 3"},
        {"{\"a\xc0\xa1\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "invalid UTF-8"}, /* overlong */
        {"{\"a\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "invalid UTF-8"}, /* surrogate */
        {"{\"a\tb\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "control character inside a string"},
        {"{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "\\u0000 escape"},
        {"{\x01\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "control character in the JSON"},
        {"{" ENT_A "}\v", 8, "control character in the JSON"},
        {" {" ENT_A "}", 8, "does not start with '{'"},
        {"{", 0, "too short"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        write_st(path, cases[c].header, data, cases[c].data_len);
        st = (peft_safetensors *)1;
        peft_status s = peft_safetensors_open(ctx, path, &st);
        ck_assert_msg(s == PEFT_ERR_FORMAT, "case %zu (%s): got %s (%s)", c, cases[c].needle, peft_status_name(s),
                      peft_ctx_errmsg(ctx));
        ck_assert_ptr_null(st);
        ck_assert_msg(strstr(peft_ctx_errmsg(ctx), cases[c].needle) != NULL, "case %zu: message '%s' lacks '%s'", c,
                      peft_ctx_errmsg(ctx), cases[c].needle);
        ck_assert_msg(strstr(peft_ctx_errmsg(ctx), path) != NULL, "case %zu: message lacks the path", c);
    }
    /* the header length lies */
    const char *hdr = "{" ENT_A "," ENT_B("[8,14]") "}";
    write_st_raw(path, strlen(hdr) + 100, hdr, data, 14);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, path, &st), PEFT_ERR_FORMAT, "runs past the end of the file");
    write_st_raw(path, (uint64_t)1 << 63, hdr, data, 14);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, path, &st), PEFT_ERR_FORMAT,
                   "header length 9223372036854775808 exceeds the limit of 100000000 bytes");
    write_st_raw(path, UINT64_MAX, hdr, data, 14);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, path, &st), PEFT_ERR_FORMAT, "exceeds the limit");
    write_st_raw(path, 0, "", NULL, 0);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, path, &st), PEFT_ERR_FORMAT, "header of 0 bytes is too short");
    free(path);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_truncated_files)
{
    peft_ctx *ctx = tu_ctx(1, 16);
    char *dir = tmp_dir(), *path = path_in(dir, "t.safetensors"), *cut = path_in(dir, "cut.safetensors");
    const int64_t s[2] = {4, 8};
    peft_tensor *a = make(ctx, PEFT_DTYPE_F32, 2, s), *b = make(ctx, PEFT_DTYPE_BF16, 2, s);
    const char *names[2] = {"a", "b"};
    peft_tensor *ts[2] = {a, b};
    TU_OK(ctx, peft_safetensors_save(ctx, path, 2, names, ts, 0, NULL, NULL));
    size_t n;
    unsigned char *full = read_bytes(path, &n);
    uint64_t N = 0;
    for (int k = 0; k < 8; k++) N |= (uint64_t)full[k] << (8 * k);
    ck_assert_uint_eq(n, 8 + N + 4 * 32 + 2 * 32);
    const struct {
        size_t len;
        const char *needle;
    } cuts[] = {
        {0, "file is 0 bytes, too short for the 8-byte header length"},
        {3, "file is 3 bytes"},
        {7, "file is 7 bytes"},
        {8, "runs past the end of the file (8 bytes; truncated?)"},
        {8 + (size_t)N / 2, "runs past the end"},
        {8 + (size_t)N - 1, "runs past the end"},
        {8 + (size_t)N, "tensor 'a': data ends at byte 128 of a 0-byte data buffer"},
        {8 + (size_t)N + 1, "data ends at byte 128 of a 1-byte data buffer"},
        {8 + (size_t)N + 128, "tensor 'b': data ends at byte 192 of a 128-byte data buffer"},
        {n - 1, "tensor 'b': data ends at byte 192 of a 191-byte"},
    };
    peft_safetensors *st = NULL;
    for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
        write_bytes(cut, full, cuts[c].len);
        TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, cut, &st), PEFT_ERR_FORMAT, cuts[c].needle);
        ck_assert_ptr_null(st);
    }
    write_bytes(cut, full, n);
    TU_OK(ctx, peft_safetensors_open(ctx, cut, &st));
    /* a file shrunk after open: the read fails cleanly */
    ck_assert_int_eq(truncate(cut, (off_t)(n - 10)), 0);
    size_t ix;
    peft_tensor *o = NULL;
    TU_OK(ctx, peft_safetensors_find(st, "b", &ix));
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_COUNT, &o), PEFT_ERR_IO,
                   "reading tensor 'b': unexpected end of file");
    ck_assert_ptr_null(o);
    TU_EXPECT_FAIL(ctx, peft_safetensors_load(st, ix, PEFT_DTYPE_F32, &o), PEFT_ERR_IO, "unexpected end of file");
    peft_safetensors_close(st);
    free(full);
    peft_tensor_destroy(a), peft_tensor_destroy(b);
    free(path), free(cut);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: sharded sets ---- */

static const char *SH1 = "model-00001-of-00002.safetensors";
static const char *SH2 = "model-00002-of-00002.safetensors";

static void write_index(const char *dir, const char *json)
{
    char *p = path_in(dir, "model.safetensors.index.json");
    write_bytes(p, json, strlen(json));
    free(p);
}

START_TEST(io_sharded_set)
{
    peft_ctx *ctx = tu_ctx(1, 17);
    size_t base_bytes = peft_ctx_bytes_allocated(ctx);
    char *dir = tmp_dir(), *p1 = path_in(dir, SH1), *p2 = path_in(dir, SH2);
    const int64_t s23[2] = {2, 3}, s4[1] = {4}, s5[1] = {5};
    peft_tensor *a = make(ctx, PEFT_DTYPE_F32, 2, s23), *b = make(ctx, PEFT_DTYPE_BF16, 1, s4);
    peft_tensor *c = make(ctx, PEFT_DTYPE_F16, 1, s5), *d = make(ctx, PEFT_DTYPE_I32, 1, s4);
    const char *n1[2] = {"layer.0.a", "layer.0.b"}, *n2[2] = {"layer.1.c", "layer.1.d"};
    peft_tensor *t1[2] = {a, b}, *t2[2] = {c, d};
    const char *mk = "format", *mv = "pt";
    TU_OK(ctx, peft_safetensors_save(ctx, p1, 2, n1, t1, 1, &mk, &mv));
    TU_OK(ctx, peft_safetensors_save(ctx, p2, 2, n2, t2, 0, NULL, NULL));
    char json[1024];
    const char *fmt = "{\"metadata\": {\"total_size\": 76},\n \"weight_map\": {\"layer.1.d\": \"%s\", "
                      "\"layer.0.a\": \"%s\", \"layer.1.c\": \"%s\", \"layer.0.b\": \"%s\"}}\n";
    snprintf(json, sizeof json, fmt, SH2, SH1, SH2, SH1);
    write_index(dir, json);

    peft_safetensors *st = NULL;
    TU_OK(ctx, peft_safetensors_open_dir(ctx, dir, &st));
    ck_assert_uint_eq(peft_safetensors_count(st), 4);
    expect_same(st, "layer.0.a", a);
    expect_same(st, "layer.0.b", b);
    expect_same(st, "layer.1.c", c);
    expect_same(st, "layer.1.d", d);
    const char *nm;
    TU_OK(ctx, peft_safetensors_info(st, 3, &nm, NULL, NULL, NULL, NULL)); /* shard order, then data order */
    ck_assert_str_eq(nm, "layer.1.c");
    ck_assert_str_eq(peft_safetensors_metadata(st, "format"), "pt");
    size_t ix;
    TU_EXPECT_FAIL(ctx, peft_safetensors_find(st, "layer.2.a", &ix), PEFT_ERR_NOT_FOUND,
                   "no tensor 'layer.2.a' in 2 shards");
    peft_safetensors_close(st);
    char *ip = path_in(dir, "model.safetensors.index.json");
    TU_OK(ctx, peft_safetensors_open_index(ctx, ip, &st));
    ck_assert_uint_eq(peft_safetensors_count(st), 4);
    peft_safetensors_close(st);

    /* broken indexes */
    const struct {
        const char *json;
        peft_status code;
        const char *needle;
    } bad[] = {
        {"{\"weight_map\": {\"layer.0.a\": \"model-00003-of-00002.safetensors\"}}", PEFT_ERR_IO,
         "model-00003-of-00002.safetensors': cannot open: No such file"},
        {"{\"weight_map\": {\"x\": \"../model-00001-of-00002.safetensors\"}}", PEFT_ERR_FORMAT,
         "weight_map entry 'x': shard '../model-00001-of-00002.safetensors' is not a plain file name"},
        {"{\"weight_map\": {\"x\": \"sub/model.safetensors\"}}", PEFT_ERR_FORMAT, "is not a plain file name"},
        {"{\"weight_map\": {\"x\": \"..\"}}", PEFT_ERR_FORMAT, "is not a plain file name"},
        {"{\"weight_map\": {\"x\": \"\"}}", PEFT_ERR_FORMAT, "is not a plain file name"},
        {"{\"weight_map\": {\"x\": 3}}", PEFT_ERR_FORMAT, "weight_map entry 'x' is not a string"},
        {"{\"metadata\": {}}", PEFT_ERR_FORMAT, "no weight_map"},
        {"{\"weight_map\": []}", PEFT_ERR_FORMAT, "weight_map is not an object"},
        {"{\"weight_map\": {}}", PEFT_ERR_FORMAT, "weight_map is empty"},
        {"[]", PEFT_ERR_FORMAT, "not a valid JSON object"},
        {"{\"weight_map\": {\"layer.0.a\": \"model-00001-of-00002.safetensors\",", PEFT_ERR_FORMAT,
         "not a valid JSON object"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        write_index(dir, bad[k].json);
        st = (peft_safetensors *)1;
        TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, dir, &st), bad[k].code, bad[k].needle);
        ck_assert_ptr_null(st);
    }
    /* the map and the shards disagree */
    const char *all = "{\"weight_map\": {\"layer.0.a\": \"%s\", \"layer.0.b\": \"%s\", \"layer.1.c\": \"%s\", "
                      "\"layer.1.d\": \"%s\"%s}}";
    snprintf(json, sizeof json, all, SH1, SH1, SH2, SH2, ", \"layer.9.z\": \"model-00001-of-00002.safetensors\"");
    write_index(dir, json);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, dir, &st), PEFT_ERR_FORMAT,
                   "weight_map puts tensor 'layer.9.z' in shard 'model-00001-of-00002.safetensors', which does not contain it");
    snprintf(json, sizeof json, all, SH1, SH2, SH2, SH2, "");
    write_index(dir, json);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, dir, &st), PEFT_ERR_FORMAT,
                   "weight_map puts tensor 'layer.0.b' in shard 'model-00002-of-00002.safetensors', but it is in "
                   "shard 'model-00001-of-00002.safetensors'");
    snprintf(json, sizeof json, "{\"weight_map\": {\"layer.0.a\": \"%s\", \"layer.1.c\": \"%s\", \"layer.1.d\": \"%s\"}}",
             SH1, SH2, SH2);
    write_index(dir, json);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, dir, &st), PEFT_ERR_FORMAT,
                   "tensor 'layer.0.b' of shard 'model-00001-of-00002.safetensors' is not in the weight_map");
    snprintf(json, sizeof json, "{\"weight_map\": {\"layer.0.a\": \"%s\", \"layer.0.a\": \"%s\"}}", SH1, SH1);
    write_index(dir, json);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, dir, &st), PEFT_ERR_FORMAT,
                   "weight_map lists tensor 'layer.0.a' twice");
    /* the same tensor in two shards */
    const char *dup_names[1] = {"layer.0.a"};
    peft_tensor *dup_t[1] = {a};
    TU_OK(ctx, peft_safetensors_save(ctx, p2, 1, dup_names, dup_t, 0, NULL, NULL));
    snprintf(json, sizeof json, "{\"weight_map\": {\"layer.0.a\": \"%s\", \"layer.0.b\": \"%s\"}}", SH1, SH2);
    write_index(dir, json);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, dir, &st), PEFT_ERR_FORMAT,
                   "tensor 'layer.0.a' is in both shard 'model-00001-of-00002.safetensors' and shard "
                   "'model-00002-of-00002.safetensors'");
    /* a corrupt shard is reported with its own path */
    write_bytes(p2, "garbage", 7);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, dir, &st), PEFT_ERR_FORMAT, SH2);

    /* no index: model.safetensors; neither: an I/O error naming the directory */
    unlink(ip), unlink(p1), unlink(p2);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, dir, &st), PEFT_ERR_IO,
                   "has neither model.safetensors.index.json nor model.safetensors");
    ck_assert(strstr(peft_ctx_errmsg(ctx), dir) != NULL);
    char *single = path_in(dir, "model.safetensors");
    TU_OK(ctx, peft_safetensors_save(ctx, single, 2, n1, t1, 0, NULL, NULL));
    TU_OK(ctx, peft_safetensors_open_dir(ctx, dir, &st));
    ck_assert_uint_eq(peft_safetensors_count(st), 2);
    expect_same(st, "layer.0.b", b);
    peft_safetensors_close(st);

    peft_tensor_destroy(a), peft_tensor_destroy(b), peft_tensor_destroy(c), peft_tensor_destroy(d);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base_bytes);
    free(single), free(ip), free(p1), free(p2);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: I/O errors and atomic replacement ---- */

START_TEST(io_errors_and_atomic_save)
{
    peft_ctx *ctx = tu_ctx(1, 18);
    char *dir = tmp_dir(), *path = path_in(dir, "x.safetensors"), *missing = path_in(dir, "missing.safetensors");
    peft_safetensors *st = (peft_safetensors *)1;
    TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, missing, &st), PEFT_ERR_IO, "cannot open: No such file");
    ck_assert(strstr(peft_ctx_errmsg(ctx), missing) != NULL);
    ck_assert_ptr_null(st);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, dir, &st), PEFT_ERR_IO, "not a regular file");

    const int64_t s[1] = {16384};
    peft_tensor *t = make(ctx, PEFT_DTYPE_F32, 1, s);
    const char *name = "w";
    /* into a directory that does not exist: fails, creates nothing */
    char *nodir = path_in(dir, "nope/x.safetensors");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, nodir, 1, &name, &t, 0, NULL, NULL), PEFT_ERR_IO, nodir);
    ck_assert(strstr(peft_ctx_errmsg(ctx), "No such file") != NULL);
    ck_assert_int_eq(count_entries(dir), 0);

    /* a rejected save leaves the previous file untouched */
    write_bytes(path, "old", 3);
    peft_tensor *q = NULL;
    const int64_t sq[2] = {1, 32};
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_Q8_0, 2, sq, &q));
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 1, &name, &q, 0, NULL, NULL), PEFT_ERR_DTYPE,
                   "tensor 'w' is q8_0");
    size_t n;
    unsigned char *buf = read_bytes(path, &n);
    ck_assert_uint_eq(n, 3);
    free(buf);
    ck_assert_int_eq(count_entries(dir), 1);

    /* a write that fails half way (file size limit) removes its temporary
     * file and keeps the old target; in a child, since limits are per process */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        peft_status r = peft_safetensors_save(ctx, path, 1, &name, &t, 0, NULL, NULL);
        int ok = r == PEFT_ERR_IO && strstr(peft_ctx_errmsg(ctx), "cannot write temporary file") != NULL;
        struct stat sb;
        ok = ok && count_entries(dir) == 1 && stat(path, &sb) == 0 && sb.st_size == 3;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the size-limited save misbehaved");

    /* success replaces the target */
    TU_OK(ctx, peft_safetensors_save(ctx, path, 1, &name, &t, 0, NULL, NULL));
    ck_assert_int_eq(count_entries(dir), 1);
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    expect_same(st, "w", t);
    peft_safetensors_close(st);

    /* the internal atomic writer: abort keeps the old file, commit replaces it */
    peft__atomic_file *af = NULL;
    TU_OK(ctx, peft__atomic_open(ctx, "test", path, &af));
    ck_assert_int_eq(count_entries(dir), 2);
    TU_OK(ctx, peft__atomic_write(af, "new", 3));
    peft__atomic_abort(af);
    ck_assert_int_eq(count_entries(dir), 1);
    buf = read_bytes(path, &n);
    ck_assert_uint_gt(n, 3);
    free(buf);
    TU_OK(ctx, peft__atomic_open(ctx, "test", path, &af));
    for (int k = 0; k < 30000; k++) TU_OK(ctx, peft__atomic_write(af, "0123456789", 10)); /* crosses the buffer */
    TU_OK(ctx, peft__atomic_write(af, buf = calloc(1, 100000), 100000));
    free(buf);
    TU_OK(ctx, peft__atomic_commit(af));
    ck_assert_int_eq(count_entries(dir), 1);
    buf = read_bytes(path, &n);
    ck_assert_uint_eq(n, 400000);
    ck_assert_mem_eq(buf + 299990, "0123456789", 10);
    free(buf);

    peft_tensor_destroy(t), peft_tensor_destroy(q);
    free(nodir), free(path), free(missing);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- api: misuse ---- */

START_TEST(api_misuse)
{
    peft_ctx *ctx = tu_ctx(1, 19);
    char *dir = tmp_dir(), *path = path_in(dir, "m.safetensors");
    peft_safetensors *st = NULL;
    ck_assert_int_eq(peft_safetensors_open(NULL, path, &st), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, NULL, &st), PEFT_ERR_INVALID_ARG, "path is NULL");
    TU_EXPECT_FAIL(ctx, peft_safetensors_open(ctx, path, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_dir(ctx, NULL, &st), PEFT_ERR_INVALID_ARG, "dir is NULL");
    TU_EXPECT_FAIL(ctx, peft_safetensors_open_index(ctx, NULL, &st), PEFT_ERR_INVALID_ARG, "index_path is NULL");
    peft_safetensors_close(NULL);
    ck_assert_uint_eq(peft_safetensors_count(NULL), 0);
    ck_assert_ptr_null(peft_safetensors_metadata(NULL, "k"));
    ck_assert_int_eq(peft_safetensors_info(NULL, 0, NULL, NULL, NULL, NULL, NULL), PEFT_ERR_INVALID_ARG);
    size_t ix;
    ck_assert_int_eq(peft_safetensors_find(NULL, "a", &ix), PEFT_ERR_INVALID_ARG);
    peft_tensor *o;
    ck_assert_int_eq(peft_safetensors_load(NULL, 0, PEFT_DTYPE_F32, &o), PEFT_ERR_INVALID_ARG);

    const int64_t s[1] = {3};
    peft_tensor *t = make(ctx, PEFT_DTYPE_F32, 1, s), *u = make(ctx, PEFT_DTYPE_F16, 1, s);
    peft_tensor *tt[2] = {t, u}, *tn[2] = {t, NULL};
    const char *nn[2] = {"a", "b"}, *ndup[2] = {"a", "a"}, *nnull[2] = {"a", NULL}, *nres[1] = {"__metadata__"};
    const char *nempty[1] = {""}, *nbad[1] = {"a\xff"};
    ck_assert_int_eq(peft_safetensors_save(NULL, path, 2, nn, tt, 0, NULL, NULL), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, NULL, 2, nn, tt, 0, NULL, NULL), PEFT_ERR_INVALID_ARG, "path");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 2, NULL, tt, 0, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "names is NULL with n = 2");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 2, nn, NULL, 0, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "tensors is NULL");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 2, ndup, tt, 0, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "duplicate tensor name 'a'");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 2, nnull, tt, 0, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "names[1] is NULL");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 2, nn, tn, 0, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "tensor 'b' (index 1) is NULL");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 1, nres, tt, 0, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "'__metadata__' is reserved");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 1, nempty, tt, 0, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "names[0] is empty");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 1, nbad, tt, 0, NULL, NULL), PEFT_ERR_INVALID_ARG,
                   "not valid UTF-8");
    const char *mk[2] = {"k", "k"}, *mv[2] = {"1", "2"}, *mnull[1] = {NULL};
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 2, nn, tt, 2, mk, mv), PEFT_ERR_INVALID_ARG,
                   "duplicate metadata key 'k'");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 2, nn, tt, 1, mk, NULL), PEFT_ERR_INVALID_ARG,
                   "meta_values is NULL");
    TU_EXPECT_FAIL(ctx, peft_safetensors_save(ctx, path, 2, nn, tt, 1, mk, mnull), PEFT_ERR_INVALID_ARG,
                   "metadata value 0 is NULL");
    ck_assert_int_eq(count_entries(dir), 0); /* nothing was written */

    /* names needing JSON escapes survive */
    const char *odd[2] = {"quote\"back\\slash", "ctl\x01\n\xe2\x82\xac"};
    TU_OK(ctx, peft_safetensors_save(ctx, path, 2, odd, tt, 0, NULL, NULL));
    TU_OK(ctx, peft_safetensors_open(ctx, path, &st));
    expect_same(st, odd[0], t);
    expect_same(st, odd[1], u);
    peft_safetensors_close(st);

    peft_tensor_destroy(t), peft_tensor_destroy(u);
    free(path);
    rm_dir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("io");
    tcase_add_test(tc, io_roundtrip_all_dtypes);
    tcase_add_test(tc, io_empty_and_metadata_only);
    tcase_add_test(tc, io_foreign_dtypes_and_shapes);
    tcase_add_test(tc, io_corrupt_headers);
    tcase_add_test(tc, io_truncated_files);
    tcase_add_test(tc, io_sharded_set);
    tcase_add_test(tc, io_errors_and_atomic_save);
    suite_add_tcase(s, tc);
    tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_load_conversions);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_misuse);
    suite_add_tcase(s, tc);
    return s;
}
