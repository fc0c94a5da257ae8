/* The layout of peft_model, shared by the files that build, load, run and
 * adapt models (lib/nn, lib/strategy). Never installed. */
#ifndef PEFT_MODEL_INTERNAL_H
#define PEFT_MODEL_INTERNAL_H

#include "../internal.h"
#include "peft/strategy.h"

#define PEFT__NAME_MAX 96

/* One named parameter. */
typedef struct peft__param {
    char name[PEFT__NAME_MAX];
    peft_tensor *t;
    bool conv1d;      /* Hugging Face stores it [in, out] (GPT-2 Conv1D); held here as [out, in] */
    bool tied_alias;  /* the LM head when it is the token embedding: not a separate parameter */
} peft__param;

/* A projection y = x W^T + b. Strategies replace it through `hook`. */
typedef struct peft__linear {
    char name[PEFT__NAME_MAX]; /* module path, e.g. "transformer.h.0.attn.c_attn" */
    peft_tensor *w;            /* [out, in] */
    peft_tensor *b;            /* [out] or NULL */
    peft_linear_hook hook;     /* NULL: plain linear */
    void *hook_user;
} peft__linear;

typedef struct peft__block {
    /* GPT-2: ln_1, ln_2 with biases; Llama: input/post-attention RMSNorm gains */
    peft_tensor *norm1_w, *norm1_b, *norm2_w, *norm2_b;
    /* GPT-2: qkv = c_attn, o = attn.c_proj, up = c_fc, down = mlp.c_proj.
     * Llama: q, k, v, o, gate, up, down. */
    peft__linear qkv, q, k, v, o, gate, up, down;
} peft__block;

/* Up to 8 projections per block. */
#define PEFT__BLOCK_LINEARS 8

struct peft_model {
    peft_ctx *ctx;
    peft_model_config cfg;
    float *flat;  /* all f32 parameters, one block */
    size_t n_flat;
    peft__param *params;
    size_t n_params;
    peft_tensor *tok_emb;       /* [V, C] */
    peft_tensor *pos_emb;       /* GPT-2 [n_ctx, C] */
    peft_tensor *positions;     /* i32 [n_ctx]: 0, 1, ... */
    peft__block *blocks;        /* [L] */
    peft_tensor *normf_w, *normf_b;
    peft__linear head;          /* w = tok_emb when tied */
    peft_tokenizer *tokenizer;  /* brought by the file, owned */
    peft__linear **linears;     /* every block projection, in block order (not the head) */
    size_t n_linears;
    peft_hidden_hook hidden_hook; /* applied to the final hidden state before the LM head */
    void *hidden_user;
    void *adapter;              /* the attached peft_adapter, if any */
};

/* Every projection of block l in a fixed order (entries with w == NULL unused). */
int peft__block_linears(peft_model *m, int64_t l, peft__linear **out);
/* y = linear(x) through the module's hook if any. */
peft_status peft__linear_forward(peft_ctx *ctx, peft__linear *lin, peft_tensor *x, peft_tensor **y);

/* Build the parameter table and storage for a config, without initialising
 * values. pick (may be NULL: all f32) chooses each parameter's storage dtype. */
typedef peft_dtype (*peft__dtype_pick)(void *user, const char *name, int ndim);
peft_status peft__model_alloc(peft_ctx *ctx, const peft_model_config *cfg, peft__dtype_pick pick, void *user,
                             peft_model **out);

/* The key/value cache of generation: per layer [1, cap, Hkv*D] (keys rotated). */
typedef struct peft__kv {
    peft_tensor **k, **v;
    int64_t cap, pos;
} peft__kv;
/* The LM head and next-token loss on a final hidden state [B, T, C] (fused unless hooked). */
peft_status peft__head_loss(peft_model *m, peft_tensor *h, peft_tensor *targets, int32_t ignore, peft_tensor **loss);
peft_status peft__run_blocks(peft_model *m, peft__kv *kv, peft_tensor *ids, peft_tensor **hidden, peft_tensor **out);

#endif
