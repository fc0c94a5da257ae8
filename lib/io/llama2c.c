/* llama2.c checkpoint reader (versions 0 and 1; formats.md §8.1).
 *
 * The file is a header followed by f32 arrays back to back; each array
 * ("segment") holds one kind of weight for all layers consecutively. Open
 * validates the header, computes every segment's offset with overflow-checked
 * arithmetic, requires the file size to match the total exactly, and builds
 * the tensor table (HF Llama names) pointing into the mapping.
 *
 * Legend: E dim, F hidden_dim, L n_layers, H n_heads, Hkv n_kv_heads,
 * D = E/H head size, KV = Hkv*D, V vocab, S seq_len. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../internal.h"
#include "peft/llama2c.h"

#define L2C_MAGIC 0x616b3432u /* "ak42" */
#define V0_HEADER_BYTES 28
#define V1_HEADER_BYTES 256
#define NAME_BYTES 64 /* longest: "model.layers.<10 digits>.post_attention_layernorm.weight" */

enum seg {
    S_EMB,       /* [V, E] */
    S_ATT_NORM,  /* L x [E] */
    S_WQ,        /* L x [E, E] */
    S_WK,        /* L x [KV, E] */
    S_WV,        /* L x [KV, E] */
    S_WO,        /* L x [E, E] */
    S_FFN_NORM,  /* L x [E] */
    S_W1,        /* L x [F, E] */
    S_W2,        /* L x [E, F] */
    S_W3,        /* L x [F, E] */
    S_FINAL_NORM, /* [E] */
    S_FREQ_REAL, /* [S, D/2], v0 only, unused */
    S_FREQ_IMAG, /* [S, D/2], v0 only, unused */
    S_CLS,       /* [V, E], only when not shared */
    S_COUNT
};

static const enum seg k_order_v0[] = {S_EMB, S_ATT_NORM, S_WQ, S_WK, S_WV, S_WO, S_FFN_NORM,
                                      S_W1, S_W2, S_W3, S_FINAL_NORM, S_FREQ_REAL, S_FREQ_IMAG, S_CLS};
static const enum seg k_order_v1[] = {S_ATT_NORM, S_FFN_NORM, S_FINAL_NORM, S_EMB, S_WQ, S_WK,
                                      S_WV, S_WO, S_W1, S_W2, S_W3, S_CLS};

typedef struct l2c_tensor {
    char name[NAME_BYTES];
    int ndim;
    int64_t shape[2];
    uint64_t offset; /* bytes from the start of the file */
} l2c_tensor;

struct peft_llama2c {
    peft_ctx *ctx;
    char *path;
    peft__mapped map;
    peft_llama2c_config cfg;
    size_t n_tensors;
    l2c_tensor *tensors; /* (n_tensors) */
};

static peft_status PEFT__PRINTF(3, 4) bad_code(const peft_llama2c *m, peft_status code, const char *fmt, ...)
{
    char msg[PEFT__ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return peft__fail(m->ctx, code, "peft_llama2c_open: %s: %s", m->path, msg);
}
#define bad(m, ...) bad_code((m), PEFT_ERR_FORMAT, __VA_ARGS__)

static int32_t rd_i32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static peft_status read_header(peft_llama2c *m, size_t *header_bytes)
{
    const uint8_t *p = m->map.data;
    size_t size = m->map.size;
    peft_llama2c_config *c = &m->cfg;
    const uint8_t *fields;
    if (size >= 4 && memcmp(p, "GGUF", 4) == 0)
        return bad(m, "this is a GGUF file, not a llama2.c checkpoint (open it with peft_gguf_open)");
    if (size >= 4 && (uint32_t)rd_i32(p) == L2C_MAGIC) {
        if (size < V1_HEADER_BYTES)
            return bad(m, "file is %zu bytes, too small for a llama2.c v1 header (%d)", size, V1_HEADER_BYTES);
        int32_t version = rd_i32(p + 4);
        if (version == 2)
            return bad_code(m, PEFT_ERR_UNSUPPORTED, "llama2.c version 2 (int8-quantized) files are not supported");
        if (version != 1) return bad(m, "unknown llama2.c format version %d", version);
        c->version = 1;
        fields = p + 8;
        *header_bytes = V1_HEADER_BYTES;
    } else {
        if (size < V0_HEADER_BYTES)
            return bad(m, "file is %zu bytes, too small for a llama2.c header (%d)", size, V0_HEADER_BYTES);
        c->version = 0;
        fields = p;
        *header_bytes = V0_HEADER_BYTES;
    }
    static const char *const names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                                         "seq_len"};
    int32_t v[7];
    for (int i = 0; i < 7; i++) v[i] = rd_i32(fields + 4 * i);
    for (int i = 0; i < 7; i++) {
        bool neg_vocab_ok = i == 5 && c->version == 0 && v[i] != INT32_MIN; /* negative = unshared */
        if (v[i] <= 0 && !(neg_vocab_ok && v[i] < 0))
            return bad(m, "header %s is %d (must be > 0)", names[i], (int)v[i]);
    }
    c->dim = v[0];
    c->hidden_dim = v[1];
    c->n_layers = v[2];
    c->n_heads = v[3];
    c->n_kv_heads = v[4];
    c->vocab_size = v[5] < 0 ? -v[5] : v[5];
    c->seq_len = v[6];
    if (c->version == 0) {
        c->shared_classifier = v[5] > 0;
    } else {
        uint8_t shared = p[8 + 28];
        if (shared > 1) return bad(m, "header shared_classifier is %u (must be 0 or 1)", shared);
        c->shared_classifier = shared;
    }
    if (c->dim % c->n_heads != 0)
        return bad(m, "dim %d is not a multiple of n_heads %d", c->dim, c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return bad(m, "n_heads %d is not a multiple of n_kv_heads %d", c->n_heads, c->n_kv_heads);
    if ((c->dim / c->n_heads) % 2 != 0)
        return bad(m, "head size dim/n_heads = %d is odd (RoPE rotates pairs)", c->dim / c->n_heads);
    return PEFT_OK;
}

/* Segment element counts: per layer (per[s]) times a multiplier (L for the
 * layer segments, 1 otherwise); false on overflow. */
static bool segment_sizes(const peft_llama2c_config *c, size_t per[S_COUNT], size_t mult[S_COUNT])
{
    size_t E = (size_t)c->dim, F = (size_t)c->hidden_dim, L = (size_t)c->n_layers, V = (size_t)c->vocab_size;
    size_t D = E / (size_t)c->n_heads, KV = D * (size_t)c->n_kv_heads, S = (size_t)c->seq_len;
    bool ok = true;
    for (int s = 0; s < S_COUNT; s++) per[s] = 0, mult[s] = 1;
    mult[S_ATT_NORM] = mult[S_WQ] = mult[S_WK] = mult[S_WV] = mult[S_WO] = L;
    mult[S_FFN_NORM] = mult[S_W1] = mult[S_W2] = mult[S_W3] = L;
    ok = ok && peft__mul_ok(V, E, &per[S_EMB]);
    per[S_ATT_NORM] = per[S_FFN_NORM] = per[S_FINAL_NORM] = E;
    ok = ok && peft__mul_ok(E, E, &per[S_WQ]);
    per[S_WO] = per[S_WQ];
    ok = ok && peft__mul_ok(KV, E, &per[S_WK]);
    per[S_WV] = per[S_WK];
    ok = ok && peft__mul_ok(F, E, &per[S_W1]);
    per[S_W2] = per[S_W3] = per[S_W1];
    ok = ok && peft__mul_ok(S, D / 2, &per[S_FREQ_REAL]);
    per[S_FREQ_IMAG] = per[S_FREQ_REAL];
    per[S_CLS] = per[S_EMB];
    return ok;
}

static const char *layout_name(const peft_llama2c_config *c)
{
    if (c->version == 0) return c->shared_classifier ? "v0, shared classifier" : "v0, unshared classifier";
    return c->shared_classifier ? "v1, shared classifier" : "v1, unshared classifier";
}

/* Compute segment offsets, check the file size, fill the tensor table. */
static peft_status build_layout(peft_llama2c *m, size_t header_bytes)
{
    const peft_llama2c_config *c = &m->cfg;
    size_t per[S_COUNT], mult[S_COUNT], off[S_COUNT] = {0};
    bool ok = segment_sizes(c, per, mult);
    const enum seg *order = c->version == 0 ? k_order_v0 : k_order_v1;
    size_t n_order = c->version == 0 ? sizeof k_order_v0 / sizeof *order : sizeof k_order_v1 / sizeof *order;
    size_t pos = header_bytes;
    for (size_t k = 0; ok && k < n_order; k++) {
        enum seg s = order[k];
        if (s == S_CLS && c->shared_classifier) continue;
        size_t bytes;
        off[s] = pos;
        ok = peft__mul_ok(per[s], mult[s], &bytes) && peft__mul_ok(bytes, sizeof(float), &bytes) &&
             peft__add_ok(pos, bytes, &pos);
    }
    if (!ok)
        return bad(m, "header sizes overflow (dim=%d hidden_dim=%d n_layers=%d vocab_size=%d seq_len=%d)", c->dim,
                   c->hidden_dim, c->n_layers, c->vocab_size, c->seq_len);
    if (pos != m->map.size) {
        size_t cls = per[S_CLS] * sizeof(float); /* cannot overflow: pos includes or could include it */
        const char *hint = "";
        if (c->shared_classifier && m->map.size > pos && m->map.size - pos == cls)
            hint = " (the extra bytes are the size of a classifier: a v0 file with an unshared classifier needs a "
                   "negative vocab_size)";
        return bad(m,
                   "file is %zu bytes, but the header (dim=%d hidden_dim=%d n_layers=%d n_heads=%d n_kv_heads=%d "
                   "vocab_size=%d seq_len=%d, %s) implies %zu%s",
                   m->map.size, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                   c->seq_len, layout_name(c), pos, hint);
    }

    size_t L = (size_t)c->n_layers;
    m->n_tensors = 2 + 9 * L + (c->shared_classifier ? 0 : 1); /* L is bounded by the file size */
    m->tensors = peft__calloc(m->ctx, m->n_tensors, sizeof *m->tensors);
    if (!m->tensors) return peft__fail(m->ctx, PEFT_ERR_NOMEM, "peft_llama2c_open: out of memory");
    int64_t E = c->dim, F = c->hidden_dim, V = c->vocab_size, KV = (int64_t)c->dim / c->n_heads * c->n_kv_heads;
    size_t n = 0;
#define ADD(seg_, layer_, r_, c_, ...)                                                                        \
    do {                                                                                                      \
        l2c_tensor *t_ = &m->tensors[n++];                                                                    \
        snprintf(t_->name, sizeof t_->name, __VA_ARGS__);                                                     \
        t_->ndim = (c_) > 0 ? 2 : 1;                                                                          \
        t_->shape[0] = (r_);                                                                                  \
        t_->shape[1] = (c_) > 0 ? (c_) : 1;                                                                   \
        t_->offset = (uint64_t)off[seg_] + (uint64_t)(layer_) * per[seg_] * sizeof(float);                    \
    } while (0)
    ADD(S_EMB, 0, V, E, "model.embed_tokens.weight");
    for (size_t l = 0; l < L; l++) {
        ADD(S_ATT_NORM, l, E, 0, "model.layers.%d.input_layernorm.weight", (int)l);
        ADD(S_WQ, l, E, E, "model.layers.%d.self_attn.q_proj.weight", (int)l);
        ADD(S_WK, l, KV, E, "model.layers.%d.self_attn.k_proj.weight", (int)l);
        ADD(S_WV, l, KV, E, "model.layers.%d.self_attn.v_proj.weight", (int)l);
        ADD(S_WO, l, E, E, "model.layers.%d.self_attn.o_proj.weight", (int)l);
        ADD(S_FFN_NORM, l, E, 0, "model.layers.%d.post_attention_layernorm.weight", (int)l);
        ADD(S_W1, l, F, E, "model.layers.%d.mlp.gate_proj.weight", (int)l);
        ADD(S_W2, l, E, F, "model.layers.%d.mlp.down_proj.weight", (int)l);
        ADD(S_W3, l, F, E, "model.layers.%d.mlp.up_proj.weight", (int)l);
    }
    ADD(S_FINAL_NORM, 0, E, 0, "model.norm.weight");
    if (!c->shared_classifier) ADD(S_CLS, 0, V, E, "lm_head.weight");
#undef ADD
    PEFT_ASSERT(n == m->n_tensors);
    return PEFT_OK;
}

peft_status peft_llama2c_open(peft_ctx *ctx, const char *path, peft_llama2c **out)
{
    static const char fn[] = "peft_llama2c_open";
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: path is NULL", fn);
    const uint16_t one = 1;
    uint8_t lo;
    memcpy(&lo, &one, 1);
    if (lo != 1) return peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "%s: big-endian hosts are not supported", fn);
    peft_llama2c *m = peft__calloc(ctx, 1, sizeof *m);
    if (!m) return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    m->ctx = ctx;
    peft_status st = PEFT_ERR_NOMEM;
    size_t plen = strlen(path) + 1, header_bytes = 0;
    m->path = peft__malloc(ctx, plen);
    if (!m->path) {
        peft__fail(ctx, st, "%s: out of memory", fn);
        goto fail;
    }
    memcpy(m->path, path, plen);
    if ((st = peft__map_file(ctx, fn, path, &m->map)) != PEFT_OK) goto fail;
    if ((st = read_header(m, &header_bytes)) != PEFT_OK) goto fail;
    if ((st = build_layout(m, header_bytes)) != PEFT_OK) goto fail;
    *out = m;
    return PEFT_OK;
fail:
    peft_llama2c_close(m);
    return st;
}

void peft_llama2c_close(peft_llama2c *m)
{
    if (!m) return;
    peft_ctx *ctx = m->ctx;
    peft__unmap_file(&m->map);
    peft__free(ctx, m->tensors);
    peft__free(ctx, m->path);
    peft__free(ctx, m);
}

peft_status peft_llama2c_get_config(const peft_llama2c *m, peft_llama2c_config *out)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "peft_llama2c_get_config: out is NULL");
    *out = m->cfg;
    return PEFT_OK;
}

size_t peft_llama2c_n_tensors(const peft_llama2c *m) { return m ? m->n_tensors : 0; }

static peft_status check_index(const peft_llama2c *m, const char *fn, size_t i)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    if (i >= m->n_tensors)
        return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "%s: %s: tensor index %zu out of range (%zu tensors)", fn,
                          m->path, i, m->n_tensors);
    return PEFT_OK;
}

peft_status peft_llama2c_get_tensor_info(const peft_llama2c *m, size_t i, peft_llama2c_tensor_info *out)
{
    static const char fn[] = "peft_llama2c_get_tensor_info";
    peft_status st = check_index(m, fn, i);
    if (st != PEFT_OK) return st;
    if (!out) return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    const l2c_tensor *t = &m->tensors[i];
    out->name = t->name;
    out->ndim = t->ndim;
    out->shape[0] = t->shape[0];
    out->shape[1] = t->ndim == 2 ? t->shape[1] : 1;
    out->shape[2] = out->shape[3] = 1;
    out->numel = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
    out->file_offset = t->offset;
    return PEFT_OK;
}

peft_status peft_llama2c_find_tensor(const peft_llama2c *m, const char *name, size_t *index)
{
    if (!m) return PEFT_ERR_INVALID_ARG;
    if (!name || !index)
        return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "peft_llama2c_find_tensor: name or index is NULL");
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) {
            *index = i;
            return PEFT_OK;
        }
    /* an expected answer for optional tensors: set the message, do not log */
    snprintf(m->ctx->errmsg, sizeof m->ctx->errmsg, "peft_llama2c_find_tensor: %s: no tensor '%.100s'", m->path,
             name);
    m->ctx->errcode = PEFT_ERR_NOT_FOUND;
    return PEFT_ERR_NOT_FOUND;
}

peft_status peft_llama2c_load_tensor(const peft_llama2c *m, size_t i, peft_dtype want, peft_tensor **out)
{
    static const char fn[] = "peft_llama2c_load_tensor";
    if (out) *out = NULL;
    peft_status st = check_index(m, fn, i);
    if (st != PEFT_OK) return st;
    if (!out) return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    if ((unsigned)want >= PEFT_DTYPE_COUNT)
        return peft__fail(m->ctx, PEFT_ERR_INVALID_ARG, "%s: unknown dtype %d", fn, (int)want);
    const l2c_tensor *t = &m->tensors[i];
    return peft__tensor_decode(m->ctx, fn, t->name, PEFT_DTYPE_F32, m->map.data + t->offset, t->ndim, t->shape, want,
                               out);
}
