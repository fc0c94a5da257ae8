/* GPT-2 byte-level BPE: the pre-tokenizer regex written out by hand, the
 * byte-to-unicode alphabet, merges by rank, and the loaders (vocab.json +
 * merges.txt, or in-memory arrays).
 *
 * Merges are kept as (left id, right id) -> (rank, merged id): every symbol
 * of a word is a token (each byte starts as its one-character token, and a
 * merge result must be a token), so BPE runs on ids and never on strings. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cJSON.h>

#include "tok_internal.h"

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves,
 * the other 68 bytes map in order to U+0100..U+0143. */
static void gpt2_alphabet(uint32_t cp[256])
{
    uint32_t extra = 256;
    for (int b = 0; b < 256; b++) {
        bool shown = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp[b] = shown ? (uint32_t)b : extra++;
    }
}

#define GPT2_ALPHABET_END 0x144 /* code points of the alphabet are below this */

/* ---- pre-tokenizer ----
 *
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * The alternatives are tried in order at each position and every code point
 * falls in one of the classes L, N, whitespace, other, so the matches tile
 * the text. Bytes that are not valid UTF-8 count as "other". */

static inline uint32_t class_at(const uint8_t *s, size_t n, size_t i, size_t *len)
{
    uint32_t cp;
    *len = s[i] < 0x80 ? (cp = s[i], 1) : peft__utf8_decode(s + i, n - i, &cp);
    return cp == UINT32_MAX ? PEFT__UC_OTHER : peft__unicode_class(cp);
}

size_t peft__gpt2_pretoken_end(const uint8_t *s, size_t n, size_t i)
{
    /* contractions (case-sensitive, as in GPT-2) */
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t a = s[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            uint8_t b = s[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    size_t len;
    uint32_t c = class_at(s, n, i, &len);
    size_t j = i + len;
    /* " ?X+": a space joins the run of letters / numbers / other after it */
    if (s[i] == ' ' && j < n) {
        uint32_t c2 = class_at(s, n, j, &len);
        if (c2 != PEFT__UC_WS) {
            c = c2;
            j += len;
        }
    }
    if (c != PEFT__UC_WS) {
        while (j < n && class_at(s, n, j, &len) == c) j += len;
        return j;
    }
    /* \s+(?!\S) backtracks to leave the last whitespace before a non-space to
     * the next pre-token (where " ?X+" or \s+ takes it); \s+ takes a single one */
    size_t last = i;
    for (j = i; j < n && class_at(s, n, j, &len) == PEFT__UC_WS; j += len) last = j;
    if (j == n) return n;
    return last > i ? last : j;
}

/* ---- encode ---- */

bool peft__tok_rank_pair(void *user, int32_t a, int32_t b, double *key, int32_t *merged)
{
    const peft_tokenizer *tok = user;
    int32_t rank;
    if (!peft__pair_map_get(&tok->merges, a, b, &rank, merged)) return false;
    *key = rank;
    return true;
}

/* The token whose text is the pre-token s[0..w) in the byte-level alphabet,
 * or -1. buf holds 2 * w bytes (an alphabet character is at most 2). */
static int32_t whole_token(const peft_tokenizer *tok, const uint8_t *s, size_t w, char *buf)
{
    size_t o = 0;
    for (size_t k = 0; k < w; k++) o += peft__utf8_encode(tok->byte_cp[s[k]], (uint8_t *)buf + o);
    return o <= tok->max_text ? peft__tok_index_find(&tok->index, buf, o) : -1;
}

peft_status peft__tok_bpe_encode(peft_tokenizer *tok, const uint8_t *s, size_t n, peft__tok_out *o)
{
    peft_ctx *ctx = tok->ctx;
    peft__merger m = {0};
    int32_t *sym = NULL; /* (cap) the symbols of one pre-token */
    char *word = NULL;   /* (2 * cap) a pre-token in the alphabet, for ignore_merges */
    uint8_t *spaced = NULL;
    size_t cap = 0;
    peft_status st = PEFT_OK;
    if (tok->bpe_prefix_space && n > 0 && s[0] != ' ') { /* ByteLevel add_prefix_space */
        spaced = peft__malloc(ctx, n + 1);
        if (!spaced) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_tokenizer_encode: no memory for %zu bytes", n + 1);
        spaced[0] = ' ';
        memcpy(spaced + 1, s, n);
        s = spaced;
        n++;
    }
    for (size_t i = 0; i < n;) {
        size_t end = tok->bpe_no_regex ? n : peft__gpt2_pretoken_end(s, n, i), w = end - i;
        if (w == 1) { /* most punctuation and single spaces: no merge possible */
            peft__tok_emit(o, tok->byte_id[s[i]]);
            i = end;
            continue;
        }
        if (w > cap) {
            size_t c = cap ? cap : 256;
            while (c < w) c *= 2;
            peft__free(ctx, sym);
            peft__free(ctx, word);
            sym = peft__malloc(ctx, c * sizeof *sym);
            word = tok->bpe_ignore_merges ? peft__malloc(ctx, 2 * c) : NULL;
            if (!sym || (tok->bpe_ignore_merges && !word)) {
                st = peft__fail(ctx, PEFT_ERR_NOMEM, "peft_tokenizer_encode: no memory for a %zu-byte word", w);
                break;
            }
            cap = c;
        }
        int32_t whole = tok->bpe_ignore_merges && w <= tok->max_text ? whole_token(tok, s + i, w, word) : -1;
        if (whole >= 0) {
            peft__tok_emit(o, whole);
            i = end;
            continue;
        }
        for (size_t k = 0; k < w; k++) sym[k] = tok->byte_id[s[i + k]];
        size_t k_out;
        st = peft__merge_run(ctx, &m, sym, w, peft__tok_rank_pair, tok, &k_out);
        if (st != PEFT_OK) break;
        for (size_t k = 0; k < k_out; k++) peft__tok_emit(o, sym[k]);
        i = end;
    }
    peft__free(ctx, sym);
    peft__free(ctx, word);
    peft__free(ctx, spaced);
    peft__merger_free(ctx, &m);
    return st;
}

/* ---- building ---- */

/* Where a merge came from, for messages: "file:line" or "merges[i]". */
typedef struct merge_src {
    const char *path;    /* NULL for arrays */
    const size_t *lines; /* (n_merges) line numbers when path is set */
} merge_src;

static const char *merge_where(const merge_src *src, size_t i, char *buf, size_t size)
{
    if (src->path)
        snprintf(buf, size, "%s:%zu", src->path, src->lines[i]);
    else
        snprintf(buf, size, "merges[%zu]", i);
    return buf;
}

peft_status peft__tok_bpe_build(peft_ctx *ctx, const char *who, size_t n_tokens, const char *const *tokens,
                                const size_t *token_lens, int32_t bos, int32_t eos, size_t n_merges,
                                peft_tokenizer **out)
{
    char q[96];
    *out = NULL;
    if (n_merges > INT32_MAX) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %zu merges is too many", who, n_merges);
    if (bos < -1 || (bos >= 0 && (size_t)bos >= n_tokens) || eos < -1 || (eos >= 0 && (size_t)eos >= n_tokens))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: bos %d / eos %d outside [-1, %zu)", who, (int)bos, (int)eos,
                          n_tokens);
    peft_tokenizer *tok;
    peft_status st = peft__tok_new(ctx, who, PEFT_TOKENIZER_GPT2_BPE, n_tokens, tokens, token_lens, &tok);
    if (st != PEFT_OK) return st;
    tok->bos = bos;
    tok->eos = eos;

    /* the alphabet: every byte needs its one-character token */
    gpt2_alphabet(tok->byte_cp);
    int16_t cp_byte[GPT2_ALPHABET_END]; /* inverse of byte_cp */
    memset(cp_byte, 0xFF, sizeof cp_byte);
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        size_t len = peft__utf8_encode(tok->byte_cp[b], u);
        cp_byte[tok->byte_cp[b]] = (int16_t)b;
        tok->byte_id[b] = peft__tok_index_find(&tok->index, (const char *)u, len);
        if (tok->byte_id[b] < 0) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT,
                            "%s: no token for byte 0x%02X (U+%04X %s): not a byte-level BPE vocabulary", who, b,
                            (unsigned)tok->byte_cp[b], peft__tok_quote((const char *)u, len, q, sizeof q));
            goto fail;
        }
    }

    /* decoded pieces: alphabet characters back to bytes; anything else (added
     * tokens written in plain UTF-8) is copied as it is */
    st = peft__tok_alloc_pieces(tok, who, tok->off[n_tokens]);
    if (st != PEFT_OK) goto fail;
    size_t po = 0;
    for (size_t id = 0; id < n_tokens; id++) {
        const uint8_t *t = (const uint8_t *)tok->text + tok->off[id];
        size_t len = tok->off[id + 1] - tok->off[id];
        for (size_t k = 0; k < len;) {
            uint32_t cp;
            size_t l = peft__utf8_decode(t + k, len - k, &cp);
            if (cp < GPT2_ALPHABET_END && cp_byte[cp] >= 0)
                tok->piece[po++] = (char)cp_byte[cp];
            else
                for (size_t x = 0; x < l; x++) tok->piece[po++] = (char)t[k + x];
            k += l;
        }
        tok->piece_off[id + 1] = po;
    }
    if (peft__pair_map_init(ctx, &tok->merges, n_merges) != PEFT_OK) {
        st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %zu merges", who, n_merges);
        goto fail;
    }
    *out = tok;
    return PEFT_OK;
fail:
    peft_tokenizer_destroy(tok);
    return st;
}

/* "a b" for messages, each side cut to fit. */
static const char *merge_quote(const char *a, size_t la, const char *b, size_t lb, bool space, char *q, size_t size)
{
    char m[160];
    size_t ka = la < 70 ? la : 70, kb = lb < 70 ? lb : 70, o = 0;
    memcpy(m, a, ka), o += ka;
    if (space) m[o++] = ' ';
    memcpy(m + o, b, kb), o += kb;
    return peft__tok_quote(m, o, q, size);
}

peft_status peft__tok_add_merge(peft_tokenizer *tok, const char *who, const char *where, const char *a, size_t la,
                                const char *b, size_t lb, int32_t rank, char *cat)
{
    char q[96], q2[96];
    peft_ctx *ctx = tok->ctx;
    int32_t ia = peft__tok_index_find(&tok->index, a, la);
    int32_t ib = peft__tok_index_find(&tok->index, b, lb);
    if (ia < 0 || ib < 0)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: merge %s: token %s is not in the vocabulary", who, where,
                          merge_quote(a, la, b, lb, true, q, sizeof q),
                          ia < 0 ? peft__tok_quote(a, la, q2, sizeof q2) : peft__tok_quote(b, lb, q2, sizeof q2));
    int32_t iab = -1;
    if (la + lb <= tok->max_text) { /* longer is no token */
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        iab = peft__tok_index_find(&tok->index, cat, la + lb);
    }
    if (iab < 0)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: merge %s: the result %s is not in the vocabulary", who, where,
                          merge_quote(a, la, b, lb, true, q, sizeof q),
                          merge_quote(a, la, b, lb, false, q2, sizeof q2));
    if (!peft__pair_map_put(ctx, &tok->merges, ia, ib, rank, iab))
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot grow the merge table", who);
    return PEFT_OK;
}

static peft_status bpe_build(peft_ctx *ctx, const char *fn, const char *vocab_src, size_t n_tokens,
                             const char *const *tokens, const size_t *token_lens, size_t n_merges,
                             const char *const *merges, const size_t *merge_lens, const merge_src *src, int32_t bos,
                             int32_t eos, peft_tokenizer **out)
{
    char who[320], where[300], q[96];
    snprintf(who, sizeof who, "%s: %s", fn, vocab_src);
    if (n_merges && (!merges || !merge_lens))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: merges or merge_lens is NULL", fn);
    for (size_t r = 0; r < n_merges; r++)
        if (!merges[r] && merge_lens[r]) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: merges[%zu] is NULL", fn, r);
    peft_tokenizer *tok;
    peft_status st = peft__tok_bpe_build(ctx, who, n_tokens, tokens, token_lens, bos, eos, n_merges, &tok);
    if (st != PEFT_OK) return st;
    char *cat = peft__malloc(ctx, tok->max_text + 1);
    if (!cat) {
        peft_tokenizer_destroy(tok);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %zu bytes", fn, tok->max_text);
    }
    for (size_t r = 0; r < n_merges && st == PEFT_OK; r++) {
        const char *m = merges[r];
        size_t len = merge_lens[r], sp = 1;
        while (sp < len && m[sp] != ' ') sp++;
        if (len == 0 || sp + 1 >= len) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: merge %s is not two tokens \"a b\"", fn,
                            merge_where(src, r, where, sizeof where), peft__tok_quote(m, len, q, sizeof q));
            break;
        }
        st = peft__tok_add_merge(tok, fn, merge_where(src, r, where, sizeof where), m, sp, m + sp + 1, len - sp - 1,
                                 (int32_t)r, cat);
    }
    peft__free(ctx, cat);
    if (st != PEFT_OK) {
        peft_tokenizer_destroy(tok);
        return st;
    }
    *out = tok;
    return PEFT_OK;
}

peft_status peft_tokenizer_create_bpe(peft_ctx *ctx, size_t n_tokens, const char *const *tokens,
                                      const size_t *token_lens, size_t n_merges, const char *const *merges,
                                      const size_t *merge_lens, int32_t bos, int32_t eos, peft_tokenizer **out)
{
    const char *fn = "peft_tokenizer_create_bpe";
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    merge_src src = {NULL, NULL};
    return bpe_build(ctx, fn, "tokens", n_tokens, tokens, token_lens, n_merges, merges, merge_lens, &src, bos, eos,
                     out);
}

/* ---- files: vocab.json / encoder.json + merges.txt / vocab.bpe ---- */

/* Token strings of a JSON object {"token": id, ...} in id order. They point
 * into *json, which the caller deletes. */
static peft_status read_vocab_json(peft_ctx *ctx, const char *fn, const char *path, cJSON **json, size_t *n_out,
                                   const char ***tokens_out, size_t **lens_out)
{
    char *data;
    size_t len;
    *json = NULL;
    peft_status st = peft__tok_read_file(ctx, fn, path, &data, &len);
    if (st != PEFT_OK) return st;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0, line = 1;
        for (size_t i = 0; i < at; i++) line += data[i] == '\n';
        peft__free(ctx, data);
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: invalid JSON at byte %zu (line %zu)", fn, path, at, line);
    }
    peft__free(ctx, data);
    *json = root;
    if (!cJSON_IsObject(root))
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: not a JSON object token -> id", fn, path);
    size_t n = 0;
    for (cJSON *it = root->child; it; it = it->next) n++;
    if (n == 0) return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: no tokens", fn, path);
    const char **tokens = peft__calloc(ctx, n, sizeof *tokens);
    size_t *lens = peft__calloc(ctx, n, sizeof *lens);
    if (!tokens || !lens) {
        peft__free(ctx, tokens);
        peft__free(ctx, lens);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: %s: cannot allocate %zu tokens", fn, path, n);
    }
    char q[96], q2[96];
    for (cJSON *it = root->child; it; it = it->next) {
        const char *key = it->string ? it->string : "";
        double v = it->valuedouble;
        if (!cJSON_IsNumber(it) || !(v >= 0) || v != floor(v) || v >= (double)n) {
            char val[64];
            if (cJSON_IsNumber(it))
                snprintf(val, sizeof val, "%.17g", v);
            else
                snprintf(val, sizeof val, "a non-number");
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: token %s has id %s, not an integer in [0, %zu)", fn, path,
                            peft__tok_quote(key, strlen(key), q, sizeof q), val, n);
            goto fail;
        }
        size_t id = (size_t)v;
        if (tokens[id]) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: id %zu is given to both %s and %s", fn, path, id,
                            peft__tok_quote(tokens[id], lens[id], q, sizeof q),
                            peft__tok_quote(key, strlen(key), q2, sizeof q2));
            goto fail;
        }
        tokens[id] = key;
        lens[id] = strlen(key);
    }
    *n_out = n;
    *tokens_out = tokens;
    *lens_out = lens;
    return PEFT_OK;
fail:
    peft__free(ctx, tokens);
    peft__free(ctx, lens);
    return st;
}

/* The merge lines of merges.txt: skips an optional "#version" first line and
 * empty lines; drops '\r' line ends. Pointers go into `data`. */
static peft_status split_merges(peft_ctx *ctx, const char *fn, const char *path, char *data, size_t len, size_t *n_out,
                                const char ***merges, size_t **lens, size_t **lines)
{
    size_t n_lines = 1;
    for (size_t i = 0; i < len; i++) n_lines += data[i] == '\n';
    *merges = peft__calloc(ctx, n_lines, sizeof **merges);
    *lens = peft__calloc(ctx, n_lines, sizeof **lens);
    *lines = peft__calloc(ctx, n_lines, sizeof **lines);
    if (!*merges || !*lens || !*lines)
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: %s: cannot allocate %zu lines", fn, path, n_lines);
    size_t n = 0, line = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && data[e] != '\n') e++;
        size_t l = e - i;
        line++;
        if (l > 0 && data[i + l - 1] == '\r') l--;
        bool header = line == 1 && l >= 8 && memcmp(data + i, "#version", 8) == 0;
        if (l > 0 && !header) {
            (*merges)[n] = data + i;
            (*lens)[n] = l;
            (*lines)[n] = line;
            n++;
        }
        i = e + 1;
    }
    *n_out = n;
    return PEFT_OK;
}

peft_status peft_tokenizer_load_gpt2(peft_ctx *ctx, const char *vocab_json_path, const char *merges_path,
                                     peft_tokenizer **out)
{
    const char *fn = "peft_tokenizer_load_gpt2";
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!vocab_json_path || !merges_path)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: vocab_json_path or merges_path is NULL", fn);
    cJSON *json = NULL;
    const char **tokens = NULL, **merges = NULL;
    size_t n_tokens = 0, n_merges = 0, *token_lens = NULL, *merge_lens = NULL, *lines = NULL, mlen;
    char *mdata = NULL;
    peft_status st = read_vocab_json(ctx, fn, vocab_json_path, &json, &n_tokens, &tokens, &token_lens);
    if (st == PEFT_OK) st = peft__tok_read_file(ctx, fn, merges_path, &mdata, &mlen);
    if (st == PEFT_OK) st = split_merges(ctx, fn, merges_path, mdata, mlen, &n_merges, &merges, &merge_lens, &lines);
    if (st == PEFT_OK) {
        int32_t eot = -1; /* GPT-2 marks both ends of a document with <|endoftext|> */
        for (size_t i = 0; i < n_tokens; i++)
            if (token_lens[i] == 13 && memcmp(tokens[i], "<|endoftext|>", 13) == 0) eot = (int32_t)i;
        merge_src src = {merges_path, lines};
        st = bpe_build(ctx, fn, vocab_json_path, n_tokens, tokens, token_lens, n_merges, merges, merge_lens, &src, eot,
                       eot, out);
    }
    cJSON_Delete(json);
    peft__free(ctx, tokens);
    peft__free(ctx, token_lens);
    peft__free(ctx, mdata);
    peft__free(ctx, merges);
    peft__free(ctx, merge_lens);
    peft__free(ctx, lines);
    return st;
}
