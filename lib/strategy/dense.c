/* Frozen base + new dense layers ("fine-tuning I").
 * LM: h' = h + MLP(h) on the final hidden state before the frozen LM head;
 *     the MLP's last layer starts at zero, so training starts from the base.
 * CLASSIFY: an MLP head (depth hidden layers of width, GELU, dropout). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "strategy_internal.h"

peft_dense_opts peft_dense_opts_default(void)
{
    peft_dense_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.depth = 1;
    o.dropout = 0.1f;
    return o;
}

typedef struct dense_state {
    int depth;
    peft_activation act;
    float dropout;
    peft_tensor *w[9], *b[9]; /* depth hidden layers + the output projection back to C */
    peft_adapter *ad;
} dense_state;

static peft_status dense_hidden(peft_ctx *ctx, peft_tensor *h, void *user, peft_tensor **out)
{
    dense_state *s = user;
    peft_tensor *x = h;
    for (int l = 0; l <= s->depth; l++) {
        peft_tensor *y;
        peft_status st = peft_linear(ctx, x, s->w[l], s->b[l], &y);
        if (st != PEFT_OK) return st;
        if (l < s->depth) {
            peft_tensor *a;
            if ((st = peft__activate(ctx, s->act, y, &a)) != PEFT_OK) return st;
            if ((st = peft_dropout(ctx, a, s->dropout, s->ad->training, &y)) != PEFT_OK) return st;
        }
        x = y;
    }
    return peft_add(ctx, h, x, out);
}

static peft_status dense_attach(peft_adapter *ad, const void *opts)
{
    peft_status st = peft__check_opts(ad, opts, sizeof(peft_dense_opts), "dense");
    if (st != PEFT_OK) return st;
    peft_dense_opts o = opts ? *(const peft_dense_opts *)opts : peft_dense_opts_default();
    if (o.depth < 1 || o.depth > 8 || o.width < 0 || !(o.dropout >= 0 && o.dropout < 1) ||
        (unsigned)o.activation >= PEFT_ACT_COUNT)
        return peft__fail(ad->ctx, PEFT_ERR_INVALID_ARG, "dense: depth %d (1..8), width %lld, dropout %g, activation %d",
                          o.depth, (long long)o.width, o.dropout, (int)o.activation);
    if (peft_adapter_task(ad)->kind == PEFT_TASK_CLASSIFY)
        return peft_adapter_set_head(ad, o.depth, o.width, o.activation, o.dropout);
    const int64_t C = ad->model->cfg.d_model, W = o.width ? o.width : C;
    dense_state *s = peft__calloc(ad->ctx, 1, sizeof *s);
    if (!s) return peft__fail(ad->ctx, PEFT_ERR_NOMEM, "dense: out of memory");
    peft_adapter_set_state(ad, s);
    s->depth = o.depth;
    s->act = o.activation;
    s->dropout = o.dropout;
    s->ad = ad;
    int64_t in = C;
    for (int l = 0; l <= o.depth; l++) {
        int64_t out = l == o.depth ? C : W;
        char nw[64], nb[64];
        snprintf(nw, sizeof nw, "dense.%d.weight", l);
        snprintf(nb, sizeof nb, "dense.%d.bias", l);
        int64_t sw[2] = {out, in};
        if ((st = peft_adapter_new_param(ad, nw, 2, sw, 0, &s->w[l])) != PEFT_OK) return st;
        if ((st = peft_adapter_new_param(ad, nb, 1, &out, 0, &s->b[l])) != PEFT_OK) return st;
        if (l < o.depth) { /* nn.Linear init; the last layer stays zero: a no-op at step 0 */
            if ((st = peft_tensor_init_kaiming_uniform(s->w[l], sqrtf(5.0f), in)) != PEFT_OK) return st;
            if ((st = peft_tensor_init_kaiming_uniform(s->b[l], sqrtf(5.0f), in)) != PEFT_OK) return st;
        }
        in = out;
    }
    return peft_adapter_hook_hidden(ad, dense_hidden, s);
}

static void dense_detach(peft_adapter *ad)
{
    peft__free(peft_adapter_ctx(ad), peft_adapter_state(ad));
}

const peft_strategy peft__strategy_dense = {
    .struct_size = sizeof(peft_strategy),
    .name = "dense",
    .description = "frozen base + new dense layers trained on top (fine-tuning I)",
    .attach = dense_attach,
    .detach = dense_detach,
};
