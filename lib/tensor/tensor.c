/* Tensor handles: creation, accessors, copies with conversion, gradients. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../internal.h"

int64_t peft__numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) return 0;
        if (n > INT64_MAX / shape[i]) return 0;
        n *= shape[i];
    }
    return n;
}

void peft__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

bool peft__is_contiguous(const peft_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

const char *peft__shape_str(const peft_tensor *t, char *buf, size_t size)
{
    if (!t) {
        snprintf(buf, size, "(null)");
        return buf;
    }
    size_t o = 0;
    o += (size_t)snprintf(buf + o, size - o, "[");
    for (int i = 0; i < t->ndim && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (o < size) snprintf(buf + o, size - o, "]");
    return buf;
}

int peft__axis(int axis, int ndim)
{
    if (axis < 0) axis += ndim;
    return (axis >= 0 && axis < ndim) ? axis : -1;
}

static size_t storage_bytes(peft_dtype dtype, int64_t numel)
{
    size_t be = peft_dtype_block_elems(dtype), bb = peft_dtype_block_bytes(dtype);
    size_t blocks = ((size_t)numel + be - 1) / be, bytes = 0;
    if (!peft__mul_ok(blocks, bb, &bytes)) return 0;
    return bytes;
}

static peft_status check_shape(peft_ctx *ctx, const char *fn, peft_dtype dtype, int ndim,
                               const int64_t *shape, int64_t *numel)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if ((unsigned)dtype >= PEFT_DTYPE_COUNT)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)dtype);
    if (ndim < 1 || ndim > PEFT_MAX_DIMS)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: ndim %d is not in 1..%d", fn, ndim, PEFT_MAX_DIMS);
    if (!shape) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: shape is NULL", fn);
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: dim %d is %lld (must be > 0)", fn, i,
                              (long long)shape[i]);
    *numel = peft__numel(ndim, shape);
    if (*numel == 0 || storage_bytes(dtype, *numel) == 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: shape too large (overflow)", fn);
    size_t be = peft_dtype_block_elems(dtype);
    if (be > 1 && shape[ndim - 1] % (int64_t)be != 0)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: last dim %lld is not a multiple of the %s block (%zu)",
                          fn, (long long)shape[ndim - 1], peft_dtype_name(dtype), be);
    return PEFT_OK;
}

static peft_status make(peft_ctx *ctx, const char *fn, peft_dtype dtype, int ndim, const int64_t *shape,
                        void *data, peft_tensor **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    int64_t numel = 0;
    peft_status st = check_shape(ctx, fn, dtype, ndim, shape, &numel);
    if (st != PEFT_OK) return st;
    peft_tensor *t = peft__calloc(ctx, 1, sizeof *t);
    if (!t) return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    t->ctx = ctx;
    t->ndim = ndim;
    t->dtype = dtype;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    peft__contiguous_strides(ndim, shape, t->stride);
    if (data) {
        t->data = data;
    } else {
        size_t bytes = storage_bytes(dtype, numel);
        t->data = peft__calloc(ctx, 1, bytes);
        if (!t->data) {
            peft__free(ctx, t);
            return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %zu bytes", fn, bytes);
        }
        t->flags |= PEFT__T_OWNS_DATA;
    }
    *out = t;
    return PEFT_OK;
}

peft_status peft_tensor_create(peft_ctx *ctx, peft_dtype dtype, int ndim, const int64_t *shape,
                               peft_tensor **out)
{
    return make(ctx, "peft_tensor_create", dtype, ndim, shape, NULL, out);
}

peft_status peft_tensor_wrap(peft_ctx *ctx, peft_dtype dtype, int ndim, const int64_t *shape, void *data,
                             peft_tensor **out)
{
    if (!data) {
        if (out) *out = NULL;
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tensor_wrap: data is NULL");
    }
    return make(ctx, "peft_tensor_wrap", dtype, ndim, shape, data, out);
}

void peft_tensor_destroy(peft_tensor *t)
{
    if (!t || (t->flags & PEFT__T_SCRATCH)) return;
    peft_ctx *ctx = t->ctx;
    if (t->flags & PEFT__T_OWNS_DATA) peft__free(ctx, t->data);
    if (t->flags & PEFT__T_OWNS_GRAD) peft__free(ctx, t->grad);
    peft__free(ctx, t->name);
    peft__free(ctx, t);
}

int peft_tensor_ndim(const peft_tensor *t) { return t ? t->ndim : 0; }

int64_t peft_tensor_dim(const peft_tensor *t, int axis)
{
    if (!t) return 0;
    int a = peft__axis(axis, t->ndim);
    return a < 0 ? 0 : t->shape[a];
}

int64_t peft_tensor_stride(const peft_tensor *t, int axis)
{
    if (!t) return 0;
    int a = peft__axis(axis, t->ndim);
    return a < 0 ? 0 : t->stride[a];
}

int64_t peft_tensor_numel(const peft_tensor *t) { return t ? peft__numel(t->ndim, t->shape) : 0; }
peft_dtype peft_tensor_dtype(const peft_tensor *t) { return t ? t->dtype : PEFT_DTYPE_COUNT; }
int peft_tensor_is_contiguous(const peft_tensor *t) { return t ? peft__is_contiguous(t) : 0; }
size_t peft_tensor_nbytes(const peft_tensor *t) { return t ? storage_bytes(t->dtype, peft_tensor_numel(t)) : 0; }
void *peft_tensor_data(const peft_tensor *t) { return t ? t->data : NULL; }
float *peft_tensor_grad(const peft_tensor *t) { return t ? t->grad : NULL; }

peft_status peft_tensor_set_name(peft_tensor *t, const char *name)
{
    if (!t || !name) return PEFT_ERR_INVALID_ARG;
    if (t->flags & PEFT__T_SCRATCH)
        return peft__fail(t->ctx, PEFT_ERR_INVALID_ARG, "peft_tensor_set_name: op outputs cannot be named");
    size_t len = strlen(name);
    if (len > 127) len = 127;
    char *copy = peft__malloc(t->ctx, len + 1);
    if (!copy) return peft__fail(t->ctx, PEFT_ERR_NOMEM, "peft_tensor_set_name: out of memory");
    memcpy(copy, name, len);
    copy[len] = '\0';
    peft__free(t->ctx, t->name);
    t->name = copy;
    return PEFT_OK;
}

const char *peft_tensor_name(const peft_tensor *t) { return (t && t->name) ? t->name : ""; }

/* Visit the elements of a (possibly strided) tensor in row-major order,
 * yielding each element's storage offset. */
#define FOR_EACH_OFFSET(t, off, body)                                                  \
    do {                                                                               \
        int64_t s0 = (t)->ndim > 0 ? (t)->shape[0] : 1;                                \
        int64_t d_[PEFT_MAX_DIMS] = {1, 1, 1, 1}, st_[PEFT_MAX_DIMS] = {0, 0, 0, 0};   \
        int pad_ = PEFT_MAX_DIMS - (t)->ndim;                                          \
        for (int k_ = 0; k_ < (t)->ndim; k_++) {                                       \
            d_[pad_ + k_] = (t)->shape[k_];                                            \
            st_[pad_ + k_] = (t)->stride[k_];                                          \
        }                                                                              \
        (void)s0;                                                                      \
        for (int64_t i0 = 0; i0 < d_[0]; i0++)                                         \
            for (int64_t i1 = 0; i1 < d_[1]; i1++)                                     \
                for (int64_t i2 = 0; i2 < d_[2]; i2++)                                 \
                    for (int64_t i3 = 0; i3 < d_[3]; i3++) {                           \
                        int64_t off = i0 * st_[0] + i1 * st_[1] + i2 * st_[2] + i3 * st_[3]; \
                        body;                                                          \
                    }                                                                  \
    } while (0)

static bool is_float_class(peft_dtype d)
{
    return d == PEFT_DTYPE_F32 || d == PEFT_DTYPE_F16 || d == PEFT_DTYPE_BF16;
}

static float load_as_f32(peft_dtype d, const void *p, int64_t i)
{
    switch (d) {
    case PEFT_DTYPE_F32: return ((const float *)p)[i];
    case PEFT_DTYPE_F16: return peft__f16_to_f32(((const uint16_t *)p)[i]);
    default: return peft__bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

static void store_f32(peft_dtype d, void *p, int64_t i, float v)
{
    switch (d) {
    case PEFT_DTYPE_F32: ((float *)p)[i] = v; break;
    case PEFT_DTYPE_F16: ((uint16_t *)p)[i] = peft__f32_to_f16(v); break;
    default: ((uint16_t *)p)[i] = peft__f32_to_bf16(v); break;
    }
}

static peft_status check_copy(const peft_tensor *t, const void *buf, peft_dtype bd, size_t n, const char *fn)
{
    if (!t) return PEFT_ERR_INVALID_ARG;
    if (!buf) return peft__fail(t->ctx, PEFT_ERR_INVALID_ARG, "%s: buffer is NULL", fn);
    if ((size_t)peft_tensor_numel(t) != n)
        return peft__fail(t->ctx, PEFT_ERR_SHAPE, "%s: buffer has %zu elements, tensor has %lld", fn, n,
                          (long long)peft_tensor_numel(t));
    bool ok = (is_float_class(t->dtype) && is_float_class(bd)) ||
              (t->dtype == PEFT_DTYPE_I32 && bd == PEFT_DTYPE_I32);
    if (!ok)
        return peft__fail(t->ctx, PEFT_ERR_DTYPE, "%s: cannot convert between %s and %s", fn,
                          peft_dtype_name(t->dtype), peft_dtype_name(bd));
    return PEFT_OK;
}

peft_status peft_tensor_copy_in(peft_tensor *t, const void *src, peft_dtype src_dtype, size_t n)
{
    peft_status st = check_copy(t, src, src_dtype, n, "peft_tensor_copy_in");
    if (st != PEFT_OK) return st;
    if (t->dtype == PEFT_DTYPE_I32) {
        int64_t i = 0;
        FOR_EACH_OFFSET(t, off, ((int32_t *)t->data)[off] = ((const int32_t *)src)[i++]);
        return PEFT_OK;
    }
    if (t->dtype == src_dtype && peft__is_contiguous(t)) {
        memcpy(t->data, src, n * (t->dtype == PEFT_DTYPE_F32 ? 4 : 2));
        return PEFT_OK;
    }
    int64_t i = 0;
    FOR_EACH_OFFSET(t, off, store_f32(t->dtype, t->data, off, load_as_f32(src_dtype, src, i++)));
    return PEFT_OK;
}

peft_status peft_tensor_copy_out(const peft_tensor *t, void *dst, peft_dtype dst_dtype, size_t n)
{
    peft_status st = check_copy(t, dst, dst_dtype, n, "peft_tensor_copy_out");
    if (st != PEFT_OK) return st;
    if (t->dtype == PEFT_DTYPE_I32) {
        int64_t i = 0;
        FOR_EACH_OFFSET(t, off, ((int32_t *)dst)[i++] = ((const int32_t *)t->data)[off]);
        return PEFT_OK;
    }
    if (t->dtype == dst_dtype && peft__is_contiguous(t)) {
        memcpy(dst, t->data, n * (t->dtype == PEFT_DTYPE_F32 ? 4 : 2));
        return PEFT_OK;
    }
    int64_t i = 0;
    FOR_EACH_OFFSET(t, off, store_f32(dst_dtype, dst, i++, load_as_f32(t->dtype, t->data, off)));
    return PEFT_OK;
}

peft_status peft_tensor_set_f32(peft_tensor *t, const float *src, size_t n)
{
    return peft_tensor_copy_in(t, src, PEFT_DTYPE_F32, n);
}

peft_status peft_tensor_get_f32(const peft_tensor *t, float *dst, size_t n)
{
    return peft_tensor_copy_out(t, dst, PEFT_DTYPE_F32, n);
}

peft_status peft_tensor_item(const peft_tensor *t, float *out)
{
    if (!t || !out) return PEFT_ERR_INVALID_ARG;
    if (peft_tensor_numel(t) != 1) {
        char s[64];
        return peft__fail(t->ctx, PEFT_ERR_SHAPE, "peft_tensor_item: tensor %s has more than one element",
                          peft__shape_str(t, s, sizeof s));
    }
    return peft_tensor_get_f32(t, out, 1);
}

peft_status peft_tensor_fill(peft_tensor *t, float value)
{
    if (!t) return PEFT_ERR_INVALID_ARG;
    if (!is_float_class(t->dtype))
        return peft__fail(t->ctx, PEFT_ERR_DTYPE, "peft_tensor_fill: dtype %s", peft_dtype_name(t->dtype));
    FOR_EACH_OFFSET(t, off, store_f32(t->dtype, t->data, off, value));
    return PEFT_OK;
}

peft_status peft_tensor_convert(const peft_tensor *t, peft_dtype dtype, peft_tensor **out)
{
    if (!out) return PEFT_ERR_INVALID_ARG;
    *out = NULL;
    if (!t) return PEFT_ERR_INVALID_ARG;
    if (!is_float_class(t->dtype) || !is_float_class(dtype))
        return peft__fail(t->ctx, PEFT_ERR_DTYPE, "peft_tensor_convert: %s to %s is not supported",
                          peft_dtype_name(t->dtype), peft_dtype_name(dtype));
    peft_tensor *r;
    peft_status st = peft_tensor_create(t->ctx, dtype, t->ndim, t->shape, &r);
    if (st != PEFT_OK) return st;
    int64_t i = 0;
    FOR_EACH_OFFSET(t, off, store_f32(dtype, r->data, i++, load_as_f32(t->dtype, t->data, off)));
    *out = r;
    return PEFT_OK;
}

peft_status peft_tensor_set_requires_grad(peft_tensor *t, int requires_grad)
{
    if (!t) return PEFT_ERR_INVALID_ARG;
    if (t->flags & PEFT__T_SCRATCH)
        return peft__fail(t->ctx, PEFT_ERR_INVALID_ARG,
                          "peft_tensor_set_requires_grad: op outputs follow their inputs");
    if (!requires_grad) {
        t->flags &= ~(uint32_t)PEFT__T_REQUIRES_GRAD;
        return PEFT_OK;
    }
    if (t->dtype != PEFT_DTYPE_F32)
        return peft__fail(t->ctx, PEFT_ERR_DTYPE,
                          "peft_tensor_set_requires_grad: only f32 tensors train (this one is %s)",
                          peft_dtype_name(t->dtype));
    if (!t->grad) {
        t->grad = peft__calloc(t->ctx, (size_t)peft_tensor_numel(t), sizeof(float));
        if (!t->grad) return peft__fail(t->ctx, PEFT_ERR_NOMEM, "peft_tensor_set_requires_grad: out of memory");
        t->flags |= PEFT__T_OWNS_GRAD;
    }
    t->flags |= PEFT__T_REQUIRES_GRAD;
    return PEFT_OK;
}

int peft_tensor_requires_grad(const peft_tensor *t) { return peft__needs_grad(t) ? 1 : 0; }

peft_status peft_tensor_set_grad_buffer(peft_tensor *t, float *grad)
{
    if (!t) return PEFT_ERR_INVALID_ARG;
    if (t->flags & PEFT__T_SCRATCH)
        return peft__fail(t->ctx, PEFT_ERR_INVALID_ARG, "peft_tensor_set_grad_buffer: not on op outputs");
    if (t->flags & PEFT__T_OWNS_GRAD) peft__free(t->ctx, t->grad);
    t->flags &= ~(uint32_t)PEFT__T_OWNS_GRAD;
    t->grad = grad;
    if (!grad) t->flags &= ~(uint32_t)PEFT__T_REQUIRES_GRAD;
    return PEFT_OK;
}

void peft_tensor_zero_grad(peft_tensor *t)
{
    if (t && t->grad) memset(t->grad, 0, (size_t)peft_tensor_numel(t) * sizeof(float));
}

/* ---- scratch tensors for ops ---- */

peft_status peft__new_output(peft_ctx *ctx, const char *op, int ndim, const int64_t *shape, peft_tensor **out)
{
    return peft__new_scratch(ctx, op, PEFT_DTYPE_F32, ndim, shape, out);
}

peft_status peft__new_scratch(peft_ctx *ctx, const char *op, peft_dtype dtype, int ndim, const int64_t *shape,
                              peft_tensor **out)
{
    *out = NULL;
    PEFT_ASSERT(dtype == PEFT_DTYPE_F32 || dtype == PEFT_DTYPE_I32);
    int64_t numel = peft__numel(ndim, shape);
    if (numel <= 0) return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: empty or overflowing output shape", op);
    peft_tensor *t = peft__scratch(ctx, sizeof *t, op);
    if (!t) return PEFT_ERR_NOMEM;
    memset(t, 0, sizeof *t);
    size_t bytes;
    if (!peft__mul_ok((size_t)numel, sizeof(float), &bytes))
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: output too large", op);
    t->data = peft__scratch(ctx, bytes, op);
    if (!t->data) return PEFT_ERR_NOMEM;
    t->ctx = ctx;
    t->ndim = ndim;
    t->dtype = dtype;
    t->flags = PEFT__T_SCRATCH;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    peft__contiguous_strides(ndim, shape, t->stride);
    *out = t;
    return PEFT_OK;
}

peft_status peft__new_view(peft_ctx *ctx, const char *op, const peft_tensor *x, peft_tensor **out)
{
    *out = NULL;
    peft_tensor *t = peft__scratch(ctx, sizeof *t, op);
    if (!t) return PEFT_ERR_NOMEM;
    *t = *x;
    t->flags = PEFT__T_SCRATCH;
    t->grad = NULL;
    t->node = NULL;
    t->name = NULL;
    *out = t;
    return PEFT_OK;
}

peft_status peft__check_input(peft_ctx *ctx, const char *op, const char *arg, const peft_tensor *t)
{
    if (!t) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %s is NULL", op, arg);
    if (t->ctx != ctx)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %s belongs to another context", op, arg);
    return PEFT_OK;
}

peft_status peft__check_f32(peft_ctx *ctx, const char *op, const char *arg, const peft_tensor *t)
{
    peft_status st = peft__check_input(ctx, op, arg, t);
    if (st != PEFT_OK) return st;
    if (t->dtype != PEFT_DTYPE_F32)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: %s is %s, expected f32", op, arg, peft_dtype_name(t->dtype));
    return PEFT_OK;
}

peft_status peft__check_contiguous(peft_ctx *ctx, const char *op, const char *arg, const peft_tensor *t)
{
    if (!peft__is_contiguous(t)) {
        char s[64];
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                          "%s: %s %s is not contiguous (make it so with peft_contiguous)", op, arg,
                          peft__shape_str(t, s, sizeof s));
    }
    return PEFT_OK;
}

peft_status peft__check_rows(peft_ctx *ctx, const char *op, const char *arg, const peft_tensor *t)
{
    bool ok = t->stride[t->ndim - 1] == 1 || t->shape[t->ndim - 1] == 1;
    for (int i = 0; ok && i + 2 < t->ndim; i++)
        if (t->shape[i] != 1 && t->stride[i] != t->stride[i + 1] * t->shape[i + 1]) ok = false;
    if (!ok) {
        char s[64];
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                          "%s: %s %s needs contiguous rows (make it so with peft_contiguous)", op, arg,
                          peft__shape_str(t, s, sizeof s));
    }
    return PEFT_OK;
}

peft_status peft__unary_begin(peft_ctx *ctx, const char *op, peft_tensor *x, peft_tensor **out, peft_tensor **y)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_f32(ctx, op, "x", x)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "x", x)) != PEFT_OK) return st;
    return peft__new_output(ctx, op, x->ndim, x->shape, y);
}
