/* Running an adapter on a batch: the causal-LM loss, sequence classification
 * (pooled hidden state -> head -> cross-entropy), evaluation, and the feature
 * cache of feature extraction (the base runs once per example). */
#include <math.h>
#include <string.h>

#include "strategy_internal.h"


static const int32_t IGNORE = -100;

static peft_status check_batch(peft_adapter *ad, const peft_batch *b, const char *fn)
{
    peft_ctx *ctx = ad->ctx;
    if (!b) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: batch is NULL", fn);
    if (b->B <= 0 || b->T <= 0 || !b->ids)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: batch needs B > 0, T > 0 and ids (B %lld, T %lld)", fn,
                          (long long)b->B, (long long)b->T);
    if (ad->task.kind == PEFT_TASK_CLASSIFY) {
        if (!b->labels) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: a classification batch needs labels", fn);
        for (int64_t i = 0; i < b->B; i++)
            if (b->labels[i] < 0 || b->labels[i] >= ad->task.n_classes)
                return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: labels[%lld] = %d is outside the %d classes", fn,
                                  (long long)i, b->labels[i], ad->task.n_classes);
    }
    if (b->mask)
        for (int64_t i = 0; i < b->B; i++) {
            int64_t len = 0;
            while (len < b->T && b->mask[i * b->T + len]) len++;
            if (len == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: row %lld has no real token", fn, (long long)i);
            for (int64_t t = len; t < b->T; t++)
                if (b->mask[i * b->T + t])
                    return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: row %lld has padding before a real token", fn,
                                      (long long)i);
        }
    return PEFT_OK;
}

static int64_t row_len(const peft_batch *b, int64_t i)
{
    if (!b->mask) return b->T;
    int64_t len = 0;
    while (len < b->T && b->mask[i * b->T + len]) len++;
    return len;
}

static peft_status i32_tensor(peft_ctx *ctx, int ndim, const int64_t *shape, const int32_t *src, peft_tensor **out)
{
    PEFT__TRY(peft__new_scratch(ctx, "adapter", PEFT_DTYPE_I32, ndim, shape, out));
    if (src) memcpy((*out)->data, src, (size_t)peft__numel(ndim, shape) * sizeof(int32_t));
    return PEFT_OK;
}

/* LM targets: ids[t+1] where t+1 is real (mask) and wanted (loss_mask), else ignored. */
static peft_status lm_targets(peft_adapter *ad, const peft_batch *b, peft_tensor **out)
{
    int64_t shape[2] = {b->B, b->T};
    PEFT__TRY(i32_tensor(ad->ctx, 2, shape, NULL, out));
    int32_t *tg = (*out)->data;
    for (int64_t i = 0; i < b->B; i++)
        for (int64_t t = 0; t < b->T; t++) {
            int64_t n = i * b->T + t;
            bool ok = t + 1 < b->T && (!b->mask || b->mask[n + 1]) && (!b->loss_mask || b->loss_mask[n + 1]);
            tg[n] = ok ? b->ids[n + 1] : IGNORE;
        }
    return PEFT_OK;
}

/* Hidden state for classification: after block feature_layer or the final norm. */
static peft_status class_hidden(peft_adapter *ad, peft_tensor *ids, peft_tensor **h)
{
    peft_model *m = ad->model;
    if (ad->task.feature_layer < 0) return peft_model_forward_hidden(m, ids, h);
    peft_tensor **hidden = peft__scratch(ad->ctx, (size_t)m->cfg.n_layer * sizeof *hidden, "adapter");
    if (!hidden) return PEFT_ERR_NOMEM;
    peft_tensor *out;
    PEFT__TRY(peft__run_blocks(m, NULL, ids, hidden, &out));
    *h = hidden[ad->task.feature_layer];
    return PEFT_OK;
}

/* [B, T, C] -> [B, C]: the last real token, or the mean over real tokens. */
static peft_status pool(peft_adapter *ad, const peft_batch *b, peft_tensor *h, peft_tensor **out)
{
    peft_ctx *ctx = ad->ctx;
    const int64_t B = b->B, T = b->T, C = h->shape[2];
    if (ad->task.pooling == PEFT_POOL_MEAN) {
        int64_t sw[3] = {B, T, 1};
        peft_tensor *w, *hw;
        PEFT__TRY(peft__new_output(ctx, "pool", 3, sw, &w));
        float *wd = w->data;
        for (int64_t i = 0; i < B; i++) {
            int64_t len = row_len(b, i);
            for (int64_t t = 0; t < T; t++) wd[i * T + t] = t < len ? 1.0f / (float)len : 0.0f;
        }
        PEFT__TRY(peft_mul(ctx, h, w, &hw));
        return peft_sum_axis(ctx, hw, 1, out);
    }
    peft_tensor *rows[1024];
    if (B > 1024) return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "pooling: batch of %lld rows (max 1024)", (long long)B);
    for (int64_t i = 0; i < B; i++) {
        peft_tensor *r;
        PEFT__TRY(peft_slice(ctx, h, 0, i, 1, &r));
        PEFT__TRY(peft_slice(ctx, r, 1, row_len(b, i) - 1, 1, &rows[i]));
    }
    peft_tensor *cat;
    PEFT__TRY(peft_concat(ctx, rows, (int)B, 0, &cat)); /* [B, 1, C] */
    int64_t s2[2] = {B, C};
    return peft_reshape(ctx, cat, 2, s2, out);
}

/* The classification head on features [B, C] -> logits [B, n_classes]. */
static peft_status head(peft_adapter *ad, peft_tensor *x, int training, peft_tensor **out)
{
    peft_ctx *ctx = ad->ctx;
    for (int l = 0; l < ad->head_depth; l++) {
        peft_tensor *y, *a;
        PEFT__TRY(peft_linear(ctx, x, ad->head_w[l], ad->head_b[l], &y));
        PEFT__TRY(peft__activate(ctx, ad->head_act, y, &a));
        PEFT__TRY(peft_dropout(ctx, a, ad->head_dropout, training, &x));
    }
    return peft_linear(ctx, x, ad->head_w[ad->head_depth], ad->head_b[ad->head_depth], out);
}

/* ---- the feature cache ---- */

static peft_status cache_slot(peft_adapter *ad, int64_t id, peft__feature **slot)
{
    if (id < 0 || id >= (1LL << 31)) return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "example id %lld", (long long)id);
    if ((size_t)id >= ad->cache_cap) {
        size_t cap = ad->cache_cap ? ad->cache_cap : 256;
        while (cap <= (size_t)id) cap *= 2;
        peft__feature *n = peft__calloc(ad->ctx, cap, sizeof *n);
        if (!n) return peft__fail(ad->ctx, PEFT_ERR_NOMEM, "feature cache: out of memory");
        if (ad->cache_cap) memcpy(n, ad->cache, ad->cache_cap * sizeof *n);
        peft__free(ad->ctx, ad->cache);
        ad->cache = n;
        ad->cache_cap = cap;
    }
    *slot = &ad->cache[id];
    return PEFT_OK;
}

/* Base features of the batch, from the cache where possible: CLASSIFY gives
 * pooled [B, C]; LM gives final hidden states [B, T, C]. Never recorded. */
static peft_status features(peft_adapter *ad, const peft_batch *b, peft_tensor **out)
{
    peft_ctx *ctx = ad->ctx;
    const int64_t B = b->B, T = b->T, C = ad->model->cfg.d_model;
    const bool lm = ad->task.kind == PEFT_TASK_LM;
    const int64_t per = lm ? T * C : C;
    bool all_cached = b->example_ids != NULL;
    for (int64_t i = 0; all_cached && i < B; i++) {
        int64_t id = b->example_ids[i];
        all_cached = id >= 0 && (size_t)id < ad->cache_cap && ad->cache[id].data && ad->cache[id].T == T &&
                     ad->cache[id].set == b->example_set;
    }
    int64_t shape[3] = {B, T, C}, pshape[2] = {B, C};
    peft_tensor *f;
    PEFT__TRY(peft__new_output(ctx, "features", lm ? 3 : 2, lm ? shape : pshape, &f));
    float *fd = f->data;
    if (!all_cached) {
        const size_t mark = peft_arena_mark(ctx->arena); /* the base forward's scratch dies once copied */
        int prev = peft_set_grad_enabled(ctx, 0);
        peft_tensor *ids, *h, *p;
        peft_status st = i32_tensor(ctx, 2, shape, b->ids, &ids);
        if (st == PEFT_OK) st = lm ? peft_model_forward_hidden(ad->model, ids, &h) : class_hidden(ad, ids, &h);
        if (st == PEFT_OK && !lm) st = pool(ad, b, h, &p);
        peft_set_grad_enabled(ctx, prev);
        if (st != PEFT_OK) return st;
        memcpy(fd, (lm ? h : p)->data, (size_t)(B * per) * sizeof(float));
        for (int64_t i = 0; b->example_ids && i < B; i++) {
            peft__feature *slot = NULL;
            PEFT__TRY(cache_slot(ad, b->example_ids[i], &slot));
            if (!slot->data || slot->T != T) {
                peft__free(ctx, slot->data);
                slot->data = peft__malloc(ctx, (size_t)per * sizeof(float));
                if (!slot->data) return peft__fail(ctx, PEFT_ERR_NOMEM, "feature cache: out of memory");
                slot->T = T;
            }
            slot->set = b->example_set;
            memcpy(slot->data, fd + i * per, (size_t)per * sizeof(float));
        }
        PEFT__TRY(peft_arena_rewind(ctx->arena, mark));
    } else {
        for (int64_t i = 0; i < B; i++) memcpy(fd + i * per, ad->cache[b->example_ids[i]].data, (size_t)per * sizeof(float));
    }
    *out = f;
    return PEFT_OK;
}

/* ---- logits of a batch (recorded when gradients are on) ---- */

static peft_status batch_logits(peft_adapter *ad, const peft_batch *b, int training, peft_tensor **logits)
{
    peft_ctx *ctx = ad->ctx;
    peft_model *m = ad->model;
    int64_t shape[2] = {b->B, b->T};
    if (ad->task.kind == PEFT_TASK_LM) {
        if (ad->cache_features) {
            peft_tensor *h;
            PEFT__TRY(features(ad, b, &h));
            return peft_linear(ctx, h, ad->lm_head ? ad->lm_head : m->head.w, NULL, logits);
        }
        peft_tensor *ids;
        PEFT__TRY(i32_tensor(ctx, 2, shape, b->ids, &ids));
        return peft_model_forward(m, ids, logits, NULL);
    }
    peft_tensor *p;
    if (ad->cache_features) {
        PEFT__TRY(features(ad, b, &p));
    } else {
        peft_tensor *ids, *h;
        PEFT__TRY(i32_tensor(ctx, 2, shape, b->ids, &ids));
        PEFT__TRY(class_hidden(ad, ids, &h));
        PEFT__TRY(pool(ad, b, h, &p));
    }
    return head(ad, p, training, logits);
}

peft_status peft_adapter_loss(peft_adapter *ad, const peft_batch *b, int training, peft_tensor **loss)
{
    static const char fn[] = "peft_adapter_loss";
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (!loss) return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "%s: loss is NULL", fn);
    *loss = NULL;
    PEFT__TRY(check_batch(ad, b, fn));
    peft_tensor *logits, *targets, *h = NULL;
    peft_status st;
    ad->training = training != 0;
    if (ad->task.kind == PEFT_TASK_LM) {
        /* the final hidden state, then the fused head + loss: no [B*T, V] logits are kept */
        st = lm_targets(ad, b, &targets);
        if (st == PEFT_OK && ad->cache_features) {
            st = features(ad, b, &h);
        } else if (st == PEFT_OK) {
            peft_tensor *ids;
            int64_t shape[2] = {b->B, b->T};
            st = i32_tensor(ad->ctx, 2, shape, b->ids, &ids);
            if (st == PEFT_OK) st = peft__run_blocks(ad->model, NULL, ids, NULL, &h);
            if (st == PEFT_OK && ad->model->hidden_hook) st = ad->model->hidden_hook(ad->ctx, h, ad->model->hidden_user, &h);
        }
        if (st == PEFT_OK) st = peft__head_loss(ad->model, h, targets, IGNORE, loss);
        ad->training = false;
        return st;
    }
    st = batch_logits(ad, b, training, &logits);
    ad->training = false;
    PEFT__TRY(st);
    PEFT__TRY(i32_tensor(ad->ctx, 1, &b->B, b->labels, &targets));
    return peft_cross_entropy(ad->ctx, logits, targets, IGNORE, loss);
}

peft_status peft_adapter_eval(peft_adapter *ad, const peft_batch *b, double *loss_sum, int64_t *count, int64_t *correct)
{
    static const char fn[] = "peft_adapter_eval";
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (!loss_sum || !count || !correct) return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "%s: NULL output", fn);
    *loss_sum = 0, *count = 0, *correct = 0;
    PEFT__TRY(check_batch(ad, b, fn));
    peft_ctx *ctx = ad->ctx;
    int prev = peft_set_grad_enabled(ctx, 0);
    peft_tensor *logits = NULL, *targets = NULL;
    peft_status st = batch_logits(ad, b, 0, &logits);
    if (st == PEFT_OK)
        st = ad->task.kind == PEFT_TASK_LM ? lm_targets(ad, b, &targets) : i32_tensor(ctx, 1, &b->B, b->labels, &targets);
    if (st == PEFT_OK) {
        const int64_t V = logits->shape[logits->ndim - 1], N = peft__rows(logits);
        const float *lg = logits->data;
        const int32_t *tg = targets->data;
        for (int64_t n = 0; n < N; n++) {
            if (tg[n] == IGNORE) continue;
            const float *row = lg + n * V;
            int64_t best = 0;
            for (int64_t v = 1; v < V; v++)
                if (row[v] > row[best]) best = v;
            double s = 0.0;
            for (int64_t v = 0; v < V; v++) s += exp((double)row[v] - row[best]);
            *loss_sum += log(s) + row[best] - row[tg[n]];
            *count += 1;
            *correct += best == tg[n];
        }
    }
    peft_graph_release(ctx);
    peft_set_grad_enabled(ctx, prev);
    return st;
}

peft_status peft_adapter_classify(peft_adapter *ad, const peft_batch *b, float *out)
{
    static const char fn[] = "peft_adapter_classify";
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    if (ad->task.kind != PEFT_TASK_CLASSIFY) return peft__fail(ad->ctx, PEFT_ERR_STATE, "%s: not a classification task", fn);
    if (!b || b->B <= 0 || b->T <= 0 || !b->ids) return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "%s: empty batch", fn);
    peft_batch nb = *b;
    peft_ctx *ctx = ad->ctx;
    int prev = peft_set_grad_enabled(ctx, 0);
    peft_tensor *logits = NULL;
    peft_status st = batch_logits(ad, &nb, 0, &logits);
    if (st == PEFT_OK) memcpy(out, logits->data, (size_t)(b->B * ad->task.n_classes) * sizeof(float));
    peft_graph_release(ctx);
    peft_set_grad_enabled(ctx, prev);
    return st;
}
