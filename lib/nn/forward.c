/* The forward pass of GPT-2 and Llama, built from ops (so the tape records it
 * and backward needs nothing model-specific), and the next-token loss. */
#include <string.h>

#include "model_internal.h"


peft_status peft__linear_forward(peft_ctx *ctx, peft__linear *lin, peft_tensor *x, peft_tensor **y)
{
    if (lin->hook) return lin->hook(ctx, x, lin->w, lin->b, lin->hook_user, y);
    return peft_linear(ctx, x, lin->w, lin->b, y);
}

/* Attention of block l. Without a cache (training) RoPE is applied inside the
 * fused op. With a cache (generation) q and k are rotated at their absolute
 * positions, k and v are appended to the cache, and the queries attend to
 * every cached position. */
static peft_status attend(peft_model *m, peft__kv *kv, int64_t l, peft_tensor *q, peft_tensor *k, peft_tensor *v,
                          peft_tensor **att)
{
    peft_ctx *ctx = m->ctx;
    const peft_model_config *c = &m->cfg;
    const bool llama = c->arch == PEFT_ARCH_LLAMA;
    peft_attention_opts ao = peft_attention_opts_default();
    ao.n_head = (int)c->n_head;
    ao.n_kv_head = (int)c->n_kv_head;
    if (!kv) {
        if (llama) {
            ao.rope = PEFT_ROPE_HALF; /* weights are kept in Hugging Face order */
            ao.rope_theta = c->rope_theta;
        }
        return peft_attention(ctx, q, k, v, &ao, att);
    }
    const int64_t T = q->shape[1], KV = k->shape[2];
    if (kv->pos + T > kv->cap)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "generation: %lld positions exceed the cache of %lld",
                          (long long)(kv->pos + T), (long long)kv->cap);
    if (llama) {
        PEFT__TRY(peft_rope(ctx, q, (int)c->n_head, PEFT_ROPE_HALF, c->rope_theta, 0, kv->pos, &q));
        PEFT__TRY(peft_rope(ctx, k, (int)c->n_kv_head, PEFT_ROPE_HALF, c->rope_theta, 0, kv->pos, &k));
    }
    peft_tensor *ck, *cv;
    float *kd = (float *)kv->k[l]->data + kv->pos * KV, *vd = (float *)kv->v[l]->data + kv->pos * KV;
    PEFT__TRY(peft_tensor_get_f32(k, kd, (size_t)(T * KV)));
    PEFT__TRY(peft_tensor_get_f32(v, vd, (size_t)(T * KV)));
    PEFT__TRY(peft_slice(ctx, kv->k[l], 1, 0, kv->pos + T, &ck));
    PEFT__TRY(peft_slice(ctx, kv->v[l], 1, 0, kv->pos + T, &cv));
    return peft_attention(ctx, q, ck, cv, &ao, att);
}

static peft_status gpt2_block(peft_model *m, peft__kv *kv, int64_t l, peft_tensor *h, peft_tensor **out)
{
    peft__block *b = &m->blocks[l];
    peft_ctx *ctx = m->ctx;
    const peft_model_config *c = &m->cfg;
    const int64_t C = c->d_model;
    peft_tensor *a, *qkv, *q, *k, *v, *att, *o, *h1, *n2, *f, *g, *d;
    PEFT__TRY(peft_layernorm(ctx, h, b->norm1_w, b->norm1_b, c->norm_eps, &a));
    PEFT__TRY(peft__linear_forward(ctx, &b->qkv, a, &qkv)); /* [B, T, 3C] */
    PEFT__TRY(peft_slice(ctx, qkv, -1, 0, C, &q));
    PEFT__TRY(peft_slice(ctx, qkv, -1, C, C, &k));
    PEFT__TRY(peft_slice(ctx, qkv, -1, 2 * C, C, &v));
    PEFT__TRY(attend(m, kv, l, q, k, v, &att));
    PEFT__TRY(peft__linear_forward(ctx, &b->o, att, &o));
    PEFT__TRY(peft_add(ctx, h, o, &h1));
    PEFT__TRY(peft_layernorm(ctx, h1, b->norm2_w, b->norm2_b, c->norm_eps, &n2));
    PEFT__TRY(peft__linear_forward(ctx, &b->up, n2, &f));
    PEFT__TRY(peft_gelu(ctx, f, &g));
    PEFT__TRY(peft__linear_forward(ctx, &b->down, g, &d));
    return peft_add(ctx, h1, d, out);
}

static peft_status llama_block(peft_model *m, peft__kv *kv, int64_t l, peft_tensor *h, peft_tensor **out)
{
    peft__block *b = &m->blocks[l];
    peft_ctx *ctx = m->ctx;
    const peft_model_config *c = &m->cfg;
    peft_tensor *a, *q, *k, *v, *att, *o, *h1, *n2, *g, *u, *sg, *gu, *d;
    PEFT__TRY(peft_rmsnorm(ctx, h, b->norm1_w, c->norm_eps, &a));
    PEFT__TRY(peft__linear_forward(ctx, &b->q, a, &q));
    PEFT__TRY(peft__linear_forward(ctx, &b->k, a, &k));
    PEFT__TRY(peft__linear_forward(ctx, &b->v, a, &v));
    PEFT__TRY(attend(m, kv, l, q, k, v, &att));
    PEFT__TRY(peft__linear_forward(ctx, &b->o, att, &o));
    PEFT__TRY(peft_add(ctx, h, o, &h1));
    PEFT__TRY(peft_rmsnorm(ctx, h1, b->norm2_w, c->norm_eps, &n2));
    PEFT__TRY(peft__linear_forward(ctx, &b->gate, n2, &g));
    PEFT__TRY(peft__linear_forward(ctx, &b->up, n2, &u));
    PEFT__TRY(peft_silu(ctx, g, &sg));
    PEFT__TRY(peft_mul(ctx, sg, u, &gu));
    PEFT__TRY(peft__linear_forward(ctx, &b->down, gu, &d));
    return peft_add(ctx, h1, d, out);
}

static peft_status check_ids(peft_model *m, peft_tensor *ids, const char *fn)
{
    peft_ctx *ctx = m->ctx;
    PEFT__TRY(peft__check_input(ctx, fn, "ids", ids));
    char s[64];
    if (ids->dtype != PEFT_DTYPE_I32 || ids->ndim != 2)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: ids must be i32 [B, T], got %s %s", fn,
                          peft_dtype_name(ids->dtype), peft__shape_str(ids, s, sizeof s));
    if (m->cfg.arch == PEFT_ARCH_GPT2 && ids->shape[1] > m->cfg.n_ctx)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: sequence of %lld tokens is longer than the model's context %lld", fn,
                          (long long)ids->shape[1], (long long)m->cfg.n_ctx);
    return PEFT_OK;
}

/* Embeddings and every block; hidden[l] receives the output of block l.
 * kv: NULL, or the generation cache (positions continue at kv->pos). */
peft_status peft__run_blocks(peft_model *m, peft__kv *kv, peft_tensor *ids, peft_tensor **hidden, peft_tensor **out)
{
    peft_ctx *ctx = m->ctx;
    const int64_t T = ids->shape[1], pos0 = kv ? kv->pos : 0;
    peft_tensor *h;
    PEFT__TRY(peft_embedding(ctx, m->tok_emb, ids, &h));
    if (m->cfg.arch == PEFT_ARCH_GPT2) {
        peft_tensor *pos, *pe;
        if (pos0 + T > m->cfg.n_ctx)
            return peft__fail(ctx, PEFT_ERR_SHAPE, "gpt2: position %lld is past the context of %lld",
                              (long long)(pos0 + T), (long long)m->cfg.n_ctx);
        PEFT__TRY(peft_slice(ctx, m->positions, 0, pos0, T, &pos));
        PEFT__TRY(peft_embedding(ctx, m->pos_emb, pos, &pe)); /* [T, C] broadcast over B */
        PEFT__TRY(peft_add(ctx, h, pe, &h));
    }
    /* Without a tape nothing of a block outlives it but its output: copy that
     * into one of two [B, T, C] buffers (a block reads one, its output goes to
     * the other) and rewind the arena, so a no-grad forward (frozen-base
     * features, evaluation, generation) holds one block's scratch, not all. */
    peft_tensor *keep[2] = {NULL, NULL};
    if (!ctx->grad_enabled && !hidden) {
        PEFT__TRY(peft__new_output(ctx, "forward", h->ndim, h->shape, &keep[0]));
        PEFT__TRY(peft__new_output(ctx, "forward", h->ndim, h->shape, &keep[1]));
    }
    for (int64_t l = 0; l < m->cfg.n_layer; l++) {
        const size_t mark = peft_arena_mark(ctx->arena);
        PEFT__TRY(m->cfg.arch == PEFT_ARCH_GPT2 ? gpt2_block(m, kv, l, h, &h) : llama_block(m, kv, l, h, &h));
        if (hidden) hidden[l] = h;
        if (keep[0]) {
            peft_tensor *dst = keep[l & 1];
            memcpy(dst->data, h->data, (size_t)peft_tensor_numel(h) * sizeof(float));
            PEFT__TRY(peft_arena_rewind(ctx->arena, mark));
            h = dst;
        }
    }
    if (m->cfg.arch == PEFT_ARCH_GPT2) return peft_layernorm(ctx, h, m->normf_w, m->normf_b, m->cfg.norm_eps, out);
    return peft_rmsnorm(ctx, h, m->normf_w, m->cfg.norm_eps, out);
}

peft_status peft_model_forward_hidden(peft_model *m, peft_tensor *ids, peft_tensor **out)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "peft_model_forward_hidden: out is NULL");
    *out = NULL;
    PEFT__TRY(check_ids(m, ids, "peft_model_forward_hidden"));
    return peft__run_blocks(m, NULL, ids, NULL, out);
}

peft_status peft_model_forward(peft_model *m, peft_tensor *ids, peft_tensor **logits, peft_tensor **hidden)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    if (!logits) return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "peft_model_forward: logits is NULL");
    *logits = NULL;
    PEFT__TRY(check_ids(m, ids, "peft_model_forward"));
    peft_tensor *h;
    PEFT__TRY(peft__run_blocks(m, NULL, ids, hidden, &h));
    if (m->hidden_hook) PEFT__TRY(m->hidden_hook(m->ctx, h, m->hidden_user, &h));
    return peft__linear_forward(m->ctx, &m->head, h, logits);
}

peft_status peft__head_loss(peft_model *m, peft_tensor *h, peft_tensor *targets, int32_t ignore, peft_tensor **loss)
{
    if (m->head.hook) { /* a hooked head: plain logits, then the loss */
        peft_tensor *logits;
        PEFT__TRY(peft__linear_forward(m->ctx, &m->head, h, &logits));
        return peft_cross_entropy(m->ctx, logits, targets, ignore, loss);
    }
    return peft_linear_cross_entropy(m->ctx, h, m->head.w, targets, ignore, loss);
}

peft_status peft_model_lm_loss(peft_model *m, peft_tensor *ids, peft_tensor *mask, peft_tensor **loss)
{
    static const char fn[] = "peft_model_lm_loss";
    if (!m) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = m->ctx;
    if (!loss) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: loss is NULL", fn);
    *loss = NULL;
    PEFT__TRY(check_ids(m, ids, fn));
    const int64_t B = ids->shape[0], T = ids->shape[1];
    if (mask) {
        PEFT__TRY(peft__check_input(ctx, fn, "mask", mask));
        if (mask->dtype != PEFT_DTYPE_I32 || mask->ndim != 2 || mask->shape[0] != B || mask->shape[1] != T) {
            char sm[64], si[64];
            return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: mask %s %s does not match ids %s", fn,
                              peft_dtype_name(mask->dtype), peft__shape_str(mask, sm, sizeof sm),
                              peft__shape_str(ids, si, sizeof si));
        }
        PEFT__TRY(peft__check_contiguous(ctx, fn, "mask", mask));
    }
    PEFT__TRY(peft__check_contiguous(ctx, fn, "ids", ids));
    /* targets[b, t] = ids[b, t+1], or ignored (last position, masked tokens) */
    const int32_t ignore = -100;
    int64_t shape[2] = {B, T};
    peft_tensor *targets;
    PEFT__TRY(peft__new_scratch(ctx, fn, PEFT_DTYPE_I32, 2, shape, &targets));
    const int32_t *id = ids->data, *mk = mask ? mask->data : NULL;
    int32_t *tg = targets->data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t;
            bool valid = t + 1 < T && (!mk || mk[i + 1] != 0);
            tg[i] = valid ? id[i + 1] : ignore;
        }
    /* the LM head and the loss are fused: no [B*T, V] logits are kept */
    peft_tensor *h;
    PEFT__TRY(peft__run_blocks(m, NULL, ids, NULL, &h));
    if (m->hidden_hook) PEFT__TRY(m->hidden_hook(ctx, h, m->hidden_user, &h));
    return peft__head_loss(m, h, targets, ignore, loss);
}
