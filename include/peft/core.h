/* libpeft — core: status codes, the context, the arena.
 *
 * Everything in libpeft hangs off a peft_ctx: thread count, the seeded PRNG,
 * allocator hooks, the scratch arena for per-step activations, the autograd
 * tape and the last error message. There is no global mutable state, so two
 * contexts may be used from two threads at once. One context is NOT
 * thread-safe: do not call into the same context from two threads at once.
 */
#ifndef PEFT_CORE_H
#define PEFT_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Values are fixed forever; new codes are only appended. */
#define PEFT_STATUS_MAP(X)                                              \
    X(PEFT_OK, 0, "ok")                                                 \
    X(PEFT_ERR_INVALID_ARG, 1, "invalid argument")                      \
    X(PEFT_ERR_NOMEM, 2, "out of memory")                               \
    X(PEFT_ERR_SHAPE, 3, "shape mismatch")                              \
    X(PEFT_ERR_DTYPE, 4, "unsupported or mismatched dtype")             \
    X(PEFT_ERR_IO, 5, "input/output error")                             \
    X(PEFT_ERR_FORMAT, 6, "malformed file or data")                     \
    X(PEFT_ERR_UNSUPPORTED, 7, "not supported")                         \
    X(PEFT_ERR_NUMERIC, 8, "non-finite value (NaN or Inf)")             \
    X(PEFT_ERR_STATE, 9, "call not valid in the current state")         \
    X(PEFT_ERR_NOT_FOUND, 10, "not found")                              \
    X(PEFT_ABORTED, 11, "aborted by a callback")                        \
    X(PEFT_ERR_INTERNAL, 12, "internal error")                          \
    X(PEFT_ERR_CHECKSUM, 13, "checksum mismatch")

typedef enum peft_status {
#define PEFT__STATUS_ENUM(name, value, text) name = value,
    PEFT_STATUS_MAP(PEFT__STATUS_ENUM)
#undef PEFT__STATUS_ENUM
    PEFT_STATUS_COUNT
} peft_status;

/* A static English description of a status; never NULL, needs no context. */
PEFT_API const char *peft_status_str(peft_status status);
/* The enum constant's name, e.g. "PEFT_ERR_SHAPE". */
PEFT_API const char *peft_status_name(peft_status status);

typedef struct peft_ctx peft_ctx;
typedef struct peft_arena peft_arena;

/* Allocator hooks. alloc must return memory aligned to `align` (a power of two,
 * at most 4096) or NULL; free must accept NULL. `user` is passed through. */
typedef void *(*peft_alloc_fn)(void *user, size_t size, size_t align);
typedef void (*peft_free_fn)(void *user, void *ptr);

/* Log levels for the optional log hook. */
typedef enum peft_log_level {
    PEFT_LOG_ERROR = 0,
    PEFT_LOG_WARN = 1,
    PEFT_LOG_INFO = 2,
    PEFT_LOG_DEBUG = 3
} peft_log_level;
typedef void (*peft_log_fn)(void *user, peft_log_level level, const char *msg);

/* Context options. Always start from peft_ctx_opts_default(); new fields are
 * only ever appended, and struct_size tells the library which header the
 * caller was built with. */
typedef struct peft_ctx_opts {
    size_t struct_size;
    /* Threads for the library's own kernels; 0 = the number of online cores. */
    int n_threads;
    /* Seed of the context's PRNG (init, dropout, shuffling). */
    uint64_t seed;
    /* Allocator hooks; both NULL = the C library (aligned_alloc / free). */
    peft_alloc_fn alloc;
    peft_free_fn free;
    void *alloc_user;
    /* Maximum bytes of the scratch arena; 0 = grow as needed (the arena keeps
     * its high-water mark, so steady-state steps never allocate). With a limit,
     * an op that does not fit fails with PEFT_ERR_NOMEM "needed N, have M". */
    size_t arena_limit;
    /* OpenBLAS threads: 1 = set OpenBLAS's (process-wide) thread count to
     * n_threads when the context is created; 0 = leave OpenBLAS alone. */
    int set_blas_threads;
    /* Optional diagnostics hook; the library never prints. */
    peft_log_fn log;
    void *log_user;
    /* Matrix products: PEFT_GEMM_AUTO = the library's own AVX-512 GEMM on the
     * context's threads when the CPU has AVX-512F, else OpenBLAS;
     * PEFT_GEMM_OPENBLAS = always OpenBLAS (for comparison). */
    int gemm;
} peft_ctx_opts;

enum { PEFT_GEMM_AUTO = 0, PEFT_GEMM_OPENBLAS = 1 };

PEFT_API peft_ctx_opts peft_ctx_opts_default(void);

/* Create a context. opts may be NULL for the defaults. On failure *out is NULL
 * and the status says why (there is no context to hold a message). */
PEFT_API peft_status peft_ctx_create(const peft_ctx_opts *opts, peft_ctx **out);
/* Destroy a context; NULL is a no-op. Every tensor created from it must have
 * been destroyed first. */
PEFT_API void peft_ctx_destroy(peft_ctx *ctx);

/* The last error message of this context: owned by the context, valid until the
 * next call on it. "" when the last failing call left none; never NULL (a NULL
 * ctx yields a fixed string). */
PEFT_API const char *peft_ctx_errmsg(const peft_ctx *ctx);
/* The status of the last failing call on this context (PEFT_OK if none). */
PEFT_API peft_status peft_ctx_errcode(const peft_ctx *ctx);
/* Clear the stored error. */
PEFT_API void peft_ctx_clear_error(peft_ctx *ctx);

PEFT_API int peft_ctx_n_threads(const peft_ctx *ctx);

/* The context PRNG (xoshiro256**): reseed, or save/restore its whole state
 * (4 words) for checkpoints. */
PEFT_API peft_status peft_ctx_seed(peft_ctx *ctx, uint64_t seed);
PEFT_API peft_status peft_ctx_rng_state(const peft_ctx *ctx, uint64_t state[4]);
PEFT_API peft_status peft_ctx_set_rng_state(peft_ctx *ctx, const uint64_t state[4]);
/* Draw from the context PRNG: 64 random bits, a double in [0,1), a standard normal. */
PEFT_API uint64_t peft_ctx_rand_u64(peft_ctx *ctx);
PEFT_API double peft_ctx_rand_uniform(peft_ctx *ctx);
PEFT_API double peft_ctx_rand_normal(peft_ctx *ctx);

/* Bytes currently allocated through this context's allocator, and the peak. */
PEFT_API size_t peft_ctx_bytes_allocated(const peft_ctx *ctx);
PEFT_API size_t peft_ctx_bytes_peak(const peft_ctx *ctx);

/* Memory through the context's hooks (64-byte aligned), for host code that
 * wants its buffers counted. peft_ctx_free accepts NULL. */
PEFT_API peft_status peft_ctx_alloc(peft_ctx *ctx, size_t size, void **out);
PEFT_API void peft_ctx_free(peft_ctx *ctx, void *ptr);

/* ---- Arena: bump allocation with 64-byte alignment, reset per step. ----
 *
 * Without a limit the arena grows by chunks as needed, and on reset it merges
 * them into one chunk of the high-water size, so after the first step the same
 * work needs no allocation. With a limit (bytes) it never grows past it. */
PEFT_API peft_status peft_arena_create(peft_ctx *ctx, size_t limit, peft_arena **out);
PEFT_API void peft_arena_destroy(peft_arena *arena);
/* Allocate `size` bytes (64-byte aligned, not zeroed). */
PEFT_API peft_status peft_arena_alloc(peft_arena *arena, size_t size, void **out);
/* A position to come back to with peft_arena_rewind: everything allocated
 * after the mark is released. */
PEFT_API size_t peft_arena_mark(const peft_arena *arena);
PEFT_API peft_status peft_arena_rewind(peft_arena *arena, size_t mark);
PEFT_API void peft_arena_reset(peft_arena *arena);
PEFT_API size_t peft_arena_used(const peft_arena *arena);
PEFT_API size_t peft_arena_peak(const peft_arena *arena);
/* Bytes reserved from the allocator right now. */
PEFT_API size_t peft_arena_reserved(const peft_arena *arena);

/* The context's scratch arena, which holds op outputs, saved activations and
 * the autograd tape. Borrowed; lives as long as the context. */
PEFT_API peft_arena *peft_ctx_arena(peft_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_CORE_H */
