/* GGUF reader: map the file, validate all of it at open, then serve typed
 * lookups and tensor loads from the mapping.
 *
 * Layout (formats.md §2; ggml docs/gguf.md):
 *   header   magic "GGUF", u32 version, u64 n_tensors, u64 n_kv
 *   n_kv     { str key, u32 type, value }       str = u64 length + bytes
 *   n_tensor { str name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset }
 *   padding to the alignment, then the tensor data section.
 *
 * Every count, length and offset read from the file is checked against the
 * bytes that remain before it is used, with overflow-free comparisons of the
 * form `n <= size - pos` (pos <= size always holds), so nothing past the
 * mapping is ever read. Counts are bounded by the smallest possible record
 * size before anything is allocated for them, so a hostile header cannot make
 * us allocate more than a small multiple of the file size.
 *
 * Names (keys, tensor names, string values) are copied NUL-terminated into
 * one pool; records refer to them by pool offset because the pool grows while
 * parsing. Keys and tensor names are indexed by open-addressing hash tables,
 * which also catch duplicates in O(n). String arrays get a per-element offset
 * index so element access is O(1) (tokenizer vocabularies are 50k-250k
 * strings). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "peft/gguf.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_NAME 64 /* ggml's GGML_MAX_NAME: names are < 64 bytes */
#define GGUF_MAX_KEY 65535
#define GGUF_HEADER_BYTES 24

/* The smallest records: a 1-byte key with a 1-byte value; a 1-byte name
 * with one dim. Used to bound the header counts by the file size. */
#define MIN_KV_BYTES (8 + 1 + 4 + 1)
#define MIN_TI_BYTES (8 + 1 + 4 + 8 + 4 + 8)

typedef struct gguf_kv {
    size_t key;         /* pool offset of the NUL-terminated key */
    uint32_t type;      /* peft_gguf_type */
    uint32_t elem_type; /* arrays: element type */
    uint64_t pos;       /* file offset of the value; arrays: of the first element */
    uint64_t count;     /* arrays: number of elements */
    size_t str;         /* strings: pool offset of the NUL-terminated copy */
    uint64_t str_len;   /* strings: byte length */
    uint64_t *str_pos;  /* string arrays: file offset of each element's u64 length */
} gguf_kv;

typedef struct gguf_tensor {
    size_t name; /* pool offset */
    uint32_t type;
    int n_dims;
    int64_t ne[4];
    int64_t numel;
    uint64_t nbytes;
    uint64_t offset; /* from the data section */
} gguf_tensor;

struct peft_gguf {
    peft_ctx *ctx;
    char *path;
    peft__mapped map;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;
    size_t n_kv;
    gguf_kv *kv; /* (n_kv) */
    size_t n_tensors;
    gguf_tensor *tensors; /* (n_tensors) */
    char *pool;
    size_t pool_len, pool_cap;
    size_t *kv_slots, kv_mask; /* hash slots hold index + 1; 0 = empty */
    size_t *t_slots, t_mask;
};

/* ---- small helpers ---- */

static bool host_is_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static char *dup_str(peft_ctx *ctx, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = peft__malloc(ctx, n);
    if (d) memcpy(d, s, n);
    return d;
}

/* NOT_FOUND from a lookup is an expected answer (optional keys), so it sets
 * the message without going to the log hook the way peft__fail does. */
static peft_status PEFT__PRINTF(2, 3) not_found(peft_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    va_end(ap);
    ctx->errcode = PEFT_ERR_NOT_FOUND;
    return PEFT_ERR_NOT_FOUND;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h;
}

/* Slots for n names: a power of two >= 2n, so probing always ends. */
static size_t *slots_new(peft_ctx *ctx, size_t n, size_t *mask)
{
    size_t cap = 8;
    while (cap < 2 * n) cap *= 2;
    *mask = cap - 1;
    return peft__calloc(ctx, cap, sizeof(size_t));
}

static const char *kv_key(const peft_gguf *g, size_t i) { return g->pool + g->kv[i].key; }
static const char *t_name(const peft_gguf *g, size_t i) { return g->pool + g->tensors[i].name; }

/* The slot holding `name`, or the empty slot where it would go. */
static size_t *kv_slot(const peft_gguf *g, const char *name)
{
    size_t h = (size_t)fnv1a(name) & g->kv_mask;
    while (g->kv_slots[h] && strcmp(kv_key(g, g->kv_slots[h] - 1), name) != 0) h = (h + 1) & g->kv_mask;
    return &g->kv_slots[h];
}

static size_t *t_slot(const peft_gguf *g, const char *name)
{
    size_t h = (size_t)fnv1a(name) & g->t_mask;
    while (g->t_slots[h] && strcmp(t_name(g, g->t_slots[h] - 1), name) != 0) h = (h + 1) & g->t_mask;
    return &g->t_slots[h];
}

/* Append len bytes + NUL to the pool; *off receives their offset. */
static bool pool_add(peft_gguf *g, const uint8_t *s, size_t len, size_t *off)
{
    size_t need;
    if (!peft__add_ok(len, 1, &need) || !peft__add_ok(g->pool_len, need, &need)) return false;
    if (need > g->pool_cap) {
        size_t cap = g->pool_cap ? g->pool_cap : 1024;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *p = peft__malloc(g->ctx, cap);
        if (!p) return false;
        if (g->pool_len) memcpy(p, g->pool, g->pool_len);
        peft__free(g->ctx, g->pool);
        g->pool = p;
        g->pool_cap = cap;
    }
    memcpy(g->pool + g->pool_len, s, len);
    g->pool[g->pool_len + len] = '\0';
    *off = g->pool_len;
    g->pool_len = need;
    return true;
}

/* ---- the parser ---- */

typedef struct rd {
    peft_gguf *g;
    const uint8_t *p;
    uint64_t size;
    uint64_t pos; /* invariant: pos <= size */
} rd;

static peft_status PEFT__PRINTF(3, 4) bad_code(rd *r, peft_status code, const char *fmt, ...)
{
    char msg[PEFT__ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return peft__fail(r->g->ctx, code, "peft_gguf_open: %s: %s", r->g->path, msg);
}
#define bad(r, ...) bad_code((r), PEFT_ERR_FORMAT, __VA_ARGS__)

static bool has(const rd *r, uint64_t n) { return n <= r->size - r->pos; }

static peft_status truncated(rd *r, const char *item, const char *field, uint64_t n)
{
    return bad(r, "%s: %s (%llu bytes at byte %llu) runs past the end of the file (%llu bytes)", item, field,
               (unsigned long long)n, (unsigned long long)r->pos, (unsigned long long)r->size);
}

static peft_status rd_u32(rd *r, const char *item, const char *field, uint32_t *out)
{
    if (!has(r, 4)) return truncated(r, item, field, 4);
    *out = le32(r->p + r->pos);
    r->pos += 4;
    return PEFT_OK;
}

static peft_status rd_u64(rd *r, const char *item, const char *field, uint64_t *out)
{
    if (!has(r, 8)) return truncated(r, item, field, 8);
    *out = le64(r->p + r->pos);
    r->pos += 8;
    return PEFT_OK;
}

/* A GGUF string: *at = file offset of its bytes, *len = their count. */
static peft_status rd_str(rd *r, const char *item, const char *field, uint64_t *at, uint64_t *len)
{
    peft_status st = rd_u64(r, item, field, len);
    if (st != PEFT_OK) return st;
    if (!has(r, *len))
        return bad(r, "%s: %s of length %llu at byte %llu runs past the end of the file (%llu bytes)", item,
                   field, (unsigned long long)*len, (unsigned long long)r->pos, (unsigned long long)r->size);
    *at = r->pos;
    r->pos += *len;
    return PEFT_OK;
}

/* A key or tensor name: 1..max_len bytes without NUL, copied to the pool. */
static peft_status rd_name(rd *r, const char *item, const char *field, uint64_t max_len, size_t *off)
{
    uint64_t at, len;
    peft_status st = rd_str(r, item, field, &at, &len);
    if (st != PEFT_OK) return st;
    if (len == 0) return bad(r, "%s: empty %s", item, field);
    if (len > max_len)
        return bad(r, "%s: %s is %llu bytes long (at most %llu allowed)", item, field, (unsigned long long)len,
                   (unsigned long long)max_len);
    if (memchr(r->p + at, 0, (size_t)len)) return bad(r, "%s: %s contains a NUL byte", item, field);
    if (!pool_add(r->g, r->p + at, (size_t)len, off))
        return peft__fail(r->g->ctx, PEFT_ERR_NOMEM, "peft_gguf_open: out of memory");
    return PEFT_OK;
}

static peft_status parse_array(rd *r, gguf_kv *kv, const char *item)
{
    peft_status st = rd_u32(r, item, "array element type", &kv->elem_type);
    if (st != PEFT_OK) return st;
    if (kv->elem_type == PEFT_GGUF_ARRAY) return bad(r, "%s: nested arrays are not supported", item);
    if (kv->elem_type >= PEFT_GGUF_TYPE_COUNT) return bad(r, "%s: invalid array element type %u", item, kv->elem_type);
    if ((st = rd_u64(r, item, "array count", &kv->count)) != PEFT_OK) return st;
    kv->pos = r->pos;
    if (kv->elem_type == PEFT_GGUF_STRING) {
        /* each element needs at least its 8-byte length */
        if (kv->count > (r->size - r->pos) / 8)
            return bad(r, "%s: array of %llu strings cannot fit in the %llu bytes left in the file", item,
                       (unsigned long long)kv->count, (unsigned long long)(r->size - r->pos));
        if (kv->count) {
            kv->str_pos = peft__malloc(r->g->ctx, (size_t)kv->count * sizeof(uint64_t));
            if (!kv->str_pos) return peft__fail(r->g->ctx, PEFT_ERR_NOMEM, "peft_gguf_open: out of memory");
        }
        char field[48];
        for (uint64_t j = 0; j < kv->count; j++) {
            uint64_t at, len;
            kv->str_pos[j] = r->pos;
            snprintf(field, sizeof field, "string %llu", (unsigned long long)j);
            if ((st = rd_str(r, item, field, &at, &len)) != PEFT_OK) return st;
        }
        return PEFT_OK;
    }
    size_t es = peft__gguf_scalar_size(kv->elem_type);
    if (kv->count > (r->size - r->pos) / es)
        return bad(r, "%s: array of %llu %s elements at byte %llu runs past the end of the file (%llu bytes)", item,
                   (unsigned long long)kv->count, peft_gguf_type_name((peft_gguf_type)kv->elem_type),
                   (unsigned long long)r->pos, (unsigned long long)r->size);
    if (kv->elem_type == PEFT_GGUF_BOOL)
        for (uint64_t j = 0; j < kv->count; j++)
            if (r->p[r->pos + j] > 1)
                return bad(r, "%s: bool element %llu is %u (must be 0 or 1)", item, (unsigned long long)j,
                           r->p[r->pos + j]);
    r->pos += kv->count * es;
    return PEFT_OK;
}

static peft_status parse_kv(rd *r, size_t i)
{
    peft_gguf *g = r->g;
    gguf_kv *kv = &g->kv[i];
    char item[128];
    snprintf(item, sizeof item, "key/value %zu", i);
    peft_status st = rd_name(r, item, "key", GGUF_MAX_KEY, &kv->key);
    if (st != PEFT_OK) return st;
    snprintf(item, sizeof item, "key '%.80s'", kv_key(g, i));
    size_t *slot = kv_slot(g, kv_key(g, i));
    if (*slot) return bad(r, "duplicate key '%.80s' (entries %zu and %zu)", kv_key(g, i), *slot - 1, i);
    *slot = i + 1;
    if ((st = rd_u32(r, item, "value type", &kv->type)) != PEFT_OK) return st;
    if (kv->type >= PEFT_GGUF_TYPE_COUNT) return bad(r, "%s: invalid value type %u", item, kv->type);
    kv->pos = r->pos;
    if (kv->type == PEFT_GGUF_ARRAY) return parse_array(r, kv, item);
    if (kv->type == PEFT_GGUF_STRING) {
        uint64_t at;
        if ((st = rd_str(r, item, "string value", &at, &kv->str_len)) != PEFT_OK) return st;
        if (!pool_add(g, r->p + at, (size_t)kv->str_len, &kv->str))
            return peft__fail(g->ctx, PEFT_ERR_NOMEM, "peft_gguf_open: out of memory");
        return PEFT_OK;
    }
    size_t es = peft__gguf_scalar_size(kv->type);
    if (!has(r, es)) return truncated(r, item, "value", es);
    if (kv->type == PEFT_GGUF_BOOL && r->p[r->pos] > 1)
        return bad(r, "%s: bool value %u (must be 0 or 1)", item, r->p[r->pos]);
    r->pos += es;
    return PEFT_OK;
}

static peft_status check_alignment(rd *r)
{
    peft_gguf *g = r->g;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    size_t *slot = kv_slot(g, "general.alignment");
    if (!*slot) return PEFT_OK;
    const gguf_kv *kv = &g->kv[*slot - 1];
    if (kv->type != PEFT_GGUF_UINT32)
        return bad(r, "general.alignment has type %s (must be u32)", peft_gguf_type_name((peft_gguf_type)kv->type));
    uint32_t a = le32(r->p + kv->pos);
    if (a == 0 || (a & (a - 1)) != 0) return bad(r, "general.alignment is %u (must be a power of two)", a);
    g->alignment = a;
    return PEFT_OK;
}

static peft_status parse_tensor_info(rd *r, size_t i)
{
    peft_gguf *g = r->g;
    gguf_tensor *t = &g->tensors[i];
    char item[128];
    snprintf(item, sizeof item, "tensor %zu", i);
    peft_status st = rd_name(r, item, "name", GGUF_MAX_NAME - 1, &t->name);
    if (st != PEFT_OK) return st;
    snprintf(item, sizeof item, "tensor %zu ('%s')", i, t_name(g, i));
    size_t *slot = t_slot(g, t_name(g, i));
    if (*slot) return bad(r, "duplicate tensor name '%s' (tensors %zu and %zu)", t_name(g, i), *slot - 1, i);
    *slot = i + 1;
    uint32_t n_dims;
    if ((st = rd_u32(r, item, "n_dims", &n_dims)) != PEFT_OK) return st;
    if (n_dims < 1 || n_dims > 4) return bad(r, "%s: n_dims is %u (must be 1..4)", item, n_dims);
    t->n_dims = (int)n_dims;
    int64_t numel = 1;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if ((st = rd_u64(r, item, "dimension", &ne)) != PEFT_OK) return st;
        if (ne == 0) return bad(r, "%s: dimension %d is 0", item, d);
        if (ne > (uint64_t)INT64_MAX) return bad(r, "%s: dimension %d is %llu (too large)", item, d, (unsigned long long)ne);
        if (numel > INT64_MAX / (int64_t)ne)
            return bad(r, "%s: element count overflows (dimension %d is %llu)", item, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        numel *= (int64_t)ne;
    }
    t->numel = numel;
    if ((st = rd_u32(r, item, "type", &t->type)) != PEFT_OK) return st;
    size_t blck, bsize;
    bool known;
    if (!peft__ggml_type_size(t->type, &blck, &bsize, &known)) {
        if (known)
            return bad_code(r, PEFT_ERR_UNSUPPORTED, "%s: ggml type %u (%s) is newer than this libpeft knows", item,
                            t->type, peft_ggml_type_name(t->type));
        return bad(r, "%s: unknown ggml type %u", item, t->type);
    }
    if (t->ne[0] % (int64_t)blck != 0)
        return bad(r, "%s: ne[0] = %lld is not a multiple of the %s block size %zu", item, (long long)t->ne[0],
                   peft_ggml_type_name(t->type), blck);
    uint64_t blocks = (uint64_t)numel / blck;
    if (blocks > UINT64_MAX / bsize) return bad(r, "%s: byte size overflows", item);
    t->nbytes = blocks * bsize;
    if ((st = rd_u64(r, item, "data offset", &t->offset)) != PEFT_OK) return st;
    if (t->offset % g->alignment != 0)
        return bad(r, "%s: data offset %llu is not a multiple of the alignment %u", item,
                   (unsigned long long)t->offset, g->alignment);
    return PEFT_OK;
}

typedef struct span {
    uint64_t begin, end;
    size_t idx;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Every tensor's bytes inside the file, and no two tensors sharing a byte. */
static peft_status check_data(rd *r)
{
    peft_gguf *g = r->g;
    if (g->n_tensors == 0) return PEFT_OK; /* vocab-only files may end before the data section */
    uint64_t avail = g->data_start <= r->size ? r->size - g->data_start : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (g->data_start > r->size || t->offset > avail || t->nbytes > avail - t->offset)
            return bad(r,
                       "tensor %zu ('%s'): data of %llu bytes at offset %llu lies outside the file "
                       "(data section starts at byte %llu, file is %llu bytes)",
                       i, t_name(g, i), (unsigned long long)t->nbytes, (unsigned long long)t->offset,
                       (unsigned long long)g->data_start, (unsigned long long)r->size);
    }
    span *s = peft__malloc(g->ctx, g->n_tensors * sizeof *s);
    if (!s) return peft__fail(g->ctx, PEFT_ERR_NOMEM, "peft_gguf_open: out of memory");
    for (size_t i = 0; i < g->n_tensors; i++) {
        s[i].begin = g->tensors[i].offset;
        s[i].end = g->tensors[i].offset + g->tensors[i].nbytes;
        s[i].idx = i;
    }
    qsort(s, g->n_tensors, sizeof *s, span_cmp);
    peft_status st = PEFT_OK;
    for (size_t k = 0; k + 1 < g->n_tensors && st == PEFT_OK; k++)
        if (s[k].end > s[k + 1].begin)
            st = bad(r, "tensors '%s' and '%s' overlap (data [%llu, %llu) and [%llu, %llu))", t_name(g, s[k].idx),
                     t_name(g, s[k + 1].idx), (unsigned long long)s[k].begin, (unsigned long long)s[k].end,
                     (unsigned long long)s[k + 1].begin, (unsigned long long)s[k + 1].end);
    peft__free(g->ctx, s);
    return st;
}

static peft_status parse(peft_gguf *g)
{
    rd r = {g, g->map.data, g->map.size, 0};
    peft_status st;
    if (r.size < 4) return bad(&r, "file is %llu bytes, too small for a GGUF header", (unsigned long long)r.size);
    if (le32(r.p) != GGUF_MAGIC)
        return bad(&r, "bad magic %02x %02x %02x %02x (expected 'GGUF'): not a GGUF file", r.p[0], r.p[1], r.p[2],
                   r.p[3]);
    if (r.size < GGUF_HEADER_BYTES)
        return bad(&r, "file is %llu bytes, too small for a GGUF header (24)", (unsigned long long)r.size);
    r.pos = 4;
    uint32_t version = le32(r.p + 4);
    if (version != 0 && (version & 0xFFFFu) == 0)
        return bad(&r, "version 0x%08x looks byte-swapped: big-endian GGUF files are not supported", version);
    if (version == 1) return bad(&r, "GGUF version 1 is not supported (32-bit counts; convert the file again)");
    if (version < 2 || version > 3) return bad(&r, "unsupported GGUF version %u (2 and 3 are read)", version);
    g->version = version;
    uint64_t n_tensors = le64(r.p + 8), n_kv = le64(r.p + 16);
    r.pos = GGUF_HEADER_BYTES;
    uint64_t left = r.size - r.pos;
    if (n_kv > left / MIN_KV_BYTES)
        return bad(&r, "header claims %llu key/values; the %llu bytes after the header cannot hold them",
                   (unsigned long long)n_kv, (unsigned long long)left);
    if (n_tensors > left / MIN_TI_BYTES || n_kv * MIN_KV_BYTES > left - n_tensors * MIN_TI_BYTES)
        return bad(&r, "header claims %llu tensors and %llu key/values; the %llu bytes after the header cannot hold them",
                   (unsigned long long)n_tensors, (unsigned long long)n_kv, (unsigned long long)left);
    g->n_kv = (size_t)n_kv;
    g->n_tensors = (size_t)n_tensors;
    g->kv = peft__calloc(g->ctx, g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = peft__calloc(g->ctx, g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    g->kv_slots = slots_new(g->ctx, g->n_kv, &g->kv_mask);
    g->t_slots = slots_new(g->ctx, g->n_tensors, &g->t_mask);
    if (!g->kv || !g->tensors || !g->kv_slots || !g->t_slots)
        return peft__fail(g->ctx, PEFT_ERR_NOMEM, "peft_gguf_open: out of memory");
    for (size_t i = 0; i < g->n_kv; i++)
        if ((st = parse_kv(&r, i)) != PEFT_OK) return st;
    if ((st = check_alignment(&r)) != PEFT_OK) return st;
    for (size_t i = 0; i < g->n_tensors; i++)
        if ((st = parse_tensor_info(&r, i)) != PEFT_OK) return st;
    g->data_start = r.pos + (g->alignment - r.pos % g->alignment) % g->alignment;
    return check_data(&r);
}

/* ---- open / close ---- */

peft_status peft_gguf_open(peft_ctx *ctx, const char *path, peft_gguf **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_gguf_open: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_gguf_open: path is NULL");
    if (!host_is_little_endian())
        return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "peft_gguf_open: big-endian hosts are not supported");
    peft_gguf *g = peft__calloc(ctx, 1, sizeof *g);
    if (!g) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_gguf_open: out of memory");
    g->ctx = ctx;
    peft_status st = PEFT_ERR_NOMEM;
    g->path = dup_str(ctx, path);
    if (!g->path) {
        peft__fail(ctx, st, "peft_gguf_open: out of memory");
        goto fail;
    }
    if ((st = peft__map_file(ctx, "peft_gguf_open", path, &g->map)) != PEFT_OK) goto fail;
    if ((st = parse(g)) != PEFT_OK) goto fail;
    *out = g;
    return PEFT_OK;
fail:
    peft_gguf_close(g);
    return st;
}

void peft_gguf_close(peft_gguf *g)
{
    if (!g) return;
    peft_ctx *ctx = g->ctx;
    if (g->kv)
        for (size_t i = 0; i < g->n_kv; i++) peft__free(ctx, g->kv[i].str_pos);
    peft__free(ctx, g->kv);
    peft__free(ctx, g->tensors);
    peft__free(ctx, g->kv_slots);
    peft__free(ctx, g->t_slots);
    peft__free(ctx, g->pool);
    peft__free(ctx, g->path);
    peft__unmap_file(&g->map);
    peft__free(ctx, g);
}

uint32_t peft_gguf_version(const peft_gguf *g) { return g ? g->version : 0; }
size_t peft_gguf_alignment(const peft_gguf *g) { return g ? g->alignment : 0; }
uint64_t peft_gguf_data_offset(const peft_gguf *g) { return g ? g->data_start : 0; }
uint64_t peft_gguf_file_size(const peft_gguf *g) { return g ? g->map.size : 0; }

/* ---- metadata ---- */

size_t peft_gguf_n_keys(const peft_gguf *g) { return g ? g->n_kv : 0; }

const char *peft_gguf_key_name(const peft_gguf *g, size_t i)
{
    return (g && i < g->n_kv) ? kv_key(g, i) : NULL;
}

peft_gguf_type peft_gguf_key_type(const peft_gguf *g, size_t i)
{
    return (g && i < g->n_kv) ? (peft_gguf_type)g->kv[i].type : PEFT_GGUF_TYPE_COUNT;
}

static peft_status lookup(const peft_gguf *g, const char *fn, const char *key, const gguf_kv **kv)
{
    if (!g) return PEFT_ERR_INVALID_ARG;
    if (!key) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: key is NULL", fn);
    size_t *slot = kv_slot(g, key);
    if (!*slot) return not_found(g->ctx, "%s: %s: no key '%.100s'", fn, g->path, key);
    *kv = &g->kv[*slot - 1];
    return PEFT_OK;
}

peft_status peft_gguf_find_key(const peft_gguf *g, const char *key, size_t *index)
{
    const gguf_kv *kv;
    if (g && !index) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "peft_gguf_find_key: index is NULL");
    peft_status st = lookup(g, "peft_gguf_find_key", key, &kv);
    if (st != PEFT_OK) return st;
    *index = (size_t)(kv - g->kv);
    return PEFT_OK;
}

static bool is_int_type(uint32_t t)
{
    return t <= PEFT_GGUF_INT32 || t == PEFT_GGUF_UINT64 || t == PEFT_GGUF_INT64;
}

static bool is_float_type(uint32_t t) { return t == PEFT_GGUF_FLOAT32 || t == PEFT_GGUF_FLOAT64; }

/* Integer value of type t at p; false for a u64 above INT64_MAX. (Host is
 * little-endian, checked at open, so memcpy decodes.) */
static bool decode_int(uint32_t t, const uint8_t *p, int64_t *out)
{
    switch (t) {
    case PEFT_GGUF_UINT8: *out = p[0]; return true;
    case PEFT_GGUF_INT8: { int8_t v; memcpy(&v, p, 1); *out = v; return true; }
    case PEFT_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case PEFT_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case PEFT_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case PEFT_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case PEFT_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); *out = v; return true; }
    default: { /* UINT64 */
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)v;
        return true;
    }
    }
}

/* Float (or integer) value of type t at p. */
static double decode_float(uint32_t t, const uint8_t *p)
{
    if (t == PEFT_GGUF_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (t == PEFT_GGUF_FLOAT64) {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    if (t == PEFT_GGUF_UINT64) {
        uint64_t v;
        memcpy(&v, p, 8);
        return (double)v;
    }
    int64_t v = 0;
    decode_int(t, p, &v);
    return (double)v;
}

static peft_status wrong_type(const peft_gguf *g, const char *fn, const char *key, uint32_t type, const char *want)
{
    return peft__fail(g->ctx, PEFT_ERR_DTYPE, "%s: %s: key '%.100s' is %s, not %s", fn, g->path, key,
                      peft_gguf_type_name((peft_gguf_type)type), want);
}

peft_status peft_gguf_get_int(const peft_gguf *g, const char *key, int64_t *out)
{
    static const char fn[] = "peft_gguf_get_int";
    const gguf_kv *kv;
    if (g && !out) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    peft_status st = lookup(g, fn, key, &kv);
    if (st != PEFT_OK) return st;
    if (!is_int_type(kv->type)) return wrong_type(g, fn, key, kv->type, "an integer");
    if (!decode_int(kv->type, g->map.data + kv->pos, out))
        return peft__fail(g->ctx, PEFT_ERR_DTYPE, "%s: %s: key '%.100s': u64 value does not fit int64", fn, g->path,
                          key);
    return PEFT_OK;
}

peft_status peft_gguf_get_float(const peft_gguf *g, const char *key, double *out)
{
    static const char fn[] = "peft_gguf_get_float";
    const gguf_kv *kv;
    if (g && !out) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    peft_status st = lookup(g, fn, key, &kv);
    if (st != PEFT_OK) return st;
    if (!is_float_type(kv->type) && !is_int_type(kv->type)) return wrong_type(g, fn, key, kv->type, "a number");
    *out = decode_float(kv->type, g->map.data + kv->pos);
    return PEFT_OK;
}

peft_status peft_gguf_get_bool(const peft_gguf *g, const char *key, int *out)
{
    static const char fn[] = "peft_gguf_get_bool";
    const gguf_kv *kv;
    if (g && !out) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    peft_status st = lookup(g, fn, key, &kv);
    if (st != PEFT_OK) return st;
    if (kv->type != PEFT_GGUF_BOOL) return wrong_type(g, fn, key, kv->type, "a bool");
    *out = g->map.data[kv->pos];
    return PEFT_OK;
}

peft_status peft_gguf_get_str(const peft_gguf *g, const char *key, const char **s, size_t *len)
{
    static const char fn[] = "peft_gguf_get_str";
    const gguf_kv *kv;
    if (g && !s) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: s is NULL", fn);
    peft_status st = lookup(g, fn, key, &kv);
    if (st != PEFT_OK) return st;
    if (kv->type != PEFT_GGUF_STRING) return wrong_type(g, fn, key, kv->type, "a string");
    *s = g->pool + kv->str;
    if (len) *len = (size_t)kv->str_len;
    return PEFT_OK;
}

/* The array `key`, checked to hold elements accepted by `ok` (NULL = any)
 * and, when check_index, to have element i. */
static peft_status lookup_arr(const peft_gguf *g, const char *fn, const char *key, bool (*ok)(uint32_t),
                              const char *want, bool check_index, size_t i, const gguf_kv **out)
{
    const gguf_kv *kv;
    peft_status st = lookup(g, fn, key, &kv);
    if (st != PEFT_OK) return st;
    if (kv->type != PEFT_GGUF_ARRAY) return wrong_type(g, fn, key, kv->type, "an array");
    if (ok && !ok(kv->elem_type))
        return peft__fail(g->ctx, PEFT_ERR_DTYPE, "%s: %s: key '%.100s' is an array of %s, not of %s", fn, g->path,
                          key, peft_gguf_type_name((peft_gguf_type)kv->elem_type), want);
    if (check_index && i >= kv->count)
        return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: %s: index %zu out of range (array '%.100s' has %llu elements)",
                          fn, g->path, i, key, (unsigned long long)kv->count);
    *out = kv;
    return PEFT_OK;
}

peft_status peft_gguf_get_arr(const peft_gguf *g, const char *key, peft_gguf_type *elem_type, size_t *count)
{
    const gguf_kv *kv;
    peft_status st = lookup_arr(g, "peft_gguf_get_arr", key, NULL, NULL, false, 0, &kv);
    if (st != PEFT_OK) return st;
    if (elem_type) *elem_type = (peft_gguf_type)kv->elem_type;
    if (count) *count = (size_t)kv->count;
    return PEFT_OK;
}

static bool is_string_type(uint32_t t) { return t == PEFT_GGUF_STRING; }
static bool is_number_type(uint32_t t) { return is_int_type(t) || is_float_type(t); }
static bool is_plain_type(uint32_t t) { return t != PEFT_GGUF_STRING && t != PEFT_GGUF_ARRAY; }

peft_status peft_gguf_get_arr_str(const peft_gguf *g, const char *key, size_t i, const char **s, size_t *len)
{
    static const char fn[] = "peft_gguf_get_arr_str";
    const gguf_kv *kv;
    if (g && (!s || !len)) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: s or len is NULL", fn);
    peft_status st = lookup_arr(g, fn, key, is_string_type, "strings", true, i, &kv);
    if (st != PEFT_OK) return st;
    const uint8_t *p = g->map.data + kv->str_pos[i];
    *len = (size_t)le64(p);
    *s = (const char *)p + 8;
    return PEFT_OK;
}

peft_status peft_gguf_get_arr_int(const peft_gguf *g, const char *key, size_t i, int64_t *out)
{
    static const char fn[] = "peft_gguf_get_arr_int";
    const gguf_kv *kv;
    if (g && !out) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    peft_status st = lookup_arr(g, fn, key, is_int_type, "integers", true, i, &kv);
    if (st != PEFT_OK) return st;
    size_t es = peft__gguf_scalar_size(kv->elem_type);
    if (!decode_int(kv->elem_type, g->map.data + kv->pos + i * es, out))
        return peft__fail(g->ctx, PEFT_ERR_DTYPE, "%s: %s: '%.100s'[%zu]: u64 value does not fit int64", fn, g->path,
                          key, i);
    return PEFT_OK;
}

peft_status peft_gguf_get_arr_f32(const peft_gguf *g, const char *key, size_t i, float *out)
{
    static const char fn[] = "peft_gguf_get_arr_f32";
    const gguf_kv *kv;
    if (g && !out) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    peft_status st = lookup_arr(g, fn, key, is_number_type, "numbers", true, i, &kv);
    if (st != PEFT_OK) return st;
    size_t es = peft__gguf_scalar_size(kv->elem_type);
    *out = (float)decode_float(kv->elem_type, g->map.data + kv->pos + i * es);
    return PEFT_OK;
}

peft_status peft_gguf_get_arr_data(const peft_gguf *g, const char *key, const void **data, size_t *nbytes)
{
    static const char fn[] = "peft_gguf_get_arr_data";
    const gguf_kv *kv;
    if (g && (!data || !nbytes)) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: data or nbytes is NULL", fn);
    peft_status st = lookup_arr(g, fn, key, is_plain_type, "numbers or bools", false, 0, &kv);
    if (st != PEFT_OK) return st;
    *data = g->map.data + kv->pos;
    *nbytes = (size_t)kv->count * peft__gguf_scalar_size(kv->elem_type);
    return PEFT_OK;
}

/* ---- tensors ---- */

size_t peft_gguf_n_tensors(const peft_gguf *g) { return g ? g->n_tensors : 0; }

static peft_status check_index(const peft_gguf *g, const char *fn, size_t i)
{
    if (!g) return PEFT_ERR_INVALID_ARG;
    if (i >= g->n_tensors)
        return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: %s: tensor index %zu out of range (%zu tensors)", fn,
                          g->path, i, g->n_tensors);
    return PEFT_OK;
}

peft_status peft_gguf_get_tensor_info(const peft_gguf *g, size_t i, peft_gguf_tensor_info *out)
{
    static const char fn[] = "peft_gguf_get_tensor_info";
    peft_status st = check_index(g, fn, i);
    if (st != PEFT_OK) return st;
    if (!out) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    const gguf_tensor *t = &g->tensors[i];
    out->name = t_name(g, i);
    out->ggml_type = t->type;
    out->type_name = peft_ggml_type_name(t->type);
    out->n_dims = t->n_dims;
    for (int d = 0; d < 4; d++) out->ne[d] = t->ne[d];
    out->numel = t->numel;
    out->nbytes = t->nbytes;
    out->offset = t->offset;
    out->file_offset = g->data_start + t->offset;
    return PEFT_OK;
}

peft_status peft_gguf_find_tensor(const peft_gguf *g, const char *name, size_t *index)
{
    static const char fn[] = "peft_gguf_find_tensor";
    if (!g) return PEFT_ERR_INVALID_ARG;
    if (!name || !index) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: name or index is NULL", fn);
    size_t *slot = t_slot(g, name);
    if (!*slot) return not_found(g->ctx, "%s: %s: no tensor '%.100s'", fn, g->path, name);
    *index = *slot - 1;
    return PEFT_OK;
}

peft_status peft_gguf_tensor_data(const peft_gguf *g, size_t i, const void **data, size_t *nbytes)
{
    static const char fn[] = "peft_gguf_tensor_data";
    peft_status st = check_index(g, fn, i);
    if (st != PEFT_OK) return st;
    if (!data || !nbytes) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: data or nbytes is NULL", fn);
    *data = g->map.data + g->data_start + g->tensors[i].offset;
    *nbytes = (size_t)g->tensors[i].nbytes;
    return PEFT_OK;
}

peft_status peft_gguf_load_tensor(const peft_gguf *g, size_t i, peft_dtype want, peft_tensor **out)
{
    static const char fn[] = "peft_gguf_load_tensor";
    if (out) *out = NULL;
    peft_status st = check_index(g, fn, i);
    if (st != PEFT_OK) return st;
    if (!out) return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    if ((unsigned)want >= PEFT_DTYPE_COUNT)
        return peft__fail(g->ctx, PEFT_ERR_INVALID_ARG, "%s: unknown dtype %d", fn, (int)want);
    const gguf_tensor *t = &g->tensors[i];
    peft_dtype src;
    switch (t->type) {
    case PEFT_GGML_TYPE_F32: src = PEFT_DTYPE_F32; break;
    case PEFT_GGML_TYPE_F16: src = PEFT_DTYPE_F16; break;
    case PEFT_GGML_TYPE_BF16: src = PEFT_DTYPE_BF16; break;
    case PEFT_GGML_TYPE_Q8_0: src = PEFT_DTYPE_Q8_0; break;
    case PEFT_GGML_TYPE_I32: src = PEFT_DTYPE_I32; break;
    default:
        return peft__fail(g->ctx, PEFT_ERR_UNSUPPORTED,
                          "%s: %s: tensor '%s' has ggml type %s, which libpeft cannot load "
                          "(F32, F16, BF16, Q8_0 and I32 can be)",
                          fn, g->path, t_name(g, i), peft_ggml_type_name(t->type));
    }
    int64_t shape[4];
    for (int d = 0; d < t->n_dims; d++) shape[d] = t->ne[t->n_dims - 1 - d]; /* GGUF order -> PyTorch */
    return peft__tensor_decode(g->ctx, fn, t_name(g, i), src, g->map.data + g->data_start + t->offset, t->n_dims,
                               shape, want, out);
}
