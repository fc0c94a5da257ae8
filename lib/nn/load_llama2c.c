/* Models from llama2.c checkpoints: the header gives the config (llama2.c
 * hard-codes RMSNorm eps 1e-5 and RoPE theta 10000), tensors come under
 * Hugging Face names, and q/k rows are permuted from Meta to Hugging Face
 * order. A tokenizer.bin (or tok<V>.bin) beside the file is brought along. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "load_internal.h"

/* Look for the llama2.c tokenizer next to the model: tok<V>.bin, tokenizer.bin. */
static peft_status attach_tokenizer(peft_ctx *ctx, peft_model *m, const char *path)
{
    char dir[4096], cand[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    const char *names[2] = {NULL, "tokenizer.bin"};
    char tokv[64];
    snprintf(tokv, sizeof tokv, "tok%lld.bin", (long long)m->cfg.vocab_size);
    names[0] = tokv;
    for (int i = 0; i < 2; i++) {
        snprintf(cand, sizeof cand, "%s/%s", dir, names[i]);
        if (access(cand, R_OK) != 0) continue;
        peft_tokenizer *tok = NULL;
        peft_status st = peft_tokenizer_load_llama2c(ctx, cand, (size_t)m->cfg.vocab_size, &tok);
        if (st != PEFT_OK) return st;
        m->tokenizer = tok;
        return PEFT_OK;
    }
    return PEFT_OK; /* none: the caller may give --tokenizer */
}

peft_status peft__load_llama2c(peft_ctx *ctx, const char *path, const peft_model_load_opts *o, peft_model **out)
{
    (void)o; /* llama2.c files are f32: nothing to keep */
    peft_llama2c *f = NULL;
    peft_status st = peft_llama2c_open(ctx, path, &f);
    if (st != PEFT_OK) return st;
    peft_llama2c_config lc;
    peft_model *m = NULL;
    st = peft_llama2c_get_config(f, &lc);
    if (st == PEFT_OK) {
        peft_model_config cfg = peft_model_config_default(PEFT_ARCH_LLAMA);
        cfg.vocab_size = lc.vocab_size;
        cfg.n_ctx = lc.seq_len;
        cfg.d_model = lc.dim;
        cfg.n_layer = lc.n_layers;
        cfg.n_head = lc.n_heads;
        cfg.n_kv_head = lc.n_kv_heads;
        cfg.d_ff = lc.hidden_dim;
        cfg.norm_eps = 1e-5f;
        cfg.rope_theta = 10000.0f;
        cfg.tie_embeddings = lc.shared_classifier;
        cfg.bos_id = 1;
        cfg.eos_id = 2;
        st = peft__model_alloc(ctx, &cfg, NULL, NULL, &m);
    }
    for (size_t i = 0; st == PEFT_OK && i < m->n_params; i++) {
        peft__param *p = &m->params[i];
        size_t idx;
        if (peft_llama2c_find_tensor(f, p->name, &idx) != PEFT_OK) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: tensor '%s' is missing", path, p->name);
            break;
        }
        peft_tensor *src = NULL;
        st = peft_llama2c_load_tensor(f, idx, PEFT_DTYPE_F32, &src);
        if (st == PEFT_OK) st = peft__assign_param(ctx, path, p, src, false);
        peft_tensor_destroy(src);
        if (st == PEFT_OK && strstr(p->name, "q_proj.weight")) st = peft__permute_qk_to_hf(ctx, p->t, m->cfg.n_head);
        if (st == PEFT_OK && strstr(p->name, "k_proj.weight")) st = peft__permute_qk_to_hf(ctx, p->t, m->cfg.n_kv_head);
    }
    peft_llama2c_close(f);
    if (st == PEFT_OK) st = attach_tokenizer(ctx, m, path);
    if (st != PEFT_OK) {
        peft_model_destroy(m);
        return st;
    }
    *out = m;
    return PEFT_OK;
}
