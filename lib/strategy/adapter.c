/* The adapter: a strategy attached to a model. It owns the trainable tensors
 * the strategy creates, remembers which model tensors it made trainable and
 * which projections it hooked, and undoes all of it when destroyed. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "strategy_internal.h"

peft_task peft_task_default(peft_task_kind kind)
{
    peft_task t;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    t.kind = kind;
    t.n_classes = 2;
    t.pooling = PEFT_POOL_LAST;
    t.feature_layer = -1;
    return t;
}

peft_status peft__check_opts(peft_adapter *ad, const void *opts, size_t expected, const char *strategy)
{
    if (!opts) return PEFT_OK;
    size_t got = *(const size_t *)opts;
    if (got != expected)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "%s: options struct_size %zu, expected %zu (use the _default function)",
                          strategy, got, expected);
    return PEFT_OK;
}

static peft_status check_task(peft_ctx *ctx, const peft_model *m, const peft_task *t)
{
    if (t->struct_size != sizeof *t)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_attach: task struct_size %zu (use peft_task_default)",
                          t->struct_size);
    if (t->kind != PEFT_TASK_LM && t->kind != PEFT_TASK_CLASSIFY)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_attach: unknown task %d", (int)t->kind);
    if (t->kind == PEFT_TASK_CLASSIFY) {
        if (t->n_classes < 2 || t->n_classes > 1 << 20)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_attach: n_classes %d (must be >= 2)", t->n_classes);
        if (t->pooling != PEFT_POOL_LAST && t->pooling != PEFT_POOL_MEAN)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_attach: unknown pooling %d", (int)t->pooling);
        if (t->feature_layer < -1 || t->feature_layer >= m->cfg.n_layer)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_attach: feature_layer %d (model has %lld blocks)",
                              t->feature_layer, (long long)m->cfg.n_layer);
    }
    return PEFT_OK;
}

peft_status peft_adapter_attach(peft_model *m, const char *name, const peft_task *task, const void *opts,
                                peft_adapter **out)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = m->ctx;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_attach: out is NULL");
    *out = NULL;
    if (!name) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_attach: strategy name is NULL");
    if (m->adapter)
        return peft__fail(ctx, PEFT_ERR_STATE, "peft_adapter_attach: the model already has an adapter (destroy it first)");
    const peft_strategy *s = peft__strategy_find(ctx, name);
    if (!s) return peft__fail(ctx, PEFT_ERR_NOT_FOUND, "peft_adapter_attach: no strategy called \"%s\"", name);
    peft_task t = task ? *task : peft_task_default(PEFT_TASK_LM);
    peft_status st = check_task(ctx, m, &t);
    if (st != PEFT_OK) return st;
    peft_adapter *ad = peft__calloc(ctx, 1, sizeof *ad);
    if (!ad) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_adapter_attach: out of memory");
    ad->ctx = ctx;
    ad->model = m;
    ad->strat = *s;
    ad->task = t;
    ad->n_groups = 1;
    snprintf(ad->groups[0].name, sizeof ad->groups[0].name, "default");
    ad->groups[0].lr_scale = 1.0f;
    ad->groups[0].weight_decay = -1.0f;
    ad->hooked = peft__calloc(ctx, m->n_linears + 1, sizeof *ad->hooked);
    if (!ad->hooked) {
        peft__free(ctx, ad);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_adapter_attach: out of memory");
    }
    m->adapter = ad;
    /* the base starts frozen; the strategy decides what trains */
    st = peft_model_set_trainable(m, 0);
    if (st == PEFT_OK) st = s->attach(ad, opts);
    if (st == PEFT_OK && t.kind == PEFT_TASK_CLASSIFY && !ad->head_w[0]) st = peft_adapter_set_head(ad, 0, 0, PEFT_ACT_GELU, 0.0f);
    if (st != PEFT_OK) {
        char why[PEFT__ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", peft_ctx_errmsg(ctx));
        peft_adapter_destroy(ad);
        return peft__fail(ctx, st, "%s", why);
    }
    *out = ad;
    return PEFT_OK;
}

void peft_adapter_destroy(peft_adapter *ad)
{
    if (!ad) return;
    peft_ctx *ctx = ad->ctx;
    peft_model *m = ad->model;
    if (ad->strat.detach) ad->strat.detach(ad);
    for (size_t i = 0; i < m->n_linears; i++)
        if (ad->hooked[i]) {
            m->linears[i]->hook = NULL;
            m->linears[i]->hook_user = NULL;
        }
    if (ad->hidden_hooked) {
        m->hidden_hook = NULL;
        m->hidden_user = NULL;
    }
    for (size_t i = 0; i < ad->n_train; i++) {
        if (ad->train[i].owned) peft_tensor_destroy(ad->train[i].t);
        else peft_tensor_set_requires_grad(ad->train[i].t, 0);
    }
    for (size_t i = 0; i < ad->cache_cap; i++) peft__free(ctx, ad->cache[i].data);
    peft__free(ctx, ad->cache);
    peft__free(ctx, ad->train);
    peft__free(ctx, ad->hooked);
    m->adapter = NULL;
    peft__free(ctx, ad);
}

peft_model *peft_adapter_model(const peft_adapter *ad) { return ad ? ad->model : NULL; }
peft_ctx *peft_adapter_ctx(const peft_adapter *ad) { return ad ? ad->ctx : NULL; }
const char *peft_adapter_strategy(const peft_adapter *ad) { return ad ? ad->strat.name : NULL; }
const peft_task *peft_adapter_task(const peft_adapter *ad) { return ad ? &ad->task : NULL; }
void peft_adapter_set_state(peft_adapter *ad, void *state)
{
    if (ad) ad->state = state;
}
void *peft_adapter_state(const peft_adapter *ad) { return ad ? ad->state : NULL; }

void peft__adapter_cache_features(peft_adapter *ad, bool on) { ad->cache_features = on; }

peft_status peft_adapter_add_group(peft_adapter *ad, const char *name, float lr_scale, float weight_decay, int *group)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (!name || !group) return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_add_group: NULL argument");
    if (!isfinite(lr_scale) || lr_scale < 0 || !isfinite(weight_decay))
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_add_group: lr_scale %g, weight_decay %g", lr_scale,
                          weight_decay);
    if (ad->n_groups == PEFT__MAX_GROUPS)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_add_group: at most %d groups", PEFT__MAX_GROUPS);
    peft__group *g = &ad->groups[ad->n_groups];
    snprintf(g->name, sizeof g->name, "%s", name);
    g->lr_scale = lr_scale;
    g->weight_decay = weight_decay;
    *group = ad->n_groups++;
    return PEFT_OK;
}

static peft_status push(peft_adapter *ad, const char *name, peft_tensor *t, int group, bool owned)
{
    if (group < 0 || group >= ad->n_groups)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "adapter: group %d does not exist", group);
    for (size_t i = 0; i < ad->n_train; i++) {
        if (ad->train[i].t == t)
            return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "adapter: tensor '%s' is already trainable", name);
        if (!strcmp(ad->train[i].name, name))
            return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "adapter: a trainable tensor is already called '%s'", name);
    }
    if (ad->n_train == ad->cap_train) {
        size_t cap = ad->cap_train ? ad->cap_train * 2 : 32;
        peft__trainable *n = peft__calloc(ad->ctx, cap, sizeof *n);
        if (!n) return peft__fail(ad->ctx, PEFT_ERR_NOMEM, "adapter: out of memory");
        if (ad->n_train) memcpy(n, ad->train, ad->n_train * sizeof *n);
        peft__free(ad->ctx, ad->train);
        ad->train = n;
        ad->cap_train = cap;
    }
    peft__trainable *tr = &ad->train[ad->n_train++];
    snprintf(tr->name, sizeof tr->name, "%s", name);
    tr->t = t;
    tr->group = group;
    tr->owned = owned;
    return PEFT_OK;
}

peft_status peft_adapter_new_param(peft_adapter *ad, const char *name, int ndim, const int64_t *shape, int group,
                                   peft_tensor **out)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (!out || !name) return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_new_param: NULL argument");
    *out = NULL;
    if (strlen(name) >= PEFT__NAME_MAX)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_new_param: name longer than %d bytes", PEFT__NAME_MAX - 1);
    peft_tensor *t = NULL;
    peft_status st = peft_tensor_create(ad->ctx, PEFT_DTYPE_F32, ndim, shape, &t);
    if (st == PEFT_OK) st = peft_tensor_set_requires_grad(t, 1);
    if (st == PEFT_OK) st = peft_tensor_set_name(t, name);
    if (st == PEFT_OK) st = push(ad, name, t, group, true);
    if (st != PEFT_OK) {
        peft_tensor_destroy(t);
        return st;
    }
    *out = t;
    return PEFT_OK;
}

peft_status peft_adapter_add_param(peft_adapter *ad, const char *name, peft_tensor *t, int group)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (!name || !t) return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_add_param: NULL argument");
    if (strlen(name) >= PEFT__NAME_MAX)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_add_param: name longer than %d bytes", PEFT__NAME_MAX - 1);
    if (t->dtype != PEFT_DTYPE_F32)
        return peft__fail(ad->ctx, PEFT_ERR_DTYPE, "peft_adapter_add_param: '%s' is stored as %s; only f32 tensors train",
                          name, peft_dtype_name(t->dtype));
    peft_status st = push(ad, name, t, group, false);
    if (st != PEFT_OK) return st;
    st = peft_tensor_set_requires_grad(t, 1);
    if (st != PEFT_OK) ad->n_train--;
    return st;
}

size_t peft_adapter_n_trainable(const peft_adapter *ad) { return ad ? ad->n_train : 0; }

peft_status peft_adapter_trainable(const peft_adapter *ad, size_t i, const char **name, peft_tensor **tensor, int *group)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (i >= ad->n_train)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_trainable: index %zu >= %zu", i, ad->n_train);
    if (name) *name = ad->train[i].name;
    if (tensor) *tensor = ad->train[i].t;
    if (group) *group = ad->train[i].group;
    return PEFT_OK;
}

int64_t peft_adapter_trainable_numel(const peft_adapter *ad)
{
    int64_t n = 0;
    for (size_t i = 0; ad && i < ad->n_train; i++) n += peft_tensor_numel(ad->train[i].t);
    return n;
}

size_t peft_adapter_n_groups(const peft_adapter *ad) { return ad ? (size_t)ad->n_groups : 0; }

peft_status peft_adapter_group(const peft_adapter *ad, int group, const char **name, float *lr_scale, float *weight_decay)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (group < 0 || group >= ad->n_groups)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_group: group %d does not exist", group);
    if (name) *name = ad->groups[group].name;
    if (lr_scale) *lr_scale = ad->groups[group].lr_scale;
    if (weight_decay) *weight_decay = ad->groups[group].weight_decay;
    return PEFT_OK;
}

peft_status peft_adapter_hook_linear(peft_adapter *ad, size_t i, peft_linear_hook fn, void *user)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    peft_model *m = ad->model;
    if (i >= m->n_linears)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_hook_linear: index %zu >= %zu", i, m->n_linears);
    if (fn && m->linears[i]->hook && !ad->hooked[i])
        return peft__fail(ad->ctx, PEFT_ERR_STATE, "peft_adapter_hook_linear: %s is already hooked", m->linears[i]->name);
    m->linears[i]->hook = fn;
    m->linears[i]->hook_user = fn ? user : NULL;
    ad->hooked[i] = fn != NULL;
    return PEFT_OK;
}

peft_status peft_adapter_hook_hidden(peft_adapter *ad, peft_hidden_hook fn, void *user)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    ad->model->hidden_hook = fn;
    ad->model->hidden_user = fn ? user : NULL;
    ad->hidden_hooked = fn != NULL;
    return PEFT_OK;
}

int peft_target_matches(const char *targets, const char *module)
{
    if (!targets || !module) return 0;
    if (!strcmp(targets, "all-linear")) return 1;
    size_t ml = strlen(module);
    const char *p = targets;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && *p == ' ') p++, n--;
        while (n && p[n - 1] == ' ') n--;
        if (n) {
            if (n == ml && !strncmp(module, p, n)) return 1;
            if (n < ml && module[ml - n - 1] == '.' && !strncmp(module + ml - n, p, n)) return 1;
        }
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

peft_status peft__activate(peft_ctx *ctx, peft_activation act, peft_tensor *x, peft_tensor **y)
{
    switch (act) {
    case PEFT_ACT_GELU: return peft_gelu(ctx, x, y);
    case PEFT_ACT_RELU: return peft_relu(ctx, x, y);
    case PEFT_ACT_SILU: return peft_silu(ctx, x, y);
    default: return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "unknown activation %d", (int)act);
    }
}

peft_status peft_adapter_set_head(peft_adapter *ad, int depth, int64_t width, peft_activation act, float dropout)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = ad->ctx;
    if (ad->task.kind != PEFT_TASK_CLASSIFY)
        return peft__fail(ctx, PEFT_ERR_STATE, "peft_adapter_set_head: the task is not classification");
    if (ad->head_w[0]) return peft__fail(ctx, PEFT_ERR_STATE, "peft_adapter_set_head: the head exists already");
    if (depth < 0 || depth > 8 || width < 0 || width > 1 << 16 || !(dropout >= 0 && dropout < 1) ||
        (unsigned)act >= PEFT_ACT_COUNT)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_adapter_set_head: depth %d, width %lld, activation %d, dropout %g",
                          depth, (long long)width, (int)act, dropout);
    const int64_t C = ad->model->cfg.d_model;
    if (width == 0) width = C;
    ad->head_depth = depth;
    ad->head_dropout = dropout;
    ad->head_act = act;
    int64_t in = C;
    for (int l = 0; l <= depth; l++) {
        const int64_t out = l == depth ? ad->task.n_classes : width;
        char nw[64], nb[64];
        if (l == depth) {
            snprintf(nw, sizeof nw, "score.weight");
            snprintf(nb, sizeof nb, "score.bias");
        } else {
            snprintf(nw, sizeof nw, "head.%d.weight", l);
            snprintf(nb, sizeof nb, "head.%d.bias", l);
        }
        int64_t sw[2] = {out, in};
        peft_status st = peft_adapter_new_param(ad, nw, 2, sw, 0, &ad->head_w[l]);
        if (st == PEFT_OK) st = peft_adapter_new_param(ad, nb, 1, &out, 0, &ad->head_b[l]);
        /* nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in)) for both */
        if (st == PEFT_OK) st = peft_tensor_init_kaiming_uniform(ad->head_w[l], sqrtf(5.0f), in);
        if (st == PEFT_OK) st = peft_tensor_init_kaiming_uniform(ad->head_b[l], sqrtf(5.0f), in);
        if (st != PEFT_OK) return st;
        in = out;
    }
    return PEFT_OK;
}

peft_status peft_adapter_on_epoch(peft_adapter *ad, int epoch)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    return ad->strat.on_epoch ? ad->strat.on_epoch(ad, epoch) : PEFT_OK;
}

peft_status peft_adapter_merge(peft_adapter *ad)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (!ad->strat.merge)
        return peft__fail(ad->ctx, PEFT_ERR_UNSUPPORTED, "strategy \"%s\" cannot merge", ad->strat.name);
    if (ad->merged) return peft__fail(ad->ctx, PEFT_ERR_STATE, "adapter is already merged");
    peft_status st = ad->strat.merge(ad);
    if (st == PEFT_OK) ad->merged = true;
    return st;
}

peft_status peft_adapter_unmerge(peft_adapter *ad)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    if (!ad->strat.unmerge)
        return peft__fail(ad->ctx, PEFT_ERR_UNSUPPORTED, "strategy \"%s\" cannot unmerge", ad->strat.name);
    if (!ad->merged) return peft__fail(ad->ctx, PEFT_ERR_STATE, "adapter is not merged");
    peft_status st = ad->strat.unmerge(ad);
    if (st == PEFT_OK) ad->merged = false;
    return st;
}

peft_status peft_adapter_save(const peft_adapter *ad, const char *path)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = ad->ctx;
    const char **names = peft__calloc(ctx, ad->n_train + 1, sizeof *names);
    peft_tensor **ts = peft__calloc(ctx, ad->n_train + 1, sizeof *ts);
    peft_status st = (names && ts) ? PEFT_OK : peft__fail(ctx, PEFT_ERR_NOMEM, "peft_adapter_save: out of memory");
    for (size_t i = 0; st == PEFT_OK && i < ad->n_train; i++) {
        names[i] = ad->train[i].name;
        ts[i] = ad->train[i].t;
    }
    const char *mk[2] = {"format", "peft_strategy"}, *mv[2] = {"pt", ad->strat.name};
    if (st == PEFT_OK) st = peft_safetensors_save(ctx, path, ad->n_train, names, ts, 2, mk, mv);
    peft__free(ctx, names);
    peft__free(ctx, ts);
    return st;
}

peft_status peft_adapter_load(peft_adapter *ad, const char *path)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = ad->ctx;
    peft_safetensors *sf = NULL;
    peft_status st = peft_safetensors_open(ctx, path, &sf);
    if (st != PEFT_OK) return st;
    for (size_t i = 0; st == PEFT_OK && i < ad->n_train; i++) {
        size_t idx;
        peft_tensor *src = NULL, *dst = ad->train[i].t;
        if (peft_safetensors_find(sf, ad->train[i].name, &idx) != PEFT_OK) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: tensor '%s' is missing", path, ad->train[i].name);
            break;
        }
        st = peft_safetensors_load(sf, idx, PEFT_DTYPE_F32, &src);
        if (st == PEFT_OK) {
            bool same = src->ndim == dst->ndim;
            for (int d = 0; same && d < dst->ndim; d++) same = src->shape[d] == dst->shape[d];
            char a[64], b[64];
            if (!same)
                st = peft__fail(ctx, PEFT_ERR_SHAPE, "%s: tensor '%s' has shape %s, the adapter needs %s", path,
                                ad->train[i].name, peft__shape_str(src, a, sizeof a), peft__shape_str(dst, b, sizeof b));
            else
                memcpy(dst->data, src->data, peft_tensor_nbytes(dst));
        }
        peft_tensor_destroy(src);
    }
    peft_safetensors_close(sf);
    return st;
}
