/* The context: options, errors, counted allocation through the hooks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../internal.h"

peft_ctx_opts peft_ctx_opts_default(void)
{
    peft_ctx_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.n_threads = 0;
    o.seed = 0x5EEDULL;
    o.set_blas_threads = 1;
    return o;
}

static void *default_alloc(void *user, size_t size, size_t align)
{
    (void)user;
    void *p = NULL;
    if (posix_memalign(&p, align, size ? size : 1) != 0) return NULL;
    return p;
}

static void default_free(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

/* Every counted block carries its size in a 64-byte header, so frees can be
 * counted without the caller passing sizes and the payload stays aligned. */
void *peft__malloc(peft_ctx *ctx, size_t size)
{
    size_t total;
    if (!peft__add_ok(size, PEFT__ALIGN, &total)) return NULL;
    unsigned char *p = ctx->alloc(ctx->alloc_user, total, PEFT__ALIGN);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    ctx->bytes_allocated += size;
    if (ctx->bytes_allocated > ctx->bytes_peak) ctx->bytes_peak = ctx->bytes_allocated;
    return p + PEFT__ALIGN;
}

void *peft__calloc(peft_ctx *ctx, size_t n, size_t size)
{
    size_t bytes;
    if (!peft__mul_ok(n, size, &bytes)) return NULL;
    void *p = peft__malloc(ctx, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void peft__free(peft_ctx *ctx, void *ptr)
{
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - PEFT__ALIGN;
    size_t size;
    memcpy(&size, p, sizeof size);
    ctx->bytes_allocated -= size;
    ctx->free(ctx->alloc_user, p);
}

peft_status peft_ctx_alloc(peft_ctx *ctx, size_t size, void **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_ctx_alloc: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    *out = peft__malloc(ctx, size);
    if (!*out) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_ctx_alloc: cannot allocate %zu bytes", size);
    return PEFT_OK;
}

void peft_ctx_free(peft_ctx *ctx, void *ptr)
{
    if (ctx) peft__free(ctx, ptr);
}

peft_status peft__fail(peft_ctx *ctx, peft_status code, const char *fmt, ...)
{
    if (!ctx) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    va_end(ap);
    ctx->errcode = code;
    if (ctx->log) ctx->log(ctx->log_user, PEFT_LOG_ERROR, ctx->errmsg);
    return code;
}

void peft__log(peft_ctx *ctx, peft_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log) return;
    char buf[PEFT__ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, level, buf);
}

peft_status peft_ctx_create(const peft_ctx_opts *opts, peft_ctx **out)
{
    if (!out) return PEFT_ERR_INVALID_ARG;
    *out = NULL;
    peft_ctx_opts o = peft_ctx_opts_default();
    if (opts) {
        /* Callers built against an older header pass a shorter struct: take
         * only the fields it has. */
        if (opts->struct_size < offsetof(peft_ctx_opts, n_threads) + sizeof(int) ||
            opts->struct_size > sizeof o)
            return PEFT_ERR_INVALID_ARG;
        memcpy(&o, opts, opts->struct_size);
    }
    if ((o.alloc == NULL) != (o.free == NULL)) return PEFT_ERR_INVALID_ARG;
    if (o.n_threads < 0 || o.n_threads > 1024) return PEFT_ERR_INVALID_ARG;
    if (o.gemm != PEFT_GEMM_AUTO && o.gemm != PEFT_GEMM_OPENBLAS) return PEFT_ERR_INVALID_ARG;
    if (!o.alloc) {
        o.alloc = default_alloc;
        o.free = default_free;
    }
    peft_ctx *ctx = o.alloc(o.alloc_user, sizeof *ctx, PEFT__ALIGN);
    if (!ctx) return PEFT_ERR_NOMEM;
    memset(ctx, 0, sizeof *ctx);
    ctx->alloc = o.alloc;
    ctx->free = o.free;
    ctx->alloc_user = o.alloc_user;
    ctx->log = o.log;
    ctx->log_user = o.log_user;
    ctx->grad_enabled = true;
    int n = o.n_threads;
    if (n == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? (int)online : 1;
    }
    ctx->n_threads = n;
    peft_ctx_seed(ctx, o.seed);
    peft_status st = peft_arena_create(ctx, o.arena_limit, &ctx->arena);
    if (st != PEFT_OK) goto fail;
    if (n > 1) {
        st = peft__pool_create(ctx, n, &ctx->pool);
        if (st != PEFT_OK) goto fail;
    }
    if (o.gemm == PEFT_GEMM_AUTO && peft__gemm_available()) {
        st = peft__gemm_create(ctx, n, &ctx->gemm);
        if (st != PEFT_OK) goto fail;
    }
    /* With the own GEMM, OpenBLAS only serves rare fallbacks: one thread, so
     * its workers never compete with the pool's. */
    if (o.set_blas_threads) peft__blas_set_threads(ctx->gemm ? 1 : n);
    *out = ctx;
    return PEFT_OK;
fail:
    peft_ctx_destroy(ctx);
    return st;
}

void peft_ctx_destroy(peft_ctx *ctx)
{
    if (!ctx) return;
    if (ctx->registry_free) ctx->registry_free(ctx, ctx->registry);
    peft__pool_destroy(ctx, ctx->pool);
    peft__gemm_destroy(ctx, ctx->gemm);
    peft_arena_destroy(ctx->arena);
    ctx->free(ctx->alloc_user, ctx);
}

const char *peft_ctx_errmsg(const peft_ctx *ctx)
{
    if (!ctx) return "no context (NULL)";
    return ctx->errmsg;
}

peft_status peft_ctx_errcode(const peft_ctx *ctx) { return ctx ? ctx->errcode : PEFT_ERR_INVALID_ARG; }

void peft_ctx_clear_error(peft_ctx *ctx)
{
    if (!ctx) return;
    ctx->errcode = PEFT_OK;
    ctx->errmsg[0] = '\0';
}

int peft_ctx_n_threads(const peft_ctx *ctx) { return ctx ? ctx->n_threads : 0; }
size_t peft_ctx_bytes_allocated(const peft_ctx *ctx) { return ctx ? ctx->bytes_allocated : 0; }
size_t peft_ctx_bytes_peak(const peft_ctx *ctx) { return ctx ? ctx->bytes_peak : 0; }
peft_arena *peft_ctx_arena(peft_ctx *ctx) { return ctx ? ctx->arena : NULL; }

void *peft__scratch(peft_ctx *ctx, size_t bytes, const char *what)
{
    void *p = NULL;
    if (peft_arena_alloc(ctx->arena, bytes, &p) != PEFT_OK) {
        /* the arena left "needed N, have M"; prefix what wanted it */
        char msg[PEFT__ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "%s", ctx->errmsg);
        peft__fail(ctx, PEFT_ERR_NOMEM, "%s: %s", what, msg);
        return NULL;
    }
    return p;
}

void *peft__scratch_zero(peft_ctx *ctx, size_t bytes, const char *what)
{
    void *p = peft__scratch(ctx, bytes, what);
    if (p) memset(p, 0, bytes);
    return p;
}
