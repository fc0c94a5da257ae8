/* peft_attention: forward and backward against an explicit double reference
 * (masked scores, softmax, rotations written out), GQA, KV-cache shapes,
 * both RoPE conventions and their HF/GGUF equivalence, strided views of a
 * fused qkv projection, finite-difference gradients, thread independence,
 * a long context without a T x T buffer, and errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

typedef struct acase {
    int64_t B, T, S;
    int H, Hkv, D;
    int causal;
    peft_rope_mode rope;
    int rope_dims; /* 0 = D */
    float scale;   /* 0 = 1/sqrt(D) */
} acase;

static peft_attention_opts case_opts(const acase *c)
{
    peft_attention_opts o = peft_attention_opts_default();
    o.n_head = c->H;
    o.n_kv_head = c->Hkv;
    o.causal = c->causal;
    o.scale = c->scale;
    o.rope = c->rope;
    o.rope_dims = c->rope_dims;
    return o;
}

/* Turn one head vector (D doubles) by the angle of position pos. */
static void ref_rotate(double *x, int D, int n_rot, peft_rope_mode mode, double pos, double theta, int inverse)
{
    for (int i = 0; i < n_rot / 2; i++) {
        int a = mode == PEFT_ROPE_INTERLEAVED ? 2 * i : i;
        int b = mode == PEFT_ROPE_INTERLEAVED ? 2 * i + 1 : i + n_rot / 2;
        double ang = pos * pow(theta, -2.0 * i / n_rot) * (inverse ? -1 : 1);
        double x0 = x[a], x1 = x[b];
        x[a] = x0 * cos(ang) - x1 * sin(ang);
        x[b] = x0 * sin(ang) + x1 * cos(ang);
    }
}

/* The whole op in double, one (b, h) at a time with the full score matrix.
 * q, k, v rows are ldq/ldk/ldv floats apart; out, dq (B,T,H*D) and dk, dv
 * (B,S,Hkv*D) are contiguous. dout may be NULL (forward only). */
static void ref_attention(const acase *c, const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
                          int64_t ldv, const float *dout, double *out, double *dq, double *dk, double *dv)
{
    const int64_t T = c->T, S = c->S, D = c->D, C = (int64_t)c->H * D, Ckv = (int64_t)c->Hkv * D;
    const int n_rot = c->rope_dims ? c->rope_dims : c->D;
    const double scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)D);
    double *Q = malloc((size_t)(T * D) * sizeof *Q), *K = malloc((size_t)(S * D) * sizeof *K);
    double *P = malloc((size_t)(T * S) * sizeof *P), *dK = malloc((size_t)(S * D) * sizeof *dK);
    double *dQ = malloc((size_t)D * sizeof *dQ);
    if (dout) {
        memset(dq, 0, (size_t)(c->B * T * C) * sizeof *dq);
        memset(dk, 0, (size_t)(c->B * S * Ckv) * sizeof *dk);
        memset(dv, 0, (size_t)(c->B * S * Ckv) * sizeof *dv);
    }
    for (int64_t b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++) {
            const int g = h / (c->H / c->Hkv);
            for (int64_t t = 0; t < T; t++) {
                for (int64_t d = 0; d < D; d++) Q[t * D + d] = q[(b * T + t) * ldq + h * D + d];
                if (c->rope) ref_rotate(Q + t * D, c->D, n_rot, c->rope, (double)(S - T + t), 10000.0, 0);
            }
            for (int64_t j = 0; j < S; j++) {
                for (int64_t d = 0; d < D; d++) K[j * D + d] = k[(b * S + j) * ldk + g * D + d];
                if (c->rope) ref_rotate(K + j * D, c->D, n_rot, c->rope, (double)j, 10000.0, 0);
            }
            for (int64_t t = 0; t < T; t++) {
                /* explicit masked softmax */
                const int64_t last = c->causal ? S - T + t : S - 1;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= last; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++) s += Q[t * D + d] * K[j * D + d];
                    P[t * S + j] = s * scale;
                    mx = fmax(mx, P[t * S + j]);
                }
                for (int64_t j = 0; j < S; j++) {
                    P[t * S + j] = j <= last ? exp(P[t * S + j] - mx) : 0.0;
                    sum += P[t * S + j];
                }
                for (int64_t j = 0; j < S; j++) P[t * S + j] /= sum;
                for (int64_t d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < S; j++) o += P[t * S + j] * v[(b * S + j) * ldv + g * D + d];
                    out[(b * T + t) * C + h * D + d] = o;
                }
            }
            if (!dout) continue;
            memset(dK, 0, (size_t)(S * D) * sizeof *dK);
            for (int64_t t = 0; t < T; t++) {
                const float *do_t = dout + (b * T + t) * C + h * D;
                /* dP_j = dO . V_j;  dS_j = P_j (dP_j - sum_i P_i dP_i) */
                double dot = 0;
                for (int64_t j = 0; j < S; j++) {
                    double dp = 0;
                    for (int64_t d = 0; d < D; d++) dp += do_t[d] * (double)v[(b * S + j) * ldv + g * D + d];
                    dot += P[t * S + j] * dp;
                }
                memset(dQ, 0, (size_t)D * sizeof *dQ);
                for (int64_t j = 0; j < S; j++) {
                    double dp = 0;
                    for (int64_t d = 0; d < D; d++) dp += do_t[d] * (double)v[(b * S + j) * ldv + g * D + d];
                    double ds = P[t * S + j] * (dp - dot) * scale;
                    for (int64_t d = 0; d < D; d++) {
                        dv[(b * S + j) * Ckv + g * D + d] += P[t * S + j] * do_t[d];
                        dQ[d] += ds * K[j * D + d];
                        dK[j * D + d] += ds * Q[t * D + d];
                    }
                }
                if (c->rope) ref_rotate(dQ, c->D, n_rot, c->rope, (double)(S - T + t), 10000.0, 1);
                for (int64_t d = 0; d < D; d++) dq[(b * T + t) * C + h * D + d] += dQ[d];
            }
            for (int64_t j = 0; j < S; j++) {
                if (c->rope) ref_rotate(dK + j * D, c->D, n_rot, c->rope, (double)j, 10000.0, 1);
                for (int64_t d = 0; d < D; d++) dk[(b * S + j) * Ckv + g * D + d] += dK[j * D + d];
            }
        }
    free(Q), free(K), free(P), free(dK), free(dQ);
}

/* max |got - want| / max |want| over rows x cols values; got has row stride ld.
 * The floor of 1e-2 keeps gradients that are exactly 0 in theory (one key
 * per query) from turning rounding noise into a large relative error. */
static double err_vs(const float *got, int64_t ld, const double *want, int64_t rows, int64_t cols)
{
    double md = 0, mb = 1e-2;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
            md = fmax(md, fabs(got[r * ld + j] - want[r * cols + j]));
            mb = fmax(mb, fabs(want[r * cols + j]));
        }
    return md / mb;
}

typedef struct attn_arg {
    peft_attention_opts o;
    int64_t C, Ckv; /* fused: in[0] is [B, T, C + 2 Ckv] */
    int fused;
} attn_arg;

static peft_status fwd_attention(peft_ctx *ctx, peft_tensor **in, void *p, peft_tensor **out)
{
    const attn_arg *a = p;
    if (!a->fused) return peft_attention(ctx, in[0], in[1], in[2], &a->o, out);
    peft_tensor *q, *k, *v;
    peft_status st;
    if ((st = peft_slice(ctx, in[0], 2, 0, a->C, &q)) != PEFT_OK) return st;
    if ((st = peft_slice(ctx, in[0], 2, a->C, a->Ckv, &k)) != PEFT_OK) return st;
    if ((st = peft_slice(ctx, in[0], 2, a->C + a->Ckv, a->Ckv, &v)) != PEFT_OK) return st;
    return peft_attention(ctx, q, k, v, &a->o, out);
}

static float *rand_floats(size_t n, uint64_t seed)
{
    float *r = malloc(n * sizeof *r);
    for (size_t i = 0; i < n; i++) r[i] = (float)((double)(peft__splitmix64(&seed) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    return r;
}

/* Forward and backward (with a random dout) against the reference; with
 * fused, q/k/v are slices of one [B, T, C + 2 Ckv] tensor (so S = T). */
static void check_case(peft_ctx *ctx, const acase *c, int fused, double tol)
{
    const int64_t C = (int64_t)c->H * c->D, Ckv = (int64_t)c->Hkv * c->D, W = C + 2 * Ckv;
    const int64_t nq = c->B * c->T * C, nk = c->B * c->S * Ckv;
    peft_attention_opts o = case_opts(c);
    peft_tensor *q, *k, *v, *qkv = NULL, *y;
    if (fused) {
        ck_assert_int_eq(c->S, c->T);
        int64_t s[3] = {c->B, c->T, W};
        qkv = tu_randn(ctx, 3, s, 1.0f, 1);
        TU_OK(ctx, peft_slice(ctx, qkv, 2, 0, C, &q));
        TU_OK(ctx, peft_slice(ctx, qkv, 2, C, Ckv, &k));
        TU_OK(ctx, peft_slice(ctx, qkv, 2, C + Ckv, Ckv, &v));
    } else {
        int64_t sq[3] = {c->B, c->T, C}, sk[3] = {c->B, c->S, Ckv};
        q = tu_randn(ctx, 3, sq, 1.0f, 1);
        k = tu_randn(ctx, 3, sk, 1.0f, 1);
        v = tu_randn(ctx, 3, sk, 1.0f, 1);
    }
    const int64_t ldq = peft_tensor_stride(q, 1), ldk = peft_tensor_stride(k, 1), ldv = peft_tensor_stride(v, 1);
    TU_OK(ctx, peft_attention(ctx, q, k, v, &o, &y));
    ck_assert_int_eq(peft_tensor_ndim(y), 3);
    ck_assert_int_eq(peft_tensor_dim(y, 2), C);
    float *dout = rand_floats((size_t)nq, 99);
    double *out = malloc((size_t)nq * sizeof *out), *dq = malloc((size_t)nq * sizeof *dq);
    double *dk = malloc((size_t)nk * sizeof *dk), *dv = malloc((size_t)nk * sizeof *dv);
    ref_attention(c, peft_tensor_data(q), ldq, peft_tensor_data(k), ldk, peft_tensor_data(v), ldv, dout, out, dq, dk,
                  dv);
    double e = err_vs(peft_tensor_data(y), C, out, c->B * c->T, C);
    ck_assert_msg(e < tol, "B%lld T%lld S%lld H%d/%d D%d causal %d rope %d fused %d: out error %g", (long long)c->B,
                  (long long)c->T, (long long)c->S, c->H, c->Hkv, c->D, c->causal, c->rope, fused, e);
    TU_OK(ctx, peft__backward_seeded(ctx, y, dout));
    double eq, ek, ev;
    if (fused) {
        const float *g = peft_tensor_grad(qkv);
        eq = err_vs(g, W, dq, c->B * c->T, C);
        ek = err_vs(g + C, W, dk, c->B * c->T, Ckv);
        ev = err_vs(g + C + Ckv, W, dv, c->B * c->T, Ckv);
    } else {
        eq = err_vs(peft_tensor_grad(q), C, dq, c->B * c->T, C);
        ek = err_vs(peft_tensor_grad(k), Ckv, dk, c->B * c->S, Ckv);
        ev = err_vs(peft_tensor_grad(v), Ckv, dv, c->B * c->S, Ckv);
    }
    ck_assert_msg(eq < tol && ek < tol && ev < tol,
                  "B%lld T%lld S%lld H%d/%d D%d causal %d rope %d fused %d: grad errors q %g k %g v %g",
                  (long long)c->B, (long long)c->T, (long long)c->S, c->H, c->Hkv, c->D, c->causal, c->rope, fused,
                  eq, ek, ev);
    free(dout), free(out), free(dq), free(dk), free(dv);
    if (fused) peft_tensor_destroy(qkv);
    else peft_tensor_destroy(q), peft_tensor_destroy(k), peft_tensor_destroy(v);
}

static const acase cases[] = {
    /* B  T    S    H  Hkv D  causal rope                 dims scale */
    {1, 1, 1, 1, 1, 4, 1, PEFT_ROPE_NONE, 0, 0},
    {2, 7, 7, 4, 2, 6, 1, PEFT_ROPE_NONE, 0, 0},            /* GQA 2 */
    {2, 7, 7, 4, 1, 6, 1, PEFT_ROPE_HALF, 0, 0},            /* GQA to one kv head */
    {2, 5, 9, 4, 2, 8, 1, PEFT_ROPE_INTERLEAVED, 0, 0},     /* KV cache: S > T */
    {1, 7, 7, 2, 2, 6, 0, PEFT_ROPE_NONE, 0, 0},            /* not causal */
    {1, 3, 11, 2, 1, 6, 0, PEFT_ROPE_HALF, 0, 0},           /* not causal, S > T */
    {1, 1, 9, 4, 2, 4, 1, PEFT_ROPE_INTERLEAVED, 0, 0},     /* one decode step */
    {1, 70, 130, 2, 1, 8, 1, PEFT_ROPE_HALF, 4, 0},         /* several tiles, partial rotation */
    {2, 130, 130, 3, 3, 4, 1, PEFT_ROPE_NONE, 0, 0},        /* tile edges */
    {1, 65, 65, 1, 1, 6, 0, PEFT_ROPE_INTERLEAVED, 0, 0.3f}, /* explicit scale */
    {1, 64, 200, 2, 2, 16, 1, PEFT_ROPE_INTERLEAVED, 0, 0}, /* whole tiles, S > T */
};

START_TEST(numerics_attention_reference)
{
    peft_ctx *ctx = tu_ctx(2, 21);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(ctx, &cases[i], 0, 1e-5);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_attention_fused_qkv_view)
{
    peft_ctx *ctx = tu_ctx(2, 22);
    const acase fused[] = {
        {2, 5, 5, 4, 2, 4, 1, PEFT_ROPE_HALF, 0, 0},
        {1, 9, 9, 2, 2, 6, 1, PEFT_ROPE_NONE, 0, 0},
        {1, 80, 80, 4, 1, 8, 1, PEFT_ROPE_INTERLEAVED, 0, 0},
        {1, 6, 6, 3, 3, 4, 0, PEFT_ROPE_NONE, 0, 0},
    };
    for (size_t i = 0; i < sizeof fused / sizeof *fused; i++) check_case(ctx, &fused[i], 1, 1e-5);
    peft_ctx_destroy(ctx);
}
END_TEST

/* q, k and v one op output (self-attention on x itself): the backward shares
 * one gradient buffer for the three and must sum dq + dk + dv into it. */
START_TEST(numerics_attention_shared_qkv_tensor)
{
    peft_ctx *ctx = tu_ctx(2, 25);
    const acase cs[] = {
        {2, 7, 7, 2, 2, 6, 1, PEFT_ROPE_NONE, 0, 0},
        {1, 20, 20, 3, 3, 4, 1, PEFT_ROPE_HALF, 0, 0},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        const acase *c = &cs[i];
        const int64_t C = (int64_t)c->H * c->D, n = c->B * c->T * C;
        int64_t sh[3] = {c->B, c->T, C};
        peft_tensor *x = tu_randn(ctx, 3, sh, 1.0f, 1), *x1, *y;
        TU_OK(ctx, peft_scale(ctx, x, 1.0f, &x1)); /* an op output: its gradient is new in backward */
        peft_attention_opts o = case_opts(c);
        TU_OK(ctx, peft_attention(ctx, x1, x1, x1, &o, &y));
        float *dout = rand_floats((size_t)n, 7);
        double *out = malloc((size_t)n * sizeof *out), *dq = malloc((size_t)n * sizeof *dq);
        double *dk = malloc((size_t)n * sizeof *dk), *dv = malloc((size_t)n * sizeof *dv);
        const float *xd = peft_tensor_data(x);
        ref_attention(c, xd, C, xd, C, xd, C, dout, out, dq, dk, dv);
        for (int64_t j = 0; j < n; j++) dq[j] += dk[j] + dv[j];
        TU_OK(ctx, peft__backward_seeded(ctx, y, dout));
        const double e = err_vs(peft_tensor_grad(x), C, dq, c->B * c->T, C);
        ck_assert_msg(e < 1e-5, "case %zu: shared q/k/v gradient error %g", i, e);
        free(dout), free(out), free(dq), free(dk), free(dv);
        peft_tensor_destroy(x);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

/* formats.md §3.5: HF-order weights with HALF equal GGUF-order weights
 * (q/k rows permuted per head: GGUF row j*D+2i+c <- HF row j*D+c*h+i)
 * with INTERLEAVED, so the attention output is the same. */
START_TEST(numerics_attention_hf_gguf_equivalence)
{
    peft_ctx *ctx = tu_ctx(2, 23);
    const int H = 4, Hkv = 2, D = 8, h2 = D / 2, E = 16;
    int64_t sx[3] = {2, 6, E}, swq[2] = {H * D, E}, swk[2] = {Hkv * D, E};
    peft_tensor *x = tu_randn(ctx, 3, sx, 1.0f, 0);
    peft_tensor *wq = tu_randn(ctx, 2, swq, 0.3f, 0), *wk = tu_randn(ctx, 2, swk, 0.3f, 0);
    peft_tensor *wv = tu_randn(ctx, 2, swk, 0.3f, 0);
    peft_tensor *wq_g = tu_randn(ctx, 2, swq, 1.0f, 0), *wk_g = tu_randn(ctx, 2, swk, 1.0f, 0);
    peft_tensor *pairs[2][2] = {{wq, wq_g}, {wk, wk_g}};
    for (int w = 0; w < 2; w++) {
        const float *hf = peft_tensor_data(pairs[w][0]);
        float *gg = peft_tensor_data(pairs[w][1]);
        int heads = w == 0 ? H : Hkv;
        for (int j = 0; j < heads; j++)
            for (int i = 0; i < h2; i++)
                for (int c = 0; c < 2; c++)
                    memcpy(gg + (size_t)(j * D + 2 * i + c) * E, hf + (size_t)(j * D + c * h2 + i) * E, E * sizeof(float));
    }
    peft_tensor *q, *k, *v, *q_g, *k_g, *y_hf, *y_gg;
    TU_OK(ctx, peft_linear(ctx, x, wq, NULL, &q));
    TU_OK(ctx, peft_linear(ctx, x, wk, NULL, &k));
    TU_OK(ctx, peft_linear(ctx, x, wv, NULL, &v));
    TU_OK(ctx, peft_linear(ctx, x, wq_g, NULL, &q_g));
    TU_OK(ctx, peft_linear(ctx, x, wk_g, NULL, &k_g));
    peft_attention_opts o = peft_attention_opts_default();
    o.n_head = H;
    o.n_kv_head = Hkv;
    o.rope = PEFT_ROPE_HALF;
    TU_OK(ctx, peft_attention(ctx, q, k, v, &o, &y_hf));
    o.rope = PEFT_ROPE_INTERLEAVED;
    TU_OK(ctx, peft_attention(ctx, q_g, k_g, v, &o, &y_gg));
    ck_assert_double_lt(tu_max_rel_err(peft_tensor_data(y_gg), peft_tensor_data(y_hf), 2 * 6 * H * D), 1e-5);
    /* and the conventions do differ on the same weights */
    TU_OK(ctx, peft_attention(ctx, q, k, v, &o, &y_gg));
    ck_assert_double_gt(tu_max_rel_err(peft_tensor_data(y_gg), peft_tensor_data(y_hf), 2 * 6 * H * D), 1e-3);
    peft_graph_release(ctx);
    peft_tensor_destroy(x), peft_tensor_destroy(wq), peft_tensor_destroy(wk), peft_tensor_destroy(wv);
    peft_tensor_destroy(wq_g), peft_tensor_destroy(wk_g);
    peft_ctx_destroy(ctx);
}
END_TEST

/* RoPE inside uses the very rotation of peft_rope: rotating first and then
 * attending without RoPE gives bit-identical results. */
START_TEST(numerics_attention_rope_matches_peft_rope)
{
    peft_ctx *ctx = tu_ctx(2, 24);
    const int64_t B = 2, T = 9, S = 13;
    const int H = 4, Hkv = 2, D = 8;
    int64_t sq[3] = {B, T, H * D}, sk[3] = {B, S, Hkv * D};
    peft_tensor *q = tu_randn(ctx, 3, sq, 1.0f, 0), *k = tu_randn(ctx, 3, sk, 1.0f, 0);
    peft_tensor *v = tu_randn(ctx, 3, sk, 1.0f, 0);
    for (int m = 1; m <= 2; m++) {
        peft_attention_opts o = peft_attention_opts_default();
        o.n_head = H;
        o.n_kv_head = Hkv;
        o.rope = (peft_rope_mode)m;
        o.rope_dims = 6;
        o.rope_theta = 5000.0f;
        peft_tensor *y1, *y2, *qr, *kr;
        TU_OK(ctx, peft_attention(ctx, q, k, v, &o, &y1));
        TU_OK(ctx, peft_rope(ctx, q, H, o.rope, o.rope_theta, o.rope_dims, S - T, &qr));
        TU_OK(ctx, peft_rope(ctx, k, Hkv, o.rope, o.rope_theta, o.rope_dims, 0, &kr));
        o.rope = PEFT_ROPE_NONE;
        TU_OK(ctx, peft_attention(ctx, qr, kr, v, &o, &y2));
        ck_assert(memcmp(peft_tensor_data(y1), peft_tensor_data(y2), (size_t)(B * T * H * D) * sizeof(float)) == 0);
        peft_graph_release(ctx);
    }
    peft_tensor_destroy(q), peft_tensor_destroy(k), peft_tensor_destroy(v);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_attention)
{
    peft_ctx *ctx = tu_ctx(2, 25);
    const acase g[] = {
        {1, 5, 5, 2, 1, 6, 1, PEFT_ROPE_HALF, 0, 0},
        {2, 3, 6, 4, 2, 4, 1, PEFT_ROPE_INTERLEAVED, 0, 0},
        {1, 4, 4, 2, 2, 6, 0, PEFT_ROPE_NONE, 0, 0},
        {1, 1, 3, 2, 1, 4, 1, PEFT_ROPE_HALF, 0, 0},
        {1, 7, 7, 3, 3, 6, 1, PEFT_ROPE_INTERLEAVED, 4, 0.5f},
        {1, 70, 70, 1, 1, 4, 1, PEFT_ROPE_NONE, 0, 0}, /* two query and two key tiles */
    };
    for (size_t i = 0; i < sizeof g / sizeof *g; i++) {
        const acase *c = &g[i];
        int64_t sq[3] = {c->B, c->T, (int64_t)c->H * c->D}, sk[3] = {c->B, c->S, (int64_t)c->Hkv * c->D};
        peft_tensor *in[3] = {tu_randn(ctx, 3, sq, 1.0f, 1), tu_randn(ctx, 3, sk, 1.0f, 1),
                              tu_randn(ctx, 3, sk, 1.0f, 1)};
        attn_arg a = {case_opts(c), 0, 0, 0};
        tu_gradcheck(ctx, "attention", fwd_attention, in, 3, &a, NULL);
        /* only v trains: q and k get nothing, v's gradient is unchanged */
        float *gv = malloc((size_t)peft_tensor_numel(in[2]) * sizeof *gv);
        memcpy(gv, peft_tensor_grad(in[2]), (size_t)peft_tensor_numel(in[2]) * sizeof *gv);
        peft_tensor_set_requires_grad(in[0], 0);
        peft_tensor_set_requires_grad(in[1], 0);
        tu_gradcheck(ctx, "attention, v only", fwd_attention, in, 3, &a, NULL);
        ck_assert_double_lt(tu_max_rel_err(peft_tensor_grad(in[2]), gv, (size_t)peft_tensor_numel(in[2])), 1e-6);
        free(gv);
        /* only q trains */
        peft_tensor_set_requires_grad(in[0], 1);
        peft_tensor_set_requires_grad(in[2], 0);
        tu_gradcheck(ctx, "attention, q only", fwd_attention, in, 3, &a, NULL);
        for (int j = 0; j < 3; j++) peft_tensor_destroy(in[j]);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(grad_attention_fused_qkv)
{
    peft_ctx *ctx = tu_ctx(2, 26);
    const acase g[] = {
        {2, 5, 5, 4, 2, 4, 1, PEFT_ROPE_HALF, 0, 0},
        {1, 6, 6, 2, 2, 6, 1, PEFT_ROPE_INTERLEAVED, 0, 0},
        {1, 4, 4, 2, 1, 4, 0, PEFT_ROPE_NONE, 0, 0},
    };
    for (size_t i = 0; i < sizeof g / sizeof *g; i++) {
        const acase *c = &g[i];
        const int64_t C = (int64_t)c->H * c->D, Ckv = (int64_t)c->Hkv * c->D;
        int64_t s[3] = {c->B, c->T, C + 2 * Ckv};
        peft_tensor *qkv = tu_randn(ctx, 3, s, 1.0f, 1);
        attn_arg a = {case_opts(c), C, Ckv, 1};
        tu_gradcheck(ctx, "attention of a fused qkv", fwd_attention, &qkv, 1, &a, NULL);
        peft_tensor_destroy(qkv);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

/* Forward and backward with 1 and 2 threads: bit-identical. */
static void run_threads(int n_threads, float *y, float *dq, float *dk, float *dv)
{
    const acase c = {2, 100, 130, 4, 2, 8, 1, PEFT_ROPE_HALF, 0, 0};
    peft_ctx *ctx = tu_ctx(n_threads, 27);
    int64_t sq[3] = {c.B, c.T, c.H * c.D}, sk[3] = {c.B, c.S, c.Hkv * c.D};
    const size_t nq = (size_t)(c.B * c.T * c.H * c.D), nk = (size_t)(c.B * c.S * c.Hkv * c.D);
    peft_tensor *q = tu_randn(ctx, 3, sq, 1.0f, 1), *k = tu_randn(ctx, 3, sk, 1.0f, 1), *v = tu_randn(ctx, 3, sk, 1.0f, 1);
    peft_attention_opts o = case_opts(&c);
    peft_tensor *out;
    TU_OK(ctx, peft_attention(ctx, q, k, v, &o, &out));
    memcpy(y, peft_tensor_data(out), nq * sizeof(float));
    float *dout = rand_floats(nq, 5);
    TU_OK(ctx, peft__backward_seeded(ctx, out, dout));
    memcpy(dq, peft_tensor_grad(q), nq * sizeof(float));
    memcpy(dk, peft_tensor_grad(k), nk * sizeof(float));
    memcpy(dv, peft_tensor_grad(v), nk * sizeof(float));
    free(dout);
    peft_tensor_destroy(q), peft_tensor_destroy(k), peft_tensor_destroy(v);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_attention_threads_identical)
{
    const size_t nq = 2 * 100 * 32, nk = 2 * 130 * 16;
    float *b[2][4];
    for (int t = 0; t < 2; t++) {
        b[t][0] = malloc(nq * 4), b[t][1] = malloc(nq * 4), b[t][2] = malloc(nk * 4), b[t][3] = malloc(nk * 4);
        run_threads(t + 1, b[t][0], b[t][1], b[t][2], b[t][3]);
    }
    ck_assert_msg(memcmp(b[0][0], b[1][0], nq * 4) == 0, "out differs");
    ck_assert_msg(memcmp(b[0][1], b[1][1], nq * 4) == 0, "dq differs");
    ck_assert_msg(memcmp(b[0][2], b[1][2], nk * 4) == 0, "dk differs");
    ck_assert_msg(memcmp(b[0][3], b[1][3], nk * 4) == 0, "dv differs");
    for (int t = 0; t < 2; t++)
        for (int j = 0; j < 4; j++) free(b[t][j]);
}
END_TEST

/* T = S = 1024: forward and backward stay far below one T x T f32 buffer. */
START_TEST(numerics_attention_long_context)
{
    peft_ctx *ctx = tu_ctx(2, 28);
    const acase c = {1, 1024, 1024, 1, 1, 16, 1, PEFT_ROPE_NONE, 0, 0};
    peft_arena *arena = peft_ctx_arena(ctx);
    ck_assert_uint_eq(peft_arena_peak(arena), 0);
    check_case(ctx, &c, 0, 1e-5);
    const size_t tt = (size_t)(c.T * c.S) * sizeof(float);
    size_t peak = peft_arena_peak(arena);
    ck_assert_msg(peak < tt / 8, "arena peak %zu bytes vs a T x T buffer of %zu", peak, tt);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_attention_errors)
{
    peft_ctx *ctx = tu_ctx(1, 29);
    int64_t s_q[3] = {1, 4, 8}, s_k[3] = {1, 4, 8}, s_k6[3] = {1, 4, 6}, s_k3[3] = {1, 3, 8}, s_b2[3] = {2, 4, 8};
    int64_t s_2d[2] = {4, 8}, s_odd[3] = {1, 4, 10};
    peft_tensor *q = tu_randn(ctx, 3, s_q, 1, 0), *k = tu_randn(ctx, 3, s_k, 1, 0), *v = tu_randn(ctx, 3, s_k, 1, 0);
    peft_tensor *k6 = tu_randn(ctx, 3, s_k6, 1, 0), *k3 = tu_randn(ctx, 3, s_k3, 1, 0), *kb = tu_randn(ctx, 3, s_b2, 1, 0);
    peft_tensor *q2 = tu_randn(ctx, 2, s_2d, 1, 0), *qo = tu_randn(ctx, 3, s_odd, 1, 0), *o = NULL;
    peft_attention_opts op = peft_attention_opts_default();
    ck_assert_int_eq(op.struct_size, sizeof op);
    ck_assert_int_eq(op.causal, 1);
    ck_assert_int_eq(op.rope, PEFT_ROPE_NONE);
    ck_assert_float_eq(op.rope_theta, 10000.0f);
    op.n_head = 2;
    ck_assert_int_eq(peft_attention(NULL, q, k, v, &op, &o), PEFT_ERR_INVALID_ARG);
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &op, NULL), PEFT_ERR_INVALID_ARG, "peft_attention: out is NULL");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, NULL, &o), PEFT_ERR_INVALID_ARG, "peft_attention: opts is NULL");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, NULL, k, v, &op, &o), PEFT_ERR_INVALID_ARG, "peft_attention: q is NULL");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, NULL, v, &op, &o), PEFT_ERR_INVALID_ARG, "peft_attention: k is NULL");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, NULL, &op, &o), PEFT_ERR_INVALID_ARG, "peft_attention: v is NULL");
    ck_assert_ptr_null(o);
    peft_attention_opts bad = op;
    bad.struct_size = 3;
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &bad, &o), PEFT_ERR_INVALID_ARG, "struct_size is 3");
    bad = op;
    bad.scale = -1.0f;
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &bad, &o), PEFT_ERR_INVALID_ARG, "scale -1");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q2, k, v, &op, &o), PEFT_ERR_SHAPE, "q [4, 8], k [1, 4, 8], v [1, 4, 8] must be");
    bad = op;
    bad.n_head = 3;
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &bad, &o), PEFT_ERR_SHAPE,
                   "peft_attention: n_head 3 does not divide the last dim of q [1, 4, 8]");
    bad.n_head = 0;
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &bad, &o), PEFT_ERR_SHAPE, "n_head 0");
    bad = op;
    bad.n_head = 4;
    bad.n_kv_head = 3;
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &bad, &o), PEFT_ERR_SHAPE, "n_kv_head 3 does not divide n_head 4");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k6, v, &op, &o), PEFT_ERR_SHAPE,
                   "k [1, 4, 6] does not match q [1, 4, 8] (expected [1, S, 8] for 2 kv heads of 4)");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, kb, v, &op, &o), PEFT_ERR_SHAPE, "k [2, 4, 8] does not match q");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, k3, &op, &o), PEFT_ERR_SHAPE, "v [1, 3, 8] does not match k [1, 4, 8]");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k3, k3, &op, &o), PEFT_ERR_SHAPE,
                   "k [1, 3, 8] has S=3 keys, fewer than the T=4 queries of q [1, 4, 8]");
    /* RoPE on an odd head size (D = 5) */
    bad = op;
    bad.rope = PEFT_ROPE_HALF;
    peft_tensor *ko;
    TU_OK(ctx, peft_reshape(ctx, qo, 3, s_odd, &ko)); /* k, v [1, 4, 10] for 2 kv heads of 5 */
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, qo, ko, ko, &bad, &o), PEFT_ERR_INVALID_ARG,
                   "peft_attention: rope dims 5 with head size 5");
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, qo, ko, ko, &bad, &o), PEFT_ERR_INVALID_ARG, "(q [1, 4, 10], 2 heads)");
    bad.rope_dims = 4;
    TU_OK(ctx, peft_attention(ctx, qo, ko, ko, &bad, &o));
    bad.rope_dims = 6;
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &bad, &o), PEFT_ERR_INVALID_ARG, "rope dims 6 with head size 4");
    bad.rope_dims = 0;
    bad.rope = (peft_rope_mode)7;
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &bad, &o), PEFT_ERR_INVALID_ARG, "rope mode 7");
    bad.rope = PEFT_ROPE_INTERLEAVED;
    bad.rope_theta = -1.0f;
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, q, k, v, &bad, &o), PEFT_ERR_INVALID_ARG, "rope theta -1");
    peft_tensor *t;
    TU_OK(ctx, peft_transpose(ctx, q, 0, 1, &t)); /* [4, 1, 8] with the batch stride of a row */
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, t, k, v, &op, &o), PEFT_ERR_INVALID_ARG, "needs contiguous rows");
    int32_t ids[32] = {0};
    peft_tensor *qi = tu_ids(ctx, 3, s_q, ids);
    TU_EXPECT_FAIL(ctx, peft_attention(ctx, qi, k, v, &op, &o), PEFT_ERR_DTYPE, "q is i32, expected f32");
    ck_assert_ptr_null(o);
    peft_graph_release(ctx);
    peft_tensor_destroy(q), peft_tensor_destroy(k), peft_tensor_destroy(v), peft_tensor_destroy(k6);
    peft_tensor_destroy(k3), peft_tensor_destroy(kb), peft_tensor_destroy(q2), peft_tensor_destroy(qo);
    peft_tensor_destroy(qi);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *attention_suite(void)
{
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_attention_reference);
    tcase_add_test(tc, numerics_attention_fused_qkv_view);
    tcase_add_test(tc, numerics_attention_shared_qkv_tensor);
    tcase_add_test(tc, numerics_attention_hf_gguf_equivalence);
    tcase_add_test(tc, numerics_attention_rope_matches_peft_rope);
    tcase_add_test(tc, numerics_attention_threads_identical);
    tcase_add_test(tc, numerics_attention_long_context);
    suite_add_tcase(s, tc);
    tc = tcase_create("grad");
    tcase_add_test(tc, grad_attention);
    tcase_add_test(tc, grad_attention_fused_qkv);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_attention_errors);
    suite_add_tcase(s, tc);
    return s;
}
