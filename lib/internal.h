/* libpeft — internal declarations shared by the files under lib/. Never installed.
 *
 * Dimension letters used in every file (llm.c's legend):
 *   B batch, T time (sequence), S key length, C channels (hidden size),
 *   OC output channels, V vocabulary, H query heads, Hkv key/value heads,
 *   D head size, F feed-forward size, L layers, r LoRA rank, N rows (B*T...).
 * Gradient buffers get a `d` prefix; a pointer moved to a row is suffixed
 * with its index (x_bt, dout_n).
 *
 * Internal functions shared between files are prefixed peft__ and hidden by
 * -fvisibility=hidden; file-local helpers are static.
 */
#ifndef PEFT_INTERNAL_H
#define PEFT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "peft/peft.h"

#if defined(__GNUC__)
#define PEFT__PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define PEFT__UNUSED __attribute__((unused))
#else
#define PEFT__PRINTF(fmt, args)
#define PEFT__UNUSED
#endif

#define PEFT__ALIGN 64
#define PEFT__ERRMSG_SIZE 512

#ifdef NDEBUG
#define PEFT_ASSERT(x) ((void)0)
#else
#include <assert.h>
#define PEFT_ASSERT(x) assert(x)
#endif

/* ---- the context ---- */

typedef struct peft__pool peft__pool;
typedef struct peft__node peft__node;
typedef struct peft__gemm peft__gemm;

struct peft_ctx {
    int n_threads;
    uint64_t rng[4]; /* xoshiro256** state */
    peft_alloc_fn alloc;
    peft_free_fn free;
    void *alloc_user;
    peft_log_fn log;
    void *log_user;
    size_t bytes_allocated;
    size_t bytes_peak;
    peft_status errcode;
    char errmsg[PEFT__ERRMSG_SIZE];
    peft_arena *arena; /* scratch: op outputs, saved activations, tape nodes */
    peft__pool *pool;  /* worker threads (NULL when n_threads == 1) */
    peft__gemm *gemm;  /* own GEMM's per-thread workspaces (NULL: OpenBLAS does every GEMM) */
    /* strategies registered in this context (lib/strategy/registry.c) */
    void *registry;
    void (*registry_free)(peft_ctx *ctx, void *registry);
    /* autograd */
    bool grad_enabled;
    peft__node *tape_tail; /* last recorded node; nodes link backwards */
    size_t tape_len;
    void *grad_free; /* released intermediate gradients, reused during backward (tape.c) */
};

/* Set the context's error and return `code` (one-line error paths). ctx may be NULL. */
peft_status peft__fail(peft_ctx *ctx, peft_status code, const char *fmt, ...) PEFT__PRINTF(3, 4);
void peft__log(peft_ctx *ctx, peft_log_level level, const char *fmt, ...) PEFT__PRINTF(3, 4);

/* Allocation through the context hooks, counted. 64-byte aligned. */
void *peft__malloc(peft_ctx *ctx, size_t size);
void *peft__calloc(peft_ctx *ctx, size_t n, size_t size);
void peft__free(peft_ctx *ctx, void *ptr);

/* Overflow-checked size arithmetic: return false on overflow. */
static inline bool peft__mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline bool peft__add_ok(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}

/* Scratch allocation from the context arena; the message on failure names `what`. */
void *peft__scratch(peft_ctx *ctx, size_t bytes, const char *what);
void *peft__scratch_zero(peft_ctx *ctx, size_t bytes, const char *what);

/* ---- PRNG (rng.c) ---- */
uint64_t peft__splitmix64(uint64_t *state);
/* A stateless hash of (seed, i) to 64 bits: counter-based randomness for
 * dropout masks that must be recomputed identically in backward and do not
 * depend on the thread partition. */
static inline uint64_t peft__hash64(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ---- fast elementary functions for the activation kernels ----
 * exp(x) = 2^k exp(r), r = x - k ln2 in [-ln2/2, ln2/2], exp(r) by its
 * degree-6 Taylor polynomial: relative error about 1.2e-7 (an ulp). No
 * branches and no libm call (floorf/fminf are calls at -O2 without
 * -ffast-math), and the scale 2^k is built with integer ops on the bits of
 * the rounded value instead of a float-to-int conversion, so loops over it
 * vectorise. Inputs are clamped to the float range, which gives the right
 * limits (0 and FLT_MAX-ish); a NaN input stays NaN through r and p. */
static inline float peft__expf(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* adding 1.5 * 2^23 rounds x log2(e) to the nearest integer k (|k| <= 127)
     * and leaves k in the low mantissa bits of kf */
    const float shifter = 12582912.0f;
    union {
        float f;
        int32_t i;
    } kf = {.f = x * 1.44269504088896341f + shifter};
    const float k = kf.f - shifter;
    const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f; /* ln2 split hi + lo */
    float p = 1.3888889e-3f;
    p = p * r + 8.3333338e-3f;
    p = p * r + 4.1666668e-2f;
    p = p * r + 1.6666667e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {.i = (int32_t)((uint32_t)(kf.i - 0x4B400000 + 127) << 23)};
    return p * scale.f;
}

/* tanh(u) = 1 - 2 / (exp(2u) + 1): saturates to +-1 without NaN. */
static inline float peft__tanhf(float u) { return 1.0f - 2.0f / (peft__expf(2.0f * u) + 1.0f); }

/* Floats per block in loops written for gcc's -O2 vectoriser: its "very
 * cheap" cost model only vectorises a loop whose trip count is a known
 * multiple of the vector length, so hot elementwise loops run an inner loop
 * `PEFT__IVDEP for (j = 0; j < PEFT__VEC; j++) ... [i + j]` (j counting
 * from 0: `j < i + PEFT__VEC` could wrap), then a scalar tail doing the same
 * per-element arithmetic (identical results). PEFT__IVDEP promises the
 * vectoriser that the pointers do not overlap within the block (restrict on
 * locals is not enough for gcc 12); use it only where that is true. */
#define PEFT__VEC 16
#if defined(__GNUC__) && !defined(__clang__)
#define PEFT__IVDEP _Pragma("GCC ivdep")
#else
#define PEFT__IVDEP
#endif

/* ---- threads (pool.c) ---- */

/* fn(arg, begin, end) over [0, n) cut into at most n_threads contiguous
 * ranges; ranges are at least `grain` long. Runs inline when there is one
 * thread or the work is small. Kernels must not depend on the partition for
 * their results (write disjoint outputs; reduce in a fixed order). */
typedef void (*peft__range_fn)(void *arg, size_t begin, size_t end);
void peft__parallel_for(peft_ctx *ctx, size_t n, size_t grain, peft__range_fn fn, void *arg);
peft_status peft__pool_create(peft_ctx *ctx, int n_threads, peft__pool **out);
void peft__pool_destroy(peft_ctx *ctx, peft__pool *pool);
/* 0 on a thread outside the pool, i on worker i (the part it runs). */
int peft__pool_thread_slot(void);

/* ---- tensors ---- */

enum {
    PEFT__T_OWNS_DATA = 1u << 0,     /* data from peft__malloc, freed on destroy */
    PEFT__T_OWNS_GRAD = 1u << 1,     /* grad from peft__malloc, freed on destroy */
    PEFT__T_REQUIRES_GRAD = 1u << 2, /* a leaf that trains, or an op output on the tape */
    PEFT__T_SCRATCH = 1u << 3,       /* the handle lives in the arena */
    PEFT__T_SCRATCH_GRAD = 1u << 4,  /* grad from peft__grad_buffer's arena block: released after its node */
};

struct peft_tensor {
    peft_ctx *ctx;
    int ndim;
    peft_dtype dtype;
    uint32_t flags;
    int64_t shape[PEFT_MAX_DIMS];
    int64_t stride[PEFT_MAX_DIMS]; /* in elements; blocked dtypes are always contiguous */
    void *data;                    /* first element */
    float *grad;                   /* contiguous f32, same shape; NULL until needed */
    peft__node *node;              /* the op that produced it (NULL for leaves) */
    char *name;
};

/* numel of a shape; 0 on overflow or a non-positive dim. */
int64_t peft__numel(int ndim, const int64_t *shape);
void peft__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
bool peft__is_contiguous(const peft_tensor *t);
/* Rows and columns of a tensor seen as a matrix over its last dim. */
static inline int64_t peft__cols(const peft_tensor *t) { return t->shape[t->ndim - 1]; }
static inline int64_t peft__rows(const peft_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim - 1; i++) n *= t->shape[i];
    return n;
}
/* "[2, 3, 4]" into buf (always terminated). */
const char *peft__shape_str(const peft_tensor *t, char *buf, size_t size);
/* Normalise a possibly negative axis; -1 if out of range. */
int peft__axis(int axis, int ndim);

/* A new contiguous f32 op output in the arena (not zeroed). */
peft_status peft__new_output(peft_ctx *ctx, const char *op, int ndim, const int64_t *shape,
                             peft_tensor **out);
/* A new contiguous scratch tensor of any plain dtype (f32, i32) in the arena. */
peft_status peft__new_scratch(peft_ctx *ctx, const char *op, peft_dtype dtype, int ndim, const int64_t *shape,
                              peft_tensor **out);
/* The start of every elementwise op on one contiguous f32 input: checks ctx,
 * out, x (f32, contiguous) and makes the output of x's shape. *out is NULL
 * until the op succeeds. */
peft_status peft__unary_begin(peft_ctx *ctx, const char *op, peft_tensor *x, peft_tensor **out, peft_tensor **y);

/* Return the status of `call` when it fails (one-line error paths in composite code). */
#define PEFT__TRY(call)                                   \
    do {                                         \
        peft_status peft_try_st_ = (call);       \
        if (peft_try_st_ != PEFT_OK) return peft_try_st_; \
    } while (0)

/* A view handle in the arena sharing x's data. */
peft_status peft__new_view(peft_ctx *ctx, const char *op, const peft_tensor *x, peft_tensor **out);

/* Checks used by every op: non-NULL, same context, f32 unless said. They set the message. */
peft_status peft__check_input(peft_ctx *ctx, const char *op, const char *arg, const peft_tensor *t);
peft_status peft__check_f32(peft_ctx *ctx, const char *op, const char *arg, const peft_tensor *t);
peft_status peft__check_contiguous(peft_ctx *ctx, const char *op, const char *arg,
                                   const peft_tensor *t);
/* Rows may be strided, but the last dim must be contiguous and the leading
 * dims must nest (stride[i] = stride[i+1]*shape[i+1] for i < ndim-2). */
peft_status peft__check_rows(peft_ctx *ctx, const char *op, const char *arg, const peft_tensor *t);
static inline int64_t peft__row_stride(const peft_tensor *t)
{
    return t->ndim >= 2 ? t->stride[t->ndim - 2] : t->shape[0];
}

/* dtype conversion kernels (dtype.c) */
float peft__f16_to_f32(uint16_t h);
uint16_t peft__f32_to_f16(float f);
float peft__bf16_to_f32(uint16_t h);
uint16_t peft__f32_to_bf16(float f);
/* Convert n elements starting at element index `first` of a contiguous buffer of `dtype` to f32. */
peft_status peft__to_f32(peft_dtype dtype, const void *src, size_t first, size_t n, float *dst);

/* ---- autograd (tape.c) ---- */

/* Backward of one node: read node->out->grad, accumulate into the inputs' grads. */
typedef peft_status (*peft__backward_fn)(peft_ctx *ctx, peft__node *node);

#define PEFT__NODE_MAX_IN 6
struct peft__node {
    const char *op;
    peft__backward_fn backward;
    peft_tensor *out;
    peft_tensor *in[PEFT__NODE_MAX_IN];
    int n_in;
    void *saved; /* op-specific, in the arena */
    peft__node *prev;
};

/* True when gradients are on and some input requires a gradient: the op must
 * record a node, and its output requires a gradient. */
bool peft__should_record(const peft_ctx *ctx, peft_tensor *const *in, int n_in);
/* Record a node producing `out` (which becomes requires-grad). saved may be NULL. */
peft_status peft__record(peft_ctx *ctx, const char *op, peft__backward_fn backward, peft_tensor *out,
                         peft_tensor *const *in, int n_in, void *saved);
/* Does this input want a gradient from the node's backward? */
static inline bool peft__needs_grad(const peft_tensor *t)
{
    return t != NULL && (t->flags & PEFT__T_REQUIRES_GRAD) != 0;
}
/* The gradient buffer of t for accumulation, allocated zeroed in the arena for
 * op outputs on first use. Leaves that require a gradient always have one. */
peft_status peft__grad_buffer(peft_ctx *ctx, peft_tensor *t, float **out);
/* Like peft__grad_buffer, but a buffer this call allocates is left
 * uninitialised and *fresh is set true: the caller must then WRITE every
 * element (=, not +=), which saves zeroing it first. *fresh is false when
 * the gradient already existed (accumulate as usual). */
peft_status peft__grad_buffer_fresh(peft_ctx *ctx, peft_tensor *t, float **out, bool *fresh);
/* Backward from any recorded tensor with its gradient seeded to `dout`
 * (numel floats); releases the graph like peft_backward. For tests. */
peft_status peft__backward_seeded(peft_ctx *ctx, peft_tensor *out, const float *dout);

/* ---- BLAS (blas.c): the one place that calls CBLAS ---- */

/* Row-major C = alpha * op(A) op(B) + beta * C with op = transpose when the flag is set.
 * A is M x K after op, B is K x N after op. */
void peft__sgemm(peft_ctx *ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc);
/* The naive reference (double accumulation), for tests and odd cases. */
void peft__sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc);
void peft__blas_set_threads(int n);

/* The own AVX-512 GEMM (gemm.c): available on this CPU; per-thread packing
 * workspaces; the product itself (same contract as peft__sgemm, K > 0). */
bool peft__gemm_available(void);
peft_status peft__gemm_create(peft_ctx *ctx, int n_slots, peft__gemm **out);
void peft__gemm_destroy(peft_ctx *ctx, peft__gemm *gemm);
void peft__gemm_run(peft_ctx *ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* out[N, OC] (+)= x[N, C] W^T (beta 0 or 1) and dx[N, C] += dout[N, OC] W, for W [OC, C]
 * in any storage dtype (half and q8_0 weights are converted in f32 tiles). (matmul.c) */
peft_status peft__linear_rows(peft_ctx *ctx, const float *x, int64_t ldx, const peft_tensor *w, int64_t N, float *out,
                              float beta);
peft_status peft__linear_rows_dx(peft_ctx *ctx, const float *dout, const peft_tensor *w, int64_t N, float *dx);
/* Shared row kernels (matmul.c): out[n, :] += b for N rows of OC; db += column sums of dout. */
void peft__bias_add_rows(peft_ctx *ctx, float *out, const float *b, int64_t N, int64_t OC);
void peft__bias_grad(peft_ctx *ctx, const float *dout, int64_t N, int64_t OC, float *db);
/* peft__linear_rows_dx into a gradient buffer from peft__grad_buffer_fresh:
 * when fresh, dx = dout W without zeroing dx first (f32 W: one sgemm with
 * beta 0), else dx += dout W. (matmul.c) */
peft_status peft__linear_rows_dx_grad(peft_ctx *ctx, const float *dout, const peft_tensor *w, int64_t N, float *dx,
                                      bool fresh);

/* ---- rotary embedding (ops/rope.c), shared with attention ---- */

/* (cos, sin) of p * theta^(-2i/n_rot) for pairs i < n_rot/2 and positions
 * p = pos0 .. pos0+n_pos-1, computed in double: [n_pos, n_rot] in the arena
 * (row p holds cos_0, sin_0, cos_1, sin_1, ...). NULL on failure (message set). */
/* Check a rotation for head size D (mode, theta > 0, n_rot even in (0, D],
 * 0 meaning D) and give the effective n_rot; the message names op. */
peft_status peft__rope_check(peft_ctx *ctx, const char *op, peft_rope_mode mode, int D, int n_rot, float theta,
                             int *n_rot_out);
float *peft__rope_table(peft_ctx *ctx, int64_t pos0, int64_t n_pos, int n_rot, float theta, const char *what);

enum {
    PEFT__ROPE_INVERSE = 1u << 0, /* rotate by -angle (the backward of a rotation) */
    PEFT__ROPE_ACCUM = 1u << 1,   /* dst += rotated src (dst != src) instead of dst = */
};

/* Rotate the rows of [B, T, n_head*D] by the table: row (b, t) uses table row t
 * (pass cs already moved to the first row's position). Rows are lds / ldd
 * floats apart; dst may equal src unless accumulating. Dims of each head at or
 * past n_rot are copied (or added). Threads over the rows. */
void peft__rope_rows(peft_ctx *ctx, peft_rope_mode mode, int n_head, int D, int n_rot, const float *cs,
                     float *dst, int64_t ldd, const float *src, int64_t lds, int64_t B, int64_t T,
                     unsigned flags);
/* ---- files (lib/io/atomic_file.c) ---- */

/* Atomic replacement of a file: peft__atomic_open creates <path>.tmp-<random>
 * in the same directory; peft__atomic_write appends (buffered);
 * peft__atomic_commit flushes, fsyncs, renames over `path` and fsyncs the
 * directory; peft__atomic_abort closes and unlinks the temporary file. commit
 * and abort always free `af` (a failed commit aborts). `fn` (a static string,
 * the public caller's name) prefixes every message; I/O errors are
 * PEFT_ERR_IO naming the path and the system error. */
typedef struct peft__atomic_file peft__atomic_file;
peft_status peft__atomic_open(peft_ctx *ctx, const char *fn, const char *path, peft__atomic_file **out);
peft_status peft__atomic_write(peft__atomic_file *af, const void *data, size_t n);
peft_status peft__atomic_commit(peft__atomic_file *af);
void peft__atomic_abort(peft__atomic_file *af);
/* Thread-safe strerror into buf (the result may be a static string). */
const char *peft__strerror(int err, char *buf, size_t size);
/* ---- Q8_0 blocks (tensor/q8_0.c) ----
 * ggml's block_q8_0: 32 weights in 34 bytes, an fp16 scale d then int8 q[32];
 * the weight is q * d. Buffers are byte arrays (blocks are not aligned). */
#define PEFT__Q8_0_BLOCK 32
#define PEFT__Q8_0_BYTES 34
/* Quantize n floats (n a multiple of 32) into n/32 blocks like ggml's
 * quantize_row_q8_0_ref: d = amax/127, q = roundf(x * (1/d)) (0 when d = 0). */
void peft__q8_0_quantize(const float *x, size_t n, void *blocks);
/* Dequantize elements [first, first + n) of a Q8_0 buffer into dst[0..n). */
void peft__q8_0_to_f32(const void *blocks, size_t first, size_t n, float *dst);

/* ---- file readers (lib/io) ---- */

/* A whole file mapped read-only (mmap_file.c). */
typedef struct peft__mapped {
    const uint8_t *data;
    size_t size;
} peft__mapped;
/* Map `path`; errors (PEFT_ERR_IO) are reported as "<fn>: <path>: ...".
 * An empty file maps to data = NULL, size = 0. */
peft_status peft__map_file(peft_ctx *ctx, const char *fn, const char *path, peft__mapped *out);
void peft__unmap_file(peft__mapped *m);
/* A new long-lived contiguous tensor of dtype `want` and the given shape from
 * `bytes` (possibly unaligned, little-endian) holding the tensor in dtype
 * `src` (tensor_decode.c). Conversions: between f32/f16/bf16, q8_0 -> any
 * float (dequantize), any float -> q8_0 (quantize; last dim % 32 == 0),
 * i32 -> i32. The tensor is named `name`. Messages name `fn` and `name`. */
peft_status peft__tensor_decode(peft_ctx *ctx, const char *fn, const char *name, peft_dtype src,
                                const void *bytes, int ndim, const int64_t *shape, peft_dtype want,
                                peft_tensor **out);

/* ggml tensor types (ggml_types.c): elements per block and bytes per block
 * of a type id; false for retired ids and ids whose size libpeft does not
 * know. `known` (may be NULL) tells apart ids that exist in newer ggml. */
bool peft__ggml_type_size(uint32_t ggml_type, size_t *block_elems, size_t *block_bytes, bool *known);
/* Bytes of one element of a GGUF metadata scalar type; 0 for string/array/invalid. */
size_t peft__gguf_scalar_size(uint32_t gguf_type);

#endif /* PEFT_INTERNAL_H */
