/* peft tokenize MODEL|--tokenizer PATH TEXT: the ids and pieces. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *const flags[] = {"help", "bos", "eos", "json", NULL};
static const char *const valued[] = {"tokenizer", "threads", NULL};

static void usage(FILE *f)
{
    fprintf(f, "usage: peft tokenize (MODEL | --tokenizer PATH) TEXT [--bos] [--eos] [--json]\n\n"
               "Prints one line per token: id and piece.\n"
               "  --tokenizer PATH    a GGUF file, a llama2.c tokenizer.bin, or a directory with\n"
               "                      vocab.json + merges.txt (or encoder.json + vocab.bpe)\n"
               "  --bos               start with the BOS id (an error if the tokenizer has none)\n"
               "  --eos               end with the EOS id\n"
               "  --json              print {\"ids\": [...]}\n"
               "  --threads N         threads (default: all cores)\n"
               "  --help              this text\n");
}

int cmd_tokenize(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    bool has_tok = cli_has(&a, "tokenizer");
    if (a.n_positional != (has_tok ? 1 : 2)) {
        usage(stderr);
        return 2;
    }
    const char *text = a.positional[has_tok ? 0 : 1];
    peft_ctx *ctx = cli_ctx(&a);
    if (!ctx) return 1;
    peft_model *m = NULL;
    if (!has_tok && !(m = cli_load_model(ctx, a.positional[0], 1))) {
        peft_ctx_destroy(ctx);
        return 1;
    }
    bool owned;
    peft_tokenizer *tok = cli_tokenizer(ctx, &a, m, &owned);
    int rc = 1;
    if (tok) {
        size_t need = 0, n = 0;
        peft_tokenizer_encode(tok, text, strlen(text), cli_has(&a, "bos"), cli_has(&a, "eos"), NULL, 0, &need);
        int32_t *ids = malloc((need + 1) * sizeof *ids);
        peft_status st = peft_tokenizer_encode(tok, text, strlen(text), cli_has(&a, "bos"), cli_has(&a, "eos"), ids,
                                               need + 1, &n);
        if (st != PEFT_OK) {
            cli_error(ctx, "cannot tokenize", st);
        } else if (cli_has(&a, "json")) {
            printf("{\"ids\": [");
            for (size_t i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
            printf("]}\n");
            rc = 0;
        } else {
            for (size_t i = 0; i < n; i++) {
                const char *piece;
                size_t len;
                peft_tokenizer_piece(tok, ids[i], &piece, &len);
                printf("%6d  '", ids[i]);
                for (size_t k = 0; k < len; k++) {
                    unsigned char c = (unsigned char)piece[k];
                    if (c == '\n') printf("\\n");
                    else if (c == '\t') printf("\\t");
                    else if (c < 32) printf("\\x%02x", c);
                    else putchar(c);
                }
                printf("'\n");
            }
            rc = 0;
        }
        free(ids);
        if (owned) peft_tokenizer_destroy(tok);
    }
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
    return rc;
}
