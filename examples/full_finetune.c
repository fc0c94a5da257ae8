/* Full fine-tuning ("fine-tuning II"): every parameter of the model trains.
 * It adapts the most, forgets the most of what the model knew, and needs the
 * most memory (AdamW keeps two more numbers per parameter). Here a model
 * trained on children's stories learns the style of fortune cookies.
 *
 *   full_finetune [MODEL] [TEXT_FILE]
 *
 * MODEL defaults to ../shared/models/stories260K.bin, TEXT_FILE to the
 * fortunes of Debian's fortunes package. */
#include <math.h>
#include <stdio.h>

#include "peft/peft.h"

int main(int argc, char **argv)
{
    const char *model_path = argc > 1 ? argv[1] : "../shared/models/stories260K.bin";
    const char *text_path = argc > 2 ? argv[2] : "/usr/share/games/fortunes/fortunes";
    if (peft_version_number() != PEFT_VERSION_NUMBER) {
        fprintf(stderr, "full_finetune: built with libpeft %s, running with %s\n", PEFT_VERSION_STRING,
                peft_version_string());
        return 1;
    }
    peft_ctx *ctx = NULL;
    peft_model *model = NULL;
    peft_dataset *all = NULL, *train = NULL, *val = NULL;
    peft_adapter *ad = NULL;
    peft_trainer *tr = NULL;
    peft_status st = peft_ctx_create(NULL, &ctx);
    if (st == PEFT_OK) st = peft_model_load(ctx, model_path, NULL, &model);
    /* the text, tokenized and packed into sequences of 64 tokens; 10% held out */
    if (st == PEFT_OK) st = peft_dataset_load_text(ctx, peft_model_tokenizer(model), text_path, 64, &all);
    if (st == PEFT_OK) st = peft_dataset_split(all, 0.1, 1, &train, &val);

    peft_full_opts fo = peft_full_opts_default();
    fo.top_blocks = 0; /* 0 = every block; N = only the top N blocks, the final norm and the head */
    if (st == PEFT_OK) st = peft_adapter_attach(model, "full", NULL /* causal LM */, &fo, &ad);

    peft_train_opts o = peft_train_opts_default();
    o.lr = 2e-3f;
    o.max_steps = 30; /* a short run: about one epoch of batches of 8 */
    o.schedule = peft_schedule_default(PEFT_SCHED_COSINE);
    o.schedule.warmup_steps = 4; /* warmup and clipping (max_grad_norm, default 1) help full fine-tuning */
    if (st == PEFT_OK) st = peft_trainer_create(ad, &o, &tr);

    peft_fit_result r;
    if (st == PEFT_OK) st = peft_trainer_fit(tr, train, val, &r);
    if (st == PEFT_OK)
        printf("full: %lld of %lld parameters train; %lld steps in %.1f s\n"
               "validation loss %.4f -> %.4f (perplexity %.1f -> %.1f)\n",
               (long long)peft_adapter_trainable_numel(ad), (long long)peft_model_numel(model), (long long)r.steps,
               r.seconds, r.val_loss_before, r.val_loss_after, exp(r.val_loss_before), exp(r.val_loss_after));
    else
        fprintf(stderr, "full_finetune: %s: %s\n", peft_status_str(st), peft_ctx_errmsg(ctx));

    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(train), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(model);
    peft_ctx_destroy(ctx);
    return st == PEFT_OK ? 0 : 1;
}
