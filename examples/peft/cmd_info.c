/* peft info MODEL: architecture, sizes, dtypes, parameter count. */
#include <string.h>

#include "cli.h"

static const char *const flags[] = {"json", "help", NULL};
static const char *const valued[] = {"threads", NULL};

static void usage(FILE *f)
{
    fprintf(f, "usage: peft info MODEL [--json]\n\n"
               "MODEL is a Hugging Face checkpoint directory, a .safetensors file with config.json\n"
               "beside it, a GGUF file or a llama2.c .bin checkpoint (detected from the contents);\n"
               "a tokenizer file or directory is described too.\n"
               "  --json        print one JSON object\n"
               "  --threads N   threads (default: all cores)\n"
               "  --help        this text\n");
}

/* A GGUF that holds only a vocabulary: describe its metadata and tokenizer. */
static int info_vocab_gguf(peft_ctx *ctx, const char *path, bool json)
{
    peft_gguf *g = NULL;
    peft_status st = peft_gguf_open(ctx, path, &g);
    if (st != PEFT_OK) {
        cli_error(ctx, "cannot read the GGUF", st);
        return 1;
    }
    const char *arch = "?";
    peft_gguf_get_str(g, "general.architecture", &arch, NULL);
    peft_tokenizer *tok = NULL;
    st = peft_tokenizer_from_gguf(ctx, g, &tok);
    if (json)
        printf("{\"file\": \"%s\", \"format\": \"gguf\", \"architecture\": \"%s\", \"tensors\": 0, \"metadata_keys\": %zu, "
               "\"tokenizer\": \"%s\", \"n_vocab\": %zu}\n",
               path, arch, peft_gguf_n_keys(g), tok ? peft_tokenizer_name(tok) : "none", peft_tokenizer_n_vocab(tok));
    else {
        printf("file          %s\nformat        gguf v%u (vocabulary only: no tensors)\narchitecture  %s\n", path,
               peft_gguf_version(g), arch);
        printf("metadata      %zu keys\n", peft_gguf_n_keys(g));
        if (tok) printf("tokenizer     %s, %zu tokens\n", peft_tokenizer_name(tok), peft_tokenizer_n_vocab(tok));
    }
    peft_tokenizer_destroy(tok);
    peft_gguf_close(g);
    return 0;
}

int cmd_info(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    if (a.n_positional != 1) {
        usage(stderr);
        return 2;
    }
    const char *path = a.positional[0];
    bool json = cli_has(&a, "json");
    peft_ctx *ctx = cli_ctx(&a);
    if (!ctx) return 1;
    peft_model_format fmt;
    peft_status st = peft_model_detect_format(ctx, path, &fmt);
    if (st == PEFT_ERR_FORMAT) { /* not a model: maybe a tokenizer file or directory */
        peft_tokenizer *tok = NULL;
        if (peft_tokenizer_load(ctx, path, &tok) == PEFT_OK) {
            if (json)
                printf("{\"file\": \"%s\", \"format\": \"tokenizer\", \"tokenizer\": \"%s\", \"n_vocab\": %zu}\n", path,
                       peft_tokenizer_name(tok), peft_tokenizer_n_vocab(tok));
            else
                printf("file          %s\nformat        tokenizer only (no model)\ntokenizer     %s, %zu tokens\n", path,
                       peft_tokenizer_name(tok), peft_tokenizer_n_vocab(tok));
            peft_tokenizer_destroy(tok);
            peft_ctx_destroy(ctx);
            return 0;
        }
        peft_model_detect_format(ctx, path, &fmt); /* restore the model error message */
    }
    if (st != PEFT_OK) {
        cli_error(ctx, "cannot read the model", st);
        peft_ctx_destroy(ctx);
        return 1;
    }
    if (fmt == PEFT_FORMAT_GGUF) {
        peft_gguf *g = NULL;
        if (peft_gguf_open(ctx, path, &g) == PEFT_OK && peft_gguf_n_tensors(g) == 0) {
            peft_gguf_close(g);
            int rc = info_vocab_gguf(ctx, path, json);
            peft_ctx_destroy(ctx);
            return rc;
        }
        peft_gguf_close(g);
    }
    peft_model *m = cli_load_model(ctx, path, 1);
    if (!m) {
        peft_ctx_destroy(ctx);
        return 1;
    }
    const peft_model_config *c = peft_model_get_config(m);
    size_t by_dtype[PEFT_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < peft_model_n_params(m); i++) {
        peft_tensor *t;
        peft_model_param(m, i, NULL, &t);
        by_dtype[peft_tensor_dtype(t)] += (size_t)peft_tensor_numel(t);
    }
    peft_tokenizer *tok = peft_model_tokenizer(m);
    if (json) {
        printf("{\"file\": \"%s\", \"format\": \"%s\", \"architecture\": \"%s\", \"vocab_size\": %lld, \"n_ctx\": %lld, "
               "\"d_model\": %lld, \"n_layer\": %lld, \"n_head\": %lld, \"n_kv_head\": %lld, \"d_ff\": %lld, "
               "\"norm_eps\": %g, \"rope_theta\": %g, \"tie_embeddings\": %s, \"parameters\": %lld, \"tensors\": %zu, "
               "\"dtypes\": {",
               path, peft_model_format_name(fmt), peft_arch_name(c->arch), (long long)c->vocab_size, (long long)c->n_ctx,
               (long long)c->d_model, (long long)c->n_layer, (long long)c->n_head, (long long)c->n_kv_head,
               (long long)c->d_ff, c->norm_eps, c->rope_theta, c->tie_embeddings ? "true" : "false",
               (long long)peft_model_numel(m), peft_model_n_params(m));
        bool first = true;
        for (int d = 0; d < PEFT_DTYPE_COUNT; d++)
            if (by_dtype[d]) {
                printf("%s\"%s\": %zu", first ? "" : ", ", peft_dtype_name((peft_dtype)d), by_dtype[d]);
                first = false;
            }
        printf("}, \"tokenizer\": \"%s\"}\n", tok ? peft_tokenizer_name(tok) : "none");
    } else {
        printf("file          %s\nformat        %s\narchitecture  %s\n", path, peft_model_format_name(fmt),
               peft_arch_name(c->arch));
        printf("layers        %lld\nd_model       %lld\nheads         %lld (kv %lld)\nd_ff          %lld\n",
               (long long)c->n_layer, (long long)c->d_model, (long long)c->n_head, (long long)c->n_kv_head,
               (long long)c->d_ff);
        printf("vocab         %lld\ncontext       %lld\nnorm eps      %g\n", (long long)c->vocab_size, (long long)c->n_ctx,
               c->norm_eps);
        if (c->arch == PEFT_ARCH_LLAMA) printf("rope theta    %g\n", c->rope_theta);
        printf("lm head       %s\n", c->tie_embeddings ? "tied to the token embedding" : "separate");
        printf("parameters    %lld in %zu tensors\n", (long long)peft_model_numel(m), peft_model_n_params(m));
        for (int d = 0; d < PEFT_DTYPE_COUNT; d++)
            if (by_dtype[d]) printf("  %-5s       %zu\n", peft_dtype_name((peft_dtype)d), by_dtype[d]);
        printf("tokenizer     %s\n", tok ? peft_tokenizer_name(tok) : "none (use --tokenizer with generate/tokenize)");
    }
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
    return 0;
}
