/* peft init: a new model with random weights, saved as a Hugging Face
 * checkpoint directory (config.json + model.safetensors), e.g. to pretrain. */
#include <string.h>

#include "cli.h"

static const char *const flags[] = {"help", NULL};
static const char *const valued[] = {"arch", "layers", "d", "heads", "kv-heads", "ffn", "vocab", "ctx", "theta",
                                     "seed", "out", "threads", NULL};

static void usage(FILE *f)
{
    fprintf(f, "usage: peft init --arch gpt2|llama --out DIR [options]\n\n"
               "Writes a randomly initialised model (GPT-2 style init, seeded) as DIR/config.json +\n"
               "DIR/model.safetensors.\n"
               "  --layers L [4]   --d D [128]   --heads H [4]   --kv-heads K [= heads, llama only]\n"
               "  --ffn F          [gpt2: 4*D; llama: 8*D/3 rounded to 8]\n"
               "  --vocab V [256]  --ctx T [256]  --theta R [10000, llama]\n"
               "  --seed S [1]     --threads N\n"
               "  --help           this text\n");
}

int cmd_init(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    const char *arch = cli_get(&a, "arch"), *out = cli_get(&a, "out");
    if (!arch || !out || a.n_positional || (strcmp(arch, "gpt2") && strcmp(arch, "llama"))) {
        usage(stderr);
        return 2;
    }
    bool llama = !strcmp(arch, "llama");
    peft_model_config c = peft_model_config_default(llama ? PEFT_ARCH_LLAMA : PEFT_ARCH_GPT2);
    long long L, D, H, K, F, V, T;
    double theta;
    if (!cli_int(&a, "layers", 4, &L) || !cli_int(&a, "d", 128, &D) || !cli_int(&a, "heads", 4, &H) ||
        !cli_int(&a, "kv-heads", H, &K) || !cli_int(&a, "vocab", 256, &V) || !cli_int(&a, "ctx", 256, &T) ||
        !cli_float(&a, "theta", 10000.0, &theta))
        return 2;
    long long ffn_default = llama ? ((8 * D / 3 + 7) / 8) * 8 : 4 * D;
    if (!cli_int(&a, "ffn", ffn_default, &F)) return 2;
    c.n_layer = L, c.d_model = D, c.n_head = H, c.n_kv_head = llama ? K : H, c.d_ff = F, c.vocab_size = V, c.n_ctx = T;
    c.rope_theta = (float)theta;
    c.tie_embeddings = 1;
    c.bos_id = c.eos_id = -1;
    peft_ctx *ctx = cli_ctx(&a);
    if (!ctx) return 1;
    peft_model *m = NULL;
    peft_status st = peft_model_create(ctx, &c, &m);
    if (st == PEFT_OK) st = peft_model_save(m, out);
    if (st != PEFT_OK) cli_error(ctx, "cannot create the model", st);
    else
        printf("wrote %s: %s, %lld layers, d %lld, %lld parameters\n", out, arch, L, D, (long long)peft_model_numel(m));
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
    return st == PEFT_OK ? 0 : 1;
}
