/* Optimizers, clipping and schedules: against PyTorch golden values
 * (tests/golden/optim/gen.py), the flat gradient buffer, refusal of
 * non-finite gradients, state save/load, misuse, and thread independence. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

#define GOLDEN "tests/golden/optim/expected.safetensors"
#define N_P 3
#define N_STEPS 5

/* ---- helpers ---- */

/* A golden tensor as malloc'd floats; its numel must be n. */
static float *golden(peft_ctx *ctx, peft_safetensors *st, const char *name, size_t n)
{
    size_t i;
    peft_tensor *t = NULL;
    TU_OK(ctx, peft_safetensors_find(st, name, &i));
    TU_OK(ctx, peft_safetensors_load(st, i, PEFT_DTYPE_F32, &t));
    ck_assert_msg((size_t)peft_tensor_numel(t) == n, "%s: numel %lld, expected %zu", name,
                  (long long)peft_tensor_numel(t), n);
    float *v = malloc(n * sizeof *v);
    TU_OK(ctx, peft_tensor_get_f32(t, v, n));
    peft_tensor_destroy(t);
    return v;
}

static peft_safetensors *open_golden(peft_ctx *ctx)
{
    peft_safetensors *st = NULL;
    TU_OK(ctx, peft_safetensors_open(ctx, GOLDEN, &st));
    return st;
}

/* The three golden parameters p0 [3,4], p1 [5], p2 [2,3], trainable and named. */
static void golden_params(peft_ctx *ctx, peft_safetensors *st, peft_tensor **p)
{
    for (int i = 0; i < N_P; i++) {
        char name[32];
        snprintf(name, sizeof name, "init.p%d", i);
        size_t k;
        TU_OK(ctx, peft_safetensors_find(st, name, &k));
        TU_OK(ctx, peft_safetensors_load(st, k, PEFT_DTYPE_F32, &p[i]));
        snprintf(name, sizeof name, "p%d", i);
        TU_OK(ctx, peft_tensor_set_name(p[i], name));
        TU_OK(ctx, peft_tensor_set_requires_grad(p[i], 1));
    }
}

/* Elementwise |a - b| <= rtol * |b| (plus a tiny floor for exact zeros). */
static void expect_close(const float *a, const float *b, size_t n, double rtol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        ck_assert_msg(d <= rtol * fabs((double)b[i]) + 1e-12, "%s[%zu]: got %.9g, expected %.9g (rel %.3g)", what, i,
                      (double)a[i], (double)b[i], d / fabs((double)b[i]));
    }
}

static size_t numel(const peft_tensor *t) { return (size_t)peft_tensor_numel(t); }

typedef struct run_cfg {
    const char *name;
    peft_opt_kind kind;
    float lr, wd, momentum, dampening;
    int nesterov;
    int groups; /* p2 in a second group with lr_scale 0.5 and no decay */
} run_cfg;

static const run_cfg RUNS[] = {
    {"adamw", PEFT_OPT_ADAMW, 1e-2f, 0.01f, 0, 0, 0, 0},
    {"adamw_groups", PEFT_OPT_ADAMW, 1e-2f, 0.01f, 0, 0, 0, 1},
    {"sgd_momentum", PEFT_OPT_SGD, 0.05f, 0.0f, 0.9f, 0, 0, 0},
    {"sgd_nesterov", PEFT_OPT_SGD, 0.05f, 0.0f, 0.9f, 0, 1, 0},
    {"sgd_wd", PEFT_OPT_SGD, 0.05f, 0.1f, 0.0f, 0, 0, 0},
    {"sgd_damp", PEFT_OPT_SGD, 0.05f, 0.1f, 0.5f, 0.1f, 0, 0},
};

static peft_opt *make_opt(peft_ctx *ctx, const run_cfg *c, peft_tensor **p)
{
    peft_opt_opts o = peft_opt_opts_default(c->kind);
    o.lr = c->lr;
    o.weight_decay = c->wd;
    o.momentum = c->momentum;
    o.dampening = c->dampening;
    o.nesterov = c->nesterov;
    peft_opt *opt = NULL;
    TU_OK(ctx, peft_opt_create(ctx, &o, &opt));
    int g = 0;
    if (c->groups) {
        TU_OK(ctx, peft_opt_add_group(opt, 0.5f, 0.0f, &g));
        ck_assert_int_eq(g, 1);
    }
    for (int i = 0; i < N_P; i++) TU_OK(ctx, peft_opt_add_param(opt, p[i], i == 2 ? g : 0));
    TU_OK(ctx, peft_opt_finalize(opt));
    return opt;
}

/* Copy golden gradient set k (1-based) into the parameters' gradients. */
static void set_golden_grads(peft_ctx *ctx, peft_safetensors *st, peft_tensor **p, int k, float mult)
{
    for (int i = 0; i < N_P; i++) {
        char name[32];
        snprintf(name, sizeof name, "grad.s%d.p%d", k, i);
        float *g = golden(ctx, st, name, numel(p[i]));
        float *dst = peft_tensor_grad(p[i]);
        for (size_t j = 0; j < numel(p[i]); j++) dst[j] = g[j] * mult;
        free(g);
    }
}

/* ---- numerics: PyTorch golden values ---- */

START_TEST(numerics_golden_optimizers)
{
    for (int threads = 1; threads <= 2; threads++) {
        peft_ctx *ctx = tu_ctx(threads, 1);
        peft_safetensors *st = open_golden(ctx);
        for (size_t r = 0; r < sizeof RUNS / sizeof *RUNS; r++) {
            const run_cfg *c = &RUNS[r];
            peft_tensor *p[N_P];
            golden_params(ctx, st, p);
            peft_opt *opt = make_opt(ctx, c, p);
            ck_assert_uint_eq(peft_opt_n_elems(opt), 12 + 5 + 6);
            ck_assert_uint_eq(peft_opt_n_params(opt), N_P);
            for (int k = 1; k <= N_STEPS; k++) {
                TU_OK(ctx, peft_opt_zero_grad(opt));
                set_golden_grads(ctx, st, p, k, 1.0f);
                TU_OK(ctx, peft_opt_step(opt));
                ck_assert_int_eq(peft_opt_step_count(opt), k);
                for (int i = 0; i < N_P; i++) {
                    char name[64];
                    snprintf(name, sizeof name, "%s.s%d.p%d", c->name, k, i);
                    float *want = golden(ctx, st, name, numel(p[i]));
                    expect_close(peft_tensor_data(p[i]), want, numel(p[i]), 1e-6, name);
                    free(want);
                }
            }
            peft_opt_destroy(opt);
            for (int i = 0; i < N_P; i++) peft_tensor_destroy(p[i]);
        }
        peft_safetensors_close(st);
        peft_ctx_destroy(ctx);
    }
}
END_TEST

START_TEST(numerics_golden_clip)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_safetensors *st = open_golden(ctx);
    float *max_norm = golden(ctx, st, "clip.max_norm", 4), *norm = golden(ctx, st, "clip.norm", 4);
    for (int c = 0; c < 4; c++) {
        peft_tensor *p[N_P];
        golden_params(ctx, st, p);
        peft_opt *opt = make_opt(ctx, &RUNS[0], p);
        set_golden_grads(ctx, st, p, 3, 10.0f);
        float before = 0, got = 0, after = 0;
        TU_OK(ctx, peft_opt_grad_norm(opt, &before));
        TU_OK(ctx, peft_opt_clip_grad_norm(opt, max_norm[c], &got));
        expect_close(&before, &norm[c], 1, 1e-6, "grad_norm");
        expect_close(&got, &norm[c], 1, 1e-6, "clip norm");
        for (int i = 0; i < N_P; i++) {
            char name[32];
            snprintf(name, sizeof name, "clip.c%d.p%d", c, i);
            float *want = golden(ctx, st, name, numel(p[i]));
            expect_close(peft_tensor_grad(p[i]), want, numel(p[i]), 1e-6, name);
            free(want);
        }
        TU_OK(ctx, peft_opt_grad_norm(opt, &after));
        if (max_norm[c] < norm[c]) ck_assert_float_eq_tol(after, max_norm[c], 1e-5f * max_norm[c]);
        else ck_assert_float_eq(after, before); /* coef clamps to exactly 1 */
        peft_opt_destroy(opt);
        for (int i = 0; i < N_P; i++) peft_tensor_destroy(p[i]);
    }
    free(max_norm);
    free(norm);
    peft_safetensors_close(st);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_golden_schedules)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_safetensors *st = open_golden(ctx);
    struct {
        const char *name;
        peft_schedule_kind kind;
        int64_t W, T;
        float min_ratio;
    } cases[] = {
        {"sched.constant", PEFT_SCHED_CONSTANT, 3, 12, 0.0f},
        {"sched.linear", PEFT_SCHED_LINEAR, 3, 12, 0.0f},
        {"sched.cosine", PEFT_SCHED_COSINE, 3, 12, 0.0f},
        {"sched.cosine_min", PEFT_SCHED_COSINE, 3, 12, 0.1f},
        {"sched.stlr", PEFT_SCHED_SLANTED_TRIANGULAR, 0, 50, 0.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        peft_schedule s = peft_schedule_default(cases[c].kind);
        s.warmup_steps = cases[c].W;
        s.total_steps = cases[c].T;
        s.min_lr_ratio = cases[c].min_ratio;
        TU_OK(ctx, peft_schedule_check(ctx, &s));
        size_t n = (size_t)cases[c].T + 1;
        float *want = golden(ctx, st, cases[c].name, n);
        for (size_t k = 0; k < n; k++) {
            float f = peft_schedule_factor(&s, (int64_t)k);
            ck_assert_msg(fabsf(f - want[k]) <= 1e-6f * fabsf(want[k]) + 1e-7f, "%s step %zu: %.9g vs %.9g",
                          cases[c].name, k, (double)f, (double)want[k]);
        }
        free(want);
    }
    peft_safetensors_close(st);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- numerics: properties ---- */

START_TEST(numerics_schedule_properties)
{
    peft_schedule s = peft_schedule_default(PEFT_SCHED_COSINE);
    s.warmup_steps = 10;
    s.total_steps = 100;
    s.min_lr_ratio = 0.05f;
    ck_assert_float_eq(peft_schedule_factor(&s, 0), 0.0f);
    ck_assert_float_eq(peft_schedule_factor(&s, 5), 0.5f);
    ck_assert_float_eq(peft_schedule_factor(&s, 10), 1.0f);
    ck_assert_float_eq_tol(peft_schedule_factor(&s, 100), 0.05f, 1e-7f);
    ck_assert_float_eq(peft_schedule_factor(&s, 1000), peft_schedule_factor(&s, 100)); /* clamped past T */
    ck_assert_float_eq_tol(peft_schedule_factor(&s, 55), 0.05f + 0.95f * 0.5f, 1e-6f);
    for (int64_t k = 11; k <= 100; k++) ck_assert(peft_schedule_factor(&s, k) <= peft_schedule_factor(&s, k - 1));

    s = peft_schedule_default(PEFT_SCHED_LINEAR);
    s.warmup_steps = 4;
    s.total_steps = 20;
    ck_assert_float_eq(peft_schedule_factor(&s, 0), 0.0f);
    ck_assert_float_eq(peft_schedule_factor(&s, 4), 1.0f);
    ck_assert_float_eq(peft_schedule_factor(&s, 12), 0.5f);
    ck_assert_float_eq(peft_schedule_factor(&s, 20), 0.0f);
    ck_assert_float_eq(peft_schedule_factor(&s, 25), 0.0f);

    s = peft_schedule_default(PEFT_SCHED_CONSTANT);
    ck_assert_float_eq(peft_schedule_factor(&s, 0), 1.0f); /* no warm-up: full rate at once */
    ck_assert_float_eq(peft_schedule_factor(&s, 1000000), 1.0f);
    s.warmup_steps = 8;
    ck_assert_float_eq(peft_schedule_factor(&s, 2), 0.25f);
    ck_assert_float_eq(peft_schedule_factor(&s, 8), 1.0f);

    /* STLR: rises to 1 at cut, falls to 1/ratio at T */
    s = peft_schedule_default(PEFT_SCHED_SLANTED_TRIANGULAR);
    s.total_steps = 1000;
    ck_assert_float_eq_tol(peft_schedule_factor(&s, 0), 1.0f / 32.0f, 1e-7f);
    ck_assert_float_eq(peft_schedule_factor(&s, 100), 1.0f);
    ck_assert_float_eq_tol(peft_schedule_factor(&s, 1000), 1.0f / 32.0f, 1e-7f);
    ck_assert_float_eq_tol(peft_schedule_factor(&s, 5000), 1.0f / 32.0f, 1e-7f);
    float lowest = 1.0f;
    for (int64_t k = 0; k <= 1000; k++) {
        float f = peft_schedule_factor(&s, k);
        ck_assert(f <= 1.0f && f >= 1.0f / 32.0f - 1e-7f);
        if (k > 0 && k <= 100) ck_assert(f > peft_schedule_factor(&s, k - 1));
        if (k > 100) ck_assert(f < peft_schedule_factor(&s, k - 1));
        if (f < lowest) lowest = f;
    }
    ck_assert_float_eq_tol(lowest, 1.0f / 32.0f, 1e-7f);
    /* cut_frac whose f32 value is just below the decimal: 10 * 0.7f gives cut 7 */
    s.total_steps = 10;
    s.cut_frac = 0.7f;
    ck_assert_float_eq(peft_schedule_factor(&s, 7), 1.0f);
    /* tiny T: cut 0, decays from the first update */
    s = peft_schedule_default(PEFT_SCHED_SLANTED_TRIANGULAR);
    s.total_steps = 5;
    ck_assert_float_eq(peft_schedule_factor(&s, 0), 1.0f);
    ck_assert_float_eq_tol(peft_schedule_factor(&s, 5), 1.0f / 32.0f, 1e-7f);
    /* cut_frac close to 1 keeps a decay step */
    s.cut_frac = 0.99999994f;
    ck_assert(isfinite(peft_schedule_factor(&s, 5)));

    /* invalid schedules and steps give NaN */
    ck_assert(isnan(peft_schedule_factor(NULL, 0)));
    ck_assert(isnan(peft_schedule_factor(&s, -1)));
    s = peft_schedule_default(PEFT_SCHED_COSINE); /* total_steps 0 */
    ck_assert(isnan(peft_schedule_factor(&s, 0)));
}
END_TEST

START_TEST(api_schedule_check)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_schedule s = peft_schedule_default(PEFT_SCHED_CONSTANT);
    TU_OK(ctx, peft_schedule_check(ctx, &s));
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, NULL), PEFT_ERR_INVALID_ARG, "NULL");
    s.struct_size = 8;
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "struct_size 8");
    s = peft_schedule_default((peft_schedule_kind)9);
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "kind 9");
    s = peft_schedule_default(PEFT_SCHED_COSINE);
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "total_steps 0 must be >= 1");
    s.total_steps = 10;
    s.warmup_steps = 11;
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "warmup_steps 11 > total_steps 10");
    s.warmup_steps = -1;
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "warmup_steps -1");
    s.warmup_steps = 0;
    s.min_lr_ratio = 1.5f;
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "min_lr_ratio 1.5");
    s.min_lr_ratio = NAN;
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "min_lr_ratio");
    s = peft_schedule_default(PEFT_SCHED_SLANTED_TRIANGULAR);
    s.total_steps = 100;
    TU_OK(ctx, peft_schedule_check(ctx, &s));
    s.cut_frac = 1.0f;
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "cut_frac 1 must be in (0, 1)");
    s.cut_frac = 0.1f;
    s.ratio = 0.5f;
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "ratio 0.5");
    s.ratio = 32.0f;
    s.warmup_steps = 5;
    TU_EXPECT_FAIL(ctx, peft_schedule_check(ctx, &s), PEFT_ERR_INVALID_ARG, "slanted_triangular: warmup_steps 5");
    ck_assert_str_eq(peft_schedule_kind_name(PEFT_SCHED_COSINE), "cosine");
    ck_assert_str_eq(peft_schedule_kind_name((peft_schedule_kind)77), "?");
    peft_ctx_destroy(ctx);
}
END_TEST

/* A few trainable tensors of the given sizes with random values. */
static void rand_params(peft_ctx *ctx, int n, const int64_t *sizes, peft_tensor **p)
{
    for (int i = 0; i < n; i++) {
        p[i] = tu_randn(ctx, 1, &sizes[i], 0.5f, 1);
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        TU_OK(ctx, peft_tensor_set_name(p[i], name));
    }
}

static void rand_grads(peft_ctx *ctx, peft_opt *opt, float scale)
{
    float *g = peft_opt_grad(opt);
    for (size_t i = 0; i < peft_opt_n_elems(opt); i++) g[i] = scale * (float)peft_ctx_rand_normal(ctx);
}

START_TEST(numerics_flat_buffer_and_zero_grad)
{
    peft_ctx *ctx = tu_ctx(1, 3);
    const int64_t sizes[3] = {7, 1, 33};
    peft_tensor *p[3];
    rand_params(ctx, 3, sizes, p);
    /* a gradient already present is carried into the flat buffer */
    float *g0 = peft_tensor_grad(p[1]);
    g0[0] = 4.5f;
    peft_opt *opt = NULL;
    peft_opt_opts o = peft_opt_opts_default(PEFT_OPT_ADAMW);
    TU_OK(ctx, peft_opt_create(ctx, &o, &opt));
    ck_assert_ptr_null(peft_opt_grad(opt));
    ck_assert_uint_eq(peft_opt_n_elems(opt), 0);
    for (int i = 0; i < 3; i++) TU_OK(ctx, peft_opt_add_param(opt, p[i], 0));
    TU_OK(ctx, peft_opt_finalize(opt));
    float *g = peft_opt_grad(opt);
    ck_assert_uint_eq(peft_opt_n_elems(opt), 41);
    ck_assert_ptr_eq(peft_tensor_grad(p[0]), g);
    ck_assert_ptr_eq(peft_tensor_grad(p[1]), g + 7);
    ck_assert_ptr_eq(peft_tensor_grad(p[2]), g + 8);
    ck_assert_float_eq(g[7], 4.5f);
    ck_assert_float_eq(g[0], 0.0f);

    /* backward accumulates straight into the flat buffer: d(sum(p2*p2))/dp2 = 2 p2 */
    peft_tensor *sq, *loss;
    TU_OK(ctx, peft_mul(ctx, p[2], p[2], &sq));
    TU_OK(ctx, peft_sum(ctx, sq, &loss));
    TU_OK(ctx, peft_backward(ctx, loss, NULL));
    const float *w2 = peft_tensor_data(p[2]);
    for (int i = 0; i < 33; i++) ck_assert_float_eq_tol(g[8 + i], 2.0f * w2[i], 1e-6f);
    float norm;
    TU_OK(ctx, peft_opt_grad_norm(opt, &norm));
    double ref = 4.5 * 4.5;
    for (int i = 0; i < 33; i++) ref += (double)g[8 + i] * g[8 + i];
    ck_assert_float_eq_tol(norm, (float)sqrt(ref), 1e-6f * (float)sqrt(ref));

    TU_OK(ctx, peft_opt_zero_grad(opt));
    for (int i = 0; i < 41; i++) ck_assert_float_eq(g[i], 0.0f);
    TU_OK(ctx, peft_opt_grad_norm(opt, &norm));
    ck_assert_float_eq(norm, 0.0f);

    /* clipping with a zero gradient is a no-op, not a division by zero */
    TU_OK(ctx, peft_opt_clip_grad_norm(opt, 1.0f, &norm));
    ck_assert_float_eq(norm, 0.0f);

    /* destroy hands each tensor a gradient of its own with the current values */
    g[8] = 1.25f;
    peft_opt_destroy(opt);
    ck_assert_ptr_nonnull(peft_tensor_grad(p[2]));
    ck_assert_float_eq(peft_tensor_grad(p[2])[0], 1.25f);
    ck_assert_int_eq(peft_tensor_requires_grad(p[2]), 1);
    for (int i = 0; i < 3; i++) peft_tensor_destroy(p[i]);
    peft_ctx_destroy(ctx);
}
END_TEST


static peft_opt *simple_opt(peft_ctx *ctx, peft_opt_kind kind, float momentum, int nesterov, int n, peft_tensor **p)
{
    peft_opt_opts o = peft_opt_opts_default(kind);
    o.momentum = momentum;
    o.nesterov = nesterov;
    if (kind == PEFT_OPT_SGD) o.weight_decay = 0.01f;
    peft_opt *opt = NULL;
    TU_OK(ctx, peft_opt_create(ctx, &o, &opt));
    for (int i = 0; i < n; i++) TU_OK(ctx, peft_opt_add_param(opt, p[i], 0));
    TU_OK(ctx, peft_opt_finalize(opt));
    return opt;
}

static void *save_blob(peft_ctx *ctx, peft_opt *opt, size_t *size)
{
    *size = peft_opt_state_size(opt);
    ck_assert_uint_gt(*size, 0);
    void *b = malloc(*size);
    TU_OK(ctx, peft_opt_save_state(opt, b, *size));
    return b;
}

static float *copy_data(const peft_tensor *t)
{
    float *c = malloc(numel(t) * sizeof *c);
    memcpy(c, peft_tensor_data(t), numel(t) * sizeof *c);
    return c;
}

START_TEST(numerics_frozen_param_skipped)
{
    peft_ctx *ctx = tu_ctx(1, 4);
    const int64_t sizes[2] = {5, 6};
    peft_tensor *p[2];
    rand_params(ctx, 2, sizes, p);
    peft_opt *opt = simple_opt(ctx, PEFT_OPT_ADAMW, 0, 0, 2, p);
    TU_OK(ctx, peft_tensor_set_requires_grad(p[0], 0)); /* frozen after finalize */
    float *w0 = copy_data(p[0]), *w1 = copy_data(p[1]);
    rand_grads(ctx, opt, 1.0f);
    TU_OK(ctx, peft_opt_step(opt));
    ck_assert_int_eq(memcmp(peft_tensor_data(p[0]), w0, 5 * sizeof(float)), 0);
    ck_assert_int_ne(memcmp(peft_tensor_data(p[1]), w1, 6 * sizeof(float)), 0);
    /* unfrozen: its own first update (bias correction of step 1): |dp| ~ lr */
    TU_OK(ctx, peft_tensor_set_requires_grad(p[0], 1));
    ck_assert_ptr_eq(peft_tensor_grad(p[0]), peft_opt_grad(opt)); /* still the slice */
    TU_OK(ctx, peft_opt_step(opt));
    const float *w0n = peft_tensor_data(p[0]);
    for (int i = 0; i < 5; i++) {
        double d = fabs((double)w0n[i] * (1.0 / (1.0 - 1e-3 * 0.01)) - w0[i]);
        ck_assert_msg(fabs(d - 1e-3) < 1e-5, "first AdamW update of an unfrozen parameter is lr: %g", d);
    }
    ck_assert_int_eq(peft_opt_step_count(opt), 2);
    free(w0);
    free(w1);
    peft_opt_destroy(opt);
    for (int i = 0; i < 2; i++) peft_tensor_destroy(p[i]);
    peft_ctx_destroy(ctx);
}
END_TEST

/* AdamW on parameters long enough for the 16-lane path (AVX-512 builds) with
 * odd sizes and offsets, so vector blocks, tails and parameter boundaries
 * all occur: the update must equal the plain float formula bit for bit. */
START_TEST(numerics_adamw_vector_path)
{
    peft_ctx *ctx = tu_ctx(2, 11);
    const int64_t sizes[3] = {37, 16411, 5};
    peft_tensor *p[3];
    rand_params(ctx, 3, sizes, p);
    peft_opt_opts o = peft_opt_opts_default(PEFT_OPT_ADAMW);
    o.lr = 1e-2f;
    o.weight_decay = 0.1f;
    peft_opt *opt = NULL;
    TU_OK(ctx, peft_opt_create(ctx, &o, &opt));
    for (int i = 0; i < 3; i++) TU_OK(ctx, peft_opt_add_param(opt, p[i], 0));
    TU_OK(ctx, peft_opt_finalize(opt));
    const size_t n = peft_opt_n_elems(opt);
    float *w = malloc(n * sizeof *w), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    for (int i = 0, off = 0; i < 3; off += (int)sizes[i], i++)
        memcpy(w + off, peft_tensor_data(p[i]), (size_t)sizes[i] * sizeof *w);
    const float b1 = (float)o.beta1, omb1 = (float)(1.0 - o.beta1);
    const float b2 = (float)o.beta2, omb2 = (float)(1.0 - o.beta2);
    for (int k = 1; k <= 3; k++) {
        rand_grads(ctx, opt, 1.0f);
        const float *g = peft_opt_grad(opt);
        const double t = k, lr = o.lr;
        const float decay = (float)(1.0 - lr * (double)o.weight_decay);
        const float neg_step = (float)(-(lr / (1.0 - pow(o.beta1, t))));
        const float bc2_sqrt = (float)sqrt(1.0 - pow(o.beta2, t));
        for (size_t i = 0; i < n; i++) {
            float pi = w[i] * decay;
            m[i] = m[i] * b1 + omb1 * g[i];
            v[i] = v[i] * b2 + omb2 * g[i] * g[i];
            float denom = sqrtf(v[i]) / bc2_sqrt + o.eps;
            w[i] = pi + neg_step * m[i] / denom;
        }
        TU_OK(ctx, peft_opt_step(opt));
        for (int i = 0, off = 0; i < 3; off += (int)sizes[i], i++) {
            const float *got = peft_tensor_data(p[i]);
            for (int64_t j = 0; j < sizes[i]; j++)
                ck_assert_msg(got[j] == w[off + j], "step %d, p%d[%lld]: %.9g != %.9g", k, i, (long long)j,
                              (double)got[j], (double)w[off + j]);
        }
    }
    free(w), free(m), free(v);
    peft_opt_destroy(opt);
    for (int i = 0; i < 3; i++) peft_tensor_destroy(p[i]);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_nonfinite_refused)
{
    peft_ctx *ctx = tu_ctx(2, 5);
    const int64_t sizes[3] = {20000, 9, 17000};
    peft_tensor *p[3];
    rand_params(ctx, 3, sizes, p);
    TU_OK(ctx, peft_tensor_set_name(p[2], "")); /* unnamed: reported by index */
    const peft_opt_kind kinds[2] = {PEFT_OPT_ADAMW, PEFT_OPT_SGD};
    const float bad[2] = {NAN, -INFINITY};
    for (int kk = 0; kk < 2; kk++)
        for (int b = 0; b < 2; b++) {
            peft_opt *opt = simple_opt(ctx, kinds[kk], 0.9f, 0, 3, p);
            for (int s = 0; s < 2; s++) { /* non-zero moments */
                rand_grads(ctx, opt, 1.0f);
                TU_OK(ctx, peft_opt_step(opt));
            }
            rand_grads(ctx, opt, 1.0f);
            float *w[3];
            for (int i = 0; i < 3; i++) w[i] = copy_data(p[i]);
            size_t size, size2, n = peft_opt_n_elems(opt);
            void *before = save_blob(ctx, opt, &size);
            float *g = peft_opt_grad(opt);
            size_t pos = b == 0 ? 20000 + 3 : 20009 + 16999; /* w1[3], or the last element of #2 */
            g[pos] = bad[b];
            float *gcopy = malloc(n * sizeof *gcopy);
            memcpy(gcopy, g, n * sizeof *gcopy);
            if (b == 0) TU_EXPECT_FAIL(ctx, peft_opt_step(opt), PEFT_ERR_NUMERIC, "parameter 'w1' (#1), element 3");
            else TU_EXPECT_FAIL(ctx, peft_opt_step(opt), PEFT_ERR_NUMERIC, "parameter #2, element 16999");
            ck_assert_ptr_nonnull(strstr(peft_ctx_errmsg(ctx), "non-finite gradient"));
            ck_assert_int_eq(peft_opt_step_count(opt), 2);
            for (int i = 0; i < 3; i++)
                ck_assert_int_eq(memcmp(peft_tensor_data(p[i]), w[i], numel(p[i]) * sizeof(float)), 0);
            void *after = save_blob(ctx, opt, &size2);
            ck_assert_uint_eq(size, size2);
            ck_assert_int_eq(memcmp(before, after, size), 0); /* moments and step counts */
            /* clipping leaves non-finite gradients alone and reports the norm */
            float norm = 0;
            TU_OK(ctx, peft_opt_clip_grad_norm(opt, 1.0f, &norm));
            ck_assert(!isfinite(norm));
            ck_assert_int_eq(memcmp(g, gcopy, n * sizeof *gcopy), 0);
            /* a finite gradient steps again */
            g[pos] = 0.0f;
            TU_OK(ctx, peft_opt_step(opt));
            ck_assert_int_eq(peft_opt_step_count(opt), 3);
            for (int i = 0; i < 3; i++) free(w[i]);
            free(before);
            free(after);
            free(gcopy);
            peft_opt_destroy(opt);
        }
    for (int i = 0; i < 3; i++) peft_tensor_destroy(p[i]);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Three steps (clip + step) of an optimizer in a context with n_threads;
 * returns the params' data, the norms and the state blob. */
static void thread_run(int n_threads, peft_opt_kind kind, int nesterov, float **w_out, size_t *n_out, float *norms,
                       void **blob, size_t *blob_size)
{
    peft_ctx *ctx = tu_ctx(n_threads, 77);
    const int64_t sizes[3] = {40000, 30001, 7};
    peft_tensor *p[3];
    rand_params(ctx, 3, sizes, p);
    peft_opt *opt = simple_opt(ctx, kind, 0.9f, nesterov, 3, p);
    for (int s = 0; s < 3; s++) {
        rand_grads(ctx, opt, 3.0f);
        TU_OK(ctx, peft_opt_clip_grad_norm(opt, 50.0f, &norms[s]));
        TU_OK(ctx, peft_opt_step(opt));
    }
    size_t n = peft_opt_n_elems(opt);
    float *w = malloc(n * sizeof *w);
    for (int i = 0, off = 0; i < 3; off += (int)sizes[i], i++)
        memcpy(w + off, peft_tensor_data(p[i]), (size_t)sizes[i] * sizeof *w);
    *blob = save_blob(ctx, opt, blob_size);
    *w_out = w;
    *n_out = n;
    peft_opt_destroy(opt);
    for (int i = 0; i < 3; i++) peft_tensor_destroy(p[i]);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_threads_identical)
{
    const struct {
        peft_opt_kind kind;
        int nesterov;
    } cases[] = {{PEFT_OPT_ADAMW, 0}, {PEFT_OPT_SGD, 1}};
    for (int c = 0; c < 2; c++) {
        float *w1, *w2, n1[3], n2[3];
        size_t n_1, n_2, s1, s2;
        void *b1, *b2;
        thread_run(1, cases[c].kind, cases[c].nesterov, &w1, &n_1, n1, &b1, &s1);
        thread_run(2, cases[c].kind, cases[c].nesterov, &w2, &n_2, n2, &b2, &s2);
        ck_assert_uint_eq(n_1, n_2);
        ck_assert_int_eq(memcmp(w1, w2, n_1 * sizeof *w1), 0);
        ck_assert_int_eq(memcmp(n1, n2, sizeof n1), 0);
        ck_assert(n1[0] > 50.0f); /* the clip really scaled */
        ck_assert_uint_eq(s1, s2);
        ck_assert_int_eq(memcmp(b1, b2, s1), 0);
        free(w1), free(w2), free(b1), free(b2);
    }
}
END_TEST

/* ---- api ---- */

START_TEST(api_opt_create_errors)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_opt *opt = NULL;
    peft_opt_opts o = peft_opt_opts_default(PEFT_OPT_ADAMW);
    ck_assert_float_eq(o.lr, 1e-3f);
    ck_assert_float_eq(o.weight_decay, 0.01f);
    ck_assert(o.beta1 == 0.9 && o.beta2 == 0.999);
    ck_assert_float_eq(o.eps, 1e-8f);
    TU_EXPECT_FAIL(ctx, peft_opt_create(ctx, &o, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    TU_EXPECT_FAIL(ctx, peft_opt_create(ctx, NULL, &opt), PEFT_ERR_INVALID_ARG, "opts is NULL");
    ck_assert_int_eq(peft_opt_create(NULL, &o, &opt), PEFT_ERR_INVALID_ARG);
    struct {
        void (*edit)(peft_opt_opts *);
        const char *needle;
    } bad[14];
    int nb = 0;
#define BAD(body, msg)                                                                                             \
    do {                                                                                                           \
        peft_opt_opts b = peft_opt_opts_default(PEFT_OPT_ADAMW);                                                   \
        body;                                                                                                      \
        opt = (peft_opt *)1;                                                                                       \
        TU_EXPECT_FAIL(ctx, peft_opt_create(ctx, &b, &opt), PEFT_ERR_INVALID_ARG, msg);                            \
        ck_assert_ptr_null(opt);                                                                                   \
        nb++;                                                                                                      \
    } while (0)
    BAD(b.struct_size = 4, "opts.struct_size 4");
    BAD(b.kind = (peft_opt_kind)7, "opts.kind 7");
    BAD(b.lr = NAN, "opts.lr nan");
    BAD(b.lr = -1e-3f, "opts.lr -0.001");
    BAD(b.lr = INFINITY, "opts.lr inf");
    BAD(b.weight_decay = -0.5f, "opts.weight_decay -0.5");
    BAD(b.beta1 = 1.0, "opts.beta1 1 must be in [0, 1)");
    BAD(b.beta2 = -0.1, "opts.beta2 -0.1");
    BAD(b.eps = 0.0f, "opts.eps 0");
    BAD((b = peft_opt_opts_default(PEFT_OPT_SGD), b.momentum = -1.0f), "opts.momentum -1");
    BAD((b = peft_opt_opts_default(PEFT_OPT_SGD), b.dampening = 2.0f), "opts.dampening 2");
    BAD((b = peft_opt_opts_default(PEFT_OPT_SGD), b.nesterov = 1), "nesterov needs momentum > 0");
    BAD((b = peft_opt_opts_default(PEFT_OPT_SGD), b.momentum = 0.9f, b.dampening = 0.1f, b.nesterov = 1),
        "dampening 0.1");
    BAD((b = peft_opt_opts_default(PEFT_OPT_SGD), b.nesterov = 2), "opts.nesterov 2");
#undef BAD
    (void)bad;
    ck_assert_int_eq(nb, 14);
    ck_assert_str_eq(peft_opt_kind_name(PEFT_OPT_ADAMW), "adamw");
    ck_assert_str_eq(peft_opt_kind_name(PEFT_OPT_SGD), "sgd");
    ck_assert_str_eq(peft_opt_kind_name((peft_opt_kind)9), "?");
    /* NULL handles */
    peft_opt_destroy(NULL);
    ck_assert_uint_eq(peft_opt_n_elems(NULL), 0);
    ck_assert_uint_eq(peft_opt_n_params(NULL), 0);
    ck_assert_ptr_null(peft_opt_grad(NULL));
    ck_assert(isnan(peft_opt_get_lr(NULL)));
    ck_assert_int_eq(peft_opt_step_count(NULL), 0);
    ck_assert_uint_eq(peft_opt_state_size(NULL), 0);
    ck_assert_int_eq(peft_opt_step(NULL), PEFT_ERR_INVALID_ARG);
    ck_assert_int_eq(peft_opt_zero_grad(NULL), PEFT_ERR_INVALID_ARG);
    ck_assert_int_eq(peft_opt_set_lr(NULL, 1.0f), PEFT_ERR_INVALID_ARG);
    ck_assert_int_eq(peft_opt_finalize(NULL), PEFT_ERR_INVALID_ARG);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_opt_params_and_state)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_ctx *other = tu_ctx(1, 1);
    const int64_t sizes[2] = {4, 3};
    peft_tensor *p[2];
    rand_params(ctx, 2, sizes, p);
    peft_opt_opts o = peft_opt_opts_default(PEFT_OPT_ADAMW);
    peft_opt *opt = NULL;
    TU_OK(ctx, peft_opt_create(ctx, &o, &opt));
    ck_assert_float_eq(peft_opt_get_lr(opt), 1e-3f);

    /* everything that needs the flat arrays refuses before finalize */
    float f;
    char buf[256];
    TU_EXPECT_FAIL(ctx, peft_opt_step(opt), PEFT_ERR_STATE, "peft_opt_finalize first");
    TU_EXPECT_FAIL(ctx, peft_opt_zero_grad(opt), PEFT_ERR_STATE, "peft_opt_finalize first");
    TU_EXPECT_FAIL(ctx, peft_opt_grad_norm(opt, &f), PEFT_ERR_STATE, "peft_opt_finalize first");
    TU_EXPECT_FAIL(ctx, peft_opt_clip_grad_norm(opt, 1.0f, &f), PEFT_ERR_STATE, "peft_opt_finalize first");
    TU_EXPECT_FAIL(ctx, peft_opt_save_state(opt, buf, sizeof buf), PEFT_ERR_STATE, "finalize");
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, buf, sizeof buf), PEFT_ERR_STATE, "finalize");
    ck_assert_uint_eq(peft_opt_state_size(opt), 0);
    TU_EXPECT_FAIL(ctx, peft_opt_finalize(opt), PEFT_ERR_STATE, "no parameters were added");

    /* groups */
    int g = -1;
    TU_EXPECT_FAIL(ctx, peft_opt_add_group(opt, NAN, 0.0f, &g), PEFT_ERR_INVALID_ARG, "lr_scale nan");
    TU_EXPECT_FAIL(ctx, peft_opt_add_group(opt, -1.0f, 0.0f, &g), PEFT_ERR_INVALID_ARG, "lr_scale -1");
    TU_EXPECT_FAIL(ctx, peft_opt_add_group(opt, 1.0f, -0.1f, &g), PEFT_ERR_INVALID_ARG, "weight_decay -0.1");
    TU_EXPECT_FAIL(ctx, peft_opt_add_group(opt, 1.0f, 0.0f, NULL), PEFT_ERR_INVALID_ARG, "group is NULL");
    for (int i = 1; i <= 10; i++) { /* grows past the initial capacity */
        TU_OK(ctx, peft_opt_add_group(opt, 1.0f / (float)i, 0.0f, &g));
        ck_assert_int_eq(g, i);
    }

    /* parameters */
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, NULL, 0), PEFT_ERR_INVALID_ARG, "tensor is NULL");
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, p[0], 11), PEFT_ERR_INVALID_ARG, "group 11 out of range (have 11)");
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, p[0], -1), PEFT_ERR_INVALID_ARG, "group -1");
    peft_tensor *frozen = tu_randn(ctx, 1, &sizes[0], 1.0f, 0);
    TU_OK(ctx, peft_tensor_set_name(frozen, "frozen"));
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, frozen, 0), PEFT_ERR_INVALID_ARG,
                   "tensor 'frozen' does not require a gradient");
    peft_tensor *ids = NULL;
    TU_OK(ctx, peft_tensor_create(ctx, PEFT_DTYPE_I32, 1, &sizes[0], &ids));
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, ids, 0), PEFT_ERR_DTYPE, "parameters must be f32");
    peft_tensor *scaled = NULL;
    TU_OK(ctx, peft_scale(ctx, p[0], 2.0f, &scaled));
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, scaled, 0), PEFT_ERR_INVALID_ARG, "op output or view");
    peft_graph_release(ctx);
    peft_tensor *foreign = tu_randn(other, 1, &sizes[0], 1.0f, 1);
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, foreign, 0), PEFT_ERR_INVALID_ARG, "another context");
    TU_OK(ctx, peft_opt_add_param(opt, p[0], 0));
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, p[0], 3), PEFT_ERR_INVALID_ARG,
                   "tensor 'w0' was already added as parameter 'w0' (#0)");
    peft_tensor *alias = NULL;
    TU_OK(ctx, peft_tensor_wrap(ctx, PEFT_DTYPE_F32, 1, &sizes[0], peft_tensor_data(p[0]), &alias));
    TU_OK(ctx, peft_tensor_set_requires_grad(alias, 1));
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, alias, 0), PEFT_ERR_INVALID_ARG, "shares its data with parameter");
    TU_OK(ctx, peft_opt_add_param(opt, p[1], 10));
    TU_OK(ctx, peft_opt_finalize(opt));

    /* no more changes after finalize */
    TU_EXPECT_FAIL(ctx, peft_opt_finalize(opt), PEFT_ERR_STATE, "already finalized");
    TU_EXPECT_FAIL(ctx, peft_opt_add_param(opt, frozen, 0), PEFT_ERR_STATE, "already finalized");
    TU_EXPECT_FAIL(ctx, peft_opt_add_group(opt, 1.0f, 0.0f, &g), PEFT_ERR_STATE, "already finalized");

    /* learning rate */
    TU_OK(ctx, peft_opt_set_lr(opt, 0.25f));
    TU_EXPECT_FAIL(ctx, peft_opt_set_lr(opt, NAN), PEFT_ERR_INVALID_ARG, "lr nan must be finite and >= 0");
    TU_EXPECT_FAIL(ctx, peft_opt_set_lr(opt, INFINITY), PEFT_ERR_INVALID_ARG, "lr inf");
    TU_EXPECT_FAIL(ctx, peft_opt_set_lr(opt, -1.0f), PEFT_ERR_INVALID_ARG, "lr -1");
    ck_assert_float_eq(peft_opt_get_lr(opt), 0.25f);
    TU_OK(ctx, peft_opt_set_lr(opt, 0.0f));
    peft_schedule s = peft_schedule_default(PEFT_SCHED_COSINE); /* invalid: factor NaN */
    TU_EXPECT_FAIL(ctx, peft_opt_set_lr(opt, 0.1f * peft_schedule_factor(&s, 3)), PEFT_ERR_INVALID_ARG, "lr nan");

    /* clipping and norms */
    TU_EXPECT_FAIL(ctx, peft_opt_clip_grad_norm(opt, 0.0f, NULL), PEFT_ERR_INVALID_ARG, "max_norm 0");
    TU_EXPECT_FAIL(ctx, peft_opt_clip_grad_norm(opt, NAN, NULL), PEFT_ERR_INVALID_ARG, "max_norm nan");
    TU_EXPECT_FAIL(ctx, peft_opt_grad_norm(opt, NULL), PEFT_ERR_INVALID_ARG, "norm_out is NULL");
    TU_OK(ctx, peft_opt_clip_grad_norm(opt, 1.0f, NULL));

    /* save needs room */
    size_t need = peft_opt_state_size(opt);
    ck_assert_uint_eq(need, 48 + 2 * 16 + 2 * 7 * 4 + 4);
    TU_EXPECT_FAIL(ctx, peft_opt_save_state(opt, buf, need - 1), PEFT_ERR_INVALID_ARG, "need 140");
    TU_EXPECT_FAIL(ctx, peft_opt_save_state(opt, NULL, need), PEFT_ERR_INVALID_ARG, "buf is NULL");

    /* a gradient re-pointed behind the optimizer's back is caught */
    float own[4] = {0};
    TU_OK(ctx, peft_tensor_set_grad_buffer(p[0], own));
    TU_EXPECT_FAIL(ctx, peft_opt_step(opt), PEFT_ERR_STATE, "parameter 'w0' (#0) no longer points");
    ck_assert_int_eq(peft_opt_step_count(opt), 0);
    peft_opt_destroy(opt); /* leaves p[0]'s own buffer alone */
    ck_assert_ptr_eq(peft_tensor_grad(p[0]), own);
    TU_OK(ctx, peft_tensor_set_grad_buffer(p[0], NULL));

    peft_tensor_destroy(alias);
    peft_tensor_destroy(foreign);
    peft_tensor_destroy(ids);
    peft_tensor_destroy(frozen);
    for (int i = 0; i < 2; i++) peft_tensor_destroy(p[i]);
    peft_ctx_destroy(other);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: state blobs ---- */

START_TEST(io_state_roundtrip)
{
    const struct {
        peft_opt_kind kind;
        float momentum;
        int nesterov;
    } cases[] = {{PEFT_OPT_ADAMW, 0, 0}, {PEFT_OPT_SGD, 0.9f, 1}, {PEFT_OPT_SGD, 0.0f, 0}};
    for (int c = 0; c < 3; c++) {
        peft_ctx *ctx = tu_ctx(2, 11);
        const int64_t sizes[3] = {17, 64, 3};
        peft_tensor *a[3], *b[3];
        rand_params(ctx, 3, sizes, a);
        peft_opt *oa = simple_opt(ctx, cases[c].kind, cases[c].momentum, cases[c].nesterov, 3, a);
        size_t n = peft_opt_n_elems(oa);
        float *G = malloc(5 * n * sizeof *G);
        for (size_t i = 0; i < 5 * n; i++) G[i] = (float)peft_ctx_rand_normal(ctx);
        TU_OK(ctx, peft_opt_set_lr(oa, 3e-3f));
        for (int k = 0; k < 3; k++) {
            memcpy(peft_opt_grad(oa), G + k * n, n * sizeof *G);
            TU_OK(ctx, peft_opt_step(oa));
        }
        size_t size;
        void *blob = save_blob(ctx, oa, &size);
        /* copies of the weights after 3 steps */
        for (int i = 0; i < 3; i++) {
            b[i] = tu_randn(ctx, 1, &sizes[i], 1.0f, 1);
            TU_OK(ctx, peft_tensor_set_f32(b[i], peft_tensor_data(a[i]), numel(a[i])));
        }
        for (int k = 3; k < 5; k++) {
            memcpy(peft_opt_grad(oa), G + k * n, n * sizeof *G);
            TU_OK(ctx, peft_opt_step(oa));
        }
        peft_opt *ob = simple_opt(ctx, cases[c].kind, cases[c].momentum, cases[c].nesterov, 3, b);
        TU_OK(ctx, peft_opt_load_state(ob, blob, size));
        ck_assert_int_eq(peft_opt_step_count(ob), 3);
        ck_assert_float_eq(peft_opt_get_lr(ob), 3e-3f);
        for (int k = 3; k < 5; k++) {
            memcpy(peft_opt_grad(ob), G + k * n, n * sizeof *G);
            TU_OK(ctx, peft_opt_step(ob));
        }
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(memcmp(peft_tensor_data(a[i]), peft_tensor_data(b[i]), numel(a[i]) * sizeof(float)), 0);
        size_t sa, sb;
        void *ba = save_blob(ctx, oa, &sa), *bb = save_blob(ctx, ob, &sb);
        ck_assert_uint_eq(sa, sb);
        ck_assert_int_eq(memcmp(ba, bb, sa), 0);
        /* little-endian header fields */
        const unsigned char *h = blob;
        ck_assert_int_eq(memcmp(h, "PEFTOPTS", 8), 0);
        ck_assert_int_eq(h[8], 1);
        ck_assert_int_eq(h[12], (int)cases[c].kind);
        ck_assert_int_eq(h[16], 3);
        ck_assert_int_eq(h[24], 84);
        ck_assert_int_eq(h[32], 3);
        ck_assert_int_eq(h[40], cases[c].kind == PEFT_OPT_ADAMW ? 2 : cases[c].momentum != 0 ? 1 : 0);
        free(G), free(blob), free(ba), free(bb);
        peft_opt_destroy(oa);
        peft_opt_destroy(ob);
        for (int i = 0; i < 3; i++) peft_tensor_destroy(a[i]), peft_tensor_destroy(b[i]);
        peft_ctx_destroy(ctx);
    }
}
END_TEST

START_TEST(io_state_corrupt)
{
    peft_ctx *ctx = tu_ctx(1, 12);
    const int64_t sizes[3] = {17, 64, 3}, other_sizes[3] = {17, 65, 2}, fewer[3] = {17, 64, 4};
    peft_tensor *p[3], *q[3], *r[3];
    rand_params(ctx, 3, sizes, p);
    rand_params(ctx, 3, other_sizes, q);
    rand_params(ctx, 3, fewer, r);
    peft_opt *opt = simple_opt(ctx, PEFT_OPT_ADAMW, 0, 0, 3, p);
    rand_grads(ctx, opt, 1.0f);
    TU_OK(ctx, peft_opt_step(opt));
    size_t size;
    unsigned char *blob = save_blob(ctx, opt, &size);
    unsigned char *bad = malloc(size + 8);

    /* a second optimizer, stepped differently, receives the bad blobs */
    peft_opt *dst = simple_opt(ctx, PEFT_OPT_ADAMW, 0, 0, 3, q);
    peft_opt *dst2 = simple_opt(ctx, PEFT_OPT_ADAMW, 0, 0, 3, r);
    size_t ref_size;
    void *ref = save_blob(ctx, dst2, &ref_size);

    memcpy(bad, blob, size);
    bad[0] ^= 1;
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, bad, size), PEFT_ERR_FORMAT, "bad magic");
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, blob, 20), PEFT_ERR_FORMAT, "truncated: 20 bytes, the header alone is 48");
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, blob, size - 1), PEFT_ERR_FORMAT, "truncated");
    memcpy(bad, blob, size);
    bad[size] = 0;
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, bad, size + 1), PEFT_ERR_FORMAT, "1 trailing bytes");
    memcpy(bad, blob, size);
    bad[8] = 2;
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, bad, size), PEFT_ERR_FORMAT, "version 2");
    memcpy(bad, blob, size);
    bad[24] += 1; /* n_elems */
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, bad, size), PEFT_ERR_FORMAT,
                   "element count mismatch: the state has 85, this optimizer 84");
    memcpy(bad, blob, size);
    bad[48 + 16] = 63; /* numel of parameter 1 */
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, bad, size), PEFT_ERR_FORMAT, "parameter 'w1' (#1) has 63 elements");
    memcpy(bad, blob, size);
    bad[size - 40] ^= 0x10; /* a moment value */
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, bad, size), PEFT_ERR_CHECKSUM, "crc32 mismatch");
    /* another optimizer's layout */
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(dst2, blob, size), PEFT_ERR_FORMAT, "element count mismatch");
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(dst, blob, size), PEFT_ERR_FORMAT, "parameter 'w1' (#1) has 64 elements in the state, 65 here");
    /* another kind */
    peft_tensor *s_p[3];
    rand_params(ctx, 3, sizes, s_p);
    peft_opt *sgd = simple_opt(ctx, PEFT_OPT_SGD, 0.9f, 0, 3, s_p);
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(sgd, blob, size), PEFT_ERR_FORMAT,
                   "kind mismatch: the state is for adamw (1), this optimizer is sgd");
    peft_opt *plain = simple_opt(ctx, PEFT_OPT_SGD, 0.0f, 0, 3, q); /* replaces dst's grads on q */
    size_t psize;
    void *pblob = save_blob(ctx, plain, &psize);
    size_t sgd_size;
    void *sgd_blob = save_blob(ctx, sgd, &sgd_size);
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(sgd, pblob, psize), PEFT_ERR_FORMAT, "moment array count mismatch");
    /* a failed load changes nothing */
    size_t after_size;
    void *after = save_blob(ctx, dst2, &after_size);
    ck_assert_uint_eq(after_size, ref_size);
    ck_assert_int_eq(memcmp(after, ref, ref_size), 0);
    TU_EXPECT_FAIL(ctx, peft_opt_load_state(opt, NULL, size), PEFT_ERR_INVALID_ARG, "buf is NULL");
    TU_OK(ctx, peft_opt_load_state(opt, blob, size));

    free(blob), free(bad), free(ref), free(after), free(pblob), free(sgd_blob);
    peft_opt_destroy(plain);
    peft_opt_destroy(sgd);
    peft_opt_destroy(dst);
    peft_opt_destroy(dst2);
    peft_opt_destroy(opt);
    for (int i = 0; i < 3; i++) {
        peft_tensor_destroy(p[i]);
        peft_tensor_destroy(q[i]);
        peft_tensor_destroy(r[i]);
        peft_tensor_destroy(s_p[i]);
    }
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *api = tcase_create("api");
    tcase_add_test(api, api_opt_create_errors);
    tcase_add_test(api, api_opt_params_and_state);
    tcase_add_test(api, api_schedule_check);
    suite_add_tcase(s, api);
    TCase *num = tcase_create("numerics");
    tcase_add_test(num, numerics_golden_optimizers);
    tcase_add_test(num, numerics_golden_clip);
    tcase_add_test(num, numerics_golden_schedules);
    tcase_add_test(num, numerics_schedule_properties);
    tcase_add_test(num, numerics_flat_buffer_and_zero_grad);
    tcase_add_test(num, numerics_frozen_param_skipped);
    tcase_add_test(num, numerics_nonfinite_refused);
    tcase_add_test(num, numerics_threads_identical);
    tcase_add_test(num, numerics_adamw_vector_path);
    suite_add_tcase(s, num);
    TCase *io = tcase_create("io");
    tcase_add_test(io, io_state_roundtrip);
    tcase_add_test(io, io_state_corrupt);
    suite_add_tcase(s, io);
    return s;
}
