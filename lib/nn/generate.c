/* Generation with a key/value cache: the prompt in one pass, then one token
 * per pass; greedy or temperature / top-k / top-p sampling. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

peft_sample_opts peft_sample_opts_default(void)
{
    peft_sample_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.max_new = 32;
    o.top_p = 1.0f;
    o.seed = 1;
    o.stop_at_eos = 1;
    return o;
}

typedef struct cand {
    float p;
    int32_t id;
} cand;

static int cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id; /* ties: lower id first, deterministic */
}

/* Pick a token from logits[V]. cands is scratch of V entries. */
static int32_t sample(const float *logits, int64_t V, const peft_sample_opts *o, uint64_t *rng, cand *cands)
{
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (o->temperature <= 0.0f) return (int32_t)best;
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++) {
        cands[i].p = (float)exp((logits[i] - logits[best]) / o->temperature);
        cands[i].id = (int32_t)i;
        sum += cands[i].p;
    }
    qsort(cands, (size_t)V, sizeof *cands, cand_desc);
    int64_t n = V;
    if (o->top_k > 0 && o->top_k < n) n = o->top_k;
    if (o->top_p < 1.0f) { /* smallest prefix whose mass reaches top_p */
        double acc = 0.0;
        for (int64_t i = 0; i < n; i++) {
            acc += cands[i].p / sum;
            if (acc >= o->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    double mass = 0.0;
    for (int64_t i = 0; i < n; i++) mass += cands[i].p;
    double u = (double)(peft__splitmix64(rng) >> 11) * 0x1.0p-53 * mass;
    for (int64_t i = 0; i < n; i++) {
        u -= cands[i].p;
        if (u < 0) return cands[i].id;
    }
    return cands[n - 1].id;
}

/* Logits of the last position after running `ids` through the cache. */
static peft_status step(peft_model *m, peft__kv *kv, const int32_t *ids, int64_t T, float *logits)
{
    peft_ctx *ctx = m->ctx;
    int64_t shape[2] = {1, T};
    peft_tensor *t, *h, *last, *lg;
    peft_status st = peft__new_scratch(ctx, "generate", PEFT_DTYPE_I32, 2, shape, &t);
    if (st != PEFT_OK) return st;
    memcpy(t->data, ids, (size_t)T * sizeof(int32_t));
    if ((st = peft__run_blocks(m, kv, t, NULL, &h)) != PEFT_OK) return st;
    if ((st = peft_slice(ctx, h, 1, T - 1, 1, &last)) != PEFT_OK) return st;
    if (m->hidden_hook && (st = peft_contiguous(ctx, last, &last)) != PEFT_OK) return st;
    if (m->hidden_hook && (st = m->hidden_hook(ctx, last, m->hidden_user, &last)) != PEFT_OK) return st;
    if ((st = peft__linear_forward(ctx, &m->head, last, &lg)) != PEFT_OK) return st;
    memcpy(logits, lg->data, (size_t)m->cfg.vocab_size * sizeof(float));
    kv->pos += T;
    return PEFT_OK;
}

peft_status peft_model_generate(peft_model *m, const int32_t *prompt, size_t n_prompt, const peft_sample_opts *opts,
                                int32_t *out, size_t cap, size_t *n_out)
{
    static const char fn[] = "peft_model_generate";
    if (!m) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = m->ctx;
    if (!prompt || n_prompt == 0 || !n_out || (!out && cap))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: needs a prompt of at least one id and n_out", fn);
    *n_out = 0;
    peft_sample_opts o = opts ? *opts : peft_sample_opts_default();
    if (o.struct_size != sizeof o)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.struct_size %zu (use peft_sample_opts_default)", fn,
                          o.struct_size);
    if (o.max_new < 0 || !isfinite(o.temperature) || o.temperature < 0 || o.top_k < 0 || !(o.top_p > 0 && o.top_p <= 1))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: max_new %d, temperature %g, top_k %d, top_p %g", fn,
                          o.max_new, o.temperature, o.top_k, o.top_p);
    const int64_t V = m->cfg.vocab_size;
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: prompt[%zu] = %d is outside the vocabulary [0, %lld)", fn, i,
                              prompt[i], (long long)V);
    size_t want = (size_t)o.max_new < cap ? (size_t)o.max_new : cap;
    int64_t total = (int64_t)(n_prompt + want);
    if (m->cfg.arch == PEFT_ARCH_GPT2 && total > m->cfg.n_ctx)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %lld positions exceed the context of %lld", fn, (long long)total,
                          (long long)m->cfg.n_ctx);
    const int64_t L = m->cfg.n_layer, KV = m->cfg.n_kv_head * (m->cfg.d_model / m->cfg.n_head);
    peft__kv kv = {0};
    kv.cap = total;
    kv.k = peft__calloc(ctx, (size_t)L, sizeof *kv.k);
    kv.v = peft__calloc(ctx, (size_t)L, sizeof *kv.v);
    float *logits = peft__malloc(ctx, (size_t)V * sizeof(float));
    cand *cands = peft__malloc(ctx, (size_t)V * sizeof(cand));
    peft_status st = (kv.k && kv.v && logits && cands) ? PEFT_OK : peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    int64_t shape[3] = {1, total, KV};
    for (int64_t l = 0; st == PEFT_OK && l < L; l++) {
        st = peft_tensor_create(ctx, PEFT_DTYPE_F32, 3, shape, &kv.k[l]);
        if (st == PEFT_OK) st = peft_tensor_create(ctx, PEFT_DTYPE_F32, 3, shape, &kv.v[l]);
    }
    int prev = peft_set_grad_enabled(ctx, 0);
    uint64_t rng = o.seed;
    if (st == PEFT_OK && want > 0) st = step(m, &kv, prompt, (int64_t)n_prompt, logits);
    peft_graph_release(ctx);
    while (st == PEFT_OK && *n_out < want) {
        int32_t next = sample(logits, V, &o, &rng, cands);
        out[(*n_out)++] = next;
        if (o.stop_at_eos && next == m->cfg.eos_id) break;
        if (*n_out == want) break;
        st = step(m, &kv, &next, 1, logits);
        peft_graph_release(ctx);
    }
    peft_set_grad_enabled(ctx, prev);
    for (int64_t l = 0; l < L; l++) {
        if (kv.k) peft_tensor_destroy(kv.k[l]);
        if (kv.v) peft_tensor_destroy(kv.v[l]);
    }
    peft__free(ctx, kv.k), peft__free(ctx, kv.v), peft__free(ctx, logits), peft__free(ctx, cands);
    return st;
}
