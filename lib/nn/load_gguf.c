/* Models from GGUF (llama.cpp): hyper-parameters from the metadata, tensors
 * by their llama.cpp names, q/k rows permuted back to Hugging Face order, and
 * the tokenizer from tokenizer.ggml.* when the file carries one. */
#include <stdio.h>
#include <string.h>

#include "load_internal.h"

/* Hugging Face parameter name -> GGUF tensor name (formats.md 3.3 and 4). */
static bool gguf_name(peft_arch arch, const char *hf, char *out, size_t size)
{
    static const char *const llama_map[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"},     {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},       {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},  {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    static const char *const gpt2_map[][2] = {
        {"ln_1.weight", "attn_norm.weight"},      {"ln_1.bias", "attn_norm.bias"},
        {"attn.c_attn.weight", "attn_qkv.weight"}, {"attn.c_attn.bias", "attn_qkv.bias"},
        {"attn.c_proj.weight", "attn_output.weight"}, {"attn.c_proj.bias", "attn_output.bias"},
        {"ln_2.weight", "ffn_norm.weight"},       {"ln_2.bias", "ffn_norm.bias"},
        {"mlp.c_fc.weight", "ffn_up.weight"},     {"mlp.c_fc.bias", "ffn_up.bias"},
        {"mlp.c_proj.weight", "ffn_down.weight"}, {"mlp.c_proj.bias", "ffn_down.bias"},
    };
    static const char *const top[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"}, {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},                {"transformer.wte.weight", "token_embd.weight"},
        {"transformer.wpe.weight", "position_embd.weight"}, {"transformer.ln_f.weight", "output_norm.weight"},
        {"transformer.ln_f.bias", "output_norm.bias"},
    };
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (!strcmp(hf, top[i][0])) {
            snprintf(out, size, "%s", top[i][1]);
            return true;
        }
    long long l;
    int n = 0;
    const char *prefix = arch == PEFT_ARCH_LLAMA ? "model.layers.%lld.%n" : "transformer.h.%lld.%n";
    if (sscanf(hf, prefix, &l, &n) != 1 || n == 0) return false;
    const char *rest = hf + n;
    const char *const(*map)[2] = arch == PEFT_ARCH_LLAMA ? llama_map : gpt2_map;
    size_t count = arch == PEFT_ARCH_LLAMA ? sizeof llama_map / sizeof *llama_map : sizeof gpt2_map / sizeof *gpt2_map;
    for (size_t i = 0; i < count; i++)
        if (!strcmp(rest, map[i][0])) {
            snprintf(out, size, "blk.%lld.%s", l, map[i][1]);
            return true;
        }
    return false;
}

static peft_status need_int(peft_ctx *ctx, const peft_gguf *g, const char *path, const char *arch, const char *key,
                            int64_t *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (peft_gguf_get_int(g, full, out) != PEFT_OK)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: metadata key %s is missing or not an integer", path, full);
    return PEFT_OK;
}

static peft_status gguf_config(peft_ctx *ctx, const peft_gguf *g, const char *path, peft_model_config *c)
{
    const char *arch = NULL;
    if (peft_gguf_get_str(g, "general.architecture", &arch, NULL) != PEFT_OK)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: no general.architecture", path);
    bool llama = !strcmp(arch, "llama"), gpt2 = !strcmp(arch, "gpt2");
    if (!llama && !gpt2)
        return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: architecture \"%s\" is not supported (llama, gpt2)", path, arch);
    if (peft_gguf_n_tensors(g) == 0)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: a vocabulary-only GGUF (no tensors) is not a model", path);
    *c = peft_model_config_default(llama ? PEFT_ARCH_LLAMA : PEFT_ARCH_GPT2);
    peft_status st;
    if ((st = need_int(ctx, g, path, arch, "context_length", &c->n_ctx)) != PEFT_OK) return st;
    if ((st = need_int(ctx, g, path, arch, "embedding_length", &c->d_model)) != PEFT_OK) return st;
    if ((st = need_int(ctx, g, path, arch, "block_count", &c->n_layer)) != PEFT_OK) return st;
    if ((st = need_int(ctx, g, path, arch, "feed_forward_length", &c->d_ff)) != PEFT_OK) return st;
    if ((st = need_int(ctx, g, path, arch, "attention.head_count", &c->n_head)) != PEFT_OK) return st;
    char key[128];
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    if (peft_gguf_get_int(g, key, &c->n_kv_head) != PEFT_OK) c->n_kv_head = c->n_head;
    double d;
    snprintf(key, sizeof key, llama ? "%s.attention.layer_norm_rms_epsilon" : "%s.attention.layer_norm_epsilon", arch);
    if (peft_gguf_get_float(g, key, &d) != PEFT_OK)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: metadata key %s is missing", path, key);
    c->norm_eps = (float)d;
    if (llama) {
        snprintf(key, sizeof key, "%s.rope.freq_base", arch);
        c->rope_theta = peft_gguf_get_float(g, key, &d) == PEFT_OK ? (float)d : 10000.0f;
        int64_t rot;
        snprintf(key, sizeof key, "%s.rope.dimension_count", arch);
        if (c->n_head > 0 && peft_gguf_get_int(g, key, &rot) == PEFT_OK && rot != c->d_model / c->n_head)
            return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: partial rotary embedding (%lld of %lld dims)", path,
                              (long long)rot, (long long)(c->d_model / c->n_head));
        snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
        const char *scaling;
        if (peft_gguf_get_str(g, key, &scaling, NULL) == PEFT_OK && strcmp(scaling, "none"))
            return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: rope scaling \"%s\" is not supported", path, scaling);
        size_t idx;
        c->tie_embeddings = peft_gguf_find_tensor(g, "output.weight", &idx) != PEFT_OK;
    }
    size_t idx;
    peft_gguf_tensor_info ti;
    if (peft_gguf_find_tensor(g, "token_embd.weight", &idx) != PEFT_OK ||
        peft_gguf_get_tensor_info(g, idx, &ti) != PEFT_OK || ti.n_dims != 2)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: no 2-D token_embd.weight", path);
    c->vocab_size = ti.ne[1];
    int64_t v;
    if (peft_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) == PEFT_OK) c->bos_id = (int32_t)v;
    if (peft_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) == PEFT_OK) c->eos_id = (int32_t)v;
    return PEFT_OK;
}

typedef struct gguf_pick {
    const peft_gguf *g;
    peft_arch arch;
    int keep;
} gguf_pick;

static peft_dtype gguf_pick_dtype(void *user, const char *name, int ndim)
{
    gguf_pick *p = user;
    char gname[128];
    size_t idx;
    peft_gguf_tensor_info ti;
    if (!p->keep || ndim != 2 || !gguf_name(p->arch, name, gname, sizeof gname) ||
        peft_gguf_find_tensor(p->g, gname, &idx) != PEFT_OK || peft_gguf_get_tensor_info(p->g, idx, &ti) != PEFT_OK)
        return PEFT_DTYPE_F32;
    switch (ti.ggml_type) {
    case PEFT_GGML_TYPE_F16: return PEFT_DTYPE_F16;
    case PEFT_GGML_TYPE_BF16: return PEFT_DTYPE_BF16;
    case PEFT_GGML_TYPE_Q8_0: return PEFT_DTYPE_Q8_0;
    default: return PEFT_DTYPE_F32;
    }
}

peft_status peft__load_gguf(peft_ctx *ctx, const char *path, const peft_model_load_opts *o, peft_model **out)
{
    peft_gguf *g = NULL;
    peft_status st = peft_gguf_open(ctx, path, &g);
    if (st != PEFT_OK) return st;
    peft_model_config cfg;
    peft_model *m = NULL;
    st = gguf_config(ctx, g, path, &cfg);
    gguf_pick pick = {g, cfg.arch, o->keep_dtype};
    if (st == PEFT_OK) st = peft__model_alloc(ctx, &cfg, gguf_pick_dtype, &pick, &m);
    for (size_t i = 0; st == PEFT_OK && i < m->n_params; i++) {
        peft__param *p = &m->params[i];
        char gname[128];
        size_t idx;
        if (!gguf_name(cfg.arch, p->name, gname, sizeof gname)) {
            st = peft__fail(ctx, PEFT_ERR_INTERNAL, "%s: no GGUF name for '%s'", path, p->name);
            break;
        }
        if (peft_gguf_find_tensor(g, gname, &idx) != PEFT_OK) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: tensor '%s' (for %s) is missing", path, gname, p->name);
            break;
        }
        peft_tensor *src = NULL;
        st = peft_gguf_load_tensor(g, idx, p->t->dtype, &src);
        if (st == PEFT_OK) st = peft__assign_param(ctx, path, p, src, false);
        peft_tensor_destroy(src);
        if (st == PEFT_OK && cfg.arch == PEFT_ARCH_LLAMA) {
            if (strstr(p->name, "q_proj.weight")) st = peft__permute_qk_to_hf(ctx, p->t, cfg.n_head);
            else if (strstr(p->name, "k_proj.weight")) st = peft__permute_qk_to_hf(ctx, p->t, cfg.n_kv_head);
        }
    }
    if (st == PEFT_OK) { /* the tokenizer, when the file carries one */
        peft_tokenizer *tok = NULL;
        st = peft_tokenizer_from_gguf(ctx, g, &tok);
        if (st == PEFT_OK) m->tokenizer = tok;
        else if (st == PEFT_ERR_NOT_FOUND) st = PEFT_OK;
    }
    peft_gguf_close(g);
    if (st != PEFT_OK) {
        peft_model_destroy(m);
        return st;
    }
    *out = m;
    return PEFT_OK;
}
