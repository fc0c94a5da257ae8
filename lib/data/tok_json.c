/* Hugging Face tokenizer.json, model "BPE", in its two common shapes, built
 * on the existing tokenizers (no second BPE):
 *
 *  - byte-level (GPT-2, RoBERTa, ...): a ByteLevel pre-tokenizer, alone or in
 *    a Sequence after a Split by GPT-2's regex, and a ByteLevel decoder. It
 *    becomes a gpt2-bpe tokenizer: the same alphabet, pre-tokenizer and merge
 *    ranks as vocab.json + merges.txt.
 *  - SentencePiece-style (Llama 1/2, Mistral): Prepend("▁") + Replace(" ",
 *    "▁") normalizers or a Metaspace pre-tokenizer, byte_fallback, and a
 *    Replace / ByteFallback / Fuse / Strip (or Metaspace) decoder. It becomes
 *    an spm tokenizer (dummy prefix, code points to pieces, "<0xXX>" byte
 *    fallback) whose merge loop takes the pair of lowest merge rank from the
 *    file instead of the piece of highest score.
 *
 * Why ranks and not scores for the second shape: Hugging Face's BPE model
 * merges only the pairs its merge list names, lowest rank first, leftmost on
 * ties. Scores derived from ranks would let any two pieces whose
 * concatenation is a piece merge (a split the list may not name), and would
 * give every split of a piece one priority where the list may rank them
 * apart. The rank pair function (peft__tok_rank_pair, shared with gpt2-bpe)
 * over the spm symbols is that model exactly.
 *
 * Added tokens (added_tokens) are matched in the text before the model runs
 * (tokenizer.c). BOS / EOS: from the post-processor when it says (a
 * TemplateProcessing "single" that starts / ends with a special token, or
 * Roberta/BertProcessing cls / sep), else the added token "<s>",
 * "<|begin_of_text|>" or "<|endoftext|>" (BOS) and "</s>", "<|end_of_text|>"
 * or "<|endoftext|>" (EOS), the first present.
 *
 * Anything else (other models, normalizers, pre-tokenizers, Split patterns,
 * decoders) is PEFT_ERR_UNSUPPORTED naming it, never a silent approximation. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "tok_internal.h"

#define FN "peft_tokenizer_load_json"

static const char U2581[] = "\xE2\x96\x81"; /* "▁" */

/* GPT-2's pre-tokenizer regex as tokenizer.json spells it (after JSON unescaping). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum { FROM_VOCAB = 1, FROM_ADDED = 2, SPECIAL = 4, LSTRIP = 8, RSTRIP = 16, SINGLE_WORD = 32 };

typedef struct json_load {
    peft_ctx *ctx;
    const char *path;
    /* the pipeline */
    bool byte_level, gpt2_regex, split_seen, prefix_space; /* ByteLevel / Split */
    bool metaspace, meta_split;                            /* Metaspace pre-tokenizer */
    uint8_t meta_prefix;                                   /* PEFT__PREFIX_* of the Metaspace */
    bool prepend, replace_space;                           /* normalizers */
    bool dec_byte_level, dec_spm, dec_strip;               /* decoders */
    /* the vocabulary by id: model.vocab and added_tokens together */
    size_t n, cap;     /* ids [0, n); arrays hold cap */
    const char **text; /* (cap) into the JSON tree */
    size_t *len;       /* (cap) */
    uint8_t *flags;    /* (cap) FROM_* and added-token flags */
} json_load;

static peft_status jfail(const json_load *L, peft_status code, const char *fmt, ...) PEFT__PRINTF(3, 4);

static peft_status jfail(const json_load *L, peft_status code, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return peft__fail(L->ctx, code, "%s: %s: %s", FN, L->path, msg);
}

static const cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static const char *get_str(const cJSON *o, const char *key)
{
    const cJSON *v = get(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* true / false, else (missing, null) dflt */
static bool get_bool(const cJSON *o, const char *key, bool dflt)
{
    const cJSON *v = get(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static bool is_null(const cJSON *v) { return !v || cJSON_IsNull(v); }

static const char *quote(const char *s, char *buf, size_t size)
{
    return s ? peft__tok_quote(s, strlen(s), buf, size) : "(none)";
}

/* A pattern for messages: as written, in double quotes, control bytes as
 * \xNN, cut at the buffer size. */
static const char *show(const char *s, char *buf, size_t size)
{
    size_t o = 0;
    buf[o++] = '"';
    for (; s && *s && o + 8 < size; s++) {
        uint8_t c = (uint8_t)*s;
        if (c < 0x20 || c == 0x7F)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02X", c);
        else
            buf[o++] = (char)c;
    }
    if (s && *s) buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* A whole number in [0, bound), or false. */
static bool get_id(const cJSON *v, size_t bound, size_t *id)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d >= (double)bound) return false;
    *id = (size_t)d;
    return true;
}

static const char *num_str(const cJSON *v, char *buf, size_t size)
{
    if (cJSON_IsNumber(v))
        snprintf(buf, size, "%.17g", v->valuedouble);
    else
        snprintf(buf, size, "a non-number");
    return buf;
}

/* ---- the pipeline ---- */

typedef peft_status (*part_fn)(json_load *L, const cJSON *part, const char *where);

/* A Sequence: each element of list_key in turn. */
static peft_status each(json_load *L, const cJSON *seq, const char *where, const char *list_key, part_fn fn)
{
    const cJSON *list = get(seq, list_key);
    if (!cJSON_IsArray(list)) return jfail(L, PEFT_ERR_FORMAT, "%s.%s is not an array", where, list_key);
    int i = 0;
    for (const cJSON *it = list->child; it; it = it->next, i++) {
        char w[256];
        snprintf(w, sizeof w, "%s.%s[%d]", where, list_key, i);
        peft_status st = fn(L, it, w);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

static const char *part_type(json_load *L, const cJSON *part, const char *where, peft_status *st)
{
    const char *type = get_str(part, "type");
    *st = type ? PEFT_OK : jfail(L, PEFT_ERR_FORMAT, "%s has no \"type\"", where);
    return type;
}

static peft_status normalizer(json_load *L, const cJSON *nz, const char *where)
{
    char q[96], q2[96];
    if (is_null(nz)) return PEFT_OK;
    peft_status st;
    const char *type = part_type(L, nz, where, &st);
    if (!type) return st;
    if (!strcmp(type, "Sequence")) return each(L, nz, where, "normalizers", normalizer);
    if (!strcmp(type, "Prepend")) {
        const char *p = get_str(nz, "prepend");
        if (!p || strcmp(p, U2581) != 0)
            return jfail(L, PEFT_ERR_UNSUPPORTED, "%s: Prepend %s is not supported (only \"\xE2\x96\x81\")", where,
                         quote(p, q, sizeof q));
        L->prepend = true;
        return PEFT_OK;
    }
    if (!strcmp(type, "Replace")) {
        const char *from = get_str(get(nz, "pattern"), "String"), *to = get_str(nz, "content");
        if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, U2581) != 0)
            return jfail(L, PEFT_ERR_UNSUPPORTED,
                         "%s: Replace %s -> %s is not supported (only the string \" \" -> \"\xE2\x96\x81\")", where,
                         quote(from, q, sizeof q), quote(to, q2, sizeof q2));
        L->replace_space = true;
        return PEFT_OK;
    }
    return jfail(L, PEFT_ERR_UNSUPPORTED, "%s type \"%s\" is not supported (Prepend, Replace, Sequence)", where, type);
}

/* Metaspace's prepend_scheme (or the older add_prefix_space); *ok = false when unknown. */
static uint8_t metaspace_scheme(const cJSON *m, bool *ok)
{
    const char *s = get_str(m, "prepend_scheme");
    *ok = true;
    if (!s) return get_bool(m, "add_prefix_space", true) ? PEFT__PREFIX_IF_MISSING : PEFT__PREFIX_NEVER;
    if (!strcmp(s, "always")) return PEFT__PREFIX_IF_MISSING;
    if (!strcmp(s, "first")) return PEFT__PREFIX_FIRST_MISSING;
    if (!strcmp(s, "never")) return PEFT__PREFIX_NEVER;
    *ok = false;
    return PEFT__PREFIX_NEVER;
}

static peft_status metaspace_check(json_load *L, const cJSON *m, const char *where, uint8_t *scheme)
{
    char q[96];
    const char *r = get_str(m, "replacement");
    if (!r || strcmp(r, U2581) != 0)
        return jfail(L, PEFT_ERR_UNSUPPORTED, "%s: Metaspace replacement %s is not supported (only \"\xE2\x96\x81\")",
                     where, quote(r, q, sizeof q));
    bool ok;
    *scheme = metaspace_scheme(m, &ok);
    if (!ok)
        return jfail(L, PEFT_ERR_UNSUPPORTED, "%s: Metaspace prepend_scheme %s is not supported", where,
                     quote(get_str(m, "prepend_scheme"), q, sizeof q));
    return PEFT_OK;
}

static peft_status pre_tokenizer(json_load *L, const cJSON *pt, const char *where)
{
    char q[320], q2[96];
    if (is_null(pt)) return PEFT_OK;
    peft_status st;
    const char *type = part_type(L, pt, where, &st);
    if (!type) return st;
    if (!strcmp(type, "Sequence")) return each(L, pt, where, "pretokenizers", pre_tokenizer);
    if (!strcmp(type, "ByteLevel")) {
        L->byte_level = true;
        L->prefix_space |= get_bool(pt, "add_prefix_space", false);
        L->gpt2_regex |= get_bool(pt, "use_regex", true);
        return PEFT_OK;
    }
    if (!strcmp(type, "Split")) {
        const cJSON *pat = get(pt, "pattern");
        const char *re = get_str(pat, "Regex"), *str = get_str(pat, "String");
        const char *behavior = get_str(pt, "behavior");
        bool invert = get_bool(pt, "invert", false);
        if (!re || strcmp(re, GPT2_PATTERN) != 0 || !behavior || strcmp(behavior, "Isolated") != 0 || invert)
            return jfail(L, PEFT_ERR_UNSUPPORTED,
                         "%s: Split by %s %s (behavior %s%s) is not supported: only GPT-2's regex, Isolated", where,
                         re ? "regex" : "string", show(re ? re : str, q, sizeof q), quote(behavior, q2, sizeof q2),
                         invert ? ", inverted" : "");
        L->gpt2_regex = true;
        L->split_seen = true;
        return PEFT_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        st = metaspace_check(L, pt, where, &L->meta_prefix);
        if (st != PEFT_OK) return st;
        L->metaspace = true;
        L->meta_split = get_bool(pt, "split", true);
        return PEFT_OK;
    }
    return jfail(L, PEFT_ERR_UNSUPPORTED,
                 "%s type \"%s\" is not supported (ByteLevel, Split by GPT-2's regex, Metaspace, Sequence)", where,
                 type);
}

static peft_status decoder(json_load *L, const cJSON *d, const char *where)
{
    char q[96], q2[96];
    if (is_null(d)) return PEFT_OK;
    peft_status st;
    const char *type = part_type(L, d, where, &st);
    if (!type) return st;
    if (!strcmp(type, "Sequence")) return each(L, d, where, "decoders", decoder);
    if (!strcmp(type, "ByteLevel")) {
        L->dec_byte_level = true;
        return PEFT_OK;
    }
    if (!strcmp(type, "ByteFallback") || !strcmp(type, "Fuse")) {
        L->dec_spm = true;
        return PEFT_OK;
    }
    if (!strcmp(type, "Replace")) {
        const char *from = get_str(get(d, "pattern"), "String"), *to = get_str(d, "content");
        if (!from || !to || strcmp(from, U2581) != 0 || strcmp(to, " ") != 0)
            return jfail(L, PEFT_ERR_UNSUPPORTED,
                         "%s: Replace %s -> %s is not supported (only the string \"\xE2\x96\x81\" -> \" \")", where,
                         quote(from, q, sizeof q), quote(to, q2, sizeof q2));
        L->dec_spm = true;
        return PEFT_OK;
    }
    if (!strcmp(type, "Strip")) {
        const char *c = get_str(d, "content");
        const cJSON *start = get(d, "start"), *stop = get(d, "stop");
        size_t a = 0, b = 0;
        if (!c || strcmp(c, " ") != 0 || !get_id(start, 2, &a) || !get_id(stop, 1, &b))
            return jfail(L, PEFT_ERR_UNSUPPORTED,
                         "%s: Strip of %s (start %s, stop %s) is not supported (only \" \", start 0 or 1, stop 0)",
                         where, quote(c, q, sizeof q), num_str(start, q2, 48), num_str(stop, q2 + 48, 48));
        L->dec_spm = true;
        L->dec_strip |= a == 1;
        return PEFT_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        uint8_t scheme;
        st = metaspace_check(L, d, where, &scheme);
        if (st != PEFT_OK) return st;
        L->dec_spm = true;
        L->dec_strip |= scheme != PEFT__PREFIX_NEVER; /* it drops the first token's leading space */
        return PEFT_OK;
    }
    return jfail(L, PEFT_ERR_UNSUPPORTED,
                 "%s type \"%s\" is not supported (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)",
                 where, type);
}

/* ---- the vocabulary ---- */

static int32_t find_token(const json_load *L, const char *s, uint8_t need)
{
    size_t l = strlen(s);
    for (size_t id = 0; id < L->n; id++)
        if ((L->flags[id] & need) == need && L->len[id] == l && memcmp(L->text[id], s, l) == 0) return (int32_t)id;
    return -1;
}

static peft_status read_vocab(json_load *L, const cJSON *vocab, const cJSON *added)
{
    char q[96], q2[96], v[64];
    if (!cJSON_IsObject(vocab)) return jfail(L, PEFT_ERR_FORMAT, "model.vocab is not an object token -> id");
    if (!is_null(added) && !cJSON_IsArray(added)) return jfail(L, PEFT_ERR_FORMAT, "added_tokens is not an array");
    size_t nv = (size_t)cJSON_GetArraySize(vocab), na = is_null(added) ? 0 : (size_t)cJSON_GetArraySize(added);
    L->cap = nv + na; /* unique ids without gaps are below this */
    if (L->cap == 0) return jfail(L, PEFT_ERR_FORMAT, "no tokens in model.vocab or added_tokens");
    L->text = peft__calloc(L->ctx, L->cap, sizeof *L->text);
    L->len = peft__calloc(L->ctx, L->cap, sizeof *L->len);
    L->flags = peft__calloc(L->ctx, L->cap, 1);
    if (!L->text || !L->len || !L->flags)
        return jfail(L, PEFT_ERR_NOMEM, "cannot allocate a vocabulary of %zu tokens", L->cap);
    for (const cJSON *it = vocab->child; it; it = it->next) {
        const char *key = it->string ? it->string : "";
        size_t id;
        if (!get_id(it, L->cap, &id))
            return jfail(L, PEFT_ERR_FORMAT, "model.vocab: token %s has id %s, not an integer in [0, %zu)",
                         quote(key, q, sizeof q), num_str(it, v, sizeof v), L->cap);
        if (L->text[id])
            return jfail(L, PEFT_ERR_FORMAT, "model.vocab: id %zu is given to both %s and %s", id,
                         quote(L->text[id], q, sizeof q), quote(key, q2, sizeof q2));
        L->text[id] = key;
        L->len[id] = strlen(key);
        L->flags[id] = FROM_VOCAB;
        if (id >= L->n) L->n = id + 1;
    }
    size_t k = 0;
    for (const cJSON *it = added ? added->child : NULL; it; it = it->next, k++) {
        const cJSON *jid = get(it, "id");
        const char *content = get_str(it, "content");
        size_t id;
        if (!content || !content[0])
            return jfail(L, PEFT_ERR_FORMAT, "added_tokens[%zu] has no content (a non-empty string)", k);
        if (!get_id(jid, L->cap, &id))
            return jfail(L, PEFT_ERR_FORMAT, "added_tokens[%zu]: token %s has id %s, not an integer in [0, %zu)", k,
                         quote(content, q, sizeof q), num_str(jid, v, sizeof v), L->cap);
        if (L->text[id] && strcmp(L->text[id], content) != 0)
            return jfail(L, PEFT_ERR_FORMAT, "added_tokens[%zu]: id %zu is %s here but %s in %s", k, id,
                         quote(content, q, sizeof q), quote(L->text[id], q2, sizeof q2),
                         (L->flags[id] & FROM_VOCAB) ? "model.vocab" : "an earlier added token");
        L->text[id] = content;
        L->len[id] = strlen(content);
        L->flags[id] |= FROM_ADDED | (get_bool(it, "special", false) ? SPECIAL : 0) |
                        (get_bool(it, "lstrip", false) ? LSTRIP : 0) | (get_bool(it, "rstrip", false) ? RSTRIP : 0) |
                        (get_bool(it, "single_word", false) ? SINGLE_WORD : 0);
        if (id >= L->n) L->n = id + 1;
    }
    for (size_t id = 0; id < L->n; id++)
        if (!L->text[id])
            return jfail(L, PEFT_ERR_FORMAT, "no token has id %zu: ids must run from 0 to %zu without gaps", id,
                         L->n - 1);
    return PEFT_OK;
}

/* The id of a special token a post-processor names: its "ids" in the
 * template's special_tokens when given, else the token of that text. */
static peft_status special_id(json_load *L, const cJSON *specials, const char *name, const char *where, int32_t *id)
{
    char q[96];
    const cJSON *ids = get(get(specials, name), "ids");
    size_t v;
    if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 1 && get_id(ids->child, L->n, &v)) {
        *id = (int32_t)v;
        return PEFT_OK;
    }
    *id = find_token(L, name, 0);
    return *id >= 0 ? PEFT_OK
                    : jfail(L, PEFT_ERR_FORMAT, "%s: special token %s is not in the vocabulary", where,
                            quote(name, q, sizeof q));
}

static peft_status post_processor(json_load *L, const cJSON *pp, const char *where, int32_t *bos, int32_t *eos)
{
    if (is_null(pp)) return PEFT_OK;
    const char *type = get_str(pp, "type");
    if (!type) return PEFT_OK; /* only read for BOS / EOS */
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = get(pp, "processors");
        int i = 0;
        for (const cJSON *it = cJSON_IsArray(list) ? list->child : NULL; it; it = it->next, i++) {
            char w[256];
            snprintf(w, sizeof w, "%s.processors[%d]", where, i);
            peft_status st = post_processor(L, it, w, bos, eos);
            if (st != PEFT_OK) return st;
        }
        return PEFT_OK;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = get(pp, "single"), *specials = get(pp, "special_tokens");
        if (!cJSON_IsArray(single)) return PEFT_OK;
        const cJSON *first = single->child, *last = first;
        while (last && last->next) last = last->next;
        /* BOS: a special token that starts the template; EOS: one that ends it */
        const char *b = first && !get(first, "Sequence") ? get_str(get(first, "SpecialToken"), "id") : NULL;
        const char *e = last && last != first && !get(last, "Sequence") ? get_str(get(last, "SpecialToken"), "id")
                                                                        : NULL;
        char w[300];
        snprintf(w, sizeof w, "%s.single", where);
        peft_status st = PEFT_OK;
        if (b) st = special_id(L, specials, b, w, bos);
        if (st == PEFT_OK && e) st = special_id(L, specials, e, w, eos);
        return st;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const cJSON *cls = get(pp, "cls"), *sep = get(pp, "sep");
        size_t v;
        if (cJSON_GetArraySize(cls) == 2 && get_id(cJSON_GetArrayItem(cls, 1), L->n, &v)) *bos = (int32_t)v;
        if (cJSON_GetArraySize(sep) == 2 && get_id(cJSON_GetArrayItem(sep, 1), L->n, &v)) *eos = (int32_t)v;
    }
    return PEFT_OK;
}

static int32_t first_added(const json_load *L, const char *const *names, size_t n_names)
{
    for (size_t i = 0; i < n_names; i++) {
        int32_t id = find_token(L, names[i], FROM_ADDED);
        if (id >= 0) return id;
    }
    return -1;
}

/* ---- merges ---- */

static peft_status add_merges(json_load *L, peft_tokenizer *tok, const cJSON *merges)
{
    char who[600], where[64], q[96];
    snprintf(who, sizeof who, "%s: %s", FN, L->path);
    char *cat = peft__malloc(L->ctx, tok->max_text + 1);
    if (!cat) return jfail(L, PEFT_ERR_NOMEM, "cannot allocate %zu bytes", tok->max_text + 1);
    peft_status st = PEFT_OK;
    size_t r = 0;
    for (const cJSON *it = merges ? merges->child : NULL; it && st == PEFT_OK; it = it->next, r++) {
        snprintf(where, sizeof where, "model.merges[%zu]", r);
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(it)) { /* "a b": split at the first space after the first byte */
            const char *m = it->valuestring;
            size_t len = strlen(m), sp = 1;
            while (sp < len && m[sp] != ' ') sp++;
            if (len == 0 || sp + 1 >= len) {
                st = jfail(L, PEFT_ERR_FORMAT, "%s: merge %s is not two tokens \"a b\"", where,
                           peft__tok_quote(m, len, q, sizeof q));
                break;
            }
            a = m, la = sp, b = m + sp + 1, lb = len - sp - 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) { /* ["a", "b"] */
            a = it->child->valuestring, la = strlen(a);
            b = it->child->next->valuestring, lb = strlen(b);
        } else {
            st = jfail(L, PEFT_ERR_FORMAT, "%s is neither a string \"a b\" nor a pair [\"a\", \"b\"]", where);
            break;
        }
        st = peft__tok_add_merge(tok, who, where, a, la, b, lb, (int32_t)r, cat);
    }
    peft__free(L->ctx, cat);
    return st;
}

/* ---- added tokens ---- */

static int cmp_size_desc(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Mark the added tokens and index their lengths and first bytes for encode. */
static peft_status index_added(json_load *L, peft_tokenizer *tok)
{
    size_t n_added = 0;
    for (size_t id = 0; id < L->n; id++) n_added += (L->flags[id] & FROM_ADDED) != 0;
    if (n_added == 0) return PEFT_OK;
    tok->added_len = peft__malloc(L->ctx, n_added * sizeof *tok->added_len);
    if (!tok->added_len) return jfail(L, PEFT_ERR_NOMEM, "cannot allocate %zu added tokens", n_added);
    size_t k = 0;
    for (size_t id = 0; id < L->n; id++) {
        uint8_t f = L->flags[id];
        if (!(f & FROM_ADDED)) continue;
        tok->attr[id] |= PEFT__TOK_ADDED | ((f & LSTRIP) ? PEFT__TOK_LSTRIP : 0) |
                         ((f & RSTRIP) ? PEFT__TOK_RSTRIP : 0) | ((f & SINGLE_WORD) ? PEFT__TOK_SINGLE_WORD : 0);
        uint8_t c = (uint8_t)L->text[id][0];
        tok->added_first[c >> 3] |= (uint8_t)(1u << (c & 7));
        tok->added_len[k++] = L->len[id];
    }
    qsort(tok->added_len, k, sizeof *tok->added_len, cmp_size_desc);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || tok->added_len[u - 1] != tok->added_len[i]) tok->added_len[u++] = tok->added_len[i];
    tok->n_added_len = u;
    return PEFT_OK;
}

/* ---- the loader ---- */

static peft_status build(json_load *L, const cJSON *root, peft_tokenizer **out)
{
    char q[96], who[600];
    snprintf(who, sizeof who, "%s: %s", FN, L->path);
    if (!cJSON_IsObject(root)) return jfail(L, PEFT_ERR_FORMAT, "not a JSON object");
    const cJSON *model = get(root, "model");
    if (!cJSON_IsObject(model)) return jfail(L, PEFT_ERR_FORMAT, "no \"model\" object: not a tokenizer.json");
    const char *type = get_str(model, "type");
    if (!type && get(model, "merges")) type = "BPE"; /* older files leave it out */
    if (!type) return jfail(L, PEFT_ERR_FORMAT, "model has no \"type\"");
    if (strcmp(type, "BPE") != 0)
        return jfail(L, PEFT_ERR_UNSUPPORTED, "model.type \"%s\" is not supported (only \"BPE\")", type);
    const char *keys[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *v = get_str(model, keys[i]);
        if (v && v[0])
            return jfail(L, PEFT_ERR_UNSUPPORTED, "model.%s %s is not supported", keys[i], quote(v, q, sizeof q));
    }
    const cJSON *dropout = get(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        peft__log(L->ctx, PEFT_LOG_WARN, "%s: %s: model.dropout %g is ignored: encoding is deterministic", FN, L->path,
                  dropout->valuedouble);

    peft_status st = normalizer(L, get(root, "normalizer"), "normalizer");
    if (st == PEFT_OK) st = pre_tokenizer(L, get(root, "pre_tokenizer"), "pre_tokenizer");
    if (st == PEFT_OK) st = decoder(L, get(root, "decoder"), "decoder");
    if (st != PEFT_OK) return st;
    if (L->byte_level && (L->prepend || L->replace_space || L->metaspace))
        return jfail(L, PEFT_ERR_UNSUPPORTED, "a ByteLevel pre-tokenizer with %s is not supported",
                     L->metaspace ? "a Metaspace pre-tokenizer" : "Prepend / Replace normalizers");
    if (L->split_seen && !L->byte_level)
        return jfail(L, PEFT_ERR_UNSUPPORTED, "a Split pre-tokenizer without ByteLevel is not supported");
    if (L->byte_level ? L->dec_spm : L->dec_byte_level)
        return jfail(L, PEFT_ERR_UNSUPPORTED, "a %s decoder with a %s pre-tokenizer is not supported",
                     L->byte_level ? "SentencePiece-style" : "ByteLevel",
                     L->byte_level ? "ByteLevel" : "non-ByteLevel");
    bool byte_fallback = get_bool(model, "byte_fallback", false);
    if (!L->byte_level && !byte_fallback)
        return jfail(L, PEFT_ERR_UNSUPPORTED,
                     "BPE without a ByteLevel pre-tokenizer is supported only SentencePiece-style, with "
                     "model.byte_fallback true");
    const cJSON *merges = get(model, "merges");
    if (!is_null(merges) && !cJSON_IsArray(merges)) return jfail(L, PEFT_ERR_FORMAT, "model.merges is not an array");
    size_t n_merges = merges ? (size_t)cJSON_GetArraySize(merges) : 0;

    st = read_vocab(L, get(model, "vocab"), get(root, "added_tokens"));
    if (st != PEFT_OK) return st;
    int32_t bos = -1, eos = -1;
    st = post_processor(L, get(root, "post_processor"), "post_processor", &bos, &eos);
    if (st != PEFT_OK) return st;
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|endoftext|>"};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>"};
    if (bos < 0) bos = first_added(L, bos_names, 3);
    if (eos < 0) eos = first_added(L, eos_names, 3);

    peft_tokenizer *tok = NULL;
    if (L->byte_level) {
        st = peft__tok_bpe_build(L->ctx, who, L->n, L->text, L->len, bos, eos, n_merges, &tok);
        if (st != PEFT_OK) return st;
        tok->bpe_prefix_space = L->prefix_space;
        tok->bpe_no_regex = !L->gpt2_regex;
        tok->bpe_ignore_merges = get_bool(model, "ignore_merges", false);
    } else {
        int32_t unk = -1;
        const char *unk_name = get_str(model, "unk_token");
        if (unk_name && (unk = find_token(L, unk_name, 0)) < 0)
            return jfail(L, PEFT_ERR_FORMAT, "model.unk_token %s is not in the vocabulary",
                         quote(unk_name, q, sizeof q));
        float *scores = peft__calloc(L->ctx, L->n, sizeof *scores); /* unused: merges go by rank */
        int32_t *types = peft__malloc(L->ctx, L->n * sizeof *types);
        if (!scores || !types) {
            peft__free(L->ctx, scores);
            peft__free(L->ctx, types);
            return jfail(L, PEFT_ERR_NOMEM, "cannot allocate %zu token types", L->n);
        }
        for (size_t id = 0; id < L->n; id++) {
            uint8_t f = L->flags[id];
            int32_t t = PEFT_TOKEN_USER_DEFINED; /* an added token the model does not know */
            if ((int32_t)id == unk)
                t = PEFT_TOKEN_UNKNOWN;
            else if (f & SPECIAL)
                t = PEFT_TOKEN_CONTROL; /* decodes to nothing */
            else if ((f & FROM_VOCAB) && peft__tok_byte_piece(L->text[id], L->len[id]) >= 0)
                t = PEFT_TOKEN_BYTE;
            else if (f & FROM_VOCAB)
                t = PEFT_TOKEN_NORMAL;
            types[id] = t;
        }
        st = peft__tok_spm_build(L->ctx, who, L->n, L->text, L->len, scores, types, bos, eos, unk,
                                 L->replace_space || L->metaspace, &tok);
        peft__free(L->ctx, scores);
        peft__free(L->ctx, types);
        if (st != PEFT_OK) return st;
        /* an empty merge table still switches the merge loop to ranks */
        if (peft__pair_map_init(L->ctx, &tok->merges, n_merges) != PEFT_OK) {
            peft_tokenizer_destroy(tok);
            return jfail(L, PEFT_ERR_NOMEM, "cannot allocate %zu merges", n_merges);
        }
        tok->spm_prefix = L->prepend ? PEFT__PREFIX_ALWAYS : L->metaspace ? L->meta_prefix : PEFT__PREFIX_NEVER;
        tok->spm_split = L->metaspace && L->meta_split;
        tok->strip_after_bos = false; /* the decoder says instead */
        tok->strip_first_space = L->dec_strip;
    }
    if (n_merges > INT32_MAX) st = jfail(L, PEFT_ERR_FORMAT, "%zu merges is too many", n_merges);
    if (st == PEFT_OK) st = add_merges(L, tok, merges);
    if (st == PEFT_OK) st = index_added(L, tok);
    if (st != PEFT_OK) {
        peft_tokenizer_destroy(tok);
        return st;
    }
    *out = tok;
    return PEFT_OK;
}

peft_status peft_tokenizer_load_json(peft_ctx *ctx, const char *path, peft_tokenizer **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", FN);
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: path is NULL", FN);
    char *data;
    size_t len;
    peft_status st = peft__tok_read_file(ctx, FN, path, &data, &len);
    if (st != PEFT_OK) return st;
    size_t skip = len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3) ? 3 : 0; /* a UTF-8 byte order mark */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data + skip, len - skip, &end, 0);
    if (!root) {
        size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0, line = 1;
        for (size_t i = 0; i < at; i++) line += data[i] == '\n';
        peft__free(ctx, data);
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %s: invalid JSON at byte %zu (line %zu)", FN, path, at, line);
    }
    peft__free(ctx, data);
    json_load L = {.ctx = ctx, .path = path};
    st = build(&L, root, out);
    peft__free(ctx, L.text);
    peft__free(ctx, L.len);
    peft__free(ctx, L.flags);
    cJSON_Delete(root);
    return st;
}
