/* GPT-2 and Llama: the parameter table, storage, random init and accessors.
 *
 * All f32 parameters live in one flat buffer laid out in table order
 * (embeddings, block 0 … block L-1, final norm, head), so "the top N blocks"
 * is a suffix of it and an optimizer can walk it as one array. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"

const char *peft_arch_name(peft_arch arch)
{
    switch (arch) {
    case PEFT_ARCH_GPT2: return "gpt2";
    case PEFT_ARCH_LLAMA: return "llama";
    default: return "?";
    }
}

peft_model_config peft_model_config_default(peft_arch arch)
{
    peft_model_config c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    c.arch = arch;
    c.bos_id = c.eos_id = -1;
    if (arch == PEFT_ARCH_LLAMA) {
        c.vocab_size = 32000;
        c.n_ctx = 2048;
        c.d_model = 576;
        c.n_layer = 30;
        c.n_head = 9;
        c.n_kv_head = 3;
        c.d_ff = 1536;
        c.norm_eps = 1e-5f;
        c.rope_theta = 10000.0f;
        c.tie_embeddings = 1;
        c.bos_id = 1;
        c.eos_id = 2;
    } else {
        c.vocab_size = 50257;
        c.n_ctx = 1024;
        c.d_model = 768;
        c.n_layer = 12;
        c.n_head = 12;
        c.n_kv_head = 12;
        c.d_ff = 3072;
        c.norm_eps = 1e-5f;
        c.rope_theta = 0.0f;
        c.tie_embeddings = 1;
        c.bos_id = c.eos_id = 50256;
    }
    return c;
}

static peft_status check_config(peft_ctx *ctx, const peft_model_config *c)
{
    if (c->struct_size != sizeof *c)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "model config: struct_size %zu, expected %zu (use peft_model_config_default)",
                          c->struct_size, sizeof *c);
    if ((unsigned)c->arch >= PEFT_ARCH_COUNT)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "model config: unknown arch %d", (int)c->arch);
#define POS(f, max)                                                                                  \
    if (c->f <= 0 || c->f > (max))                                                                  \
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "model config: " #f " = %lld (must be 1..%lld)", \
                          (long long)c->f, (long long)(max));
    POS(vocab_size, 1LL << 24)
    POS(n_ctx, 1LL << 20)
    POS(d_model, 1LL << 16)
    POS(n_layer, 4096)
    POS(n_head, 1024)
    POS(n_kv_head, 1024)
    POS(d_ff, 1LL << 18)
#undef POS
    if (c->d_model % c->n_head != 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "model config: d_model %lld is not a multiple of n_head %lld",
                          (long long)c->d_model, (long long)c->n_head);
    if (c->n_head % c->n_kv_head != 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "model config: n_head %lld is not a multiple of n_kv_head %lld",
                          (long long)c->n_head, (long long)c->n_kv_head);
    if (c->arch == PEFT_ARCH_GPT2 && c->n_kv_head != c->n_head)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "model config: gpt2 has no grouped-query attention (n_kv_head %lld != n_head %lld)",
                          (long long)c->n_kv_head, (long long)c->n_head);
    if (c->arch == PEFT_ARCH_LLAMA && ((c->d_model / c->n_head) % 2 != 0 || !(c->rope_theta > 0) || !isfinite(c->rope_theta)))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "model config: llama needs an even head size and rope_theta > 0");
    if (!(c->norm_eps >= 0) || !isfinite(c->norm_eps))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "model config: norm_eps %g", c->norm_eps);
    return PEFT_OK;
}

/* ---- the parameter table ---- */

typedef struct spec {
    char name[PEFT__NAME_MAX];
    int ndim;
    int64_t shape[2];
    peft_tensor **slot;
    bool conv1d;
} spec;

typedef struct table {
    spec *s;
    size_t n, cap;
} table;

static void add(table *t, peft_tensor **slot, bool conv1d, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
    PEFT__PRINTF(7, 8);
static void add(table *t, peft_tensor **slot, bool conv1d, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
{
    if (t->n == t->cap) return; /* capacity is computed exactly below */
    spec *s = &t->s[t->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->slot = slot;
    s->conv1d = conv1d;
}

static void set_linear_name(peft__linear *lin, const char *fmt, int64_t l, const char *what)
{
    snprintf(lin->name, sizeof lin->name, fmt, (long long)l, what);
}

static void build_table(peft_model *m, table *t)
{
    const peft_model_config *c = &m->cfg;
    const int64_t C = c->d_model, F = c->d_ff, V = c->vocab_size, D = C / c->n_head, KV = c->n_kv_head * D;
    if (c->arch == PEFT_ARCH_GPT2) {
        add(t, &m->tok_emb, false, 2, V, C, "transformer.wte.weight");
        add(t, &m->pos_emb, false, 2, c->n_ctx, C, "transformer.wpe.weight");
        for (int64_t l = 0; l < c->n_layer; l++) {
            peft__block *b = &m->blocks[l];
            const char *p = "transformer.h.%lld.%s";
            set_linear_name(&b->qkv, p, l, "attn.c_attn");
            set_linear_name(&b->o, p, l, "attn.c_proj");
            set_linear_name(&b->up, p, l, "mlp.c_fc");
            set_linear_name(&b->down, p, l, "mlp.c_proj");
            add(t, &b->norm1_w, false, 1, C, 0, "transformer.h.%lld.ln_1.weight", (long long)l);
            add(t, &b->norm1_b, false, 1, C, 0, "transformer.h.%lld.ln_1.bias", (long long)l);
            add(t, &b->qkv.w, true, 2, 3 * C, C, "transformer.h.%lld.attn.c_attn.weight", (long long)l);
            add(t, &b->qkv.b, false, 1, 3 * C, 0, "transformer.h.%lld.attn.c_attn.bias", (long long)l);
            add(t, &b->o.w, true, 2, C, C, "transformer.h.%lld.attn.c_proj.weight", (long long)l);
            add(t, &b->o.b, false, 1, C, 0, "transformer.h.%lld.attn.c_proj.bias", (long long)l);
            add(t, &b->norm2_w, false, 1, C, 0, "transformer.h.%lld.ln_2.weight", (long long)l);
            add(t, &b->norm2_b, false, 1, C, 0, "transformer.h.%lld.ln_2.bias", (long long)l);
            add(t, &b->up.w, true, 2, F, C, "transformer.h.%lld.mlp.c_fc.weight", (long long)l);
            add(t, &b->up.b, false, 1, F, 0, "transformer.h.%lld.mlp.c_fc.bias", (long long)l);
            add(t, &b->down.w, true, 2, C, F, "transformer.h.%lld.mlp.c_proj.weight", (long long)l);
            add(t, &b->down.b, false, 1, C, 0, "transformer.h.%lld.mlp.c_proj.bias", (long long)l);
        }
        add(t, &m->normf_w, false, 1, C, 0, "transformer.ln_f.weight");
        add(t, &m->normf_b, false, 1, C, 0, "transformer.ln_f.bias");
        snprintf(m->head.name, sizeof m->head.name, "lm_head");
    } else {
        add(t, &m->tok_emb, false, 2, V, C, "model.embed_tokens.weight");
        for (int64_t l = 0; l < c->n_layer; l++) {
            peft__block *b = &m->blocks[l];
            const char *p = "model.layers.%lld.%s";
            set_linear_name(&b->q, p, l, "self_attn.q_proj");
            set_linear_name(&b->k, p, l, "self_attn.k_proj");
            set_linear_name(&b->v, p, l, "self_attn.v_proj");
            set_linear_name(&b->o, p, l, "self_attn.o_proj");
            set_linear_name(&b->gate, p, l, "mlp.gate_proj");
            set_linear_name(&b->up, p, l, "mlp.up_proj");
            set_linear_name(&b->down, p, l, "mlp.down_proj");
            add(t, &b->norm1_w, false, 1, C, 0, "model.layers.%lld.input_layernorm.weight", (long long)l);
            add(t, &b->q.w, false, 2, C, C, "model.layers.%lld.self_attn.q_proj.weight", (long long)l);
            add(t, &b->k.w, false, 2, KV, C, "model.layers.%lld.self_attn.k_proj.weight", (long long)l);
            add(t, &b->v.w, false, 2, KV, C, "model.layers.%lld.self_attn.v_proj.weight", (long long)l);
            add(t, &b->o.w, false, 2, C, C, "model.layers.%lld.self_attn.o_proj.weight", (long long)l);
            add(t, &b->norm2_w, false, 1, C, 0, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
            add(t, &b->gate.w, false, 2, F, C, "model.layers.%lld.mlp.gate_proj.weight", (long long)l);
            add(t, &b->up.w, false, 2, F, C, "model.layers.%lld.mlp.up_proj.weight", (long long)l);
            add(t, &b->down.w, false, 2, C, F, "model.layers.%lld.mlp.down_proj.weight", (long long)l);
        }
        add(t, &m->normf_w, false, 1, C, 0, "model.norm.weight");
        snprintf(m->head.name, sizeof m->head.name, "lm_head");
        if (!c->tie_embeddings) add(t, &m->head.w, false, 2, V, C, "lm_head.weight");
    }
}

static size_t table_cap(const peft_model_config *c)
{
    return 8 + (size_t)c->n_layer * 12;
}

peft_status peft__model_alloc(peft_ctx *ctx, const peft_model_config *cfg, peft__dtype_pick pick, void *user,
                             peft_model **out)
{
    *out = NULL;
    peft_status st = check_config(ctx, cfg);
    if (st != PEFT_OK) return st;
    peft_dtype *dt = NULL;
    peft_model *m = peft__calloc(ctx, 1, sizeof *m);
    if (!m) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_model_create: out of memory");
    m->ctx = ctx;
    m->cfg = *cfg;
    if (m->cfg.arch == PEFT_ARCH_GPT2) m->cfg.tie_embeddings = 1;
    table t = {0};
    t.cap = table_cap(cfg);
    t.s = peft__calloc(ctx, t.cap, sizeof *t.s);
    m->blocks = peft__calloc(ctx, (size_t)cfg->n_layer, sizeof *m->blocks);
    m->params = peft__calloc(ctx, t.cap + 1, sizeof *m->params);
    if (!t.s || !m->blocks || !m->params) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "peft_model_create: out of memory");
        goto fail;
    }
    build_table(m, &t);
    /* one flat f32 buffer for every f32 parameter; frozen weights kept in a
     * file's half dtype get their own storage */
    dt = peft__calloc(ctx, t.n + 1, sizeof *dt);
    if (!dt) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "peft_model_create: out of memory");
        goto fail;
    }
    size_t total = 0;
    for (size_t i = 0; i < t.n; i++) {
        dt[i] = pick ? pick(user, t.s[i].name, t.s[i].ndim) : PEFT_DTYPE_F32;
        if (dt[i] != PEFT_DTYPE_F32) continue;
        size_t n = (size_t)(t.s[i].shape[0] * (t.s[i].ndim == 2 ? t.s[i].shape[1] : 1));
        if (!peft__add_ok(total, n, &total)) {
            st = peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_model_create: parameter count overflows");
            goto fail;
        }
    }
    m->flat = peft__calloc(ctx, total ? total : 1, sizeof(float));
    if (!m->flat) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "peft_model_create: cannot allocate %zu parameters", total);
        goto fail;
    }
    m->n_flat = total;
    size_t off = 0;
    for (size_t i = 0; i < t.n; i++) {
        spec *s = &t.s[i];
        if (dt[i] == PEFT_DTYPE_F32) {
            st = peft_tensor_wrap(ctx, PEFT_DTYPE_F32, s->ndim, s->shape, m->flat + off, s->slot);
            if (st == PEFT_OK) off += (size_t)peft_tensor_numel(*s->slot);
        } else {
            st = peft_tensor_create(ctx, dt[i], s->ndim, s->shape, s->slot);
        }
        if (st != PEFT_OK) goto fail;
        peft__param *p = &m->params[m->n_params++];
        memcpy(p->name, s->name, sizeof p->name);
        p->t = *s->slot;
        p->conv1d = s->conv1d;
    }
    if (m->cfg.tie_embeddings) m->head.w = m->tok_emb;
    m->linears = peft__calloc(ctx, (size_t)m->cfg.n_layer * PEFT__BLOCK_LINEARS + 1, sizeof *m->linears);
    if (!m->linears) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "peft_model_create: out of memory");
        goto fail;
    }
    for (int64_t l = 0; l < m->cfg.n_layer; l++)
        m->n_linears += (size_t)peft__block_linears(m, l, m->linears + m->n_linears);
    int64_t npos = m->cfg.n_ctx;
    st = peft_tensor_create(ctx, PEFT_DTYPE_I32, 1, &npos, &m->positions);
    if (st != PEFT_OK) goto fail;
    int32_t *pos = peft_tensor_data(m->positions);
    for (int64_t i = 0; i < npos; i++) pos[i] = (int32_t)i;
    peft__free(ctx, t.s);
    peft__free(ctx, dt);
    *out = m;
    return PEFT_OK;
fail:
    peft__free(ctx, t.s);
    peft__free(ctx, dt);
    peft_model_destroy(m);
    return st;
}

static void fill(peft_tensor *t, float v)
{
    if (t) peft_tensor_fill(t, v);
}

peft_status peft_model_create(peft_ctx *ctx, const peft_model_config *cfg, peft_model **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_model_create: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!cfg) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_model_create: cfg is NULL");
    peft_model *m;
    peft_status st = peft__model_alloc(ctx, cfg, NULL, NULL, &m);
    if (st != PEFT_OK) return st;
    /* GPT-2's init (HF _init_weights): N(0, 0.02), residual projections
     * N(0, 0.02/sqrt(2L)), biases 0, norm gains 1. */
    const float std = 0.02f, std_res = 0.02f / sqrtf(2.0f * (float)m->cfg.n_layer);
    for (size_t i = 0; i < m->n_params; i++) {
        peft_tensor *t = m->params[i].t;
        if (t->ndim == 2) {
            const char *n = m->params[i].name;
            bool residual = strstr(n, "c_proj.weight") || strstr(n, "o_proj.weight") || strstr(n, "down_proj.weight");
            peft_tensor_init_normal(t, 0.0f, residual ? std_res : std);
        }
    }
    for (int64_t l = 0; l < m->cfg.n_layer; l++) {
        fill(m->blocks[l].norm1_w, 1.0f);
        fill(m->blocks[l].norm2_w, 1.0f);
    }
    fill(m->normf_w, 1.0f);
    *out = m;
    return PEFT_OK;
}

void peft_model_destroy(peft_model *m)
{
    if (!m) return;
    peft_ctx *ctx = m->ctx;
    for (size_t i = 0; i < m->n_params; i++) peft_tensor_destroy(m->params[i].t);
    peft_tensor_destroy(m->positions);
    peft__free(ctx, m->params);
    peft__free(ctx, m->linears);
    peft__free(ctx, m->blocks);
    peft__free(ctx, m->flat);
    peft_tokenizer_destroy(m->tokenizer);
    peft__free(ctx, m);
}

const peft_model_config *peft_model_get_config(const peft_model *m) { return m ? &m->cfg : NULL; }
peft_ctx *peft_model_ctx(const peft_model *m) { return m ? m->ctx : NULL; }
size_t peft_model_n_params(const peft_model *m) { return m ? m->n_params : 0; }
peft_tokenizer *peft_model_tokenizer(const peft_model *m) { return m ? m->tokenizer : NULL; }

peft_status peft_model_set_tokenizer(peft_model *m, peft_tokenizer *tok)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    if (tok != m->tokenizer) peft_tokenizer_destroy(m->tokenizer);
    m->tokenizer = tok;
    return PEFT_OK;
}

peft_status peft_model_param(const peft_model *m, size_t i, const char **name, peft_tensor **tensor)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    if (i >= m->n_params)
        return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "peft_model_param: index %zu >= %zu", i, m->n_params);
    if (name) *name = m->params[i].name;
    if (tensor) *tensor = m->params[i].t;
    return PEFT_OK;
}

peft_status peft_model_find_param(const peft_model *m, const char *name, peft_tensor **tensor)
{
    if (!m || !name) return PEFT_ERR_INVALID_ARG;
    for (size_t i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) {
            if (tensor) *tensor = m->params[i].t;
            return PEFT_OK;
        }
    return peft__fail(m->ctx, PEFT_ERR_NOT_FOUND, "model has no parameter '%s'", name);
}

int64_t peft_model_numel(const peft_model *m)
{
    if (!m) return 0;
    int64_t n = 0;
    for (size_t i = 0; i < m->n_params; i++) n += peft_tensor_numel(m->params[i].t);
    return n;
}

peft_status peft_model_set_trainable(peft_model *m, int trainable)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    for (size_t i = 0; i < m->n_params; i++) {
        peft_tensor *t = m->params[i].t;
        if (t->dtype != PEFT_DTYPE_F32) continue;
        peft_status st = peft_tensor_set_requires_grad(t, trainable);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

size_t peft_model_n_linears(const peft_model *m) { return m ? m->n_linears : 0; }

peft_status peft_model_linear(const peft_model *m, size_t i, const char **name, peft_tensor **w, peft_tensor **b)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    if (i >= m->n_linears)
        return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "peft_model_linear: index %zu >= %zu", i, m->n_linears);
    if (name) *name = m->linears[i]->name;
    if (w) *w = m->linears[i]->w;
    if (b) *b = m->linears[i]->b;
    return PEFT_OK;
}

int peft__block_linears(peft_model *m, int64_t l, peft__linear **out)
{
    peft__block *b = &m->blocks[l];
    peft__linear *all[PEFT__BLOCK_LINEARS] = {&b->qkv, &b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
    int n = 0;
    for (int i = 0; i < PEFT__BLOCK_LINEARS; i++)
        if (all[i]->w) out[n++] = all[i];
    return n;
}
