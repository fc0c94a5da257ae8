/* Shared by the model loaders (load.c, load_gguf.c, load_llama2c.c). */
#ifndef PEFT_LOAD_INTERNAL_H
#define PEFT_LOAD_INTERNAL_H

#include "model_internal.h"

/* Copy a file tensor into a parameter (converting dtype), checking the shape;
 * transpose: the file holds it [in, out] (GPT-2 Conv1D). Errors name file and tensor. */
peft_status peft__assign_param(peft_ctx *ctx, const char *file, peft__param *p, peft_tensor *src, bool transpose);
/* Reorder q/k rows from GGUF/Meta (interleaved pairs) to Hugging Face
 * (rotate-half) order, per head (formats.md 3.4). Rows are `row_bytes` long. */
peft_status peft__permute_qk_to_hf(peft_ctx *ctx, peft_tensor *w, int64_t n_heads);

peft_status peft__load_gguf(peft_ctx *ctx, const char *path, const peft_model_load_opts *o, peft_model **out);
peft_status peft__load_llama2c(peft_ctx *ctx, const char *path, const peft_model_load_opts *o, peft_model **out);

#endif
