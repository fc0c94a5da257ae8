/* Datasets: tokenized examples in one flat token array with offsets, optional
 * labels, and views (splits) that index into a shared store. */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "dataset_internal.h"

void peft__store_free(peft_ctx *ctx, peft__store *s)
{
    if (!s) return;
    peft__free(ctx, s->tokens);
    peft__free(ctx, s->offsets);
    peft__free(ctx, s->labels);
    peft__free(ctx, s->loss_mask);
    for (int i = 0; i < s->n_classes; i++) peft__free(ctx, s->class_names ? s->class_names[i] : NULL);
    peft__free(ctx, s->class_names);
    peft__free(ctx, s);
}

void peft_dataset_destroy(peft_dataset *ds)
{
    if (!ds) return;
    peft_ctx *ctx = ds->ctx;
    if (ds->owns_store) peft__store_free(ctx, ds->store);
    peft__free(ctx, ds->index);
    peft__free(ctx, ds);
}

peft_status peft__dataset_wrap(peft_ctx *ctx, peft__store *s, peft_dataset **out)
{
    peft_dataset *ds = peft__calloc(ctx, 1, sizeof *ds);
    if (ds) ds->index = peft__calloc(ctx, s->n + 1, sizeof *ds->index);
    if (!ds || !ds->index) {
        if (ds) peft__free(ctx, ds);
        peft__store_free(ctx, s);
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
        peft__store_free(ctx, s);
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
    return peft__dataset_wrap(ctx, s, out);
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

/* Views over consecutive runs of one seeded permutation: part k gets cnt[k]
 * examples (parts with cnt 0 are skipped). */
static peft_status split_parts(const peft_dataset *ds, const char *fn, uint64_t seed, int n_parts, const size_t *cnt,
                               peft_dataset **parts)
{
    peft_ctx *ctx = ds->ctx;
    int64_t *perm = peft__malloc(ctx, ds->n * sizeof *perm);
    peft_status st = perm ? PEFT_OK : peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    if (st == PEFT_OK) {
        memcpy(perm, ds->index, ds->n * sizeof *perm);
        peft__shuffle(perm, ds->n, seed);
    }
    size_t at = 0;
    for (int k = 0; st == PEFT_OK && k < n_parts; k++) {
        parts[k] = peft__calloc(ctx, 1, sizeof *parts[k]);
        if (parts[k]) parts[k]->index = peft__malloc(ctx, (cnt[k] ? cnt[k] : 1) * sizeof *parts[k]->index);
        if (!parts[k] || !parts[k]->index) {
            st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
            break;
        }
        parts[k]->ctx = ctx;
        parts[k]->store = ds->store;
        parts[k]->n = cnt[k];
        memcpy(parts[k]->index, perm + at, cnt[k] * sizeof *perm);
        at += cnt[k];
    }
    peft__free(ctx, perm);
    if (st != PEFT_OK)
        for (int k = 0; k < n_parts; k++) {
            peft_dataset_destroy(parts[k]);
            parts[k] = NULL;
        }
    return st;
}

/* Examples of a fraction: rounded, at least 1. */
static size_t part_size(size_t n, double frac)
{
    size_t k = (size_t)((double)n * frac + 0.5);
    return k < 1 ? 1 : k;
}

peft_status peft_dataset_split(const peft_dataset *ds, double val_frac, uint64_t seed, peft_dataset **train,
                               peft_dataset **val)
{
    static const char fn[] = "peft_dataset_split";
    if (!ds) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = ds->ctx;
    if (!train || !val) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: NULL output", fn);
    *train = *val = NULL;
    if (!(val_frac > 0 && val_frac < 1))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: val_frac %g is not in (0, 1)", fn, val_frac);
    if (ds->n < 2) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %zu example(s) cannot be split", fn, ds->n);
    size_t n_val = part_size(ds->n, val_frac);
    if (n_val >= ds->n) n_val = ds->n - 1;
    /* validation first in the permutation, so split3 with the same seed agrees */
    size_t cnt[2] = {n_val, ds->n - n_val};
    peft_dataset *parts[2] = {NULL, NULL};
    peft_status st = split_parts(ds, fn, seed, 2, cnt, parts);
    if (st != PEFT_OK) return st;
    *val = parts[0];
    *train = parts[1];
    return PEFT_OK;
}

peft_status peft_dataset_split3(const peft_dataset *ds, double val_frac, double test_frac, uint64_t seed,
                                peft_dataset **train, peft_dataset **val, peft_dataset **test)
{
    static const char fn[] = "peft_dataset_split3";
    if (!ds) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = ds->ctx;
    if (!train || !val || !test) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: NULL output", fn);
    *train = *val = *test = NULL;
    if (!(val_frac > 0 && test_frac > 0 && val_frac + test_frac < 1))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: val_frac %g and test_frac %g must be > 0 with a sum < 1", fn,
                          val_frac, test_frac);
    if (ds->n < 3) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: %zu example(s) cannot be split in 3", fn, ds->n);
    size_t n_val = part_size(ds->n, val_frac), n_test = part_size(ds->n, test_frac);
    if (n_val > ds->n - 2) n_val = ds->n - 2;
    if (n_test > ds->n - 1 - n_val) n_test = ds->n - 1 - n_val;
    size_t cnt[3] = {n_val, n_test, ds->n - n_val - n_test};
    peft_dataset *parts[3] = {NULL, NULL, NULL};
    peft_status st = split_parts(ds, fn, seed, 3, cnt, parts);
    if (st != PEFT_OK) return st;
    *val = parts[0];
    *test = parts[1];
    *train = parts[2];
    return PEFT_OK;
}

peft_status peft_dataset_example(const peft_dataset *ds, size_t i, const int32_t **ids, int64_t *len,
                                 const uint8_t **loss_mask, int32_t *label)
{
    if (!ds) return PEFT_ERR_INVALID_ARG;
    if (i >= ds->n)
        return peft__fail(ds->ctx, PEFT_ERR_INVALID_ARG, "peft_dataset_example: index %zu is outside [0, %zu)", i, ds->n);
    const peft__store *s = ds->store;
    int64_t e = ds->index[i], off = s->offsets[e];
    if (ids) *ids = s->tokens + off;
    if (len) *len = s->offsets[e + 1] - off;
    if (loss_mask) *loss_mask = s->loss_mask ? s->loss_mask + off : NULL;
    if (label) *label = s->labels ? s->labels[e] : -1;
    return PEFT_OK;
}

peft_data_format peft_dataset_format(const peft_dataset *ds) { return ds ? ds->store->format : PEFT_DATA_AUTO; }
size_t peft_dataset_n_skipped(const peft_dataset *ds) { return ds ? ds->store->n_skipped : 0; }
size_t peft_dataset_n_truncated(const peft_dataset *ds) { return ds ? ds->store->n_truncated : 0; }
size_t peft_dataset_n_invalid_utf8(const peft_dataset *ds) { return ds ? ds->store->n_invalid_utf8 : 0; }

static void batch_buf_release(peft_ctx *ctx, peft__batch_buf *buf)
{
    peft__free(ctx, buf->ids), peft__free(ctx, buf->mask), peft__free(ctx, buf->labels);
    peft__free(ctx, buf->example_ids), peft__free(ctx, buf->loss_mask);
    memset(buf, 0, sizeof *buf);
}

peft_status peft__dataset_batch(const peft_dataset *ds, const int64_t *pos, size_t n, peft__batch_buf *buf,
                                peft_batch *out)
{
    peft_ctx *ctx = ds->ctx;
    const peft__store *s = ds->store;
    int64_t T = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t e = ds->index[pos[i]], len = s->offsets[e + 1] - s->offsets[e];
        if (len > T) T = len;
    }
    size_t need;
    if (!peft__mul_ok(n, (size_t)T, &need)) return peft__fail(ctx, PEFT_ERR_NOMEM, "batch: %zu x %lld overflows", n, (long long)T);
    if (need > buf->cap || n > buf->cap_rows) {
        size_t cap = need > buf->cap ? need : buf->cap, rows = n > buf->cap_rows ? n : buf->cap_rows;
        batch_buf_release(ctx, buf);
        buf->ids = peft__malloc(ctx, cap * sizeof *buf->ids);
        buf->mask = peft__malloc(ctx, cap * sizeof *buf->mask);
        buf->loss_mask = peft__malloc(ctx, cap * sizeof *buf->loss_mask);
        buf->labels = peft__malloc(ctx, rows * sizeof *buf->labels);
        buf->example_ids = peft__malloc(ctx, rows * sizeof *buf->example_ids);
        if (!buf->ids || !buf->mask || !buf->loss_mask || !buf->labels || !buf->example_ids) {
            batch_buf_release(ctx, buf);
            return peft__fail(ctx, PEFT_ERR_NOMEM, "batch: out of memory");
        }
        buf->cap = cap;
        buf->cap_rows = rows;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t e = ds->index[pos[i]], off = s->offsets[e], len = s->offsets[e + 1] - off;
        int32_t *ids_i = buf->ids + i * (size_t)T, *mask_i = buf->mask + i * (size_t)T;
        int32_t *lm_i = buf->loss_mask + i * (size_t)T;
        for (int64_t t = 0; t < T; t++) {
            ids_i[t] = t < len ? s->tokens[off + t] : 0;
            mask_i[t] = t < len;
            lm_i[t] = t < len && (!s->loss_mask || s->loss_mask[off + t]);
        }
        buf->labels[i] = s->labels ? s->labels[e] : 0;
        buf->example_ids[i] = e;
    }
    memset(out, 0, sizeof *out);
    out->B = (int64_t)n;
    out->T = T;
    out->ids = buf->ids;
    out->mask = buf->mask;
    out->loss_mask = s->loss_mask ? buf->loss_mask : NULL;
    out->labels = s->labels ? buf->labels : NULL;
    out->example_ids = buf->example_ids;
    out->example_set = (uint64_t)(uintptr_t)s;
    return PEFT_OK;
}

void peft__batch_buf_free(peft_ctx *ctx, peft__batch_buf *buf) { batch_buf_release(ctx, buf); }
