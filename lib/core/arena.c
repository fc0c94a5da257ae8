/* The scratch arena: 64-byte aligned bump allocation over a chain of chunks.
 *
 * Positions are "virtual": chunk k covers [vbase_k, vbase_k + size_k), so a
 * mark is one number and rewinding finds its chunk. Without a limit the chain
 * grows by doubling; a reset to 0 merges a multi-chunk chain into one chunk of
 * the high-water size, so a repeated step allocates nothing after the first.
 * With a limit the arena reserves exactly `limit` once and never grows. */
#include <string.h>

#include "../internal.h"

typedef struct chunk {
    struct chunk *next;
    size_t size;
    size_t vbase;
    unsigned char *data;
} chunk;

struct peft_arena {
    peft_ctx *ctx;
    size_t limit;
    chunk *head;
    chunk *cur;
    size_t off;      /* offset inside cur */
    size_t peak;     /* high-water virtual position */
    size_t reserved; /* sum of chunk sizes */
};

#define MIN_CHUNK ((size_t)1 << 20)

static size_t align_up(size_t x) { return (x + (PEFT__ALIGN - 1)) & ~(size_t)(PEFT__ALIGN - 1); }

static chunk *chunk_new(peft_ctx *ctx, size_t size, size_t vbase)
{
    chunk *c = peft__malloc(ctx, sizeof *c);
    if (!c) return NULL;
    c->data = peft__malloc(ctx, size);
    if (!c->data) {
        peft__free(ctx, c);
        return NULL;
    }
    c->next = NULL;
    c->size = size;
    c->vbase = vbase;
    return c;
}

static void chain_free(peft_ctx *ctx, chunk *c)
{
    while (c) {
        chunk *n = c->next;
        peft__free(ctx, c->data);
        peft__free(ctx, c);
        c = n;
    }
}

peft_status peft_arena_create(peft_ctx *ctx, size_t limit, peft_arena **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_arena_create: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    peft_arena *a = peft__calloc(ctx, 1, sizeof *a);
    if (!a) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_arena_create: out of memory");
    a->ctx = ctx;
    a->limit = limit ? align_up(limit) : 0;
    *out = a;
    return PEFT_OK;
}

void peft_arena_destroy(peft_arena *a)
{
    if (!a) return;
    peft_ctx *ctx = a->ctx;
    chain_free(ctx, a->head);
    peft__free(ctx, a);
}

static size_t position(const peft_arena *a) { return a->cur ? a->cur->vbase + a->off : 0; }

peft_status peft_arena_alloc(peft_arena *a, size_t size, void **out)
{
    if (!out) return PEFT_ERR_INVALID_ARG;
    *out = NULL;
    if (!a) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = a->ctx;
    size_t need;
    if (!peft__add_ok(size, PEFT__ALIGN - 1, &need))
        return peft__fail(ctx, PEFT_ERR_NOMEM, "arena: request of %zu bytes overflows", size);
    need = align_up(size ? size : 1);
    /* fits in the current chunk? */
    if (a->cur && a->off <= a->cur->size && need <= a->cur->size - a->off) {
        *out = a->cur->data + a->off;
        a->off += need;
    } else {
        /* move on to a later chunk that can hold it, or add one */
        chunk *c = a->cur ? a->cur->next : a->head;
        while (c && c->size < need) c = c->next;
        if (!c) {
            chunk *last = a->head;
            while (last && last->next) last = last->next;
            size_t vbase = last ? last->vbase + last->size : 0;
            size_t size_new;
            if (a->limit) {
                if (a->head || need > a->limit)
                    return peft__fail(ctx, PEFT_ERR_NOMEM,
                                      "arena: needed %zu bytes, have %zu of a %zu-byte limit", need,
                                      a->limit - position(a), a->limit);
                size_new = a->limit;
            } else {
                size_new = a->reserved > MIN_CHUNK ? a->reserved : MIN_CHUNK;
                if (size_new < need) size_new = need;
            }
            c = chunk_new(ctx, size_new, vbase);
            if (!c)
                return peft__fail(ctx, PEFT_ERR_NOMEM, "arena: needed %zu bytes, allocator refused %zu",
                                  need, size_new);
            if (last) last->next = c;
            else a->head = c;
            a->reserved += size_new;
        }
        a->cur = c;
        *out = c->data;
        a->off = need;
    }
    size_t pos = position(a);
    if (pos > a->peak) a->peak = pos;
    return PEFT_OK;
}

size_t peft_arena_mark(const peft_arena *a) { return a ? position(a) : 0; }

peft_status peft_arena_rewind(peft_arena *a, size_t mark)
{
    if (!a) return PEFT_ERR_INVALID_ARG;
    if (mark > position(a))
        return peft__fail(a->ctx, PEFT_ERR_INVALID_ARG, "peft_arena_rewind: mark %zu is past the top %zu",
                          mark, position(a));
    if (mark == 0) {
        a->cur = NULL;
        a->off = 0;
        return PEFT_OK;
    }
    chunk *c = a->head;
    while (c && !(mark >= c->vbase && mark <= c->vbase + c->size)) c = c->next;
    if (!c) return peft__fail(a->ctx, PEFT_ERR_INVALID_ARG, "peft_arena_rewind: bad mark %zu", mark);
    a->cur = c;
    a->off = mark - c->vbase;
    return PEFT_OK;
}

void peft_arena_reset(peft_arena *a)
{
    if (!a) return;
    a->cur = NULL;
    a->off = 0;
    if (!a->limit && a->head && a->head->next) {
        /* merge into one chunk big enough for the high-water mark */
        peft_ctx *ctx = a->ctx;
        size_t want = align_up(a->peak);
        chain_free(ctx, a->head);
        a->head = NULL;
        a->reserved = 0;
        chunk *c = chunk_new(ctx, want, 0);
        if (c) { /* if this fails, the next alloc simply grows again */
            a->head = c;
            a->reserved = want;
        }
    }
}

size_t peft_arena_used(const peft_arena *a) { return a ? position(a) : 0; }
size_t peft_arena_peak(const peft_arena *a) { return a ? a->peak : 0; }
size_t peft_arena_reserved(const peft_arena *a) { return a ? a->reserved : 0; }
