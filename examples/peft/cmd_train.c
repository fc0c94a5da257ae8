/* peft train: fine-tune a model on a text file (LM) or a TSV file (classification)
 * with any strategy; writes the trained tensors, metrics.jsonl, summary.json and
 * a checkpoint to --out; --resume continues a run bit for bit. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "plot.h"

static const char *const flags[] = {"help", "lora-rslora", "quiet", "save-model", CLI_DATA_FLAGS, NULL};
static const char *const valued[] = {"model", "data", "task", "strategy", "lora-r", "lora-alpha", "lora-targets",
                                     "lora-dropout", "ia3-targets", "ia3-feedforward", "dense-depth", "dense-width",
                                     "dense-dropout", "dense-activation", "top-blocks", "feature-depth", "pooling", "lr", "epochs", "steps",
                                     "batch", "seq", "seed", "val-split", "patience", "out", "resume", "reference",
                                     "tokenizer", "optimizer", "schedule", "warmup", "grad-accum", "clip",
                                     "weight-decay", "eval-every", "threads", "sample", "sample-tokens", CLI_DATA_VALUED, NULL};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: peft train --model MODEL --data FILE --out DIR [options]\n\n"
            "data and task:\n"
            "  --data FILE           text (lm; blank-line or '%%'-line documents), JSONL ({\"text\"},\n"
            "                        {\"prompt\", \"completion\"}: loss on the completion only, {\"text\", \"label\"})\n"
            "                        or TSV 'label<TAB>text' (classify); gzip-compressed files too\n"
            "  --task lm|classify    default: from the data (labels -> classify)\n"
            "  --seq N               tokens per training sequence (lm; max length for classify) [128]\n"
            "  --val-split F         fraction held out for validation [0.1]\n"
            "  --reference FILE      text whose loss before/after measures forgetting\n"
            "  --pooling last|mean   classification pooling [last]\n"
            "  --tokenizer PATH      when the model file has none ('bytes': byte tokens)\n"
            CLI_DATA_USAGE
            "strategy:\n"
            "  --strategy NAME       feature | dense | full | lora | ia3 | bitfit [lora]\n"
            "  --lora-r R --lora-alpha A --lora-dropout P --lora-targets LIST --lora-rslora\n"
            "  --ia3-targets LIST --ia3-feedforward LIST\n"
            "  --dense-depth N --dense-width W --dense-dropout P --dense-activation gelu|relu|silu\n"
            "  --top-blocks N        full: train only the top N blocks\n"
            "  --feature-depth N     feature: 0 = logistic regression, N = MLP\n"
            "optimisation:\n"
            "  --optimizer adamw|sgd [adamw]   --lr LR [1e-3]   --weight-decay WD [0]\n"
            "  --schedule constant|cosine|linear [constant]   --warmup N [0]\n"
            "  --epochs N [1] | --steps N      --batch B [8]   --grad-accum N [1]   --clip X [1]\n"
            "  --eval-every N        evaluate every N steps [each epoch]\n"
            "  --patience N          early stopping after N evaluations without improvement [off]\n"
            "  --seed S [1]          --threads N\n"
            "output:\n"
            "  --out DIR             adapter.safetensors, metrics.jsonl, summary.json, checkpoint.bin, loss.svg\n"
            "  --resume DIR          continue the run saved in DIR (same options)\n"
            "  --save-model          also write DIR/model/ (config.json + model.safetensors): the trained\n"
            "                        model, with LoRA / IA3 merged (full, bitfit, lora, ia3)\n"
            "  --sample TEXT         generate from TEXT before and after training (LM; also in samples.txt)\n"
            "  --sample-tokens N     tokens to generate for --sample [48]\n"
            "  --quiet               no progress output\n"
            "  --help                this text\n");
}

typedef struct run {
    FILE *metrics;
    bool tty, quiet;
    bool classify;
    double t_last;
} run;

static int on_progress(const peft_progress *p, void *user)
{
    run *r = user;
    if (!isnan(p->val_loss)) {
        if (r->classify)
            fprintf(r->metrics, "{\"step\": %lld, \"val_loss\": %.6f, \"val_acc\": %.6f}\n", (long long)p->step, p->val_loss,
                    p->val_acc);
        else
            fprintf(r->metrics, "{\"step\": %lld, \"val_loss\": %.6f, \"val_ppl\": %.6f}\n", (long long)p->step, p->val_loss,
                    p->val_ppl);
        if (!r->quiet) {
            if (r->tty) fprintf(stderr, "\n");
            fprintf(stderr, "step %lld  val_loss %.4f  %s %.4f\n", (long long)p->step, p->val_loss,
                    r->classify ? "val_acc" : "val_ppl", r->classify ? p->val_acc : p->val_ppl);
        }
    } else {
        fprintf(r->metrics, "{\"step\": %lld, \"epoch\": %d, \"train_loss\": %.6f, \"lr\": %.6g, \"tokens_per_s\": %.1f}\n",
                (long long)p->step, p->epoch, p->loss, p->lr, p->tokens_per_s);
        if (!r->quiet) {
            double eta = p->step > 0 ? p->elapsed_s / (double)p->step * (double)(p->total_steps - p->step) : 0;
            if (r->tty)
                fprintf(stderr, "\r[%lld/%lld] loss %.4f  lr %.2e  %.0f tok/s  ETA %.0fs   ", (long long)p->step,
                        (long long)p->total_steps, p->loss, p->lr, p->tokens_per_s, eta);
            else
                fprintf(stderr, "step %lld/%lld  epoch %d  loss %.4f  lr %.3g  %.0f tok/s\n", (long long)p->step,
                        (long long)p->total_steps, p->epoch, p->loss, p->lr, p->tokens_per_s);
        }
    }
    fflush(r->metrics);
    return 0;
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* kB on Linux */
}

static const char *from_args(void *a, const char *name) { return cli_get(a, name); }

/* A sample continuation of `prompt` (temperature 0.8, top-k 40, fixed seed), malloc'd. */
static char *sample_text(peft_ctx *ctx, peft_model *m, peft_tokenizer *tok, const char *prompt, int n_new)
{
    size_t need = 0, n = 0, len = 0, n_out = 0;
    int bos = peft_tokenizer_bos(tok) >= 0;
    peft_tokenizer_encode(tok, prompt, strlen(prompt), bos, 0, NULL, 0, &need);
    int32_t *ids = malloc((need + (size_t)n_new + 1) * sizeof *ids);
    char *text = NULL;
    if (!ids || peft_tokenizer_encode(tok, prompt, strlen(prompt), bos, 0, ids, need + 1, &n) != PEFT_OK || n == 0) goto done;
    peft_sample_opts so = peft_sample_opts_default();
    so.max_new = n_new;
    so.temperature = 0.8f;
    so.top_k = 40;
    so.seed = 7;
    if (peft_model_generate(m, ids, n, &so, ids + n, (size_t)n_new, &n_out) != PEFT_OK) goto done;
    peft_tokenizer_decode(tok, ids, n + n_out, NULL, 0, &len);
    text = malloc(len + 1);
    if (text && peft_tokenizer_decode(tok, ids, n + n_out, text, len + 1, &len) != PEFT_OK) {
        free(text);
        text = NULL;
    }
done:
    (void)ctx;
    free(ids);
    return text;
}

static void one_line(char *s)
{
    for (char *p = s; p && *p; p++)
        if (*p == '\n' || *p == '\t') *p = ' ';
}

static bool write_summary(const char *dir, const char *strategy, const peft_adapter *ad, const peft_model *m,
                          const peft_fit_result *r, bool has_ref, double seconds, const char *options)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "{\n  \"strategy\": \"%s\",\n  \"trainable_params\": %lld,\n  \"total_params\": %lld,\n", strategy,
            (long long)peft_adapter_trainable_numel(ad), (long long)peft_model_numel(m));
#define NUM(name, x)                                                   \
    if (isnan(x)) fprintf(f, "  \"" name "\": null,\n");            \
    else fprintf(f, "  \"" name "\": %.6f,\n", (double)(x));
    NUM("best_val_loss", r->best_val_loss)
    NUM("val_loss_before", r->val_loss_before)
    NUM("val_loss_after", r->val_loss_after)
    if (has_ref) {
        NUM("ref_loss_before", r->ref_loss_before)
        NUM("ref_loss_after", r->ref_loss_after)
        NUM("forgetting", r->forgetting)
    }
#undef NUM
    fprintf(f, "  \"steps\": %lld,\n  \"epochs\": %d,\n  \"stopped_early\": %s,\n  \"seconds\": %.3f,\n",
            (long long)r->steps, r->epochs, r->stopped_early ? "true" : "false", seconds);
    fprintf(f, "  \"options\": %s,\n", options);
    fprintf(f, "  \"peak_rss_mib\": %.1f\n}\n", peak_rss_mib());
    return fclose(f) == 0;
}

int cmd_train(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    const char *model_path = cli_get(&a, "model"), *data = cli_get(&a, "data");
    const char *out_dir = cli_get(&a, "out"), *resume = cli_get(&a, "resume");
    if (!out_dir && resume) out_dir = resume;
    if (!model_path || !data || !out_dir || a.n_positional) {
        usage(stderr);
        return 2;
    }
    const char *task_s = cli_get(&a, "task");
    const char *strategy = cli_get(&a, "strategy") ? cli_get(&a, "strategy") : "lora";
    if (task_s && strcmp(task_s, "classify") && strcmp(task_s, "lm")) {
        fprintf(stderr, "peft: --task must be lm or classify\n");
        return 2;
    }
    int want_classify = task_s ? !strcmp(task_s, "classify") : -1;
    bool classify = false;
    long long seq, epochs, steps, batch, seed, patience, warmup, accum, eval_every;
    double lr, val_split, clip, wd;
    if (!cli_int(&a, "seq", 128, &seq) || !cli_int(&a, "epochs", 1, &epochs) || !cli_int(&a, "steps", 0, &steps) ||
        !cli_int(&a, "batch", 8, &batch) || !cli_int(&a, "seed", 1, &seed) || !cli_int(&a, "patience", 0, &patience) ||
        !cli_int(&a, "warmup", 0, &warmup) || !cli_int(&a, "grad-accum", 1, &accum) ||
        !cli_int(&a, "eval-every", 0, &eval_every) || !cli_float(&a, "lr", 1e-3, &lr) ||
        !cli_float(&a, "val-split", 0.1, &val_split) || !cli_float(&a, "clip", 1.0, &clip) ||
        !cli_float(&a, "weight-decay", 0.0, &wd))
        return 2;
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "peft: cannot create %s: %s\n", out_dir, strerror(errno));
        return 1;
    }
    peft_ctx *ctx = cli_ctx(&a);
    if (!ctx) return 1;
    int rc = 1;
    peft_model *m = cli_load_model(ctx, model_path, 0);
    peft_tokenizer *tok = NULL;
    bool owned = false;
    peft_dataset *all = NULL, *train = NULL, *val = NULL, *ref = NULL;
    peft_adapter *ad = NULL;
    peft_trainer *tr = NULL;
    run r = {NULL, isatty(2) != 0, cli_has(&a, "quiet"), false, 0};
    char *sample_before = NULL;
    peft_status st;
    if (!m || !(tok = cli_tokenizer(ctx, &a, m, &owned))) goto done;
    peft_dataset_opts dopts;
    if (!cli_dataset_opts(&a, seq, want_classify, &dopts)) {
        rc = 2;
        goto done;
    }
    st = peft_dataset_load(ctx, tok, data, &dopts, &all);
    if (st == PEFT_OK) {
        classify = peft_dataset_n_classes(all) > 0;
        task_s = classify ? "classify" : "lm";
        r.classify = classify;
        if (peft_dataset_n_skipped(all) && !r.quiet)
            fprintf(stderr, "peft: skipped %zu bad or over-long lines of %s\n", peft_dataset_n_skipped(all), data);
    }
    if (st == PEFT_OK) st = peft_dataset_split(all, val_split, (uint64_t)seed, &train, &val);
    if (st == PEFT_OK && cli_has(&a, "reference")) {
        dopts.task = PEFT_DATA_TASK_LM;
        dopts.format = PEFT_DATA_AUTO;
        st = peft_dataset_load(ctx, tok, cli_get(&a, "reference"), &dopts, &ref);
    }
    if (st != PEFT_OK) {
        cli_error(ctx, "cannot prepare the data", st);
        goto done;
    }
    peft_task task = peft_task_default(classify ? PEFT_TASK_CLASSIFY : PEFT_TASK_LM);
    if (classify) {
        task.n_classes = peft_dataset_n_classes(all);
        const char *pool = cli_get(&a, "pooling");
        task.pooling = pool && !strcmp(pool, "mean") ? PEFT_POOL_MEAN : PEFT_POOL_LAST;
    }
    cli_strategy_buf ob;
    const void *sopts;
    if (!cli_strategy_opts(strategy, from_args, &a, &ob, &sopts)) {
        rc = 2;
        goto done;
    }
    if ((st = peft_adapter_attach(m, strategy, &task, sopts, &ad)) != PEFT_OK) {
        cli_error(ctx, "cannot attach the strategy", st);
        goto done;
    }
    peft_train_opts to = peft_train_opts_default();
    const char *opt = cli_get(&a, "optimizer");
    if (opt && strcmp(opt, "adamw") && strcmp(opt, "sgd")) {
        fprintf(stderr, "peft: --optimizer must be adamw or sgd\n");
        rc = 2;
        goto done;
    }
    to.optimizer = opt && !strcmp(opt, "sgd") ? PEFT_OPT_SGD : PEFT_OPT_ADAMW;
    to.lr = (float)lr;
    to.weight_decay = (float)wd;
    to.max_grad_norm = (float)clip;
    to.batch_size = (int)batch;
    to.grad_accum = (int)accum;
    to.epochs = (int)epochs;
    to.max_steps = steps;
    to.eval_every = eval_every;
    to.patience = (int)patience;
    to.seed = (uint64_t)seed;
    const char *sched = cli_get(&a, "schedule");
    to.schedule = peft_schedule_default(!sched || !strcmp(sched, "constant") ? PEFT_SCHED_CONSTANT
                                        : !strcmp(sched, "cosine")           ? PEFT_SCHED_COSINE
                                                                             : PEFT_SCHED_LINEAR);
    to.schedule.warmup_steps = warmup;
    to.progress = on_progress;
    to.progress_user = &r;
    if ((st = peft_trainer_create(ad, &to, &tr)) != PEFT_OK) {
        cli_error(ctx, "cannot set up training", st);
        goto done;
    }
    if (ref) peft_trainer_set_reference(tr, ref);
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoint.bin", resume ? resume : out_dir);
    if (resume && (st = peft_trainer_load_checkpoint(tr, path)) != PEFT_OK) {
        cli_error(ctx, "cannot resume", st);
        goto done;
    }
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    r.metrics = fopen(path, resume ? "a" : "w");
    if (!r.metrics) {
        fprintf(stderr, "peft: cannot write %s: %s\n", path, strerror(errno));
        goto done;
    }
    if (!r.quiet)
        fprintf(stderr, "training %s (%s): %lld trainable of %lld parameters, %zu train / %zu val examples\n", strategy,
                task_s, (long long)peft_adapter_trainable_numel(ad), (long long)peft_model_numel(m),
                peft_dataset_size(train), peft_dataset_size(val));
    long long sample_tokens;
    if (!cli_int(&a, "sample-tokens", 48, &sample_tokens)) {
        rc = 2;
        goto done;
    }
    if (cli_has(&a, "sample") && !classify) sample_before = sample_text(ctx, m, tok, cli_get(&a, "sample"), (int)sample_tokens);
    peft_fit_result res;
    st = peft_trainer_fit(tr, train, val, &res);
    if (r.tty && !r.quiet) fprintf(stderr, "\n");
    if (st != PEFT_OK) {
        cli_error(ctx, "training failed", st);
        goto done;
    }
    snprintf(path, sizeof path, "%s/checkpoint.bin", out_dir);
    if ((st = peft_trainer_save_checkpoint(tr, path)) != PEFT_OK) {
        cli_error(ctx, "cannot write the checkpoint", st);
        goto done;
    }
    snprintf(path, sizeof path, "%s/adapter.safetensors", out_dir);
    if ((st = peft_adapter_save(ad, path)) != PEFT_OK) {
        cli_error(ctx, "cannot save the trained tensors", st);
        goto done;
    }
    if (cli_has(&a, "save-model")) {
        bool merge = !strcmp(strategy, "lora") || !strcmp(strategy, "ia3");
        if (!merge && strcmp(strategy, "full") && strcmp(strategy, "bitfit")) {
            fprintf(stderr, "peft: --save-model: a %s adapter is not part of the base architecture; use adapter.safetensors\n",
                    strategy);
            goto done;
        }
        snprintf(path, sizeof path, "%s/model", out_dir);
        st = merge ? peft_adapter_merge(ad) : PEFT_OK;
        if (st == PEFT_OK) st = peft_model_save(m, path);
        if (st == PEFT_OK && merge) st = peft_adapter_unmerge(ad);
        if (st != PEFT_OK) {
            cli_error(ctx, "cannot save the model", st);
            goto done;
        }
    }
    /* the options as the train flags spell them, so peft eval --adapter can re-attach */
    char options[1024];
    snprintf(options, sizeof options, "{\"task\": \"%s\", \"pooling\": \"%s\", \"seq\": %lld", task_s,
             task.pooling == PEFT_POOL_MEAN ? "mean" : "last", seq);
    size_t ol = strlen(options);
    if (!strcmp(strategy, "lora"))
        snprintf(options + ol, sizeof options - ol,
                 ", \"lora-r\": %d, \"lora-alpha\": %g, \"lora-dropout\": %g, \"lora-rslora\": %s%s%s%s}", ob.lora.r,
                 ob.lora.alpha, ob.lora.dropout, ob.lora.use_rslora ? "true" : "false",
                 ob.lora.targets ? ", \"lora-targets\": \"" : "", ob.lora.targets ? ob.lora.targets : "",
                 ob.lora.targets ? "\"" : "");
    else if (!strcmp(strategy, "ia3"))
        snprintf(options + ol, sizeof options - ol, "%s%s%s%s%s%s}", ob.ia3.targets ? ", \"ia3-targets\": \"" : "",
                 ob.ia3.targets ? ob.ia3.targets : "", ob.ia3.targets ? "\"" : "",
                 ob.ia3.feedforward ? ", \"ia3-feedforward\": \"" : "", ob.ia3.feedforward ? ob.ia3.feedforward : "",
                 ob.ia3.feedforward ? "\"" : "");
    else if (!strcmp(strategy, "dense"))
        snprintf(options + ol, sizeof options - ol, ", \"dense-depth\": %d, \"dense-width\": %lld, \"dense-dropout\": %g}",
                 ob.dense.depth, (long long)ob.dense.width, ob.dense.dropout);
    else if (!strcmp(strategy, "full"))
        snprintf(options + ol, sizeof options - ol, ", \"top-blocks\": %d}", ob.full.top_blocks);
    else if (!strcmp(strategy, "feature"))
        snprintf(options + ol, sizeof options - ol, ", \"feature-depth\": %d}", ob.feature.depth);
    else
        snprintf(options + ol, sizeof options - ol, "}");
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    if (r.metrics) {
        fclose(r.metrics);
        r.metrics = NULL;
    }
    char svg[4096];
    snprintf(svg, sizeof svg, "%s/loss.svg", out_dir);
    plot_metrics_svg(path, svg, strategy); /* the plot is a convenience: a failure was already reported */
    if (sample_before) {
        char *after = sample_text(ctx, m, tok, cli_get(&a, "sample"), (int)sample_tokens);
        snprintf(path, sizeof path, "%s/samples.txt", out_dir);
        FILE *sf = fopen(path, "w");
        if (sf) {
            fprintf(sf, "before: %s\nafter:  %s\n", sample_before, after ? after : "");
            fclose(sf);
        }
        one_line(sample_before);
        one_line(after);
        printf("sample before: %s\nsample after:  %s\n", sample_before, after ? after : "(failed)");
        free(after);
    }
    if (!write_summary(out_dir, strategy, ad, m, &res, ref != NULL, res.seconds, options)) {
        fprintf(stderr, "peft: cannot write %s/summary.json\n", out_dir);
        goto done;
    }
    if (!r.quiet)
        fprintf(stderr, "done: %lld steps, val loss %.4f -> %.4f (best %.4f), %.1fs; wrote %s\n", (long long)res.steps,
                res.val_loss_before, res.val_loss_after, res.best_val_loss, res.seconds, out_dir);
    rc = 0;
done:
    free(sample_before);
    if (r.metrics) fclose(r.metrics);
    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(train);
    peft_dataset_destroy(val);
    peft_dataset_destroy(all);
    peft_dataset_destroy(ref);
    if (owned) peft_tokenizer_destroy(tok);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
    return rc;
}
