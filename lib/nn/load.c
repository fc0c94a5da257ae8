/* Loading and saving models: format detection, Hugging Face checkpoints
 * (config.json + safetensors, single or sharded), and the shared step that
 * copies a file's tensor into a parameter with shape checks. GGUF and
 * llama2.c live in load_gguf.c and load_llama2c.c. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "load_internal.h"

const char *peft_model_format_name(peft_model_format f)
{
    switch (f) {
    case PEFT_FORMAT_HF_DIR: return "hf-dir";
    case PEFT_FORMAT_SAFETENSORS: return "safetensors";
    case PEFT_FORMAT_GGUF: return "gguf";
    case PEFT_FORMAT_LLAMA2C: return "llama2c";
    default: return "unknown";
    }
}

peft_model_load_opts peft_model_load_opts_default(void)
{
    peft_model_load_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    return o;
}

peft_status peft_model_detect_format(peft_ctx *ctx, const char *path, peft_model_format *format)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!path || !format) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_model_detect_format: NULL argument");
    *format = PEFT_FORMAT_UNKNOWN;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        char cfg[4096];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        if (stat(cfg, &sb) != 0)
            return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: a directory without config.json is not a checkpoint", path);
        *format = PEFT_FORMAT_HF_DIR;
        return PEFT_OK;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, strerror(errno));
    unsigned char h[28] = {0};
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    if (got >= 4 && !memcmp(h, "GGUF", 4)) {
        *format = PEFT_FORMAT_GGUF;
        return PEFT_OK;
    }
    if (got >= 9 && h[8] == '{') {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = (n << 8) | h[i];
        if (n >= 2 && n < (uint64_t)sb.st_size) {
            *format = PEFT_FORMAT_SAFETENSORS;
            return PEFT_OK;
        }
    }
    if (got >= 4 && !memcmp(h, "ak42", 4)) { /* llama2.c v1+ magic, little-endian 0x616b3432 */
        *format = PEFT_FORMAT_LLAMA2C;
        return PEFT_OK;
    }
    if (got == 28) { /* legacy llama2.c: 7 positive int32 (vocab may be negative) */
        int32_t v[7];
        memcpy(v, h, sizeof v);
        bool ok = v[0] > 0 && v[1] > 0 && v[2] > 0 && v[3] > 0 && v[4] > 0 && v[5] != 0 && v[6] > 0 &&
                  v[0] % v[3] == 0;
        if (ok) {
            *format = PEFT_FORMAT_LLAMA2C;
            return PEFT_OK;
        }
    }
    return peft__fail(ctx, PEFT_ERR_FORMAT,
                      "%s: not a model file (no GGUF magic, safetensors header or llama2.c header)", path);
}

/* ---- shared: copy a file tensor into a parameter ---- */

peft_status peft__assign_param(peft_ctx *ctx, const char *file, peft__param *p, peft_tensor *src, bool transpose)
{
    peft_tensor *dst = p->t;
    char ss[64], sd[64];
    bool ok = src->ndim == dst->ndim;
    if (ok && transpose) ok = dst->ndim == 2 && src->shape[0] == dst->shape[1] && src->shape[1] == dst->shape[0];
    else if (ok)
        for (int i = 0; i < dst->ndim; i++) ok = ok && src->shape[i] == dst->shape[i];
    if (!ok)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: tensor '%s' has shape %s, the config needs %s%s", file, p->name,
                          peft__shape_str(src, ss, sizeof ss), peft__shape_str(dst, sd, sizeof sd),
                          transpose ? " (stored transposed)" : "");
    if (!transpose && src->dtype == dst->dtype) { /* same storage: copy the bytes (also q8_0 blocks) */
        memcpy(dst->data, src->data, peft_tensor_nbytes(dst));
        return PEFT_OK;
    }
    peft_tensor *view = src;
    if (transpose) {
        int prev = peft_set_grad_enabled(ctx, 0);
        peft_status st = peft_transpose(ctx, src, 0, 1, &view);
        peft_set_grad_enabled(ctx, prev);
        if (st != PEFT_OK) return st;
    }
    peft_status st = peft_tensor_copy_out(view, dst->data, dst->dtype, (size_t)peft_tensor_numel(dst));
    if (transpose) peft_graph_release(ctx);
    if (st != PEFT_OK) {
        char why[PEFT__ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", peft_ctx_errmsg(ctx));
        return peft__fail(ctx, st, "%s: tensor '%s': %s", file, p->name, why);
    }
    return PEFT_OK;
}

peft_status peft__permute_qk_to_hf(peft_ctx *ctx, peft_tensor *w, int64_t n_heads)
{
    /* GGUF/Meta row j*D + 2i + c holds HF row j*D + c*D/2 + i (formats.md 3.4) */
    const int64_t rows = w->shape[0], D = rows / n_heads, h = D / 2;
    const size_t row_bytes = (size_t)w->shape[1] * peft_dtype_block_bytes(w->dtype) / peft_dtype_block_elems(w->dtype);
    if (rows % n_heads != 0 || D % 2 != 0)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "q/k permutation: %lld rows do not split into %lld heads of even size",
                          (long long)rows, (long long)n_heads);
    unsigned char *tmp = peft__malloc(ctx, (size_t)D * row_bytes);
    if (!tmp) return peft__fail(ctx, PEFT_ERR_NOMEM, "q/k permutation: out of memory");
    unsigned char *base = w->data;
    for (int64_t j = 0; j < n_heads; j++) {
        memcpy(tmp, base + (size_t)(j * D) * row_bytes, (size_t)D * row_bytes);
        for (int64_t i = 0; i < h; i++)
            for (int64_t c = 0; c < 2; c++)
                memcpy(base + (size_t)(j * D + c * h + i) * row_bytes, tmp + (size_t)(2 * i + c) * row_bytes, row_bytes);
    }
    peft__free(ctx, tmp);
    return PEFT_OK;
}

/* ---- Hugging Face config.json ---- */

static bool json_int(const cJSON *o, const char *key, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (d != (double)(int64_t)d) return false;
    *out = (int64_t)d;
    return true;
}

static bool json_num(const cJSON *o, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return false;
    *out = v->valuedouble;
    return true;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool json_true(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static peft_status read_text(peft_ctx *ctx, const char *path, size_t max, char **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return peft__fail(ctx, PEFT_ERR_IO, "%s: cannot seek", path);
    }
    long n = ftell(f);
    if (n < 0 || (size_t)n > max) {
        fclose(f);
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: size %ld is not plausible for a config file", path, n);
    }
    rewind(f);
    char *buf = peft__malloc(ctx, (size_t)n + 1);
    if (!buf) {
        fclose(f);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        peft__free(ctx, buf);
        return peft__fail(ctx, PEFT_ERR_IO, "%s: short read", path);
    }
    buf[n] = '\0';
    *out = buf;
    return PEFT_OK;
}

#define NEED_INT(o, key, dst)                                                                                \
    do {                                                                                                     \
        int64_t v_;                                                                                          \
        if (!json_int(o, key, &v_))                                                                          \
            return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: \"" key "\" is missing or not an integer", path);  \
        dst = v_;                                                                                            \
    } while (0)

static peft_status parse_hf_config(peft_ctx *ctx, const char *path, const cJSON *j, peft_model_config *c)
{
    const char *type = json_str(j, "model_type");
    if (!type) return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: no \"model_type\"", path);
    double d;
    int64_t v;
    if (!strcmp(type, "gpt2")) {
        *c = peft_model_config_default(PEFT_ARCH_GPT2);
        NEED_INT(j, "vocab_size", c->vocab_size);
        if (!json_int(j, "n_positions", &c->n_ctx)) NEED_INT(j, "n_ctx", c->n_ctx);
        NEED_INT(j, "n_embd", c->d_model);
        NEED_INT(j, "n_layer", c->n_layer);
        NEED_INT(j, "n_head", c->n_head);
        c->n_kv_head = c->n_head;
        c->d_ff = json_int(j, "n_inner", &v) ? v : 4 * c->d_model;
        if (json_num(j, "layer_norm_epsilon", &d)) c->norm_eps = (float)d;
        const char *act = json_str(j, "activation_function");
        if (act && strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh"))
            return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: activation_function \"%s\" (only the tanh GELU is supported)",
                              path, act);
        if (json_true(j, "scale_attn_by_inverse_layer_idx") || json_true(j, "reorder_and_upcast_attn"))
            return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: scale_attn_by_inverse_layer_idx is not supported", path);
    } else if (!strcmp(type, "llama")) {
        *c = peft_model_config_default(PEFT_ARCH_LLAMA);
        NEED_INT(j, "vocab_size", c->vocab_size);
        NEED_INT(j, "hidden_size", c->d_model);
        NEED_INT(j, "intermediate_size", c->d_ff);
        NEED_INT(j, "num_hidden_layers", c->n_layer);
        NEED_INT(j, "num_attention_heads", c->n_head);
        c->n_kv_head = json_int(j, "num_key_value_heads", &v) ? v : c->n_head;
        c->n_ctx = json_int(j, "max_position_embeddings", &v) ? v : 2048;
        c->norm_eps = json_num(j, "rms_norm_eps", &d) ? (float)d : 1e-6f;
        const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
        if (json_num(j, "rope_theta", &d) || (cJSON_IsObject(rp) && json_num(rp, "rope_theta", &d)))
            c->rope_theta = (float)d;
        else
            c->rope_theta = 10000.0f;
        c->tie_embeddings = json_true(j, "tie_word_embeddings");
        if (json_int(j, "head_dim", &v) && c->n_head > 0 && v * c->n_head != c->d_model)
            return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: head_dim %lld != hidden_size / num_attention_heads", path,
                              (long long)v);
        const char *act = json_str(j, "hidden_act");
        if (act && strcmp(act, "silu"))
            return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" (only silu)", path, act);
        if (json_true(j, "attention_bias") || json_true(j, "mlp_bias"))
            return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: attention_bias / mlp_bias are not supported", path);
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
        if (rs && !cJSON_IsNull(rs))
            return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: rope_scaling is not supported", path);
    } else {
        return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: model_type \"%s\" (supported: gpt2, llama)", path, type);
    }
    if (json_int(j, "bos_token_id", &v)) c->bos_id = (int32_t)v;
    if (json_int(j, "eos_token_id", &v)) c->eos_id = (int32_t)v;
    return PEFT_OK;
}

typedef struct hf_pick {
    peft_safetensors *st;
    int keep;
} hf_pick;

/* GPT-2 checkpoints come with or without the "transformer." prefix. */
static peft_status hf_find(const peft_safetensors *st, const char *name, size_t *idx)
{
    if (peft_safetensors_find(st, name, idx) == PEFT_OK) return PEFT_OK;
    if (!strncmp(name, "transformer.", 12) && peft_safetensors_find(st, name + 12, idx) == PEFT_OK) return PEFT_OK;
    return PEFT_ERR_NOT_FOUND;
}

static peft_dtype hf_pick_dtype(void *user, const char *name, int ndim)
{
    hf_pick *p = user;
    size_t idx;
    peft_dtype d = PEFT_DTYPE_F32;
    if (!p->keep || ndim != 2 || hf_find(p->st, name, &idx) != PEFT_OK) return PEFT_DTYPE_F32;
    if (peft_safetensors_info(p->st, idx, NULL, &d, NULL, NULL, NULL) != PEFT_OK) return PEFT_DTYPE_F32;
    return (d == PEFT_DTYPE_F16 || d == PEFT_DTYPE_BF16) ? d : PEFT_DTYPE_F32;
}

static peft_status load_hf(peft_ctx *ctx, const char *dir, const char *weights, const peft_model_load_opts *o,
                           peft_model **out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = NULL;
    peft_status st = read_text(ctx, path, 1 << 20, &text);
    if (st != PEFT_OK) return st;
    cJSON *j = cJSON_Parse(text);
    peft__free(ctx, text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: not a JSON object", path);
    }
    peft_model_config cfg;
    st = parse_hf_config(ctx, path, j, &cfg);
    cJSON_Delete(j);
    if (st != PEFT_OK) return st;

    peft_safetensors *sf = NULL;
    st = weights ? peft_safetensors_open(ctx, weights, &sf) : peft_safetensors_open_dir(ctx, dir, &sf);
    if (st != PEFT_OK) return st;
    const char *file = weights ? weights : dir;
    hf_pick pick = {sf, o->keep_dtype};
    peft_model *m = NULL;
    st = peft__model_alloc(ctx, &cfg, hf_pick_dtype, &pick, &m);
    for (size_t i = 0; st == PEFT_OK && i < m->n_params; i++) {
        peft__param *p = &m->params[i];
        size_t idx;
        if (hf_find(sf, p->name, &idx) != PEFT_OK) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: tensor '%s' is missing", file, p->name);
            break;
        }
        peft_tensor *src = NULL;
        st = peft_safetensors_load(sf, idx, PEFT_DTYPE_COUNT, &src);
        if (st == PEFT_OK) st = peft__assign_param(ctx, file, p, src, p->conv1d);
        peft_tensor_destroy(src);
    }
    peft_safetensors_close(sf);
    if (st != PEFT_OK) {
        peft_model_destroy(m);
        return st;
    }
    *out = m;
    return PEFT_OK;
}

peft_status peft_model_load(peft_ctx *ctx, const char *path, const peft_model_load_opts *opts, peft_model **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_model_load: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_model_load: path is NULL");
    peft_model_load_opts o = peft_model_load_opts_default();
    if (opts) {
        if (opts->struct_size != sizeof o)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_model_load: opts.struct_size %zu (use peft_model_load_opts_default)",
                              opts->struct_size);
        o = *opts;
    }
    peft_model_format fmt;
    peft_status st = peft_model_detect_format(ctx, path, &fmt);
    if (st != PEFT_OK) return st;
    switch (fmt) {
    case PEFT_FORMAT_HF_DIR:
        return load_hf(ctx, path, NULL, &o, out);
    case PEFT_FORMAT_SAFETENSORS: {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, ".");
        return load_hf(ctx, dir, path, &o, out);
    }
    case PEFT_FORMAT_GGUF:
        return peft__load_gguf(ctx, path, &o, out);
    case PEFT_FORMAT_LLAMA2C:
        return peft__load_llama2c(ctx, path, &o, out);
    default:
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: unknown format", path);
    }
}

/* ---- saving ---- */

static peft_status write_config(peft_model *m, const char *path)
{
    peft_ctx *ctx = m->ctx;
    const peft_model_config *c = &m->cfg;
    cJSON *j = cJSON_CreateObject();
    if (!j) return peft__fail(ctx, PEFT_ERR_NOMEM, "config.json: out of memory");
    if (c->arch == PEFT_ARCH_GPT2) {
        cJSON_AddStringToObject(j, "model_type", "gpt2");
        cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
        cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
        cJSON_AddNumberToObject(j, "vocab_size", (double)c->vocab_size);
        cJSON_AddNumberToObject(j, "n_positions", (double)c->n_ctx);
        cJSON_AddNumberToObject(j, "n_ctx", (double)c->n_ctx);
        cJSON_AddNumberToObject(j, "n_embd", (double)c->d_model);
        cJSON_AddNumberToObject(j, "n_layer", (double)c->n_layer);
        cJSON_AddNumberToObject(j, "n_head", (double)c->n_head);
        cJSON_AddNumberToObject(j, "n_inner", (double)c->d_ff);
        cJSON_AddStringToObject(j, "activation_function", "gelu_new");
        cJSON_AddNumberToObject(j, "layer_norm_epsilon", c->norm_eps);
        cJSON_AddBoolToObject(j, "tie_word_embeddings", 1);
    } else {
        cJSON_AddStringToObject(j, "model_type", "llama");
        cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
        cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
        cJSON_AddNumberToObject(j, "vocab_size", (double)c->vocab_size);
        cJSON_AddNumberToObject(j, "hidden_size", (double)c->d_model);
        cJSON_AddNumberToObject(j, "intermediate_size", (double)c->d_ff);
        cJSON_AddNumberToObject(j, "num_hidden_layers", (double)c->n_layer);
        cJSON_AddNumberToObject(j, "num_attention_heads", (double)c->n_head);
        cJSON_AddNumberToObject(j, "num_key_value_heads", (double)c->n_kv_head);
        cJSON_AddNumberToObject(j, "max_position_embeddings", (double)c->n_ctx);
        cJSON_AddNumberToObject(j, "rms_norm_eps", c->norm_eps);
        cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
        cJSON_AddStringToObject(j, "hidden_act", "silu");
        cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_embeddings);
    }
    if (c->bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id);
    if (c->eos_id >= 0) cJSON_AddNumberToObject(j, "eos_token_id", c->eos_id);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return peft__fail(ctx, PEFT_ERR_NOMEM, "config.json: out of memory");
    peft__atomic_file *af = NULL;
    peft_status st = peft__atomic_open(ctx, "peft_model_save", path, &af);
    if (st == PEFT_OK) st = peft__atomic_write(af, text, strlen(text));
    if (st == PEFT_OK) st = peft__atomic_write(af, "\n", 1);
    if (st == PEFT_OK) st = peft__atomic_commit(af);
    else peft__atomic_abort(af);
    free(text);
    return st;
}

peft_status peft_model_save(peft_model *m, const char *dir)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = m->ctx;
    if (!dir) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_model_save: dir is NULL");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return peft__fail(ctx, PEFT_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    peft_status st = write_config(m, path);
    if (st != PEFT_OK) return st;
    const char **names = peft__calloc(ctx, m->n_params, sizeof *names);
    peft_tensor **ts = peft__calloc(ctx, m->n_params, sizeof *ts);
    if (!names || !ts) {
        peft__free(ctx, names), peft__free(ctx, ts);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_model_save: out of memory");
    }
    int prev = peft_set_grad_enabled(ctx, 0);
    for (size_t i = 0; st == PEFT_OK && i < m->n_params; i++) {
        names[i] = m->params[i].name;
        ts[i] = m->params[i].t;
        if (m->params[i].conv1d) st = peft_transpose(ctx, ts[i], 0, 1, &ts[i]); /* back to [in, out] */
    }
    peft_set_grad_enabled(ctx, prev);
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (st == PEFT_OK) st = peft_safetensors_save(ctx, path, m->n_params, names, ts, 1, mk, mv);
    peft_graph_release(ctx);
    peft__free(ctx, names);
    peft__free(ctx, ts);
    return st;
}
