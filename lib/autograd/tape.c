/* The autograd tape.
 *
 * Nodes are recorded in execution order, which is a topological order, so
 * backward is a single walk from the newest node to the oldest. Nodes, saved
 * activations and the gradients of intermediate tensors all live in the
 * scratch arena; backward ends by rewinding it. */
#include <string.h>

#include "../internal.h"

int peft_set_grad_enabled(peft_ctx *ctx, int enabled)
{
    if (!ctx) return 0;
    int prev = ctx->grad_enabled ? 1 : 0;
    ctx->grad_enabled = enabled != 0;
    return prev;
}

int peft_grad_enabled(const peft_ctx *ctx) { return (ctx && ctx->grad_enabled) ? 1 : 0; }

size_t peft_graph_size(const peft_ctx *ctx) { return ctx ? ctx->tape_len : 0; }

bool peft__should_record(const peft_ctx *ctx, peft_tensor *const *in, int n_in)
{
    if (!ctx->grad_enabled) return false;
    for (int i = 0; i < n_in; i++)
        if (peft__needs_grad(in[i])) return true;
    return false;
}

peft_status peft__record(peft_ctx *ctx, const char *op, peft__backward_fn backward, peft_tensor *out,
                         peft_tensor *const *in, int n_in, void *saved)
{
    PEFT_ASSERT(n_in <= PEFT__NODE_MAX_IN);
    peft__node *n = peft__scratch(ctx, sizeof *n, op);
    if (!n) return PEFT_ERR_NOMEM;
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = backward;
    n->out = out;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    n->saved = saved;
    n->prev = ctx->tape_tail;
    ctx->tape_tail = n;
    ctx->tape_len++;
    out->node = n;
    out->flags |= PEFT__T_REQUIRES_GRAD;
    return PEFT_OK;
}

peft_status peft__grad_buffer(peft_ctx *ctx, peft_tensor *t, float **out)
{
    if (!t->grad) {
        size_t bytes;
        if (!peft__mul_ok((size_t)peft_tensor_numel(t), sizeof(float), &bytes))
            return peft__fail(ctx, PEFT_ERR_SHAPE, "backward: gradient too large");
        t->grad = peft__scratch_zero(ctx, bytes, "backward");
        if (!t->grad) return PEFT_ERR_NOMEM;
    }
    *out = t->grad;
    return PEFT_OK;
}

peft_status peft__grad_buffer_fresh(peft_ctx *ctx, peft_tensor *t, float **out, bool *fresh)
{
    *fresh = false;
    if (!t->grad) {
        size_t bytes;
        if (!peft__mul_ok((size_t)peft_tensor_numel(t), sizeof(float), &bytes))
            return peft__fail(ctx, PEFT_ERR_SHAPE, "backward: gradient too large");
        t->grad = peft__scratch(ctx, bytes, "backward");
        if (!t->grad) return PEFT_ERR_NOMEM;
        *fresh = true;
    }
    *out = t->grad;
    return PEFT_OK;
}

void peft_graph_release(peft_ctx *ctx)
{
    if (!ctx) return;
    ctx->tape_tail = NULL;
    ctx->tape_len = 0;
    peft_arena_reset(ctx->arena);
}

static peft_status run_backward(peft_ctx *ctx, peft_tensor *root)
{
    for (peft__node *n = root->node; n; n = n->prev) {
        if (!n->out->grad) continue; /* nothing flowed into this node */
        peft_status st = n->backward(ctx, n);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

peft_status peft__backward_seeded(peft_ctx *ctx, peft_tensor *out, const float *dout)
{
    peft_status st = PEFT_OK;
    if (!out->node) {
        st = peft__fail(ctx, PEFT_ERR_STATE, "backward: tensor was not recorded");
        goto done;
    }
    float *g;
    st = peft__grad_buffer(ctx, out, &g);
    if (st != PEFT_OK) goto done;
    int64_t n = peft_tensor_numel(out);
    for (int64_t i = 0; i < n; i++) g[i] += dout[i];
    st = run_backward(ctx, out);
done:
    peft_graph_release(ctx);
    return st;
}

peft_status peft_backward(peft_ctx *ctx, peft_tensor *loss, float *loss_value)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    peft_status st = peft__check_f32(ctx, "peft_backward", "loss", loss);
    if (st != PEFT_OK) goto done;
    if (peft_tensor_numel(loss) != 1) {
        char s[64];
        st = peft__fail(ctx, PEFT_ERR_SHAPE, "peft_backward: loss %s is not a scalar",
                        peft__shape_str(loss, s, sizeof s));
        goto done;
    }
    if (loss_value) *loss_value = *(const float *)loss->data;
    if (!loss->node) {
        st = peft__fail(ctx, PEFT_ERR_STATE,
                        "peft_backward: loss was not recorded (gradients disabled, or nothing requires a gradient)");
        goto done;
    }
    float *dloss;
    st = peft__grad_buffer(ctx, loss, &dloss);
    if (st != PEFT_OK) goto done;
    dloss[0] += 1.0f;
    st = run_backward(ctx, loss);
done:
    peft_graph_release(ctx);
    return st;
}
