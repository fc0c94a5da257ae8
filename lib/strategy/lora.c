/* LoRA (Hu et al. 2021; Hugging Face PEFT's lora.Linear): every targeted
 * projection y = x W^T + b gains a low-rank update
 *
 *     y = x W^T + b + s * (dropout(x) A^T) B^T,   s = alpha / r  (rsLoRA: alpha / sqrt(r))
 *
 * with A [r, in] (Kaiming-uniform, a = sqrt(5), like nn.Linear) and B [out, r]
 * (zeros), so the adapter is a no-op at step 0. W stays frozen. The branch is
 * two thin products, x A^T ([N, r]) then B^T; B A is never formed in training.
 * Tensors are named like PEFT's saved keys:
 * "base_model.model.<module path>.lora_A.weight" / ".lora_B.weight".
 *
 * Merge folds s * B A into W; unmerge restores W bit for bit from a copy of
 * the original weights kept while merged (memory: one f32 copy of every
 * targeted weight, e.g. 85 MB for c_attn of GPT-2 124M, freed by unmerge).
 * Destroying a merged adapter leaves the merged weights in the model (PEFT's
 * merge_and_unload). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "strategy_internal.h"

peft_lora_opts peft_lora_opts_default(void)
{
    peft_lora_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.r = 8;
    o.alpha = 8.0f;
    return o;
}

typedef struct lora_state lora_state;

typedef struct lora_layer {
    lora_state *s;
    size_t index;  /* projection index in the model */
    peft_tensor *A; /* [r, in] */
    peft_tensor *B; /* [out, r] */
    float *w_orig;  /* [out, in] copy of W while merged, else NULL */
} lora_layer;

struct lora_state {
    peft_adapter *ad;
    int r;
    float dropout;
    float scaling;
    bool merged;
    size_t n;          /* adapted projections */
    lora_layer *layer; /* [n] */
};

/* y = x W^T + b + s * ((dropout(x) A^T) B^T); the plain base linear while merged. */
static peft_status lora_forward(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, peft_tensor *b, void *user,
                                peft_tensor **y)
{
    const lora_layer *L = user;
    const lora_state *s = L->s;
    if (s->merged) return peft_linear(ctx, x, w, b, y);
    peft_tensor *xd;
    peft_status st = peft_dropout(ctx, x, s->dropout, s->ad->training, &xd); /* x itself when off */
    if (st != PEFT_OK) return st;
    return peft_lora_linear(ctx, x, xd == x ? NULL : xd, w, b, L->A, L->B, s->scaling, y);
}

static const char *default_targets(peft_arch arch)
{
    return arch == PEFT_ARCH_LLAMA ? "q_proj,v_proj" : "c_attn";
}

static peft_status lora_attach(peft_adapter *ad, const void *opts)
{
    peft_ctx *ctx = ad->ctx;
    peft_status st = peft__check_opts(ad, opts, sizeof(peft_lora_opts), "lora");
    if (st != PEFT_OK) return st;
    const peft_lora_opts o = opts ? *(const peft_lora_opts *)opts : peft_lora_opts_default();
    if (o.r < 1) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "lora: r = %d (must be >= 1)", o.r);
    if (!(isfinite(o.alpha) && o.alpha > 0))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "lora: alpha = %g (must be finite and > 0)", (double)o.alpha);
    if (!(o.dropout >= 0 && o.dropout < 1)) /* also rejects NaN */
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "lora: dropout = %g (must be in [0, 1))", (double)o.dropout);
    peft_model *m = ad->model;
    const char *targets = o.targets ? o.targets : default_targets(m->cfg.arch);

    /* validate every target before creating anything */
    size_t n = 0;
    for (size_t i = 0; i < m->n_linears; i++) {
        const peft__linear *lin = m->linears[i];
        if (!peft_target_matches(targets, lin->name)) continue;
        const int64_t out = lin->w->shape[0], in = lin->w->shape[1], lim = out < in ? out : in;
        if (o.r > lim)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "lora: r = %d exceeds min(in, out) = %lld of %s (in %lld, out %lld)",
                              o.r, (long long)lim, lin->name, (long long)in, (long long)out);
        n++;
    }
    if (n == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "lora: targets '%s' match no module of this model", targets);

    lora_state *s = peft__calloc(ctx, 1, sizeof *s);
    if (!s) return peft__fail(ctx, PEFT_ERR_NOMEM, "lora: out of memory");
    s->ad = ad;
    peft_adapter_set_state(ad, s); /* from here the detach callback frees it, also on failure */
    s->layer = peft__calloc(ctx, n, sizeof *s->layer);
    if (!s->layer) return peft__fail(ctx, PEFT_ERR_NOMEM, "lora: out of memory");
    s->r = o.r;
    s->dropout = o.dropout;
    s->scaling = (float)(o.use_rslora ? (double)o.alpha / sqrt((double)o.r) : (double)o.alpha / o.r);

    for (size_t i = 0; i < m->n_linears; i++) {
        const peft__linear *lin = m->linears[i];
        if (!peft_target_matches(targets, lin->name)) continue;
        lora_layer *L = &s->layer[s->n];
        const int64_t out = lin->w->shape[0], in = lin->w->shape[1];
        const int64_t sa[2] = {o.r, in}, sb[2] = {out, o.r};
        char na[PEFT__NAME_MAX + 32], nb[PEFT__NAME_MAX + 32];
        snprintf(na, sizeof na, "base_model.model.%s.lora_A.weight", lin->name);
        snprintf(nb, sizeof nb, "base_model.model.%s.lora_B.weight", lin->name);
        L->s = s;
        L->index = i;
        if ((st = peft_adapter_new_param(ad, na, 2, sa, 0, &L->A)) != PEFT_OK) return st;
        if ((st = peft_adapter_new_param(ad, nb, 2, sb, 0, &L->B)) != PEFT_OK) return st;
        s->n++;
        /* PEFT's default init: A like nn.Linear's weight (U(-1/sqrt(in), 1/sqrt(in))), B = 0 */
        if ((st = peft_tensor_init_kaiming_uniform(L->A, sqrtf(5.0f), in)) != PEFT_OK) return st;
        if ((st = peft_adapter_hook_linear(ad, i, lora_forward, L)) != PEFT_OK) return st;
    }
    return PEFT_OK;
}

/* ---- merge ---- */

typedef struct delta_arg {
    float *w;        /* [out, in] */
    const float *A;  /* [r, in] */
    const float *B;  /* [out, r] */
    int64_t in, r;
    double scaling;
} delta_arg;

/* W[o, :] += s * B[o, :] A over rows [begin, end); the sum over r in double,
 * one rounding per weight. Rows are disjoint per thread. */
static void delta_rows(void *p, size_t begin, size_t end)
{
    const delta_arg *a = p;
    for (size_t o = begin; o < end; o++) {
        float *w_o = a->w + (int64_t)o * a->in;
        const float *B_o = a->B + (int64_t)o * a->r;
        for (int64_t i = 0; i < a->in; i++) {
            double acc = 0.0;
            for (int64_t k = 0; k < a->r; k++) acc += (double)B_o[k] * a->A[k * a->in + i];
            w_o[i] = (float)((double)w_o[i] + a->scaling * acc);
        }
    }
}

static void free_copies(lora_state *s)
{
    for (size_t j = 0; j < s->n; j++) {
        peft__free(s->ad->ctx, s->layer[j].w_orig);
        s->layer[j].w_orig = NULL;
    }
}

static peft_status lora_merge(peft_adapter *ad)
{
    peft_ctx *ctx = ad->ctx;
    lora_state *s = peft_adapter_state(ad);
    peft_model *m = ad->model;
    /* check and allocate everything first: a failure leaves W untouched */
    for (size_t j = 0; j < s->n; j++) {
        const peft__linear *lin = m->linears[s->layer[j].index];
        if (lin->w->dtype != PEFT_DTYPE_F32) {
            free_copies(s);
            return peft__fail(ctx, PEFT_ERR_DTYPE, "lora merge: %s is stored as %s; only f32 weights can be merged",
                              lin->name, peft_dtype_name(lin->w->dtype));
        }
        s->layer[j].w_orig = peft__malloc(ctx, peft_tensor_nbytes(lin->w));
        if (!s->layer[j].w_orig) {
            free_copies(s);
            return peft__fail(ctx, PEFT_ERR_NOMEM, "lora merge: out of memory for a copy of %s", lin->name);
        }
    }
    for (size_t j = 0; j < s->n; j++) {
        lora_layer *L = &s->layer[j];
        peft_tensor *w = m->linears[L->index]->w;
        memcpy(L->w_orig, w->data, peft_tensor_nbytes(w));
        delta_arg a = {w->data, L->A->data, L->B->data, w->shape[1], s->r, (double)s->scaling};
        peft__parallel_for(ctx, (size_t)w->shape[0], 16, delta_rows, &a);
    }
    s->merged = true;
    return PEFT_OK;
}

static peft_status lora_unmerge(peft_adapter *ad)
{
    lora_state *s = peft_adapter_state(ad);
    peft_model *m = ad->model;
    for (size_t j = 0; j < s->n; j++) {
        peft_tensor *w = m->linears[s->layer[j].index]->w;
        memcpy(w->data, s->layer[j].w_orig, peft_tensor_nbytes(w));
    }
    free_copies(s);
    s->merged = false;
    return PEFT_OK;
}

static void lora_detach(peft_adapter *ad)
{
    lora_state *s = peft_adapter_state(ad);
    if (!s) return;
    if (s->layer) free_copies(s);
    peft__free(ad->ctx, s->layer);
    peft__free(ad->ctx, s);
    peft_adapter_set_state(ad, NULL);
}

const peft_strategy peft__strategy_lora = {
    .struct_size = sizeof(peft_strategy),
    .name = "lora",
    .description = "LoRA: low-rank updates s*B*A on the targeted projections, base frozen",
    .attach = lora_attach,
    .merge = lora_merge,
    .unmerge = lora_unmerge,
    .detach = lora_detach,
};
