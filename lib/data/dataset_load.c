/* Loading datasets: format detection, the text / JSONL / TSV readers and the
 * builder that tokenizes each document or line as it is read and appends its
 * tokens to the store. Only the tokens are kept; the text goes through a
 * fixed-size read buffer one line (JSONL, TSV) or one document (text) at a
 * time. */
#include <cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset_internal.h"
#include "tok_internal.h"

peft_dataset_opts peft_dataset_opts_default(void)
{
    peft_dataset_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.format = PEFT_DATA_AUTO;
    o.task = PEFT_DATA_TASK_AUTO;
    o.seq_len = 128;
    o.add_bos = -1;
    o.add_eos = 0;
    o.pack = PEFT_PACK_ACROSS;
    o.sep = PEFT_SEP_AUTO;
    o.overflow = PEFT_OVERFLOW_TRUNCATE;
    o.skip_bad_lines = 0;
    o.utf8 = PEFT_UTF8_KEEP;
    return o;
}

/* ---- the builder ---- */

enum { SHAPE_NONE, SHAPE_TEXT, SHAPE_PC, SHAPE_CLS };
enum { LABEL_NONE, LABEL_STR, LABEL_INT };
#define MAX_INT_LABEL 65535 /* integer labels without a class list: ids 0..65535 */

/* Distinct label strings -> ids in order of first appearance (open addressing). */
typedef struct labtab {
    char **names;
    size_t n, cap;
    int32_t *slot; /* (scap) index into names or -1 */
    size_t scap;
} labtab;

typedef struct builder {
    peft_ctx *ctx;
    peft_tokenizer *tok;
    peft_dataset_opts o;
    const char *name;
    peft_data_format format;
    peft_data_sep sep;
    int32_t bos, eos; /* ids added, or -1 */
    int shape;
    /* the store being built */
    int32_t *tokens;  /* (cap_tok) */
    uint8_t *mask;    /* (cap_tok) when has_mask */
    size_t n_tok, cap_tok;
    bool has_mask;
    int64_t *offsets; /* (cap_off) offsets[0..n_ex] */
    size_t n_ex, cap_off;
    int32_t *labels;  /* (cap_lab) */
    size_t cap_lab;
    /* scratch */
    int32_t *ids, *ids2;
    size_t cap_ids, cap_ids2;
    char *fix, *doc;
    size_t cap_fix, cap_doc, doc_len, doc_keep, doc_line;
    /* classes */
    labtab lt;
    int label_kind;
    int32_t max_int_label;
    bool fixed_classes;
    /* per line and totals */
    bool skipped;
    size_t n_skipped, n_truncated, n_invalid_utf8, text_peak;
} builder;

/* Make room for `need` elements (keeping the first `used`), growing by doubling. */
static bool grow(peft_ctx *ctx, void **p, size_t *cap, size_t need, size_t used, size_t elem)
{
    if (need <= *cap) return true;
    size_t ncap = *cap > 512 ? *cap : 512, bytes;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) return false;
        ncap *= 2;
    }
    if (!peft__mul_ok(ncap, elem, &bytes)) return false;
    void *np = peft__malloc(ctx, bytes);
    if (!np) return false;
    if (used) memcpy(np, *p, used * elem);
    peft__free(ctx, *p);
    *p = np;
    *cap = ncap;
    return true;
}

static peft_status nomem(builder *b) { return peft__fail(b->ctx, PEFT_ERR_NOMEM, "%s: out of memory", b->name); }

/* A bad line: skipped and counted with skip_bad_lines, else PEFT_ERR_FORMAT "name:line: what". */
static peft_status bad(builder *b, size_t line, const char *fmt, ...) PEFT__PRINTF(3, 4);
static peft_status bad(builder *b, size_t line, const char *fmt, ...)
{
    b->skipped = true;
    if (b->o.skip_bad_lines) {
        b->n_skipped++;
        return PEFT_OK;
    }
    char what[PEFT__ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return peft__fail(b->ctx, PEFT_ERR_FORMAT, "%s:%zu: %s", b->name, line, what);
}

/* Prefix an error already set (tokenizer, memory) with name:line. */
static peft_status at_line(builder *b, size_t line, peft_status st)
{
    char why[PEFT__ERRMSG_SIZE];
    snprintf(why, sizeof why, "%s", peft_ctx_errmsg(b->ctx));
    return peft__fail(b->ctx, st, "%s:%zu: %s", b->name, line, why);
}

static void builder_free(builder *b)
{
    peft_ctx *ctx = b->ctx;
    peft__free(ctx, b->tokens), peft__free(ctx, b->mask), peft__free(ctx, b->offsets), peft__free(ctx, b->labels);
    peft__free(ctx, b->ids), peft__free(ctx, b->ids2), peft__free(ctx, b->fix), peft__free(ctx, b->doc);
    for (size_t i = 0; i < b->lt.n; i++) peft__free(ctx, b->lt.names[i]);
    peft__free(ctx, b->lt.names), peft__free(ctx, b->lt.slot);
}

/* ---- tokens and examples ---- */

/* Tokenize without BOS/EOS into *buf. Every token of the three tokenizers
 * covers at least one byte except SentencePiece's dummy-prefix space, so
 * len + 4 ids always suffice; the retry is a safety net. */
static peft_status encode(builder *b, size_t line, const char *text, size_t len, int32_t **buf, size_t *cap,
                          size_t *n)
{
    size_t want;
    if (!peft__add_ok(len, 4, &want) || !grow(b->ctx, (void **)buf, cap, want, 0, sizeof **buf)) return nomem(b);
    peft_status st = peft_tokenizer_encode(b->tok, text, len, 0, 0, *buf, *cap, n);
    if (st == PEFT_ERR_INVALID_ARG && *n > *cap) {
        if (!grow(b->ctx, (void **)buf, cap, *n, 0, sizeof **buf)) return nomem(b);
        st = peft_tokenizer_encode(b->tok, text, len, 0, 0, *buf, *cap, n);
    }
    return st == PEFT_OK ? PEFT_OK : at_line(b, line, st);
}

static bool push_tok(builder *b, int32_t id, uint8_t m)
{
    if (b->n_tok == b->cap_tok) {
        size_t cap = b->cap_tok;
        if (!grow(b->ctx, (void **)&b->tokens, &cap, b->n_tok + 1, b->n_tok, sizeof *b->tokens)) return false;
        if (b->has_mask) {
            size_t mcap = b->cap_tok;
            if (!grow(b->ctx, (void **)&b->mask, &mcap, cap, b->n_tok, sizeof *b->mask)) return false;
        }
        b->cap_tok = cap;
    }
    if (b->has_mask) b->mask[b->n_tok] = m;
    b->tokens[b->n_tok++] = id;
    return true;
}

static bool push_toks(builder *b, const int32_t *ids, size_t n, uint8_t m)
{
    for (size_t i = 0; i < n; i++)
        if (!push_tok(b, ids[i], m)) return false;
    return true;
}

/* Close the example made of the tokens pushed since the last one. */
static bool end_example(builder *b, int32_t label)
{
    if (!grow(b->ctx, (void **)&b->offsets, &b->cap_off, b->n_ex + 2, b->n_ex + 1, sizeof *b->offsets)) return false;
    if (b->shape == SHAPE_CLS && !grow(b->ctx, (void **)&b->labels, &b->cap_lab, b->n_ex + 1, b->n_ex, sizeof *b->labels))
        return false;
    if (b->shape == SHAPE_CLS) b->labels[b->n_ex] = label;
    b->offsets[++b->n_ex] = (int64_t)b->n_tok;
    return true;
}

/* ---- UTF-8 ---- */

/* Apply opts.utf8 to text[0..len): *text / *len may move to the repaired copy. */
static peft_status check_utf8(builder *b, size_t line, const char **text, size_t *len)
{
    const uint8_t *s = (const uint8_t *)*text;
    size_t n = *len, i = 0, bad_at = SIZE_MAX, n_bad = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = peft__utf8_decode(s + i, n - i, &cp);
        if (cp == UINT32_MAX) {
            if (bad_at == SIZE_MAX) bad_at = i;
            n_bad++;
        }
        i += k;
    }
    if (n_bad == 0) return PEFT_OK;
    b->n_invalid_utf8++;
    if (b->o.utf8 == PEFT_UTF8_KEEP) return PEFT_OK;
    if (b->o.utf8 == PEFT_UTF8_REJECT) return bad(b, line, "invalid UTF-8 at byte %zu of the text", bad_at);
    /* replace: each invalid byte (1) becomes U+FFFD (3) */
    size_t need;
    if (!peft__mul_ok(n_bad, 2, &need) || !peft__add_ok(need, n, &need) ||
        !grow(b->ctx, (void **)&b->fix, &b->cap_fix, need, 0, 1))
        return nomem(b);
    size_t o = 0;
    for (i = 0; i < n;) {
        uint32_t cp;
        size_t k = peft__utf8_decode(s + i, n - i, &cp);
        if (cp == UINT32_MAX) {
            memcpy(b->fix + o, "\xEF\xBF\xBD", 3);
            o += 3;
        } else {
            memcpy(b->fix + o, s + i, k);
            o += k;
        }
        i += k;
    }
    *text = b->fix;
    *len = o;
    return PEFT_OK;
}

/* ---- LM documents ---- */

/* A document: [BOS] tokens [EOS], appended to the stream (packed across) or
 * cut into sequences of its own (within a document). */
static peft_status add_document(builder *b, size_t line, const char *text, size_t len)
{
    peft_status st = check_utf8(b, line, &text, &len);
    if (st != PEFT_OK || b->skipped) return st;
    size_t n;
    if ((st = encode(b, line, text, len, &b->ids, &b->cap_ids, &n)) != PEFT_OK) return st;
    size_t total = n + (b->bos >= 0) + (b->eos >= 0);
    if (total == 0) return PEFT_OK;
    if (b->o.pack == PEFT_PACK_ACROSS) {
        bool ok = (b->bos < 0 || push_tok(b, b->bos, 1)) && push_toks(b, b->ids, n, 1) && (b->eos < 0 || push_tok(b, b->eos, 1));
        return ok ? PEFT_OK : nomem(b);
    }
    const size_t T = (size_t)b->o.seq_len;
    for (size_t k = 0; k < total; k += T) {
        size_t m = total - k < T ? total - k : T;
        if (m < 2) break; /* nothing to predict */
        for (size_t t = k; t < k + m; t++) {
            int32_t id = b->bos >= 0 && t == 0 ? b->bos : (b->eos >= 0 && t == total - 1 ? b->eos : b->ids[t - (b->bos >= 0)]);
            if (!push_tok(b, id, 1)) return nomem(b);
        }
        if (!end_example(b, -1)) return nomem(b);
    }
    return PEFT_OK;
}

/* ---- prompt / completion ---- */

static peft_status add_prompt_completion(builder *b, size_t line, const char *p, size_t plen, const char *c,
                                         size_t clen)
{
    const size_t bad_before = b->n_invalid_utf8;
    size_t np, nc;
    peft_status st = check_utf8(b, line, &p, &plen);
    if (st != PEFT_OK || b->skipped) return st;
    if ((st = encode(b, line, p, plen, &b->ids, &b->cap_ids, &np)) != PEFT_OK) return st; /* before c reuses fix */
    if ((st = check_utf8(b, line, &c, &clen)) != PEFT_OK || b->skipped) return st;
    if (b->n_invalid_utf8 > bad_before + 1) b->n_invalid_utf8 = bad_before + 1; /* one count per line */
    if ((st = encode(b, line, c, clen, &b->ids2, &b->cap_ids2, &nc)) != PEFT_OK) return st;
    const size_t nb = b->bos >= 0, ne = b->eos >= 0, L = (size_t)b->o.seq_len - nb;
    if (nc + ne == 0) return bad(b, line, "the completion is empty");
    size_t keep_p = np, keep_c = nc;
    bool eos = ne;
    if (np + nc + ne > L) {
        if (b->o.overflow == PEFT_OVERFLOW_REFUSE)
            return peft__fail(b->ctx, PEFT_ERR_FORMAT, "%s:%zu: %zu tokens exceed seq_len %lld (overflow: refuse)", b->name,
                              line, nb + np + nc + ne, (long long)b->o.seq_len);
        if (b->o.overflow == PEFT_OVERFLOW_DROP) {
            b->n_skipped++;
            b->skipped = true;
            return PEFT_OK;
        }
        b->n_truncated++;
        /* the first completion token needs one token of context: BOS or the last prompt token */
        const size_t min_p = nb || np == 0 ? 0 : 1;
        if (nc + ne + min_p <= L) keep_p = L - (nc + ne); /* drop the oldest prompt tokens */
        else {                                            /* the completion alone is too long: cut its end */
            keep_p = min_p;
            keep_c = L - keep_p;
            eos = false;
        }
    }
    /* the first token of a row is never a target */
    const size_t targets = keep_c + eos - (nb + keep_p == 0 ? 1 : 0);
    if (keep_c + eos == 0 || targets == 0) return bad(b, line, "nothing to predict within seq_len %lld", (long long)b->o.seq_len);
    bool ok = (!nb || push_tok(b, b->bos, 0)) && push_toks(b, b->ids + (np - keep_p), keep_p, 0) &&
              push_toks(b, b->ids2, keep_c, 1) && (!eos || push_tok(b, b->eos, 1)) && end_example(b, -1);
    return ok ? PEFT_OK : nomem(b);
}

/* ---- classification ---- */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* The id of label s[0..n), -1 when absent (and not added). */
static peft_status lab_lookup(builder *b, const char *s, size_t n, bool add, int32_t *id)
{
    labtab *t = &b->lt;
    *id = -1;
    if (t->scap) {
        for (size_t i = hash_bytes(s, n) & (t->scap - 1);; i = (i + 1) & (t->scap - 1)) {
            int32_t k = t->slot[i];
            if (k < 0) break;
            if (strlen(t->names[k]) == n && !memcmp(t->names[k], s, n)) {
                *id = k;
                return PEFT_OK;
            }
        }
    }
    if (!add) return PEFT_OK;
    if (t->n >= INT32_MAX - 1) return peft__fail(b->ctx, PEFT_ERR_FORMAT, "%s: too many distinct labels", b->name);
    if ((t->n + 1) * 2 > t->scap) { /* rehash at half full */
        size_t ncap = t->scap ? t->scap * 2 : 64;
        int32_t *ns = peft__malloc(b->ctx, ncap * sizeof *ns);
        if (!ns) return nomem(b);
        for (size_t i = 0; i < ncap; i++) ns[i] = -1;
        for (size_t k = 0; k < t->n; k++) {
            size_t i = hash_bytes(t->names[k], strlen(t->names[k])) & (ncap - 1);
            while (ns[i] >= 0) i = (i + 1) & (ncap - 1);
            ns[i] = (int32_t)k;
        }
        peft__free(b->ctx, t->slot);
        t->slot = ns;
        t->scap = ncap;
    }
    if (!grow(b->ctx, (void **)&t->names, &t->cap, t->n + 1, t->n, sizeof *t->names)) return nomem(b);
    char *copy = peft__malloc(b->ctx, n + 1);
    if (!copy) return nomem(b);
    memcpy(copy, s, n);
    copy[n] = '\0';
    size_t i = hash_bytes(s, n) & (t->scap - 1);
    while (t->slot[i] >= 0) i = (i + 1) & (t->scap - 1);
    t->slot[i] = (int32_t)t->n;
    t->names[t->n] = copy;
    *id = (int32_t)t->n++;
    return PEFT_OK;
}

/* A label: a string (lab != NULL) or an integer. Checks it against the class
 * list; without one, it is only registered once the example is accepted
 * (commit = true), so skipped lines leave no empty classes behind. */
static peft_status resolve_label(builder *b, size_t line, const char *lab, size_t lab_len, double num, bool commit,
                                 int32_t *id)
{
    *id = -1;
    if (!lab) {
        if (!(num >= 0 && num == floor(num) && num <= INT32_MAX))
            return bad(b, line, "label %g is not an integer >= 0", num);
        int32_t v = (int32_t)num;
        if (b->fixed_classes) {
            if (v >= b->o.n_classes) return bad(b, line, "label %d is outside the %d classes", (int)v, b->o.n_classes);
        } else {
            if (b->label_kind == LABEL_STR) return bad(b, line, "integer label %d after string labels", (int)v);
            if (v > MAX_INT_LABEL) return bad(b, line, "label %d is larger than %d (pass opts.classes)", (int)v, MAX_INT_LABEL);
            if (commit) {
                b->label_kind = LABEL_INT;
                if (v > b->max_int_label) b->max_int_label = v;
            }
        }
        *id = v;
        return PEFT_OK;
    }
    if (lab_len == 0) return bad(b, line, "the label is empty");
    if (!b->fixed_classes && b->label_kind == LABEL_INT) return bad(b, line, "string label after integer labels");
    peft_status st = lab_lookup(b, lab, lab_len, !b->fixed_classes && commit, id);
    if (st != PEFT_OK) return st;
    if (b->fixed_classes && *id < 0) {
        char q[96];
        return bad(b, line, "label %s is not one of the %d classes", peft__tok_quote(lab, lab_len, q, sizeof q),
                   b->o.n_classes);
    }
    if (commit && !b->fixed_classes) b->label_kind = LABEL_STR;
    return PEFT_OK;
}

static peft_status add_classified(builder *b, size_t line, const char *text, size_t len, const char *lab,
                                  size_t lab_len, double num)
{
    int32_t label;
    peft_status st = resolve_label(b, line, lab, lab_len, num, false, &label);
    if (st != PEFT_OK || b->skipped) return st;
    if ((st = check_utf8(b, line, &text, &len)) != PEFT_OK || b->skipped) return st;
    size_t n;
    if ((st = encode(b, line, text, len, &b->ids, &b->cap_ids, &n)) != PEFT_OK) return st;
    if (n == 0) return bad(b, line, "the text has no tokens");
    const size_t nb = b->bos >= 0, ne = b->eos >= 0, L = (size_t)b->o.seq_len - nb - ne;
    if (n > L) {
        if (b->o.overflow == PEFT_OVERFLOW_REFUSE)
            return peft__fail(b->ctx, PEFT_ERR_FORMAT, "%s:%zu: %zu tokens exceed seq_len %lld (overflow: refuse)", b->name,
                              line, nb + n + ne, (long long)b->o.seq_len);
        if (b->o.overflow == PEFT_OVERFLOW_DROP) {
            b->n_skipped++;
            b->skipped = true;
            return PEFT_OK;
        }
        b->n_truncated++;
        n = L; /* keep the start */
    }
    if ((st = resolve_label(b, line, lab, lab_len, num, true, &label)) != PEFT_OK || b->skipped) return st;
    bool ok = (!nb || push_tok(b, b->bos, 1)) && push_toks(b, b->ids, n, 1) && (!ne || push_tok(b, b->eos, 1)) &&
              end_example(b, label);
    return ok ? PEFT_OK : nomem(b);
}

/* ---- the formats ---- */

static bool is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return false;
    return true;
}

static bool is_percent(const char *s, size_t n) { return n == 1 && s[0] == '%'; }

static peft_status flush_document(builder *b)
{
    peft_status st = PEFT_OK;
    if (b->doc_keep > 0) st = add_document(b, b->doc_line, b->doc, b->doc_keep);
    b->doc_len = b->doc_keep = 0;
    return st;
}

/* Text: lines gather into a document until a separator line. */
static peft_status text_line(builder *b, size_t line_no, const char *s, size_t n)
{
    bool blank = is_blank(s, n);
    bool sep = (b->sep != PEFT_SEP_PERCENT && blank) || (b->sep != PEFT_SEP_BLANK && is_percent(s, n));
    if (sep) return flush_document(b);
    if (b->doc_len == 0 && blank) return PEFT_OK; /* leading blank lines of a document */
    if (b->doc_len == 0) b->doc_line = line_no;
    size_t need;
    if (!peft__add_ok(b->doc_len, n + 1, &need) || !grow(b->ctx, (void **)&b->doc, &b->cap_doc, need, b->doc_len, 1))
        return peft__fail(b->ctx, PEFT_ERR_NOMEM, "%s:%zu: out of memory for the document starting at line %zu (%zu bytes)",
                          b->name, line_no, b->doc_line, b->doc_len);
    if (b->doc_len > 0) b->doc[b->doc_len++] = '\n';
    memcpy(b->doc + b->doc_len, s, n);
    b->doc_len += n;
    if (!blank) b->doc_keep = b->doc_len; /* trailing blank lines are dropped */
    return PEFT_OK;
}

static peft_status tsv_line(builder *b, size_t line_no, const char *s, size_t n)
{
    if (is_blank(s, n)) return PEFT_OK;
    const char *tab = memchr(s, '\t', n);
    if (!tab || tab == s || tab + 1 == s + n) return bad(b, line_no, "expected \"label<TAB>text\"");
    return add_classified(b, line_no, tab + 1, (size_t)(s + n - (tab + 1)), s, (size_t)(tab - s), 0);
}

/* Field `key` of a JSON object, NULL when absent (the type is checked by the caller). */
static const cJSON *json_field(const cJSON *j, const char *key) { return cJSON_GetObjectItemCaseSensitive(j, key); }

static peft_status jsonl_line(builder *b, size_t line_no, const char *s, size_t n)
{
    if (is_blank(s, n)) return PEFT_OK;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!j) {
        size_t col = end && end >= s && end <= s + n ? (size_t)(end - s) + 1 : 1;
        return bad(b, line_no, "not valid JSON (at column %zu)", col);
    }
    peft_status st = PEFT_OK;
    while (end < s + n && isspace((unsigned char)*end)) end++;
    const cJSON *text = json_field(j, "text"), *prompt = json_field(j, "prompt"), *comp = json_field(j, "completion"),
                *label = json_field(j, "label");
    if (end != s + n) {
        st = bad(b, line_no, "text after the JSON value (at column %zu)", (size_t)(end - s) + 1);
        goto done;
    }
    if (!cJSON_IsObject(j)) {
        st = bad(b, line_no, "expected a JSON object");
        goto done;
    }
    if (b->shape == SHAPE_NONE) { /* the first object decides */
        if (b->o.task == PEFT_DATA_TASK_CLASSIFY) b->shape = SHAPE_CLS;
        else if (prompt && comp) b->shape = SHAPE_PC;
        else if (text && label && b->o.task == PEFT_DATA_TASK_AUTO) b->shape = SHAPE_CLS;
        else if (text) b->shape = SHAPE_TEXT;
        else {
            st = bad(b, line_no, "expected a \"text\" field, or \"prompt\" and \"completion\"");
            goto done;
        }
        if (b->shape == SHAPE_PC) b->has_mask = true;
    }
    if (b->shape == SHAPE_PC) {
        if (!prompt || !comp) st = bad(b, line_no, "missing \"%s\"", prompt ? "completion" : "prompt");
        else if (!cJSON_IsString(prompt) || !cJSON_IsString(comp))
            st = bad(b, line_no, "\"%s\" is not a string", cJSON_IsString(prompt) ? "completion" : "prompt");
        else
            st = add_prompt_completion(b, line_no, prompt->valuestring, strlen(prompt->valuestring), comp->valuestring,
                                       strlen(comp->valuestring));
    } else if (!text) {
        st = bad(b, line_no, "missing \"text\"");
    } else if (!cJSON_IsString(text)) {
        st = bad(b, line_no, "\"text\" is not a string");
    } else if (b->shape == SHAPE_TEXT) {
        st = add_document(b, line_no, text->valuestring, strlen(text->valuestring));
    } else if (!label) {
        st = bad(b, line_no, "missing \"label\"");
    } else if (cJSON_IsString(label)) {
        if (!text->valuestring[0]) st = bad(b, line_no, "the text is empty");
        else st = add_classified(b, line_no, text->valuestring, strlen(text->valuestring), label->valuestring,
                                 strlen(label->valuestring), 0);
    } else if (cJSON_IsNumber(label)) {
        if (!text->valuestring[0]) st = bad(b, line_no, "the text is empty");
        else st = add_classified(b, line_no, text->valuestring, strlen(text->valuestring), NULL, 0, label->valuedouble);
    } else {
        st = bad(b, line_no, "\"label\" is neither a string nor an integer");
    }
done:
    cJSON_Delete(j);
    return st;
}

/* ---- detection ---- */

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    if (n < k) return false;
    for (size_t i = 0; i < k; i++)
        if (tolower((unsigned char)s[n - k + i]) != suffix[i]) return false;
    return true;
}

static peft_data_format format_from_name(const char *path)
{
    if (!path) return PEFT_DATA_AUTO;
    size_t n = strlen(path);
    if (ends_with(path, n, ".gz")) n -= 3;
    if (ends_with(path, n, ".jsonl") || ends_with(path, n, ".json") || ends_with(path, n, ".ndjson")) return PEFT_DATA_JSONL;
    if (ends_with(path, n, ".tsv")) return PEFT_DATA_TSV;
    if (ends_with(path, n, ".txt") || ends_with(path, n, ".text")) return PEFT_DATA_TEXT;
    return PEFT_DATA_AUTO;
}

/* Walk the complete lines of the sniffed bytes (the last one only at EOF). */
typedef struct sniff_iter {
    const char *p;
    size_t n, pos;
    bool eof;
} sniff_iter;

static bool sniff_next(sniff_iter *it, const char **line, size_t *len)
{
    if (it->pos >= it->n) return false;
    const char *s = it->p + it->pos, *nl = memchr(s, '\n', it->n - it->pos);
    if (!nl && !it->eof) return false;
    size_t k = nl ? (size_t)(nl - s) : it->n - it->pos;
    it->pos += k + 1;
    if (s == it->p && k >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) s += 3, k -= 3;
    if (k > 0 && s[k - 1] == '\r') k--;
    *line = s;
    *len = k;
    return true;
}

/* JSONL when the first non-blank line is a JSON object (or starts with "{"
 * and is too long to see whole); TSV when the first lines (up to 32) all read
 * "label<TAB>text" with a short label without spaces; else text. */
static peft_data_format format_from_content(const char *p, size_t n, bool eof)
{
    size_t i = n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3) ? 3 : 0;
    while (i < n && isspace((unsigned char)p[i])) i++;
    if (i < n && p[i] == '{') {
        const char *nl = memchr(p + i, '\n', n - i), *end = NULL;
        if (!nl && !eof) return PEFT_DATA_JSONL;
        size_t k = nl ? (size_t)(nl - (p + i)) : n - i;
        cJSON *j = cJSON_ParseWithLengthOpts(p + i, k, &end, 0);
        bool obj = j && cJSON_IsObject(j);
        while (obj && end < p + i + k && isspace((unsigned char)*end)) end++;
        cJSON_Delete(j);
        if (obj && end == p + i + k) return PEFT_DATA_JSONL;
    }
    sniff_iter it = {p, n, 0, eof};
    const char *s;
    size_t k;
    int lines = 0;
    bool tsv = true;
    while (lines < 32 && sniff_next(&it, &s, &k)) {
        if (is_blank(s, k)) continue;
        const char *tab = memchr(s, '\t', k);
        if (!tab || tab == s || tab - s > 64 || tab + 1 == s + k || memchr(s, ' ', (size_t)(tab - s))) tsv = false;
        lines++;
    }
    return tsv && lines > 0 ? PEFT_DATA_TSV : PEFT_DATA_TEXT;
}

static bool has_percent_line(const char *p, size_t n, bool eof)
{
    sniff_iter it = {p, n, 0, eof};
    const char *s;
    size_t k;
    while (sniff_next(&it, &s, &k))
        if (is_percent(s, k)) return true;
    return false;
}

/* ---- options ---- */

#define OPTS_V1_SIZE (offsetof(peft_dataset_opts, n_classes) + sizeof(int))

static peft_status check_opts(peft_ctx *ctx, const char *fn, peft_tokenizer *tok, const peft_dataset_opts *in,
                              peft_dataset_opts *o)
{
    *o = peft_dataset_opts_default();
    if (in) {
        if (in->struct_size < OPTS_V1_SIZE || in->struct_size > sizeof *o)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.struct_size is %zu (expected %zu; start from peft_dataset_opts_default)",
                              fn, in->struct_size, sizeof *o);
        memcpy(o, in, in->struct_size);
    }
    if ((unsigned)o->format >= PEFT_DATA_FORMAT_COUNT)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.format %d is unknown", fn, (int)o->format);
    if ((unsigned)o->task > PEFT_DATA_TASK_CLASSIFY)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.task %d is unknown", fn, (int)o->task);
    if ((unsigned)o->pack > PEFT_PACK_WITHIN_DOC)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.pack %d is unknown", fn, (int)o->pack);
    if ((unsigned)o->sep > PEFT_SEP_ANY) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.sep %d is unknown", fn, (int)o->sep);
    if ((unsigned)o->overflow > PEFT_OVERFLOW_DROP)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.overflow %d is unknown", fn, (int)o->overflow);
    if ((unsigned)o->utf8 > PEFT_UTF8_REJECT)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.utf8 %d is unknown", fn, (int)o->utf8);
    if (o->seq_len < 2 || o->seq_len > 1 << 20)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: seq_len %lld (must be 2..2^20)", fn, (long long)o->seq_len);
    if (o->add_bos < -1 || o->add_bos > 1 || o->add_eos < -1 || o->add_eos > 1)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: add_bos %d / add_eos %d (must be -1, 0 or 1)", fn, o->add_bos,
                          o->add_eos);
    if (o->add_bos == 1 && peft_tokenizer_bos(tok) < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: add_bos = 1 but the %s tokenizer has no BOS", fn, peft_tokenizer_name(tok));
    if (o->add_eos == 1 && peft_tokenizer_eos(tok) < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: add_eos = 1 but the %s tokenizer has no EOS", fn, peft_tokenizer_name(tok));
    if (!o->classes != !o->n_classes)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.classes and opts.n_classes (%d) go together", fn, o->n_classes);
    if (o->classes) {
        if (o->n_classes < 2)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.n_classes %d (a class list needs at least 2)", fn, o->n_classes);
        for (int i = 0; i < o->n_classes; i++) {
            if (!o->classes[i] || !o->classes[i][0])
                return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.classes[%d] is NULL or empty", fn, i);
            for (int k = 0; k < i; k++)
                if (!strcmp(o->classes[i], o->classes[k]))
                    return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.classes[%d] and [%d] are both \"%s\"", fn, k, i,
                                      o->classes[i]);
        }
    }
    return PEFT_OK;
}

/* ---- the end: classes and packing ---- */

static const char *num_name(const char *s)
{
    size_t i = 0;
    while (s[i] >= '0' && s[i] <= '9') i++;
    return s[0] && !s[i] && i <= 18 ? s : NULL; /* all digits, fits in int64 */
}

/* Sort keys of the labels: numeric order when every label is a number. */
typedef struct lab_key {
    const char *name;
    long long num; /* -1 when not all labels are numbers */
    int32_t prov;
} lab_key;

static int cmp_lab_key(const void *pa, const void *pb)
{
    const lab_key *a = pa, *b = pb;
    if (a->num >= 0 && b->num >= 0 && a->num != b->num) return a->num < b->num ? -1 : 1;
    return strcmp(a->name, b->name);
}

static char *dup_str(peft_ctx *ctx, const char *s)
{
    size_t n = strlen(s);
    char *d = peft__malloc(ctx, n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* Class ids and names; labels so far are provisional (first appearance / the integer). */
static peft_status finish_classes(builder *b, peft__store *s)
{
    peft_ctx *ctx = b->ctx;
    int n_classes;
    if (b->fixed_classes) n_classes = b->o.n_classes;
    else if (b->label_kind == LABEL_INT) n_classes = b->max_int_label + 1;
    else n_classes = (int)b->lt.n;
    if (n_classes < 2)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %d distinct label(s); classification needs at least 2", b->name, n_classes);
    s->class_names = peft__calloc(ctx, (size_t)n_classes, sizeof *s->class_names);
    if (!s->class_names) return nomem(b);
    s->n_classes = n_classes;
    if (b->fixed_classes) {
        for (int c = 0; c < n_classes; c++)
            if (!(s->class_names[c] = dup_str(ctx, b->o.classes[c]))) return nomem(b);
        /* string labels were looked up in a table built from the list, in list order */
        return PEFT_OK;
    }
    if (b->label_kind == LABEL_INT) {
        for (int c = 0; c < n_classes; c++) {
            char num[16];
            snprintf(num, sizeof num, "%d", c);
            if (!(s->class_names[c] = dup_str(ctx, num))) return nomem(b);
        }
        return PEFT_OK;
    }
    lab_key *keys = peft__malloc(ctx, (size_t)n_classes * sizeof *keys);
    int32_t *rank = peft__malloc(ctx, (size_t)n_classes * sizeof *rank);
    if (!keys || !rank) {
        peft__free(ctx, keys), peft__free(ctx, rank);
        return nomem(b);
    }
    bool numeric = true;
    for (int c = 0; c < n_classes; c++) numeric = numeric && num_name(b->lt.names[c]);
    for (int c = 0; c < n_classes; c++)
        keys[c] = (lab_key){b->lt.names[c], numeric ? strtoll(b->lt.names[c], NULL, 10) : -1, c};
    qsort(keys, (size_t)n_classes, sizeof *keys, cmp_lab_key);
    for (int c = 0; c < n_classes; c++) {
        rank[keys[c].prov] = c;
        s->class_names[c] = b->lt.names[keys[c].prov]; /* moved to the store */
        b->lt.names[keys[c].prov] = NULL;
    }
    for (size_t e = 0; e < s->n; e++) s->labels[e] = rank[s->labels[e]];
    peft__free(ctx, keys), peft__free(ctx, rank);
    return PEFT_OK;
}

/* Move the built arrays into a new store. */
static peft_status finish(builder *b, size_t lines, peft_dataset **out)
{
    peft_ctx *ctx = b->ctx;
    if (b->shape == SHAPE_NONE && b->format == PEFT_DATA_JSONL)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: no examples (%zu line(s) read, %zu skipped)", b->name, lines, b->n_skipped);
    bool across = (b->shape == SHAPE_TEXT) && b->o.pack == PEFT_PACK_ACROSS;
    size_t n_ex = b->n_ex;
    if (across) { /* windows of seq_len; a last one of a single token is dropped */
        size_t T = (size_t)b->o.seq_len;
        n_ex = b->n_tok / T + (b->n_tok % T >= 2);
        if (!grow(ctx, (void **)&b->offsets, &b->cap_off, n_ex + 1, 0, sizeof *b->offsets)) return nomem(b);
        for (size_t e = 0; e <= n_ex; e++) b->offsets[e] = (int64_t)(e * T < b->n_tok ? e * T : b->n_tok);
    }
    if (n_ex == 0)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: no examples (%zu line(s) read, %zu skipped, %zu token(s))", b->name, lines,
                          b->n_skipped, b->n_tok);
    peft__store *s = peft__calloc(ctx, 1, sizeof *s);
    if (!s) return nomem(b);
    s->n = n_ex;
    s->tokens = b->tokens, b->tokens = NULL;
    s->offsets = b->offsets, b->offsets = NULL;
    if (b->has_mask) s->loss_mask = b->mask, b->mask = NULL;
    if (b->shape == SHAPE_CLS) s->labels = b->labels, b->labels = NULL;
    s->format = b->format;
    s->n_skipped = b->n_skipped;
    s->n_truncated = b->n_truncated;
    s->n_invalid_utf8 = b->n_invalid_utf8;
    s->text_peak = b->text_peak;
    if (b->shape == SHAPE_CLS) {
        peft_status st = finish_classes(b, s);
        if (st != PEFT_OK) {
            peft__store_free(ctx, s);
            return st;
        }
    }
    return peft__dataset_wrap(ctx, s, out);
}

/* ---- entry points ---- */

static const char fn_name[] = "peft_dataset_load";

peft_status peft__dataset_load_src(peft_ctx *ctx, peft_tokenizer *tok, peft__src *src, const char *path,
                                   const peft_dataset_opts *opts, size_t chunk, peft_dataset **out)
{
    builder b;
    memset(&b, 0, sizeof b);
    b.ctx = ctx;
    b.tok = tok;
    b.name = peft__src_name(src);
    peft_status st = check_opts(ctx, fn_name, tok, opts, &b.o);
    if (st != PEFT_OK) return st;
    b.bos = b.o.add_bos != 0 ? peft_tokenizer_bos(tok) : -1;
    b.eos = b.o.add_eos != 0 ? peft_tokenizer_eos(tok) : -1;
    /* the format: asked for, else the name, else the first bytes */
    const char *head;
    size_t head_len;
    bool head_eof;
    if ((st = peft__src_sniff(src, &head, &head_len, &head_eof)) != PEFT_OK) return st;
    b.format = b.o.format;
    if (b.format == PEFT_DATA_AUTO) b.format = format_from_name(path);
    if (b.format == PEFT_DATA_AUTO) b.format = format_from_content(head, head_len, head_eof);
    b.sep = b.o.sep;
    if (b.sep == PEFT_SEP_AUTO) b.sep = has_percent_line(head, head_len, head_eof) ? PEFT_SEP_PERCENT : PEFT_SEP_BLANK;
    if (b.format == PEFT_DATA_TEXT) b.shape = SHAPE_TEXT;
    if (b.format == PEFT_DATA_TSV) b.shape = SHAPE_CLS;
    if (b.shape == SHAPE_TEXT && b.o.task == PEFT_DATA_TASK_CLASSIFY)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %s: plain text has no labels (task classify needs JSONL or TSV)",
                          fn_name, b.name);
    if (b.shape == SHAPE_CLS && b.o.task == PEFT_DATA_TASK_LM)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %s: TSV is classification data (task lm)", fn_name, b.name);
    if ((size_t)b.o.seq_len <= (size_t)(b.bos >= 0) + (b.eos >= 0) + (b.format != PEFT_DATA_TEXT))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: seq_len %lld leaves no room for text next to BOS/EOS", fn_name,
                          (long long)b.o.seq_len);
    b.fixed_classes = b.o.classes != NULL;
    for (int c = 0; b.fixed_classes && c < b.o.n_classes && st == PEFT_OK; c++) {
        int32_t id; /* the list's names get ids 0..n-1 in order */
        st = lab_lookup(&b, b.o.classes[c], strlen(b.o.classes[c]), true, &id);
    }
    if (st == PEFT_OK && !grow(ctx, (void **)&b.offsets, &b.cap_off, 1, 0, sizeof *b.offsets)) st = nomem(&b);
    peft__lines L;
    if (st == PEFT_OK) st = peft__lines_init(&L, src, chunk);
    if (st != PEFT_OK) {
        builder_free(&b);
        return st;
    }
    b.offsets[0] = 0;
    for (;;) {
        const char *line;
        size_t len;
        bool got;
        if ((st = peft__lines_next(&L, &line, &len, &got)) != PEFT_OK || !got) break;
        b.skipped = false;
        if (b.format == PEFT_DATA_TEXT) st = text_line(&b, L.line_no, line, len);
        else if (b.format == PEFT_DATA_TSV) st = tsv_line(&b, L.line_no, line, len);
        else st = jsonl_line(&b, L.line_no, line, len);
        size_t held = L.cap + b.cap_doc + b.cap_fix + PEFT__DATASET_SNIFF;
        if (held > b.text_peak) b.text_peak = held;
        if (st != PEFT_OK) break;
    }
    if (st == PEFT_OK && b.format == PEFT_DATA_TEXT) {
        b.skipped = false;
        st = flush_document(&b);
    }
    size_t lines = L.line_no;
    peft__lines_fini(&L);
    if (st == PEFT_OK) st = finish(&b, lines, out);
    builder_free(&b);
    return st;
}

static peft_status check_args(peft_ctx *ctx, const char *fn, peft_tokenizer *tok, const void *src, peft_dataset **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!tok || !src) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn, tok ? "the input" : "tok");
    if (tok->ctx != ctx) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: the tokenizer belongs to another context", fn);
    return PEFT_OK;
}

peft_status peft__dataset_load_chunked(peft_ctx *ctx, peft_tokenizer *tok, const char *path,
                                       const peft_dataset_opts *opts, size_t chunk, peft_dataset **out)
{
    peft_status st = check_args(ctx, fn_name, tok, path, out);
    if (st != PEFT_OK) return st;
    peft__src *src;
    if ((st = peft__src_open_file(ctx, path, &src)) != PEFT_OK) return st;
    st = peft__dataset_load_src(ctx, tok, src, path, opts, chunk, out);
    peft__src_close(src);
    return st;
}

peft_status peft_dataset_load(peft_ctx *ctx, peft_tokenizer *tok, const char *path, const peft_dataset_opts *opts,
                              peft_dataset **out)
{
    return peft__dataset_load_chunked(ctx, tok, path, opts, PEFT__DATASET_CHUNK, out);
}

peft_status peft_dataset_from_buffer(peft_ctx *ctx, peft_tokenizer *tok, const void *data, size_t len, const char *name,
                                     const peft_dataset_opts *opts, peft_dataset **out)
{
    static const char fn[] = "peft_dataset_from_buffer";
    peft_status st = check_args(ctx, fn, tok, data || !len ? (const void *)"" : NULL, out);
    if (st != PEFT_OK) return st;
    peft__src *src;
    if ((st = peft__src_open_mem(ctx, data, len, name ? name : "<memory>", &src)) != PEFT_OK) return st;
    st = peft__dataset_load_src(ctx, tok, src, name, opts, PEFT__DATASET_CHUNK, out);
    peft__src_close(src);
    return st;
}

peft_status peft_dataset_from_text(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len, int64_t seq_len,
                                   peft_dataset **out)
{
    peft_dataset_opts o = peft_dataset_opts_default();
    o.format = PEFT_DATA_TEXT;
    o.seq_len = seq_len;
    return peft_dataset_from_buffer(ctx, tok, text, len, "<text>", &o, out);
}

peft_status peft_dataset_load_text(peft_ctx *ctx, peft_tokenizer *tok, const char *path, int64_t seq_len,
                                   peft_dataset **out)
{
    peft_dataset_opts o = peft_dataset_opts_default();
    o.format = PEFT_DATA_TEXT;
    o.seq_len = seq_len;
    return peft_dataset_load(ctx, tok, path, &o, out);
}

peft_status peft_dataset_load_tsv(peft_ctx *ctx, peft_tokenizer *tok, const char *path, int64_t max_len,
                                  peft_dataset **out)
{
    peft_dataset_opts o = peft_dataset_opts_default();
    o.format = PEFT_DATA_TSV;
    o.seq_len = max_len;
    return peft_dataset_load(ctx, tok, path, &o, out);
}
