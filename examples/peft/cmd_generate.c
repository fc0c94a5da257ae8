/* peft generate MODEL (--tokens ... | --prompt TEXT) [sampling options] */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *const flags[] = {"help", "no-bos", "ids", NULL};
static const char *const valued[] = {"tokens", "prompt", "max-new", "temperature", "top-k", "top-p", "seed",
                                     "threads", "tokenizer", NULL};

static void usage(FILE *f)
{
    fprintf(f, "usage: peft generate MODEL (--tokens LIST | --prompt TEXT) [options]\n\n"
               "  --tokens LIST       prompt as comma-separated token ids\n"
               "  --prompt TEXT       prompt text, through the model's tokenizer (BOS added when the\n"
               "                      tokenizer has one, unless --no-bos)\n"
               "  --no-bos            do not start the --prompt with BOS\n"
               "  --max-new N         tokens to generate (default 32)\n"
               "  --temperature T     0 = greedy (default)\n"
               "  --top-k K           keep the K most likely tokens (0 = all)\n"
               "  --top-p P           nucleus sampling mass (default 1)\n"
               "  --seed S            sampling seed (default 1)\n"
               "  --tokenizer PATH    tokenizer when the model file has none\n"
               "  --ids               also print the generated ids\n"
               "  --threads N         threads (default: all cores)\n"
               "  --help              this text\n");
}

int cmd_generate(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    if (a.n_positional != 1 || cli_has(&a, "tokens") == cli_has(&a, "prompt")) {
        usage(stderr);
        return 2;
    }
    long long max_new, top_k, seed;
    double temp, top_p;
    if (!cli_int(&a, "max-new", 32, &max_new) || !cli_int(&a, "top-k", 0, &top_k) || !cli_int(&a, "seed", 1, &seed) ||
        !cli_float(&a, "temperature", 0.0, &temp) || !cli_float(&a, "top-p", 1.0, &top_p))
        return 2;
    peft_ctx *ctx = cli_ctx(&a);
    peft_model *m = ctx ? cli_load_model(ctx, a.positional[0], 1) : NULL;
    if (!m) {
        peft_ctx_destroy(ctx);
        return 1;
    }
    int rc = 1;
    bool owned = false;
    peft_tokenizer *tok = NULL;
    int32_t *prompt = NULL, *out = NULL;
    size_t n_prompt = 0, n_out = 0;
    if (cli_has(&a, "tokens")) {
        if (!cli_parse_ids(cli_get(&a, "tokens"), &prompt, &n_prompt)) goto done;
        if (cli_has(&a, "tokenizer") || peft_model_tokenizer(m)) tok = cli_tokenizer(ctx, &a, m, &owned);
    } else {
        tok = cli_tokenizer(ctx, &a, m, &owned);
        if (!tok) goto done;
        const char *text = cli_get(&a, "prompt");
        int bos = !cli_has(&a, "no-bos") && peft_tokenizer_bos(tok) >= 0;
        size_t need = 0;
        peft_tokenizer_encode(tok, text, strlen(text), bos, 0, NULL, 0, &need);
        prompt = malloc((need + 1) * sizeof *prompt);
        peft_status st = peft_tokenizer_encode(tok, text, strlen(text), bos, 0, prompt, need + 1, &n_prompt);
        if (st != PEFT_OK || n_prompt == 0) {
            cli_error(ctx, "cannot tokenize the prompt", st);
            goto done;
        }
    }
    peft_sample_opts so = peft_sample_opts_default();
    so.max_new = (int)max_new;
    so.temperature = (float)temp;
    so.top_k = (int)top_k;
    so.top_p = (float)top_p;
    so.seed = (uint64_t)seed;
    out = malloc((size_t)(max_new > 0 ? max_new : 1) * sizeof *out);
    peft_status st = peft_model_generate(m, prompt, n_prompt, &so, out, (size_t)(max_new > 0 ? max_new : 0), &n_out);
    if (st != PEFT_OK) {
        cli_error(ctx, "generation failed", st);
        goto done;
    }
    if (tok) {
        size_t total = n_prompt + n_out, len = 0;
        int32_t *all = malloc(total * sizeof *all);
        memcpy(all, prompt, n_prompt * sizeof *all);
        memcpy(all + n_prompt, out, n_out * sizeof *all);
        peft_tokenizer_decode(tok, all, total, NULL, 0, &len);
        char *text = malloc(len + 1);
        st = peft_tokenizer_decode(tok, all, total, text, len + 1, &len);
        if (st == PEFT_OK) printf("%s\n", text);
        free(text);
        free(all);
        if (st != PEFT_OK) {
            cli_error(ctx, "cannot decode", st);
            goto done;
        }
    }
    if (!tok || cli_has(&a, "ids")) {
        for (size_t i = 0; i < n_out; i++) printf("%s%d", i ? "," : "", out[i]);
        printf("\n");
    }
    rc = 0;
done:
    if (owned) peft_tokenizer_destroy(tok);
    free(prompt);
    free(out);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
    return rc;
}
