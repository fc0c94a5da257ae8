/* IA3 ("infused adapter by inhibiting and amplifying inner activations"):
 * one learned scaling vector per targeted projection, initialised to ones so
 * training starts from the base model. Attention projections get their
 * outputs scaled, the feed-forward down projection its inputs. Very few
 * parameters, little forgetting; merge folds the vectors into the weights.
 *
 *   ia3 [MODEL] [TEXT_FILE]
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

    peft_ia3_opts io = peft_ia3_opts_default();
    io.targets = NULL;     /* NULL = Hugging Face PEFT's defaults: llama "k_proj,v_proj,down_proj", */
    io.feedforward = NULL; /* of which "down_proj" is scaled on its input (gpt2: "c_attn,mlp.c_proj") */
    if (st == PEFT_OK) st = peft_adapter_attach(model, "ia3", NULL /* causal LM */, &io, &ad);

    peft_train_opts o = peft_train_opts_default();
    o.lr = 2e-2f; /* scaling vectors take a larger learning rate than weights */
    o.max_steps = 30;
    if (st == PEFT_OK) st = peft_trainer_create(ad, &o, &tr);

    peft_fit_result r;
    if (st == PEFT_OK) st = peft_trainer_fit(tr, train, val, &r);
    if (st == PEFT_OK) {
        printf("ia3: %lld of %lld parameters train (%zu vectors); %lld steps in %.1f s\n"
               "validation loss %.4f -> %.4f (perplexity %.1f -> %.1f)\n",
               (long long)peft_adapter_trainable_numel(ad), (long long)peft_model_numel(model),
               peft_adapter_n_trainable(ad), (long long)r.steps, r.seconds, r.val_loss_before, r.val_loss_after,
               exp(r.val_loss_before), exp(r.val_loss_after));
        /* the first vector, by its Hugging Face PEFT name */
        const char *name;
        peft_tensor *l;
        if (peft_adapter_trainable(ad, 0, &name, &l, NULL) == PEFT_OK) {
            const float *v = peft_tensor_data(l);
            printf("%s: [%.3f, %.3f, %.3f, ...] (started at 1)\n", name, v[0], v[1], v[2]);
        }
    } else {
        fprintf(stderr, "ia3: %s: %s\n", peft_status_str(st), peft_ctx_errmsg(ctx));
    }

    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(train), peft_dataset_destroy(val), peft_dataset_destroy(all);
    peft_model_destroy(model);
    peft_ctx_destroy(ctx);
    return st == PEFT_OK ? 0 : 1;
}
