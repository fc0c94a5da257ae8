/* safetensors: a strict reader (single files and sharded sets) and an atomic
 * writer.
 *
 * File layout (huggingface/safetensors README):
 *   [0, 8)        N, u64 little-endian: byte length of the JSON header
 *   [8, 8+N)      UTF-8 JSON object, right-padded with spaces
 *   [8+N, size)   data buffer; every tensor's data_offsets are relative to it
 * The checks follow the reference reader (safetensors/src/tensor.rs,
 * Metadata::validate): header <= 100 MB, inside the file; entries with exactly
 * dtype / shape / data_offsets; offsets contiguous from 0 without gap or
 * overlap; byte size == numel * dtype bits / 8; the buffer fully indexed.
 *
 * cJSON parses the header, but it is lenient (it treats every byte <= 0x20 as
 * whitespace, accepts raw control characters inside strings, does not check
 * UTF-8, decodes \u0000 into a truncated C string, keeps duplicate keys and
 * parses numbers as doubles). So a small lexical pass runs first
 * (lex_check) and duplicates and integer ranges are checked on the tree.
 *
 * The files stay open and tensors are read with pread when loaded: every read
 * is inside the validated data buffer, and a file shrunk behind our back gives
 * a clean PEFT_ERR_IO instead of the SIGBUS an mmap would. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "../internal.h"

#define ST_MAX_HEADER 100000000u      /* reference MAX_HEADER_SIZE */
#define ST_MAX_INT 9007199254740992.0 /* 2^53: larger JSON numbers are inexact doubles */
#define ST_NAME_SHOWN 120             /* characters of a name quoted in messages */
#define ST_CHUNK 65536                /* elements converted per read when loading */

/* ---- dtypes (safetensors Dtype, with bit sizes) ---- */

typedef struct st_dtype {
    const char *name;
    unsigned bits;
    peft_dtype peft; /* PEFT_DTYPE_COUNT when libpeft has no such storage type */
} st_dtype;

static const st_dtype k_dtypes[] = {
    {"BOOL", 8, PEFT_DTYPE_COUNT},        {"U8", 8, PEFT_DTYPE_COUNT},
    {"I8", 8, PEFT_DTYPE_COUNT},          {"F8_E5M2", 8, PEFT_DTYPE_COUNT},
    {"F8_E4M3", 8, PEFT_DTYPE_COUNT},     {"F8_E8M0", 8, PEFT_DTYPE_COUNT},
    {"F8_E4M3FNUZ", 8, PEFT_DTYPE_COUNT}, {"F8_E5M2FNUZ", 8, PEFT_DTYPE_COUNT},
    {"I16", 16, PEFT_DTYPE_COUNT},        {"U16", 16, PEFT_DTYPE_COUNT},
    {"F16", 16, PEFT_DTYPE_F16},          {"BF16", 16, PEFT_DTYPE_BF16},
    {"I32", 32, PEFT_DTYPE_I32},          {"U32", 32, PEFT_DTYPE_COUNT},
    {"F32", 32, PEFT_DTYPE_F32},          {"I64", 64, PEFT_DTYPE_COUNT},
    {"U64", 64, PEFT_DTYPE_COUNT},        {"F64", 64, PEFT_DTYPE_COUNT},
    {"C64", 64, PEFT_DTYPE_COUNT},        {"F4", 4, PEFT_DTYPE_COUNT},
    {"F6_E2M3", 6, PEFT_DTYPE_COUNT},     {"F6_E3M2", 6, PEFT_DTYPE_COUNT},
};
#define ST_N_DTYPES (sizeof k_dtypes / sizeof *k_dtypes)

static int dtype_index(const char *s)
{
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(k_dtypes[i].name, s) == 0) return (int)i;
    return -1;
}

static const char *dtype_str_of(peft_dtype d)
{
    switch (d) {
    case PEFT_DTYPE_F32: return "F32";
    case PEFT_DTYPE_F16: return "F16";
    case PEFT_DTYPE_BF16: return "BF16";
    case PEFT_DTYPE_I32: return "I32";
    default: return NULL;
    }
}

/* ---- the handle ---- */

typedef struct st_entry {
    const char *name; /* in its file's pool */
    uint32_t file;
    uint32_t dtype; /* index into k_dtypes */
    int ndim;       /* true rank; only the first PEFT_MAX_DIMS dims are kept */
    int64_t shape[PEFT_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* bytes, relative to the file's data buffer */
} st_entry;

typedef struct st_file {
    char *path;
    const char *shard; /* name in the index (into path), or NULL */
    int fd;
    uint64_t data_start; /* 8 + N */
    char *pool;          /* tensor names, metadata keys and values */
    size_t n_meta;
    const char **meta; /* n_meta (key, value) pairs */
} st_file;

struct peft_safetensors {
    peft_ctx *ctx;
    size_t n_files;
    st_file *files;
    size_t n;
    st_entry *entries;
    size_t *by_name; /* entry indices sorted by name, for find */
};

/* ---- small helpers ---- */

static bool host_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint64_t rd_le(const unsigned char *p, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}

static char *dup_str(peft_ctx *ctx, const char *s)
{
    size_t len = strlen(s);
    char *p = peft__malloc(ctx, len + 1);
    if (p) memcpy(p, s, len + 1);
    return p;
}

/* Join dir + "/" + name (dir "" means the current directory). */
static char *join_path(peft_ctx *ctx, const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name), bytes;
    if (!peft__add_ok(a, b, &bytes) || !peft__add_ok(bytes, 2, &bytes)) return NULL;
    char *p = peft__malloc(ctx, bytes);
    if (!p) return NULL;
    if (a == 0) {
        memcpy(p, name, b + 1);
    } else {
        memcpy(p, dir, a);
        size_t o = a;
        if (dir[a - 1] != '/') p[o++] = '/';
        memcpy(p + o, name, b + 1);
    }
    return p;
}

/* Fail with "fn: 'path': <message>". */
static peft_status PEFT__PRINTF(5, 6)
    bad(peft_ctx *ctx, peft_status code, const char *fn, const char *path, const char *fmt, ...)
{
    char msg[PEFT__ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return peft__fail(ctx, code, "%s: '%s': %s", fn, path, msg);
}

static peft_status bad_errno(peft_ctx *ctx, const char *fn, const char *path, const char *what, int err)
{
    char eb[128];
    return bad(ctx, PEFT_ERR_IO, fn, path, "%s: %s", what, peft__strerror(err, eb, sizeof eb));
}

/* pread exactly n bytes at off; short reads mean the file changed. */
static peft_status read_at(peft_ctx *ctx, const char *fn, const char *path, int fd, uint64_t off, void *buf,
                           size_t n, const char *what)
{
    unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = pread(fd, p, chunk, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return bad_errno(ctx, fn, path, what, errno);
        }
        if (r == 0)
            return bad(ctx, PEFT_ERR_IO, fn, path, "%s: unexpected end of file at byte %llu (file changed?)",
                       what, (unsigned long long)off);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return PEFT_OK;
}

/* ---- lexical checks cJSON does not make ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

static bool utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(s + i, n - i);
        if (!l) return false;
        i += l;
    }
    return true;
}

/* Reject what strict JSON forbids but cJSON lets through: invalid UTF-8, raw
 * control characters (inside strings, and outside other than space / tab /
 * LF / CR), NUL bytes, and \u0000 escapes (which cJSON would silently cut a
 * name at). When ints_only, also note the first number that is not a plain
 * non-negative decimal integer (1.0, 1e3, -0, 01): a valid safetensors header
 * has no other numbers; reported after the tree checks, which give better
 * messages for the common cases. Returns NULL or a problem, with *at = byte. */
static const char *lex_check(const unsigned char *s, size_t n, bool ints_only, size_t *at, size_t *bad_num,
                             size_t *bad_num_len)
{
    bool in_str = false;
    *bad_num = SIZE_MAX;
    *bad_num_len = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        *at = i;
        if (c >= 0x80) {
            size_t l = utf8_len(s + i, n - i);
            if (!l) return "invalid UTF-8";
            i += l;
            continue;
        }
        if (in_str) {
            if (c < 0x20) return "control character inside a string";
            if (c == '"') in_str = false;
            if (c == '\\') {
                if (i + 5 < n && s[i + 1] == 'u' && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' &&
                    s[i + 5] == '0')
                    return "\\u0000 escape in a string";
                i += 2; /* the escaped character cannot end the string */
                continue;
            }
            i++;
            continue;
        }
        if (c == '"') {
            in_str = true;
            i++;
            continue;
        }
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return "control character in the JSON";
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t b = i;
            while (i < n && (strchr("0123456789+-.eE", s[i]) != NULL && s[i] != '\0')) i++;
            bool plain = s[b] != '-' && (i - b == 1 || s[b] != '0');
            for (size_t k = b; plain && k < i; k++)
                if (s[k] < '0' || s[k] > '9') plain = false;
            if (ints_only && !plain && *bad_num == SIZE_MAX) {
                *bad_num = b;
                *bad_num_len = i - b;
            }
            continue;
        }
        i++;
    }
    return NULL;
}

/* ---- duplicate keys (cJSON keeps them all) ---- */

static int cmp_item_names(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* The children of an object sorted by key in *out (caller frees); *dup is the
 * first duplicated key or NULL. */
static peft_status sorted_children(peft_ctx *ctx, const cJSON *obj, const cJSON ***out, size_t *n,
                                   const char **dup)
{
    size_t count = 0;
    for (const cJSON *c = obj->child; c; c = c->next) count++;
    *out = NULL;
    *n = count;
    *dup = NULL;
    if (count == 0) return PEFT_OK;
    const cJSON **items = peft__malloc(ctx, count * sizeof *items);
    if (!items) return PEFT_ERR_NOMEM;
    size_t i = 0;
    for (const cJSON *c = obj->child; c; c = c->next) items[i++] = c;
    qsort(items, count, sizeof *items, cmp_item_names);
    for (i = 1; i < count; i++)
        if (strcmp(items[i - 1]->string, items[i]->string) == 0) {
            *dup = items[i]->string;
            break;
        }
    *out = items;
    return PEFT_OK;
}

/* ---- one file ---- */

typedef struct parse_state {
    peft_ctx *ctx;
    const char *fn;
    const char *path;
} parse_state;

/* A JSON number that is an exact non-negative integer (<= 2^53). */
static bool json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_INT || signbit(d) || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static void json_value_text(const cJSON *v, char *buf, size_t size)
{
    if (cJSON_IsNumber(v)) snprintf(buf, size, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v)) snprintf(buf, size, "\"%.40s\"", v->valuestring);
    else if (cJSON_IsArray(v)) snprintf(buf, size, "an array");
    else if (cJSON_IsObject(v)) snprintf(buf, size, "an object");
    else if (cJSON_IsBool(v)) snprintf(buf, size, "a boolean");
    else snprintf(buf, size, "null");
}

static peft_status parse_entry(const parse_state *ps, const cJSON *item, uint32_t file, st_entry *e)
{
    const char *name = item->string;
    int nl = ST_NAME_SHOWN;
    char vt[64];
    if (!cJSON_IsObject(item))
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path, "tensor '%.*s': entry is not an object", nl, name);
    const cJSON *dt = NULL, *sh = NULL, *of = NULL;
    for (const cJSON *c = item->child; c; c = c->next) {
        const cJSON **slot = strcmp(c->string, "dtype") == 0 ? &dt
                             : strcmp(c->string, "shape") == 0 ? &sh
                             : strcmp(c->string, "data_offsets") == 0 ? &of
                                                                      : NULL;
        if (!slot)
            return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path, "tensor '%.*s': unknown field '%.40s'", nl,
                       name, c->string);
        if (*slot)
            return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path, "tensor '%.*s': duplicate field '%s'", nl,
                       name, c->string);
        *slot = c;
    }
    const char *missing = !dt ? "dtype" : !sh ? "shape" : !of ? "data_offsets" : NULL;
    if (missing)
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path, "tensor '%.*s': missing field '%s'", nl, name,
                   missing);

    if (!cJSON_IsString(dt)) {
        json_value_text(dt, vt, sizeof vt);
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path, "tensor '%.*s': dtype is %s, not a string", nl,
                   name, vt);
    }
    int di = dtype_index(dt->valuestring);
    if (di < 0)
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path, "tensor '%.*s': unknown dtype '%.40s'", nl, name,
                   dt->valuestring);

    if (!cJSON_IsArray(sh))
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path, "tensor '%.*s': shape is not an array", nl, name);
    memset(e, 0, sizeof *e);
    uint64_t numel = 1;
    bool overflow = false;
    int ndim = 0;
    char shape_txt[160];
    size_t so = (size_t)snprintf(shape_txt, sizeof shape_txt, "[");
    for (const cJSON *d = sh->child; d; d = d->next, ndim++) {
        uint64_t v;
        if (!json_uint(d, &v)) {
            json_value_text(d, vt, sizeof vt);
            return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path,
                       "tensor '%.*s': shape entry %d is %s, not a non-negative integer", nl, name, ndim, vt);
        }
        if (ndim < PEFT_MAX_DIMS) e->shape[ndim] = (int64_t)v;
        if (!overflow && !mul_u64(numel, v, &numel)) overflow = true;
        if (so < sizeof shape_txt)
            so += (size_t)snprintf(shape_txt + so, sizeof shape_txt - so, ndim ? ", %llu" : "%llu",
                                   (unsigned long long)v);
    }
    if (so < sizeof shape_txt) snprintf(shape_txt + so, sizeof shape_txt - so, "]");
    uint64_t nbits = 0;
    if (overflow || !mul_u64(numel, k_dtypes[di].bits, &nbits))
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path, "tensor '%.*s': shape %s: size overflows", nl,
                   name, shape_txt);
    if (nbits % 8 != 0)
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path,
                   "tensor '%.*s': shape %s of %s is not a whole number of bytes", nl, name, shape_txt,
                   k_dtypes[di].name);

    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path,
                   "tensor '%.*s': data_offsets is not an array of two integers", nl, name);
    uint64_t begin, end;
    const cJSON *ob = of->child, *oe = of->child->next;
    if (!json_uint(ob, &begin) || !json_uint(oe, &end)) {
        json_value_text(json_uint(ob, &begin) ? oe : ob, vt, sizeof vt);
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path,
                   "tensor '%.*s': data_offsets entry %s is not a non-negative integer", nl, name, vt);
    }
    if (end < begin)
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path,
                   "tensor '%.*s': data_offsets [%llu, %llu]: end before begin", nl, name,
                   (unsigned long long)begin, (unsigned long long)end);
    if (end - begin != nbits / 8)
        return bad(ps->ctx, PEFT_ERR_FORMAT, ps->fn, ps->path,
                   "tensor '%.*s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu", nl,
                   name, (unsigned long long)begin, (unsigned long long)end,
                   (unsigned long long)(end - begin), shape_txt, k_dtypes[di].name,
                   (unsigned long long)(nbits / 8));
    e->file = file;
    e->dtype = (uint32_t)di;
    e->ndim = ndim;
    e->numel = numel;
    e->begin = begin;
    e->end = end;
    e->name = name; /* cJSON's copy for now; moved to the pool later */
    return PEFT_OK;
}

static int cmp_offsets(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Read f->path's header, validate it, and fill f plus a new array of entries
 * (in data order, names in f->pool). f->path is set, f->fd is -1. */
static peft_status parse_file(peft_ctx *ctx, const char *fn, st_file *f, uint32_t file_index,
                              st_entry **entries_out, size_t *n_out)
{
    parse_state ps = {ctx, fn, f->path};
    const char *path = f->path;
    peft_status st = PEFT_OK;
    char *hdr = NULL;
    cJSON *root = NULL;
    const cJSON **items = NULL, **mitems = NULL;
    st_entry *entries = NULL;
    size_t n_items = 0, n_tensors = 0, n_meta = 0;
    const cJSON *meta = NULL;
    *entries_out = NULL;
    *n_out = 0;

    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return bad_errno(ctx, fn, path, "cannot open", errno);
    struct stat sb;
    if (fstat(f->fd, &sb) != 0) return bad_errno(ctx, fn, path, "cannot stat", errno);
    if (!S_ISREG(sb.st_mode)) return bad(ctx, PEFT_ERR_IO, fn, path, "not a regular file");
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8)
        return bad(ctx, PEFT_ERR_FORMAT, fn, path, "file is %llu bytes, too short for the 8-byte header length",
                   (unsigned long long)size);
    unsigned char len8[8];
    st = read_at(ctx, fn, path, f->fd, 0, len8, 8, "reading the header length");
    if (st != PEFT_OK) return st;
    uint64_t N = rd_le(len8, 8);
    if (N > ST_MAX_HEADER)
        return bad(ctx, PEFT_ERR_FORMAT, fn, path, "header length %llu exceeds the limit of %u bytes",
                   (unsigned long long)N, ST_MAX_HEADER);
    if (N > size - 8)
        return bad(ctx, PEFT_ERR_FORMAT, fn, path,
                   "header length %llu runs past the end of the file (%llu bytes; truncated?)",
                   (unsigned long long)N, (unsigned long long)size);
    if (N < 2) return bad(ctx, PEFT_ERR_FORMAT, fn, path, "header of %llu bytes is too short", (unsigned long long)N);
    f->data_start = 8 + N;
    uint64_t buffer_size = size - f->data_start;

    hdr = peft__malloc(ctx, (size_t)N + 1);
    if (!hdr) return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: '%s': no memory for a %llu-byte header", fn, path,
                                (unsigned long long)N);
    st = read_at(ctx, fn, path, f->fd, 8, hdr, (size_t)N, "reading the header");
    if (st != PEFT_OK) goto done;
    hdr[N] = '\0';
    if (hdr[0] != '{') {
        st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "header does not start with '{' (byte 0x%02x)",
                 (unsigned char)hdr[0]);
        goto done;
    }
    size_t at = 0, bad_num, bad_num_len;
    const char *lex = lex_check((const unsigned char *)hdr, (size_t)N, true, &at, &bad_num, &bad_num_len);
    if (lex) {
        st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "header: %s at byte %zu", lex, at);
        goto done;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)N + 1, &end, 1);
    if (!root || !cJSON_IsObject(root)) {
        size_t pos = (end && end >= hdr && end <= hdr + N) ? (size_t)(end - hdr) : 0;
        st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "header is not a valid JSON object (error near byte %zu)", pos);
        goto done;
    }
    const char *dup;
    st = sorted_children(ctx, root, &items, &n_items, &dup);
    if (st != PEFT_OK) {
        st = peft__fail(ctx, st, "%s: '%s': out of memory", fn, path);
        goto done;
    }
    if (dup) {
        st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "duplicate tensor name '%.*s' in the header", ST_NAME_SHOWN, dup);
        goto done;
    }
    for (size_t i = 0; i < n_items; i++)
        if (strcmp(items[i]->string, "__metadata__") == 0) meta = items[i];
    n_tensors = n_items - (meta ? 1 : 0);

    /* __metadata__: string -> string */
    if (meta) {
        if (!cJSON_IsObject(meta)) {
            st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "__metadata__ is not an object");
            goto done;
        }
        st = sorted_children(ctx, meta, &mitems, &n_meta, &dup);
        if (st != PEFT_OK) {
            st = peft__fail(ctx, st, "%s: '%s': out of memory", fn, path);
            goto done;
        }
        for (size_t i = 0; i < n_meta && !dup; i++)
            if (!cJSON_IsString(mitems[i])) {
                char vt[64];
                json_value_text(mitems[i], vt, sizeof vt);
                st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "__metadata__ value of '%.*s' is %s, not a string",
                         ST_NAME_SHOWN, mitems[i]->string, vt);
                goto done;
            }
        if (dup) {
            st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "duplicate __metadata__ key '%.*s'", ST_NAME_SHOWN, dup);
            goto done;
        }
    }

    /* tensor entries */
    if (n_tensors > 0) {
        entries = peft__malloc(ctx, n_tensors * sizeof *entries);
        if (!entries) {
            st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: '%s': out of memory", fn, path);
            goto done;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < n_items; i++) {
        if (items[i] == meta) continue;
        st = parse_entry(&ps, items[i], file_index, &entries[k++]);
        if (st != PEFT_OK) {
            goto done;
        }
    }
    if (bad_num != SIZE_MAX) {
        st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "header: number '%.*s' at byte %zu is not a plain non-negative integer",
                 (int)(bad_num_len > 40 ? 40 : bad_num_len), hdr + bad_num, bad_num);
        goto done;
    }

    /* Offsets: sorted, contiguous from 0, ending exactly at the end of the file. */
    if (n_tensors > 1) qsort(entries, n_tensors, sizeof *entries, cmp_offsets);
    uint64_t expect = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        const st_entry *e = &entries[i];
        if (e->begin != expect) {
            st = e->begin < expect
                     ? bad(ctx, PEFT_ERR_FORMAT, fn, path,
                           "tensor '%.*s': data_offsets [%llu, %llu] overlap the previous tensor (ends at %llu)",
                           ST_NAME_SHOWN, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)expect)
                     : bad(ctx, PEFT_ERR_FORMAT, fn, path,
                           "tensor '%.*s': data_offsets [%llu, %llu] leave a gap after byte %llu", ST_NAME_SHOWN,
                           e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)expect);
            goto done;
        }
        if (e->end > buffer_size) {
            st = bad(ctx, PEFT_ERR_FORMAT, fn, path,
                     "tensor '%.*s': data ends at byte %llu of a %llu-byte data buffer (file truncated?)",
                     ST_NAME_SHOWN, e->name, (unsigned long long)e->end, (unsigned long long)buffer_size);
            goto done;
        }
        expect = e->end;
    }
    if (expect != buffer_size) {
        st = bad(ctx, PEFT_ERR_FORMAT, fn, path,
                 "%llu trailing bytes after the last tensor (data buffer is %llu bytes, tensors cover %llu)",
                 (unsigned long long)(buffer_size - expect), (unsigned long long)buffer_size,
                 (unsigned long long)expect);
        goto done;
    }

    /* Move names and metadata out of the cJSON tree into one pool. */
    size_t pool_bytes = 1;
    for (size_t i = 0; i < n_tensors; i++) pool_bytes += strlen(entries[i].name) + 1;
    for (size_t i = 0; i < n_meta; i++)
        pool_bytes += strlen(mitems[i]->string) + strlen(mitems[i]->valuestring) + 2;
    f->pool = peft__malloc(ctx, pool_bytes);
    f->meta = n_meta ? peft__malloc(ctx, 2 * n_meta * sizeof *f->meta) : NULL;
    if (!f->pool || (n_meta && !f->meta)) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: '%s': out of memory", fn, path);
        goto done;
    }
    char *w = f->pool;
    for (size_t i = 0; i < n_tensors; i++) {
        size_t l = strlen(entries[i].name) + 1;
        memcpy(w, entries[i].name, l);
        entries[i].name = w;
        w += l;
    }
    for (size_t i = 0; i < n_meta; i++) {
        const char *src[2] = {mitems[i]->string, mitems[i]->valuestring};
        for (int j = 0; j < 2; j++) {
            size_t l = strlen(src[j]) + 1;
            memcpy(w, src[j], l);
            f->meta[2 * i + (size_t)j] = w;
            w += l;
        }
    }
    f->n_meta = n_meta;
    *entries_out = entries;
    *n_out = n_tensors;
    entries = NULL;

done:
    peft__free(ctx, entries);
    peft__free(ctx, mitems);
    peft__free(ctx, items);
    cJSON_Delete(root);
    peft__free(ctx, hdr);
    return st;
}

/* ---- handle assembly ---- */

void peft_safetensors_close(peft_safetensors *st)
{
    if (!st) return;
    peft_ctx *ctx = st->ctx;
    for (size_t i = 0; i < st->n_files; i++) {
        st_file *f = &st->files[i];
        if (f->fd >= 0) close(f->fd);
        peft__free(ctx, f->path);
        peft__free(ctx, f->pool);
        peft__free(ctx, f->meta);
    }
    peft__free(ctx, st->files);
    peft__free(ctx, st->entries);
    peft__free(ctx, st->by_name);
    peft__free(ctx, st);
}

static peft_safetensors *new_handle(peft_ctx *ctx, size_t n_files)
{
    peft_safetensors *st = peft__calloc(ctx, 1, sizeof *st);
    if (!st) return NULL;
    st->ctx = ctx;
    st->files = peft__calloc(ctx, n_files, sizeof *st->files);
    if (!st->files) {
        peft__free(ctx, st);
        return NULL;
    }
    st->n_files = n_files;
    for (size_t i = 0; i < n_files; i++) st->files[i].fd = -1;
    return st;
}

/* qsort has no context argument: sort (name, index) pairs instead. */
typedef struct name_ix {
    const char *name;
    size_t ix;
} name_ix;

static int cmp_name_ix(const void *a, const void *b)
{
    return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

/* Build st->by_name; *dup_a / *dup_b = two entries with the same name, if any. */
static peft_status build_index(peft_safetensors *st, size_t *dup_a, size_t *dup_b)
{
    *dup_a = *dup_b = SIZE_MAX;
    if (st->n == 0) return PEFT_OK;
    name_ix *tmp = peft__malloc(st->ctx, st->n * sizeof *tmp);
    st->by_name = peft__malloc(st->ctx, st->n * sizeof *st->by_name);
    if (!tmp || !st->by_name) {
        peft__free(st->ctx, tmp);
        return PEFT_ERR_NOMEM;
    }
    for (size_t i = 0; i < st->n; i++) tmp[i] = (name_ix){st->entries[i].name, i};
    qsort(tmp, st->n, sizeof *tmp, cmp_name_ix);
    for (size_t i = 0; i < st->n; i++) {
        st->by_name[i] = tmp[i].ix;
        if (i > 0 && *dup_a == SIZE_MAX && strcmp(tmp[i - 1].name, tmp[i].name) == 0) {
            *dup_a = tmp[i - 1].ix;
            *dup_b = tmp[i].ix;
        }
    }
    peft__free(st->ctx, tmp);
    return PEFT_OK;
}

static bool lookup(const peft_safetensors *st, const char *name, size_t *index)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->entries[st->by_name[mid]].name, name);
        if (c == 0) {
            *index = st->by_name[mid];
            return true;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

peft_status peft_safetensors_open(peft_ctx *ctx, const char *path, peft_safetensors **out)
{
    static const char fn[] = "peft_safetensors_open";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: path is NULL", fn);
    peft_safetensors *st = new_handle(ctx, 1);
    if (!st || !(st->files[0].path = dup_str(ctx, path))) {
        peft_safetensors_close(st);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    }
    peft_status s = parse_file(ctx, fn, &st->files[0], 0, &st->entries, &st->n);
    size_t da, db;
    if (s == PEFT_OK && build_index(st, &da, &db) != PEFT_OK)
        s = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    if (s != PEFT_OK) {
        peft_safetensors_close(st);
        return s;
    }
    *out = st;
    return PEFT_OK;
}

/* A shard name must be a plain file name in the index's directory. */
static bool shard_name_ok(const char *s)
{
    return *s && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Read a whole small file (an index) into a NUL-terminated buffer. */
static peft_status slurp(peft_ctx *ctx, const char *fn, const char *path, char **buf, size_t *len)
{
    *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bad_errno(ctx, fn, path, "cannot open", errno);
    struct stat sb;
    peft_status st = PEFT_OK;
    if (fstat(fd, &sb) != 0) st = bad_errno(ctx, fn, path, "cannot stat", errno);
    else if (!S_ISREG(sb.st_mode)) st = bad(ctx, PEFT_ERR_IO, fn, path, "not a regular file");
    else if ((uint64_t)sb.st_size > ST_MAX_HEADER)
        st = bad(ctx, PEFT_ERR_FORMAT, fn, path, "index of %llu bytes exceeds the limit of %u bytes",
                 (unsigned long long)sb.st_size, ST_MAX_HEADER);
    if (st == PEFT_OK) {
        *len = (size_t)sb.st_size;
        *buf = peft__malloc(ctx, *len + 1);
        if (!*buf) st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: '%s': out of memory", fn, path);
        else st = read_at(ctx, fn, path, fd, 0, *buf, *len, "reading");
        if (st == PEFT_OK) (*buf)[*len] = '\0';
    }
    close(fd);
    if (st != PEFT_OK) {
        peft__free(ctx, *buf);
        *buf = NULL;
    }
    return st;
}

peft_status peft_safetensors_open_index(peft_ctx *ctx, const char *index_path, peft_safetensors **out)
{
    static const char fn[] = "peft_safetensors_open_index";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!index_path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: index_path is NULL", fn);
    const char *ip = index_path;
    char *text = NULL, *dir = NULL;
    cJSON *root = NULL;
    const cJSON **items = NULL, **wm_items = NULL;
    const char **shards = NULL;
    st_entry **parts = NULL;
    size_t *part_n = NULL;
    bool *seen = NULL;
    peft_safetensors *st = NULL;
    size_t len = 0, n_items = 0, n_wm = 0, n_shards = 0;
    const char *dup;

    peft_status s = slurp(ctx, fn, ip, &text, &len);
    if (s != PEFT_OK) return s;
    size_t at = 0, bn, bnl;
    const char *lex = lex_check((const unsigned char *)text, len, false, &at, &bn, &bnl);
    if (lex) {
        s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "%s at byte %zu", lex, at);
        goto done;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (!root || !cJSON_IsObject(root)) {
        size_t pos = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
        s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "not a valid JSON object (error near byte %zu)", pos);
        goto done;
    }
    if ((s = sorted_children(ctx, root, &items, &n_items, &dup)) != PEFT_OK) goto nomem;
    if (dup) {
        s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "duplicate key '%.*s'", ST_NAME_SHOWN, dup);
        goto done;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!wm || !cJSON_IsObject(wm)) {
        s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "%s", wm ? "weight_map is not an object" : "no weight_map");
        goto done;
    }
    if ((s = sorted_children(ctx, wm, &wm_items, &n_wm, &dup)) != PEFT_OK) goto nomem;
    if (dup) {
        s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "weight_map lists tensor '%.*s' twice", ST_NAME_SHOWN, dup);
        goto done;
    }
    if (n_wm == 0) {
        s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "weight_map is empty");
        goto done;
    }
    for (size_t i = 0; i < n_wm; i++) {
        const cJSON *v = wm_items[i];
        if (!cJSON_IsString(v)) {
            s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "weight_map entry '%.*s' is not a string", ST_NAME_SHOWN,
                    v->string);
            goto done;
        }
        if (!shard_name_ok(v->valuestring)) {
            s = bad(ctx, PEFT_ERR_FORMAT, fn, ip,
                    "weight_map entry '%.*s': shard '%.*s' is not a plain file name (no '/', '\\' or '..')",
                    ST_NAME_SHOWN, v->string, ST_NAME_SHOWN, v->valuestring);
            goto done;
        }
    }
    /* The distinct shard names, sorted. */
    shards = peft__malloc(ctx, n_wm * sizeof *shards);
    if (!shards) goto nomem;
    for (size_t i = 0; i < n_wm; i++) shards[i] = wm_items[i]->valuestring;
    qsort(shards, n_wm, sizeof *shards, cmp_str_ptr);
    for (size_t i = 0; i < n_wm; i++)
        if (i == 0 || strcmp(shards[i], shards[n_shards - 1]) != 0) shards[n_shards++] = shards[i];

    /* The shards live next to the index. */
    const char *slash = strrchr(ip, '/');
    size_t dlen = slash ? (size_t)(slash - ip) + 1 : 0;
    dir = peft__malloc(ctx, dlen + 1);
    if (!dir) goto nomem;
    memcpy(dir, ip, dlen);
    dir[dlen] = '\0';

    st = new_handle(ctx, n_shards);
    parts = peft__calloc(ctx, n_shards, sizeof *parts);
    part_n = peft__calloc(ctx, n_shards, sizeof *part_n);
    if (!st || !parts || !part_n) goto nomem;
    size_t total = 0;
    for (size_t i = 0; i < n_shards; i++) {
        st_file *f = &st->files[i];
        f->path = join_path(ctx, dir, shards[i]);
        if (!f->path) goto nomem;
        f->shard = f->path + strlen(f->path) - strlen(shards[i]);
        s = parse_file(ctx, fn, f, (uint32_t)i, &parts[i], &part_n[i]);
        if (s != PEFT_OK) goto done;
        total += part_n[i];
    }
    if (total > 0) {
        st->entries = peft__malloc(ctx, total * sizeof *st->entries);
        if (!st->entries) goto nomem;
    }
    for (size_t i = 0; i < n_shards; i++) {
        if (part_n[i]) memcpy(st->entries + st->n, parts[i], part_n[i] * sizeof *parts[i]);
        st->n += part_n[i];
    }
    size_t da, db;
    if (build_index(st, &da, &db) != PEFT_OK) goto nomem;
    if (da != SIZE_MAX) {
        s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "tensor '%.*s' is in both shard '%s' and shard '%s'", ST_NAME_SHOWN,
                st->entries[da].name, st->files[st->entries[da].file].shard, st->files[st->entries[db].file].shard);
        goto done;
    }
    /* The weight_map and the shards must describe the same tensors. */
    seen = st->n ? peft__calloc(ctx, st->n, sizeof *seen) : NULL;
    if (st->n && !seen) goto nomem;
    for (size_t i = 0; i < n_wm; i++) {
        const char *name = wm_items[i]->string, *shard = wm_items[i]->valuestring;
        size_t ix;
        if (!lookup(st, name, &ix)) {
            s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "weight_map puts tensor '%.*s' in shard '%s', which does not contain it",
                    ST_NAME_SHOWN, name, shard);
            goto done;
        }
        const char *actual = st->files[st->entries[ix].file].shard;
        if (strcmp(actual, shard) != 0) {
            s = bad(ctx, PEFT_ERR_FORMAT, fn, ip,
                    "weight_map puts tensor '%.*s' in shard '%s', but it is in shard '%s'", ST_NAME_SHOWN, name,
                    shard, actual);
            goto done;
        }
        seen[ix] = true;
    }
    for (size_t i = 0; i < st->n; i++)
        if (!seen[i]) {
            s = bad(ctx, PEFT_ERR_FORMAT, fn, ip, "tensor '%.*s' of shard '%s' is not in the weight_map",
                    ST_NAME_SHOWN, st->entries[i].name, st->files[st->entries[i].file].shard);
            goto done;
        }
    *out = st;
    st = NULL;
    s = PEFT_OK;
    goto done;

nomem:
    s = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: '%s': out of memory", fn, ip);
done:
    if (parts)
        for (size_t i = 0; i < n_shards; i++) peft__free(ctx, parts[i]);
    peft__free(ctx, parts);
    peft__free(ctx, part_n);
    peft__free(ctx, seen);
    peft__free(ctx, shards);
    peft__free(ctx, dir);
    peft__free(ctx, wm_items);
    peft__free(ctx, items);
    cJSON_Delete(root);
    peft__free(ctx, text);
    peft_safetensors_close(st);
    return s;
}

peft_status peft_safetensors_open_dir(peft_ctx *ctx, const char *dir, peft_safetensors **out)
{
    static const char fn[] = "peft_safetensors_open_dir";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!dir) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: dir is NULL", fn);
    char *index = join_path(ctx, dir, "model.safetensors.index.json");
    char *single = join_path(ctx, dir, "model.safetensors");
    peft_status s;
    if (!index || !single) s = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    else if (access(index, F_OK) == 0) s = peft_safetensors_open_index(ctx, index, out);
    else if (access(single, F_OK) == 0) s = peft_safetensors_open(ctx, single, out);
    else
        s = bad(ctx, PEFT_ERR_IO, fn, dir, "has neither model.safetensors.index.json nor model.safetensors");
    peft__free(ctx, index);
    peft__free(ctx, single);
    return s;
}

/* ---- queries ---- */

size_t peft_safetensors_count(const peft_safetensors *st) { return st ? st->n : 0; }

peft_status peft_safetensors_info(const peft_safetensors *st, size_t i, const char **name, peft_dtype *dtype,
                                  const char **dtype_str, int *ndim, int64_t shape[PEFT_MAX_DIMS])
{
    if (!st) return PEFT_ERR_INVALID_ARG;
    if (i >= st->n)
        return peft__fail(st->ctx, PEFT_ERR_INVALID_ARG, "peft_safetensors_info: index %zu out of range (%zu tensors)",
                          i, st->n);
    const st_entry *e = &st->entries[i];
    if (name) *name = e->name;
    if (dtype) *dtype = k_dtypes[e->dtype].peft;
    if (dtype_str) *dtype_str = k_dtypes[e->dtype].name;
    if (ndim) *ndim = e->ndim;
    if (shape)
        for (int k = 0; k < PEFT_MAX_DIMS; k++) shape[k] = k < e->ndim ? e->shape[k] : 0;
    return PEFT_OK;
}

peft_status peft_safetensors_find(const peft_safetensors *st, const char *name, size_t *index)
{
    if (!st) return PEFT_ERR_INVALID_ARG;
    if (!name || !index)
        return peft__fail(st->ctx, PEFT_ERR_INVALID_ARG, "peft_safetensors_find: %s is NULL", name ? "index" : "name");
    if (lookup(st, name, index)) return PEFT_OK;
    if (st->n_files == 1)
        return peft__fail(st->ctx, PEFT_ERR_NOT_FOUND, "peft_safetensors_find: no tensor '%.*s' in '%s'",
                          ST_NAME_SHOWN, name, st->files[0].path);
    return peft__fail(st->ctx, PEFT_ERR_NOT_FOUND, "peft_safetensors_find: no tensor '%.*s' in %zu shards",
                      ST_NAME_SHOWN, name, st->n_files);
}

const char *peft_safetensors_metadata(const peft_safetensors *st, const char *key)
{
    if (!st || !key) return NULL;
    for (size_t i = 0; i < st->n_files; i++) {
        const st_file *f = &st->files[i];
        for (size_t k = 0; k < f->n_meta; k++)
            if (strcmp(f->meta[2 * k], key) == 0) return f->meta[2 * k + 1];
    }
    return NULL;
}

/* ---- loading ---- */

static bool is_float(peft_dtype d) { return d == PEFT_DTYPE_F32 || d == PEFT_DTYPE_F16 || d == PEFT_DTYPE_BF16; }

/* Convert n raw little-endian elements of src kind into dst (element offset
 * `first`). Returns the index of an I64 value that does not fit in i32, or n. */
static size_t convert(const unsigned char *raw, const st_dtype *src, void *dst, peft_dtype to, size_t first,
                      size_t n)
{
    unsigned bytes = src->bits / 8;
    for (size_t k = 0; k < n; k++) {
        const unsigned char *p = raw + k * bytes;
        if (to == PEFT_DTYPE_I32) {
            int64_t v = (int64_t)rd_le(p, bytes);
            if (bytes == 4) v = (int32_t)(uint32_t)v;
            if (v < INT32_MIN || v > INT32_MAX) return k;
            ((int32_t *)dst)[first + k] = (int32_t)v;
            continue;
        }
        float x;
        if (src->peft == PEFT_DTYPE_F32) {
            uint32_t u = (uint32_t)rd_le(p, 4);
            memcpy(&x, &u, 4);
        } else if (src->peft == PEFT_DTYPE_F16) {
            x = peft__f16_to_f32((uint16_t)rd_le(p, 2));
        } else {
            x = peft__bf16_to_f32((uint16_t)rd_le(p, 2));
        }
        switch (to) {
        case PEFT_DTYPE_F32: ((float *)dst)[first + k] = x; break;
        case PEFT_DTYPE_F16: ((uint16_t *)dst)[first + k] = peft__f32_to_f16(x); break;
        default: ((uint16_t *)dst)[first + k] = peft__f32_to_bf16(x); break;
        }
    }
    return n;
}

static void swap_elems(void *data, size_t n, unsigned bytes)
{
    unsigned char *p = data;
    for (size_t k = 0; k < n; k++, p += bytes)
        for (unsigned a = 0, b = bytes - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

peft_status peft_safetensors_load(peft_safetensors *st, size_t i, peft_dtype want, peft_tensor **out)
{
    static const char fn[] = "peft_safetensors_load";
    if (!st) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = st->ctx;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (i >= st->n)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: index %zu out of range (%zu tensors)", fn, i, st->n);
    if ((unsigned)want > PEFT_DTYPE_COUNT)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: unknown dtype %d", fn, (int)want);
    const st_entry *e = &st->entries[i];
    const st_file *f = &st->files[e->file];
    const st_dtype *sd = &k_dtypes[e->dtype];
    const char *path = f->path;
    int nl = ST_NAME_SHOWN;

    bool src_int = strcmp(sd->name, "I32") == 0 || strcmp(sd->name, "I64") == 0;
    if (!is_float(sd->peft) && !src_int)
        return bad(ctx, PEFT_ERR_DTYPE, fn, path,
                   "tensor '%.*s' has dtype %s, which libpeft cannot load (F32, F16, BF16, I32, I64 only)", nl,
                   e->name, sd->name);
    peft_dtype to = want != PEFT_DTYPE_COUNT ? want : src_int ? PEFT_DTYPE_I32 : sd->peft;
    if (src_int ? to != PEFT_DTYPE_I32 : !is_float(to))
        return bad(ctx, PEFT_ERR_DTYPE, fn, path, "tensor '%.*s' is %s and cannot be loaded as %s", nl, e->name,
                   sd->name, peft_dtype_name(to));
    if (e->ndim > PEFT_MAX_DIMS)
        return bad(ctx, PEFT_ERR_SHAPE, fn, path, "tensor '%.*s' has %d dims; libpeft tensors have at most %d", nl,
                   e->name, e->ndim, PEFT_MAX_DIMS);
    if (e->numel == 0)
        return bad(ctx, PEFT_ERR_SHAPE, fn, path, "tensor '%.*s' has no elements (a dim is 0)", nl, e->name);
    if (e->numel > (uint64_t)SIZE_MAX / 8)
        return bad(ctx, PEFT_ERR_NOMEM, fn, path, "tensor '%.*s' is too large for this machine", nl, e->name);

    int64_t one = 1;
    peft_tensor *t = NULL;
    peft_status s = peft_tensor_create(ctx, to, e->ndim ? e->ndim : 1, e->ndim ? e->shape : &one, &t);
    if (s != PEFT_OK) return s;
    size_t n = (size_t)e->numel;
    unsigned bytes = sd->bits / 8;
    char what[ST_NAME_SHOWN + 32];
    snprintf(what, sizeof what, "reading tensor '%.*s'", nl, e->name);

    if (to == sd->peft) {
        /* Same dtype: read straight into the tensor. */
        s = read_at(ctx, fn, path, f->fd, f->data_start + e->begin, t->data, n * bytes, what);
        if (s == PEFT_OK && !host_le()) swap_elems(t->data, n, bytes);
    } else {
        size_t chunk = n < ST_CHUNK ? n : ST_CHUNK;
        unsigned char *raw = peft__malloc(ctx, chunk * bytes);
        if (!raw) s = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
        for (size_t k = 0; s == PEFT_OK && k < n; k += chunk) {
            size_t m = n - k < chunk ? n - k : chunk;
            s = read_at(ctx, fn, path, f->fd, f->data_start + e->begin + (uint64_t)k * bytes, raw, m * bytes, what);
            if (s != PEFT_OK) break;
            size_t badk = convert(raw, sd, t->data, to, k, m);
            if (badk != m)
                s = bad(ctx, PEFT_ERR_DTYPE, fn, path, "tensor '%.*s': element %zu = %lld does not fit in i32", nl,
                        e->name, k + badk, (long long)(int64_t)rd_le(raw + badk * bytes, bytes));
        }
        peft__free(ctx, raw);
    }
    if (s != PEFT_OK) {
        peft_tensor_destroy(t);
        return s;
    }
    *out = t;
    return PEFT_OK;
}

/* ---- writing ---- */

typedef struct strbuf {
    peft_ctx *ctx;
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (n > SIZE_MAX / 4 - b->len) {
        b->oom = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = peft__malloc(b->ctx, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        if (b->len) memcpy(p, b->p, b->len);
        peft__free(b->ctx, b->p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(strbuf *b, uint64_t v)
{
    char t[24];
    int l = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    sb_put(b, t, (size_t)l);
}

/* A JSON string: quote, backslash and control characters escaped; the rest
 * (already checked to be UTF-8) copied. */
static void sb_json_str(strbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const char *r = s; *r; r++) {
        unsigned char c = (unsigned char)*r;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, r, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* Data of one tensor in row-major order, little-endian. Contiguous tensors on
 * little-endian hosts are one write; otherwise rows (or elements) are written
 * one by one and the atomic writer's buffer batches them. */
static peft_status write_data(peft__atomic_file *af, const peft_tensor *t, size_t esize)
{
    bool le = host_le();
    size_t numel = (size_t)peft_tensor_numel(t);
    if (le && peft__is_contiguous(t)) return peft__atomic_write(af, t->data, numel * esize);
    int64_t d[PEFT_MAX_DIMS] = {1, 1, 1, 1}, sd[PEFT_MAX_DIMS] = {0, 0, 0, 0};
    int pad = PEFT_MAX_DIMS - t->ndim;
    for (int k = 0; k < t->ndim; k++) {
        d[pad + k] = t->shape[k];
        sd[pad + k] = t->stride[k];
    }
    const unsigned char *base = t->data;
    int64_t cols = d[3];
    peft_status s = PEFT_OK;
    for (int64_t i0 = 0; i0 < d[0]; i0++)
        for (int64_t i1 = 0; i1 < d[1]; i1++)
            for (int64_t i2 = 0; i2 < d[2]; i2++) {
                const unsigned char *row = base + (i0 * sd[0] + i1 * sd[1] + i2 * sd[2]) * (int64_t)esize;
                if (le && sd[3] == 1) {
                    s = peft__atomic_write(af, row, (size_t)cols * esize);
                    if (s != PEFT_OK) return s;
                    continue;
                }
                for (int64_t c = 0; c < cols; c++) {
                    unsigned char el[8];
                    memcpy(el, row + c * sd[3] * (int64_t)esize, esize);
                    if (!le) swap_elems(el, 1, (unsigned)esize);
                    s = peft__atomic_write(af, el, esize);
                    if (s != PEFT_OK) return s;
                }
            }
    return PEFT_OK;
}

peft_status peft_safetensors_save(peft_ctx *ctx, const char *path, size_t n, const char *const *names,
                                  peft_tensor *const *tensors, size_t n_meta, const char *const *meta_keys,
                                  const char *const *meta_values)
{
    static const char fn[] = "peft_safetensors_save";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!path || !*path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: path is NULL or empty", fn);
    if (n > 0 && (!names || !tensors))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %s is NULL with n = %zu", fn, names ? "tensors" : "names", n);
    if (n_meta > 0 && (!meta_keys || !meta_values))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %s is NULL with n_meta = %zu", fn,
                          meta_keys ? "meta_values" : "meta_keys", n_meta);
    int nl = ST_NAME_SHOWN;
    for (size_t i = 0; i < n; i++) {
        if (!names[i]) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: names[%zu] is NULL", fn, i);
        if (!*names[i]) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: names[%zu] is empty", fn, i);
        if (!utf8_valid(names[i]))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: names[%zu] is not valid UTF-8", fn, i);
        if (strcmp(names[i], "__metadata__") == 0)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: '__metadata__' is reserved, not a tensor name", fn);
        if (!tensors[i])
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%.*s' (index %zu) is NULL", fn, nl, names[i], i);
        if (!dtype_str_of(tensors[i]->dtype))
            return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: tensor '%.*s' is %s; safetensors holds f32, f16, bf16, i32",
                              fn, nl, names[i], peft_dtype_name(tensors[i]->dtype));
    }
    for (size_t i = 0; i < n_meta; i++) {
        if (!meta_keys[i] || !meta_values[i])
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: metadata %s %zu is NULL", fn,
                              meta_keys[i] ? "value" : "key", i);
        if (!utf8_valid(meta_keys[i]) || !utf8_valid(meta_values[i]))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: metadata entry %zu is not valid UTF-8", fn, i);
    }

    peft_status s = PEFT_OK;
    name_ix *sorted = NULL;
    size_t *order = NULL;
    strbuf hb = {ctx, NULL, 0, 0, false};
    peft__atomic_file *af;
    size_t count = n > n_meta ? n : n_meta;
    if (count > 0) {
        sorted = peft__malloc(ctx, count * sizeof *sorted);
        if (!sorted) goto nomem;
    }
    /* duplicates */
    for (size_t pass = 0; pass < 2; pass++) {
        size_t m = pass == 0 ? n : n_meta;
        const char *const *nm = pass == 0 ? names : meta_keys;
        for (size_t i = 0; i < m; i++) sorted[i] = (name_ix){nm[i], i};
        if (m > 1) qsort(sorted, m, sizeof *sorted, cmp_name_ix);
        for (size_t i = 1; i < m; i++)
            if (strcmp(sorted[i - 1].name, sorted[i].name) == 0) {
                s = peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: duplicate %s '%.*s'", fn,
                               pass == 0 ? "tensor name" : "metadata key", nl, sorted[i].name);
                goto done;
            }
    }

    /* Data order: 4-byte dtypes, then 2-byte ones (caller order within each),
     * so with the 8-byte-multiple header every tensor is naturally aligned. */
    if (n > 0) {
        order = peft__malloc(ctx, n * sizeof *order);
        if (!order) goto nomem;
    }
    size_t k = 0;
    for (size_t es = 4; es >= 2; es -= 2)
        for (size_t i = 0; i < n; i++)
            if (peft_dtype_block_bytes(tensors[i]->dtype) == es) order[k++] = i;

    sb_put(&hb, "{", 1);
    bool first = true;
    if (n_meta > 0) {
        sb_puts(&hb, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) sb_put(&hb, ",", 1);
            sb_json_str(&hb, meta_keys[i]);
            sb_put(&hb, ":", 1);
            sb_json_str(&hb, meta_values[i]);
        }
        sb_put(&hb, "}", 1);
        first = false;
    }
    uint64_t off = 0;
    for (size_t j = 0; j < n; j++) {
        const peft_tensor *t = tensors[order[j]];
        size_t nbytes;
        if (!peft__mul_ok((size_t)peft_tensor_numel(t), peft_dtype_block_bytes(t->dtype), &nbytes) ||
            off + nbytes < off) {
            s = peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: tensors too large", fn);
            goto done;
        }
        if (!first) sb_put(&hb, ",", 1);
        first = false;
        sb_json_str(&hb, names[order[j]]);
        sb_puts(&hb, ":{\"dtype\":\"");
        sb_puts(&hb, dtype_str_of(t->dtype));
        sb_puts(&hb, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_put(&hb, ",", 1);
            sb_u64(&hb, (uint64_t)t->shape[d]);
        }
        sb_puts(&hb, "],\"data_offsets\":[");
        sb_u64(&hb, off);
        sb_put(&hb, ",", 1);
        off += nbytes;
        sb_u64(&hb, off);
        sb_puts(&hb, "]}");
    }
    sb_put(&hb, "}", 1);
    while (!hb.oom && hb.len % 8 != 0) sb_put(&hb, " ", 1);
    if (hb.oom) goto nomem;
    if (hb.len > ST_MAX_HEADER) {
        s = peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: header would be %zu bytes, over the %u-byte limit of readers",
                       fn, hb.len, ST_MAX_HEADER);
        goto done;
    }

    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)hb.len >> (8 * b));
    s = peft__atomic_open(ctx, fn, path, &af);
    if (s != PEFT_OK) goto done;
    s = peft__atomic_write(af, len8, 8);
    if (s == PEFT_OK) s = peft__atomic_write(af, hb.p, hb.len);
    for (size_t j = 0; s == PEFT_OK && j < n; j++) {
        const peft_tensor *t = tensors[order[j]];
        s = write_data(af, t, peft_dtype_block_bytes(t->dtype));
    }
    if (s == PEFT_OK) {
        s = peft__atomic_commit(af);
    } else {
        peft__atomic_abort(af);
    }
    goto done;

nomem:
    s = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: '%s': out of memory", fn, path);
done:
    peft__free(ctx, hb.p);
    peft__free(ctx, order);
    peft__free(ctx, sorted);
    return s;
}
