/* Views: reshape, transpose, slice (no copy) and contiguous (copy).
 *
 * A view shares its base's storage. Its gradient is a contiguous buffer of its
 * own shape; backward adds it into the base's gradient at the logical
 * positions the view covers. */
#include <string.h>

#include "../internal.h"

typedef struct view_saved {
    int axis0, axis1; /* transpose: swapped axes; slice: axis0 */
    int64_t start;    /* slice start */
} view_saved;

/* Walk the view's logical index space (padded to 4-D) and map each element to
 * the base's contiguous gradient index. */
static peft_status view_backward_mapped(peft_ctx *ctx, peft__node *node, bool transpose)
{
    peft_tensor *x = node->in[0], *v = node->out;
    const view_saved *s = node->saved;
    float *dx;
    peft_status st = peft__grad_buffer(ctx, x, &dx);
    if (st != PEFT_OK) return st;
    int64_t xs[PEFT_MAX_DIMS];
    peft__contiguous_strides(x->ndim, x->shape, xs);
    /* stride in dx for each view axis */
    int64_t map[4] = {0, 0, 0, 0}, vshape[4] = {1, 1, 1, 1};
    int pad = 4 - v->ndim;
    for (int i = 0; i < v->ndim; i++) {
        int xa = i;
        if (transpose) xa = i == s->axis0 ? s->axis1 : i == s->axis1 ? s->axis0 : i;
        map[pad + i] = xs[xa];
        vshape[pad + i] = v->shape[i];
    }
    int64_t base = transpose ? 0 : s->start * xs[s->axis0];
    const float *dv = v->grad;
    const int64_t n3 = vshape[3];
    int64_t k = 0;
    for (int64_t i0 = 0; i0 < vshape[0]; i0++)
        for (int64_t i1 = 0; i1 < vshape[1]; i1++)
            for (int64_t i2 = 0; i2 < vshape[2]; i2++, k += n3) {
                float *d = dx + base + i0 * map[0] + i1 * map[1] + i2 * map[2];
                const float *g = dv + k;
                if (map[3] != 1) {
                    for (int64_t i3 = 0; i3 < n3; i3++) d[i3 * map[3]] += g[i3];
                    continue;
                }
                /* a contiguous run (slices of the last dim, e.g. q/k/v of a
                 * fused projection): blocks for the vectoriser; dx and the
                 * view's gradient are separate buffers */
                int64_t i3 = 0;
                for (; i3 + PEFT__VEC <= n3; i3 += PEFT__VEC)
                    PEFT__IVDEP
                    for (int64_t j = 0; j < PEFT__VEC; j++) d[i3 + j] += g[i3 + j];
                for (; i3 < n3; i3++) d[i3] += g[i3];
            }
    return PEFT_OK;
}

static peft_status transpose_backward(peft_ctx *ctx, peft__node *node)
{
    return view_backward_mapped(ctx, node, true);
}

static peft_status slice_backward(peft_ctx *ctx, peft__node *node)
{
    return view_backward_mapped(ctx, node, false);
}

/* reshape and contiguous: logical order is unchanged, gradients add flat. */
static peft_status flat_backward(peft_ctx *ctx, peft__node *node)
{
    peft_tensor *x = node->in[0];
    float *dx;
    peft_status st = peft__grad_buffer(ctx, x, &dx);
    if (st != PEFT_OK) return st;
    const float *dv = node->out->grad;
    int64_t n = peft_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) dx[i] += dv[i];
    return PEFT_OK;
}

static peft_status begin(peft_ctx *ctx, const char *op, peft_tensor *x, peft_tensor **out)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    return peft__check_input(ctx, op, "x", x);
}

static peft_status finish(peft_ctx *ctx, const char *op, peft_tensor *x, peft_tensor *v, peft__backward_fn bw,
                          const view_saved *s, peft_tensor **out)
{
    if (peft__should_record(ctx, &x, 1)) {
        view_saved *saved = NULL;
        if (s) {
            saved = peft__scratch(ctx, sizeof *saved, op);
            if (!saved) return PEFT_ERR_NOMEM;
            *saved = *s;
        }
        peft_status st = peft__record(ctx, op, bw, v, &x, 1, saved);
        if (st != PEFT_OK) return st;
    }
    *out = v;
    return PEFT_OK;
}

peft_status peft_reshape(peft_ctx *ctx, peft_tensor *x, int ndim, const int64_t *shape, peft_tensor **out)
{
    static const char op[] = "peft_reshape";
    peft_status st = begin(ctx, op, x, out);
    if (st != PEFT_OK) return st;
    if (ndim < 1 || ndim > PEFT_MAX_DIMS || !shape)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: ndim %d (must be 1..%d, shape not NULL)", op, ndim,
                          PEFT_MAX_DIMS);
    if ((st = peft__check_contiguous(ctx, op, "x", x)) != PEFT_OK) return st;
    int64_t s[PEFT_MAX_DIMS], known = 1;
    int64_t n = peft_tensor_numel(x);
    int infer = -1;
    bool too_many = false; /* the product of the given dims is past INT64_MAX */
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) infer = i;
        else if (s[i] <= 0)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: dim %d is %lld", op, i, (long long)s[i]);
        else if (s[i] > INT64_MAX / known) too_many = true;
        else known *= s[i];
    }
    char sx[64];
    if (too_many)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %s has %lld elements, the new shape more than that", op,
                          peft__shape_str(x, sx, sizeof sx), (long long)n);
    if (infer >= 0) {
        if (n % known != 0)
            return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %lld elements do not divide into the given dims", op,
                              (long long)n);
        s[infer] = n / known;
        known = n;
    }
    if (known != n)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: %s has %lld elements, the new shape %lld", op,
                          peft__shape_str(x, sx, sizeof sx), (long long)n, (long long)known);
    /* blocked storage (q8_0, nf4) keeps whole blocks in every row */
    size_t be = peft_dtype_block_elems(x->dtype);
    if (be > 1 && s[ndim - 1] % (int64_t)be != 0)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: last dim %lld is not a multiple of the %s block (%zu)", op,
                          (long long)s[ndim - 1], peft_dtype_name(x->dtype), be);
    peft_tensor *v;
    if ((st = peft__new_view(ctx, op, x, &v)) != PEFT_OK) return st;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) v->shape[i] = s[i];
    peft__contiguous_strides(ndim, s, v->stride);
    return finish(ctx, op, x, v, flat_backward, NULL, out);
}

peft_status peft_transpose(peft_ctx *ctx, peft_tensor *x, int axis0, int axis1, peft_tensor **out)
{
    static const char op[] = "peft_transpose";
    peft_status st = begin(ctx, op, x, out);
    if (st != PEFT_OK) return st;
    int a0 = peft__axis(axis0, x->ndim), a1 = peft__axis(axis1, x->ndim);
    if (a0 < 0 || a1 < 0) {
        char sx[64];
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: axes (%d, %d) out of range for %s", op, axis0, axis1,
                          peft__shape_str(x, sx, sizeof sx));
    }
    if (peft_dtype_block_elems(x->dtype) != 1)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: %s tensors cannot be viewed", op, peft_dtype_name(x->dtype));
    peft_tensor *v;
    if ((st = peft__new_view(ctx, op, x, &v)) != PEFT_OK) return st;
    int64_t t = v->shape[a0];
    v->shape[a0] = v->shape[a1];
    v->shape[a1] = t;
    t = v->stride[a0];
    v->stride[a0] = v->stride[a1];
    v->stride[a1] = t;
    view_saved s = {a0, a1, 0};
    return finish(ctx, op, x, v, transpose_backward, &s, out);
}

peft_status peft_slice(peft_ctx *ctx, peft_tensor *x, int axis, int64_t start, int64_t len, peft_tensor **out)
{
    static const char op[] = "peft_slice";
    peft_status st = begin(ctx, op, x, out);
    if (st != PEFT_OK) return st;
    int a = peft__axis(axis, x->ndim);
    char sx[64];
    if (a < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: axis %d out of range for %s", op, axis,
                          peft__shape_str(x, sx, sizeof sx));
    if (start < 0 || len <= 0 || start > x->shape[a] || len > x->shape[a] - start)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: start %lld, length %lld is outside axis %d of %s", op,
                          (long long)start, (long long)len, axis, peft__shape_str(x, sx, sizeof sx));
    size_t elem = peft_dtype_block_bytes(x->dtype);
    if (peft_dtype_block_elems(x->dtype) != 1)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: %s tensors cannot be sliced", op, peft_dtype_name(x->dtype));
    peft_tensor *v;
    if ((st = peft__new_view(ctx, op, x, &v)) != PEFT_OK) return st;
    v->shape[a] = len;
    v->data = (unsigned char *)x->data + (size_t)(start * x->stride[a]) * elem;
    view_saved s = {a, a, start};
    return finish(ctx, op, x, v, slice_backward, &s, out);
}

peft_status peft_contiguous(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    static const char op[] = "peft_contiguous";
    peft_status st = begin(ctx, op, x, out);
    if (st != PEFT_OK) return st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if (peft__is_contiguous(x)) {
        *out = x;
        return PEFT_OK;
    }
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, x->ndim, x->shape, &o)) != PEFT_OK) return st;
    if ((st = peft_tensor_get_f32(x, o->data, (size_t)peft_tensor_numel(x))) != PEFT_OK) return st;
    return finish(ctx, op, x, o, flat_backward, NULL, out);
}
