#include "testutil.h"

#include <cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

peft_ctx *tu_ctx(int n_threads, uint64_t seed)
{
    peft_ctx_opts o = peft_ctx_opts_default();
    o.n_threads = n_threads;
    o.seed = seed;
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_OK);
    return ctx;
}

peft_tensor *tu_randn(peft_ctx *ctx, int ndim, const int64_t *shape, float scale, int requires_grad)
{
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_F32, ndim, shape, &t));
    TU_OK(ctx, peft_tensor_init_normal(t, 0.0f, scale));
    if (requires_grad) TU_OK(ctx, peft_tensor_set_requires_grad(t, 1));
    return t;
}

peft_tensor *tu_ids(peft_ctx *ctx, int ndim, const int64_t *shape, const int32_t *values)
{
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_I32, ndim, shape, &t));
    TU_OK(ctx, peft_tensor_copy_in(t, values, PEFT_DTYPE_I32, (size_t)peft_tensor_numel(t)));
    return t;
}

tu_gradcheck_opts tu_gradcheck_defaults(void)
{
    tu_gradcheck_opts o = {1e-2, 2e-3, 2e-4, 48};
    return o;
}

static double weighted_sum(const peft_tensor *out, const float *r)
{
    int64_t n = peft_tensor_numel(out);
    float *v = malloc((size_t)n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(peft_tensor_get_f32(out, v, (size_t)n), PEFT_OK);
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)v[i] * r[i];
    free(v);
    return s;
}

static double eval_loss(peft_ctx *ctx, tu_forward_fn f, peft_tensor **in, void *arg, const float *r)
{
    int prev = peft_set_grad_enabled(ctx, 0);
    peft_tensor *out = NULL;
    peft_status st = f(ctx, in, arg, &out);
    ck_assert_msg(st == PEFT_OK, "forward failed: %s", peft_ctx_errmsg(ctx));
    double l = weighted_sum(out, r);
    peft_graph_release(ctx);
    peft_set_grad_enabled(ctx, prev);
    return l;
}

void tu_gradcheck(peft_ctx *ctx, const char *label, tu_forward_fn f, peft_tensor **in, int n, void *arg,
                  const tu_gradcheck_opts *opts)
{
    tu_gradcheck_opts o = opts ? *opts : tu_gradcheck_defaults();
    for (int i = 0; i < n; i++) peft_tensor_zero_grad(in[i]);

    /* analytic: seed out's gradient with R and run backward */
    peft_tensor *out = NULL;
    ck_assert_msg(f(ctx, in, arg, &out) == PEFT_OK, "%s: forward failed: %s", label, peft_ctx_errmsg(ctx));
    int64_t n_out = peft_tensor_numel(out);
    float *r = malloc((size_t)n_out * sizeof *r);
    ck_assert_ptr_nonnull(r);
    uint64_t s = 12345;
    for (int64_t j = 0; j < n_out; j++) r[j] = (float)((double)(peft__splitmix64(&s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    ck_assert_msg(peft__backward_seeded(ctx, out, r) == PEFT_OK, "%s: backward failed: %s", label,
                  peft_ctx_errmsg(ctx));

    for (int i = 0; i < n; i++) {
        peft_tensor *x = in[i];
        if (!x || !peft_tensor_requires_grad(x)) continue;
        int64_t nx = peft_tensor_numel(x);
        float *xd = peft_tensor_data(x);
        const float *g = peft_tensor_grad(x);
        int checks = nx < o.max_checks ? (int)nx : o.max_checks;
        double worst = 0.0;
        int64_t worst_j = -1;
        double worst_a = 0, worst_n = 0;
        for (int c = 0; c < checks; c++) {
            int64_t j = nx <= o.max_checks ? c : (int64_t)(peft__splitmix64(&s) % (uint64_t)nx);
            float orig = xd[j];
            double lp[4];
            const double steps[4] = {-2, -1, 1, 2};
            for (int k = 0; k < 4; k++) {
                xd[j] = (float)(orig + steps[k] * o.h);
                lp[k] = eval_loss(ctx, f, in, arg, r);
            }
            xd[j] = orig;
            double num = (lp[0] - 8 * lp[1] + 8 * lp[2] - lp[3]) / (12 * o.h);
            double ana = g[j];
            double err = fabs(ana - num);
            double lim = o.atol + o.rtol * fmax(fabs(ana), fabs(num));
            double q = err / lim;
            if (isnan(q)) q = INFINITY; /* a NaN gradient must fail, not compare false */
            if (q > worst) {
                worst = q;
                worst_j = j;
                worst_a = ana;
                worst_n = num;
            }
        }
        ck_assert_msg(worst <= 1.0, "%s: input %d element %lld: analytic %.7g vs numeric %.7g (%.2fx the tolerance)",
                      label, i, (long long)worst_j, worst_a, worst_n, worst);
    }
    free(r);
}

double tu_max_rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

const char *tu_models_dir(void)
{
    static const char *const candidates[] = {"../shared/models", "../../shared/models"};
    const char *env = getenv("PEFT_MODELS_DIR");
    if (env && access(env, R_OK) == 0) return env;
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++)
        if (access(candidates[i], R_OK) == 0) return candidates[i];
    return NULL;
}

static const char *stderr_path(void)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/peft_test_%d.err", (int)getpid());
    return path;
}

int tu_run_prog(const char *prog, const char *args, char **out)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>%s", prog, args, stderr_path());
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 1024) {
            buf = realloc(buf, cap *= 2);
            ck_assert_ptr_nonnull(buf);
        }
    }
    buf[n] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int tu_run_peft(const char *args, char **out)
{
    const char *cli = getenv("PEFT_CLI");
    return tu_run_prog(cli ? cli : "build/bin/peft", args, out);
}

const char *tu_stderr(void)
{
    static char buf[4096];
    FILE *f = fopen(stderr_path(), "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
    return buf;
}

int32_t *tu_encode(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len, int bos, int eos, size_t *n)
{
    size_t need = 0;
    peft_status st = peft_tokenizer_encode(tok, text, len, bos, eos, NULL, 0, &need);
    ck_assert_msg(st == PEFT_OK || st == PEFT_ERR_INVALID_ARG, "count: %s", peft_ctx_errmsg(ctx));
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    ck_assert_ptr_nonnull(ids);
    TU_OK(ctx, peft_tokenizer_encode(tok, text, len, bos, eos, ids, need + 1, n));
    ck_assert_uint_eq(*n, need);
    return ids;
}

char *tu_decode(peft_ctx *ctx, peft_tokenizer *tok, const int32_t *ids, size_t n, size_t *len)
{
    size_t need = 0;
    peft_tokenizer_decode(tok, ids, n, NULL, 0, &need);
    char *buf = malloc(need + 1);
    ck_assert_ptr_nonnull(buf);
    TU_OK(ctx, peft_tokenizer_decode(tok, ids, n, buf, need + 1, len));
    ck_assert_uint_eq(*len, need);
    ck_assert_int_eq(buf[*len], '\0');
    return buf;
}

cJSON *tu_peft_json(const char *args)
{
    char *out;
    int rc = tu_run_peft(args, &out);
    ck_assert_msg(rc == 0, "peft %s exited %d: %s", args, rc, tu_stderr());
    cJSON *j = cJSON_Parse(out);
    ck_assert_msg(j != NULL, "peft %s printed no JSON: %.200s", args, out);
    free(out);
    return j;
}

double tu_json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsNumber(v), "no number '%s'", key);
    ck_assert_msg(isfinite(v->valuedouble), "'%s' is not finite", key);
    return v->valuedouble;
}

static void *oom_alloc(void *user, size_t size, size_t align)
{
    tu_oom *o = user;
    if (o->countdown == 0) return NULL;
    if (o->countdown > 0) o->countdown--;
    void *p = NULL;
    return posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size ? size : 1) == 0 ? p : NULL;
}

static void oom_free(void *user, void *p)
{
    (void)user;
    free(p);
}

peft_ctx *tu_oom_ctx(tu_oom *o)
{
    peft_ctx_opts co = peft_ctx_opts_default();
    co.n_threads = 1;
    co.alloc = oom_alloc;
    co.free = oom_free;
    co.alloc_user = o;
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(&co, &ctx), PEFT_OK);
    return ctx;
}

peft_model *tu_load_model(peft_ctx *ctx, const char *path, int keep_dtype)
{
    peft_model_load_opts o = peft_model_load_opts_default();
    o.keep_dtype = keep_dtype;
    peft_model *m = NULL;
    peft_status st = peft_model_load(ctx, path, &o, &m);
    ck_assert_msg(st == PEFT_OK, "load %s: %s", path, peft_ctx_errmsg(ctx));
    return m;
}

float *tu_logits(peft_ctx *ctx, peft_model *m, const int32_t *ids, int64_t B, int64_t T, size_t *n)
{
    int64_t s[2] = {B, T};
    peft_tensor *t = tu_ids(ctx, 2, s, ids), *lg = NULL;
    int prev = peft_set_grad_enabled(ctx, 0);
    TU_OK(ctx, peft_model_forward(m, t, &lg, NULL));
    *n = (size_t)peft_tensor_numel(lg);
    float *out = malloc(*n * sizeof *out);
    ck_assert_ptr_nonnull(out);
    memcpy(out, peft_tensor_data(lg), *n * sizeof *out);
    peft_graph_release(ctx);
    peft_set_grad_enabled(ctx, prev);
    peft_tensor_destroy(t);
    return out;
}
