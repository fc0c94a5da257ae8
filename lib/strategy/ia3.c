/* IA3 (Liu et al. 2022; Hugging Face PEFT's ia3.Linear): one learned vector
 * per targeted projection, initialised to ones, rescales activations:
 *
 *   attention-type targets (output scaling): y = l ⊙ (x W^T + b),  l [out, 1]
 *   feed-forward targets   (input scaling):  y = (l ⊙ x) W^T + b,  l [1, in]
 *
 * The shapes and the names ("base_model.model.<module path>.ia3_l", no
 * ".weight": PEFT keeps the vectors in a ParameterDict) are those of PEFT's
 * saved adapter_model.safetensors. Defaults follow PEFT's tables: gpt2
 * targets "c_attn,mlp.c_proj" with "mlp.c_proj" feed-forward; llama
 * "k_proj,v_proj,down_proj" with "down_proj".
 *
 * Merge scales the rows of W and b (output scaling) or the columns of W
 * (input scaling); unmerge restores them bit for bit from copies kept while
 * merged (one f32 copy of each targeted weight and bias). Destroying a merged
 * adapter leaves the merged weights in the model. */
#include <stdio.h>
#include <string.h>

#include "strategy_internal.h"

peft_ia3_opts peft_ia3_opts_default(void)
{
    peft_ia3_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    return o;
}

typedef struct ia3_state ia3_state;

typedef struct ia3_layer {
    ia3_state *s;
    size_t index;    /* projection index in the model */
    bool ff;         /* input scaling */
    peft_tensor *l;  /* [out, 1] or (ff) [1, in] */
    float *w_orig;   /* [out, in] copy of W while merged */
    float *b_orig;   /* [out] copy of b while merged (output scaling with a bias) */
} ia3_layer;

struct ia3_state {
    peft_adapter *ad;
    bool merged;
    size_t n;
    ia3_layer *layer; /* [n] */
};

static peft_status ia3_forward(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, peft_tensor *b, void *user,
                               peft_tensor **y)
{
    const ia3_layer *L = user;
    peft_status st;
    if (L->s->merged) return peft_linear(ctx, x, w, b, y);
    if (L->ff) { /* [..., in] * [1, in] */
        peft_tensor *xs;
        if ((st = peft_mul(ctx, x, L->l, &xs)) != PEFT_OK) return st;
        return peft_linear(ctx, xs, w, b, y);
    }
    peft_tensor *base, *lv;
    const int64_t out = L->l->shape[0];
    if ((st = peft_linear(ctx, x, w, b, &base)) != PEFT_OK) return st;
    if ((st = peft_reshape(ctx, L->l, 1, &out, &lv)) != PEFT_OK) return st; /* [out, 1] -> [out] */
    return peft_mul(ctx, base, lv, y);
}

static peft_status ia3_attach(peft_adapter *ad, const void *opts)
{
    peft_ctx *ctx = ad->ctx;
    peft_status st = peft__check_opts(ad, opts, sizeof(peft_ia3_opts), "ia3");
    if (st != PEFT_OK) return st;
    const peft_ia3_opts o = opts ? *(const peft_ia3_opts *)opts : peft_ia3_opts_default();
    peft_model *m = ad->model;
    const bool llama = m->cfg.arch == PEFT_ARCH_LLAMA;
    const char *targets = o.targets ? o.targets : llama ? "k_proj,v_proj,down_proj" : "c_attn,mlp.c_proj";
    const char *ff = o.feedforward ? o.feedforward : llama ? "down_proj" : "mlp.c_proj";

    size_t n = 0;
    for (size_t i = 0; i < m->n_linears; i++) {
        const char *name = m->linears[i]->name;
        bool t = peft_target_matches(targets, name) != 0;
        /* PEFT: feedforward_modules must be a subset of target_modules */
        if (o.feedforward && !t && peft_target_matches(ff, name))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "ia3: feedforward module %s is not among the targets '%s'", name,
                              targets);
        n += t;
    }
    if (n == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "ia3: targets '%s' match no module of this model", targets);

    ia3_state *s = peft__calloc(ctx, 1, sizeof *s);
    if (!s) return peft__fail(ctx, PEFT_ERR_NOMEM, "ia3: out of memory");
    s->ad = ad;
    peft_adapter_set_state(ad, s); /* freed by the detach callback, also on failure */
    s->layer = peft__calloc(ctx, n, sizeof *s->layer);
    if (!s->layer) return peft__fail(ctx, PEFT_ERR_NOMEM, "ia3: out of memory");

    for (size_t i = 0; i < m->n_linears; i++) {
        const peft__linear *lin = m->linears[i];
        if (!peft_target_matches(targets, lin->name)) continue;
        ia3_layer *L = &s->layer[s->n];
        L->s = s;
        L->index = i;
        L->ff = peft_target_matches(ff, lin->name) != 0;
        const int64_t shape[2] = {L->ff ? 1 : lin->w->shape[0], L->ff ? lin->w->shape[1] : 1};
        char name[PEFT__NAME_MAX + 32];
        snprintf(name, sizeof name, "base_model.model.%s.ia3_l", lin->name);
        if ((st = peft_adapter_new_param(ad, name, 2, shape, 0, &L->l)) != PEFT_OK) return st;
        s->n++;
        if ((st = peft_tensor_fill(L->l, 1.0f)) != PEFT_OK) return st;
        if ((st = peft_adapter_hook_linear(ad, i, ia3_forward, L)) != PEFT_OK) return st;
    }
    return PEFT_OK;
}

/* ---- merge ---- */

static void free_copies(ia3_state *s)
{
    for (size_t j = 0; j < s->n; j++) {
        peft__free(s->ad->ctx, s->layer[j].w_orig);
        peft__free(s->ad->ctx, s->layer[j].b_orig);
        s->layer[j].w_orig = s->layer[j].b_orig = NULL;
    }
}

static peft_status ia3_merge(peft_adapter *ad)
{
    peft_ctx *ctx = ad->ctx;
    ia3_state *s = peft_adapter_state(ad);
    peft_model *m = ad->model;
    /* check and allocate first: a failure leaves the weights untouched */
    for (size_t j = 0; j < s->n; j++) {
        ia3_layer *L = &s->layer[j];
        const peft__linear *lin = m->linears[L->index];
        if (lin->w->dtype != PEFT_DTYPE_F32) {
            free_copies(s);
            return peft__fail(ctx, PEFT_ERR_DTYPE, "ia3 merge: %s is stored as %s; only f32 weights can be merged",
                              lin->name, peft_dtype_name(lin->w->dtype));
        }
        L->w_orig = peft__malloc(ctx, peft_tensor_nbytes(lin->w));
        if (lin->b && !L->ff) L->b_orig = peft__malloc(ctx, peft_tensor_nbytes(lin->b));
        if (!L->w_orig || (lin->b && !L->ff && !L->b_orig)) {
            free_copies(s);
            return peft__fail(ctx, PEFT_ERR_NOMEM, "ia3 merge: out of memory for a copy of %s", lin->name);
        }
    }
    for (size_t j = 0; j < s->n; j++) {
        ia3_layer *L = &s->layer[j];
        const peft__linear *lin = m->linears[L->index];
        const int64_t OC = lin->w->shape[0], C = lin->w->shape[1];
        float *w = lin->w->data;
        const float *l = L->l->data;
        memcpy(L->w_orig, w, peft_tensor_nbytes(lin->w));
        if (L->ff) { /* columns: W[:, i] *= l[i] */
            for (int64_t o = 0; o < OC; o++)
                for (int64_t i = 0; i < C; i++) w[o * C + i] *= l[i];
        } else { /* rows: W[o, :] *= l[o], b[o] *= l[o] */
            for (int64_t o = 0; o < OC; o++)
                for (int64_t i = 0; i < C; i++) w[o * C + i] *= l[o];
            if (L->b_orig) {
                float *b = lin->b->data;
                memcpy(L->b_orig, b, peft_tensor_nbytes(lin->b));
                for (int64_t o = 0; o < OC; o++) b[o] *= l[o];
            }
        }
    }
    s->merged = true;
    return PEFT_OK;
}

static peft_status ia3_unmerge(peft_adapter *ad)
{
    ia3_state *s = peft_adapter_state(ad);
    peft_model *m = ad->model;
    for (size_t j = 0; j < s->n; j++) {
        const peft__linear *lin = m->linears[s->layer[j].index];
        memcpy(lin->w->data, s->layer[j].w_orig, peft_tensor_nbytes(lin->w));
        if (s->layer[j].b_orig) memcpy(lin->b->data, s->layer[j].b_orig, peft_tensor_nbytes(lin->b));
    }
    free_copies(s);
    s->merged = false;
    return PEFT_OK;
}

static void ia3_detach(peft_adapter *ad)
{
    ia3_state *s = peft_adapter_state(ad);
    if (!s) return;
    if (s->layer) free_copies(s);
    peft__free(ad->ctx, s->layer);
    peft__free(ad->ctx, s);
    peft_adapter_set_state(ad, NULL);
}

const peft_strategy peft__strategy_ia3 = {
    .struct_size = sizeof(peft_strategy),
    .name = "ia3",
    .description = "IA3: learned vectors rescale the outputs (or, feed-forward, the inputs) of targeted projections",
    .attach = ia3_attach,
    .merge = ia3_merge,
    .unmerge = ia3_unmerge,
    .detach = ia3_detach,
};
