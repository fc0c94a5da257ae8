/* Training on real data: every strategy lowers the validation loss of the real
 * stories260K model on fortune-cookie text (a new domain for it) and improves
 * classification of fortunes by category; resume is bit-identical;
 * checkpoints reject damage and other models; non-finite steps are refused. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/testutil.h"

#define FORTUNES "/usr/share/games/fortunes"

static bool have_data(void)
{
    if (!tu_models_dir()) {
        printf("skip: ../shared/models is absent\n");
        return false;
    }
    if (access(FORTUNES "/fortunes", R_OK) != 0) {
        printf("skip: the Debian 'fortunes' package is not installed (make deps)\n");
        return false;
    }
    return true;
}

static peft_model *stories(peft_ctx *ctx)
{
    char path[512];
    snprintf(path, sizeof path, "%s/stories260K.bin", tu_models_dir());
    peft_model *m = NULL;
    peft_status st = peft_model_load(ctx, path, NULL, &m);
    ck_assert_msg(st == PEFT_OK, "%s: %s", path, peft_ctx_errmsg(ctx));
    return m;
}

/* Fortunes of a category file as TSV lines "label<TAB>text" (newlines -> spaces). */
static void append_category(FILE *out, const char *file, const char *label, int max_items)
{
    char path[256];
    snprintf(path, sizeof path, FORTUNES "/%s", file);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096], text[8192] = "";
    int items = 0;
    while (items < max_items && fgets(line, sizeof line, f)) {
        if (!strcmp(line, "%\n")) {
            if (strlen(text) > 20 && strlen(text) < 400) {
                fprintf(out, "%s\t%s\n", label, text);
                items++;
            }
            text[0] = '\0';
            continue;
        }
        line[strcspn(line, "\n")] = ' ';
        for (char *p = line; *p; p++)
            if (*p == '\t') *p = ' ';
        if (strlen(text) + strlen(line) < sizeof text - 1) strcat(text, line);
    }
    fclose(f);
}

typedef struct outcome {
    double before, after, acc_before, acc_after;
    int64_t trainable;
} outcome;

static outcome train_lm(const char *strategy, const void *opts, float lr, int epochs)
{
    peft_ctx *ctx = tu_ctx(2, 7);
    peft_model *m = stories(ctx);
    peft_dataset *all, *tr_ds, *val;
    TU_OK(ctx, peft_dataset_load_text(ctx, peft_model_tokenizer(m), FORTUNES "/fortunes", 64, &all));
    TU_OK(ctx, peft_dataset_split(all, 0.15, 3, &tr_ds, &val));
    peft_adapter *ad;
    TU_OK(ctx, peft_adapter_attach(m, strategy, NULL, opts, &ad));
    peft_train_opts o = peft_train_opts_default();
    o.lr = lr;
    o.epochs = epochs;
    o.batch_size = 8;
    peft_trainer *tr;
    TU_OK(ctx, peft_trainer_create(ad, &o, &tr));
    peft_fit_result r;
    TU_OK(ctx, peft_trainer_fit(tr, tr_ds, val, &r));
    outcome out = {r.val_loss_before, r.val_loss_after, 0, 0, peft_adapter_trainable_numel(ad)};
    printf("lm %-8s trainable %8lld  val loss %.4f -> %.4f  (%.2fs)\n", strategy, (long long)out.trainable, out.before,
           out.after, r.seconds);
    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(tr_ds), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
    return out;
}

START_TEST(numerics_every_strategy_lowers_lm_loss)
{
    if (!have_data()) return;
    struct {
        const char *name;
        float lr;
    } runs[] = {{"full", 2e-3f}, {"lora", 1e-2f}, {"ia3", 2e-2f}, {"bitfit", 2e-2f}, {"dense", 2e-3f}, {"feature", 2e-3f}};
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        outcome o = train_lm(runs[i].name, NULL, runs[i].lr, 2);
        ck_assert_msg(o.after < o.before - 0.05, "%s: val loss %.4f -> %.4f did not improve", runs[i].name, o.before,
                      o.after);
    }
}
END_TEST

static outcome train_classify(const char *strategy, const void *opts, float lr, int epochs)
{
    peft_ctx *ctx = tu_ctx(2, 11);
    char tsv[] = "/tmp/peft_cls_XXXXXX";
    int fd = mkstemp(tsv);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    append_category(f, "definitions", "definitions", 120);
    append_category(f, "food", "food", 120);
    fclose(f);
    peft_model *m = stories(ctx);
    peft_dataset *all, *tr_ds, *val;
    TU_OK(ctx, peft_dataset_load_tsv(ctx, peft_model_tokenizer(m), tsv, 64, &all));
    unlink(tsv);
    ck_assert_int_eq(peft_dataset_n_classes(all), 2);
    ck_assert_str_eq(peft_dataset_class_name(all, 0), "definitions");
    TU_OK(ctx, peft_dataset_split(all, 0.2, 5, &tr_ds, &val));
    peft_task task = peft_task_default(PEFT_TASK_CLASSIFY);
    task.n_classes = 2;
    task.pooling = PEFT_POOL_MEAN;
    peft_adapter *ad;
    TU_OK(ctx, peft_adapter_attach(m, strategy, &task, opts, &ad));
    peft_train_opts o = peft_train_opts_default();
    o.lr = lr;
    o.epochs = epochs;
    peft_trainer *tr;
    TU_OK(ctx, peft_trainer_create(ad, &o, &tr));
    peft_metrics before, after;
    TU_OK(ctx, peft_trainer_evaluate(tr, val, &before));
    peft_fit_result r;
    TU_OK(ctx, peft_trainer_fit(tr, tr_ds, val, &r));
    TU_OK(ctx, peft_trainer_evaluate(tr, val, &after));
    outcome out = {before.loss, after.loss, before.acc, after.acc, peft_adapter_trainable_numel(ad)};
    printf("cls %-8s trainable %8lld  val loss %.4f -> %.4f  acc %.3f -> %.3f\n", strategy, (long long)out.trainable,
           out.before, out.after, out.acc_before, out.acc_after);
    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(tr_ds), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
    return out;
}

START_TEST(numerics_classification_improves)
{
    if (!have_data()) return;
    const char *names[] = {"feature", "dense", "lora", "full"};
    const float lrs[] = {1e-2f, 3e-3f, 3e-3f, 1e-3f};
    for (int i = 0; i < 4; i++) {
        outcome o = train_classify(names[i], NULL, lrs[i], 6);
        ck_assert_msg(o.after < o.before, "%s: val loss %.4f -> %.4f", names[i], o.before, o.after);
        ck_assert_msg(o.acc_after >= 0.7, "%s: accuracy %.3f (two classes)", names[i], o.acc_after);
    }
}
END_TEST

/* ---- resume and checkpoints on the golden llama (fast) ---- */

static peft_dataset *golden_data(peft_ctx *ctx)
{
    int32_t rows[12][8];
    const int32_t *ptrs[12];
    int64_t lens[12];
    uint64_t s = 1;
    for (int i = 0; i < 12; i++) {
        for (int t = 0; t < 8; t++) rows[i][t] = (int32_t)((s = s * 6364136223846793005ULL + 1442695040888963407ULL) >> 58);
        ptrs[i] = rows[i];
        lens[i] = 8;
    }
    peft_dataset *ds;
    TU_OK(ctx, peft_dataset_from_ids(ctx, 12, ptrs, lens, NULL, 0, &ds));
    return ds;
}

typedef struct run_state {
    peft_ctx *ctx;
    peft_model *m;
    peft_adapter *ad;
    peft_trainer *tr;
    peft_dataset *ds;
} run_state;

static run_state start(int64_t max_steps, const char *strategy, const void *sopts)
{
    run_state r;
    r.ctx = tu_ctx(2, 99);
    peft_status st = peft_model_load(r.ctx, "tests/golden/llama", NULL, &r.m);
    ck_assert_int_eq(st, PEFT_OK);
    r.ds = golden_data(r.ctx);
    TU_OK(r.ctx, peft_adapter_attach(r.m, strategy, NULL, sopts, &r.ad));
    peft_train_opts o = peft_train_opts_default();
    o.lr = 1e-2f;
    o.batch_size = 3;
    o.grad_accum = 2;
    o.max_steps = max_steps;
    o.schedule = peft_schedule_default(PEFT_SCHED_COSINE);
    o.schedule.warmup_steps = 2;
    o.schedule.total_steps = 10;
    TU_OK(r.ctx, peft_trainer_create(r.ad, &o, &r.tr));
    return r;
}

static void finish(run_state *r)
{
    peft_trainer_destroy(r->tr);
    peft_adapter_destroy(r->ad);
    peft_dataset_destroy(r->ds);
    peft_model_destroy(r->m);
    peft_ctx_destroy(r->ctx);
}

static float *weights(const peft_adapter *ad, size_t *n)
{
    *n = (size_t)peft_adapter_trainable_numel(ad);
    float *w = malloc(*n * sizeof *w);
    size_t off = 0;
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        peft_tensor *t;
        peft_adapter_trainable(ad, i, NULL, &t, NULL);
        memcpy(w + off, peft_tensor_data(t), (size_t)peft_tensor_numel(t) * sizeof *w);
        off += (size_t)peft_tensor_numel(t);
    }
    return w;
}

START_TEST(io_resume_is_bit_identical)
{
    const char *strategies[] = {"full", "lora", "dense"};
    for (int k = 0; k < 3; k++) {
        peft_dense_opts dop = peft_dense_opts_default(); /* dropout 0.1: the PRNG state must resume too */
        const void *opts = !strcmp(strategies[k], "dense") ? (const void *)&dop : NULL;
        /* uninterrupted: 10 steps */
        run_state a = start(10, strategies[k], opts);
        peft_fit_result r;
        TU_OK(a.ctx, peft_trainer_fit(a.tr, a.ds, NULL, &r));
        ck_assert_int_eq(r.steps, 10);
        size_t na, nb;
        float *wa = weights(a.ad, &na);
        /* interrupted: 4 steps, checkpoint, a fresh process state, resume to 10 */
        char path[] = "/tmp/peft_ckpt_XXXXXX";
        int fd = mkstemp(path);
        close(fd);
        run_state b = start(4, strategies[k], opts);
        TU_OK(b.ctx, peft_trainer_fit(b.tr, b.ds, NULL, &r));
        TU_OK(b.ctx, peft_trainer_save_checkpoint(b.tr, path));
        finish(&b);
        run_state c = start(10, strategies[k], opts);
        peft_ctx_seed(c.ctx, 12345); /* whatever the new process did, the checkpoint restores the stream */
        TU_OK(c.ctx, peft_trainer_load_checkpoint(c.tr, path));
        ck_assert_int_eq(peft_trainer_steps(c.tr), 4);
        TU_OK(c.ctx, peft_trainer_fit(c.tr, c.ds, NULL, &r));
        ck_assert_int_eq(r.steps, 10);
        float *wc = weights(c.ad, &nb);
        ck_assert_uint_eq(na, nb);
        ck_assert_msg(memcmp(wa, wc, na * sizeof *wa) == 0, "%s: resumed weights differ", strategies[k]);
        free(wa), free(wc);
        finish(&a), finish(&c);
        unlink(path);
    }
}
END_TEST

START_TEST(io_checkpoint_errors)
{
    char path[] = "/tmp/peft_ckpt_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    run_state a = start(3, "full", NULL);
    peft_fit_result r;
    TU_OK(a.ctx, peft_trainer_fit(a.tr, a.ds, NULL, &r));
    TU_OK(a.ctx, peft_trainer_save_checkpoint(a.tr, path));
    /* a failed save (no such directory) leaves the previous checkpoint intact */
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    unsigned char *orig = malloc((size_t)size);
    ck_assert_int_eq(fread(orig, 1, (size_t)size, f), size);
    fclose(f);
    TU_EXPECT_FAIL(a.ctx, peft_trainer_save_checkpoint(a.tr, "/nonexistent/dir/ckpt"), PEFT_ERR_IO, "/nonexistent/dir");
    /* another strategy's checkpoint */
    run_state b = start(3, "bitfit", NULL);
    TU_EXPECT_FAIL(b.ctx, peft_trainer_load_checkpoint(b.tr, path), PEFT_ERR_FORMAT, "strategy \"full\", not \"bitfit\"");
    finish(&b);
    /* another model with the same strategy */
    run_state c;
    c.ctx = tu_ctx(1, 1);
    TU_OK(c.ctx, peft_model_load(c.ctx, "tests/golden/llama-tied", NULL, &c.m));
    c.ds = golden_data(c.ctx);
    TU_OK(c.ctx, peft_adapter_attach(c.m, "full", NULL, NULL, &c.ad));
    TU_OK(c.ctx, peft_trainer_create(c.ad, NULL, &c.tr));
    TU_EXPECT_FAIL(c.ctx, peft_trainer_load_checkpoint(c.tr, path), PEFT_ERR_FORMAT, "another model?");
    finish(&c);
    /* damaged bytes: CRC mismatch, and the trainer is untouched */
    size_t n;
    float *before = weights(a.ad, &n);
    orig[size / 2] ^= 0x40;
    f = fopen(path, "wb");
    fwrite(orig, 1, (size_t)size, f);
    fclose(f);
    TU_EXPECT_FAIL(a.ctx, peft_trainer_load_checkpoint(a.tr, path), PEFT_ERR_CHECKSUM, "CRC32 mismatch");
    float *after = weights(a.ad, &n);
    ck_assert(memcmp(before, after, n * sizeof *before) == 0);
    /* truncated */
    f = fopen(path, "wb");
    fwrite(orig, 1, 20, f);
    fclose(f);
    peft_status st = peft_trainer_load_checkpoint(a.tr, path);
    ck_assert(st == PEFT_ERR_CHECKSUM || st == PEFT_ERR_FORMAT);
    free(before), free(after), free(orig);
    finish(&a);
    unlink(path);
}
END_TEST

START_TEST(api_non_finite_steps_refused)
{
    run_state a = start(3, "full", NULL);
    size_t n;
    float *before = weights(a.ad, &n);
    peft_tensor *t;
    peft_adapter_trainable(a.ad, 0, NULL, &t, NULL);
    float *emb = peft_tensor_data(t);
    float keep = emb[96 * 0 + 5];
    emb[5] = NAN; /* row 0 of the embedding: token 0 appears in the batch below */
    int32_t ids[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    peft_batch b = {1, 8, ids, NULL, NULL, NULL, NULL, 0};
    float loss;
    TU_EXPECT_FAIL(a.ctx, peft_trainer_step(a.tr, &b, &loss), PEFT_ERR_NUMERIC, "step refused, weights untouched");
    emb[5] = keep;
    float *after = weights(a.ad, &n);
    ck_assert(memcmp(before, after, n * sizeof *before) == 0);
    ck_assert_int_eq(peft_trainer_steps(a.tr), 0);
    /* a bad learning rate never starts */
    peft_train_opts o = peft_train_opts_default();
    o.lr = INFINITY;
    peft_trainer *tr = NULL;
    TU_EXPECT_FAIL(a.ctx, peft_trainer_create(a.ad, &o, &tr), PEFT_ERR_INVALID_ARG, "learning rate inf");
    ck_assert_ptr_null(tr);
    free(before), free(after);
    finish(&a);
}
END_TEST

START_TEST(numerics_early_stopping_restores_best)
{
    /* a learning rate far too high: validation gets worse, patience 1 stops and restores */
    run_state a = start(0, "full", NULL);
    peft_trainer_destroy(a.tr);
    peft_dataset *tr_ds, *val;
    TU_OK(a.ctx, peft_dataset_split(a.ds, 0.25, 1, &tr_ds, &val));
    peft_train_opts o = peft_train_opts_default();
    o.lr = 0.5f;
    o.epochs = 20;
    o.batch_size = 3;
    o.patience = 1;
    o.optimizer = PEFT_OPT_SGD;
    o.max_grad_norm = 0;
    TU_OK(a.ctx, peft_trainer_create(a.ad, &o, &a.tr));
    peft_fit_result r;
    TU_OK(a.ctx, peft_trainer_fit(a.tr, tr_ds, val, &r));
    ck_assert_int_eq(r.stopped_early, 1);
    ck_assert_int_lt(r.epochs, 20);
    ck_assert_double_le(r.val_loss_after, r.best_val_loss + 1e-9);
    peft_dataset_destroy(tr_ds), peft_dataset_destroy(val);
    finish(&a);
}
END_TEST

/* Feature extraction caches per example: a reference set whose example ids
 * collide with the training set's must not poison the cache. */
START_TEST(numerics_feature_cache_keeps_sets_apart)
{
    float *w[2];
    size_t n;
    for (int with_ref = 0; with_ref < 2; with_ref++) {
        run_state a = start(0, "feature", NULL);
        peft_trainer_destroy(a.tr);
        peft_train_opts o = peft_train_opts_default();
        o.epochs = 3;
        o.lr = 1e-2f;
        o.batch_size = 4;
        TU_OK(a.ctx, peft_trainer_create(a.ad, &o, &a.tr));
        int32_t other[12][8];
        const int32_t *ptrs[12];
        int64_t lens[12];
        for (int i = 0; i < 12; i++) {
            for (int t = 0; t < 8; t++) other[i][t] = (int32_t)((i * 7 + t * 13) % 96);
            ptrs[i] = other[i];
            lens[i] = 8;
        }
        peft_dataset *ref;
        TU_OK(a.ctx, peft_dataset_from_ids(a.ctx, 12, ptrs, lens, NULL, 0, &ref));
        if (with_ref) TU_OK(a.ctx, peft_trainer_set_reference(a.tr, ref));
        peft_fit_result r;
        TU_OK(a.ctx, peft_trainer_fit(a.tr, a.ds, a.ds, &r));
        w[with_ref] = weights(a.ad, &n);
        peft_dataset_destroy(ref);
        finish(&a);
    }
    /* features recomputed in another batch grouping may round differently in
     * the last bit (sgemm over other row counts); a poisoned cache is far off */
    ck_assert_double_lt(tu_max_rel_err(w[1], w[0], n), 1e-4);
    free(w[0]), free(w[1]);
}
END_TEST

/* Epoch by epoch equals one fit over the same epochs. */
START_TEST(numerics_epoch_calls_equal_fit)
{
    size_t n1, n2;
    run_state a = start(0, "lora", NULL), b = start(0, "lora", NULL);
    peft_trainer_destroy(a.tr), peft_trainer_destroy(b.tr);
    peft_train_opts o = peft_train_opts_default();
    o.epochs = 3;
    o.lr = 1e-2f;
    o.batch_size = 4;
    TU_OK(a.ctx, peft_trainer_create(a.ad, &o, &a.tr));
    TU_OK(b.ctx, peft_trainer_create(b.ad, &o, &b.tr));
    peft_fit_result r;
    TU_OK(a.ctx, peft_trainer_fit(a.tr, a.ds, NULL, &r));
    ck_assert_int_eq(r.epochs, 3);
    for (int e = 0; e < 3; e++) TU_OK(b.ctx, peft_trainer_epoch(b.tr, b.ds, NULL, &r));
    ck_assert_int_eq(r.epochs, 3);
    ck_assert_int_eq(peft_trainer_steps(a.tr), peft_trainer_steps(b.tr));
    float *wa = weights(a.ad, &n1), *wb = weights(b.ad, &n2);
    ck_assert(memcmp(wa, wb, n1 * sizeof *wa) == 0);
    free(wa), free(wb);
    finish(&a), finish(&b);
}
END_TEST

Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_every_strategy_lowers_lm_loss);
    tcase_add_test(tc, numerics_classification_improves);
    tcase_add_test(tc, numerics_early_stopping_restores_best);
    tcase_add_test(tc, numerics_epoch_calls_equal_fit);
    tcase_add_test(tc, numerics_feature_cache_keeps_sets_apart);
    suite_add_tcase(s, tc);
    tc = tcase_create("io");
    tcase_add_test(tc, io_resume_is_bit_identical);
    tcase_add_test(tc, io_checkpoint_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_non_finite_steps_refused);
    suite_add_tcase(s, tc);
    return s;
}
