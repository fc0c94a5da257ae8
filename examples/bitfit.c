/* BitFit: only the bias terms train (GPT-2). A Llama model has no biases,
 * so its RMSNorm gains train instead (the "LN-tuning" set). A few hundred
 * parameters: a strong, cheap baseline that barely disturbs the model.
 *
 *   bitfit [MODEL] [TEXT_FILE]
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

    /* bitfit has no options: opts = NULL */
    if (st == PEFT_OK) st = peft_adapter_attach(model, "bitfit", NULL /* causal LM */, NULL, &ad);

    peft_train_opts o = peft_train_opts_default();
    o.lr = 2e-2f;
    o.max_steps = 30;
    if (st == PEFT_OK) st = peft_trainer_create(ad, &o, &tr);

    peft_fit_result r;
    if (st == PEFT_OK) st = peft_trainer_fit(tr, train, val, &r);
    if (st == PEFT_OK) {
        printf("bitfit (%s): %lld of %lld parameters train, in %zu tensors:\n",
               peft_arch_name(peft_model_get_config(model)->arch), (long long)peft_adapter_trainable_numel(ad),
               (long long)peft_model_numel(model), peft_adapter_n_trainable(ad));
        for (size_t i = 0; i < peft_adapter_n_trainable(ad) && i < 3; i++) {
            const char *name;
            peft_adapter_trainable(ad, i, &name, NULL, NULL);
            printf("  %s\n", name);
        }
        printf("  ...\n%lld steps in %.1f s; validation loss %.4f -> %.4f (perplexity %.1f -> %.1f)\n",
               (long long)r.steps, r.seconds, r.val_loss_before, r.val_loss_after, exp(r.val_loss_before),
               exp(r.val_loss_after));
    } else {
        fprintf(stderr, "bitfit: %s: %s\n", peft_status_str(st), peft_ctx_errmsg(ctx));
    }

    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(train), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(model);
    peft_ctx_destroy(ctx);
    return st == PEFT_OK ? 0 : 1;
}
