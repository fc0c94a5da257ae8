/* Full fine-tuning ("fine-tuning II"): every parameter trains, or only the top
 * N blocks plus the final norm and the (untied) head. */
#include <stdio.h>
#include <string.h>

#include "strategy_internal.h"

peft_full_opts peft_full_opts_default(void)
{
    peft_full_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    return o;
}

/* The block index of a parameter name, or -1 for embeddings / final norm / head. */
static long block_of(const char *name)
{
    long l;
    if (sscanf(name, "transformer.h.%ld.", &l) == 1 || sscanf(name, "model.layers.%ld.", &l) == 1) return l;
    return -1;
}

static bool is_embedding(const char *name)
{
    return strstr(name, "wte.") || strstr(name, "wpe.") || strstr(name, "embed_tokens.");
}

static peft_status full_attach(peft_adapter *ad, const void *opts)
{
    peft_status st = peft__check_opts(ad, opts, sizeof(peft_full_opts), "full");
    if (st != PEFT_OK) return st;
    peft_full_opts o = opts ? *(const peft_full_opts *)opts : peft_full_opts_default();
    peft_model *m = ad->model;
    if (o.top_blocks < 0 || o.top_blocks > m->cfg.n_layer)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "full: top_blocks %d (the model has %lld blocks)", o.top_blocks,
                          (long long)m->cfg.n_layer);
    const long first = o.top_blocks ? (long)(m->cfg.n_layer - o.top_blocks) : 0;
    for (size_t i = 0; i < m->n_params; i++) {
        const char *name = m->params[i].name;
        long l = block_of(name);
        bool train = o.top_blocks == 0 || l >= first || (l < 0 && !is_embedding(name));
        if (!train) continue;
        if (m->params[i].t->dtype != PEFT_DTYPE_F32)
            return peft__fail(ad->ctx, PEFT_ERR_DTYPE, "full: '%s' is stored as %s; load with keep_dtype 0 to train it",
                              name, peft_dtype_name(m->params[i].t->dtype));
        if ((st = peft_adapter_add_param(ad, name, m->params[i].t, 0)) != PEFT_OK) return st;
    }
    return PEFT_OK;
}

const peft_strategy peft__strategy_full = {
    .struct_size = sizeof(peft_strategy),
    .name = "full",
    .description = "full fine-tuning: every parameter (or the top N blocks) trains",
    .attach = full_attach,
};
