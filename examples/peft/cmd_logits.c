/* peft logits MODEL --tokens 1,2,3 [--all-positions] [--json] */
#include <stdlib.h>

#include "cli.h"

static const char *const flags[] = {"json", "all-positions", "help", NULL};
static const char *const valued[] = {"tokens", "threads", NULL};

static void usage(FILE *f)
{
    fprintf(f, "usage: peft logits MODEL --tokens 1,2,3 [--all-positions] [--json]\n\n"
               "Prints the logits of the last position (or of every position).\n"
               "  --tokens LIST     comma-separated token ids\n"
               "  --all-positions   one row per input position\n"
               "  --json            {\"n_vocab\": V, \"logits\": [[...], ...]}\n"
               "  --threads N       threads (default: all cores)\n"
               "  --help            this text\n");
}

int cmd_logits(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    if (a.n_positional != 1 || !cli_has(&a, "tokens")) {
        usage(stderr);
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (!cli_parse_ids(cli_get(&a, "tokens"), &ids, &n)) return 2;
    peft_ctx *ctx = cli_ctx(&a);
    peft_model *m = ctx ? cli_load_model(ctx, a.positional[0], 0) : NULL;
    int rc = 1;
    if (m) {
        int64_t shape[2] = {1, (int64_t)n};
        peft_tensor *t = NULL, *logits = NULL;
        peft_set_grad_enabled(ctx, 0);
        peft_status st = peft_tensor_create(ctx, PEFT_DTYPE_I32, 2, shape, &t);
        if (st == PEFT_OK) st = peft_tensor_copy_in(t, ids, PEFT_DTYPE_I32, n);
        if (st == PEFT_OK) st = peft_model_forward(m, t, &logits, NULL);
        if (st != PEFT_OK) {
            cli_error(ctx, "forward failed", st);
        } else {
            const int64_t V = peft_tensor_dim(logits, -1);
            const float *lg = peft_tensor_data(logits);
            size_t first = cli_has(&a, "all-positions") ? 0 : n - 1;
            bool json = cli_has(&a, "json");
            if (json) printf("{\"n_vocab\": %lld, \"logits\": [", (long long)V);
            for (size_t p = first; p < n; p++) {
                const float *row = lg + p * V;
                if (json) {
                    printf("%s[", p > first ? ", " : "");
                    for (int64_t v = 0; v < V; v++) printf("%s%.9g", v ? ", " : "", row[v]);
                    printf("]");
                } else {
                    printf("position %zu:", p);
                    for (int64_t v = 0; v < V; v++) printf(" %.6g", row[v]);
                    printf("\n");
                }
            }
            if (json) printf("]}\n");
            rc = 0;
        }
        peft_graph_release(ctx);
        peft_tensor_destroy(t);
        peft_model_destroy(m);
    }
    free(ids);
    peft_ctx_destroy(ctx);
    return rc;
}
