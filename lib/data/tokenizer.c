/* The tokenizer object: the vocabulary tables every kind shares, argument
 * checks, the split of the text at added tokens (tokenizer.json), dispatch of
 * encode to the kind, and the kind-independent decode (ids -> decoded
 * pieces). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tok_internal.h"

const char *peft__tok_quote(const char *s, size_t len, char *buf, size_t size)
{
    size_t o = 0;
    if (size < 8) {
        if (size) buf[0] = '\0';
        return buf;
    }
    buf[o++] = '\'';
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        if (o + 8 >= size) { /* room for "...'" and the NUL */
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7F && c != '\\' && c != '\'') {
            buf[o++] = (char)c;
        } else {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02X", c);
        }
    }
    buf[o++] = '\'';
    buf[o] = '\0';
    return buf;
}

peft_status peft__tok_read_file(peft_ctx *ctx, const char *who, const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return peft__fail(ctx, PEFT_ERR_IO, "%s: cannot open '%s': %s", who, path, strerror(errno));
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return peft__fail(ctx, PEFT_ERR_IO, "%s: cannot size '%s'", who, path);
    }
    char *buf = peft__malloc(ctx, (size_t)size + 1);
    if (!buf) {
        fclose(f);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %ld bytes for '%s'", who, size, path);
    }
    size_t got = fread(buf, 1, (size_t)size, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != (size_t)size) {
        peft__free(ctx, buf);
        return peft__fail(ctx, PEFT_ERR_IO, "%s: read %zu of %ld bytes of '%s'", who, got, size, path);
    }
    buf[size] = '\0';
    *data = buf;
    *len = (size_t)size;
    return PEFT_OK;
}

peft_status peft__tok_new(peft_ctx *ctx, const char *who, peft_tokenizer_kind kind, size_t n, const char *const *texts,
                          const size_t *lens, peft_tokenizer **out)
{
    *out = NULL;
    if (n == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: the vocabulary is empty", who);
    if (n > INT32_MAX) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %zu tokens do not fit int32 ids", who, n);
    if (!texts || !lens) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: token array or lengths is NULL", who);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!texts[i] && lens[i] != 0)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: token %zu is NULL with length %zu", who, i, lens[i]);
        if (!peft__add_ok(total, lens[i], &total))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: token lengths overflow", who);
    }
    peft_tokenizer *tok = peft__calloc(ctx, 1, sizeof *tok);
    if (!tok) return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot allocate the tokenizer", who);
    tok->ctx = ctx;
    tok->kind = kind;
    tok->n_vocab = n;
    tok->bos = tok->eos = tok->unk = -1;
    for (int b = 0; b < 256; b++) tok->byte_id[b] = -1;
    tok->text = peft__malloc(ctx, total + 1);
    tok->off = peft__malloc(ctx, (n + 1) * sizeof *tok->off);
    tok->attr = peft__calloc(ctx, n, 1);
    if (!tok->text || !tok->off || !tok->attr) {
        peft_tokenizer_destroy(tok);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %zu tokens (%zu bytes)", who, n, total);
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        tok->off[i] = o;
        if (lens[i]) memcpy(tok->text + o, texts[i], lens[i]);
        o += lens[i];
        if (lens[i] > tok->max_text) tok->max_text = lens[i];
    }
    tok->off[n] = o;
    tok->text[o] = '\0';
    int32_t a = -1, b = -1;
    peft_status st = peft__tok_index_build(ctx, &tok->index, tok->text, tok->off, n, &a, &b);
    if (st != PEFT_OK) {
        if (st == PEFT_ERR_NOMEM) {
            peft_tokenizer_destroy(tok);
            return peft__fail(ctx, st, "%s: cannot allocate the token index", who);
        }
        char q[96];
        peft__tok_quote(tok->text + tok->off[a], tok->off[a + 1] - tok->off[a], q, sizeof q);
        peft_tokenizer_destroy(tok);
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: duplicate token %s at ids %d and %d", who, q, (int)a, (int)b);
    }
    *out = tok;
    return PEFT_OK;
}

peft_status peft__tok_alloc_pieces(peft_tokenizer *tok, const char *who, size_t bytes)
{
    tok->piece = peft__malloc(tok->ctx, bytes + 1);
    tok->piece_off = peft__calloc(tok->ctx, tok->n_vocab + 1, sizeof *tok->piece_off);
    if (!tok->piece || !tok->piece_off)
        return peft__fail(tok->ctx, PEFT_ERR_NOMEM, "%s: cannot allocate decoded pieces (%zu bytes)", who, bytes);
    return PEFT_OK;
}

void peft_tokenizer_destroy(peft_tokenizer *tok)
{
    if (!tok) return;
    peft_ctx *ctx = tok->ctx;
    peft__tok_index_free(ctx, &tok->index);
    peft__pair_map_free(ctx, &tok->merges);
    peft__free(ctx, tok->text);
    peft__free(ctx, tok->off);
    peft__free(ctx, tok->piece);
    peft__free(ctx, tok->piece_off);
    peft__free(ctx, tok->attr);
    peft__free(ctx, tok->scores);
    peft__free(ctx, tok->added_len);
    peft__free(ctx, tok);
}

static peft_status encode_piece(peft_tokenizer *tok, const uint8_t *s, size_t n, bool text_start, peft__tok_out *o)
{
    switch (tok->kind) {
    case PEFT_TOKENIZER_BYTES: return peft__tok_bytes_encode(tok, s, n, o);
    case PEFT_TOKENIZER_GPT2_BPE: return peft__tok_bpe_encode(tok, s, n, o);
    case PEFT_TOKENIZER_SPM: return peft__tok_spm_encode(tok, s, n, text_start, o);
    default: return peft__fail(tok->ctx, PEFT_ERR_INTERNAL, "peft_tokenizer_encode: bad kind %d", (int)tok->kind);
    }
}

/* The class and length of the code point that ends just before s[end]
 * (class_after: that starts at s[i]); a stray byte is "other", length 1. */
static uint32_t class_before(const uint8_t *s, size_t end, size_t *len)
{
    size_t i = end - 1;
    while (i > 0 && end - i < 4 && (s[i] & 0xC0) == 0x80) i--;
    uint32_t cp;
    if (peft__utf8_decode(s + i, end - i, &cp) != end - i) { /* not one code point: a stray byte */
        *len = 1;
        return PEFT__UC_OTHER;
    }
    *len = end - i;
    return cp == UINT32_MAX ? PEFT__UC_OTHER : peft__unicode_class(cp);
}

static uint32_t class_after(const uint8_t *s, size_t n, size_t i, size_t *len)
{
    uint32_t cp;
    *len = peft__utf8_decode(s + i, n - i, &cp);
    return cp == UINT32_MAX ? PEFT__UC_OTHER : peft__unicode_class(cp);
}

/* A word character for single_word: a letter, a number or '_' (close to \w). */
static bool word_char(uint32_t cls, uint8_t first) { return cls == PEFT__UC_L || cls == PEFT__UC_N || first == '_'; }

/* The added token that starts at s[i] (the longest), or -1; *len its length. */
static int32_t added_at(const peft_tokenizer *tok, const uint8_t *s, size_t n, size_t i, size_t *len)
{
    if (!(tok->added_first[s[i] >> 3] & (1u << (s[i] & 7)))) return -1;
    for (size_t k = 0; k < tok->n_added_len; k++) {
        size_t l = tok->added_len[k], cl;
        if (l > n - i) continue;
        int32_t id = peft__tok_index_find(&tok->index, (const char *)s + i, l);
        if (id < 0 || !(tok->attr[id] & PEFT__TOK_ADDED)) continue;
        if (tok->attr[id] & PEFT__TOK_SINGLE_WORD) {
            if (i > 0) {
                uint32_t c = class_before(s, i, &cl);
                if (word_char(c, s[i - cl])) continue;
            }
            if (i + l < n && word_char(class_after(s, n, i + l, &cl), s[i + l])) continue;
        }
        *len = l;
        return id;
    }
    return -1;
}

/* Added tokens are found first (leftmost, then longest, as Hugging Face's
 * added vocabulary does); the text between them goes to the model. */
static peft_status encode_text(peft_tokenizer *tok, const uint8_t *s, size_t n, peft__tok_out *o)
{
    if (tok->n_added_len == 0) return encode_piece(tok, s, n, true, o);
    size_t seg = 0; /* start of the text not yet encoded */
    for (size_t i = 0; i < n;) {
        size_t l, cl;
        int32_t id = added_at(tok, s, n, i, &l);
        if (id < 0) {
            i++;
            continue;
        }
        size_t a = i, b = i + l;
        if (tok->attr[id] & PEFT__TOK_LSTRIP)
            while (a > seg && class_before(s, a, &cl) == PEFT__UC_WS && cl <= a - seg) a -= cl;
        if (tok->attr[id] & PEFT__TOK_RSTRIP)
            while (b < n && class_after(s, n, b, &cl) == PEFT__UC_WS) b += cl;
        if (a > seg) {
            peft_status st = encode_piece(tok, s + seg, a - seg, seg == 0, o);
            if (st != PEFT_OK) return st;
        }
        peft__tok_emit(o, id);
        seg = i = b;
    }
    return seg < n ? encode_piece(tok, s + seg, n - seg, seg == 0, o) : PEFT_OK;
}

peft_status peft_tokenizer_encode(peft_tokenizer *tok, const char *text, size_t len, int add_bos, int add_eos,
                                  int32_t *ids, size_t cap, size_t *n_out)
{
    if (!tok) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = tok->ctx;
    if (!n_out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_encode: n_out is NULL");
    *n_out = 0;
    if (!text && len)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_encode: text is NULL with len %zu", len);
    if (!ids && cap)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_encode: ids is NULL with cap %zu", cap);
    if (add_bos && tok->bos < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_encode: add_bos but the %s tokenizer has no BOS",
                          peft_tokenizer_name(tok));
    if (add_eos && tok->eos < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_encode: add_eos but the %s tokenizer has no EOS",
                          peft_tokenizer_name(tok));
    peft__tok_out o = {ids, cap, 0};
    if (add_bos) peft__tok_emit(&o, tok->bos);
    peft_status st = len ? encode_text(tok, (const uint8_t *)text, len, &o) : PEFT_OK;
    if (st != PEFT_OK) return st;
    if (add_eos) peft__tok_emit(&o, tok->eos);
    *n_out = o.n;
    if (o.n > cap)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_encode: needs %zu ids, cap is %zu", o.n, cap);
    return PEFT_OK;
}

peft_status peft_tokenizer_decode(peft_tokenizer *tok, const int32_t *ids, size_t n, char *buf, size_t cap,
                                  size_t *len_out)
{
    if (!tok) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = tok->ctx;
    if (!len_out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_decode: len_out is NULL");
    *len_out = 0;
    if (!ids && n) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_decode: ids is NULL with n %zu", n);
    if (!buf && cap)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_decode: buf is NULL with cap %zu", cap);
    size_t total = 0;
    int32_t prev = -1;
    bool strip = tok->strip_first_space; /* until the first byte of output */
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= tok->n_vocab)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_decode: ids[%zu] = %d is outside [0, %zu)", i,
                              (int)id, tok->n_vocab);
        const char *p = tok->piece + tok->piece_off[id];
        size_t len = tok->piece_off[id + 1] - tok->piece_off[id];
        if (tok->strip_after_bos && prev >= 0 && prev == tok->bos && len > 0 && p[0] == ' ') p++, len--;
        if (strip && len > 0) {
            if (p[0] == ' ') p++, len--;
            strip = false;
        }
        if (total + len < cap) memcpy(buf + total, p, len); /* keep one byte for the NUL */
        if (!peft__add_ok(total, len, &total))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_decode: decoded length overflows");
        prev = id;
    }
    *len_out = total;
    if (total >= cap) {
        if (cap) buf[0] = '\0';
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_decode: needs %zu bytes and a NUL, cap is %zu",
                          total, cap);
    }
    buf[total] = '\0';
    return PEFT_OK;
}

peft_status peft_tokenizer_piece(const peft_tokenizer *tok, int32_t id, const char **piece, size_t *len)
{
    if (!tok) return PEFT_ERR_INVALID_ARG;
    if (!piece || !len) return peft__fail(tok->ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_piece: piece or len is NULL");
    if (id < 0 || (size_t)id >= tok->n_vocab)
        return peft__fail(tok->ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_piece: id %d is outside [0, %zu)", (int)id,
                          tok->n_vocab);
    *piece = tok->piece + tok->piece_off[id];
    *len = tok->piece_off[id + 1] - tok->piece_off[id];
    return PEFT_OK;
}

peft_status peft_tokenizer_token_id(const peft_tokenizer *tok, const char *token, size_t len, int32_t *id)
{
    if (!tok) return PEFT_ERR_INVALID_ARG;
    if (!id || (!token && len))
        return peft__fail(tok->ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_token_id: id or token is NULL");
    *id = peft__tok_index_find(&tok->index, token, len);
    if (*id < 0) {
        char q[96];
        return peft__fail(tok->ctx, PEFT_ERR_NOT_FOUND, "peft_tokenizer_token_id: no token %s",
                          peft__tok_quote(token, len, q, sizeof q));
    }
    return PEFT_OK;
}

size_t peft_tokenizer_n_vocab(const peft_tokenizer *tok) { return tok ? tok->n_vocab : 0; }
int32_t peft_tokenizer_bos(const peft_tokenizer *tok) { return tok ? tok->bos : -1; }
int32_t peft_tokenizer_eos(const peft_tokenizer *tok) { return tok ? tok->eos : -1; }

peft_tokenizer_kind peft_tokenizer_get_kind(const peft_tokenizer *tok)
{
    return tok ? tok->kind : PEFT_TOKENIZER_KIND_COUNT;
}

const char *peft_tokenizer_kind_name(peft_tokenizer_kind kind)
{
    switch (kind) {
    case PEFT_TOKENIZER_BYTES: return "bytes";
    case PEFT_TOKENIZER_GPT2_BPE: return "gpt2-bpe";
    case PEFT_TOKENIZER_SPM: return "spm";
    default: return "?";
    }
}

const char *peft_tokenizer_name(const peft_tokenizer *tok)
{
    return peft_tokenizer_kind_name(peft_tokenizer_get_kind(tok));
}
