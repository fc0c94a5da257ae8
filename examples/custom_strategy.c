/* A fine-tuning strategy written by the host program and registered with
 * peft_strategy_register — the same call the built-ins use. It trains only
 * the norm gains of the top block and the final norm ("top-norms"), then fits
 * a model to a little text and prints the validation loss before and after.
 *
 *   custom_strategy MODEL [TEXT_FILE]
 */
#include <stdio.h>
#include <string.h>

#include "peft/peft.h"

/* attach: declare the tensors that train; everything else stays frozen. */
static peft_status top_norms_attach(peft_adapter *ad, const void *opts)
{
    (void)opts;
    peft_model *m = peft_adapter_model(ad);
    const int64_t top = peft_model_get_config(m)->n_layer - 1;
    char block[64];
    snprintf(block, sizeof block, ".%lld.", (long long)top);
    for (size_t i = 0; i < peft_model_n_params(m); i++) {
        const char *name;
        peft_tensor *t;
        peft_model_param(m, i, &name, &t);
        int is_norm = strstr(name, "norm") || strstr(name, "ln_");
        int in_top = strstr(name, block) != NULL || (!strstr(name, "layers.") && !strstr(name, ".h."));
        if (is_norm && in_top) {
            peft_status st = peft_adapter_add_param(ad, name, t, 0);
            if (st != PEFT_OK) return st;
        }
    }
    return PEFT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [TEXT_FILE]\n", argv[0]);
        return 2;
    }
    const char *text_file = argc > 2 ? argv[2] : "/usr/share/games/fortunes/fortunes";
    peft_ctx *ctx = NULL;
    peft_model *model = NULL;
    peft_adapter *ad = NULL;
    peft_trainer *tr = NULL;
    peft_dataset *all = NULL, *train = NULL, *val = NULL;
    if (peft_ctx_create(NULL, &ctx) != PEFT_OK) return 1;

    const peft_strategy top_norms = {
        .struct_size = sizeof(peft_strategy),
        .name = "top-norms",
        .description = "norm gains of the top block and the final norm",
        .attach = top_norms_attach,
    };
    peft_status st = peft_strategy_register(ctx, &top_norms);
    if (st == PEFT_OK) st = peft_model_load(ctx, argv[1], NULL, &model);
    if (st == PEFT_OK && !peft_model_tokenizer(model)) st = PEFT_ERR_NOT_FOUND;
    if (st == PEFT_OK) st = peft_dataset_load_text(ctx, peft_model_tokenizer(model), text_file, 64, &all);
    if (st == PEFT_OK) st = peft_dataset_split(all, 0.1, 1, &train, &val);
    if (st == PEFT_OK) st = peft_adapter_attach(model, "top-norms", NULL, NULL, &ad);
    peft_train_opts o = peft_train_opts_default();
    o.lr = 1e-2f;
    if (st == PEFT_OK) st = peft_trainer_create(ad, &o, &tr);
    peft_fit_result r;
    if (st == PEFT_OK) st = peft_trainer_fit(tr, train, val, &r);
    if (st == PEFT_OK)
        printf("%s: %lld trainable parameters, validation loss %.4f -> %.4f\n", peft_adapter_strategy(ad),
               (long long)peft_adapter_trainable_numel(ad), r.val_loss_before, r.val_loss_after);
    else
        fprintf(stderr, "custom_strategy: %s: %s\n", peft_status_str(st), peft_ctx_errmsg(ctx));
    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(train), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(model);
    peft_ctx_destroy(ctx);
    return st == PEFT_OK ? 0 : 1;
}
