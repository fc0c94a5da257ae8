/* SentencePiece-style BPE with byte fallback, encoding exactly as llama2.c's
 * run.c: a dummy-prefix space when the text is non-empty, each UTF-8 code
 * point (a byte and up to 3 continuation bytes) to its piece or else to its
 * "<0xXX>" byte tokens, then merge the adjacent pair whose concatenated text
 * is a piece with the highest score (leftmost on ties) until none is.
 * Loaders: llama2.c tokenizer.bin, or in-memory arrays (GGUF "llama"). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tok_internal.h"

static const char U2581[3] = {'\xE2', '\x96', '\x81'}; /* "▁", SentencePiece's space */

/* ---- encode ---- */

typedef struct spm_job {
    const peft_tokenizer *tok;
    char *cat; /* (2 * max_text) concatenation of two texts */
} spm_job;

static bool spm_pair(void *user, int32_t a, int32_t b, double *key, int32_t *merged)
{
    spm_job *job = user;
    const peft_tokenizer *tok = job->tok;
    size_t la = tok->off[a + 1] - tok->off[a], lb = tok->off[b + 1] - tok->off[b];
    if (la + lb > tok->max_text) return false; /* no piece is that long */
    memcpy(job->cat, tok->text + tok->off[a], la);
    memcpy(job->cat + la, tok->text + tok->off[b], lb);
    int32_t id = peft__tok_index_find(&tok->index, job->cat, la + lb);
    if (id < 0 || !(tok->attr[id] & PEFT__TOK_MERGEABLE)) return false;
    /* the lowest key merges first; unlike run.c, scores <= -1e10 merge too */
    *key = -(double)tok->scores[id];
    *merged = id;
    return true;
}

/* One code point (or stray bytes) g[0..len) to ids: its piece, else bytes. */
static peft_status push_group(const peft_tokenizer *tok, const uint8_t *g, size_t len, int32_t *ids, size_t *k)
{
    char key[12] = {0}; /* at most 4 bytes, a space spelt as 3 */
    size_t kl = 0;
    for (size_t i = 0; i < len; i++) {
        if (g[i] == ' ' && tok->space_is_u2581) {
            memcpy(key + kl, U2581, 3);
            kl += 3;
        } else {
            key[kl++] = (char)g[i];
        }
    }
    int32_t id = peft__tok_index_find(&tok->index, key, kl);
    if (id >= 0 && (tok->attr[id] & PEFT__TOK_MERGEABLE)) {
        ids[(*k)++] = id;
        return PEFT_OK;
    }
    for (size_t i = 0; i < len; i++) {
        id = tok->byte_id[g[i]] >= 0 ? tok->byte_id[g[i]] : tok->unk;
        if (id < 0)
            return peft__fail(tok->ctx, PEFT_ERR_INVALID_ARG,
                              "peft_tokenizer_encode: byte 0x%02X has no piece, no byte token and there is no unk",
                              g[i]);
        ids[(*k)++] = id;
    }
    return PEFT_OK;
}

static bool is_space(const peft_tokenizer *tok, const uint8_t *g, size_t len)
{
    return (len == 1 && g[0] == ' ') || (tok->space_is_u2581 && len == 3 && memcmp(g, U2581, 3) == 0);
}

/* The end of the code point (or stray byte) that starts at s[i]. */
static size_t group_end(const uint8_t *s, size_t n, size_t i)
{
    size_t g = i + 1;
    while (g < n && (s[g] & 0xC0) == 0x80 && g - i < 4) g++;
    return g;
}

static peft_status merge_emit(peft_tokenizer *tok, peft__merger *m, int32_t *ids, size_t k, spm_job *job,
                              peft__tok_out *o)
{
    /* a tokenizer.json lists its merges by rank; the others merge by score */
    peft_status st = tok->merges.key ? peft__merge_run(tok->ctx, m, ids, k, peft__tok_rank_pair, tok, &k)
                                     : peft__merge_run(tok->ctx, m, ids, k, spm_pair, job, &k);
    for (size_t i = 0; st == PEFT_OK && i < k; i++) peft__tok_emit(o, ids[i]);
    return st;
}

peft_status peft__tok_spm_encode(peft_tokenizer *tok, const uint8_t *s, size_t n, bool text_start, peft__tok_out *o)
{
    peft_ctx *ctx = tok->ctx;
    size_t cap;
    if (!peft__add_ok(n, 1, &cap) || !peft__mul_ok(cap, sizeof(int32_t), &cap))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_encode: text of %zu bytes is too long", n);
    int32_t *ids = peft__malloc(ctx, cap); /* (n + 1) at most one symbol per byte, plus the prefix */
    char *cat = peft__malloc(ctx, 2 * tok->max_text + 1);
    peft__merger m = {0};
    peft_status st = PEFT_OK;
    if (!ids || !cat) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "peft_tokenizer_encode: no memory for %zu bytes of text", n);
        goto done;
    }
    bool starts_with_space = n > 0 && is_space(tok, s, group_end(s, n, 0));
    bool prefix = n > 0;
    if (tok->spm_prefix == PEFT__PREFIX_NEVER)
        prefix = false;
    else if (tok->spm_prefix == PEFT__PREFIX_IF_MISSING)
        prefix = prefix && !starts_with_space;
    else if (tok->spm_prefix == PEFT__PREFIX_FIRST_MISSING)
        prefix = prefix && text_start && !starts_with_space;
    spm_job job = {tok, cat};
    size_t k = 0;
    if (prefix) st = push_group(tok, (const uint8_t *)" ", 1, ids, &k); /* the dummy prefix */
    for (size_t i = 0; i < n && st == PEFT_OK;) {
        size_t g = group_end(s, n, i);
        if (tok->spm_split && k > 0 && is_space(tok, s + i, g - i)) { /* a space starts the next word */
            st = merge_emit(tok, &m, ids, k, &job, o);
            k = 0;
        }
        if (st == PEFT_OK) st = push_group(tok, s + i, g - i, ids, &k);
        i = g;
    }
    if (st == PEFT_OK) st = merge_emit(tok, &m, ids, k, &job, o);
done:
    peft__free(ctx, ids);
    peft__free(ctx, cat);
    peft__merger_free(ctx, &m);
    return st;
}

/* ---- building ---- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int peft__tok_byte_piece(const char *t, size_t len)
{
    if (len != 6 || memcmp(t, "<0x", 3) != 0 || t[5] != '>') return -1;
    int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

peft_status peft__tok_spm_build(peft_ctx *ctx, const char *who, size_t n, const char *const *pieces,
                                const size_t *lens, const float *scores, const int32_t *types, int32_t bos,
                                int32_t eos, int32_t unk, int space_is_u2581, peft_tokenizer **out)
{
    char q[96];
    if (!scores) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: scores is NULL", who);
    if (bos < -1 || eos < -1 || unk < -1 || (bos >= 0 && (size_t)bos >= n) || (eos >= 0 && (size_t)eos >= n) ||
        (unk >= 0 && (size_t)unk >= n))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: bos %d / eos %d / unk %d outside [-1, %zu)", who, (int)bos,
                          (int)eos, (int)unk, n);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(scores[i]))
            return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: piece %zu has score %g", who, i, (double)scores[i]);
        if (types && (types[i] < PEFT_TOKEN_NORMAL || types[i] > PEFT_TOKEN_BYTE))
            return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: piece %zu has type %d, not in 1..6", who, i, (int)types[i]);
    }
    peft_tokenizer *tok;
    peft_status st = peft__tok_new(ctx, who, PEFT_TOKENIZER_SPM, n, pieces, lens, &tok);
    if (st != PEFT_OK) return st;
    tok->bos = bos, tok->eos = eos, tok->unk = unk;
    tok->strip_after_bos = true;
    tok->space_is_u2581 = space_is_u2581 != 0;
    tok->scores = peft__malloc(ctx, n * sizeof *tok->scores);
    if (!tok->scores) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %zu scores", who, n);
        goto fail;
    }
    memcpy(tok->scores, scores, n * sizeof *scores);
    st = peft__tok_alloc_pieces(tok, who, tok->off[n]);
    if (st != PEFT_OK) goto fail;
    size_t po = 0;
    for (size_t id = 0; id < n; id++) {
        const char *t = tok->text + tok->off[id];
        size_t len = tok->off[id + 1] - tok->off[id];
        int type = types ? types[id] : PEFT_TOKEN_NORMAL;
        if (!types) { /* llama2.c stores no types: infer them */
            if ((int32_t)id == bos || (int32_t)id == eos)
                type = PEFT_TOKEN_CONTROL;
            else if ((int32_t)id == unk)
                type = PEFT_TOKEN_UNKNOWN;
            else if (peft__tok_byte_piece(t, len) >= 0)
                type = PEFT_TOKEN_BYTE;
        }
        if (type == PEFT_TOKEN_CONTROL || (int32_t)id == bos || (int32_t)id == eos) {
            tok->attr[id] = PEFT__TOK_CONTROL; /* decodes to nothing */
        } else if (type == PEFT_TOKEN_BYTE) {
            int b = peft__tok_byte_piece(t, len);
            if (b < 0) {
                st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: byte piece %zu is %s, not \"<0xXX>\"", who, id,
                                peft__tok_quote(t, len, q, sizeof q));
                goto fail;
            }
            tok->attr[id] = PEFT__TOK_BYTE;
            if (tok->byte_id[b] < 0) tok->byte_id[b] = (int32_t)id;
            tok->piece[po++] = (char)b;
        } else {
            if (type == PEFT_TOKEN_NORMAL || type == PEFT_TOKEN_USER_DEFINED) tok->attr[id] = PEFT__TOK_MERGEABLE;
            for (size_t k = 0; k < len; k++) {
                if (tok->space_is_u2581 && k + 3 <= len && memcmp(t + k, U2581, 3) == 0) {
                    tok->piece[po++] = ' ';
                    k += 2;
                } else {
                    tok->piece[po++] = t[k];
                }
            }
        }
        tok->piece_off[id + 1] = po;
    }
    *out = tok;
    return PEFT_OK;
fail:
    peft_tokenizer_destroy(tok);
    return st;
}

peft_status peft_tokenizer_create_spm(peft_ctx *ctx, size_t n, const char *const *pieces, const size_t *lens,
                                      const float *scores, const int32_t *types, int32_t bos, int32_t eos, int32_t unk,
                                      int space_is_u2581, peft_tokenizer **out)
{
    const char *fn = "peft_tokenizer_create_spm";
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    return peft__tok_spm_build(ctx, fn, n, pieces, lens, scores, types, bos, eos, unk, space_is_u2581, out);
}

/* ---- llama2.c tokenizer.bin ---- */

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

peft_status peft_tokenizer_load_llama2c(peft_ctx *ctx, const char *path, size_t vocab_size, peft_tokenizer **out)
{
    const char *fn = "peft_tokenizer_load_llama2c";
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: path is NULL", fn);
    if (vocab_size == 0 || vocab_size > INT32_MAX)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: vocab_size %zu is not in [1, 2^31)", fn, vocab_size);
    char *data;
    size_t size;
    peft_status st = peft__tok_read_file(ctx, fn, path, &data, &size);
    if (st != PEFT_OK) return st;
    const unsigned char *d = (const unsigned char *)data;
    const char **pieces = peft__calloc(ctx, vocab_size, sizeof *pieces);
    size_t *lens = peft__calloc(ctx, vocab_size, sizeof *lens);
    float *scores = peft__calloc(ctx, vocab_size, sizeof *scores);
    if (!pieces || !lens || !scores) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: %s: cannot allocate %zu tokens", fn, path, vocab_size);
        goto done;
    }
    if (size < 4) {
        st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: %zu bytes, too short for the max_token_length header", fn, path,
                        size);
        goto done;
    }
    int32_t max_len = (int32_t)rd_u32(d);
    if (max_len <= 0) {
        st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: max_token_length is %d", fn, path, (int)max_len);
        goto done;
    }
    size_t o = 4;
    for (size_t i = 0; i < vocab_size; i++) {
        if (size - o < 8) {
            st = peft__fail(
                ctx, PEFT_ERR_FORMAT,
                "%s: %s: truncated: token %zu of %zu needs its score and length at byte %zu, the file has %zu", fn,
                path, i, vocab_size, o, size);
            goto done;
        }
        uint32_t sbits = rd_u32(d + o);
        memcpy(&scores[i], &sbits, sizeof sbits);
        int32_t len = (int32_t)rd_u32(d + o + 4);
        o += 8;
        if (len < 0 || (size_t)len > size - o) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: token %zu has length %d at byte %zu, but %zu bytes are left",
                            fn, path, i, (int)len, o - 4, size - o);
            goto done;
        }
        if (!isfinite(scores[i])) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: token %zu has score %g", fn, path, i, (double)scores[i]);
            goto done;
        }
        pieces[i] = data + o;
        lens[i] = (size_t)len;
        o += (size_t)len;
    }
    if (o != size)
        peft__log(ctx, PEFT_LOG_WARN, "%s: %s: %zu bytes after the %zu tokens are ignored", fn, path, size - o,
                  vocab_size);
    char who[320];
    snprintf(who, sizeof who, "%s: %s", fn, path);
    /* run.c: <unk> 0, BOS 1, EOS 2 */
    st = peft__tok_spm_build(ctx, who, vocab_size, pieces, lens, scores, NULL, vocab_size > 1 ? 1 : -1,
                             vocab_size > 2 ? 2 : -1, 0, 0, out);
done:
    peft__free(ctx, data);
    peft__free(ctx, pieces);
    peft__free(ctx, lens);
    peft__free(ctx, scores);
    return st;
}
