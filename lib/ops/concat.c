/* Concat (copy) and split (views).
 *
 * The output of concat is seen as [outer, L, inner] with L the sum of the
 * inputs' lengths along the axis; input k owns the columns [off_k, off_k+L_k)
 * of L. Inputs may be strided views: they are read through their strides.
 * Backward adds each input's block of the output gradient into that input's
 * (contiguous) gradient. Split makes n peft_slice views, so it shares their
 * backward. */
#include <stdio.h>
#include <string.h>

#include "../internal.h"

typedef struct concat_saved {
    int n;
    int axis;
    peft_tensor **xs; /* n inputs (the node keeps only PEFT__NODE_MAX_IN) */
    int64_t *off;     /* n offsets along the axis */
} concat_saved;

/* dst[i] (+)= src[i] over a 4-D index space, each side with its own element
 * strides. Shapes are padded with leading 1s. */
static void strided_walk(const int64_t *shape, float *dst, const int64_t *dstride, const float *src,
                         const int64_t *sstride, bool add)
{
    for (int64_t i0 = 0; i0 < shape[0]; i0++)
        for (int64_t i1 = 0; i1 < shape[1]; i1++)
            for (int64_t i2 = 0; i2 < shape[2]; i2++) {
                float *d = dst + i0 * dstride[0] + i1 * dstride[1] + i2 * dstride[2];
                const float *s = src + i0 * sstride[0] + i1 * sstride[1] + i2 * sstride[2];
                if (add)
                    for (int64_t i3 = 0; i3 < shape[3]; i3++) d[i3 * dstride[3]] += s[i3 * sstride[3]];
                else
                    for (int64_t i3 = 0; i3 < shape[3]; i3++) d[i3 * dstride[3]] = s[i3 * sstride[3]];
            }
}

/* Pad x's shape and the given strides (x->ndim entries) to 4-D. */
static void pad4(const peft_tensor *x, const int64_t *stride, int64_t *shape4, int64_t *stride4)
{
    int pad = 4 - x->ndim;
    for (int i = 0; i < 4; i++) {
        shape4[i] = i < pad ? 1 : x->shape[i - pad];
        stride4[i] = i < pad ? 0 : stride[i - pad];
    }
}

static peft_status concat_backward(peft_ctx *ctx, peft__node *node)
{
    const concat_saved *s = node->saved;
    const peft_tensor *o = node->out;
    const float *dout = o->grad; /* contiguous, o's shape */
    for (int k = 0; k < s->n; k++) {
        peft_tensor *x = s->xs[k];
        if (!peft__needs_grad(x)) continue;
        float *dx;
        peft_status st = peft__grad_buffer(ctx, x, &dx);
        if (st != PEFT_OK) return st;
        int64_t xs[PEFT_MAX_DIMS], shape4[4], dst4[4], src4[4];
        peft__contiguous_strides(x->ndim, x->shape, xs);
        pad4(x, xs, shape4, dst4);
        pad4(x, o->stride, shape4, src4);
        strided_walk(shape4, dx, dst4, dout + s->off[k] * o->stride[s->axis], src4, true);
    }
    return PEFT_OK;
}

peft_status peft_concat(peft_ctx *ctx, peft_tensor *const *xs, int n, int axis, peft_tensor **out)
{
    static const char op[] = "peft_concat";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    if (!xs || n < 1)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: need at least one input (xs %s, n %d)", op,
                          xs ? "set" : "NULL", n);
    peft_status st;
    char arg[32];
    for (int k = 0; k < n; k++) {
        snprintf(arg, sizeof arg, "xs[%d]", k);
        if ((st = peft__check_f32(ctx, op, arg, xs[k])) != PEFT_OK) return st;
    }
    const peft_tensor *x0 = xs[0];
    int a = peft__axis(axis, x0->ndim);
    char s0[64], sk[64];
    if (a < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: axis %d out of range for xs[0] %s", op, axis,
                          peft__shape_str(x0, s0, sizeof s0));
    /* output shape; the axis length is summed with an overflow check */
    int64_t shape[PEFT_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    size_t len = 0;
    for (int k = 0; k < n; k++) {
        const peft_tensor *x = xs[k];
        bool same = x->ndim == x0->ndim;
        for (int i = 0; same && i < x0->ndim; i++)
            if (i != a && x->shape[i] != x0->shape[i]) same = false;
        if (!same)
            return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: xs[%d] %s does not match xs[0] %s outside axis %d", op, k,
                              peft__shape_str(x, sk, sizeof sk), peft__shape_str(x0, s0, sizeof s0), axis);
        if (!peft__add_ok(len, (size_t)x->shape[a], &len) || len > (size_t)INT64_MAX)
            return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: output too large", op);
    }
    shape[a] = (int64_t)len;
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, x0->ndim, shape, &o)) != PEFT_OK) return st;
    /* copy each input into its block of the output */
    float *od = o->data;
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        const peft_tensor *x = xs[k];
        int64_t shape4[4], dst4[4], src4[4];
        pad4(x, o->stride, shape4, dst4);
        pad4(x, x->stride, shape4, src4);
        strided_walk(shape4, od + off * o->stride[a], dst4, x->data, src4, false);
        off += x->shape[a];
    }
    if (peft__should_record(ctx, xs, n)) {
        concat_saved *s = peft__scratch(ctx, sizeof *s, op);
        if (!s) return PEFT_ERR_NOMEM;
        s->n = n;
        s->axis = a;
        s->xs = peft__scratch(ctx, (size_t)n * sizeof *s->xs, op);
        s->off = peft__scratch(ctx, (size_t)n * sizeof *s->off, op);
        if (!s->xs || !s->off) return PEFT_ERR_NOMEM;
        off = 0;
        for (int k = 0; k < n; k++) {
            s->xs[k] = xs[k];
            s->off[k] = off;
            off += xs[k]->shape[a];
        }
        int n_in = n < PEFT__NODE_MAX_IN ? n : PEFT__NODE_MAX_IN;
        if ((st = peft__record(ctx, op, concat_backward, o, xs, n_in, s)) != PEFT_OK) return st;
    }
    *out = o;
    return PEFT_OK;
}

peft_status peft_split(peft_ctx *ctx, peft_tensor *x, int axis, int n, const int64_t *sizes, peft_tensor **outs)
{
    static const char op[] = "peft_split";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!outs) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: outs is NULL", op);
    if (n < 1) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: n is %d (must be >= 1)", op, n);
    for (int k = 0; k < n; k++) outs[k] = NULL;
    if (!sizes) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: sizes is NULL", op);
    peft_status st = peft__check_input(ctx, op, "x", x);
    if (st != PEFT_OK) return st;
    char sx[64];
    int a = peft__axis(axis, x->ndim);
    if (a < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: axis %d out of range for %s", op, axis,
                          peft__shape_str(x, sx, sizeof sx));
    if (peft_dtype_block_elems(x->dtype) != 1)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: %s tensors cannot be split", op, peft_dtype_name(x->dtype));
    int64_t total = 0;
    for (int k = 0; k < n; k++) {
        if (sizes[k] <= 0)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: sizes[%d] is %lld (must be > 0)", op, k,
                              (long long)sizes[k]);
        /* stop before overflow: anything past the axis length is already wrong */
        total = sizes[k] > x->shape[a] - total ? x->shape[a] + 1 : total + sizes[k];
    }
    if (total > x->shape[a])
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %d sizes add up to more than %lld, the length of axis %d of %s",
                          op, n, (long long)x->shape[a], axis, peft__shape_str(x, sx, sizeof sx));
    if (total < x->shape[a])
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %d sizes add up to %lld, not %lld, the length of axis %d of %s",
                          op, n, (long long)total, (long long)x->shape[a], axis, peft__shape_str(x, sx, sizeof sx));
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        if ((st = peft_slice(ctx, x, a, off, sizes[k], &outs[k])) != PEFT_OK) {
            for (int j = 0; j < n; j++) outs[j] = NULL; /* no partial results */
            return st;
        }
        off += sizes[k];
    }
    return PEFT_OK;
}
