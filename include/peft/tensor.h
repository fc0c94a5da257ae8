/* libpeft — tensors.
 *
 * A tensor has up to 4 dimensions, row-major strides (in elements) and a
 * storage dtype. All computation is in f32; f16 and bf16 (and, later, q8_0 and
 * nf4) are storage formats for frozen weights and files, converted to f32 in
 * tiles where they are used.
 *
 * Lifetimes:
 *  - peft_tensor_create / peft_tensor_wrap make a long-lived tensor (parameters,
 *    inputs); free it with peft_tensor_destroy.
 *  - every op output and view lives in the context's scratch arena and is
 *    released by peft_backward, peft_graph_release or an arena reset;
 *    peft_tensor_destroy on such a tensor is a no-op.
 */
#ifndef PEFT_TENSOR_H
#define PEFT_TENSOR_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PEFT_MAX_DIMS 4

/* Storage dtypes. Values are fixed; new ones are only appended. */
typedef enum peft_dtype {
    PEFT_DTYPE_F32 = 0,
    PEFT_DTYPE_F16 = 1,
    PEFT_DTYPE_BF16 = 2,
    PEFT_DTYPE_Q8_0 = 3, /* ggml Q8_0 blocks: 32 weights, fp16 scale */
    PEFT_DTYPE_NF4 = 4,  /* 4-bit NormalFloat blocks (QLoRA) */
    PEFT_DTYPE_I32 = 5,  /* token ids, labels */
    PEFT_DTYPE_COUNT
} peft_dtype;

/* "f32", "f16", "bf16", "q8_0", "nf4", "i32"; "?" for an unknown value. */
PEFT_API const char *peft_dtype_name(peft_dtype dtype);
/* Elements per storage block (1 for plain types, 32 for q8_0, 64 for nf4). */
PEFT_API size_t peft_dtype_block_elems(peft_dtype dtype);
/* Bytes per storage block. */
PEFT_API size_t peft_dtype_block_bytes(peft_dtype dtype);

typedef struct peft_tensor peft_tensor;

/* Create a contiguous, zero-filled tensor. shape has ndim (1..4) entries > 0. */
PEFT_API peft_status peft_tensor_create(peft_ctx *ctx, peft_dtype dtype, int ndim,
                                        const int64_t *shape, peft_tensor **out);
/* Make a tensor over caller memory (contiguous, `data` must outlive the tensor
 * and hold the whole tensor). Used for flat parameter buffers and mapped files. */
PEFT_API peft_status peft_tensor_wrap(peft_ctx *ctx, peft_dtype dtype, int ndim,
                                      const int64_t *shape, void *data, peft_tensor **out);
/* Free a tensor made by create/wrap (and its gradient buffer if the library
 * allocated it). NULL and arena tensors are no-ops. */
PEFT_API void peft_tensor_destroy(peft_tensor *t);

PEFT_API int peft_tensor_ndim(const peft_tensor *t);
/* Size of dimension `axis` (negative counts from the end); 0 if out of range. */
PEFT_API int64_t peft_tensor_dim(const peft_tensor *t, int axis);
PEFT_API int64_t peft_tensor_stride(const peft_tensor *t, int axis);
PEFT_API int64_t peft_tensor_numel(const peft_tensor *t);
PEFT_API peft_dtype peft_tensor_dtype(const peft_tensor *t);
PEFT_API int peft_tensor_is_contiguous(const peft_tensor *t);
/* Bytes of storage a contiguous tensor of this dtype and numel needs. */
PEFT_API size_t peft_tensor_nbytes(const peft_tensor *t);

/* Borrowed pointer to the first element (in the storage dtype). */
PEFT_API void *peft_tensor_data(const peft_tensor *t);
/* Borrowed pointer to the f32 gradient (contiguous, same shape), or NULL. */
PEFT_API float *peft_tensor_grad(const peft_tensor *t);

/* Names (copied, at most 127 bytes kept). */
PEFT_API peft_status peft_tensor_set_name(peft_tensor *t, const char *name);
PEFT_API const char *peft_tensor_name(const peft_tensor *t);

/* Copy values in/out with conversion: src/dst hold n elements of `dtype`
 * (f32, f16, bf16 or i32 to the same class), n must equal numel. Works on
 * strided views (elements are visited in row-major order). */
PEFT_API peft_status peft_tensor_copy_in(peft_tensor *t, const void *src, peft_dtype src_dtype,
                                         size_t n);
PEFT_API peft_status peft_tensor_copy_out(const peft_tensor *t, void *dst, peft_dtype dst_dtype,
                                          size_t n);
/* Shorthands for f32. */
PEFT_API peft_status peft_tensor_set_f32(peft_tensor *t, const float *src, size_t n);
PEFT_API peft_status peft_tensor_get_f32(const peft_tensor *t, float *dst, size_t n);
/* The value of a 1-element tensor. */
PEFT_API peft_status peft_tensor_item(const peft_tensor *t, float *out);
/* Fill every element with a value. */
PEFT_API peft_status peft_tensor_fill(peft_tensor *t, float value);

/* A new long-lived contiguous tensor holding t converted to `dtype`
 * (f32 <-> f16 <-> bf16; f32 -> f16/bf16 rounds to nearest even). */
PEFT_API peft_status peft_tensor_convert(const peft_tensor *t, peft_dtype dtype, peft_tensor **out);

/* Seeded initialisation from the context PRNG (f32 tensors only). */
PEFT_API peft_status peft_tensor_init_normal(peft_tensor *t, float mean, float std);
PEFT_API peft_status peft_tensor_init_uniform(peft_tensor *t, float lo, float hi);
/* PyTorch's kaiming_uniform_(a, mode='fan_in', nonlinearity='leaky_relu'):
 * U(-b, b) with b = sqrt(6 / ((1 + a^2) * fan_in)); fan_in = last dimension
 * when fan_in is 0. a = sqrt(5) gives nn.Linear's default. */
PEFT_API peft_status peft_tensor_init_kaiming_uniform(peft_tensor *t, float a, int64_t fan_in);

/* ---- gradients ---- */

/* Mark a long-lived f32 tensor as trainable (allocates a zeroed gradient
 * buffer if it has none) or frozen. Frozen tensors never get a gradient
 * computed. Op outputs cannot be changed. */
PEFT_API peft_status peft_tensor_set_requires_grad(peft_tensor *t, int requires_grad);
PEFT_API int peft_tensor_requires_grad(const peft_tensor *t);
/* Use caller memory (numel floats, contiguous) as the gradient, e.g. a slice of
 * a flat gradient buffer. The memory must outlive the tensor. NULL detaches. */
PEFT_API peft_status peft_tensor_set_grad_buffer(peft_tensor *t, float *grad);
/* Set the gradient to zero (no-op when there is none). */
PEFT_API void peft_tensor_zero_grad(peft_tensor *t);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_TENSOR_H */
