/* LoRA: the base weights stay frozen; each targeted projection W [out, in]
 * gets a low-rank update, y = x W^T + (alpha/r) * (x A^T) B^T, with A [r, in]
 * and B [out, r] (B starts at zero, so training starts from the base model).
 * Then the adapter's life after training:
 *   - save: the A and B tensors, under Hugging Face PEFT's names;
 *   - merge: W += (alpha/r) B A, the same function with no extra cost at
 *     inference; unmerge restores W bit for bit;
 *   - load: a fresh adapter on the same model reads the saved tensors back.
 *
 *   lora [MODEL] [TEXT_FILE] [ADAPTER_OUT]
 *
 * MODEL defaults to ../shared/models/stories260K.bin, TEXT_FILE to the
 * fortunes of Debian's fortunes package, ADAPTER_OUT to
 * lora_adapter.safetensors. */
#include <math.h>
#include <stdio.h>

#include "peft/peft.h"

/* The validation loss, or NAN (the status goes to *st). */
static double val_loss(peft_trainer *tr, const peft_dataset *val, peft_status *st)
{
    peft_metrics m = {0};
    if (*st == PEFT_OK) *st = peft_trainer_evaluate(tr, val, &m);
    return *st == PEFT_OK ? m.loss : NAN;
}

int main(int argc, char **argv)
{
    const char *model_path = argc > 1 ? argv[1] : "../shared/models/stories260K.bin";
    const char *text_path = argc > 2 ? argv[2] : "/usr/share/games/fortunes/fortunes";
    const char *out_path = argc > 3 ? argv[3] : "lora_adapter.safetensors";
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

    peft_lora_opts lo = peft_lora_opts_default();
    lo.r = 8;
    lo.alpha = 16;     /* scale alpha/r = 2 */
    lo.targets = NULL; /* NULL = the architecture's default (llama: "q_proj,v_proj"); or "all-linear" */
    if (st == PEFT_OK) st = peft_adapter_attach(model, "lora", NULL /* causal LM */, &lo, &ad);

    peft_train_opts o = peft_train_opts_default();
    o.lr = 1e-2f;
    o.max_steps = 30;
    if (st == PEFT_OK) st = peft_trainer_create(ad, &o, &tr);

    peft_fit_result r;
    if (st == PEFT_OK) st = peft_trainer_fit(tr, train, val, &r);
    if (st == PEFT_OK)
        printf("lora r=%d: %lld of %lld parameters train; %lld steps in %.1f s\n"
               "validation loss %.4f -> %.4f\n",
               lo.r, (long long)peft_adapter_trainable_numel(ad), (long long)peft_model_numel(model), (long long)r.steps,
               r.seconds, r.val_loss_before, r.val_loss_after);

    /* save the trained A and B */
    if (st == PEFT_OK && (st = peft_adapter_save(ad, out_path)) == PEFT_OK)
        printf("saved %zu tensors to %s\n", peft_adapter_n_trainable(ad), out_path);

    /* merge into W and take it out again: the loss must not move (up to float rounding) */
    if (st == PEFT_OK) st = peft_adapter_merge(ad);
    double merged = val_loss(tr, val, &st);
    if (st == PEFT_OK) st = peft_adapter_unmerge(ad);
    double unmerged = val_loss(tr, val, &st);
    if (st == PEFT_OK) printf("merged: loss %.6f; unmerged again: loss %.6f\n", merged, unmerged);

    /* detach, then attach a fresh adapter (B = 0: the base model again) and load the file */
    peft_trainer_destroy(tr), tr = NULL;
    peft_adapter_destroy(ad), ad = NULL;
    if (st == PEFT_OK) st = peft_adapter_attach(model, "lora", NULL, &lo, &ad);
    if (st == PEFT_OK) st = peft_trainer_create(ad, &o, &tr);
    double fresh = val_loss(tr, val, &st);
    if (st == PEFT_OK) st = peft_adapter_load(ad, out_path);
    double loaded = val_loss(tr, val, &st);
    if (st == PEFT_OK) printf("fresh adapter: loss %.4f; after loading %s: loss %.4f\n", fresh, out_path, loaded);

    if (st != PEFT_OK) fprintf(stderr, "lora: %s: %s\n", peft_status_str(st), peft_ctx_errmsg(ctx));
    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(train), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(model);
    peft_ctx_destroy(ctx);
    return st == PEFT_OK ? 0 : 1;
}
