/* Reading dataset files as a stream: byte sources (a file through zlib, which
 * reads gzip and plain files alike and tells them apart by the magic bytes;
 * memory, inflated when it starts with the gzip magic) and a line reader that
 * works in fixed-size chunks and never splits a line. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <zlib.h>

#include "dataset_internal.h"

enum { SRC_FILE, SRC_MEM, SRC_MEM_GZ };

struct peft__src {
    peft_ctx *ctx;
    int kind;
    char *name;
    gzFile gz;                /* SRC_FILE */
    const uint8_t *mem;       /* SRC_MEM, SRC_MEM_GZ */
    size_t mem_len, mem_pos;
    z_stream zs;              /* SRC_MEM_GZ */
    bool zs_live, zs_done;
    char *pre;                /* sniffed bytes, served again first */
    size_t pre_len, pre_pos;
    bool sniffed, pre_eof;
};

static peft_status src_new(peft_ctx *ctx, const char *name, peft__src **out)
{
    peft__src *s = peft__calloc(ctx, 1, sizeof *s);
    size_t nl = strlen(name);
    if (s) s->name = peft__malloc(ctx, nl + 1);
    if (!s || !s->name) {
        peft__free(ctx, s);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", name);
    }
    memcpy(s->name, name, nl + 1);
    s->ctx = ctx;
    *out = s;
    return PEFT_OK;
}

peft_status peft__src_open_file(peft_ctx *ctx, const char *path, peft__src **out)
{
    peft__src *s;
    peft_status st = src_new(ctx, path, &s);
    if (st != PEFT_OK) return st;
    errno = 0;
    s->gz = gzopen(path, "rb");
    if (!s->gz) {
        char eb[128];
        int err = errno;
        peft__src_close(s);
        return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, err ? peft__strerror(err, eb, sizeof eb) : "cannot open");
    }
    s->kind = SRC_FILE;
    *out = s;
    return PEFT_OK;
}

/* zlib's allocation through the context (counted, and the context's hooks). */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    size_t bytes;
    if (!peft__mul_ok(items, size, &bytes)) return Z_NULL;
    return peft__malloc(opaque, bytes);
}
static void z_free(voidpf opaque, voidpf p) { peft__free(opaque, p); }

peft_status peft__src_open_mem(peft_ctx *ctx, const void *data, size_t len, const char *name, peft__src **out)
{
    peft__src *s;
    peft_status st = src_new(ctx, name, &s);
    if (st != PEFT_OK) return st;
    s->mem = data;
    s->mem_len = len;
    s->kind = len >= 2 && s->mem[0] == 0x1f && s->mem[1] == 0x8b ? SRC_MEM_GZ : SRC_MEM;
    if (s->kind == SRC_MEM_GZ) {
        s->zs.zalloc = z_alloc;
        s->zs.zfree = z_free;
        s->zs.opaque = ctx;
        if (inflateInit2(&s->zs, 15 + 16) != Z_OK) { /* 15 + 16: a gzip wrapper, 32 KiB window */
            peft__src_close(s);
            return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot start gzip decompression", name);
        }
        s->zs_live = true;
    }
    *out = s;
    return PEFT_OK;
}

void peft__src_close(peft__src *s)
{
    if (!s) return;
    peft_ctx *ctx = s->ctx;
    if (s->gz) gzclose(s->gz);
    if (s->zs_live) inflateEnd(&s->zs);
    peft__free(ctx, s->pre);
    peft__free(ctx, s->name);
    peft__free(ctx, s);
}

const char *peft__src_name(const peft__src *s) { return s->name; }

bool peft__src_is_gzip(const peft__src *s)
{
    if (s->kind == SRC_FILE) return s->gz && !gzdirect(s->gz);
    return s->kind == SRC_MEM_GZ;
}

/* Inflate up to n bytes from memory; gzip members may follow one another. */
static peft_status mem_inflate(peft__src *s, char *dst, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n && !s->zs_done) {
        size_t in_left = s->mem_len - s->mem_pos, out_left = n - *got;
        s->zs.next_in = (Bytef *)(uintptr_t)(s->mem + s->mem_pos);
        s->zs.avail_in = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
        s->zs.next_out = (Bytef *)dst + *got;
        s->zs.avail_out = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
        uInt in0 = s->zs.avail_in, out0 = s->zs.avail_out;
        int rc = inflate(&s->zs, Z_NO_FLUSH);
        s->mem_pos += in0 - s->zs.avail_in;
        *got += out0 - s->zs.avail_out;
        if (rc == Z_STREAM_END) {
            /* another member, or the end (trailing bytes that are not a member are refused) */
            if (s->mem_pos == s->mem_len) s->zs_done = true;
            else if (s->mem_len - s->mem_pos >= 2 && s->mem[s->mem_pos] == 0x1f && s->mem[s->mem_pos + 1] == 0x8b)
                inflateReset(&s->zs);
            else return peft__fail(s->ctx, PEFT_ERR_FORMAT, "%s: bytes after the end of the gzip data", s->name);
        } else if (rc == Z_BUF_ERROR && s->mem_pos == s->mem_len) {
            return peft__fail(s->ctx, PEFT_ERR_FORMAT, "%s: the gzip data is truncated", s->name);
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            return peft__fail(s->ctx, PEFT_ERR_FORMAT, "%s: corrupt gzip data (%s)", s->name,
                              s->zs.msg ? s->zs.msg : "inflate failed");
        }
    }
    return PEFT_OK;
}

/* Up to n bytes from the source itself (not the sniffed prefix); *got = 0 at the end. */
static peft_status raw_read(peft__src *s, char *dst, size_t n, size_t *got)
{
    *got = 0;
    if (s->kind == SRC_MEM) {
        size_t left = s->mem_len - s->mem_pos, k = n < left ? n : left;
        if (k) memcpy(dst, s->mem + s->mem_pos, k);
        s->mem_pos += k;
        *got = k;
        return PEFT_OK;
    }
    if (s->kind == SRC_MEM_GZ) return mem_inflate(s, dst, n, got);
    unsigned ask = n > INT_MAX ? INT_MAX : (unsigned)n;
    int r = gzread(s->gz, dst, ask);
    if (r < 0) {
        int code;
        const char *msg = gzerror(s->gz, &code);
        if (code == Z_ERRNO) {
            char eb[128];
            return peft__fail(s->ctx, PEFT_ERR_IO, "%s: read error: %s", s->name, peft__strerror(errno, eb, sizeof eb));
        }
        return peft__fail(s->ctx, PEFT_ERR_FORMAT, "%s: corrupt or truncated gzip data (%s)", s->name, msg);
    }
    if (r == 0) { /* the end: zlib reports a stream cut short only through gzerror */
        int code;
        gzerror(s->gz, &code);
        if (code == Z_BUF_ERROR) return peft__fail(s->ctx, PEFT_ERR_FORMAT, "%s: the gzip data is truncated", s->name);
    }
    *got = (size_t)r;
    return PEFT_OK;
}

peft_status peft__src_sniff(peft__src *s, const char **data, size_t *len, bool *eof)
{
    if (!s->sniffed) {
        s->pre = peft__malloc(s->ctx, PEFT__DATASET_SNIFF);
        if (!s->pre) return peft__fail(s->ctx, PEFT_ERR_NOMEM, "%s: out of memory", s->name);
        s->sniffed = true;
        while (s->pre_len < PEFT__DATASET_SNIFF) {
            size_t got;
            peft_status st = raw_read(s, s->pre + s->pre_len, PEFT__DATASET_SNIFF - s->pre_len, &got);
            if (st != PEFT_OK) return st;
            if (got == 0) {
                s->pre_eof = true;
                break;
            }
            s->pre_len += got;
        }
    }
    *data = s->pre;
    *len = s->pre_len;
    *eof = s->pre_eof;
    return PEFT_OK;
}

/* Up to n bytes: the sniffed prefix first (freed once served), then the source. */
static peft_status src_read(peft__src *s, char *dst, size_t n, size_t *got)
{
    if (s->pre && s->pre_pos < s->pre_len) {
        size_t left = s->pre_len - s->pre_pos, k = n < left ? n : left;
        memcpy(dst, s->pre + s->pre_pos, k);
        s->pre_pos += k;
        *got = k;
        if (s->pre_pos == s->pre_len) {
            peft__free(s->ctx, s->pre);
            s->pre = NULL;
        }
        return PEFT_OK;
    }
    if (s->pre_eof) {
        *got = 0;
        return PEFT_OK;
    }
    return raw_read(s, dst, n, got);
}

peft_status peft__lines_init(peft__lines *L, peft__src *src, size_t chunk)
{
    memset(L, 0, sizeof *L);
    L->src = src;
    L->chunk = chunk ? chunk : PEFT__DATASET_CHUNK;
    L->cap = L->chunk;
    L->buf = peft__malloc(src->ctx, L->cap);
    if (!L->buf) return peft__fail(src->ctx, PEFT_ERR_NOMEM, "%s: out of memory for a %zu-byte read buffer", src->name, L->cap);
    return PEFT_OK;
}

void peft__lines_fini(peft__lines *L)
{
    if (L->src) peft__free(L->src->ctx, L->buf);
    memset(L, 0, sizeof *L);
}

peft_status peft__lines_next(peft__lines *L, const char **line, size_t *len, bool *got)
{
    peft__src *s = L->src;
    for (;;) {
        char *nl = L->scan < L->end ? memchr(L->buf + L->scan, '\n', L->end - L->scan) : NULL;
        size_t stop;
        if (nl) stop = (size_t)(nl - L->buf);
        else if (L->eof) stop = L->end;
        else {
            /* no complete line buffered: keep the partial one and read the next chunk behind it */
            if (L->beg > 0) {
                memmove(L->buf, L->buf + L->beg, L->end - L->beg);
                L->end -= L->beg;
                L->beg = 0;
            }
            L->scan = L->end;
            if (L->end > L->cap / 2) { /* the partial line fills over half the buffer: double it */
                if (L->cap > SIZE_MAX / 2)
                    return peft__fail(s->ctx, PEFT_ERR_NOMEM, "%s: line %zu is too long", s->name, L->line_no + 1);
                char *nb = peft__malloc(s->ctx, L->cap * 2);
                if (!nb)
                    return peft__fail(s->ctx, PEFT_ERR_NOMEM, "%s: out of memory for line %zu (%zu bytes so far)", s->name,
                                      L->line_no + 1, L->end);
                memcpy(nb, L->buf, L->end);
                peft__free(s->ctx, L->buf);
                L->buf = nb;
                L->cap *= 2;
            }
            size_t n, room = L->cap - L->end; /* >= cap / 2 */
            peft_status st = src_read(s, L->buf + L->end, room < L->chunk ? room : L->chunk, &n);
            if (st != PEFT_OK) return st;
            if (n == 0) L->eof = true;
            L->end += n;
            continue;
        }
        if (L->beg == L->end && !nl) { /* the end */
            *got = false;
            return PEFT_OK;
        }
        char *p = L->buf + L->beg;
        size_t n = stop - L->beg;
        L->beg = L->scan = nl ? stop + 1 : stop;
        L->line_no++;
        if (n > 0 && p[n - 1] == '\r') n--;
        if (L->line_no == 1 && n >= 3 && (uint8_t)p[0] == 0xEF && (uint8_t)p[1] == 0xBB && (uint8_t)p[2] == 0xBF) {
            p += 3;
            n -= 3;
        }
        *line = p;
        *len = n;
        *got = true;
        return PEFT_OK;
    }
}
