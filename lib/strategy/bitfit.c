/* BitFit (Ben Zaken et al. 2021): only the bias terms train. Llama has no
 * biases, so there the norm gains train instead (PEFT's LN-tuning set), which
 * is the nearest equivalent; the classification head always trains. */
#include <string.h>

#include "strategy_internal.h"

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static peft_status bitfit_attach(peft_adapter *ad, const void *opts)
{
    (void)opts;
    peft_model *m = ad->model;
    const bool llama = m->cfg.arch == PEFT_ARCH_LLAMA;
    for (size_t i = 0; i < m->n_params; i++) {
        const char *name = m->params[i].name;
        bool train = llama ? (strstr(name, "norm.weight") != NULL) : ends_with(name, ".bias");
        if (!train) continue;
        peft_status st = peft_adapter_add_param(ad, name, m->params[i].t, 0);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

const peft_strategy peft__strategy_bitfit = {
    .struct_size = sizeof(peft_strategy),
    .name = "bitfit",
    .description = "BitFit: only biases train (Llama: norm gains)",
    .attach = bitfit_attach,
};
