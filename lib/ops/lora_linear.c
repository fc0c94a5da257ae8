/* Fused LoRA projection: y = x W^T + b + s * (xl A^T) B^T, with xl = x or a
 * dropped-out copy of it.
 *
 * Three sgemms forward (the base one, then the thin [N, r] and the update
 * accumulated straight into y) and one [N, out] output instead of the four
 * an op-by-op composition keeps. Backward never forms B·A and skips the
 * weight gradient of the frozen W:
 *   g = dy B                  [N, r]
 *   dB += s dyᵀ u,  dA += s gᵀ xl
 *   dxl += s g A,   dx += dy W,   db += Σ dy */
#include <string.h>

#include "../internal.h"

typedef struct lora_saved {
    float *u; /* [N, r] = xl A^T */
    float scale;
    int64_t N, in, out, r;
} lora_saved;

static peft_status lora_backward(peft_ctx *ctx, peft__node *node)
{
    const lora_saved *s = node->saved;
    peft_tensor *x = node->in[0], *w = node->in[1], *bias = node->in[2], *A = node->in[3], *B = node->in[4];
    peft_tensor *xl = node->in[5] ? node->in[5] : x;
    const float *dy = node->out->grad;
    const int64_t N = s->N, in = s->in, out = s->out, r = s->r;
    peft_status st;
    const bool need_xl = peft__needs_grad(xl), need_A = peft__needs_grad(A);
    if (need_xl || need_A) {
        /* g = dy B: [N, out] x [out, r] */
        float *dxl = NULL, *dA = NULL;
        /* gradient buffers first: the scratch g is rewound after */
        if (need_xl && (st = peft__grad_buffer(ctx, xl, &dxl)) != PEFT_OK) return st;
        if (need_A && (st = peft__grad_buffer(ctx, A, &dA)) != PEFT_OK) return st;
        size_t mark = peft_arena_mark(ctx->arena);
        float *g = peft__scratch(ctx, (size_t)(N * r) * sizeof(float), "peft_lora_linear backward");
        if (!g) return PEFT_ERR_NOMEM;
        peft__sgemm(ctx, false, false, N, r, out, 1.0f, dy, out, B->data, r, 0.0f, g, r);
        if (dA) /* dA[r, in] += s gᵀ xl */
            peft__sgemm(ctx, true, false, r, in, N, s->scale, g, r, xl->data, peft__row_stride(xl), 1.0f, dA, in);
        if (dxl) /* dxl[N, in] += s g A */
            peft__sgemm(ctx, false, false, N, in, r, s->scale, g, r, A->data, in, 1.0f, dxl, in);
        peft_arena_rewind(ctx->arena, mark);
    }
    if (peft__needs_grad(B)) { /* dB[out, r] += s dyᵀ u */
        float *dB;
        if ((st = peft__grad_buffer(ctx, B, &dB)) != PEFT_OK) return st;
        peft__sgemm(ctx, true, false, out, r, N, s->scale, dy, out, s->u, r, 1.0f, dB, r);
    }
    if (peft__needs_grad(w)) { /* only when the base also trains */
        float *dw;
        if ((st = peft__grad_buffer(ctx, w, &dw)) != PEFT_OK) return st;
        peft__sgemm(ctx, true, false, out, in, N, 1.0f, dy, out, x->data, peft__row_stride(x), 1.0f, dw, in);
    }
    if (peft__needs_grad(bias)) {
        float *db;
        if ((st = peft__grad_buffer(ctx, bias, &db)) != PEFT_OK) return st;
        peft__bias_grad(ctx, dy, N, out, db);
    }
    if (peft__needs_grad(x)) { /* fresh only if x is not x_lora (whose dx was taken above) */
        float *dx;
        bool fresh;
        if ((st = peft__grad_buffer_fresh(ctx, x, &dx, &fresh)) != PEFT_OK) return st;
        if ((st = peft__linear_rows_dx_grad(ctx, dy, w, N, dx, fresh)) != PEFT_OK) return st;
    }
    return PEFT_OK;
}

peft_status peft_lora_linear(peft_ctx *ctx, peft_tensor *x, peft_tensor *x_lora, peft_tensor *w, peft_tensor *bias,
                             peft_tensor *lora_a, peft_tensor *lora_b, float scale, peft_tensor **out)
{
    static const char op[] = "peft_lora_linear";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if ((st = peft__check_input(ctx, op, "w", w)) != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "lora_a", lora_a)) != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "lora_b", lora_b)) != PEFT_OK) return st;
    if (x_lora && (st = peft__check_f32(ctx, op, "x_lora", x_lora)) != PEFT_OK) return st;
    char sx[64], sw[64], sa[64], sb[64];
    const int64_t in = peft__cols(x);
    if (w->ndim != 2 || w->shape[1] != in || lora_a->ndim != 2 || lora_a->shape[1] != in || lora_b->ndim != 2 ||
        lora_b->shape[0] != w->shape[0] || lora_b->shape[1] != lora_a->shape[0])
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: x %s, W %s, A %s, B %s do not fit (W [out, in], A [r, in], B [out, r])", op,
                          peft__shape_str(x, sx, sizeof sx), peft__shape_str(w, sw, sizeof sw),
                          peft__shape_str(lora_a, sa, sizeof sa), peft__shape_str(lora_b, sb, sizeof sb));
    if (x_lora && (x_lora->ndim != x->ndim || peft_tensor_numel(x_lora) != peft_tensor_numel(x) || peft__cols(x_lora) != in))
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: x_lora %s differs from x %s", op, peft__shape_str(x_lora, sa, sizeof sa),
                          peft__shape_str(x, sx, sizeof sx));
    if (bias) {
        if ((st = peft__check_f32(ctx, op, "bias", bias)) != PEFT_OK) return st;
        if (bias->ndim != 1 || bias->shape[0] != w->shape[0])
            return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: bias %s does not match W %s", op, peft__shape_str(bias, sb, sizeof sb),
                              peft__shape_str(w, sw, sizeof sw));
    }
    if (peft__needs_grad(w) && w->dtype != PEFT_DTYPE_F32)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: a %s weight cannot train", op, peft_dtype_name(w->dtype));
    if ((st = peft__check_rows(ctx, op, "x", x)) != PEFT_OK) return st;
    if (x_lora && (st = peft__check_rows(ctx, op, "x_lora", x_lora)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "w", w)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "lora_a", lora_a)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "lora_b", lora_b)) != PEFT_OK) return st;
    const int64_t N = peft__rows(x), o = w->shape[0], r = lora_a->shape[0];
    peft_tensor *xl = x_lora ? x_lora : x;
    int64_t shape[PEFT_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = o;
    peft_tensor *y;
    if ((st = peft__new_output(ctx, op, x->ndim, shape, &y)) != PEFT_OK) return st;
    float *u = peft__scratch(ctx, (size_t)(N * r) * sizeof(float), op);
    if (!u) return PEFT_ERR_NOMEM;
    if ((st = peft__linear_rows(ctx, x->data, peft__row_stride(x), w, N, y->data, 0.0f)) != PEFT_OK) return st;
    if (bias) peft__bias_add_rows(ctx, y->data, bias->data, N, o);
    peft__sgemm(ctx, false, true, N, r, in, 1.0f, xl->data, peft__row_stride(xl), lora_a->data, in, 0.0f, u, r);
    peft__sgemm(ctx, false, true, N, o, r, scale, u, r, lora_b->data, r, 1.0f, y->data, o);
    peft_tensor *inputs[6] = {x, w, bias, lora_a, lora_b, x_lora};
    if (peft__should_record(ctx, inputs, 6)) {
        lora_saved *s = peft__scratch(ctx, sizeof *s, op);
        if (!s) return PEFT_ERR_NOMEM;
        *s = (lora_saved){u, scale, N, in, o, r};
        if ((st = peft__record(ctx, op, lora_backward, y, inputs, 6, s)) != PEFT_OK) return st;
    }
    *out = y;
    return PEFT_OK;
}
