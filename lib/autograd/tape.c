/* The autograd tape.
 *
 * Nodes are recorded in execution order, which is a topological order, so
 * backward is a single walk from the newest node to the oldest. Nodes, saved
 * activations and the gradients of intermediate tensors all live in the
 * scratch arena; backward ends by rewinding it.
 *
 * The gradient of an op output is dead once its producing node's backward
 * has run (every consumer is newer, so it ran before). Its arena block then
 * goes on a free list (address-ordered, neighbours merged) from which later
 * gradients are taken best-fit, so backward holds only the gradients live at
 * one time instead of all of them. The arena stays bump-only: the blocks are
 * part of it and vanish with the reset that ends backward, and an identical
 * step makes the identical sequence of requests, so it needs no new memory. */
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

/* A released gradient block, written over its own first bytes (blocks are
 * multiples of 64 bytes). */
typedef struct free_block {
    size_t size;
    struct free_block *next;
} free_block;

/* Bytes of t's gradient as the arena lays it out (64-byte multiples). */
static bool grad_bytes(const peft_tensor *t, size_t *bytes)
{
    size_t b;
    if (!peft__mul_ok((size_t)peft_tensor_numel(t), sizeof(float), &b) || !peft__add_ok(b, PEFT__ALIGN - 1, &b))
        return false;
    *bytes = b & ~(size_t)(PEFT__ALIGN - 1);
    return true;
}

/* The smallest free block of at least `bytes`, cut to size (the rest stays
 * free in its place); NULL when none fits. */
static void *take_free(peft_ctx *ctx, size_t bytes)
{
    free_block **best = NULL;
    for (free_block **p = (free_block **)&ctx->grad_free; *p; p = &(*p)->next)
        if ((*p)->size >= bytes && (!best || (*p)->size < (*best)->size)) best = p;
    if (!best) return NULL;
    free_block *b = *best;
    if (b->size == bytes) {
        *best = b->next;
    } else {
        free_block *rest = (free_block *)((unsigned char *)b + bytes);
        rest->size = b->size - bytes;
        rest->next = b->next;
        *best = rest;
    }
    return b;
}

/* Return a block to the address-ordered list, merging it with free
 * neighbours. (Two arena chunks are never adjacent: every allocation carries
 * a header, so merged blocks stay inside one chunk.) */
static void give_free(peft_ctx *ctx, void *ptr, size_t bytes)
{
    free_block *b = ptr, *prev = NULL, *next = ctx->grad_free;
    while (next && (unsigned char *)next < (unsigned char *)b) {
        prev = next;
        next = next->next;
    }
    b->size = bytes;
    b->next = next;
    if (next && (unsigned char *)b + b->size == (unsigned char *)next) {
        b->size += next->size;
        b->next = next->next;
    }
    if (prev && (unsigned char *)prev + prev->size == (unsigned char *)b) {
        prev->size += b->size;
        prev->next = b->next;
    } else if (prev) {
        prev->next = b;
    } else {
        ctx->grad_free = b;
    }
}

/* t's gradient buffer, created on first use from a released block or the
 * arena; zeroed unless the caller will write every element (fresh). */
static peft_status grad_buffer(peft_ctx *ctx, peft_tensor *t, bool zero, float **out, bool *fresh)
{
    *fresh = false;
    if (!t->grad) {
        size_t bytes;
        if (!grad_bytes(t, &bytes)) return peft__fail(ctx, PEFT_ERR_SHAPE, "backward: gradient too large");
        float *g = take_free(ctx, bytes);
        if (!g) g = peft__scratch(ctx, bytes, "backward");
        if (!g) return PEFT_ERR_NOMEM;
        if (zero) memset(g, 0, bytes);
        t->grad = g;
        t->flags |= PEFT__T_SCRATCH_GRAD;
        *fresh = true;
    }
    *out = t->grad;
    return PEFT_OK;
}

peft_status peft__grad_buffer(peft_ctx *ctx, peft_tensor *t, float **out)
{
    bool fresh;
    return grad_buffer(ctx, t, true, out, &fresh);
}

peft_status peft__grad_buffer_fresh(peft_ctx *ctx, peft_tensor *t, float **out, bool *fresh)
{
    return grad_buffer(ctx, t, false, out, fresh);
}

void peft_graph_release(peft_ctx *ctx)
{
    if (!ctx) return;
    ctx->tape_tail = NULL;
    ctx->tape_len = 0;
    ctx->grad_free = NULL; /* the blocks belong to the arena */
    peft_arena_reset(ctx->arena);
}

static peft_status run_backward(peft_ctx *ctx, peft_tensor *root)
{
    for (peft__node *n = root->node; n; n = n->prev) {
        peft_tensor *out = n->out;
        if (!out->grad) continue; /* nothing flowed into this node */
        peft_status st = n->backward(ctx, n);
        if (st != PEFT_OK) return st;
        if (out->flags & PEFT__T_SCRATCH_GRAD) { /* every consumer has run: the gradient is dead */
            size_t bytes;
            if (grad_bytes(out, &bytes)) give_free(ctx, out->grad, bytes);
            out->grad = NULL;
            out->flags &= ~(uint32_t)PEFT__T_SCRATCH_GRAD;
        }
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
