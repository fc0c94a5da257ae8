/* libpeft — ops: forward kernels with hand-written backward.
 *
 * Conventions for every op here:
 *  - the first argument is the context, the last is the output handle;
 *  - outputs are new f32 tensors (or views) in the context's scratch arena,
 *    valid until the next peft_backward / peft_graph_release;
 *  - when gradients are enabled and an input requires a gradient, the op
 *    records a node so that peft_backward can propagate through it;
 *  - errors (NULL handles, shape mismatches, bad axes, non-contiguous inputs
 *    where an op needs contiguous ones) return a status and leave a message
 *    naming the op and the shapes in peft_ctx_errmsg; *out is then NULL.
 * Axes may be negative (counting from the end). "Rows" are all leading dims.
 */
#ifndef PEFT_OPS_H
#define PEFT_OPS_H

#include "autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- views and shape ops (no copy unless said) ---- */

/* Same data, new shape (same numel; one entry may be -1). Needs a contiguous input. */
PEFT_API peft_status peft_reshape(peft_ctx *ctx, peft_tensor *x, int ndim, const int64_t *shape,
                                  peft_tensor **out);
/* Swap two axes (a strided view). */
PEFT_API peft_status peft_transpose(peft_ctx *ctx, peft_tensor *x, int axis0, int axis1,
                                    peft_tensor **out);
/* Elements [start, start+len) along an axis (a strided view). */
PEFT_API peft_status peft_slice(peft_ctx *ctx, peft_tensor *x, int axis, int64_t start,
                                int64_t len, peft_tensor **out);
/* A contiguous copy (or x itself when it is already contiguous). */
PEFT_API peft_status peft_contiguous(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);
/* Join n >= 1 tensors (views allowed) along an axis (copy); all other dims must agree. */
PEFT_API peft_status peft_concat(peft_ctx *ctx, peft_tensor *const *xs, int n, int axis,
                                 peft_tensor **out);
/* Cut along an axis into n views (as peft_slice) of the given sizes, each > 0,
 * adding up to the axis length. On error every outs[i] is NULL. */
PEFT_API peft_status peft_split(peft_ctx *ctx, peft_tensor *x, int axis, int n,
                                const int64_t *sizes, peft_tensor **outs);

/* ---- matrix products (cblas_sgemm) ---- */

#define PEFT_TRANS_A 1
#define PEFT_TRANS_B 2
/* a: [..., M, K] ([..., K, M] with PEFT_TRANS_A); b: [..., K, N] ([..., N, K]
 * with PEFT_TRANS_B). b is either 2-D (shared by every leading index of a) or
 * has the same leading dims as a. out: [..., M, N]. */
PEFT_API peft_status peft_matmul(peft_ctx *ctx, peft_tensor *a, peft_tensor *b, int flags,
                                 peft_tensor **out);
/* y = x W^T + bias. x: [..., in], W: [out, in] (f32, or f16/bf16 storage for a
 * frozen weight, converted in f32 tiles), bias: [out] or NULL. */
PEFT_API peft_status peft_linear(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, peft_tensor *bias,
                                 peft_tensor **out);

/* Fused LoRA projection: y = x W^T + bias + scale * (x_lora A^T) B^T, with
 * A [r, in], B [out, r], x_lora = NULL (use x) or a dropped-out x. The
 * low-rank path is two thin products; B·A is never formed; the frozen W gets
 * no gradient. */
PEFT_API peft_status peft_lora_linear(peft_ctx *ctx, peft_tensor *x, peft_tensor *x_lora, peft_tensor *w,
                                      peft_tensor *bias, peft_tensor *lora_a, peft_tensor *lora_b, float scale,
                                      peft_tensor **out);

/* ---- elementwise ---- */

/* Broadcasting: shapes are aligned from the right; each dim must be equal or 1
 * (or missing). Gradients are summed over broadcast dims. */
PEFT_API peft_status peft_add(peft_ctx *ctx, peft_tensor *a, peft_tensor *b, peft_tensor **out);
PEFT_API peft_status peft_sub(peft_ctx *ctx, peft_tensor *a, peft_tensor *b, peft_tensor **out);
PEFT_API peft_status peft_mul(peft_ctx *ctx, peft_tensor *a, peft_tensor *b, peft_tensor **out);
/* out = s * x. */
PEFT_API peft_status peft_scale(peft_ctx *ctx, peft_tensor *x, float s, peft_tensor **out);
/* out = x + b over the last dim: x [..., C], b [C]. */
PEFT_API peft_status peft_bias_add(peft_ctx *ctx, peft_tensor *x, peft_tensor *b, peft_tensor **out);

/* GELU, tanh approximation (GPT-2's "gelu_new"). */
PEFT_API peft_status peft_gelu(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);
/* SiLU: x * sigmoid(x). */
PEFT_API peft_status peft_silu(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);
PEFT_API peft_status peft_relu(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);

/* ---- normalisation over the last dim ---- */

/* (x - mean) / sqrt(var + eps) * w + b; w and b ([C]) may be NULL. */
PEFT_API peft_status peft_layernorm(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, peft_tensor *b,
                                    float eps, peft_tensor **out);
/* x / sqrt(mean(x^2) + eps) * w; w ([C]) may be NULL. */
PEFT_API peft_status peft_rmsnorm(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, float eps,
                                  peft_tensor **out);

/* ---- softmax over the last dim ---- */
PEFT_API peft_status peft_softmax(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);
PEFT_API peft_status peft_log_softmax(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);

/* ---- rotary position embedding ---- */

typedef enum peft_rope_mode {
    PEFT_ROPE_NONE = 0,
    /* rotate adjacent pairs (x[2i], x[2i+1]): llama.cpp "norm", llama2.c, Meta order */
    PEFT_ROPE_INTERLEAVED = 1,
    /* rotate (x[i], x[i + n_rot/2]): Hugging Face rotate_half, "neox" */
    PEFT_ROPE_HALF = 2
} peft_rope_mode;

/* x: [B, T, H*D] (rows contiguous); pair i of a head at position p turns by
 * p * theta^(-2i/n_rot). Positions are pos0 + t. n_rot = 0 means D; dims at or
 * past n_rot pass through. */
PEFT_API peft_status peft_rope(peft_ctx *ctx, peft_tensor *x, int n_head, peft_rope_mode mode,
                               float theta, int n_rot, int64_t pos0, peft_tensor **out);

/* ---- fused causal self-attention ---- */

typedef struct peft_attention_opts {
    size_t struct_size;
    int n_head;             /* query heads H */
    int n_kv_head;          /* key/value heads (divides H); 0 = H */
    int causal;             /* 1 = causal mask (default) */
    float scale;            /* 0 = 1/sqrt(D) */
    peft_rope_mode rope;    /* rotation applied inside to q and k (default none) */
    float rope_theta;       /* default 10000 */
    int rope_dims;          /* 0 = D */
} peft_attention_opts;

PEFT_API peft_attention_opts peft_attention_opts_default(void);

/* q: [B, T, H*D]; k, v: [B, S, Hkv*D] with S >= T. Query row t sits at
 * absolute position S-T+t, keys at 0..S-1 (so S > T is a KV cache). Inputs
 * may be row-strided views (e.g. slices of a fused qkv projection) but each
 * row must be contiguous. out: [B, T, H*D]. Backward keeps only the rows'
 * log-sum-exp, never a T x T probability matrix. */
PEFT_API peft_status peft_attention(peft_ctx *ctx, peft_tensor *q, peft_tensor *k, peft_tensor *v,
                                    const peft_attention_opts *opts, peft_tensor **out);

/* ---- embedding ---- */

/* table: [V, C]; ids: i32 tensor of any shape with values in [0, V).
 * out: [ids..., C]. The table's gradient is accumulated only on used rows. */
PEFT_API peft_status peft_embedding(peft_ctx *ctx, peft_tensor *table, peft_tensor *ids,
                                    peft_tensor **out);

/* ---- dropout ---- */

/* Inverted dropout with probability p in [0, 1); identity (x itself) when
 * training is 0 or p is 0. The mask comes from the context PRNG and is
 * recomputed in backward from a seed, not stored. */
PEFT_API peft_status peft_dropout(peft_ctx *ctx, peft_tensor *x, float p, int training,
                                  peft_tensor **out);

/* ---- losses and reductions ---- */

/* Mean cross-entropy of logits [..., V] against i32 targets [...]; entries
 * equal to ignore_index do not count. All ignored gives a loss of 0. */
PEFT_API peft_status peft_cross_entropy(peft_ctx *ctx, peft_tensor *logits, peft_tensor *targets,
                                        int32_t ignore_index, peft_tensor **out);

/* Fused output layer + cross-entropy: mean CE of (h W^T) against targets,
 * h [..., C], W [V, C] (f32, or f16/bf16/q8_0 when frozen), targets i32 with
 * one entry per row of h. The [N, V] logits are computed in row blocks and
 * never kept: the only [N, V] buffer is the gradient (and none without
 * gradients). W gets a gradient only if it trains. */
PEFT_API peft_status peft_linear_cross_entropy(peft_ctx *ctx, peft_tensor *h, peft_tensor *w, peft_tensor *targets,
                                               int32_t ignore_index, peft_tensor **out);

/* Sum / mean of every element: a 1-element tensor. */
PEFT_API peft_status peft_sum(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);
PEFT_API peft_status peft_mean(peft_ctx *ctx, peft_tensor *x, peft_tensor **out);
/* Sum / mean over one axis (the axis is removed; a 1-D input gives shape [1]). */
PEFT_API peft_status peft_sum_axis(peft_ctx *ctx, peft_tensor *x, int axis, peft_tensor **out);
PEFT_API peft_status peft_mean_axis(peft_ctx *ctx, peft_tensor *x, int axis, peft_tensor **out);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_OPS_H */
