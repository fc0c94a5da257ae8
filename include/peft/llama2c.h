/* libpeft — llama2.c checkpoints (Karpathy's run.c ".bin" files).
 *
 * Two layouts are read (formats.md §8):
 *  - version 0 ("legacy", what run.c reads): a 28-byte header of 7 int32
 *    (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
 *    a negative vocab_size means the classifier is not shared with the
 *    embedding), then f32 arrays: embedding, attention norms, wq, wk, wv, wo,
 *    ffn norms, w1, w2, w3, final norm, two unused RoPE tables
 *    (seq_len * head_dim / 2 each, skipped) and the classifier if unshared;
 *  - version 1 ("ak42" export): a 256-byte header (u32 magic 0x616b3432,
 *    i32 version 1, the same 7 int32, u8 shared_classifier, zero padding),
 *    then the norms first (attention norms, ffn norms, final norm), the
 *    embedding, wq, wk, wv, wo, w1, w2, w3 and the classifier if unshared.
 * The header must be positive and consistent (dim % n_heads == 0,
 * n_heads % n_kv_heads == 0, even head_dim) and the file size must equal the
 * byte count the header implies exactly; otherwise open fails with
 * PEFT_ERR_FORMAT and a message naming the file and the problem. Quantized
 * (version 2) files give PEFT_ERR_UNSUPPORTED.
 *
 * Tensors are exposed under Hugging Face Llama names with PyTorch shapes
 * ([out, in] for matrices), in this order:
 *   model.embed_tokens.weight                        [V, E]
 *   for N in 0..L-1:
 *     model.layers.N.input_layernorm.weight          [E]
 *     model.layers.N.self_attn.q_proj.weight         [E, E]
 *     model.layers.N.self_attn.k_proj.weight         [Hkv*D, E]
 *     model.layers.N.self_attn.v_proj.weight         [Hkv*D, E]
 *     model.layers.N.self_attn.o_proj.weight         [E, E]
 *     model.layers.N.post_attention_layernorm.weight [E]
 *     model.layers.N.mlp.gate_proj.weight            [F, E]   (w1)
 *     model.layers.N.mlp.down_proj.weight            [E, F]   (w2)
 *     model.layers.N.mlp.up_proj.weight              [F, E]   (w3)
 *   model.norm.weight                                [E]
 *   lm_head.weight                                   [V, E]   only when not shared
 * Q and K rows are in the file's (Meta, interleaved RoPE pair) order: they
 * are NOT permuted to Hugging Face's rotate-half order; the model loader
 * decides.
 *
 * Ownership and threads as for peft_gguf (see gguf.h): names are borrowed
 * until close, loaded tensors belong to the caller.
 */
#ifndef PEFT_LLAMA2C_H
#define PEFT_LLAMA2C_H

#include "core.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct peft_llama2c peft_llama2c;

/* The header, with vocab_size made positive. */
typedef struct peft_llama2c_config {
    int version; /* 0 (legacy) or 1 ("ak42") */
    int dim;     /* E */
    int hidden_dim; /* F */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int vocab_size;
    int seq_len;
    int shared_classifier; /* 1: logits use the embedding; no lm_head.weight */
} peft_llama2c_config;

/* One tensor: plain data, the name is borrowed from the handle. */
typedef struct peft_llama2c_tensor_info {
    const char *name;
    int ndim;          /* 1 or 2 */
    int64_t shape[4];  /* PyTorch order; entries past ndim are 1 */
    int64_t numel;
    uint64_t file_offset; /* byte offset of the f32 data in the file */
} peft_llama2c_tensor_info;

/* Open and validate a llama2.c checkpoint (mapped read-only). On failure
 * *out is NULL and ctx has the message (PEFT_ERR_IO, PEFT_ERR_FORMAT or
 * PEFT_ERR_UNSUPPORTED). */
PEFT_API peft_status peft_llama2c_open(peft_ctx *ctx, const char *path, peft_llama2c **out);
/* NULL is a no-op. Tensors already loaded stay valid. */
PEFT_API void peft_llama2c_close(peft_llama2c *m);

PEFT_API peft_status peft_llama2c_get_config(const peft_llama2c *m, peft_llama2c_config *out);

PEFT_API size_t peft_llama2c_n_tensors(const peft_llama2c *m);
PEFT_API peft_status peft_llama2c_get_tensor_info(const peft_llama2c *m, size_t i,
                                                  peft_llama2c_tensor_info *out);
/* PEFT_ERR_NOT_FOUND (not logged) when there is no such tensor. */
PEFT_API peft_status peft_llama2c_find_tensor(const peft_llama2c *m, const char *name, size_t *index);
/* Load tensor i as a new long-lived contiguous tensor with the shape above,
 * named after it. `want`: f32 (the file's data, bit for bit), f16/bf16
 * (rounded to nearest even) or q8_0 (quantized; last dim % 32 == 0). */
PEFT_API peft_status peft_llama2c_load_tensor(const peft_llama2c *m, size_t i, peft_dtype want,
                                              peft_tensor **out);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_LLAMA2C_H */
