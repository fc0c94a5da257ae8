/* GGUF writer: collect key/values and tensors, then write a GGUF v3 file.
 *
 * Layout (formats.md §2.5, the gguf-py writer and what ggml's reader
 * requires): header, key/values in the order added, tensor records, zero
 * padding to the alignment, then each tensor's data followed by zero padding
 * to the alignment, including after the last tensor. Tensor offsets are the
 * running sum of the padded sizes, so data follow the records' order with no
 * other gaps.
 *
 * Key/values are serialized as they are added (one growing buffer); tensor
 * data are copied and converted at add time. The file is written to a
 * temporary name in the same directory, fsynced and renamed into place, so a
 * failure never leaves a partial file at `path`. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../internal.h"
#include "peft/gguf.h"

#define GGUF_MAGIC 0x46554747u
#define GGUF_VERSION 3u
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_NAME 64
#define GGUF_MAX_KEY 65535

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

typedef struct w_tensor {
    char name[GGUF_MAX_NAME];
    uint32_t type;
    int n_dims;
    int64_t ne[4]; /* GGUF order */
    uint8_t *data; /* (nbytes) */
    size_t nbytes;
} w_tensor;

struct peft_gguf_writer {
    peft_ctx *ctx;
    wbuf kv; /* serialized key/values */
    size_t n_kv;
    char **keys; /* (n_kv) copies, for duplicate checks */
    size_t keys_cap;
    w_tensor *tensors; /* (n_tensors) */
    size_t n_tensors, tensors_cap;
    uint32_t alignment;
};

/* ---- buffers ---- */

static bool wbuf_put(peft_ctx *ctx, wbuf *b, const void *src, size_t n)
{
    size_t need;
    if (!peft__add_ok(b->len, n, &need)) return false;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        uint8_t *p = peft__malloc(ctx, cap);
        if (!p) return false;
        if (b->len) memcpy(p, b->p, b->len);
        peft__free(ctx, b->p);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len = need;
    return true;
}

static bool put_u32(peft_ctx *ctx, wbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return wbuf_put(ctx, b, x, 4);
}

static bool put_u64(peft_ctx *ctx, wbuf *b, uint64_t v)
{
    return put_u32(ctx, b, (uint32_t)v) && put_u32(ctx, b, (uint32_t)(v >> 32));
}

static bool put_str(peft_ctx *ctx, wbuf *b, const char *s, size_t len)
{
    return put_u64(ctx, b, len) && wbuf_put(ctx, b, s, len);
}

/* Grow an array of `elem` bytes to hold n + 1 entries. */
static bool grow(peft_ctx *ctx, void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap) return true;
    size_t nc = *cap ? *cap * 2 : 16, bytes;
    if (!peft__mul_ok(nc, elem, &bytes)) return false;
    void *p = peft__malloc(ctx, bytes);
    if (!p) return false;
    if (n) memcpy(p, *arr, n * elem);
    peft__free(ctx, *arr);
    *arr = p;
    *cap = nc;
    return true;
}

static bool host_is_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* ---- create / destroy ---- */

peft_status peft_gguf_writer_create(peft_ctx *ctx, peft_gguf_writer **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_gguf_writer_create: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!host_is_little_endian())
        return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "peft_gguf_writer_create: big-endian hosts are not supported");
    peft_gguf_writer *w = peft__calloc(ctx, 1, sizeof *w);
    if (!w) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_gguf_writer_create: out of memory");
    w->ctx = ctx;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    *out = w;
    return PEFT_OK;
}

void peft_gguf_writer_destroy(peft_gguf_writer *w)
{
    if (!w) return;
    peft_ctx *ctx = w->ctx;
    for (size_t i = 0; i < w->n_kv; i++) peft__free(ctx, w->keys[i]);
    peft__free(ctx, w->keys);
    for (size_t i = 0; i < w->n_tensors; i++) peft__free(ctx, w->tensors[i].data);
    peft__free(ctx, w->tensors);
    peft__free(ctx, w->kv.p);
    peft__free(ctx, w);
}

/* ---- key/values ---- */

/* Check the key and append it with the value type; *mark is where the entry
 * starts, for rollback. */
static peft_status kv_begin(peft_gguf_writer *w, const char *fn, const char *key, uint32_t type, size_t *mark)
{
    if (!key) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: key is NULL", fn);
    size_t len = strlen(key);
    if (len == 0 || len > GGUF_MAX_KEY)
        return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: key length %zu (must be 1..%d)", fn, len, GGUF_MAX_KEY);
    if (strcmp(key, "general.alignment") == 0 && type != PEFT_GGUF_UINT32)
        return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: general.alignment must be a u32", fn);
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: duplicate key '%.100s'", fn, key);
    if (!grow(w->ctx, (void **)&w->keys, &w->keys_cap, w->n_kv, sizeof *w->keys))
        return peft__fail(w->ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    *mark = w->kv.len;
    if (!put_str(w->ctx, &w->kv, key, len) || !put_u32(w->ctx, &w->kv, type)) {
        w->kv.len = *mark;
        return peft__fail(w->ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    }
    return PEFT_OK;
}

/* Finish an entry whose value was appended (ok) or roll it back. */
static peft_status kv_end(peft_gguf_writer *w, const char *fn, const char *key, size_t mark, bool ok)
{
    char *copy = NULL;
    if (ok) {
        size_t n = strlen(key) + 1;
        copy = peft__malloc(w->ctx, n);
        if (copy) memcpy(copy, key, n);
    }
    if (!copy) {
        w->kv.len = mark;
        return peft__fail(w->ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    }
    w->keys[w->n_kv++] = copy;
    return PEFT_OK;
}

static peft_status add_scalar(peft_gguf_writer *w, const char *fn, const char *key, uint32_t type, const void *v)
{
    if (!w) return PEFT_ERR_INVALID_ARG;
    size_t mark;
    peft_status st = kv_begin(w, fn, key, type, &mark);
    if (st != PEFT_OK) return st;
    /* host is little-endian (checked at create): the bytes are the encoding */
    return kv_end(w, fn, key, mark, wbuf_put(w->ctx, &w->kv, v, peft__gguf_scalar_size(type)));
}

#define SCALAR_ADDER(suffix, ctype, gtype)                                                                     \
    peft_status peft_gguf_writer_add_##suffix(peft_gguf_writer *w, const char *key, ctype value)              \
    {                                                                                                          \
        return add_scalar(w, "peft_gguf_writer_add_" #suffix, key, gtype, &value);                            \
    }
SCALAR_ADDER(u8, uint8_t, PEFT_GGUF_UINT8)
SCALAR_ADDER(i8, int8_t, PEFT_GGUF_INT8)
SCALAR_ADDER(u16, uint16_t, PEFT_GGUF_UINT16)
SCALAR_ADDER(i16, int16_t, PEFT_GGUF_INT16)
SCALAR_ADDER(i32, int32_t, PEFT_GGUF_INT32)
SCALAR_ADDER(u64, uint64_t, PEFT_GGUF_UINT64)
SCALAR_ADDER(i64, int64_t, PEFT_GGUF_INT64)
SCALAR_ADDER(f32, float, PEFT_GGUF_FLOAT32)
SCALAR_ADDER(f64, double, PEFT_GGUF_FLOAT64)
#undef SCALAR_ADDER

static bool is_alignment_key(const char *key) { return key && strcmp(key, "general.alignment") == 0; }

peft_status peft_gguf_writer_add_u32(peft_gguf_writer *w, const char *key, uint32_t value)
{
    static const char fn[] = "peft_gguf_writer_add_u32";
    if (!w) return PEFT_ERR_INVALID_ARG;
    bool align = is_alignment_key(key);
    if (align && (value == 0 || (value & (value - 1)) != 0))
        return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: general.alignment %u is not a power of two", fn, value);
    peft_status st = add_scalar(w, fn, key, PEFT_GGUF_UINT32, &value);
    if (st == PEFT_OK && align) w->alignment = value;
    return st;
}

peft_status peft_gguf_writer_add_bool(peft_gguf_writer *w, const char *key, int value)
{
    if (!w) return PEFT_ERR_INVALID_ARG;
    if (value != 0 && value != 1)
        return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "peft_gguf_writer_add_bool: value %d (must be 0 or 1)", value);
    uint8_t b = (uint8_t)value;
    return add_scalar(w, "peft_gguf_writer_add_bool", key, PEFT_GGUF_BOOL, &b);
}

peft_status peft_gguf_writer_add_str(peft_gguf_writer *w, const char *key, const char *value)
{
    static const char fn[] = "peft_gguf_writer_add_str";
    if (!w) return PEFT_ERR_INVALID_ARG;
    if (!value) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: value is NULL", fn);
    size_t mark;
    peft_status st = kv_begin(w, fn, key, PEFT_GGUF_STRING, &mark);
    if (st != PEFT_OK) return st;
    return kv_end(w, fn, key, mark, put_str(w->ctx, &w->kv, value, strlen(value)));
}

peft_status peft_gguf_writer_add_arr(peft_gguf_writer *w, const char *key, peft_gguf_type elem_type,
                                     const void *data, size_t count)
{
    static const char fn[] = "peft_gguf_writer_add_arr";
    if (!w) return PEFT_ERR_INVALID_ARG;
    peft_status st;
    size_t es = peft__gguf_scalar_size((uint32_t)elem_type), bytes;
    if (es == 0)
        return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: element type %d is not a numeric or bool type", fn,
                          (int)elem_type);
    if (count && !data) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: data is NULL", fn);
    if (!peft__mul_ok(count, es, &bytes))
        return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: %zu elements overflow", fn, count);
    if (elem_type == PEFT_GGUF_BOOL)
        for (size_t i = 0; i < count; i++)
            if (((const uint8_t *)data)[i] > 1)
                return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: bool element %zu is %u (must be 0 or 1)", fn, i,
                                  ((const uint8_t *)data)[i]);
    size_t mark;
    if ((st = kv_begin(w, fn, key, PEFT_GGUF_ARRAY, &mark)) != PEFT_OK) return st;
    bool ok = put_u32(w->ctx, &w->kv, (uint32_t)elem_type) && put_u64(w->ctx, &w->kv, count) &&
              wbuf_put(w->ctx, &w->kv, data, bytes);
    return kv_end(w, fn, key, mark, ok);
}

peft_status peft_gguf_writer_add_arr_str(peft_gguf_writer *w, const char *key, const char *const *strs,
                                         const size_t *lens, size_t count)
{
    static const char fn[] = "peft_gguf_writer_add_arr_str";
    if (!w) return PEFT_ERR_INVALID_ARG;
    peft_status st;
    if (count && !strs) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: strs is NULL", fn);
    for (size_t i = 0; i < count; i++)
        if (!strs[i]) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: strs[%zu] is NULL", fn, i);
    size_t mark;
    if ((st = kv_begin(w, fn, key, PEFT_GGUF_ARRAY, &mark)) != PEFT_OK) return st;
    bool ok = put_u32(w->ctx, &w->kv, PEFT_GGUF_STRING) && put_u64(w->ctx, &w->kv, count);
    for (size_t i = 0; ok && i < count; i++) ok = put_str(w->ctx, &w->kv, strs[i], lens ? lens[i] : strlen(strs[i]));
    return kv_end(w, fn, key, mark, ok);
}

/* ---- tensors ---- */

static peft_status check_tensor_name(peft_gguf_writer *w, const char *fn, const char *name)
{
    if (!name) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: name is NULL", fn);
    size_t len = strlen(name);
    if (len == 0 || len >= GGUF_MAX_NAME)
        return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: tensor name '%.100s' is %zu bytes (must be 1..%d)", fn,
                          name, len, GGUF_MAX_NAME - 1);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: duplicate tensor name '%s'", fn, name);
    return PEFT_OK;
}

/* Append a tensor whose bytes are in `data` (taken over by the writer). */
static peft_status push_tensor(peft_gguf_writer *w, const char *fn, const char *name, uint32_t type, int n_dims,
                               const int64_t *ne, uint8_t *data, size_t nbytes)
{
    if (!grow(w->ctx, (void **)&w->tensors, &w->tensors_cap, w->n_tensors, sizeof *w->tensors)) {
        peft__free(w->ctx, data);
        return peft__fail(w->ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    }
    w_tensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name); /* length checked < GGUF_MAX_NAME */
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->data = data;
    t->nbytes = nbytes;
    return PEFT_OK;
}

/* Byte size of a tensor of ggml type with ne (GGUF order); 0 when invalid
 * (the message is set). */
static size_t ggml_nbytes(peft_gguf_writer *w, const char *fn, const char *name, uint32_t type, int n_dims,
                          const int64_t *ne)
{
    size_t blck, bsize;
    if (!peft__ggml_type_size(type, &blck, &bsize, NULL)) {
        peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s': ggml type %u is retired or of unknown size", fn,
                   name, type);
        return 0;
    }
    if (n_dims < 1 || n_dims > 4) {
        peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s': n_dims %d (must be 1..4)", fn, name, n_dims);
        return 0;
    }
    size_t numel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || !peft__mul_ok(numel, (size_t)ne[d], &numel) || numel > (size_t)INT64_MAX) {
            peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s': dimension %d is %lld (or the size overflows)", fn,
                       name, d, (long long)ne[d]);
            return 0;
        }
    }
    if (ne[0] % (int64_t)blck != 0) {
        peft__fail(w->ctx, PEFT_ERR_SHAPE, "%s: tensor '%s': ne[0] = %lld is not a multiple of the %s block size %zu",
                   fn, name, (long long)ne[0], peft_ggml_type_name(type), blck);
        return 0;
    }
    size_t bytes;
    if (!peft__mul_ok(numel / blck, bsize, &bytes)) {
        peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s': byte size overflows", fn, name);
        return 0;
    }
    return bytes;
}

peft_status peft_gguf_writer_add_tensor_raw(peft_gguf_writer *w, const char *name, uint32_t ggml_type, int n_dims,
                                            const int64_t *ne, const void *data, size_t nbytes)
{
    static const char fn[] = "peft_gguf_writer_add_tensor_raw";
    if (!w) return PEFT_ERR_INVALID_ARG;
    peft_status st = check_tensor_name(w, fn, name);
    if (st != PEFT_OK) return st;
    if (!ne || !data) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: ne or data is NULL", fn);
    size_t want = ggml_nbytes(w, fn, name, ggml_type, n_dims, ne);
    if (want == 0) return peft_ctx_errcode(w->ctx);
    if (want != nbytes)
        return peft__fail(w->ctx, PEFT_ERR_SHAPE, "%s: tensor '%s': %zu bytes given, a %s tensor of this shape has %zu",
                          fn, name, nbytes, peft_ggml_type_name(ggml_type), want);
    uint8_t *copy = peft__malloc(w->ctx, nbytes);
    if (!copy) return peft__fail(w->ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %zu bytes", fn, nbytes);
    memcpy(copy, data, nbytes);
    return push_tensor(w, fn, name, ggml_type, n_dims, ne, copy, nbytes);
}

static bool is_float(peft_dtype d) { return d == PEFT_DTYPE_F32 || d == PEFT_DTYPE_F16 || d == PEFT_DTYPE_BF16; }

peft_status peft_gguf_writer_add_tensor(peft_gguf_writer *w, const char *name, const peft_tensor *t, peft_dtype as)
{
    static const char fn[] = "peft_gguf_writer_add_tensor";
    if (!w) return PEFT_ERR_INVALID_ARG;
    peft_status st = check_tensor_name(w, fn, name);
    if (st != PEFT_OK) return st;
    if (!t) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: tensor is NULL", fn);
    uint32_t type;
    switch (as) {
    case PEFT_DTYPE_F32: type = PEFT_GGML_TYPE_F32; break;
    case PEFT_DTYPE_F16: type = PEFT_GGML_TYPE_F16; break;
    case PEFT_DTYPE_BF16: type = PEFT_GGML_TYPE_BF16; break;
    case PEFT_DTYPE_Q8_0: type = PEFT_GGML_TYPE_Q8_0; break;
    case PEFT_DTYPE_I32: type = PEFT_GGML_TYPE_I32; break;
    default:
        return peft__fail(w->ctx, PEFT_ERR_DTYPE, "%s: tensor '%s': cannot store as %s", fn, name,
                          peft_dtype_name(as));
    }
    bool same = t->dtype == as && peft__is_contiguous(t);
    bool ok = same || ((is_float(as) || as == PEFT_DTYPE_Q8_0) && (is_float(t->dtype) || t->dtype == PEFT_DTYPE_Q8_0));
    if (!ok)
        return peft__fail(w->ctx, PEFT_ERR_DTYPE, "%s: tensor '%s': cannot convert %s to %s", fn, name,
                          peft_dtype_name(t->dtype), peft_dtype_name(as));
    int64_t ne[4];
    for (int d = 0; d < t->ndim; d++) ne[d] = t->shape[t->ndim - 1 - d]; /* PyTorch -> GGUF order */
    size_t nbytes = ggml_nbytes(w, fn, name, type, t->ndim, ne);
    if (nbytes == 0) return peft_ctx_errcode(w->ctx);
    uint8_t *data = peft__malloc(w->ctx, nbytes);
    if (!data) return peft__fail(w->ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %zu bytes", fn, nbytes);
    if (same) {
        memcpy(data, t->data, nbytes);
        return push_tensor(w, fn, name, type, t->ndim, ne, data, nbytes);
    }
    /* through f32: dequantize or gather (any strides), then encode */
    size_t n = (size_t)peft_tensor_numel(t);
    float *x = peft__malloc(w->ctx, n * sizeof(float));
    if (!x) {
        peft__free(w->ctx, data);
        return peft__fail(w->ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %zu bytes", fn, n * sizeof(float));
    }
    if (t->dtype == PEFT_DTYPE_Q8_0)
        peft__q8_0_to_f32(t->data, 0, n, x);
    else if ((st = peft_tensor_get_f32(t, x, n)) != PEFT_OK) {
        peft__free(w->ctx, x);
        peft__free(w->ctx, data);
        return st;
    }
    switch (as) {
    case PEFT_DTYPE_F32: memcpy(data, x, nbytes); break;
    case PEFT_DTYPE_F16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)data)[i] = peft__f32_to_f16(x[i]);
        break;
    case PEFT_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)data)[i] = peft__f32_to_bf16(x[i]);
        break;
    default: peft__q8_0_quantize(x, n, data); break;
    }
    peft__free(w->ctx, x);
    return push_tensor(w, fn, name, type, t->ndim, ne, data, nbytes);
}

/* ---- writing ---- */

static bool write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = write(fd, b, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        b += k;
        n -= (size_t)k;
    }
    return true;
}

static bool write_zeros(int fd, size_t n)
{
    static const uint8_t zeros[4096];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (!write_all(fd, zeros, k)) return false;
        n -= k;
    }
    return true;
}

static size_t pad_to(size_t n, size_t a) { return (a - n % a) % a; }

/* fsync the directory holding path, so the rename itself is durable. */
static void sync_parent_dir(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(buf, size, ".");
    } else if (slash == path) {
        snprintf(buf, size, "/");
    } else {
        snprintf(buf, size, "%.*s", (int)(slash - path), path);
    }
    int dfd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd); /* best effort: some file systems refuse it */
        close(dfd);
    }
}

peft_status peft_gguf_writer_write(peft_gguf_writer *w, const char *path)
{
    static const char fn[] = "peft_gguf_writer_write";
    if (!w) return PEFT_ERR_INVALID_ARG;
    if (!path || !*path) return peft__fail(w->ctx, PEFT_ERR_INVALID_ARG, "%s: path is NULL or empty", fn);
    peft_ctx *ctx = w->ctx;
    const size_t A = w->alignment;

    /* header + tensor records in memory; offsets = running sum of padded sizes */
    wbuf head = {0}, ti = {0};
    bool ok = put_u32(ctx, &head, GGUF_MAGIC) && put_u32(ctx, &head, GGUF_VERSION) &&
              put_u64(ctx, &head, w->n_tensors) && put_u64(ctx, &head, w->n_kv);
    size_t offset = 0;
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const w_tensor *t = &w->tensors[i];
        ok = put_str(ctx, &ti, t->name, strlen(t->name)) && put_u32(ctx, &ti, (uint32_t)t->n_dims);
        for (int d = 0; ok && d < t->n_dims; d++) ok = put_u64(ctx, &ti, (uint64_t)t->ne[d]);
        ok = ok && put_u32(ctx, &ti, t->type) && put_u64(ctx, &ti, offset);
        ok = ok && peft__add_ok(offset, t->nbytes + pad_to(t->nbytes, A), &offset);
    }
    if (!ok) {
        peft__free(ctx, head.p);
        peft__free(ctx, ti.p);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    }
    size_t meta = head.len + w->kv.len + ti.len;

    size_t plen = strlen(path);
    char *tmp = peft__malloc(ctx, plen + 16);
    if (!tmp) {
        peft__free(ctx, head.p);
        peft__free(ctx, ti.p);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp-XXXXXX", 12);
    const char *what = "cannot create a temporary file";
    int fd = mkstemp(tmp);
    bool created = fd >= 0;
    ok = created;
    if (ok) {
        what = "write failed";
        (void)fchmod(fd, 0644); /* mkstemp makes 0600; model files are normally world-readable */
        ok = write_all(fd, head.p, head.len) && write_all(fd, w->kv.p, w->kv.len) && write_all(fd, ti.p, ti.len) &&
             write_zeros(fd, pad_to(meta, A));
        for (size_t i = 0; ok && i < w->n_tensors; i++)
            ok = write_all(fd, w->tensors[i].data, w->tensors[i].nbytes) &&
                 write_zeros(fd, pad_to(w->tensors[i].nbytes, A));
        if (ok) {
            what = "fsync failed";
            ok = fsync(fd) == 0;
        }
    }
    int err = errno;
    if (created && close(fd) != 0 && ok) {
        err = errno;
        what = "close failed";
        ok = false;
    }
    if (ok && rename(tmp, path) != 0) {
        err = errno;
        what = "cannot rename the temporary file into place";
        ok = false;
    }
    if (!ok && created) unlink(tmp);
    if (ok) sync_parent_dir(path, tmp, plen + 16);
    peft__free(ctx, tmp);
    peft__free(ctx, head.p);
    peft__free(ctx, ti.p);
    if (!ok) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s: %s: %s", fn, path, what, strerror(err));
    return PEFT_OK;
}
