/* Feature extraction: the base is frozen and only used to compute features,
 * once per example (the adapter caches them by example id); a classifier
 * (logistic regression, or a small MLP) trains on the cached features.
 * For the LM task the "classifier" is a new output layer over the vocabulary,
 * initialised from the model's LM head, trained on cached final hidden states. */
#include <string.h>

#include "strategy_internal.h"

peft_feature_opts peft_feature_opts_default(void)
{
    peft_feature_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    return o;
}

static peft_status feature_attach(peft_adapter *ad, const void *opts)
{
    peft_status st = peft__check_opts(ad, opts, sizeof(peft_feature_opts), "feature");
    if (st != PEFT_OK) return st;
    peft_feature_opts o = opts ? *(const peft_feature_opts *)opts : peft_feature_opts_default();
    if (o.depth < 0 || o.depth > 8 || o.width < 0 || (unsigned)o.activation >= PEFT_ACT_COUNT)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "feature: depth %d (0..8), width %lld", o.depth, (long long)o.width);
    peft__adapter_cache_features(ad, true);
    if (peft_adapter_task(ad)->kind == PEFT_TASK_CLASSIFY) return peft_adapter_set_head(ad, o.depth, o.width, o.activation, 0.0f);
    peft_model *m = ad->model;
    peft_tensor *head = m->head.w;
    int64_t shape[2] = {head->shape[0], head->shape[1]};
    if ((st = peft_adapter_new_param(ad, "lm_head.weight", 2, shape, 0, &ad->lm_head)) != PEFT_OK) return st;
    st = peft_tensor_copy_out(head, ad->lm_head->data, PEFT_DTYPE_F32, (size_t)(shape[0] * shape[1]));
    if (st != PEFT_OK) return st;
    /* the model's own forward and generation use the new output layer while attached */
    peft_adapter_set_state(ad, head);
    m->head.w = ad->lm_head;
    return PEFT_OK;
}

static void feature_detach(peft_adapter *ad)
{
    peft_tensor *old = peft_adapter_state(ad);
    if (old) ad->model->head.w = old;
}

const peft_strategy peft__strategy_feature = {
    .struct_size = sizeof(peft_strategy),
    .name = "feature",
    .description = "feature extraction: frozen base computes features once; a classifier trains on them",
    .attach = feature_attach,
    .detach = feature_detach,
};
