/* Datasets: tokenized examples in one flat token array with offsets, optional
 * labels, and views (splits) that index into a shared store. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "dataset_internal.h"

static void store_free(peft_ctx *ctx, peft__store *s)
{
    if (!s) return;
    peft__free(ctx, s->tokens);
    peft__free(ctx, s->offsets);
    peft__free(ctx, s->labels);
    for (int i = 0; i < s->n_classes; i++) peft__free(ctx, s->class_names ? s->class_names[i] : NULL);
    peft__free(ctx, s->class_names);
    peft__free(ctx, s);
}

void peft_dataset_destroy(peft_dataset *ds)
{
    if (!ds) return;
    peft_ctx *ctx = ds->ctx;
    if (ds->owns_store) store_free(ctx, ds->store);
    peft__free(ctx, ds->index);
    peft__free(ctx, ds);
}

/* A dataset owning `s` with the identity index. */
static peft_status wrap_store(peft_ctx *ctx, peft__store *s, peft_dataset **out)
{
    peft_dataset *ds = peft__calloc(ctx, 1, sizeof *ds);
    if (ds) ds->index = peft__calloc(ctx, s->n + 1, sizeof *ds->index);
    if (!ds || !ds->index) {
        if (ds) peft__free(ctx, ds);
        store_free(ctx, s);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "dataset: out of memory");
    }
    ds->ctx = ctx;
    ds->store = s;
    ds->owns_store = true;
    ds->n = s->n;
    for (size_t i = 0; i < s->n; i++) ds->index[i] = (int64_t)i;
    *out = ds;
    return PEFT_OK;
}

size_t peft_dataset_size(const peft_dataset *ds) { return ds ? ds->n : 0; }
int peft_dataset_n_classes(const peft_dataset *ds) { return ds ? ds->store->n_classes : 0; }

const char *peft_dataset_class_name(const peft_dataset *ds, int label)
{
    if (!ds || label < 0 || label >= ds->store->n_classes || !ds->store->class_names) return NULL;
    return ds->store->class_names[label];
}

int64_t peft_dataset_max_len(const peft_dataset *ds)
{
    int64_t m = 0;
    for (size_t i = 0; ds && i < ds->n; i++) {
        int64_t e = ds->index[i], len = ds->store->offsets[e + 1] - ds->store->offsets[e];
        if (len > m) m = len;
    }
    return m;
}

int64_t peft_dataset_n_tokens(const peft_dataset *ds)
{
    int64_t n = 0;
    for (size_t i = 0; ds && i < ds->n; i++) {
        int64_t e = ds->index[i];
        n += ds->store->offsets[e + 1] - ds->store->offsets[e];
    }
    return n;
}

peft_status peft_dataset_from_ids(peft_ctx *ctx, size_t n, const int32_t *const *ids, const int64_t *lens,
                                  const int32_t *labels, int n_classes, peft_dataset **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_ids: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (n == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_ids: the dataset is empty");
    if (!ids || !lens) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_ids: ids and lens are required");
    if (labels && n_classes < 2)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_ids: labels need n_classes >= 2 (got %d)", n_classes);
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] <= 0 || !ids[i])
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_ids: example %zu is empty", i);
        if (labels && (labels[i] < 0 || labels[i] >= n_classes))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_ids: label %d of example %zu is outside [0, %d)",
                              labels[i], i, n_classes);
        total += lens[i];
    }
    peft__store *s = peft__calloc(ctx, 1, sizeof *s);
    if (!s) return peft__fail(ctx, PEFT_ERR_NOMEM, "dataset: out of memory");
    s->n = n;
    s->tokens = peft__malloc(ctx, (size_t)total * sizeof *s->tokens);
    s->offsets = peft__malloc(ctx, (n + 1) * sizeof *s->offsets);
    if (labels) s->labels = peft__malloc(ctx, n * sizeof *s->labels);
    if (!s->tokens || !s->offsets || (labels && !s->labels)) {
        store_free(ctx, s);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "dataset: out of memory");
    }
    int64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        s->offsets[i] = off;
        memcpy(s->tokens + off, ids[i], (size_t)lens[i] * sizeof *s->tokens);
        off += lens[i];
    }
    s->offsets[n] = off;
    if (labels) {
        memcpy(s->labels, labels, n * sizeof *s->labels);
        s->n_classes = n_classes;
    }
    return wrap_store(ctx, s, out);
}

/* Tokenize `len` bytes into a new malloc'd (ctx) array. */
static peft_status tokenize(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len, int bos, int32_t **ids,
                            size_t *n)
{
    size_t need = 0;
    peft_status st = peft_tokenizer_encode(tok, text, len, bos, 0, NULL, 0, &need);
    if (st != PEFT_OK && st != PEFT_ERR_INVALID_ARG) return st;
    *ids = peft__malloc(ctx, (need + 1) * sizeof **ids);
    if (!*ids) return peft__fail(ctx, PEFT_ERR_NOMEM, "dataset: out of memory for %zu tokens", need);
    st = peft_tokenizer_encode(tok, text, len, bos, 0, *ids, need + 1, n);
    if (st != PEFT_OK) {
        peft__free(ctx, *ids);
        *ids = NULL;
    }
    return st;
}

peft_status peft_dataset_from_text(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len, int64_t seq_len,
                                   peft_dataset **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_text: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!tok || !text) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_text: NULL argument");
    if (seq_len < 2 || seq_len > 1 << 20)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_text: seq_len %lld (must be 2..2^20)", (long long)seq_len);
    /* documents are separated by blank lines; each starts with BOS when the tokenizer has one */
    int bos = peft_tokenizer_bos(tok) >= 0;
    int32_t *stream = NULL;
    size_t n_stream = 0, cap = 0;
    peft_status st = PEFT_OK;
    size_t i = 0;
    while (i < len && st == PEFT_OK) {
        size_t j = i;
        while (j < len && !(text[j] == '\n' && j + 1 < len && text[j + 1] == '\n')) j++;
        size_t k = i;
        while (k < j && (text[k] == '\n' || text[k] == ' ')) k++;
        if (k < j) {
            int32_t *ids;
            size_t n;
            st = tokenize(ctx, tok, text + k, j - k, bos, &ids, &n);
            if (st == PEFT_OK && n_stream + n > cap) {
                size_t ncap = cap ? cap : 4096;
                while (ncap < n_stream + n) ncap *= 2;
                int32_t *ns = peft__malloc(ctx, ncap * sizeof *ns);
                if (!ns) st = peft__fail(ctx, PEFT_ERR_NOMEM, "dataset: out of memory");
                else {
                    if (n_stream) memcpy(ns, stream, n_stream * sizeof *ns);
                    peft__free(ctx, stream);
                    stream = ns;
                    cap = ncap;
                }
            }
            if (st == PEFT_OK) {
                memcpy(stream + n_stream, ids, n * sizeof *ids);
                n_stream += n;
            }
            peft__free(ctx, ids);
        }
        i = j + 2;
    }
    if (st == PEFT_OK && n_stream < 2)
        st = peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_from_text: the text has fewer than 2 tokens");
    if (st != PEFT_OK) {
        peft__free(ctx, stream);
        return st;
    }
    /* pack into windows of seq_len; a last partial window of >= 2 tokens is kept */
    size_t n_ex = (n_stream + (size_t)seq_len - 1) / (size_t)seq_len;
    if (n_stream % (size_t)seq_len == 1) n_ex--;
    peft__store *s = peft__calloc(ctx, 1, sizeof *s);
    if (s) s->offsets = peft__malloc(ctx, (n_ex + 1) * sizeof *s->offsets);
    if (!s || !s->offsets) {
        peft__free(ctx, stream);
        if (s) peft__free(ctx, s);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "dataset: out of memory");
    }
    s->n = n_ex;
    for (size_t e = 0; e < n_ex; e++) s->offsets[e] = (int64_t)(e * (size_t)seq_len);
    s->offsets[n_ex] = (int64_t)(n_ex * (size_t)seq_len) < (int64_t)n_stream ? (int64_t)(n_ex * (size_t)seq_len)
                                                                              : (int64_t)n_stream;
    s->tokens = stream;
    return wrap_store(ctx, s, out);
}

static peft_status read_file(peft_ctx *ctx, const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = peft__malloc(ctx, cap);
    peft_status st = b ? PEFT_OK : peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
    while (st == PEFT_OK) {
        if (n == cap) {
            char *nb = peft__malloc(ctx, cap * 2);
            if (!nb) {
                st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            memcpy(nb, b, n);
            peft__free(ctx, b);
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) st = peft__fail(ctx, PEFT_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (st != PEFT_OK) {
        peft__free(ctx, b);
        return st;
    }
    *buf = b;
    *len = n;
    return PEFT_OK;
}

peft_status peft_dataset_load_text(peft_ctx *ctx, peft_tokenizer *tok, const char *path, int64_t seq_len,
                                   peft_dataset **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_load_text: out is NULL");
    *out = NULL;
    if (!ctx || !path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_load_text: NULL argument");
    char *text;
    size_t len;
    peft_status st = read_file(ctx, path, &text, &len);
    if (st != PEFT_OK) return st;
    st = peft_dataset_from_text(ctx, tok, text, len, seq_len, out);
    peft__free(ctx, text);
    if (st != PEFT_OK) {
        char why[PEFT__ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", peft_ctx_errmsg(ctx));
        return peft__fail(ctx, st, "%s: %s", path, why);
    }
    return PEFT_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

peft_status peft_dataset_load_tsv(peft_ctx *ctx, peft_tokenizer *tok, const char *path, int64_t max_len,
                                  peft_dataset **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_load_tsv: out is NULL");
    *out = NULL;
    if (!ctx || !tok || !path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_load_tsv: NULL argument");
    if (max_len < 1) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_load_tsv: max_len %lld", (long long)max_len);
    char *text;
    size_t len;
    peft_status st = read_file(ctx, path, &text, &len);
    if (st != PEFT_OK) return st;
    /* pass 1: lines and label strings */
    size_t n_lines = 0;
    for (size_t i = 0; i < len; i++) n_lines += text[i] == '\n';
    n_lines++;
    char **labels = peft__calloc(ctx, n_lines, sizeof *labels);
    const char **texts = peft__calloc(ctx, n_lines, sizeof *texts);
    size_t *tlens = peft__calloc(ctx, n_lines, sizeof *tlens);
    size_t n = 0;
    if (!labels || !texts || !tlens) st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
    size_t line = 0, i = 0;
    while (st == PEFT_OK && i < len) {
        line++;
        size_t j = i;
        while (j < len && text[j] != '\n') j++;
        size_t end = j;
        if (end > i && text[end - 1] == '\r') end--;
        if (end > i) {
            const char *tab = memchr(text + i, '\t', end - i);
            if (!tab || tab == text + i || tab + 1 == text + end) {
                st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s:%zu: expected \"label<TAB>text\"", path, line);
                break;
            }
            size_t ll = (size_t)(tab - (text + i));
            labels[n] = peft__malloc(ctx, ll + 1);
            if (!labels[n]) {
                st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            memcpy(labels[n], text + i, ll);
            labels[n][ll] = '\0';
            texts[n] = tab + 1;
            tlens[n] = (size_t)(text + end - (tab + 1));
            n++;
        }
        i = j + 1;
    }
    if (st == PEFT_OK && n == 0) st = peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: no examples", path);
    /* classes: the sorted distinct labels */
    char **classes = NULL;
    int n_classes = 0;
    if (st == PEFT_OK) {
        classes = peft__calloc(ctx, n, sizeof *classes);
        if (!classes) st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
        else {
            memcpy(classes, labels, n * sizeof *classes);
            qsort(classes, n, sizeof *classes, cmp_str);
            for (size_t k = 0; k < n; k++)
                if (n_classes == 0 || strcmp(classes[n_classes - 1], classes[k])) classes[n_classes++] = classes[k];
            if (n_classes < 2)
                st = peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %d distinct label(s); classification needs at least 2", path,
                                n_classes);
        }
    }
    int32_t **ids = NULL, *lab = NULL;
    int64_t *lens = NULL;
    if (st == PEFT_OK) {
        ids = peft__calloc(ctx, n, sizeof *ids);
        lens = peft__calloc(ctx, n, sizeof *lens);
        lab = peft__calloc(ctx, n, sizeof *lab);
        if (!ids || !lens || !lab) st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
    }
    int bos = peft_tokenizer_bos(tok) >= 0;
    for (size_t k = 0; st == PEFT_OK && k < n; k++) {
        size_t cnt;
        st = tokenize(ctx, tok, texts[k], tlens[k], bos, &ids[k], &cnt);
        if (st != PEFT_OK) break;
        if (cnt == 0) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: example %zu has no tokens", path, k + 1);
            break;
        }
        lens[k] = (int64_t)cnt < max_len ? (int64_t)cnt : max_len;
        char **hit = bsearch(&labels[k], classes, (size_t)n_classes, sizeof *classes, cmp_str);
        lab[k] = (int32_t)(hit - classes);
    }
    if (st == PEFT_OK) st = peft_dataset_from_ids(ctx, n, (const int32_t *const *)ids, lens, lab, n_classes, out);
    if (st == PEFT_OK) {
        peft__store *s = (*out)->store;
        s->class_names = peft__calloc(ctx, (size_t)n_classes, sizeof *s->class_names);
        for (int c = 0; s->class_names && c < n_classes; c++) {
            size_t l = strlen(classes[c]);
            s->class_names[c] = peft__malloc(ctx, l + 1);
            if (s->class_names[c]) memcpy(s->class_names[c], classes[c], l + 1);
        }
    }
    for (size_t k = 0; k < n; k++) {
        peft__free(ctx, labels ? labels[k] : NULL);
        if (ids) peft__free(ctx, ids[k]);
    }
    peft__free(ctx, labels), peft__free(ctx, texts), peft__free(ctx, tlens), peft__free(ctx, classes);
    peft__free(ctx, ids), peft__free(ctx, lens), peft__free(ctx, lab);
    peft__free(ctx, text);
    return st;
}

void peft__shuffle(int64_t *a, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = n; i > 1; i--) { /* Fisher-Yates with a portable PRNG */
        size_t j = (size_t)(peft__splitmix64(&s) % i);
        int64_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

peft_status peft_dataset_split(const peft_dataset *ds, double val_frac, uint64_t seed, peft_dataset **train,
                               peft_dataset **val)
{
    if (!ds) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = ds->ctx;
    if (!train || !val) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_split: NULL output");
    *train = *val = NULL;
    if (!(val_frac > 0 && val_frac < 1))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_split: val_frac %g is not in (0, 1)", val_frac);
    if (ds->n < 2) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_split: %zu example(s) cannot be split", ds->n);
    size_t n_val = (size_t)((double)ds->n * val_frac + 0.5);
    if (n_val < 1) n_val = 1;
    if (n_val >= ds->n) n_val = ds->n - 1;
    int64_t *perm = peft__malloc(ctx, ds->n * sizeof *perm);
    peft_dataset *parts[2] = {NULL, NULL};
    peft_status st = perm ? PEFT_OK : peft__fail(ctx, PEFT_ERR_NOMEM, "peft_dataset_split: out of memory");
    if (st == PEFT_OK) {
        memcpy(perm, ds->index, ds->n * sizeof *perm);
        peft__shuffle(perm, ds->n, seed);
    }
    for (int k = 0; st == PEFT_OK && k < 2; k++) {
        size_t cnt = k == 0 ? ds->n - n_val : n_val;
        const int64_t *from = k == 0 ? perm + n_val : perm;
        parts[k] = peft__calloc(ctx, 1, sizeof *parts[k]);
        if (parts[k]) parts[k]->index = peft__malloc(ctx, cnt * sizeof *parts[k]->index);
        if (!parts[k] || !parts[k]->index) {
            st = peft__fail(ctx, PEFT_ERR_NOMEM, "peft_dataset_split: out of memory");
            break;
        }
        parts[k]->ctx = ctx;
        parts[k]->store = ds->store;
        parts[k]->n = cnt;
        memcpy(parts[k]->index, from, cnt * sizeof *from);
    }
    peft__free(ctx, perm);
    if (st != PEFT_OK) {
        peft_dataset_destroy(parts[0]);
        peft_dataset_destroy(parts[1]);
        return st;
    }
    *train = parts[0];
    *val = parts[1];
    return PEFT_OK;
}

peft_status peft__dataset_batch(const peft_dataset *ds, const int64_t *pos, size_t n, peft__batch_buf *buf,
                                peft_batch *out)
{
    peft_ctx *ctx = ds->ctx;
    int64_t T = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t e = ds->index[pos[i]], len = ds->store->offsets[e + 1] - ds->store->offsets[e];
        if (len > T) T = len;
    }
    size_t need = n * (size_t)T;
    if (need > buf->cap || n > buf->cap_rows) {
        size_t cap = need > buf->cap ? need : buf->cap, rows = n > buf->cap_rows ? n : buf->cap_rows;
        peft__free(ctx, buf->ids), peft__free(ctx, buf->mask), peft__free(ctx, buf->labels), peft__free(ctx, buf->example_ids);
        buf->ids = peft__malloc(ctx, cap * sizeof *buf->ids);
        buf->mask = peft__malloc(ctx, cap * sizeof *buf->mask);
        buf->labels = peft__malloc(ctx, rows * sizeof *buf->labels);
        buf->example_ids = peft__malloc(ctx, rows * sizeof *buf->example_ids);
        buf->cap = cap;
        buf->cap_rows = rows;
        if (!buf->ids || !buf->mask || !buf->labels || !buf->example_ids) {
            buf->cap = buf->cap_rows = 0;
            return peft__fail(ctx, PEFT_ERR_NOMEM, "batch: out of memory");
        }
    }
    for (size_t i = 0; i < n; i++) {
        int64_t e = ds->index[pos[i]], off = ds->store->offsets[e], len = ds->store->offsets[e + 1] - off;
        for (int64_t t = 0; t < T; t++) {
            buf->ids[i * (size_t)T + (size_t)t] = t < len ? ds->store->tokens[off + t] : 0;
            buf->mask[i * (size_t)T + (size_t)t] = t < len;
        }
        buf->labels[i] = ds->store->labels ? ds->store->labels[e] : 0;
        buf->example_ids[i] = e;
    }
    memset(out, 0, sizeof *out);
    out->B = (int64_t)n;
    out->T = T;
    out->ids = buf->ids;
    out->mask = buf->mask;
    out->labels = ds->store->labels ? buf->labels : NULL;
    out->example_ids = buf->example_ids;
    out->example_set = (uint64_t)(uintptr_t)ds->store;
    return PEFT_OK;
}

void peft__batch_buf_free(peft_ctx *ctx, peft__batch_buf *buf)
{
    peft__free(ctx, buf->ids), peft__free(ctx, buf->mask), peft__free(ctx, buf->labels), peft__free(ctx, buf->example_ids);
    memset(buf, 0, sizeof *buf);
}
