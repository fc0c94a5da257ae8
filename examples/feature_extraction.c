/* Feature extraction: the base model stays frozen and is only a feature
 * extractor; a logistic-regression classifier learns on its pooled hidden
 * states. The features of each example are computed once (the first epoch)
 * and cached, so later epochs cost almost nothing — watch the epoch times.
 *
 *   feature_extraction [MODEL] [TSV_FILE]
 *
 * MODEL defaults to ../shared/models/stories260K.bin. TSV_FILE holds
 * "label<TAB>text" lines; by default one is made from two categories of
 * Debian's fortunes package ("definitions" vs "food"). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <time.h>

#include "fortunes_tsv.h"
#include "peft/peft.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    const char *model_path = argc > 1 ? argv[1] : "../shared/models/stories260K.bin";
    char tsv[256];
    if (argc > 2) snprintf(tsv, sizeof tsv, "%s", argv[2]);
    else if (fortunes_tsv("definitions", "food", 150, tsv, sizeof tsv) != 0) {
        fprintf(stderr, "feature_extraction: no fortunes in %s; give a TSV file\n", FORTUNES_DIR);
        return 2;
    }
    peft_ctx *ctx = NULL;
    peft_model *model = NULL;
    peft_dataset *all = NULL, *train = NULL, *val = NULL;
    peft_adapter *ad = NULL;
    peft_trainer *tr = NULL;
    peft_status st = peft_ctx_create(NULL, &ctx);
    if (st == PEFT_OK) st = peft_model_load(ctx, model_path, NULL, &model);
    /* examples of at most 64 tokens; 20% held out for validation */
    if (st == PEFT_OK) st = peft_dataset_load_tsv(ctx, peft_model_tokenizer(model), tsv, 64, &all);
    if (st == PEFT_OK) st = peft_dataset_split(all, 0.2, 5, &train, &val);

    /* the task: classify the mean of the last hidden states into the TSV's labels */
    peft_task task = peft_task_default(PEFT_TASK_CLASSIFY);
    task.pooling = PEFT_POOL_MEAN;
    if (st == PEFT_OK) task.n_classes = peft_dataset_n_classes(all);
    peft_feature_opts fo = peft_feature_opts_default(); /* depth 0: logistic regression */
    if (st == PEFT_OK) st = peft_adapter_attach(model, "feature", &task, &fo, &ad);

    peft_train_opts o = peft_train_opts_default();
    o.lr = 1e-2f;
    o.epochs = 20;
    if (st == PEFT_OK) st = peft_trainer_create(ad, &o, &tr);

    peft_metrics before, after;
    if (st == PEFT_OK) st = peft_trainer_evaluate(tr, val, &before);
    if (st == PEFT_OK)
        printf("feature: %lld trainable parameters (the classifier); %zu train / %zu validation examples\n",
               (long long)peft_adapter_trainable_numel(ad), peft_dataset_size(train), peft_dataset_size(val));
    /* epoch by epoch, to time the first one (which runs the base model and
     * caches the features) apart from the rest (which only train the classifier) */
    double t_first = 0, t0 = now();
    for (int e = 0; st == PEFT_OK && e < o.epochs; e++) {
        peft_fit_result r;
        st = peft_trainer_epoch(tr, train, NULL, &r);
        if (e == 0) t_first = now() - t0;
    }
    if (st == PEFT_OK)
        printf("epoch 1: %.3f s (features computed); epochs 2-%d: %.3f s together (features cached)\n", t_first,
               o.epochs, now() - t0 - t_first);
    if (st == PEFT_OK) st = peft_trainer_evaluate(tr, val, &after);
    if (st == PEFT_OK)
        printf("validation loss %.4f -> %.4f, accuracy %.3f -> %.3f\n", before.loss, after.loss, before.acc, after.acc);
    else
        fprintf(stderr, "feature_extraction: %s: %s\n", peft_status_str(st), peft_ctx_errmsg(ctx));

    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(train), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(model);
    peft_ctx_destroy(ctx);
    if (argc <= 2) unlink(tsv);
    return st == PEFT_OK ? 0 : 1;
}
