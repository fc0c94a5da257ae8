/* libpeft — transformer models: GPT-2 and Llama.
 *
 * A model is built from a config (random init) or loaded from a file or a
 * Hugging Face checkpoint directory (format detected from the contents).
 * Parameters carry their Hugging Face names. Internally every projection
 * weight is stored [out, in] (GPT-2's Conv1D [in, out] weights are transposed
 * on load and back on save) and Llama's q/k rows are kept in Hugging Face
 * ("rotate-half") order, permuting GGUF/llama2.c files on load.
 */
#ifndef PEFT_MODEL_H
#define PEFT_MODEL_H

#include "ops.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum peft_arch {
    PEFT_ARCH_GPT2 = 0,
    PEFT_ARCH_LLAMA = 1,
    PEFT_ARCH_COUNT
} peft_arch;

/* "gpt2", "llama". */
PEFT_API const char *peft_arch_name(peft_arch arch);

typedef struct peft_model_config {
    size_t struct_size;
    peft_arch arch;
    int64_t vocab_size;
    int64_t n_ctx;      /* maximum positions (GPT-2: wpe rows) */
    int64_t d_model;    /* hidden size C */
    int64_t n_layer;
    int64_t n_head;
    int64_t n_kv_head;  /* Llama GQA; = n_head for GPT-2 */
    int64_t d_ff;       /* MLP hidden size (GPT-2: 4*C) */
    float norm_eps;     /* LayerNorm / RMSNorm epsilon */
    float rope_theta;   /* Llama */
    int tie_embeddings; /* LM head shares the token embedding (always for GPT-2) */
    int32_t bos_id, eos_id; /* -1 when unknown */
} peft_model_config;

/* Defaults of GPT-2 124M or of a small Llama for the given arch. */
PEFT_API peft_model_config peft_model_config_default(peft_arch arch);

typedef struct peft_model peft_model;

/* Build a model with random weights (GPT-2 style: N(0, 0.02) matrices,
 * residual projections scaled by 1/sqrt(2L), norms 1, biases 0), from the
 * context PRNG. All parameters are f32 and frozen until a strategy or
 * peft_model_set_trainable says otherwise. */
PEFT_API peft_status peft_model_create(peft_ctx *ctx, const peft_model_config *cfg, peft_model **out);
PEFT_API void peft_model_destroy(peft_model *model);

/* Borrowed; valid as long as the model. */
PEFT_API const peft_model_config *peft_model_get_config(const peft_model *model);
PEFT_API peft_ctx *peft_model_ctx(const peft_model *model);

/* Parameters, in a fixed order (embeddings, blocks 0..L-1, final norm, head). */
PEFT_API size_t peft_model_n_params(const peft_model *model);
PEFT_API peft_status peft_model_param(const peft_model *model, size_t i, const char **name, peft_tensor **tensor);
PEFT_API peft_status peft_model_find_param(const peft_model *model, const char *name, peft_tensor **tensor);
/* Total number of parameter elements (tied weights counted once). */
PEFT_API int64_t peft_model_numel(const peft_model *model);
/* Make every f32 parameter trainable (1) or frozen (0). */
PEFT_API peft_status peft_model_set_trainable(peft_model *model, int trainable);

/* Forward pass. ids: i32 [B, T] with T <= n_ctx (Llama: any T). logits:
 * [B, T, V] in the scratch arena. hidden: NULL, or an array of n_layer
 * pointers that receives the hidden state [B, T, C] after each block.
 * Recorded on the tape when gradients are enabled and something trains. */
PEFT_API peft_status peft_model_forward(peft_model *model, peft_tensor *ids, peft_tensor **logits,
                                        peft_tensor **hidden);
/* The final hidden state (after the last norm) without the LM head: [B, T, C]. */
PEFT_API peft_status peft_model_forward_hidden(peft_model *model, peft_tensor *ids, peft_tensor **out);

/* Next-token loss on a batch: mean cross-entropy of logits[:, t] against
 * ids[:, t+1]; positions where mask (i32 [B, T], may be NULL) is 0 at t+1 do
 * not count. */
PEFT_API peft_status peft_model_lm_loss(peft_model *model, peft_tensor *ids, peft_tensor *mask,
                                        peft_tensor **loss);

/* The tokenizer the model file brought (a GGUF's tokenizer.ggml.* metadata,
 * a llama2.c tok<V>.bin or tokenizer.bin beside the checkpoint), or NULL.
 * Borrowed: valid as long as the model. */
PEFT_API peft_tokenizer *peft_model_tokenizer(const peft_model *model);
/* Give the model a tokenizer; the model takes ownership (and frees any
 * previous one). NULL removes it. */
PEFT_API peft_status peft_model_set_tokenizer(peft_model *model, peft_tokenizer *tok);

/* ---- generation ---- */

typedef struct peft_sample_opts {
    size_t struct_size;
    int max_new;       /* tokens to generate (default 32) */
    float temperature; /* 0 = greedy (default) */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    uint64_t seed;     /* sampling PRNG seed */
    int stop_at_eos;   /* stop after the model's eos id (default 1) */
} peft_sample_opts;

PEFT_API peft_sample_opts peft_sample_opts_default(void);

/* Continue `prompt` (n_prompt >= 1 ids) with a key/value cache: greedy, or
 * temperature / top-k / top-p sampling from a PRNG seeded by opts->seed.
 * Writes the new ids (not the prompt) to out (cap entries) and their number
 * to *n_out. Runs without recording gradients; the scratch arena is released
 * between tokens. */
PEFT_API peft_status peft_model_generate(peft_model *model, const int32_t *prompt, size_t n_prompt,
                                         const peft_sample_opts *opts, int32_t *out, size_t cap, size_t *n_out);

/* ---- files ---- */

typedef enum peft_model_format {
    PEFT_FORMAT_UNKNOWN = 0,
    PEFT_FORMAT_HF_DIR = 1,      /* directory: config.json + model.safetensors (or sharded) */
    PEFT_FORMAT_SAFETENSORS = 2, /* a .safetensors file with config.json beside it */
    PEFT_FORMAT_GGUF = 3,
    PEFT_FORMAT_LLAMA2C = 4
} peft_model_format;

PEFT_API const char *peft_model_format_name(peft_model_format format);

/* Detect the format from the contents (not the name). PEFT_ERR_FORMAT when
 * nothing matches, PEFT_ERR_IO when the path cannot be read. */
PEFT_API peft_status peft_model_detect_format(peft_ctx *ctx, const char *path, peft_model_format *format);

typedef struct peft_model_load_opts {
    size_t struct_size;
    /* 1: frozen matrices stored as f16/bf16 in the file stay so in memory
     * (computed in f32 tiles); 0: everything is converted to f32. */
    int keep_dtype;
} peft_model_load_opts;

PEFT_API peft_model_load_opts peft_model_load_opts_default(void);

/* Load a model; the format is detected from the contents. opts may be NULL.
 * Errors name the file, the tensor and the problem (missing tensor, shape that
 * disagrees with the config, unknown architecture, ...). */
PEFT_API peft_status peft_model_load(peft_ctx *ctx, const char *path, const peft_model_load_opts *opts,
                                     peft_model **out);

/* Write the model as a Hugging Face checkpoint directory: config.json and
 * model.safetensors (HF names and layouts; GPT-2 Conv1D weights [in, out]).
 * The directory is created if needed; files are written atomically. */
PEFT_API peft_status peft_model_save(peft_model *model, const char *dir);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_MODEL_H */
