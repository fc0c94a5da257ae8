/* Fused multi-head attention with GQA, causal mask, optional RoPE inside,
 * computed flash-attention style.
 *
 *   q (B,T,H*D), k v (B,S,Hkv*D) -> out (B,T,H*D)
 *   query head h reads kv head g = h / (H/Hkv); query t sits at position
 *   S-T+t and may see keys 0..S-T+t when causal.
 *
 * Forward walks a block of BQ query rows against blocks of BK keys with an
 * online softmax (running max m and sum l per row), so it never holds more
 * than a BQ x BK score tile; it saves only lse = m + log(l) per row. Backward
 * recomputes each tile's probabilities from lse:
 *   P = exp(scale Q K^T - lse),  Di = rowsum(dO * O),
 *   dV += P^T dO,  dP = dO V^T,  dS = P * (dP - Di),
 *   dQ += scale dS K,  dK += scale dS^T Q.
 * Fully masked key blocks are skipped. Work is split into tasks that write
 * disjoint outputs: forward by (b, h, query block), backward by (b, kv head)
 * so one task owns dK/dV of its kv head and dQ of the query heads that read
 * it, summing in a fixed order. Results do not depend on the thread count.
 *
 * With RoPE inside, rotated copies of q and k (contiguous) are made with the
 * kernel of peft_rope and kept for backward, whose dQ/dK are turned back by
 * the inverse rotation. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "row_kernels.h"

#define BQ 64 /* query rows per tile */
#define BK 64 /* keys per tile */

peft_attention_opts peft_attention_opts_default(void)
{
    peft_attention_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.n_head = 0; /* must be set */
    o.n_kv_head = 0;
    o.causal = 1;
    o.scale = 0.0f;
    o.rope = PEFT_ROPE_NONE;
    o.rope_theta = 10000.0f;
    o.rope_dims = 0;
    return o;
}

typedef struct attn_geom {
    int64_t B, T, S;
    int H, Hkv, D;
    bool causal;
    float scale;
    const float *q, *k, *v; /* q, k: the rotated copies when RoPE is inside */
    int64_t ldq, ldk, ldv;  /* row strides */
} attn_geom;

/* Keys [0, kend) are visible to some row of the query block [i0, i0+nq). */
static int64_t key_end(const attn_geom *g, int64_t i0, int64_t nq)
{
    return g->causal ? g->S - g->T + i0 + nq : g->S;
}

/* Visible keys of query row t inside the key block starting at j0 (<= nk; may be <= 0). */
static int64_t row_valid(const attn_geom *g, int64_t t, int64_t j0, int64_t nk)
{
    if (!g->causal) return nk;
    int64_t n = g->S - g->T + t - j0 + 1;
    return n < nk ? n : nk;
}

/* ---- tile row kernels, written for the -O2 vectoriser (see PEFT__VEC):
 * lane-wise partial results in blocks of PEFT__VEC, combined in lane order,
 * so each depends only on the row, never on the thread partition. */

/* sum of x[d] y[d] over d < n in double. */
static double dot_f64(const float *x, const float *y, int64_t n)
{
    double acc[PEFT__VEC] = {0};
    int64_t d = 0;
    for (; d + PEFT__VEC <= n; d += PEFT__VEC)
        for (int64_t j = 0; j < PEFT__VEC; j++) acc[j] += (double)x[d + j] * y[d + j];
    double sum = 0.0;
    for (int64_t j = 0; j < PEFT__VEC; j++) sum += acc[j];
    for (; d < n; d++) sum += (double)x[d] * y[d];
    return sum;
}

/* Tasks are split into n_slots contiguous ranges; each slot has its own scratch. */
static size_t slot_count(const peft_ctx *ctx, size_t n_tasks)
{
    size_t n = ctx->n_threads > 1 ? (size_t)ctx->n_threads : 1;
    return n < n_tasks ? n : n_tasks;
}

/* ---- forward ---- */

typedef struct fwd_arg {
    peft_ctx *ctx;
    attn_geom g;
    float *out; /* (B,T,H*D) */
    float *lse; /* (B,H,T) or NULL */
    size_t n_tasks, n_slots;
    float *s_tile;   /* per slot (BQ,BK) scores, then probabilities */
    float *acc_tile; /* per slot (BQ,D) unnormalised output */
    float *m_tile;   /* per slot (BQ) running max */
    double *l_tile;  /* per slot (BQ) running sum */
} fwd_arg;

static void fwd_task(const fwd_arg *a, size_t task, float *s_tile, float *acc, float *m, double *l)
{
    const attn_geom *g = &a->g;
    const int64_t T = g->T, S = g->S, D = g->D, C = (int64_t)g->H * D;
    const int64_t n_qb = (T + BQ - 1) / BQ;
    const int64_t iq = (int64_t)task % n_qb, bh = (int64_t)task / n_qb;
    const int64_t b = bh / g->H, h = bh % g->H, kvh = h / (g->H / g->Hkv);
    const int64_t i0 = iq * BQ, nq = T - i0 < BQ ? T - i0 : BQ;
    const float *q_blk = g->q + (b * T + i0) * g->ldq + h * D;
    const float *k_b = g->k + b * S * g->ldk + kvh * D, *v_b = g->v + b * S * g->ldv + kvh * D;
    for (int64_t r = 0; r < nq; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0;
    }
    memset(acc, 0, (size_t)(nq * D) * sizeof *acc);
    const int64_t kend = key_end(g, i0, nq);
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int64_t nk = kend - j0 < BK ? kend - j0 : BK;
        /* s (nq,nk) = scale Q K^T */
        peft__sgemm(a->ctx, false, true, nq, nk, D, g->scale, q_blk, g->ldq, k_b + j0 * g->ldk, g->ldk, 0.0f,
                    s_tile, BK);
        for (int64_t r = 0; r < nq; r++) {
            float *s_r = s_tile + r * BK;
            const int64_t valid = row_valid(g, i0 + r, j0, nk);
            if (valid <= 0) { /* this row sees none of the block (never the first block) */
                memset(s_r, 0, (size_t)nk * sizeof *s_r);
                continue;
            }
            const float mb = peft__row_max(s_r, valid);
            const float m_new = mb > m[r] ? mb : m[r];
            const float alpha = expf(m[r] - m_new); /* 0 on the first block (m = -inf) */
            peft__row_exp_shift(s_r, valid, m_new);
            const double sum = peft__row_sum(s_r, valid);
            for (int64_t c = valid; c < nk; c++) s_r[c] = 0.0f;
            l[r] = l[r] * alpha + sum;
            m[r] = m_new;
            if (alpha != 1.0f) peft__row_scale(acc + r * D, D, alpha);
        }
        /* acc (nq,D) += P V */
        peft__sgemm(a->ctx, false, false, nq, D, nk, 1.0f, s_tile, BK, v_b + j0 * g->ldv, g->ldv, 1.0f, acc, D);
    }
    for (int64_t r = 0; r < nq; r++) {
        float *out_r = a->out + (b * T + i0 + r) * C + h * D;
        const float inv = (float)(1.0 / l[r]);
        const float *acc_r = acc + r * D;
        int64_t d = 0;
        for (; d + PEFT__VEC <= D; d += PEFT__VEC)
            PEFT__IVDEP /* out is the op's output, acc a private tile */
            for (int64_t j = 0; j < PEFT__VEC; j++) out_r[d + j] = acc_r[d + j] * inv;
        for (; d < D; d++) out_r[d] = acc_r[d] * inv;
        if (a->lse) a->lse[(b * g->H + h) * T + i0 + r] = m[r] + (float)log(l[r]);
    }
}

static void fwd_range(void *p, size_t begin, size_t end)
{
    const fwd_arg *a = p;
    const size_t D = (size_t)a->g.D;
    for (size_t slot = begin; slot < end; slot++) {
        size_t t0 = a->n_tasks * slot / a->n_slots, t1 = a->n_tasks * (slot + 1) / a->n_slots;
        for (size_t t = t0; t < t1; t++)
            fwd_task(a, t, a->s_tile + slot * BQ * BK, a->acc_tile + slot * BQ * D, a->m_tile + slot * BQ,
                     a->l_tile + slot * BQ);
    }
}

/* ---- backward ---- */

typedef struct attn_saved {
    attn_geom g;
    const float *lse; /* (B,H,T) */
    peft_rope_mode rope;
    int n_rot;
    const float *cs; /* (S, n_rot) rope table */
} attn_saved;

typedef struct bwd_arg {
    peft_ctx *ctx;
    attn_geom g;
    const float *out, *dout, *lse; /* (B,T,H*D), (B,T,H*D), (B,H,T) */
    float *dq, *dk, *dv;           /* (B,T,H*D), (B,S,Hkv*D) x2, contiguous; NULL when not needed */
    bool zero_dq, zero_dk, zero_dv; /* uninitialised: each task zeroes the parts it owns first */
    size_t n_tasks, n_slots;
    float *p_tile;  /* per slot (BQ,BK) probabilities */
    float *dp_tile; /* per slot (BQ,BK) dP, then dS */
    float *di_tile; /* per slot (BQ) rowsum(dO * O) */
} bwd_arg;

static void bwd_task(const bwd_arg *a, size_t task, float *p_tile, float *dp_tile, float *di)
{
    const attn_geom *g = &a->g;
    const int64_t T = g->T, S = g->S, D = g->D, C = (int64_t)g->H * D, Ckv = (int64_t)g->Hkv * D;
    const int64_t b = (int64_t)task / g->Hkv, kvh = (int64_t)task % g->Hkv, group = g->H / g->Hkv;
    const float *k_b = g->k + b * S * g->ldk + kvh * D, *v_b = g->v + b * S * g->ldv + kvh * D;
    float *dk_b = a->dk ? a->dk + b * S * Ckv + kvh * D : NULL;
    float *dv_b = a->dv ? a->dv + b * S * Ckv + kvh * D : NULL;
    /* zero what this task owns (not zeroed as whole buffers beforehand: this
     * runs in parallel, right before the rows are used) */
    for (int64_t j = 0; j < S; j++) {
        if (a->zero_dk) memset(dk_b + j * Ckv, 0, (size_t)D * sizeof(float));
        if (a->zero_dv) memset(dv_b + j * Ckv, 0, (size_t)D * sizeof(float));
    }
    if (a->zero_dq)
        for (int64_t h = kvh * group; h < (kvh + 1) * group; h++)
            for (int64_t t = 0; t < T; t++) memset(a->dq + (b * T + t) * C + h * D, 0, (size_t)D * sizeof(float));
    for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int64_t i0 = 0; i0 < T; i0 += BQ) {
            const int64_t nq = T - i0 < BQ ? T - i0 : BQ;
            const int64_t row0 = (b * T + i0) * C + h * D; /* in out, dout, dq */
            const float *q_blk = g->q + (b * T + i0) * g->ldq + h * D;
            const float *do_blk = a->dout + row0, *lse_blk = a->lse + (b * g->H + h) * T + i0;
            for (int64_t r = 0; r < nq; r++) {
                di[r] = (float)dot_f64(do_blk + r * C, a->out + row0 + r * C, D);
            }
            const int64_t kend = key_end(g, i0, nq);
            for (int64_t j0 = 0; j0 < kend; j0 += BK) {
                const int64_t nk = kend - j0 < BK ? kend - j0 : BK;
                const float *k_blk = k_b + j0 * g->ldk, *v_blk = v_b + j0 * g->ldv;
                /* P (nq,nk) = exp(scale Q K^T - lse), masked entries 0 */
                peft__sgemm(a->ctx, false, true, nq, nk, D, g->scale, q_blk, g->ldq, k_blk, g->ldk, 0.0f, p_tile,
                            BK);
                for (int64_t r = 0; r < nq; r++) {
                    float *p_r = p_tile + r * BK;
                    int64_t valid = row_valid(g, i0 + r, j0, nk);
                    if (valid < 0) valid = 0;
                    peft__row_exp_shift(p_r, valid, lse_blk[r]);
                    for (int64_t c = valid; c < nk; c++) p_r[c] = 0.0f;
                }
                if (dv_b) /* dV (nk,D) += P^T dO */
                    peft__sgemm(a->ctx, true, false, nk, D, nq, 1.0f, p_tile, BK, do_blk, C, 1.0f, dv_b + j0 * Ckv,
                                Ckv);
                if (!a->dq && !dk_b) continue;
                /* dP (nq,nk) = dO V^T; dS = P * (dP - Di) in place */
                peft__sgemm(a->ctx, false, true, nq, nk, D, 1.0f, do_blk, C, v_blk, g->ldv, 0.0f, dp_tile, BK);
                for (int64_t r = 0; r < nq; r++) {
                    const float *p_r = p_tile + r * BK;
                    float *ds_r = dp_tile + r * BK;
                    const float di_r = di[r];
                    int64_t c = 0;
                    for (; c + PEFT__VEC <= nk; c += PEFT__VEC)
                        PEFT__IVDEP /* p and dp are separate tiles */
                        for (int64_t j = 0; j < PEFT__VEC; j++) ds_r[c + j] = p_r[c + j] * (ds_r[c + j] - di_r);
                    for (; c < nk; c++) ds_r[c] = p_r[c] * (ds_r[c] - di_r);
                }
                if (a->dq) /* dQ (nq,D) += scale dS K */
                    peft__sgemm(a->ctx, false, false, nq, D, nk, g->scale, dp_tile, BK, k_blk, g->ldk, 1.0f,
                                a->dq + row0, C);
                if (dk_b) /* dK (nk,D) += scale dS^T Q */
                    peft__sgemm(a->ctx, true, false, nk, D, nq, g->scale, dp_tile, BK, q_blk, g->ldq, 1.0f,
                                dk_b + j0 * Ckv, Ckv);
            }
        }
    }
}

static void bwd_range(void *p, size_t begin, size_t end)
{
    const bwd_arg *a = p;
    for (size_t slot = begin; slot < end; slot++) {
        size_t t0 = a->n_tasks * slot / a->n_slots, t1 = a->n_tasks * (slot + 1) / a->n_slots;
        for (size_t t = t0; t < t1; t++)
            bwd_task(a, t, a->p_tile + slot * BQ * BK, a->dp_tile + slot * BQ * BK, a->di_tile + slot * BQ);
    }
}

static peft_status attention_backward(peft_ctx *ctx, peft__node *node)
{
    static const char op[] = "peft_attention backward";
    const attn_saved *s = node->saved;
    const attn_geom *g = &s->g;
    peft_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
    const bool need_q = peft__needs_grad(q), need_k = peft__needs_grad(k), need_v = peft__needs_grad(v);
    const bool rope = s->rope != PEFT_ROPE_NONE;
    const int64_t C = (int64_t)g->H * g->D, Ckv = (int64_t)g->Hkv * g->D;
    float *gq = NULL, *gk = NULL, *gv = NULL;
    /* new gradient buffers are zeroed by the tasks, or written whole by the
     * inverse rotation; only when q, k, v are distinct tensors (else the
     * buffers are shared and simply accumulated) */
    const bool distinct = q != k && q != v && k != v;
    bool fresh_q = false, fresh_k = false, fresh_v = false;
    peft_status st;
    if (need_q && (st = peft__grad_buffer_fresh(ctx, q, &gq, &fresh_q)) != PEFT_OK) return st;
    if (need_k && (st = peft__grad_buffer_fresh(ctx, k, &gk, &fresh_k)) != PEFT_OK) return st;
    if (need_v && (st = peft__grad_buffer_fresh(ctx, v, &gv, &fresh_v)) != PEFT_OK) return st;
    if (!distinct) {
        if (fresh_q) memset(gq, 0, (size_t)(g->B * g->T * C) * sizeof(float));
        if (fresh_k) memset(gk, 0, (size_t)(g->B * g->S * Ckv) * sizeof(float));
        if (fresh_v) memset(gv, 0, (size_t)(g->B * g->S * Ckv) * sizeof(float));
        fresh_q = fresh_k = fresh_v = false;
    }
    size_t mark = peft_arena_mark(ctx->arena);
    bwd_arg a = {.ctx = ctx, .g = *g, .out = node->out->data, .dout = node->out->grad, .lse = s->lse,
                 .dq = gq, .dk = gk, .dv = gv, .zero_dq = fresh_q, .zero_dk = fresh_k, .zero_dv = fresh_v};
    /* with RoPE, dQ and dK are first taken in the rotated space (scratch the
     * tasks zero), then rotated back into (fresh: written over) gq and gk */
    if (rope && need_q) {
        if (!(a.dq = peft__scratch(ctx, (size_t)(g->B * g->T * C) * sizeof(float), op))) return PEFT_ERR_NOMEM;
        a.zero_dq = true;
    }
    if (rope && need_k) {
        if (!(a.dk = peft__scratch(ctx, (size_t)(g->B * g->S * Ckv) * sizeof(float), op))) return PEFT_ERR_NOMEM;
        a.zero_dk = true;
    }
    a.n_tasks = (size_t)(g->B * g->Hkv);
    a.n_slots = slot_count(ctx, a.n_tasks);
    a.p_tile = peft__scratch(ctx, a.n_slots * BQ * BK * sizeof(float), op);
    a.dp_tile = peft__scratch(ctx, a.n_slots * BQ * BK * sizeof(float), op);
    a.di_tile = peft__scratch(ctx, a.n_slots * BQ * sizeof(float), op);
    if (!a.p_tile || !a.dp_tile || !a.di_tile) return PEFT_ERR_NOMEM;
    peft__parallel_for(ctx, a.n_slots, 1, bwd_range, &a);
    if (rope && need_q) /* q was rotated at positions S-T+t */
        peft__rope_rows(ctx, s->rope, g->H, g->D, s->n_rot, s->cs + (g->S - g->T) * s->n_rot, gq, C, a.dq, C,
                        g->B, g->T, PEFT__ROPE_INVERSE | (fresh_q ? 0u : PEFT__ROPE_ACCUM));
    if (rope && need_k)
        peft__rope_rows(ctx, s->rope, g->Hkv, g->D, s->n_rot, s->cs, gk, Ckv, a.dk, Ckv, g->B, g->S,
                        PEFT__ROPE_INVERSE | (fresh_k ? 0u : PEFT__ROPE_ACCUM));
    peft_arena_rewind(ctx->arena, mark);
    return PEFT_OK;
}

/* ---- the op ---- */

static peft_status check_opts(peft_ctx *ctx, const char *op, const peft_attention_opts *opts,
                              peft_attention_opts *o)
{
    *o = peft_attention_opts_default();
    if (!opts) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts is NULL (use peft_attention_opts_default)", op);
    /* a caller built against an older header passes a shorter struct */
    if (opts->struct_size < offsetof(peft_attention_opts, n_head) + sizeof(int) || opts->struct_size > sizeof *o)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                          "%s: opts.struct_size is %zu (expected %zu; start from peft_attention_opts_default)", op,
                          opts->struct_size, sizeof *o);
    memcpy(o, opts, opts->struct_size);
    if (!isfinite(o->scale) || o->scale < 0.0f)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: scale %g (expected > 0, or 0 for 1/sqrt(D))", op,
                          (double)o->scale);
    return PEFT_OK;
}

peft_status peft_attention(peft_ctx *ctx, peft_tensor *q, peft_tensor *k, peft_tensor *v,
                           const peft_attention_opts *opts, peft_tensor **out)
{
    static const char op[] = "peft_attention";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    peft_attention_opts o;
    if ((st = check_opts(ctx, op, opts, &o)) != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "q", q)) != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "k", k)) != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "v", v)) != PEFT_OK) return st;
    char sq[64], sk[64], sv[64];
    peft__shape_str(q, sq, sizeof sq);
    peft__shape_str(k, sk, sizeof sk);
    peft__shape_str(v, sv, sizeof sv);
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: q %s, k %s, v %s must be [B, T, H*D], [B, S, Hkv*D] x2", op, sq,
                          sk, sv);
    if ((st = peft__check_rows(ctx, op, "q", q)) != PEFT_OK) return st;
    if ((st = peft__check_rows(ctx, op, "k", k)) != PEFT_OK) return st;
    if ((st = peft__check_rows(ctx, op, "v", v)) != PEFT_OK) return st;
    const int64_t B = q->shape[0], T = q->shape[1], C = q->shape[2], S = k->shape[1], Ckv = k->shape[2];
    const int H = o.n_head, Hkv = o.n_kv_head == 0 ? o.n_head : o.n_kv_head;
    if (H <= 0 || C % H != 0)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: n_head %d does not divide the last dim of q %s", op, H, sq);
    if (Hkv <= 0 || H % Hkv != 0)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: n_kv_head %d does not divide n_head %d", op, Hkv, H);
    const int64_t D = C / H;
    if (D > INT32_MAX / 2)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: head size %lld of q %s is too large", op, (long long)D, sq);
    if (k->shape[0] != B || Ckv != Hkv * D)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: k %s does not match q %s (expected [%lld, S, %lld] for %d kv heads of %lld)",
                          op, sk, sq, (long long)B, (long long)(Hkv * D), Hkv, (long long)D);
    if (v->shape[0] != k->shape[0] || v->shape[1] != k->shape[1] || v->shape[2] != k->shape[2])
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: v %s does not match k %s", op, sv, sk);
    if (S < T)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: k %s has S=%lld keys, fewer than the T=%lld queries of q %s", op,
                          sk, (long long)S, (long long)T, sq);
    int n_rot = 0;
    const bool rope = o.rope != PEFT_ROPE_NONE;
    if (rope && (st = peft__rope_check(ctx, op, o.rope, (int)D, o.rope_dims, o.rope_theta, &n_rot)) != PEFT_OK) {
        char msg[PEFT__ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "%s", peft_ctx_errmsg(ctx));
        return peft__fail(ctx, st, "%s (q %s, %d heads)", msg, sq, H);
    }

    peft_tensor *y;
    if ((st = peft__new_output(ctx, op, 3, q->shape, &y)) != PEFT_OK) return st;
    peft_tensor *in[3] = {q, k, v};
    const bool record = peft__should_record(ctx, in, 3);
    attn_geom g = {.B = B, .T = T, .S = S, .H = H, .Hkv = Hkv, .D = (int)D, .causal = o.causal != 0,
                   .scale = o.scale > 0.0f ? o.scale : (float)(1.0 / sqrt((double)D)),
                   .q = q->data, .k = k->data, .v = v->data,
                   .ldq = peft__row_stride(q), .ldk = peft__row_stride(k), .ldv = peft__row_stride(v)};
    /* what backward keeps comes first; everything after `mark` is released on return */
    attn_saved *saved = NULL;
    float *lse = NULL, *cs = NULL;
    if (record) {
        if (!(saved = peft__scratch(ctx, sizeof *saved, op))) return PEFT_ERR_NOMEM;
        if (!(lse = peft__scratch(ctx, (size_t)(B * H * T) * sizeof(float), op))) return PEFT_ERR_NOMEM;
    }
    size_t mark = peft_arena_mark(ctx->arena);
    if (rope) { /* rotated copies: q at positions S-T+t, k at 0..S-1 */
        float *qr, *kr;
        if (!(cs = peft__rope_table(ctx, 0, S, n_rot, o.rope_theta, op))) return PEFT_ERR_NOMEM;
        if (!(qr = peft__scratch(ctx, (size_t)(B * T * C) * sizeof(float), op))) return PEFT_ERR_NOMEM;
        if (!(kr = peft__scratch(ctx, (size_t)(B * S * Ckv) * sizeof(float), op))) return PEFT_ERR_NOMEM;
        peft__rope_rows(ctx, o.rope, H, (int)D, n_rot, cs + (S - T) * n_rot, qr, C, g.q, g.ldq, B, T, 0);
        peft__rope_rows(ctx, o.rope, Hkv, (int)D, n_rot, cs, kr, Ckv, g.k, g.ldk, B, S, 0);
        g.q = qr;
        g.k = kr;
        g.ldq = C;
        g.ldk = Ckv;
        if (record) mark = peft_arena_mark(ctx->arena);
    }
    fwd_arg a = {.ctx = ctx, .g = g, .out = y->data, .lse = lse};
    a.n_tasks = (size_t)(B * H * ((T + BQ - 1) / BQ));
    a.n_slots = slot_count(ctx, a.n_tasks);
    a.s_tile = peft__scratch(ctx, a.n_slots * BQ * BK * sizeof(float), op);
    a.acc_tile = peft__scratch(ctx, a.n_slots * BQ * (size_t)D * sizeof(float), op);
    a.m_tile = peft__scratch(ctx, a.n_slots * BQ * sizeof(float), op);
    a.l_tile = peft__scratch(ctx, a.n_slots * BQ * sizeof(double), op);
    if (!a.s_tile || !a.acc_tile || !a.m_tile || !a.l_tile) return PEFT_ERR_NOMEM;
    peft__parallel_for(ctx, a.n_slots, 1, fwd_range, &a);
    peft_arena_rewind(ctx->arena, mark);
    if (record) {
        *saved = (attn_saved){.g = g, .lse = lse, .rope = rope ? o.rope : PEFT_ROPE_NONE, .n_rot = n_rot, .cs = cs};
        if ((st = peft__record(ctx, op, attention_backward, y, in, 3, saved)) != PEFT_OK) return st;
    }
    *out = y;
    return PEFT_OK;
}
