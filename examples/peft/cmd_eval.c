/* peft eval: loss, perplexity and accuracy of a model (optionally with the
 * tensors a `peft train` run saved) on a text file (LM) or a TSV file
 * (classification).
 *
 * With --adapter DIR the strategy is re-attached as the run had it: the
 * strategy name comes from DIR/summary.json, its options from the object
 * "options" of that file when there is one (keys named like the train flags:
 * {"lora-r": 4, "lora-targets": "q_proj,v_proj", "lora-rslora": true, ...}),
 * and from the same flags on this command line, which win. Whatever neither
 * gives keeps the strategy's default — today's summary.json has no "options",
 * so a run trained with non-default shapes (--lora-r, --dense-width, ...)
 * needs those flags repeated here; peft_adapter_load then checks every name
 * and shape and says which one disagrees. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char *const flags[] = {"help", "json", "lora-rslora", CLI_DATA_FLAGS, NULL};
static const char *const valued[] = {"data", "task", "adapter", "strategy", "seq", "batch", "pooling", "tokenizer",
                                     "threads", "lora-r", "lora-alpha", "lora-dropout", "lora-targets", "ia3-targets",
                                     "ia3-feedforward", "dense-depth", "dense-width", "dense-dropout",
                                     "dense-activation", "top-blocks", "feature-depth", CLI_DATA_VALUED, NULL};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: peft eval MODEL --data FILE [--task lm|classify] [--adapter DIR] [options]\n\n"
            "Loss, perplexity (lm) and accuracy of MODEL on every example of FILE.\n"
            "  --data FILE           text, JSONL or TSV (as for peft train; gzip too)\n"
            "  --task lm|classify    default: the run's task from summary.json, else lm\n"
            "  --adapter DIR         a 'peft train --out' directory: re-attach its strategy\n"
            "                        (summary.json) and load DIR/adapter.safetensors; or a\n"
            "                        .safetensors file, with --strategy\n"
            "  --strategy NAME       the adapter's strategy when summary.json does not say\n"
            "  --seq N               tokens per sequence (lm; max length for classify) [128]\n"
            "  --batch B             examples per forward pass [8]\n"
            "  --pooling last|mean   classification pooling, as in training [last]\n"
            "  --tokenizer PATH      when the model file has none ('bytes': byte tokens)\n"
            CLI_DATA_USAGE
            "  --threads N           threads (default: all cores)\n"
            "  --json                print one JSON object\n"
            "  --help                this text\n"
            "strategy options (as given to train; needed when they differ from the defaults\n"
            "and summary.json has no \"options\" object):\n"
            "  --lora-r R --lora-alpha A --lora-dropout P --lora-targets LIST --lora-rslora\n"
            "  --ia3-targets LIST --ia3-feedforward LIST\n"
            "  --dense-depth N --dense-width W --dense-dropout P --dense-activation gelu|relu|silu\n"
            "  --top-blocks N --feature-depth N\n");
}

/* An option from the command line, else from summary.json's "options"
 * object, else from summary.json itself ("task", "pooling", "seq" if the run
 * recorded them there). Booleans: "" when true, NULL when false or absent. */
typedef struct opt_source {
    const cli_args *a;
    const cJSON *options; /* may be NULL */
    const cJSON *summary; /* may be NULL */
    char buf[64];
} opt_source;

static const char *opt_get(void *src, const char *name)
{
    opt_source *s = src;
    const char *v = cli_get(s->a, name);
    if (v) return v;
    const cJSON *j = s->options ? cJSON_GetObjectItemCaseSensitive(s->options, name) : NULL;
    if (!j && s->summary) j = cJSON_GetObjectItemCaseSensitive(s->summary, name);
    if (cJSON_IsString(j)) return j->valuestring;
    if (cJSON_IsNumber(j)) {
        snprintf(s->buf, sizeof s->buf, "%.17g", j->valuedouble);
        return s->buf;
    }
    if (cJSON_IsTrue(j)) return "";
    return NULL;
}


/* DIR/summary.json, parsed; NULL (with a message) when it cannot be read. */
static cJSON *read_summary(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "peft: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    if (!j || !cJSON_IsObject(j)) fprintf(stderr, "peft: %s is not a JSON object\n", path);
    if (j && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        j = NULL;
    }
    return j;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void print_result(const cli_args *a, const char *model, const char *data, const char *task, const char *strategy,
                         const char *adapter, size_t n_examples, const peft_metrics *m, bool classify)
{
    if (cli_has(a, "json")) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", model);
        cJSON_AddStringToObject(o, "data", data);
        cJSON_AddStringToObject(o, "task", task);
        if (adapter) {
            cJSON_AddStringToObject(o, "strategy", strategy);
            cJSON_AddStringToObject(o, "adapter", adapter);
        } else {
            cJSON_AddNullToObject(o, "strategy");
            cJSON_AddNullToObject(o, "adapter");
        }
        cJSON_AddNumberToObject(o, "examples", (double)n_examples);
        cJSON_AddNumberToObject(o, "predictions", (double)m->count);
        cJSON_AddNumberToObject(o, "loss", m->loss);
        if (classify) cJSON_AddNullToObject(o, "ppl");
        else cJSON_AddNumberToObject(o, "ppl", m->ppl);
        cJSON_AddNumberToObject(o, "acc", m->acc);
        char *s = cJSON_PrintUnformatted(o);
        if (s) puts(s);
        free(s);
        cJSON_Delete(o);
        return;
    }
    printf("%s%s%s on %s (%s): %zu examples, %lld predictions: loss %.4f", model, adapter ? " + " : "",
           adapter ? strategy : "", data, task, n_examples, (long long)m->count, m->loss);
    if (!classify) printf("  ppl %.3f", m->ppl);
    printf("  acc %.4f\n", m->acc);
}

int cmd_eval(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    const char *data = cli_get(&a, "data"), *adapter = cli_get(&a, "adapter");
    if (a.n_positional != 1 || !data) {
        usage(stderr);
        return 2;
    }
    const char *model_path = a.positional[0];

    /* the adapter: a run directory (summary.json + adapter.safetensors) or a file */
    cJSON *summary = NULL;
    const char *strategy = cli_get(&a, "strategy");
    char tensors[4096] = "";
    if (adapter) {
        struct stat sb;
        if (stat(adapter, &sb) != 0) {
            fprintf(stderr, "peft: cannot read %s: %s\n", adapter, strerror(errno));
            return 1;
        }
        if (S_ISDIR(sb.st_mode)) {
            if (!(summary = read_summary(adapter))) return 1;
            if (!strategy) strategy = json_str(summary, "strategy");
            snprintf(tensors, sizeof tensors, "%s/adapter.safetensors", adapter);
        } else {
            snprintf(tensors, sizeof tensors, "%s", adapter);
        }
        if (!strategy) {
            fprintf(stderr, "peft: which strategy made %s? summary.json does not say: give --strategy\n", adapter);
            cJSON_Delete(summary);
            return 2;
        }
    } else if (cli_has(&a, "strategy")) {
        fprintf(stderr, "peft: --strategy needs --adapter (the trained tensors)\n");
        return 2;
    }
    const cJSON *sopts = summary ? cJSON_GetObjectItemCaseSensitive(summary, "options") : NULL;
    opt_source src = {&a, cJSON_IsObject(sopts) ? sopts : NULL, summary, {0}};

    int rc = 2;
    const char *task_s = opt_get(&src, "task") ? opt_get(&src, "task") : "lm";
    bool classify = !strcmp(task_s, "classify");
    long long seq, batch;
    if (!classify && strcmp(task_s, "lm")) {
        fprintf(stderr, "peft: --task must be lm or classify\n");
        goto out;
    }
    if (classify && !adapter) {
        fprintf(stderr, "peft: --task classify needs --adapter: the classifier head is trained\n");
        goto out;
    }
    const char *seq_s = opt_get(&src, "seq");
    char *seq_end = NULL;
    seq = seq_s ? strtoll(seq_s, &seq_end, 10) : 128;
    if ((seq_s && (seq_end == seq_s || *seq_end)) || !cli_int(&a, "batch", 8, &batch)) {
        if (seq_s && (seq_end == seq_s || *seq_end)) fprintf(stderr, "peft: --seq expects an integer, got '%s'\n", seq_s);
        goto out;
    }
    const char *pool = opt_get(&src, "pooling");
    if (pool && strcmp(pool, "last") && strcmp(pool, "mean")) {
        fprintf(stderr, "peft: --pooling must be last or mean\n");
        goto out;
    }
    cli_strategy_buf ob;
    const void *so = NULL;
    if (adapter && !cli_strategy_opts(strategy, opt_get, &src, &ob, &so)) goto out;

    rc = 1;
    peft_ctx *ctx = cli_ctx(&a);
    if (!ctx) goto out;
    peft_model *m = cli_load_model(ctx, model_path, 0);
    peft_tokenizer *tok = NULL;
    bool owned = false;
    peft_dataset *ds = NULL;
    peft_adapter *ad = NULL;
    peft_trainer *tr = NULL;
    peft_status st;
    if (!m || !(tok = cli_tokenizer(ctx, &a, m, &owned))) goto done;
    peft_dataset_opts dopts;
    if (!cli_dataset_opts(&a, seq, classify, &dopts)) goto done;
    st = peft_dataset_load(ctx, tok, data, &dopts, &ds);
    if (st != PEFT_OK) {
        cli_error(ctx, "cannot read the data", st);
        goto done;
    }
    peft_task task = peft_task_default(classify ? PEFT_TASK_CLASSIFY : PEFT_TASK_LM);
    if (classify) {
        task.n_classes = peft_dataset_n_classes(ds);
        task.pooling = pool && !strcmp(pool, "mean") ? PEFT_POOL_MEAN : PEFT_POOL_LAST;
    }
    /* Without an adapter the base model is measured: the trainer needs an
     * adapter with something trainable, and "bitfit" only marks existing
     * biases / norm gains trainable (nothing is hooked or changed, and no
     * step is taken), so the numbers are the base model's. */
    if ((st = peft_adapter_attach(m, adapter ? strategy : "bitfit", &task, so, &ad)) != PEFT_OK) {
        cli_error(ctx, "cannot attach the strategy", st);
        goto done;
    }
    if (adapter && (st = peft_adapter_load(ad, tensors)) != PEFT_OK) {
        cli_error(ctx, "cannot load the adapter", st);
        goto done;
    }
    peft_train_opts to = peft_train_opts_default();
    to.batch_size = (int)batch;
    peft_metrics met;
    if ((st = peft_trainer_create(ad, &to, &tr)) != PEFT_OK || (st = peft_trainer_evaluate(tr, ds, &met)) != PEFT_OK) {
        cli_error(ctx, "evaluation failed", st);
        goto done;
    }
    print_result(&a, model_path, data, task_s, strategy, adapter, peft_dataset_size(ds), &met, classify);
    rc = 0;
done:
    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(ds);
    if (owned) peft_tokenizer_destroy(tok);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
out:
    cJSON_Delete(summary);
    return rc;
}
