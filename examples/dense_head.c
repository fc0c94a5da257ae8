/* Dense head ("fine-tuning I"): the base model stays frozen and new dense
 * layers on top of it learn the task — here an MLP classifier (one hidden
 * layer of the model's width, GELU, dropout) on the mean-pooled hidden
 * states. No gradient flows into the base.
 *
 *   dense_head [MODEL] [TSV_FILE]
 *
 * MODEL defaults to ../shared/models/stories260K.bin. TSV_FILE holds
 * "label<TAB>text" lines; by default one is made from two categories of
 * Debian's fortunes package ("definitions" vs "food"). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>

#include "fortunes_tsv.h"
#include "peft/peft.h"

int main(int argc, char **argv)
{
    const char *model_path = argc > 1 ? argv[1] : "../shared/models/stories260K.bin";
    char tsv[256];
    if (argc > 2) snprintf(tsv, sizeof tsv, "%s", argv[2]);
    else if (fortunes_tsv("definitions", "food", 150, tsv, sizeof tsv) != 0) {
        fprintf(stderr, "dense_head: no fortunes in %s; give a TSV file\n", FORTUNES_DIR);
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

    peft_task task = peft_task_default(PEFT_TASK_CLASSIFY);
    task.pooling = PEFT_POOL_MEAN;
    if (st == PEFT_OK) task.n_classes = peft_dataset_n_classes(all);
    peft_dense_opts dopts = peft_dense_opts_default();
    dopts.depth = 1;                     /* one hidden layer ... */
    dopts.width = 0;                     /* ... as wide as the model (0 = hidden size) */
    dopts.activation = PEFT_ACT_GELU;
    dopts.dropout = 0.1f;                /* active only while training */
    if (st == PEFT_OK) st = peft_adapter_attach(model, "dense", &task, &dopts, &ad);

    peft_train_opts o = peft_train_opts_default();
    o.lr = 1e-2f;
    o.epochs = 6;
    if (st == PEFT_OK) st = peft_trainer_create(ad, &o, &tr);

    peft_metrics before, after;
    peft_fit_result r;
    if (st == PEFT_OK) st = peft_trainer_evaluate(tr, val, &before);
    if (st == PEFT_OK) st = peft_trainer_fit(tr, train, NULL, &r);
    if (st == PEFT_OK) st = peft_trainer_evaluate(tr, val, &after);
    if (st == PEFT_OK)
        printf("dense: %lld trainable parameters, %zu train / %zu validation examples, %lld steps in %.1f s\n"
               "validation loss %.4f -> %.4f, accuracy %.3f -> %.3f\n",
               (long long)peft_adapter_trainable_numel(ad), peft_dataset_size(train), peft_dataset_size(val),
               (long long)r.steps, r.seconds, before.loss, after.loss, before.acc, after.acc);
    else
        fprintf(stderr, "dense_head: %s: %s\n", peft_status_str(st), peft_ctx_errmsg(ctx));

    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(train), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(model);
    peft_ctx_destroy(ctx);
    if (argc <= 2) unlink(tsv);
    return st == PEFT_OK ? 0 : 1;
}
