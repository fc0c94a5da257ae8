/* The per-context registry of strategies. Built-ins register lazily, through
 * peft_strategy_register like any host strategy. */
#include <string.h>

#include "strategy_internal.h"

typedef struct entry {
    peft_strategy s;
    char *name, *description;
} entry;

typedef struct registry {
    entry *e;
    size_t n, cap;
    bool builtins;
} registry;

static void registry_free(peft_ctx *ctx, void *p)
{
    registry *r = p;
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        peft__free(ctx, r->e[i].name);
        peft__free(ctx, r->e[i].description);
    }
    peft__free(ctx, r->e);
    peft__free(ctx, r);
}

static registry *get(peft_ctx *ctx)
{
    if (!ctx->registry) {
        registry *r = peft__calloc(ctx, 1, sizeof *r);
        if (!r) return NULL;
        ctx->registry = r;
        ctx->registry_free = registry_free;
    }
    return ctx->registry;
}

static char *dup(peft_ctx *ctx, const char *s)
{
    size_t n = strlen(s);
    char *d = peft__malloc(ctx, n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static peft_status add(peft_ctx *ctx, registry *r, const peft_strategy *s)
{
    if (!s->name || !s->name[0] || strlen(s->name) > 63 || !s->attach)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_strategy_register: a strategy needs a name (1..63 bytes) and attach");
    if (s->struct_size != sizeof(peft_strategy))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_strategy_register: struct_size %zu, expected %zu",
                          s->struct_size, sizeof(peft_strategy));
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->e[i].name, s->name))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_strategy_register: \"%s\" is already registered", s->name);
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        entry *e = peft__calloc(ctx, cap, sizeof *e);
        if (!e) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_strategy_register: out of memory");
        if (r->n) memcpy(e, r->e, r->n * sizeof *e);
        peft__free(ctx, r->e);
        r->e = e;
        r->cap = cap;
    }
    entry *e = &r->e[r->n];
    e->s = *s;
    e->name = dup(ctx, s->name);
    e->description = s->description ? dup(ctx, s->description) : NULL;
    if (!e->name || (s->description && !e->description)) {
        peft__free(ctx, e->name);
        peft__free(ctx, e->description);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_strategy_register: out of memory");
    }
    e->s.name = e->name;
    e->s.description = e->description;
    r->n++;
    return PEFT_OK;
}

static peft_status ensure_builtins(peft_ctx *ctx, registry *r)
{
    if (r->builtins) return PEFT_OK;
    r->builtins = true;
    const peft_strategy *b[] = {&peft__strategy_full, &peft__strategy_bitfit, &peft__strategy_dense,
                                &peft__strategy_feature, &peft__strategy_lora, &peft__strategy_ia3};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) {
        peft_status st = peft_strategy_register(ctx, b[i]);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

peft_status peft_strategy_register(peft_ctx *ctx, const peft_strategy *s)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!s) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_strategy_register: strategy is NULL");
    registry *r = get(ctx);
    if (!r) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_strategy_register: out of memory");
    peft_status st = ensure_builtins(ctx, r);
    if (st != PEFT_OK) return st;
    return add(ctx, r, s);
}

const peft_strategy *peft__strategy_find(peft_ctx *ctx, const char *name)
{
    registry *r = get(ctx);
    if (!r || ensure_builtins(ctx, r) != PEFT_OK) return NULL;
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->e[i].name, name)) return &r->e[i].s;
    return NULL;
}

size_t peft_strategy_count(peft_ctx *ctx)
{
    if (!ctx) return 0;
    registry *r = get(ctx);
    if (!r || ensure_builtins(ctx, r) != PEFT_OK) return 0;
    return r->n;
}

const char *peft_strategy_name(peft_ctx *ctx, size_t i)
{
    if (!ctx) return NULL;
    registry *r = get(ctx);
    if (!r || ensure_builtins(ctx, r) != PEFT_OK || i >= r->n) return NULL;
    return r->e[i].name;
}
