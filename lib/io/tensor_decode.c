/* Turning tensor bytes from a file into a long-lived tensor, converting the
 * storage dtype on the way (shared by the GGUF and llama2.c readers).
 *
 * Source bytes come straight from a mapping and may be unaligned, so every
 * element is read with memcpy. Files are little-endian and so are the hosts
 * libpeft supports (the readers refuse to run on big-endian hosts). */
#include <string.h>

#include "../internal.h"

static bool is_float(peft_dtype d)
{
    return d == PEFT_DTYPE_F32 || d == PEFT_DTYPE_F16 || d == PEFT_DTYPE_BF16;
}

/* n elements of float-class `src` (unaligned) into dst f32. */
static void float_src_to_f32(peft_dtype src, const uint8_t *bytes, size_t n, float *dst)
{
    if (src == PEFT_DTYPE_F32) {
        memcpy(dst, bytes, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, bytes + 2 * i, 2);
        dst[i] = src == PEFT_DTYPE_F16 ? peft__f16_to_f32(h) : peft__bf16_to_f32(h);
    }
}

/* f32 values into a contiguous float-class destination. */
static void f32_to_float_dst(const float *x, size_t n, peft_dtype want, void *dst)
{
    if (want == PEFT_DTYPE_F32) {
        memcpy(dst, x, n * sizeof(float));
        return;
    }
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = want == PEFT_DTYPE_F16 ? peft__f32_to_f16(x[i]) : peft__f32_to_bf16(x[i]);
}

peft_status peft__tensor_decode(peft_ctx *ctx, const char *fn, const char *name, peft_dtype src,
                                const void *bytes, int ndim, const int64_t *shape, peft_dtype want,
                                peft_tensor **out)
{
    *out = NULL;
    bool ok = want == src || (is_float(want) && (is_float(src) || src == PEFT_DTYPE_Q8_0)) ||
              (want == PEFT_DTYPE_Q8_0 && is_float(src));
    if (!ok)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: tensor '%s' is stored as %s and cannot be loaded as %s", fn,
                          name, peft_dtype_name(src), peft_dtype_name(want));
    if (want == PEFT_DTYPE_Q8_0 && shape[ndim - 1] % PEFT__Q8_0_BLOCK != 0)
        return peft__fail(ctx, PEFT_ERR_SHAPE,
                          "%s: tensor '%s' cannot be quantized to q8_0: its last dim %lld is not a multiple of 32",
                          fn, name, (long long)shape[ndim - 1]);
    peft_tensor *t = NULL;
    peft_status st = peft_tensor_create(ctx, want, ndim, shape, &t);
    if (st != PEFT_OK) return st;
    size_t n = (size_t)peft_tensor_numel(t);
    float *tmp = NULL;
    if (want == src) {
        memcpy(t->data, bytes, peft_tensor_nbytes(t));
    } else if (want == PEFT_DTYPE_F32) {
        if (src == PEFT_DTYPE_Q8_0)
            peft__q8_0_to_f32(bytes, 0, n, t->data);
        else
            float_src_to_f32(src, bytes, n, t->data);
    } else {
        /* through an f32 copy: to f16/bf16 from another float type or q8_0,
         * or to q8_0 from a float type */
        tmp = peft__malloc(ctx, n * sizeof(float));
        if (!tmp) {
            peft_tensor_destroy(t);
            return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: tensor '%s': cannot allocate %zu bytes", fn, name,
                              n * sizeof(float));
        }
        if (src == PEFT_DTYPE_Q8_0)
            peft__q8_0_to_f32(bytes, 0, n, tmp);
        else
            float_src_to_f32(src, bytes, n, tmp);
        if (want == PEFT_DTYPE_Q8_0)
            peft__q8_0_quantize(tmp, n, t->data);
        else
            f32_to_float_dst(tmp, n, want, t->data);
        peft__free(ctx, tmp);
    }
    st = peft_tensor_set_name(t, name);
    if (st != PEFT_OK) {
        peft_tensor_destroy(t);
        return st;
    }
    *out = t;
    return PEFT_OK;
}
