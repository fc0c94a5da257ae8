/* Checkpoints: everything a run needs to continue bit for bit.
 *
 * Layout (little-endian): "PEFTCKPT", u32 version, then sections
 * {u32 tag, u64 length, bytes}, then u32 CRC32 (zlib) of everything before it.
 *   META  fixed fields: step, micro, epoch, epoch_pos, PRNG state, early stopping
 *   NAMES the strategy name and every trainable tensor's name and element count
 *         (what a checkpoint must match to be loaded into an adapter)
 *   PARAM the trainable tensors' f32 values, in adapter order
 *   OPTIM the optimizer's state blob (peft_opt_save_state)
 *   BEST  the best weights kept for early stopping (optional)
 * Written through the atomic file (temporary, fsync, rename): a failed save
 * leaves the previous checkpoint intact. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "trainer_internal.h"

#define MAGIC "PEFTCKPT"
#define VERSION 1u
enum { TAG_META = 1, TAG_NAMES = 2, TAG_PARAM = 3, TAG_OPTIM = 4, TAG_BEST = 5 };

typedef struct meta {
    int64_t step;
    int64_t micro;
    int64_t epoch;
    int64_t epoch_pos;
    uint64_t rng[4];
    double best_val, val_before, ref_before, elapsed;
    int64_t best_step;
    int64_t bad_evals;
    int64_t stopped_early;
    double loss_acc;
    uint64_t seed;
} meta;

typedef struct writer {
    peft__atomic_file *af;
    uLong crc;
    peft_status st;
} writer;

static void put(writer *w, const void *p, size_t n)
{
    if (w->st != PEFT_OK || n == 0) return;
    w->crc = crc32(w->crc, p, (uInt)n);
    w->st = peft__atomic_write(w->af, p, n);
}

static void section(writer *w, uint32_t tag, uint64_t len)
{
    put(w, &tag, 4);
    put(w, &len, 8);
}

/* NAMES payload: strategy name, then per tensor (u32 name length, name, u64 numel). */
static size_t names_size(const peft_adapter *ad)
{
    size_t n = 4 + strlen(peft_adapter_strategy(ad));
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        const char *name;
        peft_adapter_trainable(ad, i, &name, NULL, NULL);
        n += 4 + strlen(name) + 8;
    }
    return n;
}

static void put_names(writer *w, const peft_adapter *ad)
{
    const char *s = peft_adapter_strategy(ad);
    uint32_t l = (uint32_t)strlen(s);
    put(w, &l, 4);
    put(w, s, l);
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        const char *name;
        peft_tensor *t;
        peft_adapter_trainable(ad, i, &name, &t, NULL);
        l = (uint32_t)strlen(name);
        uint64_t n = (uint64_t)peft_tensor_numel(t);
        put(w, &l, 4);
        put(w, name, l);
        put(w, &n, 8);
    }
}

peft_status peft_trainer_save_checkpoint(peft_trainer *tr, const char *path)
{
    if (!tr) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = tr->ctx;
    if (!path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_save_checkpoint: path is NULL");
    if (tr->micro != 0)
        return peft__fail(ctx, PEFT_ERR_STATE,
                          "peft_trainer_save_checkpoint: %d micro-batches of an accumulation window are pending; save at a step boundary",
                          tr->micro);
    size_t opt_size = peft_opt_state_size(tr->opt);
    void *opt_blob = peft__malloc(ctx, opt_size ? opt_size : 1);
    if (!opt_blob) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_trainer_save_checkpoint: out of memory");
    peft_status st = peft_opt_save_state(tr->opt, opt_blob, opt_size);
    if (st != PEFT_OK) {
        peft__free(ctx, opt_blob);
        return st;
    }
    meta m = {0};
    m.step = tr->step;
    m.micro = tr->micro;
    m.epoch = tr->epoch;
    m.epoch_pos = (int64_t)tr->epoch_pos;
    peft_ctx_rng_state(ctx, m.rng);
    m.best_val = tr->best_val;
    m.val_before = tr->val_before;
    m.ref_before = tr->ref_before;
    m.elapsed = tr->elapsed;
    m.best_step = tr->best_step;
    m.bad_evals = tr->bad_evals;
    m.stopped_early = tr->stopped_early;
    m.loss_acc = tr->loss_acc;
    m.seed = tr->o.seed;
    writer w = {NULL, crc32(0L, Z_NULL, 0), PEFT_OK};
    w.st = peft__atomic_open(ctx, "peft_trainer_save_checkpoint", path, &w.af);
    if (w.st != PEFT_OK) {
        peft__free(ctx, opt_blob);
        return w.st;
    }
    uint32_t version = VERSION;
    put(&w, MAGIC, 8);
    put(&w, &version, 4);
    section(&w, TAG_META, sizeof m);
    put(&w, &m, sizeof m);
    section(&w, TAG_NAMES, names_size(tr->ad));
    put_names(&w, tr->ad);
    size_t total = (size_t)peft_adapter_trainable_numel(tr->ad);
    section(&w, TAG_PARAM, total * sizeof(float));
    for (size_t i = 0; i < peft_adapter_n_trainable(tr->ad); i++) {
        peft_tensor *t;
        peft_adapter_trainable(tr->ad, i, NULL, &t, NULL);
        put(&w, peft_tensor_data(t), (size_t)peft_tensor_numel(t) * sizeof(float));
    }
    section(&w, TAG_OPTIM, opt_size);
    put(&w, opt_blob, opt_size);
    if (tr->has_best) {
        section(&w, TAG_BEST, total * sizeof(float));
        put(&w, tr->best, total * sizeof(float));
    }
    uint32_t crc = (uint32_t)w.crc;
    if (w.st == PEFT_OK) w.st = peft__atomic_write(w.af, &crc, 4);
    peft__free(ctx, opt_blob);
    if (w.st != PEFT_OK) {
        peft__atomic_abort(w.af);
        return w.st;
    }
    return peft__atomic_commit(w.af);
}

/* ---- loading ---- */

typedef struct reader {
    const unsigned char *p;
    size_t n, off;
} reader;

static bool get(reader *r, void *dst, size_t n)
{
    if (n > r->n - r->off) return false;
    memcpy(dst, r->p + r->off, n);
    r->off += n;
    return true;
}

static peft_status check_names(peft_trainer *tr, const char *path, const unsigned char *p, size_t len)
{
    peft_ctx *ctx = tr->ctx;
    reader r = {p, len, 0};
    uint32_t l;
    char name[256];
    if (!get(&r, &l, 4) || l >= sizeof name || !get(&r, name, l))
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: the tensor list is damaged", path);
    name[l] = '\0';
    if (strcmp(name, peft_adapter_strategy(tr->ad)))
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: a checkpoint of strategy \"%s\", not \"%s\"", path, name,
                          peft_adapter_strategy(tr->ad));
    size_t n = peft_adapter_n_trainable(tr->ad), i = 0;
    for (; r.off < r.n; i++) {
        uint64_t numel;
        if (!get(&r, &l, 4) || l >= sizeof name || !get(&r, name, l) || !get(&r, &numel, 8))
            return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: the tensor list is damaged", path);
        name[l] = '\0';
        if (i >= n) return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: holds more tensors than the adapter (%zu): a checkpoint of another model?", path, n);
        const char *mine;
        peft_tensor *t;
        peft_adapter_trainable(tr->ad, i, &mine, &t, NULL);
        if (strcmp(mine, name) || numel != (uint64_t)peft_tensor_numel(t))
            return peft__fail(ctx, PEFT_ERR_FORMAT,
                              "%s: tensor %zu is '%s' with %llu elements; this adapter has '%s' with %lld (another model?)",
                              path, i, name, (unsigned long long)numel, mine, (long long)peft_tensor_numel(t));
    }
    if (i != n) return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: holds %zu tensors, the adapter has %zu: a checkpoint of another model?", path, i, n);
    return PEFT_OK;
}

peft_status peft_trainer_load_checkpoint(peft_trainer *tr, const char *path)
{
    if (!tr) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = tr->ctx;
    if (!path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_load_checkpoint: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) {
        char buf[128];
        return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, peft__strerror(errno, buf, sizeof buf));
    }
    unsigned char *data = NULL;
    size_t n = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz > 0 && (uint64_t)sz < ((uint64_t)1 << 40)) n = (size_t)sz;
        rewind(f);
    }
    if (n < 16) {
        fclose(f);
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: too short for a checkpoint", path);
    }
    data = peft__malloc(ctx, n);
    if (!data) {
        fclose(f);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(data, 1, n, f);
    fclose(f);
    peft_status st = PEFT_OK;
    uint32_t crc_file;
    memcpy(&crc_file, data + n - 4, 4);
    if (got != n) st = peft__fail(ctx, PEFT_ERR_IO, "%s: short read", path);
    else if (memcmp(data, MAGIC, 8)) st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: not a libpeft checkpoint (bad magic)", path);
    else if ((uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)(n - 4)) != crc_file)
        st = peft__fail(ctx, PEFT_ERR_CHECKSUM, "%s: CRC32 mismatch: the checkpoint is damaged", path);
    reader r = {data, n - 4, 8};
    uint32_t version = 0;
    if (st == PEFT_OK && (!get(&r, &version, 4) || version != VERSION))
        st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: checkpoint version %u (this library reads %u)", path, version, VERSION);
    const unsigned char *sec[6] = {0};
    uint64_t sec_len[6] = {0};
    while (st == PEFT_OK && r.off < r.n) {
        uint32_t tag;
        uint64_t len;
        if (!get(&r, &tag, 4) || !get(&r, &len, 8) || len > r.n - r.off) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: a section runs past the end of the file", path);
            break;
        }
        if (tag >= 1 && tag <= 5) {
            sec[tag] = data + r.off;
            sec_len[tag] = len;
        }
        r.off += (size_t)len;
    }
    size_t total = (size_t)peft_adapter_trainable_numel(tr->ad);
    if (st == PEFT_OK && (!sec[TAG_META] || sec_len[TAG_META] != sizeof(meta) || !sec[TAG_NAMES] || !sec[TAG_PARAM] ||
                          !sec[TAG_OPTIM]))
        st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: a required section is missing", path);
    if (st == PEFT_OK) st = check_names(tr, path, sec[TAG_NAMES], (size_t)sec_len[TAG_NAMES]);
    if (st == PEFT_OK && sec_len[TAG_PARAM] != total * sizeof(float))
        st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %llu parameter bytes, the adapter needs %zu", path,
                        (unsigned long long)sec_len[TAG_PARAM], total * sizeof(float));
    if (st == PEFT_OK && sec[TAG_BEST] && sec_len[TAG_BEST] != total * sizeof(float))
        st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: the best-weights section has the wrong size", path);
    /* everything checked: now change state (the optimizer checks its own blob first) */
    if (st == PEFT_OK) st = peft_opt_load_state(tr->opt, sec[TAG_OPTIM], (size_t)sec_len[TAG_OPTIM]);
    if (st == PEFT_OK) {
        meta m;
        memcpy(&m, sec[TAG_META], sizeof m);
        size_t off = 0;
        for (size_t i = 0; i < peft_adapter_n_trainable(tr->ad); i++) {
            peft_tensor *t;
            peft_adapter_trainable(tr->ad, i, NULL, &t, NULL);
            size_t cnt = (size_t)peft_tensor_numel(t);
            memcpy(peft_tensor_data(t), sec[TAG_PARAM] + off * sizeof(float), cnt * sizeof(float));
            off += cnt;
        }
        if (sec[TAG_BEST]) {
            if (!tr->best) tr->best = peft__malloc(ctx, total * sizeof(float));
            if (!tr->best) st = peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", path);
            else {
                memcpy(tr->best, sec[TAG_BEST], total * sizeof(float));
                tr->has_best = true;
            }
        }
        tr->step = m.step;
        tr->micro = (int)m.micro;
        tr->epoch = (int)m.epoch;
        tr->epoch_pos = (size_t)m.epoch_pos;
        peft_ctx_set_rng_state(ctx, m.rng);
        tr->best_val = m.best_val;
        tr->val_before = m.val_before;
        tr->ref_before = m.ref_before;
        tr->elapsed = m.elapsed;
        tr->best_step = m.best_step;
        tr->bad_evals = (int)m.bad_evals;
        tr->stopped_early = m.stopped_early != 0;
        tr->loss_acc = m.loss_acc;
        peft_opt_zero_grad(tr->opt);
    }
    peft__free(ctx, data);
    return st;
}
