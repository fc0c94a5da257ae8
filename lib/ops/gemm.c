/* The library's own single-precision GEMM for x86-64 cores with AVX-512.
 *
 * Why our own: OpenBLAS is pinned to its Haswell (AVX2) kernels by
 * OPENBLAS_CORETYPE on the machines we target, and its worker threads spin
 * against ours between GEMMs. This GEMM uses the 512-bit FMA units and runs on
 * the context's own thread pool, so there is one set of threads. OpenBLAS stays
 * the portable path (blas.c picks at run time by CPUID).
 *
 * Structure (Goto/BLIS-style blocking): C is computed in KC-deep slabs; each
 * slab packs an MC x KC block of op(A) into MR-tall row slivers and then, block
 * by block, KC x NC of op(B) into NR-wide column slivers, so the micro-kernel reads
 * both operands contiguously whatever the transposes and strides were. The
 * micro-kernel keeps an MR x NR tile of C in 24 zmm registers; edges are zero-
 * padded in the packs and masked on store.
 *
 * Threads: a top-level call splits C into one contiguous range per thread
 * along M or N — whichever makes each thread re-pack the smaller operand — and
 * each thread runs the blocked loops on its own packing workspace. A call made
 * from inside a parallel region (attention's per-head loop) runs on the
 * calling thread. Each element of C is a sum over k in the same order for any
 * partition, so results do not depend on the thread count. */
#include <string.h>

#include "../internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GEMM_HAVE_AVX512 1
#include <immintrin.h>
#else
#define GEMM_HAVE_AVX512 0
#endif

enum {
    MR = 12,   /* rows of the register tile */
    NR = 32,   /* columns: two zmm vectors */
    KC = 256,  /* depth of a slab: an NR sliver of B is 32 KiB, stays in L1 */
    MC = 1056, /* rows of A packed at once (88 slivers, 1 MiB): every row a thread
                  has in most products, so A is packed once per slab, not once per
                  NC block of columns; the micro-kernel streams it from L2/L3 */
    NC = 512,  /* columns of B packed at once (512 KiB, stays in L2) */
};

/* floats of packing workspace one thread needs */
#define GEMM_WS_FLOATS ((size_t)MC * KC + (size_t)KC * NC)

struct peft__gemm {
    int n_slots;
    float *ws[]; /* one workspace per pool thread slot */
};

typedef struct gemm_args {
    bool ta, tb;
    bool ct; /* C is stored transposed: the call computes C^T = op(B)^T op(A)^T */
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    int64_t lda, ldb, ldc;
    float *C;
} gemm_args;

#if GEMM_HAVE_AVX512

#define AVX512 __attribute__((target("avx512f")))

/* out[k] = column k of the 16 x 16 block src[j * ld + k] (rows j < nj, columns
 * under mask mk; the rest reads as zero): a register transpose in three
 * shuffle stages (pairs of floats, pairs of pairs, 128-bit lanes). Inlined
 * and unrolled so all its vectors stay in registers: at -O2 gcc otherwise
 * keeps the loops and the arrays on the stack. */
static AVX512 inline __attribute__((always_inline)) void transpose16(const float *src, int64_t ld, int nj, __mmask16 mk,
                                                                    __m512 out[16])
{
    __m512 r[16], a[16], b[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) r[j] = j < nj ? _mm512_maskz_loadu_ps(mk, src + j * ld) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int j = 0; j < 16; j += 2) { /* lane L of a[j]: r_j/r_j+1 interleaved at columns 4L, 4L+1; a[j+1]: 4L+2, 4L+3 */
        a[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
        a[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) { /* b[4g + m], lane L: rows 4g..4g+3 at column 4L + m */
        __m512d lo0 = _mm512_castps_pd(a[4 * g]), lo1 = _mm512_castps_pd(a[4 * g + 2]);
        __m512d hi0 = _mm512_castps_pd(a[4 * g + 1]), hi1 = _mm512_castps_pd(a[4 * g + 3]);
        b[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
        b[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
        b[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
        b[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
    }
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++) { /* gather lane L of the four row groups: column 4L + m */
        __m512 d0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x44), d1 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xee);
        __m512 d2 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x44);
        __m512 d3 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xee);
        out[m] = _mm512_shuffle_f32x4(d0, d2, 0x88);
        out[4 + m] = _mm512_shuffle_f32x4(d0, d2, 0xdd);
        out[8 + m] = _mm512_shuffle_f32x4(d1, d3, 0x88);
        out[12 + m] = _mm512_shuffle_f32x4(d1, d3, 0xdd);
    }
}

static inline __mmask16 low_mask(int n) { return (__mmask16)(n >= 16 ? 0xffffu : n <= 0 ? 0u : (1u << n) - 1u); }

/* dst[k][0..MR) = op(A)[i0 + r, p0 + k] for a sliver of `rows` <= MR rows (rest zero). */
static AVX512 void pack_a_sliver(const gemm_args *g, int64_t i0, int rows, int64_t p0, int kc, float *dst)
{
    if (g->ta) { /* op(A)[i, k] = A[k, i]: a row of A gives MR consecutive i */
        __mmask16 m = low_mask(rows);
        for (int k = 0; k < kc; k++) /* MR = 12 lanes of one masked load; rows past `rows` load as zero */
            _mm512_mask_storeu_ps(dst + (size_t)k * MR, low_mask(MR),
                                  _mm512_maskz_loadu_ps(m, g->A + (p0 + k) * g->lda + i0));
        return;
    }
    const float *src = g->A + i0 * g->lda + p0;
    for (int k0 = 0; k0 < kc; k0 += 16) {
        __m512 col[16];
        transpose16(src + k0, g->lda, rows, low_mask(kc - k0), col);
#pragma GCC unroll 16
        for (int k = 0; k < 16; k++)
            if (k0 + k < kc) _mm512_mask_storeu_ps(dst + (size_t)(k0 + k) * MR, low_mask(MR), col[k]);
    }
}

/* dst[k][0..NR) = op(B)[p0 + k, j0 + j] for a sliver of `cols` <= NR columns (rest zero). */
static AVX512 void pack_b_sliver(const gemm_args *g, int64_t j0, int cols, int64_t p0, int kc, float *dst)
{
    if (!g->tb) { /* rows of B are contiguous in j */
        __mmask16 m0 = low_mask(cols), m1 = low_mask(cols - 16);
        for (int k = 0; k < kc; k++) {
            const float *src = g->B + (p0 + k) * g->ldb + j0;
            _mm512_store_ps(dst + (size_t)k * NR, _mm512_maskz_loadu_ps(m0, src));
            _mm512_store_ps(dst + (size_t)k * NR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
        }
        return;
    }
    /* op(B)[k, j] = B[j, k]: rows of B are columns of the sliver */
    for (int jb = 0; jb < NR; jb += 16)
        for (int k0 = 0; k0 < kc; k0 += 16) {
            __m512 col[16];
            transpose16(g->B + (j0 + jb) * g->ldb + p0 + k0, g->ldb, cols - jb, low_mask(kc - k0), col);
#pragma GCC unroll 16
            for (int k = 0; k < 16; k++)
                if (k0 + k < kc) _mm512_store_ps(dst + (size_t)(k0 + k) * NR + jb, col[k]);
        }
}

/* C[0..rows, 0..cols) = alpha * (Ap Bp) + beta * C over kc steps; Ap is an MR
 * sliver, Bp an NR sliver; with ct the tile lands transposed (C[c][r]).
 * beta == 0 never reads C (it may hold NaN). */
static AVX512 void micro_kernel(int kc, const float *restrict Ap, const float *restrict Bp, float *C, int64_t ldc,
                                int rows, int cols, float alpha, float beta, bool ct)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(),
           c11 = _mm512_setzero_ps(), c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(),
           c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps(), c40 = _mm512_setzero_ps(),
           c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps(),
           c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps(), c70 = _mm512_setzero_ps(),
           c71 = _mm512_setzero_ps(), c80 = _mm512_setzero_ps(), c81 = _mm512_setzero_ps(),
           c90 = _mm512_setzero_ps(), c91 = _mm512_setzero_ps(), ca0 = _mm512_setzero_ps(),
           ca1 = _mm512_setzero_ps(), cb0 = _mm512_setzero_ps(), cb1 = _mm512_setzero_ps();
#define ROW(r, c0, c1)                                   \
    do {                                                 \
        __m512 a = _mm512_set1_ps(Ap[r]);                \
        c0 = _mm512_fmadd_ps(a, b0, c0);                 \
        c1 = _mm512_fmadd_ps(a, b1, c1);                 \
    } while (0)
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
        ROW(0, c00, c01); ROW(1, c10, c11); ROW(2, c20, c21); ROW(3, c30, c31);
        ROW(4, c40, c41); ROW(5, c50, c51); ROW(6, c60, c61); ROW(7, c70, c71);
        ROW(8, c80, c81); ROW(9, c90, c91); ROW(10, ca0, ca1); ROW(11, cb0, cb1);
        Ap += MR;
        Bp += NR;
    }
#undef ROW
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51},
                         {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {ca0, ca1}, {cb0, cb1}};
    __mmask16 m0 = low_mask(cols), m1 = low_mask(cols - 16);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (ct) { /* narrow products only (N < 16 swapped in): scalar stores are cheap here */
        float t[MR][NR] __attribute__((aligned(64)));
        for (int r = 0; r < rows; r++) {
            _mm512_store_ps(t[r], _mm512_mul_ps(va, acc[r][0]));
            _mm512_store_ps(t[r] + 16, _mm512_mul_ps(va, acc[r][1]));
        }
        for (int c = 0; c < cols; c++)
            for (int r = 0; r < rows; r++)
                C[c * ldc + r] = beta == 0.0f ? t[r][c] : t[r][c] + beta * C[c * ldc + r];
        return;
    }
    for (int r = 0; r < rows; r++) {
        float *c = C + r * ldc;
        __m512 y0 = _mm512_mul_ps(va, acc[r][0]), y1 = _mm512_mul_ps(va, acc[r][1]);
        if (beta != 0.0f) {
            y0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), y0);
            y1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), y1);
        }
        _mm512_mask_storeu_ps(c, m0, y0);
        _mm512_mask_storeu_ps(c + 16, m1, y1);
    }
}

/* C[i0..i1, j0..j1) of one call, on one thread's workspace. */
static AVX512 void gemm_block(const gemm_args *g, int64_t i0, int64_t i1, int64_t j0, int64_t j1, float *ws)
{
    float *Bp = ws;                   /* KC x NC, NR-wide slivers */
    float *Ap = ws + (size_t)KC * NC; /* MC x KC, MR-tall slivers */
    for (int64_t pc = 0; pc < g->K; pc += KC) {
        int kc = (int)(g->K - pc < KC ? g->K - pc : KC);
        float beta = pc == 0 ? g->beta : 1.0f;
        for (int64_t ic = i0; ic < i1; ic += MC) { /* usually one block: A is packed once per slab */
            int64_t mc = i1 - ic < MC ? i1 - ic : MC;
            for (int64_t ir = 0; ir < mc; ir += MR)
                pack_a_sliver(g, ic + ir, (int)(mc - ir < MR ? mc - ir : MR), pc, kc, Ap + (size_t)ir * kc);
            for (int64_t jc = j0; jc < j1; jc += NC) {
                int64_t nc = j1 - jc < NC ? j1 - jc : NC;
                for (int64_t jr = 0; jr < nc; jr += NR)
                    pack_b_sliver(g, jc + jr, (int)(nc - jr < NR ? nc - jr : NR), pc, kc, Bp + (size_t)jr * kc);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int cols = (int)(nc - jr < NR ? nc - jr : NR);
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int rows = (int)(mc - ir < MR ? mc - ir : MR);
                        float *c = g->ct ? g->C + (jc + jr) * g->ldc + ic + ir : g->C + (ic + ir) * g->ldc + jc + jr;
                        micro_kernel(kc, Ap + (size_t)ir * kc, Bp + (size_t)jr * kc, c, g->ldc, rows, cols,
                                     g->alpha, beta, g->ct);
                    }
                }
            }
        }
    }
}

typedef struct gemm_job {
    const gemm_args *g;
    peft__gemm *gemm;
    bool split_m;
    int64_t unit;  /* MR or NR: ranges are cut on tile boundaries */
    int64_t units; /* tiles along the split dimension */
    size_t parts;
} gemm_job;

static void gemm_part(void *p, size_t begin, size_t end)
{
    const gemm_job *job = p;
    const gemm_args *g = job->g;
    float *ws = job->gemm->ws[peft__pool_thread_slot()];
    for (size_t part = begin; part < end; part++) {
        int64_t u0 = job->units * (int64_t)part / (int64_t)job->parts;
        int64_t u1 = job->units * (int64_t)(part + 1) / (int64_t)job->parts;
        int64_t lim = job->split_m ? g->M : g->N;
        int64_t a = u0 * job->unit, b = u1 * job->unit < lim ? u1 * job->unit : lim;
        if (a >= b) continue;
        if (job->split_m) gemm_block(g, a, b, 0, g->N, ws);
        else gemm_block(g, 0, g->M, a, b, ws);
    }
}

bool peft__gemm_available(void) { return __builtin_cpu_supports("avx512f"); }

#else

bool peft__gemm_available(void) { return false; }

#endif

/* Below this many multiply-adds one thread is faster than waking the others. */
#define GEMM_PARALLEL_MIN (1 << 21)

void peft__gemm_run(peft_ctx *ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
#if GEMM_HAVE_AVX512
    gemm_args g = {trans_a, trans_b, false, M, N, K, alpha, beta, A, B, lda, ldb, ldc, C};
    /* a narrow C (LoRA's rank, a few classes) would waste most of the 32-wide
     * tile: compute C^T = op(B)^T op(A)^T instead, with M and N swapped */
    if (N < 16 && M > N)
        g = (gemm_args){!trans_b, !trans_a, true, N, M, K, alpha, beta, B, A, ldb, lda, ldc, C};
    M = g.M, N = g.N;
    /* each thread re-packs the operand it does not split: split the dimension
     * whose other operand is smaller (M split re-packs B: K x N). */
    bool split_m = N <= M;
    int64_t unit = split_m ? MR : NR;
    int64_t units = ((split_m ? M : N) + unit - 1) / unit;
    size_t parts = (size_t)ctx->n_threads;
    if ((double)M * N * K < GEMM_PARALLEL_MIN) parts = 1;
    if ((int64_t)parts > units) parts = (size_t)units;
    if (parts < 1) parts = 1;
    gemm_job job = {&g, ctx->gemm, split_m, unit, units, parts};
    peft__parallel_for(ctx, parts, 1, gemm_part, &job);
#else
    (void)ctx; (void)trans_a; (void)trans_b; (void)M; (void)N; (void)K; (void)alpha;
    (void)A; (void)lda; (void)B; (void)ldb; (void)beta; (void)C; (void)ldc;
    PEFT_ASSERT(!"own GEMM not compiled in");
#endif
}

peft_status peft__gemm_create(peft_ctx *ctx, int n_slots, peft__gemm **out)
{
    *out = NULL;
    peft__gemm *gm = peft__calloc(ctx, 1, sizeof *gm + (size_t)n_slots * sizeof(float *));
    if (!gm) return peft__fail(ctx, PEFT_ERR_NOMEM, "gemm: out of memory for %d workspaces", n_slots);
    gm->n_slots = n_slots;
    for (int i = 0; i < n_slots; i++) {
        gm->ws[i] = peft__malloc(ctx, GEMM_WS_FLOATS * sizeof(float));
        if (!gm->ws[i]) {
            peft__gemm_destroy(ctx, gm);
            return peft__fail(ctx, PEFT_ERR_NOMEM, "gemm: out of memory for a %zu-byte workspace",
                              GEMM_WS_FLOATS * sizeof(float));
        }
    }
    *out = gm;
    return PEFT_OK;
}

void peft__gemm_destroy(peft_ctx *ctx, peft__gemm *gm)
{
    if (!gm) return;
    for (int i = 0; i < gm->n_slots; i++) peft__free(ctx, gm->ws[i]);
    peft__free(ctx, gm);
}
