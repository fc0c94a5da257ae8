#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPTS 32
static const char *opt_names[MAX_OPTS];
static const char *opt_values[MAX_OPTS];
static int n_opts;

static bool in_list(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (!strcmp(*list, s)) return true;
    return false;
}

bool cli_parse(cli_args *a, int argc, char **argv, const char *const *flags, const char *const *valued)
{
    memset(a, 0, sizeof *a);
    a->argc = argc;
    a->argv = argv;
    n_opts = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        /* "-x" means "--x" for the one-letter options a command declares ("-o") */
        bool is_short = s[0] == '-' && s[1] && s[1] != '-' && !s[2] && (in_list(flags, s + 1) || in_list(valued, s + 1));
        if (is_short || (s[0] == '-' && s[1] == '-' && s[2])) {
            const char *name = s + (is_short ? 1 : 2);
            if (n_opts == MAX_OPTS) {
                fprintf(stderr, "peft: too many options\n");
                return false;
            }
            if (in_list(flags, name)) {
                opt_names[n_opts] = name;
                opt_values[n_opts++] = "";
            } else if (in_list(valued, name)) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "peft: option %s needs a value\n", s);
                    return false;
                }
                opt_names[n_opts] = name;
                opt_values[n_opts++] = argv[++i];
            } else {
                fprintf(stderr, "peft: unknown option %s (see --help)\n", s);
                return false;
            }
        } else {
            if (a->n_positional == 4) {
                fprintf(stderr, "peft: too many arguments ('%s')\n", s);
                return false;
            }
            a->positional[a->n_positional++] = s;
        }
    }
    return true;
}

const char *cli_get(const cli_args *a, const char *name)
{
    (void)a;
    for (int i = n_opts - 1; i >= 0; i--)
        if (!strcmp(opt_names[i], name)) return opt_values[i];
    return NULL;
}

bool cli_has(const cli_args *a, const char *name) { return cli_get(a, name) != NULL; }

bool cli_int(const cli_args *a, const char *name, long long def, long long *out)
{
    const char *v = cli_get(a, name);
    if (!v) {
        *out = def;
        return true;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "peft: --%s expects an integer, got '%s'\n", name, v);
        return false;
    }
    *out = x;
    return true;
}

bool cli_float(const cli_args *a, const char *name, double def, double *out)
{
    const char *v = cli_get(a, name);
    if (!v) {
        *out = def;
        return true;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end) {
        fprintf(stderr, "peft: --%s expects a number, got '%s'\n", name, v);
        return false;
    }
    *out = x;
    return true;
}

void cli_error(peft_ctx *ctx, const char *what, peft_status st)
{
    const char *msg = ctx ? peft_ctx_errmsg(ctx) : "";
    fprintf(stderr, "peft: %s: %s%s%s\n", what, peft_status_str(st), *msg ? ": " : "", msg);
}

peft_ctx *cli_ctx(const cli_args *a)
{
    long long threads, seed;
    if (!cli_int(a, "threads", 0, &threads) || !cli_int(a, "seed", 1, &seed)) return NULL;
    peft_ctx_opts o = peft_ctx_opts_default();
    o.n_threads = (int)threads;
    o.seed = (uint64_t)seed;
    const char *gemm = cli_get(a, "gemm"); /* only commands that list --gemm accept it */
    if (gemm && strcmp(gemm, "auto") != 0 && strcmp(gemm, "openblas") != 0) {
        fprintf(stderr, "peft: --gemm must be auto or openblas, not '%s'\n", gemm);
        return NULL;
    }
    if (gemm && strcmp(gemm, "openblas") == 0) o.gemm = PEFT_GEMM_OPENBLAS;
    peft_ctx *ctx = NULL;
    peft_status st = peft_ctx_create(&o, &ctx);
    if (st != PEFT_OK) {
        cli_error(NULL, "cannot create a context", st);
        return NULL;
    }
    return ctx;
}

peft_model *cli_load_model(peft_ctx *ctx, const char *path, int keep_dtype)
{
    peft_model_load_opts o = peft_model_load_opts_default();
    o.keep_dtype = keep_dtype;
    peft_model *m = NULL;
    peft_status st = peft_model_load(ctx, path, &o, &m);
    if (st != PEFT_OK) {
        cli_error(ctx, "cannot load the model", st);
        return NULL;
    }
    return m;
}

peft_tokenizer *cli_tokenizer(peft_ctx *ctx, const cli_args *a, peft_model *m, bool *owned)
{
    *owned = false;
    const char *path = cli_get(a, "tokenizer");
    if (path) {
        peft_tokenizer *tok = NULL;
        peft_status st = !strcmp(path, "bytes") ? peft_tokenizer_create_bytes(ctx, &tok) : peft_tokenizer_load(ctx, path, &tok);
        if (st != PEFT_OK) {
            cli_error(ctx, "cannot load the tokenizer", st);
            return NULL;
        }
        *owned = true;
        return tok;
    }
    peft_tokenizer *tok = m ? peft_model_tokenizer(m) : NULL;
    if (!tok) fprintf(stderr, "peft: the model file has no tokenizer; give one with --tokenizer PATH\n");
    return tok;
}

bool cli_parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return false;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < INT32_MIN || x > INT32_MAX) {
            fprintf(stderr, "peft: bad token list '%s'\n", s);
            free(v);
            return false;
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return false;
            }
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = end;
        if (*p == ',') p++;
        else if (*p) {
            fprintf(stderr, "peft: bad token list '%s'\n", s);
            free(v);
            return false;
        }
    }
    if (k == 0) {
        fprintf(stderr, "peft: empty token list\n");
        free(v);
        return false;
    }
    *ids = v;
    *n = k;
    return true;
}

bool cli_dataset_opts(const cli_args *a, int64_t seq, int classify, peft_dataset_opts *o)
{
    *o = peft_dataset_opts_default();
    o->seq_len = seq;
    o->task = classify < 0 ? PEFT_DATA_TASK_AUTO : classify ? PEFT_DATA_TASK_CLASSIFY : PEFT_DATA_TASK_LM;
    if (cli_has(a, "add-bos")) o->add_bos = 1;
    if (cli_has(a, "no-bos")) o->add_bos = 0;
    if (cli_has(a, "add-eos")) o->add_eos = 1;
    o->skip_bad_lines = cli_has(a, "skip-bad-lines");
    static const char *const formats[] = {"auto", "text", "jsonl", "tsv"};
    static const char *const packs[] = {"across", "within"};
    static const char *const overflows[] = {"truncate", "refuse", "drop"};
    static const char *const utf8s[] = {"keep", "replace", "reject"};
    struct {
        const char *flag;
        const char *const *names;
        int n;
        int *dst;
    } choices[] = {{"format", formats, 4, (int *)&o->format},
                   {"pack", packs, 2, (int *)&o->pack},
                   {"overflow", overflows, 3, (int *)&o->overflow},
                   {"utf8", utf8s, 3, (int *)&o->utf8}};
    for (size_t c = 0; c < sizeof choices / sizeof *choices; c++) {
        const char *v = cli_get(a, choices[c].flag);
        if (!v) continue;
        int k = 0;
        while (k < choices[c].n && strcmp(v, choices[c].names[k])) k++;
        if (k == choices[c].n) {
            fprintf(stderr, "peft: --%s does not take '%s'\n", choices[c].flag, v);
            return false;
        }
        *choices[c].dst = k;
    }
    return true;
}

/* ---- strategy options, from any source of named values ---- */

static bool get_int(cli_getter get, void *s, const char *name, long long def, long long *out)
{
    const char *v = get(s, name);
    char *end;
    *out = def;
    if (!v) return true;
    errno = 0;
    *out = strtoll(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "peft: --%s expects an integer, got '%s'\n", name, v);
        return false;
    }
    return true;
}

static bool get_float(cli_getter get, void *s, const char *name, double def, float *out)
{
    const char *v = get(s, name);
    char *end;
    *out = (float)def;
    if (!v) return true;
    errno = 0;
    *out = (float)strtod(v, &end);
    if (errno || end == v || *end) {
        fprintf(stderr, "peft: --%s expects a number, got '%s'\n", name, v);
        return false;
    }
    return true;
}

bool cli_strategy_opts(const char *strategy, cli_getter get, void *s, cli_strategy_buf *buf, const void **opts)
{
    long long v;
    *opts = NULL;
    if (!strcmp(strategy, "lora")) {
        peft_lora_opts *o = &buf->lora;
        *o = peft_lora_opts_default();
        if (!get_int(get, s, "lora-r", o->r, &v) || !get_float(get, s, "lora-alpha", o->alpha, &o->alpha) ||
            !get_float(get, s, "lora-dropout", o->dropout, &o->dropout))
            return false;
        o->r = (int)v;
        o->use_rslora = get(s, "lora-rslora") != NULL;
        o->targets = get(s, "lora-targets");
    } else if (!strcmp(strategy, "ia3")) {
        peft_ia3_opts *o = &buf->ia3;
        *o = peft_ia3_opts_default();
        o->targets = get(s, "ia3-targets");
        o->feedforward = get(s, "ia3-feedforward");
    } else if (!strcmp(strategy, "dense")) {
        peft_dense_opts *o = &buf->dense;
        *o = peft_dense_opts_default();
        if (!get_int(get, s, "dense-depth", o->depth, &v)) return false;
        o->depth = (int)v;
        if (!get_int(get, s, "dense-width", o->width, &v) || !get_float(get, s, "dense-dropout", o->dropout, &o->dropout))
            return false;
        o->width = v;
        const char *act = get(s, "dense-activation");
        if (act) {
            if (!strcmp(act, "gelu")) o->activation = PEFT_ACT_GELU;
            else if (!strcmp(act, "relu")) o->activation = PEFT_ACT_RELU;
            else if (!strcmp(act, "silu")) o->activation = PEFT_ACT_SILU;
            else {
                fprintf(stderr, "peft: --dense-activation must be gelu, relu or silu\n");
                return false;
            }
        }
    } else if (!strcmp(strategy, "full")) {
        peft_full_opts *o = &buf->full;
        *o = peft_full_opts_default();
        if (!get_int(get, s, "top-blocks", o->top_blocks, &v)) return false;
        o->top_blocks = (int)v;
    } else if (!strcmp(strategy, "feature")) {
        peft_feature_opts *o = &buf->feature;
        *o = peft_feature_opts_default();
        if (!get_int(get, s, "feature-depth", o->depth, &v)) return false;
        o->depth = (int)v;
    } else {
        return true; /* bitfit: no options */
    }
    *opts = buf;
    return true;
}
